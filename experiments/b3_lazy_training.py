"""B3: lazy training of the ReLU Elman RNN (Allen-Zhu, Li & Song 2019).

Claim of the paper: throughout training the weights stay within a ball of radius
omega = O(poly(n, L) / (delta sqrt m)) of the initialisation (spectral / Frobenius norm of the
papers' W, which starts at norm O(sqrt 2)); inside that ball only a vanishing fraction of the ReLU
activation patterns can change (at most about omega^(2/3) m of the m units of a layer, i.e. a
fraction O(m^(-1/3))), so the network is nearly linear in W and its gradient (the tangent
kernel) barely moves.

Measurement: the runs of L1 (experiments/l1_net_vs_linearized.py: ``RNNConfig.paper``, random
labels, loss 'sum_from_2', full-batch GD with lr = 1 / lambda_max(K_0), net and linearised model
side by side, widths and seeds of the chosen scale). B3 does not train anything itself: ``run``
calls L1's resumable ``run``, which only trains the widths that are not stored yet.

* movement(m) = sqrt(m) ||W_T - W_0||_F in the papers' scale = s_w ||dW||_F in this NTK
  parameterisation (dtheta_W): constant in m means the papers' W moves O(1/sqrt m).
* sign flips(m) = fraction of the activation-pattern entries 1[g_{i,t,r} > 0] on the training set
  (all sequences, steps and units) that differ at the end of training from the initial pattern
  (the engine's sign_flip record).
* kernel change(m) = ||K_T - K_0||_F / ||K_0||_F on the probe inputs (ntk_change);
  gap(m) = max_t ||f_net - f_lin|| / ||y|| on the training set (gap_train_rel).
Slopes are log-log least-squares fits of the seed means against m with seed-bootstrap 95%
intervals (stats.fit_power_law).

Criteria (fixed before any run, never tuned)
--------------------------------------------
B3.1  |slope of movement(m)| < 0.15.
B3.2  slope of sign flips(m) <= -1/3 (the fraction decays at least like m^(-1/3); 'disagrees' only
      when the whole interval is above -1/3).
B3.3  slope of kernel change(m) in [-0.75, -0.25] (prediction -1/2).
B3.4  slope of gap(m) in [-0.75, -0.25] (prediction -1/2).

Separation (the paper's 1/delta dependence)
-------------------------------------------
The proof's iteration count grows like delta^-2 in the first-token separation delta; the kernel
heuristic (steps ~ 1 / (lr lambda_min(K)) with lambda_min(K) ~ delta) gives delta^-1. At one width
(DELTA_SETTINGS), in float64 with B1's statistic t_eps (steps to 1e-6 of the initial loss;
experiments/b1_linear_convergence.py), lr = 1 / lambda_max(K_0) as everywhere, delta in
{0.4, 0.2, 0.1, 0.05}: the log-log slope s of t_eps against delta (steps ~ delta^s).
B3.5  the proof bound holds: s >= -2 ('disagrees' only when the whole interval is below -2). The
      claim text reports whether s is nearer -1 (kernel heuristic) or -2 (proof), or flatter than
      both. The same slope for 1 / lambda_min(K_0) is reported alongside.
"""
from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np

from rnn_ntk import plots, stats
from rnn_ntk.experiments import b1_linear_convergence as b1
from rnn_ntk.experiments import l1_net_vs_linearized as l1
from rnn_ntk.experiments.protocol import fmt_fit, is_done, save_piece
from rnn_ntk.reproduce import Claim, check_scale, load_arrays

NAME = "b3_lazy_training"
TITLE = ("Lazy training (Allen-Zhu, Li & Song 2019): weight movement, ReLU sign flips, kernel "
         "change and net-vs-linearised gap vs width, from L1's runs")

SIGN_FLIP_MAX_SLOPE = -1.0 / 3.0


DELTAS = (0.4, 0.2, 0.1, 0.05)
DELTA_SEED = 4242
DELTA_SETTINGS = {
    "ci": l1.Setting(widths=(16,), seeds=2, n=3, length=3, steps=400, log_every=10, n_probe=1,
                     kernel_logs=0, dtype="float64"),
    "default": l1.Setting(widths=(128,), seeds=3, n=8, length=5, steps=6000, log_every=20,
                          n_probe=1, kernel_logs=0, dtype="float64"),
    "large": l1.Setting(widths=(1024,), seeds=5, n=32, length=8, steps=60000, log_every=200,
                        n_probe=1, kernel_logs=0, dtype="float64"),
}


def _delta_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / NAME / "delta.npz"


def run_deltas(results_dir: str | Path, scale: str) -> None:
    """The separation sweep (one width): per delta, all seeds; stored in one file, resumable."""
    st = DELTA_SETTINGS[scale]
    meta = {"scale": scale, "width": st.widths[0], "setting": st._asdict(), "deltas": list(DELTAS),
            "c_step": l1.C_STEP, "base_seed": DELTA_SEED}
    path = _delta_path(results_dir)
    if is_done(path, l1.comparable(meta)):
        return
    m = st.widths[0]
    outs = []
    with jax.enable_x64(True):
        for d in DELTAS:
            outs.append(l1.train_width(st, m, linearized=False, kernel=False,
                                       base_seed=DELTA_SEED, delta=d))
    keys = ("train_loss", "lr", "lam_min", "lam_max", "diverged")
    save_piece(path, l1.comparable(meta), meta, deltas=np.asarray(DELTAS), steps=outs[0]["steps"],
                **{k: np.stack([o[k] for o in outs]) for k in keys})


def delta_summary(results_dir: str | Path) -> dict:
    a, meta = load_arrays(_delta_path(results_dir))
    D, S = a["lr"].shape
    t_eps = np.array([[b1.steps_to_fraction(a["steps"], a["train_loss"][i, s]) for s in range(S)]
                      for i in range(D)])
    out = {"arrays": a, "t_eps": t_eps, "width": meta["setting"]["widths"][0],
           "inv_lam": 1.0 / (a["lr"] * a["lam_min"])}
    out["fit"] = (stats.fit_power_law(a["deltas"], t_eps.T)
                  if np.all(np.isfinite(t_eps)) and np.all(t_eps > 0) else None)
    out["fit_kernel"] = stats.fit_power_law(a["deltas"], out["inv_lam"].T)
    return out


def run(results_dir: str | Path, scale: str = "default") -> None:
    """Make sure L1's runs of this scale are stored (L1's run is resumable: nothing trains twice)."""
    check_scale(scale)
    with jax.enable_x64(True):
        l1.run(results_dir, scale)
    run_deltas(results_dir, scale)


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

    for key, lab, mk in (("movement", "sqrt(m)||W_T - W_0||_F", "o"),
                         ("kernel_change", "||K_T - K_0|| / ||K_0||", "s"),
                         ("gap", "max_t ||f_net - f_lin|| / ||y||", "^")):
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
        budget = float(d["arrays"]["steps"][-1])
        f = d["fit"]
        reached = np.isfinite(t)
        dd = np.broadcast_to(deltas[:, None], t.shape)
        ax[0, 0].plot(dd[reached], t[reached], "o", label=(
            f"steps to 1e-6 (seeds), slope {f.slope:.2f}" if f else "steps to 1e-6 (seeds)"))
        if np.any(~reached):
            ax[0, 0].plot(dd[~reached], np.full(int((~reached).sum()), budget), "^", mfc="none",
                          color="C3", label=f"not reached in {budget:.0f} steps")
        ref = np.nanmean(t[0]) if np.any(reached[0]) else budget
        mk, _ = stats.mean_sem(d["inv_lam"], axis=1)
        ax[0, 0].plot(deltas, mk * ref / mk[0], "s-", lw=1,
                      label=f"1/(lr lam_min(K0)), scaled, slope {d['fit_kernel'].slope:.2f}")
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
    band = f"slope in [{l1.SLOPE_BAND[0]}, {l1.SLOPE_BAND[1]}]"
    out = [
        _claim(fits, "movement", f"B3.1 the papers' W moves O(1/sqrt m): sqrt(m)||W_T - W_0||_F "
               f"is constant ({rng}; {mv[0]:.3g} at m={widths[0]}, {mv[-1]:.3g} at m={widths[-1]})",
               "log-log slope of sqrt(m)||W_T - W_0||_F", -l1.FLAT_TOL, l1.FLAT_TOL,
               f"|slope| < {l1.FLAT_TOL}"),
        _claim(fits, "sign_flip", f"B3.2 the fraction of flipped ReLU signs decays at least like "
               f"m^-1/3 ({rng}; {sf[0]:.3g} at m={widths[0]}, {sf[-1]:.3g} at m={widths[-1]})",
               "log-log slope of the flipped-sign fraction at the end", -math.inf,
               SIGN_FLIP_MAX_SLOPE, "slope <= -1/3"),
        _claim(fits, "kernel_change", f"B3.3 the tangent kernel barely moves: relative change "
               f"like m^-1/2 ({rng})", "log-log slope of ||K_T - K_0||_F/||K_0||_F",
               *l1.SLOPE_BAND, band),
        _claim(fits, "gap", f"B3.4 the network stays close to its linearisation: gap like "
               f"m^-1/2 ({rng})", "log-log slope of max_t ||f_net - f_lin||/||y||",
               *l1.SLOPE_BAND, band),
    ]
    if _delta_path(results_dir).exists():
        d = delta_summary(results_dir)
        f, fk = d["fit"], d["fit_kernel"]
        crit = "slope >= -2 (proof bound delta^-2)"
        stat = "log-log slope of steps to 1e-6 vs delta"
        if f is None:
            miss = ~np.isfinite(d["t_eps"])
            budget = int(d["arrays"]["steps"][-1])
            worst = [f"{x:g}" for x, r in zip(d["arrays"]["deltas"], miss) if r.any()]
            out.append(Claim(NAME, f"B3.5 steps to converge vs separation delta (m = {d['width']}; "
                             f"{int(miss.sum())} of {miss.size} runs did not reach 1e-6 in "
                             f"{budget} steps, at delta = {', '.join(worst)}; 1/(lr lambda_min(K_0)) "
                             f"grows like delta^{fk.slope:.2f})", stat,
                             "not measurable (some run never reached 1e-6)", crit, "inconclusive"))
        else:
            near = ("flatter than both delta^-1 (kernel heuristic) and delta^-2 (proof)"
                    if f.slope > -0.5 else "nearer the kernel heuristic delta^-1"
                    if abs(f.slope + 1) <= abs(f.slope + 2) else "nearer the proof's delta^-2")
            out.append(Claim(NAME, f"B3.5 steps to converge grow no faster than delta^-2 "
                             f"(m = {d['width']}, delta {min(DELTAS)}..{max(DELTAS)}; measured "
                             f"{near}; 1/(lr lambda_min(K_0)) slope {fk.slope:.2f})", stat,
                             fmt_fit(f), crit, stats.verdict(f.slope, f.ci95, -2.0, math.inf)))
    return out
