"""L1: the trained network against its linearisation, across widths (the issue's acceptance test).

Claim (Jacot et al. 2018; Lee et al. 2019; for the ReLU Elman RNN Allen-Zhu, Li & Song 2019): trained
by full-batch gradient descent with a step on the scale of the tangent kernel, a wide network stays
close to its first-order Taylor expansion around the initialisation. The distance between the two
trained functions and the relative change of the empirical NTK both shrink like m^(-1/2), while
the weights move by O(1) in the NTK parameterisation (O(1/sqrt m) in the papers'), and the
infinite-width kernel's closed-form GD dynamics describe the training curve of wide networks.

Setup
-----
* Model: ``RNNConfig.paper`` (ReLU, W, A ~ N(0, 2/m) in the papers' scale, s_b = 0, readout 'all',
  only W trained), input dimension d = 10.
* Task: ``random_labels`` (unit first token of separation delta = 0.4, later tokens of norm 1,
  iid N(0, 1) labels at every position), n train sequences of length T; the first n_probe test
  sequences are the kernel probe.
* Loss 'sum_from_2' of the engine: L = (1/2) sum_i sum_{t>=2} (f_t(x_i) - y_{i,t})^2 (the papers'
  loss; position 1 does not depend on W, so it is left out). In the dynamics module's convention
  this is ``loss='half_sum'`` on the kernel K restricted to positions t >= 2 (an (N, N) matrix,
  N = n (T - 1)), for which one GD step of the linearised model is f <- f - lr K (f - y): the step
  is stable iff lr < 2 / lambda_max(K). Every run uses

      lr = C_STEP * 2 / lambda_max(K_0),      C_STEP = 0.5   (so lr lambda_max(K_0) = 1),

  K_0 the run's own empirical NTK at initialisation on its training set (float64).
* One base seed per seed index: the same data and nested initialisations (a prefix draw) at every
  width; every width is one compiled program of all seeds (rnn_ntk.train.train_many), float32,
  with the linearised model trained side by side (TrainConfig.linearized) and the probe-kernel
  change recorded at a few logs (kernel_stride).
* Infinite width: K_inf = infinite-width NTK (rnn_ntk.kernels.infinite) on the training set,
  restricted to t >= 2, and the exact discrete GD closed form
  ``dynamics.gradient_descent(K_inf, y, lr, loss='half_sum')`` with the run's own step, started
  from the network's own initial outputs f_0 (the infinite-width f_0 would be an independent GP
  draw; starting from the net's f_0 compares dynamics, not draws). The same closed form with the
  run's empirical K_0 is stored too: it is exactly the linearised model's curve.

Statistics and weight scaling
-----------------------------
* gap(m) = max over the logged steps of ||f_net - f_lin|| / ||y|| on the training set (the
  engine's gap_train_rel; gap_probe_rel on test inputs is stored and plotted too).
* kernel change(m) = ||K_T - K_0||_F / ||K_0||_F on the probe (ntk_change at the last step).
* movement(m) = sqrt(m) ||W_T - W_0||_F in the papers' scale. The engine's W is the NTK
  parameterisation's (entries N(0, 1), used as s_w W / sqrt m), so the papers' W is s_w W / sqrt m
  and sqrt(m) ||dW_paper||_F = s_w ||dW_ntk||_F = s_w dtheta_W: the NTK-parameterisation movement
  itself is O(1), i.e. the papers' W moves O(1/sqrt m) in Frobenius norm.
* tracking(m) = max_t |L_net(t) - L_inf(t)| / L_net(0), the sup distance between the network's
  loss curve and the infinite-width closed form, relative to the initial loss.
Power-law slopes are least-squares fits of log(seed mean) against log m; their 95% intervals are
seed bootstraps (stats.fit_power_law).

Criteria (fixed before any run, never tuned)
--------------------------------------------
L1.1  slope of gap(m) in [-0.75, -0.25]          (prediction -1/2).
L1.2  slope of kernel change(m) in [-0.75, -0.25] (prediction -1/2).
L1.4  slope of tracking(m) <= 0, one-sided (stats.at_most): the infinite-width closed form tracks
      the wider networks better. Widths at which the
      run's step lr = 1 / lambda_max(K_0) exceeds the infinite kernel's stability edge
      2 / lambda_max(K_inf) for some seed (the closed-form curve then grows: GD on a quadratic is
      monotone iff stable) are left out of the fit and named in the claim.
Verdicts by stats.verdict, symmetric in the 95% interval: 'agrees' only when the whole interval
meets the criterion, 'disagrees' only when it wholly misses it.

Roles (RESULTS.md "kind"): every L1 row is an *extra*. The m^-1/2 rates of the gap and of the
kernel change, and the infinite-width closed form as a description of training, come from Jacot
et al. 2018 and Lee et al. 2019 (feed-forward networks); none of the RNN papers reproduced here
states them for the Elman RNN. Allen-Zhu, Li & Song 2019 prove qualitatively that the network
stays near its linearisation (B3 tests their statements: weight movement, sign flips).
L1.3 (sqrt(m)||W_T - W_0||_F constant in m) was the same measurement of the same runs as B3.1;
issue 15 lists each measurement once, so it is B3.1's row only (the movement is still computed
here, ``summary``, and plotted in L1's figure).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import dynamics, model, plots, stats, tasks, train
from rnn_ntk.kernels.empirical import empirical_ntk
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.experiments.protocol import fmt_fit, is_done, not_finished, save_piece
from rnn_ntk.reproduce import Claim, check_scale, load_arrays

NAME = "l1_net_vs_linearized"
TITLE = ("Network vs linearised model under full-batch GD on random labels (ReLU Elman RNN, "
         "papers' parameterisation): gap, kernel change and weight movement vs width")

INPUT_DIM = 10
DELTA = 0.4          # first-token separation of the random_labels task
C_STEP = 0.5         # lr = C_STEP * 2 / lambda_max(K_0): half the linearised model's stability edge
BASE_SEED = 1701
SLOPE_BAND = (-0.75, -0.25)


class Setting(NamedTuple):
    widths: tuple[int, ...]
    seeds: int
    n: int               # training sequences
    length: int          # T
    steps: int
    log_every: int
    n_probe: int
    kernel_logs: int     # number of kernel-change records after log 0 (divides steps / log_every)
    pad: bool = False    # all widths zero-padded to the largest, one program (ci: one compile)
    dtype: str = "float32"


SETTINGS = {
    "ci": Setting(widths=(16, 32, 64), seeds=2, n=4, length=4, steps=20, log_every=5, n_probe=2,
                  kernel_logs=1, pad=True),
    "default": Setting(widths=(64, 128, 256, 512, 1024), seeds=3, n=16, length=6, steps=400,
                       log_every=10, n_probe=8, kernel_logs=4),
    "large": Setting(widths=(64, 128, 256, 512, 1024, 2048, 4096), seeds=8, n=32, length=10,
                     steps=2000, log_every=20, n_probe=16, kernel_logs=10),
}


# ----------------------------------------------------------------------------------------------
# pieces (public: tested in tests/experiments/test_l1_net_vs_linearized.py; B1 and B3 reuse them)

def task_config(n: int, length: int, n_test: int) -> tasks.TaskConfig:
    return tasks.TaskConfig(kind="random_labels", n_train=n, n_test=n_test, length=length,
                            input_dim=INPUT_DIM, target="all")


def train_config(width: int, n: int, length: int, steps: int, log_every: int, *,
                 array_width: int | None = None, linearized: bool = True, n_probe: int = 1,
                 kernel_stride: int = 0, dtype: str = "float32") -> train.TrainConfig:
    """The papers' ReLU RNN (only W trained, readout 'all') on random labels, loss 'sum_from_2',
    full-batch GD. ``width`` is the model's width; with ``array_width`` the run is zero-padded and
    its true width is passed as hparams['width']."""
    return train.TrainConfig(
        model=model.RNNConfig.paper(width=width, input_dim=INPUT_DIM, readout="all"),
        task=task_config(n, length, max(n_probe, 1)), steps=steps, log_every=log_every,
        loss="sum_from_2", dtype=dtype, array_width=array_width, linearized=linearized,
        kernel_stride=kernel_stride, n_probe=max(n_probe, 1))


def loss_positions(a_NT: Any) -> np.ndarray:
    """The entries of an (n, T[, ...]) array at the loss positions t >= 2, flattened: (n (T-1),)."""
    a = np.asarray(a_NT)
    return a[:, 1:].reshape(-1) if a.ndim == 2 else a[:, 1:].reshape(a.shape[0] * (a.shape[1] - 1))


def loss_kernel(K_NTNT: Any) -> np.ndarray:
    """An 'all'-readout kernel (n, T, n, T) restricted to positions t >= 2: (n (T-1), n (T-1))."""
    K = np.asarray(K_NTNT, np.float64)
    n, T = K.shape[:2]
    return K[:, 1:, :, 1:].reshape(n * (T - 1), n * (T - 1))


def stable_lr(K_SS: np.ndarray, c: float = C_STEP) -> float:
    """GD step c * 2 / lambda_max(K) for L = (1/2) sum r^2 (f <- f - lr K r diverges iff
    lr lambda_max > 2)."""
    lam = np.linalg.eigvalsh(np.asarray(K_SS, np.float64))
    return float(2.0 * c / lam[-1])


def closed_form_loss(K_SS: np.ndarray, y_S: np.ndarray, f0_S: np.ndarray, lr: float,
                     steps_L: np.ndarray) -> np.ndarray:
    """(1/2) ||f(t) - y||^2 of exact GD on the kernel K (dynamics.gradient_descent, 'half_sum'),
    from f(0) = f0, at the given steps."""
    with jax.enable_x64(True):
        pred = dynamics.gradient_descent(jnp.asarray(K_SS, jnp.float64), jnp.asarray(y_S, jnp.float64),
                                         float(lr), loss="half_sum")
        f = np.asarray(pred(t=jnp.asarray(steps_L, jnp.float64),
                            fx_train_0=jnp.asarray(f0_S, jnp.float64)))
    with np.errstate(over="ignore", invalid="ignore"):     # a step unstable for K diverges: inf
        return 0.5 * np.sum(np.square(f - np.asarray(y_S)[None, :]), axis=1)


def init_quantities(cfg: train.TrainConfig, key: jax.Array, width: int, delta: float = DELTA
                    ) -> dict[str, np.ndarray]:
    """What a run starts from, float64: K0 (empirical NTK on the train set at t >= 2), Kinf (the
    infinite-width NTK, same entries), y and f0 (labels and initial outputs at t >= 2)."""
    with jax.enable_x64(True):
        setup = train.setup_run(cfg, key, {"width": float(width), "delta": float(delta)})
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), setup.params0)
        x64 = jnp.asarray(setup.data.x_train, jnp.float64)
        sc = model.Scales(*(jnp.asarray(v, jnp.float64) for v in setup.scales))
        K0 = empirical_ntk(cfg.model, p64, x64, scales=sc)
        f0 = model.apply(cfg.model, p64, x64, scales=sc)
        Kinf = infinite_kernels(cfg.model, x64)[1]
        return {"K0": loss_kernel(K0), "Kinf": loss_kernel(Kinf),
                "y": loss_positions(np.asarray(setup.data.y_train)[..., 0]),
                "f0": loss_positions(np.asarray(f0)[..., 0])}


def train_width(st: Setting, width: int, *, linearized: bool = True, kernel: bool = True,
                c: float = C_STEP, base_seed: int = BASE_SEED, delta: float = DELTA
                ) -> dict[str, np.ndarray]:
    """All seeds of one width: records (S, n_logs) plus per-run lr, eigenvalues of K0, and the
    closed-form loss curves on K0 ('emp_loss') and K_inf ('inf_loss'), all numpy."""
    M = max(st.widths) if st.pad else width
    n_chunks = st.steps // st.log_every
    stride = n_chunks // st.kernel_logs if (kernel and st.kernel_logs) else 0
    cfg = train_config(M, st.n, st.length, st.steps, st.log_every, linearized=linearized,
                       n_probe=st.n_probe, kernel_stride=stride, dtype=st.dtype)
    # one key per seed index, shared by every width (same data, nested initialisations)
    keys = train.run_keys(base_seed, np.arange(st.seeds)[:, None])
    steps_L = np.arange(cfg.n_logs) * st.log_every
    per = {k: [] for k in ("lr", "lam_max", "lam_min", "emp_loss", "inf_loss", "lam_min_inf")}
    for s in range(st.seeds):
        q = init_quantities(cfg, keys[s], width, delta)
        lam = np.linalg.eigvalsh(q["K0"])
        lr = stable_lr(q["K0"], c)
        per["lr"].append(lr)
        per["lam_max"].append(lam[-1])
        per["lam_min"].append(lam[0])
        per["lam_min_inf"].append(np.linalg.eigvalsh(q["Kinf"])[0])
        per["emp_loss"].append(closed_form_loss(q["K0"], q["y"], q["f0"], lr, steps_L))
        per["inf_loss"].append(closed_form_loss(q["Kinf"], q["y"], q["f0"], lr, steps_L))
    hp = {"lr": np.asarray(per["lr"]), "width": np.full((st.seeds,), float(width)),
          "delta": float(delta)}
    rec = train.train_many(cfg, keys, hp)
    out = {k: np.asarray(v) for k, v in rec.items() if not isinstance(v, dict)}
    out.update({k: np.asarray(v) for k, v in per.items()})
    out["steps"] = steps_L
    return out


# ----------------------------------------------------------------------------------------------
# statistics

def max_over_logs(a_SL: np.ndarray) -> np.ndarray:
    """Per run maximum over the logged steps (NaNs ignored)."""
    return np.nanmax(np.asarray(a_SL, np.float64), axis=1)


def last_finite(a_SL: np.ndarray) -> np.ndarray:
    """Per run the last non-NaN record (ntk_change is NaN off its stride)."""
    a = np.asarray(a_SL, np.float64)
    idx = np.array([np.flatnonzero(np.isfinite(r))[-1] for r in a])
    return a[np.arange(a.shape[0]), idx]


def curve_distance(loss_SL: np.ndarray, ref_SL: np.ndarray) -> np.ndarray:
    """max_t |L(t) - L_ref(t)| / L(0) per run."""
    loss = np.asarray(loss_SL, np.float64)
    return np.max(np.abs(loss - np.asarray(ref_SL, np.float64)), axis=1) / loss[:, 0]


# ----------------------------------------------------------------------------------------------
# protocol

def _path(results_dir: str | Path, width: int) -> Path:
    return Path(results_dir) / NAME / f"width_{width}.npz"


def _meta(st: Setting, scale: str, width: int) -> dict[str, Any]:
    return {"scale": scale, "width": width, "setting": st._asdict(), "c_step": C_STEP,
            "delta": DELTA, "base_seed": BASE_SEED}


def comparable(meta: dict[str, Any]) -> dict[str, Any]:
    """The settings of one stored piece: its meta without the list of widths (adding a width to a
    scale's ladder must not invalidate the widths already stored). B1 and B3 use it too."""
    out = json.loads(json.dumps(meta))
    out.get("setting", {}).pop("widths", None)
    return out


def run(results_dir: str | Path, scale: str = "default") -> None:
    st = SETTINGS[check_scale(scale)]
    for m in st.widths:
        meta = _meta(st, scale, m)
        path = _path(results_dir, m)
        if is_done(path, comparable(meta)):
            continue
        for stale in path.parent.glob("width_*.npz"):      # another scale's results
            if load_arrays(stale)[1].get("scale") != scale:
                stale.unlink()
        save_piece(path, comparable(meta), meta, **train_width(st, m))


def load(results_dir: str | Path, name: str = NAME) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(widths (W,), arrays stacked to (W, S, ...)) of the runs stored as results_dir/name/
    width_<m>.npz, ordered by width (B1 stores its runs the same way)."""
    files = sorted(Path(results_dir, name).glob("width_*.npz"),
                   key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise FileNotFoundError(f"no stored runs under {Path(results_dir, name)}; run() first")
    loaded = [load_arrays(p) for p in files]
    arrs = [a for a, _ in loaded]
    widths = np.array([int(p.stem.split("_")[1]) for p in files])
    # an interrupted run: figures and claims need every width of the stored scale's ladder
    planned = set().union(*(m["setting"]["widths"] for _, m in loaded))
    missing = sorted(planned - set(widths.tolist()))
    if missing:
        raise not_finished(f"widths {missing}", name, loaded[-1][1]["scale"],
                           Path(results_dir, name))
    keys = set.intersection(*(set(a) for a in arrs))
    return widths, {k: np.stack([a[k] for a in arrs]) for k in keys}


def summary(results_dir: str | Path) -> dict[str, Any]:
    """Per-run statistics (W, S) and their power-law fits against width."""
    widths, a = load(results_dir)
    sw = model.RNNConfig.paper(width=1, input_dim=INPUT_DIM).sigma_w
    stats_WS = {
        "gap": np.stack([max_over_logs(r) for r in a["gap_train_rel"]]),
        "gap_probe": np.stack([max_over_logs(r) for r in a["gap_probe_rel"]]),
        "kernel_change": np.stack([last_finite(r) for r in a["ntk_change"]]),
        "movement": sw * a["dtheta_W"][:, :, -1],
        "sign_flip": a["sign_flip"][:, :, -1],
        "tracking": np.stack([curve_distance(l, r) for l, r in zip(a["train_loss"], a["inf_loss"])]),
    }
    fits = {k: stats.fit_power_law(widths, v.T) for k, v in stats_WS.items()
            if k != "tracking" and np.all(np.isfinite(v)) and np.all(v > 0)}
    # the run's step can be beyond the stability edge 2 / lambda_max(K_inf) of the infinite-width
    # kernel when the narrow net's lambda_max(K_0) is far below it; GD on a quadratic is monotone
    # iff stable, so a closed-form curve that ends above its start marks such a width, which the
    # tracking fit leaves out (the claim names it)
    stable = np.all(a["inf_loss"][:, :, -1] <= a["inf_loss"][:, :, 0], axis=1)
    tr = stats_WS["tracking"][stable]
    if stable.sum() >= 2 and np.all(np.isfinite(tr)) and np.all(tr > 0):
        fits["tracking"] = stats.fit_power_law(widths[stable], tr.T)
    diverged = bool(np.any(a["diverged"]) or np.any(a["lin_diverged"]))
    return {"widths": widths, "arrays": a, "stats": stats_WS, "fits": fits, "diverged": diverged,
            "inf_stable": stable}


# ----------------------------------------------------------------------------------------------
# figures and claims

def figures(results_dir: str | Path, fig_dir: str | Path) -> list[Path]:
    s = summary(results_dir)
    widths, a, fits = s["widths"], s["arrays"], s["fits"]
    cols = plots.width_colors(len(widths))
    paths: list[Path] = []

    fig, ax = plots.new_figure(3, 1, width=3.3)
    panels = [("gap", "max_t ||f_net - f_lin|| / ||y||", "gap_probe"),
              ("kernel_change", "||K_T - K_0||_F / ||K_0||_F", None),
              ("movement", "sqrt(m) ||W_T - W_0||_F (papers' W)", None)]
    for axis, (key, label, extra) in zip(ax[0], panels):
        mean, sem = stats.mean_sem(s["stats"][key], axis=1)
        f = fits.get(key)
        lab = f"train, slope {f.slope:.2f}" if f else "train"
        axis.errorbar(widths, mean, yerr=sem, marker="o", label=lab if key == "gap" else
                      (f"slope {f.slope:.2f}" if f else None))
        if f:
            axis.plot(widths, np.exp(f.intercept) * widths ** f.slope, "k:", lw=1)
        if extra:
            m2, e2 = stats.mean_sem(s["stats"][extra], axis=1)
            f2 = fits.get(extra)
            axis.errorbar(widths, m2, yerr=e2, marker="s",
                          label=f"probe, slope {f2.slope:.2f}" if f2 else "probe")
        if key != "movement":
            axis.plot(widths, mean[0] * (widths / widths[0]) ** -0.5, color="gray", lw=0.8,
                      ls="--", label="m^-1/2")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("width m")
        axis.set_ylabel(label)
        axis.legend(fontsize=7)
    paths += plots.save(fig, Path(fig_dir) / f"{NAME}_scaling")

    fig, ax = plots.new_figure(2, 1, width=3.6)
    steps = a["steps"][0]
    for i, m in enumerate(widths):
        ax[0, 0].plot(steps, a["train_loss"][i, 0], color=cols[i], label=f"net m={m}")
        ax[0, 0].plot(steps, a["lin_train_loss"][i, 0], color=cols[i], ls=":")
    ax[0, 0].plot(steps, a["inf_loss"][-1, 0], "r--", lw=1,
                  label=f"infinite-width GD (f0, step of m={widths[-1]})")
    ax[0, 0].set_xlabel("steps")
    ax[0, 0].set_ylabel("train loss (seed 0; dotted: linearised)")
    ax[0, 0].set_yscale("log")
    ax[0, 0].legend(fontsize=6)
    st = s["inf_stable"]
    mean, sem = stats.mean_sem(s["stats"]["tracking"][st], axis=1)
    f = fits.get("tracking")
    ax[0, 1].errorbar(widths[st], mean, yerr=sem, marker="o",
                      label=f"slope {f.slope:.2f}" if f else None)
    ax[0, 1].set_xscale("log", base=2)
    ax[0, 1].set_yscale("log")
    ax[0, 1].set_xlabel("width m")
    ax[0, 1].set_ylabel("max_t |L_net - L_inf| / L_net(0)")
    if f:
        ax[0, 1].legend()
    paths += plots.save(fig, Path(fig_dir) / f"{NAME}_curves")
    return paths


def _slope_claim(fits: dict, key: str, claim: str, statistic: str, lo: float, hi: float,
                 criterion: str, role: str = "extra") -> Claim:
    """A row testing ``lo <= slope <= hi`` (either bound may be infinite: one-sided) with
    stats.verdict; 'inconclusive' when the statistic was not fitted."""
    f = fits.get(key)
    if f is None:
        return Claim(NAME, claim, statistic, "not measurable (non-positive values)", criterion,
                     "inconclusive", role=role)
    return Claim(NAME, claim, statistic, fmt_fit(f), criterion,
                 stats.verdict(f.slope, f.ci95, lo, hi), role=role)


def claims(results_dir: str | Path) -> list[Claim]:
    s = summary(results_dir)
    fits, widths = s["fits"], s["widths"]
    rng = f"m = {widths[0]}..{widths[-1]}, {s['arrays']['train_loss'].shape[1]} seeds"
    note = " (some run diverged)" if s["diverged"] else ""
    band = f"slope in [{SLOPE_BAND[0]}, {SLOPE_BAND[1]}]"
    out = [
        _slope_claim(fits, "gap", f"L1.1 net-vs-linearised gap shrinks like m^-1/2 ({rng}){note}",
                     "log-log slope of max_t ||f_net - f_lin||/||y|| (train)", *SLOPE_BAND, band),
        _slope_claim(fits, "kernel_change", f"L1.2 relative NTK change shrinks like m^-1/2 ({rng}; "
                     f"the weight movement of these runs is B3.1's row)",
                     "log-log slope of ||K_T - K_0||_F/||K_0||_F (probe)", *SLOPE_BAND, band),
    ]
    st = s["inf_stable"]
    t = s["stats"]["tracking"][st].mean(axis=1)
    ws = widths[st]
    left = (f"; left out m = {', '.join(str(w) for w in widths[~st])}: the run's step is beyond "
            f"the infinite kernel's stability edge for some seed" if np.any(~st) else "")
    dist = f"; distance {t[0]:.3g} at m={ws[0]}, {t[-1]:.3g} at m={ws[-1]}" if ws.size else ""
    c = _slope_claim(fits, "tracking", f"L1.4 infinite-width GD closed form tracks the wide "
                     f"nets' loss curves better as m grows ({rng}{dist}{left})",
                     "log-log slope of max_t |L_net - L_inf|/L_net(0)", -math.inf, 0.0,
                     "slope <= 0 (one-sided)")
    out.append(c)
    return out
