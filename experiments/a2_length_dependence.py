"""A2: sample complexity polynomial in the length L (Allen-Zhu & Li 2019): the trained RNN, next to
infinite-width NTK regression.

Claim of the paper: an Elman RNN trained by online SGD (only W, step eta ~ 1/m) learns the concept
class y_{l+1} = sum_{i<=l} S_i(z_i) at every output position from a number of samples N polynomial
in the length L (not exponential); one W serves every token-to-output map, so the error is roughly
uniform over output positions.

Setup (shared with a1_sample_complexity, whose functions are called)
---------------------------------------------------------------------
Task ``concept`` (d = 4, eps_x = 0.5, p = 3 terms per position, target 'all', Var y_t = 1),
T = L + 1 tokens (L predicted positions t = 2..T); model ``RNNConfig.paper`` (readout 'all', only W
trained).

* RNN arm (what the paper is about). Loss 'sum_from_2', online SGD with batch 1 and one pass over
  N fresh samples (steps = N), one width m (A1 is the width experiment). Step: a1's rule at this
  length, ``a1.ntk_lr(length=L + 1)`` = 1 / (2 lambda_L), lambda_L the mean top eigenvalue of the
  infinite-width NTK block Theta(x, x)[2:, 2:] of one sequence (so eta ~ 1/m in the paper's
  parameterisation; lambda_L grows with L, about like T^2.2: lr = 0.082, 0.025, 0.0059, 0.0012
  at L = 4, 8, 16, 32). The runs are a training sweep: ``experiments/a2_length_dependence.toml``,
  filled in per (L, N) with (m, T, N, n_test, lr, seeds) and run by ``rnn_ntk.sweep.run_sweep``
  into ``<results>/a2_length_dependence/rnn/L<L>_N<N>/`` (one resumable store per piece, seeds as
  lanes of one program; each store keeps its filled-in spec). One store per piece rather than one
  spec zipping (length, lr) and (n_train, steps, log_every): the store is dense over its axes, so
  a single store would hold |L| x |N|^2 cells of m x m final weights for |L| x |N| runs; every
  (L, N) is its own compiled program either way. The per-position relative test errors e_t(N)
  (test MSE / Var y_t on the run's n_test test sequences) are recomputed from the stored final W
  on the test set regenerated from the run's key (``rnn_ntk.reproduce.store_position_errors``,
  shared with A1).
* Kernel arm (the infinite-width reference; no RNN trained): the W-only NTK of the same model and,
  for each position t separately, kernel regression (ridge JITTER * mean diag) of y_t on the Gram
  block Theta(t, t) of the first n training sequences (the time -> inf limit of training that
  output alone from f = 0), on an n grid of its own (float64 draws).

Statistics (both arms, same convention): for each position t, N_t = the N at which the power-law
fit of the seed-mean e_t(N) (stats.fit_power_law) reaches E_STAR = 0.5, extrapolated beyond the
grid when needed (the claims say how many were), infinite when the fitted slope is >= 0.
N*(L) = max_t N_t. E_STAR is the kernel arm's value, kept for the RNN so that both arms' N*(L)
share an axis; it was fixed before the RNN grid ran, knowing only A1's RNN numbers (error ~0.78
at N = 400, L = 5, log-log slope ~ -0.27, i.e. 0.5 at a few thousand samples at L = 5) and the
timing runs below (relative error ~0.95 after N = 2000 at L = 32).

Cost (measured before choosing the default scale; the earlier claim here, that online SGD at
L = 32 is too slow for 2 CPU cores, was wrong): one run of N = 2000 steps at T = 33 takes 2.3 s at
m = 128 and 4.5 s at m = 256 on one core (float32, after a 6-11 s compilation; shared 2-core
machine, load average ~3). What limits N is the engine's minibatch order: train.batch_indices
draws the permutation of all n_train = N samples at every step, so a one-pass run costs
O(N^2 log N) on top (T = 5, m = 256: 0.4 s at N = 1000, 2.2 s at N = 2000, 9.3 s at N = 4000). The
default grid therefore stops at N = 2000 (a first default run up to N = 4000 took 14 min at load
average ~7); compiling its 16 programs is most of the rest.

Agreement criteria (fixed before any run; never tuned)
------------------------------------------------------
A2.1  polynomial rather than exponential, per arm: R^2 of the log-log fit of N*(L) against L
      (polynomial) >= R^2 of the log-linear fit (exponential). 'inconclusive' if the two R^2
      differ by < 0.01 or if any N_t is not finite (error not falling with N). RNN arm only, also
      'inconclusive' if any N*(L) lies more than EXTRAP_MAX = 10 times beyond the largest N
      trained (a power law fitted over about a decade of N says nothing that far out).
A2.2  uniform over positions, per arm, at the largest N: max_t e_t / mean_t e_t <= 2 at every
      length (kernel arm: every length; verdict from the worst). RNN arm: over the lengths where
      the RNN learned, mean_t e_t <= LEARNED = 0.9 (an RNN that has not learned is trivially
      uniform); 'inconclusive' if fewer than two lengths learned.
"""
from __future__ import annotations

import math
import string
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.ticker
import numpy as np

from rnn_ntk import plots, stats, sweep, tasks
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.experiments import a1_sample_complexity as a1
from rnn_ntk.experiments.protocol import (is_done, load_piece, save_piece, settings,
                                         stored_setting, sweep_store)
from rnn_ntk.reproduce import Claim, check_scale, store_position_errors

NAME = "a2_length_dependence"
TITLE = ("Sample complexity vs length L (Allen-Zhu & Li 2019): online SGD on the concept class and "
         "infinite-width NTK regression per output position; N needed vs L, polynomial vs "
         "exponential fit")

SPEC_PATH = Path(__file__).with_suffix(".toml")
JITTER = 1e-8
E_STAR = 0.5
EXTRAP_MAX = 10.0
LEARNED = 0.9
BASE_SEED = 2019


class Setting(NamedTuple):
    lengths: tuple[int, ...]     # L (number of predicted positions); T = L + 1
    ns: tuple[int, ...]          # kernel arm: training-set sizes n
    seeds: int                   # kernel arm
    n_test: int                  # kernel arm
    width: int                   # RNN arm: m
    rnn_ns: tuple[int, ...]      # RNN arm: samples N (one SGD pass, N steps)
    rnn_seeds: int
    rnn_n_test: int


SETTINGS = {
    "ci": Setting(lengths=(2, 3), ns=(8, 16), seeds=2, n_test=8,
                  width=8, rnn_ns=(8, 16), rnn_seeds=2, rnn_n_test=8),
    "default": Setting(lengths=(4, 8, 16, 32), ns=(25, 50, 100, 200), seeds=2, n_test=100,
                       width=256, rnn_ns=(250, 500, 1000, 2000), rnn_seeds=4,
                       rnn_n_test=200),
    "large": Setting(lengths=(4, 8, 16, 32, 64), ns=(50, 100, 200, 400, 800), seeds=4,
                     n_test=400, width=1024, rnn_ns=(500, 1000, 2000, 4000, 8000, 16000),
                     rnn_seeds=8, rnn_n_test=1000),
}


# ---------------------------------------------------------------------------------------------
# statistics (plain numpy on stored errors)


def samples_needed(ns, err_SN, e_star: float = E_STAR) -> float:
    """n at which the power-law fit err = C n^b (seed mean) reaches e_star: exp((ln e* - a) / b);
    inf if b >= 0 (no learning)."""
    f = stats.fit_power_law(ns, np.maximum(err_SN, 1e-300), n_boot=10)
    if f.slope >= 0:
        return float("inf")
    return float(math.exp((math.log(e_star) - f.intercept) / f.slope))


def positions_needed(ns, err_SNP, e_star: float = E_STAR) -> np.ndarray:
    """N_t for every position: (P,) from errors (seeds, len(ns), positions)."""
    err = np.asarray(err_SNP, np.float64)
    return np.array([samples_needed(ns, err[:, :, t], e_star) for t in range(err.shape[2])])


def growth_fits(lengths, nstar) -> tuple[stats.Fit, stats.Fit]:
    """(polynomial, exponential) fits of N*(L): log N* against log L and against L."""
    L, y = np.asarray(lengths, np.float64), np.log(np.asarray(nstar, np.float64))
    return stats.fit_line(np.log(L), y), stats.fit_line(L, y)


def growth_verdict(lengths, nstar, n_max: float | None = None) -> str:
    """A2.1: 'agrees' if R^2(log-log) >= R^2(log-linear) + 0.01, 'disagrees' if it is 0.01 below,
    'inconclusive' in between, when some N* is infinite, or (n_max given) when some N* exceeds
    EXTRAP_MAX * n_max."""
    nstar = np.asarray(nstar, np.float64)
    if not np.all(np.isfinite(nstar)):
        return "inconclusive"
    if n_max is not None and np.any(nstar > EXTRAP_MAX * n_max):
        return "inconclusive"
    fp, fe = growth_fits(lengths, nstar)
    d = fp.r2 - fe.r2
    return "inconclusive" if abs(d) < 0.01 else ("agrees" if d > 0 else "disagrees")


def uniformity_ratio(err_SP) -> float:
    """max_t e_t / mean_t e_t of the seed-mean errors at one N (seeds, positions)."""
    e = np.asarray(err_SP, np.float64).mean(0)
    return float(e.max() / e.mean())


def uniformity_verdict(ratios, mean_errs, learned: float | None = None) -> str:
    """A2.2 from per-length ratios: over all lengths (learned None) or over the lengths whose
    mean error is <= learned ('inconclusive' if fewer than two); 'agrees' iff the worst <= 2."""
    r, m = np.asarray(ratios, np.float64), np.asarray(mean_errs, np.float64)
    if learned is not None:
        r = r[m <= learned]
        if r.size < 2:
            return "inconclusive"
    return "agrees" if r.max() <= 2 else "disagrees"


# ---------------------------------------------------------------------------------------------
# kernel arm


def per_position_errors(H, Ht, y_NT, yt_NT, ns, jitter: float = JITTER) -> np.ndarray:
    """(len(ns), T-1): relative test error of kernel regression of y_t on Theta(t, t), t = 2..T."""
    H, Ht = np.asarray(H), np.asarray(Ht)
    T = H.shape[1]
    out = np.zeros((len(ns), T - 1))
    for j, k in enumerate(ns):
        for t in range(1, T):
            A = H[:k, t, :k, t]
            A = A + jitter * np.mean(np.diag(A)) * np.eye(k)
            p = Ht[:, t, :k, t] @ np.linalg.solve(A, np.asarray(y_NT)[:k, t])
            yt = np.asarray(yt_NT)[:, t]
            out[j, t - 1] = np.mean((p - yt) ** 2) / np.var(yt)
    return out


def _kernel_piece(st: Setting, L: int) -> np.ndarray:
    cfg = a1.model_config(1)
    tc = a1.task_config(max(st.ns), st.n_test, L + 1)
    errs = []
    with jax.enable_x64(True):
        for s in range(st.seeds):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(BASE_SEED + L), s), 1)
            data = tasks.sample_task(tc, key, {"eps_x": a1.EPS_X}, dtype=jnp.float64)
            _, H = infinite_kernels(cfg, data.x_train)
            _, Ht = infinite_kernels(cfg, data.x_test, data.x_train)
            errs.append(per_position_errors(H, Ht, np.asarray(data.y_train)[..., 0],
                                            np.asarray(data.y_test)[..., 0], st.ns))
            del H, Ht
    return np.asarray(errs)                                        # (S, ns, L)


# ---------------------------------------------------------------------------------------------
# RNN arm


def rnn_spec(st: Setting, L: int, N: int, lr: float) -> sweep.Spec:
    """The sweep of one piece: the TOML template filled in for length L, N samples and step lr."""
    text = string.Template(SPEC_PATH.read_text()).substitute(
        width=st.width, length=L + 1, n=N, n_test=st.rnn_n_test, lr=repr(float(lr)),
        seeds=st.rnn_seeds)
    return sweep.parse_spec(text, str(SPEC_PATH))


def run(results_dir, scale: str = "default") -> None:
    st = SETTINGS[check_scale(scale)]
    out = Path(results_dir) / NAME
    want = settings(scale, st)
    for L in st.lengths:
        p = out / f"kernel_L{L}.npz"
        if not is_done(p, want):
            save_piece(p, want, err=_kernel_piece(st, L), ns=np.asarray(st.ns))
    lp = out / "lr.npz"
    if not is_done(lp, want):
        lrs = [a1.ntk_lr(length=L + 1) for L in st.lengths]
        save_piece(lp, want, lengths=np.asarray(st.lengths), lr_ntk=np.asarray(lrs))
    arr = load_piece(lp, want)[0]
    lr = dict(zip(arr["lengths"].tolist(), arr["lr_ntk"].tolist()))
    for L in st.lengths:
        for N in st.rnn_ns:
            p = out / f"rnn_L{L}_N{N}.npz"
            if is_done(p, want):
                continue
            store_dir = out / "rnn" / f"L{L}_N{N}"
            sweep_store(rnn_spec(st, L, N, lr[L]), store_dir)
            res = store_position_errors(store_dir)
            save_piece(p, want, **{k: res[k] for k in ("err", "test_loss", "diverged")})


def _load(results_dir):
    """Every stored piece of the last run; each must have been made with the settings stored in
    lr.npz (``protocol.load_piece``)."""
    out = Path(results_dir) / NAME
    arr, meta = load_piece(out / "lr.npz")
    st, want = stored_setting(meta, Setting), meta["settings"]
    kern = {L: load_piece(out / f"kernel_L{L}.npz", want)[0]["err"] for L in st.lengths}
    pieces = {L: [load_piece(out / f"rnn_L{L}_N{N}.npz", want)[0] for N in st.rnn_ns]
              for L in st.lengths}
    rnn = {L: np.stack([p["err"] for p in pieces[L]], axis=1) for L in st.lengths}  # (S, N, L)
    n_div = sum(int(p["diverged"].sum()) for L in st.lengths for p in pieces[L])
    lr = dict(zip(arr["lengths"].tolist(), arr["lr_ntk"].tolist()))
    return st, kern, rnn, n_div, lr


def _arms(st, kern, rnn):
    """Per arm: (grid, errors by L, N_t by L, N* by L)."""
    out = {}
    for name, ns, E in (("RNN", st.rnn_ns, rnn), ("kernel", st.ns, kern)):
        Nt = {L: positions_needed(ns, E[L]) for L in st.lengths}
        out[name] = (np.asarray(ns), E, Nt, np.array([Nt[L].max() for L in st.lengths]))
    return out


def figures(results_dir, fig_dir) -> list[Path]:
    st, kern, rnn, _, _ = _load(results_dir)
    arms = _arms(st, kern, rnn)
    fig, ax = plots.new_figure(3, width=3.7, height=3.1)
    cols = plots.width_colors(len(st.lengths))
    Ls = np.asarray(st.lengths, float)
    # (a) mean-over-positions error vs N, both arms
    a = ax[0, 0]
    for c, L in zip(cols, st.lengths):
        for name, ls, mk in (("RNN", "-", "o"), ("kernel", "--", "s")):
            ns, E = arms[name][0], arms[name][1][L]
            mu, se = stats.mean_sem(E.mean(2))
            a.errorbar(ns, mu, yerr=se, color=c, ls=ls, marker=mk,
                       label=f"L={L}" if name == "RNN" else None)
    a.axhline(E_STAR, color="0.5", lw=0.8, ls=":", label=f"target error {E_STAR}")
    a.plot([], [], "k-o", label=f"RNN m={st.width}, online SGD")
    a.plot([], [], "k--s", label="infinite-width NTK regression")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("training samples N")
    a.set_ylabel("test MSE / Var(y_t), mean over t")
    a.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    # (b) error vs position at the largest N
    a = ax[0, 1]
    for c, L in zip(cols, st.lengths):
        t = np.arange(2, L + 2)
        a.plot(t, rnn[L][:, -1].mean(0), "o-", color=c, label=f"L={L}")
        a.plot(t, kern[L][:, -1].mean(0), "s--", color=c, ms=2.5)
    a.set_xlabel("output position t")
    a.set_ylabel("test MSE / Var(y_t)")
    a.set_title(f"RNN at N={st.rnn_ns[-1]} (solid), NTK at n={st.ns[-1]} (dashed)", fontsize=7.5)
    a.legend(fontsize=6)
    # (c) N*(L), both arms, with the two fits each
    a = ax[0, 2]
    g = np.linspace(Ls.min(), Ls.max(), 50)
    for name, col, mk in (("RNN", "C0", "o"), ("kernel", "C3", "s")):
        ns, _, _, nstar = arms[name]
        ok = np.isfinite(nstar)
        grid = ok & (nstar <= ns[-1])
        if grid.any():
            a.plot(Ls[grid], nstar[grid], mk, color=col, label=f"{name} N*")
        if (ok & ~grid).any():
            a.plot(Ls[ok & ~grid], nstar[ok & ~grid], mk, mfc="none", color=col,
                   label=f"{name} N* > N grid (extrapolated)")
        if (~ok).any():   # error not falling at some position: N* infinite, drawn at the top
            a.plot(Ls[~ok], np.ones((~ok).sum()), "^", color=col, ms=6, clip_on=False,
                   transform=a.get_xaxis_transform(),
                   label=f"{name} N* infinite (no fit)")
        elif ok.sum() >= 2:
            fp, fe = growth_fits(Ls[ok], nstar[ok])
            a.plot(g, np.exp(fp.intercept) * g ** fp.slope, "-", color=col, lw=1,
                   label=f"{name} power law L^{fp.slope:.1f}: R2 {fp.r2:.3f}")
            a.plot(g, np.exp(fe.intercept + fe.slope * g), ":", color=col, lw=1,
                   label=f"{name} exponential: R2 {fe.r2:.3f}")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xticks(Ls, [str(int(v)) for v in Ls], minor=False)
    a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    a.set_xlabel("length L (predicted positions)")
    a.set_ylabel(f"N* = samples to reach error {E_STAR}")
    a.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    return plots.save(fig, Path(fig_dir) / NAME)


def claims(results_dir) -> list[Claim]:
    st, kern, rnn, n_div, lr = _load(results_dir)
    arms = _arms(st, kern, rnn)
    out = []
    for name, what in (("kernel", "infinite-width NTK regression per position, no RNN trained"),
                       ("RNN", f"trained RNN, m={st.width}, online SGD")):
        ns, E, Nt, nstar = arms[name]
        n_max = ns[-1] if name == "RNN" else None
        v = growth_verdict(st.lengths, nstar, n_max)
        extrap = sum(int(np.sum(Nt[L] > ns[-1])) for L in st.lengths)
        total = sum(len(Nt[L]) for L in st.lengths)
        val = "N* = " + ", ".join(f"{x:.3g}" for x in nstar)
        if np.all(np.isfinite(nstar)):
            fp, fe = growth_fits(st.lengths, nstar)
            val = (f"R2 log-log {fp.r2:.3f} (slope {fp.slope:.2f}) vs log-linear {fe.r2:.3f}; "
                   + val)
        else:
            bad = [L for L, x in zip(st.lengths, nstar) if not np.isfinite(x)]
            val += f" (not fitted: error does not fall with N at some position for L in {bad})"
        val += f"; {extrap}/{total} N_t extrapolated beyond N={int(ns[-1])}"
        crit = "R2(log-log) >= R2(log-linear) (+0.01 margin)"
        if name == "RNN":
            crit += f"; inconclusive if some N* > {EXTRAP_MAX:g} x N_max"
            val += ("; lr_ntk = " + ", ".join(f"{lr[L]:.2g}" for L in st.lengths)
                    + f"; {n_div} diverged runs")
        out.append(Claim(NAME, f"samples needed grow polynomially (not exponentially) in L "
                         f"({what})", f"N*(L) = max_t N_t to reach error {E_STAR}, "
                         f"L in {list(st.lengths)}", val, crit, v))
        ratios = [uniformity_ratio(E[L][:, -1]) for L in st.lengths]
        means = [float(E[L][:, -1].mean()) for L in st.lengths]
        learned = LEARNED if name == "RNN" else None
        val = ", ".join(f"L={L}: {r:.2f} (mean e {m:.2f})" for L, r, m in
                        zip(st.lengths, ratios, means))
        crit = "<= 2 at every length"
        if name == "RNN":
            crit += f" where mean_t e_t <= {LEARNED} (inconclusive if < 2 such lengths)"
        out.append(Claim(NAME, f"error roughly uniform over output positions ({what})",
                         f"max_t e_t / mean_t e_t at N={int(ns[-1])}", val, crit,
                         uniformity_verdict(ratios, means, learned)))
    return out

