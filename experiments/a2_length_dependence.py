"""A2: sample complexity polynomial in the length (Allen-Zhu & Li 2019) -- kernel-regression version.

Claim of the paper: the RNN learns the concept class y_{l+1} = sum_{i<=l} S_i(z_i) at every output
position with a number of samples N polynomial in the length L (not exponential), and the error
is roughly uniform over output positions.

What this module measures (kernel regression only; no RNN is trained)
---------------------------------------------------------------------
At default scale training online SGD at L = 32 on 2 shared CPU cores is too slow, so this uses the
infinite-width limit of the papers' network: the W-only NTK of ``RNNConfig.paper`` (readout 'all')
and, for each output position t = 2..T separately, kernel (ridge JITTER * mean diag) regression of
y_t on the Gram block Theta(t, t) of the first n training sequences (the t -> inf limit of
training that output alone from f = 0). Task: ``concept`` (a1_sample_complexity's d, eps_x, p;
T = L + 1, target 'all', Var y_t = 1). For each position, the relative test error e_t(n) over an n
grid is fitted by a power law (stats.fit_power_law on the seed mean) and N_t = the n at which the
fit reaches E_STAR = 0.5 (extrapolated beyond the grid when needed; the claims say how many were).
N*(L) = max_t N_t.

Agreement criteria (fixed before any run; never tuned)
------------------------------------------------------
A2.1  polynomial rather than exponential: R^2 of the log-log fit of N*(L) against L (polynomial)
      >= R^2 of the log-linear fit (exponential). 'inconclusive' if the two R^2 differ by < 0.01
      or if any N_t is not finite (error not falling with n).
A2.2  uniform over positions: at the largest n, max_L (max_t e_t / mean_t e_t) <= 2.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import model, plots, stats, tasks
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.reproduce import Claim, check_scale, load_arrays, save_arrays

NAME = "a2_length_dependence"
TITLE = ("Sample complexity vs length L (Allen-Zhu & Li 2019), infinite-width NTK regression per "
         "output position on the concept class: N needed vs L, polynomial vs exponential fit")

INPUT_DIM = 4
EPS_X = 0.5
N_TERMS = 3
JITTER = 1e-8
E_STAR = 0.5
BASE_SEED = 2019


class Setting(NamedTuple):
    lengths: tuple[int, ...]     # L (number of predicted positions); T = L + 1
    ns: tuple[int, ...]
    seeds: int
    n_test: int


SETTINGS = {
    "ci": Setting(lengths=(2, 3, 4), ns=(8, 16), seeds=2, n_test=8),
    "default": Setting(lengths=(4, 8, 16, 32), ns=(25, 50, 100, 200), seeds=2, n_test=100),
    "large": Setting(lengths=(4, 8, 16, 32, 64), ns=(50, 100, 200, 400, 800), seeds=4,
                     n_test=400),
}


def samples_needed(ns, err_SN, e_star: float = E_STAR) -> float:
    """n at which the power-law fit err = C n^b (seed mean) reaches e_star: exp((ln e* - a) / b);
    the smallest grid n if every error is already <= e_star there and the fit says so; inf if
    b >= 0 (no learning)."""
    f = stats.fit_power_law(ns, np.maximum(err_SN, 1e-300), n_boot=10)
    if f.slope >= 0:
        return float("inf")
    return float(math.exp((math.log(e_star) - f.intercept) / f.slope))


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


def run(results_dir, scale: str = "default") -> None:
    st = SETTINGS[check_scale(scale)]
    out = Path(results_dir) / NAME
    meta = {"scale": scale, "setting": st._asdict()}
    nmax = max(st.ns)
    for L in st.lengths:
        p = out / f"L{L}.npz"
        if p.exists():
            continue
        cfg = model.RNNConfig.paper(width=1, input_dim=INPUT_DIM, readout="all")
        tc = tasks.TaskConfig(kind="concept", n_train=nmax, n_test=st.n_test, length=L + 1,
                              input_dim=INPUT_DIM, target="all", n_terms=N_TERMS)
        errs = []
        with jax.enable_x64(True):
            for s in range(st.seeds):
                key = jax.random.fold_in(jax.random.fold_in(jax.random.key(BASE_SEED + L), s), 1)
                data = tasks.sample_task(tc, key, {"eps_x": EPS_X}, dtype=jnp.float64)
                _, H = infinite_kernels(cfg, data.x_train)
                _, Ht = infinite_kernels(cfg, data.x_test, data.x_train)
                errs.append(per_position_errors(H, Ht, np.asarray(data.y_train)[..., 0],
                                                np.asarray(data.y_test)[..., 0], st.ns))
                del H, Ht
        save_arrays(p, meta, err=np.asarray(errs), ns=np.asarray(st.ns))   # (S, ns, L)


def _load(results_dir):
    out = Path(results_dir) / NAME
    _, meta = load_arrays(next(out.glob("L*.npz")))
    lengths = tuple(meta["setting"]["lengths"])
    E = {L: load_arrays(out / f"L{L}.npz")[0] for L in lengths}
    ns = E[lengths[0]]["ns"]
    res = {}
    for L in lengths:
        err = E[L]["err"]                                          # (S, ns, L)
        Nt = np.array([samples_needed(ns, err[:, :, t]) for t in range(err.shape[2])])
        res[L] = (err, Nt)
    return lengths, ns, res


def figures(results_dir, fig_dir) -> list[Path]:
    lengths, ns, res = _load(results_dir)
    fig, ax = plots.new_figure(2, width=3.8, height=3.0)
    cols = plots.width_colors(len(lengths))
    Ls = np.asarray(lengths, float)
    Nstar = np.array([res[L][1].max() for L in lengths])
    for c, L in zip(cols, lengths):
        err, Nt = res[L]
        ax[0, 0].plot(np.arange(2, L + 2), err[:, -1].mean(0), "o-", color=c, label=f"L={L}")
    ax[0, 0].set_xlabel("output position t")
    ax[0, 0].set_ylabel(f"test MSE / Var(y_t) at n={int(ns[-1])}")
    ax[0, 0].legend()
    ok = np.isfinite(Nstar)
    ax[0, 1].plot(Ls[ok], Nstar[ok], "ko", label="N*(L) = max_t N_t")
    if ok.sum() >= 2:
        fp = stats.fit_line(np.log(Ls[ok]), np.log(Nstar[ok]))
        fe = stats.fit_line(Ls[ok], np.log(Nstar[ok]))
        g = np.linspace(Ls.min(), Ls.max(), 50)
        ax[0, 1].plot(g, np.exp(fp.intercept) * g ** fp.slope, "-",
                      label=f"power law, slope {fp.slope:.2f} (R2 {fp.r2:.3f})")
        ax[0, 1].plot(g, np.exp(fe.intercept + fe.slope * g), "--",
                      label=f"exponential (R2 {fe.r2:.3f})")
    ax[0, 1].set_xscale("log")
    ax[0, 1].set_yscale("log")
    ax[0, 1].set_xticks(Ls, [str(int(v)) for v in Ls], minor=False)
    ax[0, 1].xaxis.set_minor_locator(__import__("matplotlib").ticker.NullLocator())
    ax[0, 1].set_xlabel("length L (tokens)")
    ax[0, 1].set_ylabel(f"samples to reach error {E_STAR}")
    ax[0, 1].legend(fontsize=6.5)
    return plots.save(fig, Path(fig_dir) / NAME)


def claims(results_dir) -> list[Claim]:
    lengths, ns, res = _load(results_dir)
    Ls = np.asarray(lengths, float)
    Nstar = np.array([res[L][1].max() for L in lengths])
    extrap = sum(int(np.sum(res[L][1] > ns[-1])) for L in lengths)
    total = sum(len(res[L][1]) for L in lengths)
    out = []
    if np.all(np.isfinite(Nstar)):
        fp = stats.fit_line(np.log(Ls), np.log(Nstar))
        fe = stats.fit_line(Ls, np.log(Nstar))
        d = fp.r2 - fe.r2
        v = "inconclusive" if abs(d) < 0.01 else ("agrees" if d > 0 else "disagrees")
        val = (f"R2 log-log {fp.r2:.3f} (slope {fp.slope:.2f}) vs log-linear {fe.r2:.3f}; N* = "
               + ", ".join(f"{int(round(x))}" for x in Nstar)
               + f"; {extrap}/{total} N_t extrapolated beyond n={int(ns[-1])}")
    else:
        v, val = "inconclusive", "some position's error does not fall with n (N_t infinite)"
    out.append(Claim(NAME, "samples needed grow polynomially (not exponentially) in L "
                     "(infinite-width NTK regression per position, no RNN trained)",
                     f"N*(L) to reach error {E_STAR}, L in {list(lengths)}", val,
                     "R2(log-log) >= R2(log-linear) (+0.01 margin)", v))
    ratios = [res[L][0][:, -1].mean(0).max() / res[L][0][:, -1].mean(0).mean() for L in lengths]
    worst = max(ratios)
    out.append(Claim(NAME, "error roughly uniform over output positions (NTK regression)",
                     f"max_L of max_t e_t / mean_t e_t at n={int(ns[-1])}",
                     ", ".join(f"L={L}: {r:.2f}" for L, r in zip(lengths, ratios)), "<= 2",
                     "agrees" if worst <= 2 else "disagrees"))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=TITLE)
    ap.add_argument("--scale", default="default", choices=["ci", "default", "large"])
    ap.add_argument("--results", default="results/")
    ap.add_argument("--figures", default="figures/")
    a = ap.parse_args()
    run(a.results, a.scale)
    figures(a.results, a.figures)
    for c in claims(a.results):
        print(f"[{c.verdict}] {c.claim}: {c.statistic} = {c.value} (criterion {c.criterion})")
