"""B3: lazy training of the ReLU Elman RNN (Allen-Zhu, Li & Song 2019).

Claim of the paper: throughout training the weights stay within a ball of radius
omega = O(poly(n, L) / (delta sqrt m)) of the initialisation (spectral / Frobenius norm of the
papers' W, which starts at norm O(sqrt 2)); inside that ball only a vanishing fraction of the ReLU
activation patterns can change (at most about omega^(2/3) m of the m units of a layer, i.e. a
fraction O(m^(-1/3))), so the network is nearly linear in W and its gradient (the tangent
kernel) barely moves. Gradient descent reaches loss eps in O(poly(n, L) / delta^2 log(1/eps))
steps (Theorem 1; the delta dependence is B3.5).

Measurement: the runs of L1 (experiments/l1_net_vs_linearized.py: ``RNNConfig.paper``, random
labels, loss 'sum_from_2', full-batch GD with lr = 1 / lambda_max(K_0), net and linearised model
side by side, widths and seeds of the chosen scale). B3 does not train them itself: ``run``
calls L1's resumable ``run``, which only trains the widths that are not stored yet.

* movement(m) = sqrt(m) ||W_T - W_0||_F in the papers' scale = s_w ||dW||_F in this NTK
  parameterisation (dtheta_W): bounded in m means the papers' W moves O(1/sqrt m).
* sign flips(m) = fraction of the activation-pattern entries 1[g_{i,t,r} > 0] on the training set
  (all sequences, steps and units) that differ at the end of training from the initial pattern
  (the engine's sign_flip record).
Slopes are log-log least-squares fits of the seed means against m with seed-bootstrap 95%
intervals (stats.fit_power_law). The two other lazy-training measurements of these runs, the
net-vs-linearised gap and the relative kernel change (both ~ m^-1/2), are L1's rows L1.1 and
L1.2 (issue 15: each measurement is listed once; B3's figure still plots them).

Criteria (fixed before any run, never tuned)
--------------------------------------------
Verdicts are symmetric in the 95% interval (stats.verdict); the theorem's statements are upper
bounds, so every B3 row is one-sided.
B3.1  (claim) movement does not grow: slope of movement(m) <= 0.15 (stats.at_most). Before issue
      15 this was |slope| < 0.15; the theorem bounds the movement from above (a ball of radius
      omega), so a movement that shrinks faster than 1/sqrt m does not contradict it.
B3.2  (claim) slope of sign flips(m) <= -1/3 (the fraction decays at least like m^(-1/3);
      stats.at_most: agrees only when the whole interval is below -1/3).

Separation (the paper's 1/delta dependence)
-------------------------------------------
The proof's iteration count grows like delta^-2 in the first-token separation delta; the kernel
heuristic (steps ~ 1 / (lr lambda_min(K)) with lambda_min(K) ~ delta) gives delta^-1. At one width
(DELTA_SETTINGS), in float64 with B1's statistic t_eps (steps to 1e-6 of the initial loss;
experiments/b1_linear_convergence.py), lr = 1 / lambda_max(K_0) as everywhere, delta in
{0.4, 0.2, 0.1, 0.05}: the log-log slope s of t_eps against delta (steps ~ delta^s).

Step budgets from K_0 (issue 15). A run of the linearised model reaches eps within
t_lin = ln(1/eps) / (-2 ln(1 - lr lambda_min(K_0))) steps (its slowest mode; an upper bound).
Each delta's runs get BUDGET_FACTOR x the largest t_lin of its seeds, rounded up to the logging
grid and capped at the scale's ``steps``: the budget follows the kernel's own prediction
instead of one number for all deltas (a 6000-step budget left 4 of 12 runs at delta <= 0.2
unfinished in the 2026-11-22 run, which made the slope "not measurable").

Censored fit. A run that has not reached eps within its budget is right-censored: its count is
known only to exceed the budget. s is the maximum-likelihood slope of the censored normal
regression (Tobit) ln t = a + s ln delta + sigma z, z ~ N(0, 1), where a censored run
contributes P(ln t > ln budget) instead of a density (``censored_line``); its 95% interval is a
bootstrap over seeds (whole seeds resampled, ``censored_power_law``). Without censored runs it is
the least-squares line through every run's (ln delta, ln t). Dropping or clipping censored runs
would bias s towards 0 (the slowest runs sit at small delta); the test suite checks the fit on
synthetic censored data of known slope.
B3.5  (claim) the proof bound holds: s >= -2 (stats.at_least: agrees when the whole interval is
      above -2, disagrees when it is wholly below). The claim text reports whether s is nearer -1
      (kernel heuristic) or -2 (proof), or flatter than both, and the slope of t_lin.
Width: m = 128 at the default scale. Issue 15 asked for m up to 1024 where the time allows; on
the shared 2-core machine a delta sweep at m = 256 already costs ~4x the m = 128 one (one step
is O(m^2)), so m = 1024 is the 'large' scale (GPU, see DELTA_SETTINGS).
"""
from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np

from rnn_ntk import plots, stats, train
from rnn_ntk.experiments import b1_linear_convergence as b1
from rnn_ntk.experiments import l1_net_vs_linearized as l1
from rnn_ntk.experiments.protocol import fmt_fit, is_done, save_piece
from rnn_ntk.reproduce import Claim, check_scale, load_arrays

NAME = "b3_lazy_training"
TITLE = ("Lazy training (Allen-Zhu, Li & Song 2019): weight movement and ReLU sign flips vs "
         "width (L1's runs); steps to converge vs first-token separation (censored fit)")

MOVEMENT_MAX_SLOPE = 0.15
SIGN_FLIP_MAX_SLOPE = -1.0 / 3.0
PROOF_SLOPE = -2.0


DELTAS = (0.4, 0.2, 0.1, 0.05)
DELTA_SEED = 4242
BUDGET_FACTOR = 3.0     # a delta's step budget: 3 x the largest linearised count t_lin of its seeds
N_BOOT = 400            # seed bootstrap of the censored fit
# ``steps`` is the cap on a delta's budget (the budget itself comes from K_0)
DELTA_SETTINGS = {
    "ci": l1.Setting(widths=(16,), seeds=2, n=3, length=3, steps=400, log_every=10, n_probe=1,
                     kernel_logs=0, dtype="float64"),
    "default": l1.Setting(widths=(128,), seeds=3, n=8, length=5, steps=15000, log_every=20,
                          n_probe=1, kernel_logs=0, dtype="float64"),
    # GPU: m = 1024, 5 seeds, up to 60000 steps per delta (about 10 min on one H200 in float64)
    "large": l1.Setting(widths=(1024,), seeds=5, n=32, length=8, steps=60000, log_every=200,
                        n_probe=1, kernel_logs=0, dtype="float64"),
}


# ----------------------------------------------------------------------------------------------
# the censored fit (public: tested on synthetic censored data in tests/experiments/)

def censored_line(x: np.ndarray, y: np.ndarray, censored: np.ndarray
                  ) -> tuple[float, float, float]:
    """Maximum-likelihood line y = a + b x + sigma z (z ~ N(0, 1)) with right-censored points.

    Args:
      x, y: (P,) points; where ``censored`` is True, y is the censoring value (the true value is
        known only to be >= y).
      censored: (P,) bool.

    Returns:
      (b, a, sigma); NaNs when fewer than two distinct x carry an uncensored point.
    """
    from scipy import optimize
    from scipy.special import log_ndtr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    c = np.asarray(censored, bool)
    if x.shape != y.shape or c.shape != x.shape or x.ndim != 1:
        raise ValueError(f"censored_line needs three 1-D arrays of equal length, got {x.shape}, "
                         f"{y.shape}, {c.shape}")
    if np.unique(x[~c]).size < 2:
        return math.nan, math.nan, math.nan
    b0, a0 = np.polyfit(x[~c], y[~c], 1)
    s0 = max(float(np.std(y[~c] - (a0 + b0 * x[~c]))), 1e-3)
    if not c.any():                       # no censoring: the MLE of (a, b) is least squares
        b, a = np.polyfit(x, y, 1)
        return float(b), float(a), s0

    def nll(p):                           # the negative log-likelihood and its gradient
        a, b, ls = p
        sig = math.exp(ls)
        z = (y - a - b * x) / sig
        lp = log_ndtr(-z[c])
        lam = np.exp(-0.5 * z[c] ** 2 - 0.5 * math.log(2 * math.pi) - lp)   # phi(z) / Phi(-z)
        zo = z[~c]
        f = -(np.sum(-0.5 * zo ** 2 - ls) + np.sum(lp))
        ga = np.sum(zo) / sig + np.sum(lam) / sig
        gb = np.sum(zo * x[~c]) / sig + np.sum(lam * x[c]) / sig
        gs = np.sum(zo ** 2 - 1.0) + np.sum(lam * z[c])
        return f, -np.array([ga, gb, gs])

    best = None
    for start in ((a0, b0, math.log(s0)), (a0, b0, math.log(s0) + 1.0)):
        r = optimize.minimize(nll, np.asarray(start), jac=True, method="BFGS",
                              options={"gtol": 1e-9, "maxiter": 2000})
        if best is None or r.fun < best.fun:
            best = r
    a, b, ls = best.x
    return float(b), float(a), float(math.exp(ls))


def censored_power_law(x_X: np.ndarray, t_SX: np.ndarray, budget_X: np.ndarray, *,
                       n_boot: int = N_BOOT, seed: int = 0) -> stats.Fit | None:
    """t ~ C x^slope from runs (S seeds, X values of x) some of which did not finish: t_SX is NaN
    where the run did not reach its target within ``budget_X`` (right-censored at the budget).

    The slope is :func:`censored_line` on (ln x, ln t); its 95% interval is a bootstrap over
    seeds (whole rows resampled, as stats.fit_power_law does), se the bootstrap spread. None
    when the slope cannot be estimated (fewer than two x with a finished run). r2 is NaN (no
    least-squares fit)."""
    x = np.log(np.asarray(x_X, np.float64))
    t = np.asarray(t_SX, np.float64)
    budget = np.broadcast_to(np.asarray(budget_X, np.float64), t.shape)
    cens = ~np.isfinite(t)
    y = np.log(np.where(cens, budget, t))
    xx = np.broadcast_to(x, t.shape)

    def fit(rows):
        return censored_line(xx[rows].ravel(), y[rows].ravel(), cens[rows].ravel())

    slope, intercept, _ = fit(np.arange(t.shape[0]))
    if not math.isfinite(slope):
        return None
    rng = np.random.default_rng(seed)
    boots = np.array([fit(rng.integers(0, t.shape[0], t.shape[0]))[0] for _ in range(n_boot)])
    boots = boots[np.isfinite(boots)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return stats.Fit(slope, intercept, float(boots.std(ddof=1)), math.nan, (float(lo), float(hi)))


# ----------------------------------------------------------------------------------------------
# the separation sweep

def linearised_steps(lr: np.ndarray, lam_min: np.ndarray, eps: float = b1.EPS) -> np.ndarray:
    """Steps within which GD on the linearised model (kernel K_0) reaches eps of its initial
    loss: ln(1/eps) / (-2 ln(1 - lr lambda_min(K_0))) (its slowest mode decays slowest)."""
    return math.log(1.0 / eps) / (-2.0 * np.log(np.abs(1.0 - np.asarray(lr) * np.asarray(lam_min))))


def step_budget(t_lin_S: np.ndarray, st: l1.Setting) -> int:
    """BUDGET_FACTOR x max(t_lin), rounded up to a multiple of log_every, capped at st.steps."""
    b = int(math.ceil(BUDGET_FACTOR * float(np.max(t_lin_S)) / st.log_every)) * st.log_every
    return int(min(max(b, st.log_every), st.steps))


def _delta_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / NAME / "delta.npz"


def run_deltas(results_dir: str | Path, scale: str) -> None:
    """The separation sweep (one width): per delta, the budget from K_0, then all seeds; stored
    in one file (curves NaN-padded to the longest budget), resumable."""
    st = DELTA_SETTINGS[scale]
    meta = {"scale": scale, "width": st.widths[0], "setting": st._asdict(), "deltas": list(DELTAS),
            "c_step": l1.C_STEP, "base_seed": DELTA_SEED, "budget_factor": BUDGET_FACTOR}
    path = _delta_path(results_dir)
    if is_done(path, l1.comparable(meta)):
        return
    m = st.widths[0]
    keys = train.run_keys(DELTA_SEED, np.arange(st.seeds)[:, None])
    outs, budgets, t_lin = [], [], []
    with jax.enable_x64(True):
        for d in DELTAS:
            cfg = l1.train_config(m, st.n, st.length, st.log_every, st.log_every,
                                  linearized=False, n_probe=st.n_probe, dtype=st.dtype)
            K0 = [l1.init_quantities(cfg, keys[s], m, d)["K0"] for s in range(st.seeds)]
            lr = np.array([l1.stable_lr(K) for K in K0])
            lam_min = np.array([np.linalg.eigvalsh(K)[0] for K in K0])
            t_lin.append(linearised_steps(lr, lam_min))
            budgets.append(step_budget(t_lin[-1], st))
            outs.append(l1.train_width(st._replace(steps=budgets[-1]), m, linearized=False,
                                       kernel=False, base_seed=DELTA_SEED, delta=d))
    n_logs = max(o["train_loss"].shape[1] for o in outs)
    loss = np.full((len(DELTAS), st.seeds, n_logs), np.nan)
    for i, o in enumerate(outs):
        loss[i, :, :o["train_loss"].shape[1]] = o["train_loss"]
    keys_ = ("lr", "lam_min", "lam_max", "diverged")
    save_piece(path, l1.comparable(meta), meta, deltas=np.asarray(DELTAS),
               steps=np.arange(n_logs) * st.log_every, train_loss=loss,
               budget=np.asarray(budgets), t_lin=np.asarray(t_lin),
               **{k: np.stack([np.asarray(o[k]).reshape(st.seeds, -1).any(axis=1) if k == "diverged"
                               else o[k] for o in outs]) for k in keys_})


def delta_summary(results_dir: str | Path) -> dict:
    a, meta = load_arrays(_delta_path(results_dir))
    D, S = a["lr"].shape
    t_eps = np.array([[b1.steps_to_fraction(a["steps"], a["train_loss"][i, s]) for s in range(S)]
                      for i in range(D)])
    # a count found beyond the budget cannot happen (curves stop there); guard the censoring
    t_eps = np.where(t_eps <= a["budget"][:, None], t_eps, np.nan)
    out = {"arrays": a, "t_eps": t_eps, "width": meta["setting"]["widths"][0],
           "inv_lam": 1.0 / (a["lr"] * a["lam_min"]), "censored": ~np.isfinite(t_eps)}
    out["fit"] = censored_power_law(a["deltas"], t_eps.T, a["budget"])
    out["fit_kernel"] = stats.fit_power_law(a["deltas"], a["t_lin"].T)
    return out


def run(results_dir: str | Path, scale: str = "default") -> None:
    """Make sure L1's runs of this scale are stored (L1's run is resumable: nothing trains twice),
    then the separation sweep."""
    check_scale(scale)
    with jax.enable_x64(True):
        l1.run(results_dir, scale)
    run_deltas(results_dir, scale)


# ----------------------------------------------------------------------------------------------
# figures and claims

def figures(results_dir: str | Path, fig_dir: str | Path) -> list[Path]:
    s = l1.summary(results_dir)
    widths, a, fits = s["widths"], s["arrays"], s["fits"]
    fig, ax = plots.new_figure(3, 1, width=3.3)
    mean, sem = stats.mean_sem(s["stats"]["sign_flip"], axis=1)
    f = fits.get("sign_flip")
    ax[0, 0].errorbar(widths, mean, yerr=sem, marker="o",
                      label=f"measured, slope {f.slope:.2f}" if f else "measured")
    for p, ls in ((-1 / 3, "--"), (-1 / 2, ":")):
        ax[0, 0].plot(widths, mean[0] * (widths / widths[0]) ** p, color="gray", ls=ls, lw=0.9,
                      label=f"m^{p:.2f}")
    ax[0, 0].set_xscale("log", base=2)
    ax[0, 0].set_yscale("log")
    ax[0, 0].set_xlabel("width m")
    ax[0, 0].set_ylabel("fraction of flipped ReLU signs (end)")
    ax[0, 0].legend(fontsize=7)

    steps = a["steps"][0]
    cols = plots.width_colors(len(widths))
    for i, m in enumerate(widths):
        ax[0, 1].plot(steps, a["sign_flip"][i].mean(axis=0), color=cols[i], label=f"m={m}")
    ax[0, 1].set_xlabel("steps")
    ax[0, 1].set_ylabel("flipped sign fraction (seed mean)")
    ax[0, 1].legend(fontsize=6)

    for key, lab, mk in (("movement", "sqrt(m)||W_T - W_0||_F (B3.1)", "o"),
                         ("kernel_change", "||K_T - K_0|| / ||K_0|| (L1.2)", "s"),
                         ("gap", "max_t ||f_net - f_lin|| / ||y|| (L1.1)", "^")):
        mean, sem = stats.mean_sem(s["stats"][key], axis=1)
        f = fits.get(key)
        ax[0, 2].errorbar(widths, mean, yerr=sem, marker=mk,
                          label=f"{lab}: {f.slope:.2f}" if f else lab)
    ax[0, 2].set_xscale("log", base=2)
    ax[0, 2].set_yscale("log")
    ax[0, 2].set_xlabel("width m")
    ax[0, 2].set_ylabel("value (legend: log-log slope)")
    ax[0, 2].legend(fontsize=6)
    paths = plots.save(fig, Path(fig_dir) / NAME)

    if _delta_path(results_dir).exists():
        d = delta_summary(results_dir)
        deltas = d["arrays"]["deltas"]
        fig, ax = plots.new_figure(1, 1, width=3.6)
        t = d["t_eps"]
        f = d["fit"]
        reached = np.isfinite(t)
        dd = np.broadcast_to(deltas[:, None], t.shape)
        ax[0, 0].plot(dd[reached], t[reached], "o", label="steps to 1e-6 (runs)")
        if np.any(~reached):
            bud = np.broadcast_to(d["arrays"]["budget"][:, None], t.shape)
            ax[0, 0].plot(dd[~reached], bud[~reached], "^", mfc="none", color="C3",
                          label="not reached within its budget (censored)")
        if f is not None:
            ax[0, 0].plot(deltas, np.exp(f.intercept) * deltas ** f.slope, "C0-", lw=1,
                          label=f"censored fit, slope {f.slope:.2f}")
        tl = d["arrays"]["t_lin"].max(axis=1)
        ax[0, 0].plot(deltas, tl, "s:", color="C2", lw=1,
                      label=f"t_lin from K_0 (seed max), slope {d['fit_kernel'].slope:.2f}")
        ref = float(np.exp(f.intercept) * deltas[0] ** f.slope) if f is not None else tl[0]
        for p, ls in ((-1, "--"), (-2, ":")):
            ax[0, 0].plot(deltas, ref * (deltas / deltas[0]) ** p, color="gray", ls=ls,
                          lw=0.9, label=f"delta^{p}")
        ax[0, 0].set_xscale("log")
        ax[0, 0].set_yscale("log")
        ax[0, 0].set_xticks(deltas, [f"{x:g}" for x in deltas])
        ax[0, 0].minorticks_off()
        ax[0, 0].set_xlabel("first-token separation delta")
        ax[0, 0].set_ylabel(f"steps (m = {d['width']})")
        ax[0, 0].legend(fontsize=6)
        paths += plots.save(fig, Path(fig_dir) / f"{NAME}_delta")
    return paths


def _claim(fits, key, claim, statistic, lo, hi, criterion) -> Claim:
    f = fits.get(key)
    if f is None:
        return Claim(NAME, claim, statistic, "not measurable (non-positive values)", criterion,
                     "inconclusive")
    return Claim(NAME, claim, statistic, fmt_fit(f), criterion,
                 stats.verdict(f.slope, f.ci95, lo, hi))


def claims(results_dir: str | Path) -> list[Claim]:
    s = l1.summary(results_dir)
    fits, widths = s["fits"], s["widths"]
    rng = f"m = {widths[0]}..{widths[-1]}, {s['arrays']['train_loss'].shape[1]} seeds, L1's runs"
    mv = s["stats"]["movement"].mean(axis=1)
    sf = s["stats"]["sign_flip"].mean(axis=1)
    out = [
        _claim(fits, "movement", f"B3.1 the papers' W moves O(1/sqrt m): sqrt(m)||W_T - W_0||_F "
               f"does not grow with m ({rng}; {mv[0]:.3g} at m={widths[0]}, {mv[-1]:.3g} at "
               f"m={widths[-1]})", "log-log slope of sqrt(m)||W_T - W_0||_F", -math.inf,
               MOVEMENT_MAX_SLOPE, f"slope <= {MOVEMENT_MAX_SLOPE} (one-sided)"),
        _claim(fits, "sign_flip", f"B3.2 the fraction of flipped ReLU signs decays at least like "
               f"m^-1/3 ({rng}; {sf[0]:.3g} at m={widths[0]}, {sf[-1]:.3g} at m={widths[-1]}; "
               f"the gap to the linearisation and the kernel change are L1.1 and L1.2)",
               "log-log slope of the flipped-sign fraction at the end", -math.inf,
               SIGN_FLIP_MAX_SLOPE, "slope <= -1/3 (one-sided)"),
    ]
    if _delta_path(results_dir).exists():
        d = delta_summary(results_dir)
        f, fk = d["fit"], d["fit_kernel"]
        cens = d["censored"]
        bud = d["arrays"]["budget"]
        crit = "slope >= -2 (one-sided: the proof's bound delta^-2)"
        stat = "censored-regression (Tobit) log-log slope of steps to 1e-6 vs delta"
        where = (f"; {int(cens.sum())} of {cens.size} runs censored (not at 1e-6 within the budget)"
                 f" at delta = {', '.join(f'{x:g}' for x, r in zip(d['arrays']['deltas'], cens) if r.any())}"
                 if cens.any() else "; every run reached 1e-6")
        head = (f"B3.5 steps to converge grow no faster than delta^-2 (m = {d['width']}, delta "
                f"{min(DELTAS)}..{max(DELTAS)}, {cens.shape[1]} seeds; budgets from K_0 "
                f"({BUDGET_FACTOR:g} x t_lin): {', '.join(str(int(b)) for b in bud)} steps{where}; "
                f"t_lin slope {fk.slope:.2f}")
        if f is None:
            out.append(Claim(NAME, head + ")", stat, "not measurable (fewer than two deltas with "
                             "a finished run)", crit, "inconclusive"))
        else:
            near = ("flatter than both delta^-1 (kernel heuristic) and delta^-2 (proof)"
                    if f.slope > -0.5 else "nearer the kernel heuristic delta^-1"
                    if abs(f.slope + 1) <= abs(f.slope + 2) else "nearer the proof's delta^-2")
            out.append(Claim(NAME, f"{head}; measured {near})", stat, fmt_fit(f), crit,
                             stats.at_least(f.slope, f.ci95, PROOF_SLOPE)))
    return out
