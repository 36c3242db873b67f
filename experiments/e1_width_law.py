"""E1: the width a ReLU RNN needs to converge linearly, vs n and vs L (Allen-Zhu, Li & Song 2019).

Claim of the paper (Theorem 1): for the ReLU Elman RNN (only W trained) on n sequences of length
L with delta-separated first tokens and arbitrary labels, if the width m >= poly(n, L, 1/delta),
gradient descent (and SGD) with a suitable step finds training loss eps in
T = O(poly(n, L) / delta^2 log(1/eps)) steps: linear convergence. The width it needs is
polynomial in n and in L. This experiment measures that width, m*(n) and m*(L), and asks whether
it grows like a power law (polynomial) or like an exponential.

Setup (the sweep spec experiments/e1_width_law.toml, one store per cell)
-------------------------------------------------------------------------
* Model and task: ``RNNConfig.paper`` (ReLU, s_w = sqrt 2, s_u = sqrt(2d), s_b = 0, only W
  trained, readout 'all'), d = 10, ``random_labels`` with first-token separation delta = 0.4,
  loss 'sum_from_2' (the papers' (1/2) sum_i sum_{t>=2} r^2), float32; widths 2..128 (about x1.5
  apart), 4 seeds; seeds share data and are independent across widths.
* Cells: the n-axis (L = 3, n in {4, 8, 16, 32}) and the L-axis (n = 4, L in {3, 4, 6, 8}),
  each under full-batch GD and under minibatch SGD (batch b = max(1, n // 4), a fresh
  permutation per epoch).
* Step and budget per cell from the infinite-width NTK K_inf of each seed's training inputs
  (restricted to t >= 2): lr = 1 / max_s lambda_max(K_inf) (half the stability limit, B1's
  choice), and t_inf = max_s ln(1/EPS) / (-2 ln(1 - lr lambda_min(K_inf))): the number of steps
  after which kernel GD (the infinite-width net) has shrunk the loss by EPS from ANY start, its
  slowest direction decaying geometrically. GD budget T = C_T t_inf; SGD: the same lr and the
  same number of epochs, ceil(n / b) T steps.

"Converges linearly" (fixed before any run)
-------------------------------------------
A run converges linearly when its full training loss reaches EPS = 1e-2 of its initial value
within the budget (b1.steps_to_fraction <= T): C_T = 4 times the steps a geometric decay at the
infinite-width kernel's slowest rate needs. A net that converges slower than that (a plateau,
sub-linear decay, a worse-conditioned finite-width kernel) or diverges does not. m*(cell) = the
smallest width at which at least half of the seeds converge: the first grid width where the
converged fraction f(m) reaches 1/2, interpolated linearly in (ln m, f) from the width before
(:func:`width_threshold`); left-censored (the smallest width already converges) and
right-censored (no width does) cells are left out of the fits and counted in the claim text.

Criteria (fixed before the default-scale run; never tuned)
----------------------------------------------------------
For each optimiser (GD, SGD) and axis x in {n, L}: over the cells with an uncensored m*, fit
ln m* = a + p ln x (power law) and ln m* = a + b x (exponential); the statistic is
dR2 = R^2(power) - R^2(exponential) with a 95% interval from resampling seeds (the same seed
indices in every cell; m* recomputed per draw; a draw with fewer than 3 usable cells, or a
constant m*, is undefined, and more than 2.5% undefined draws make the interval (-inf, inf)).
E1.1 GD vs n, E1.2 GD vs L, E1.3 SGD vs n, E1.4 SGD vs L: the width is polynomial if dR2 > 0:
agrees if the whole interval is above 0, disagrees if it is wholly below 0 (the exponential fits
better in every draw), else inconclusive (stats.verdict with [0, inf)). The power exponent p is
reported with its interval. Inconclusive when fewer than 3 cells have an uncensored m*.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rnn_ntk import plots, stats, store, sweep
from rnn_ntk.experiments.b1_linear_convergence import steps_to_fraction
from rnn_ntk.experiments.d1_width_vs_log_n import interval
from rnn_ntk.experiments.protocol import fmt_interval, is_done, save_piece, sweep_store
from rnn_ntk.reproduce import Claim, check_scale, load_arrays

__all__ = ["NAME", "TITLE", "SPEC_PATH", "EPS", "C_T", "SETTINGS", "Setting", "Cell", "cells",
           "spec_for_cell", "cell_step", "budget", "batch_size", "mstar_of", "converged",
           "width_threshold", "law_fit", "bootstrap_law", "run", "figures", "claims"]

NAME = "e1_width_law"
TITLE = ("Width needed for linear convergence (Allen-Zhu, Li & Song 2019): smallest width m* at "
         "which GD / minibatch SGD reach 1e-2 of the initial loss within 4x the infinite-width "
         "kernel's steps, vs n and vs L; power law vs exponential")

SPEC_PATH = Path(__file__).with_suffix(".toml")
EPS = 1e-2
C_T = 4.0
LEVEL = 0.5            # m*: at least half of the seeds converge
N_BOOT = 1000
N_LOGS = 50            # logs per run (budget / log_every)
OPTIMISERS = ("gd", "sgd")


class Setting(NamedTuple):
    """Sizes of one scale: widths, seeds, the n-axis (at length l_fixed), the L-axis (at n_fixed),
    and a cap on the steps of any run (0: none)."""

    widths: tuple[int, ...]
    seeds: int
    n_axis: tuple[int, ...]
    l_fixed: int
    l_axis: tuple[int, ...]
    n_fixed: int
    max_steps: int = 0


SETTINGS = {
    # pipeline only (one cell, both optimisers, budgets capped): the fits are tested on
    # synthetic data in tests/experiments/test_e1_width_law.py
    "ci": Setting(widths=(4, 8), seeds=2, n_axis=(2,), l_fixed=2, l_axis=(2,), n_fixed=2,
                  max_steps=24),
    # widths about x1.5 apart; m = 64 converged for every seed in the pilots (n = 32, L = 3 and
    # n = 4, L = 8), 128 is the margin. About 4 min on 2 quiet CPU cores.
    "default": Setting(widths=(2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128), seeds=4,
                       n_axis=(4, 8, 16, 32), l_fixed=3, l_axis=(3, 4, 6, 8), n_fixed=4),
    # one H200: about 15 min (n = 128 and L = 12 cells at m = 1024 dominate)
    "large": Setting(widths=(2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512),
                     seeds=8,
                     n_axis=(4, 8, 16, 32, 64, 128), l_fixed=3, l_axis=(3, 4, 6, 8, 10, 12),
                     n_fixed=4),
}


class Cell(NamedTuple):
    """One store: optimiser ('gd' | 'sgd'), n and L."""

    optimiser: str
    n: int
    length: int

    @property
    def tag(self) -> str:
        return f"{self.optimiser}_n{self.n}_L{self.length}"


def cells(st: Setting) -> list[Cell]:
    """Every (optimiser, n, L) cell of a scale: the n-axis and the L-axis (their shared cell once)."""
    nl = [(n, st.l_fixed) for n in st.n_axis] + [(st.n_fixed, L) for L in st.l_axis]
    uniq = list(dict.fromkeys(nl))
    return [Cell(o, n, L) for o in OPTIMISERS for n, L in uniq]


def batch_size(n: int) -> int:
    """SGD's minibatch size: max(1, n // 4)."""
    return max(1, n // 4)


# ----------------------------------------------------------------------------------------------
# the cell's step and budget from the infinite-width kernel

def _base_spec(st: Setting, n: int, length: int) -> sweep.Spec:
    return sweep.override_spec(sweep.load_spec(SPEC_PATH), {
        "model.width": list(st.widths), "sweep.seeds": st.seeds, "task.n_train": n,
        "task.length": length})


def cell_step(spec: sweep.Spec) -> dict[str, float]:
    """lr = 1 / max_s lambda_max(K_inf) and t_inf = max_s ln(1/EPS) / (-2 ln(1 - lr lambda_min))
    over the spec's seeds, K_inf the infinite-width NTK of the seed's training inputs at t >= 2
    (the engine's data: task key fold_in(run_key(seed), 1)), float64."""
    import jax
    import jax.numpy as jnp

    from rnn_ntk import tasks, train
    from rnn_ntk.experiments.l1_net_vs_linearized import loss_kernel
    from rnn_ntk.kernels import infinite_kernels

    lam_max, lam_min = [], []
    runs = [r for r in sweep.expand_runs(spec) if r.width == spec.axis("width").values[0]]
    with jax.enable_x64(True):
        for r in runs:
            cfg = sweep.build_config(spec, r.static, r.width)
            thp = {k: float(v) for k, v in tasks.default_task_hparams(cfg.task).items()}
            thp.update({k: float(spec.fixed["task"][k]) for k in thp if k in spec.fixed["task"]})
            data = tasks.sample_task(cfg.task, jax.random.fold_in(train.run_key(r.seed, r.key_coords), 1),
                                     thp, dtype=jnp.float64)
            K = loss_kernel(infinite_kernels(cfg.model, data.x_train)[1])
            lam = np.linalg.eigvalsh(K)
            lam_max.append(lam[-1])
            lam_min.append(lam[0])
    lr = 1.0 / max(lam_max)
    t_inf = max(math.log(1.0 / EPS) / (-2.0 * math.log(1.0 - lr * lm)) for lm in lam_min)
    return {"lr": float(lr), "t_inf": float(t_inf), "lam_max": float(max(lam_max)),
            "lam_min": float(min(lam_min))}


def budget(cell: Cell, t_inf: float) -> float:
    """The cell's step budget: C_T t_inf for GD; the same epochs, ceil(n / b) C_T t_inf steps,
    for SGD."""
    per_epoch = math.ceil(cell.n / batch_size(cell.n)) if cell.optimiser == "sgd" else 1
    return per_epoch * C_T * t_inf


def spec_for_cell(st: Setting, cell: Cell, step: dict[str, float]) -> sweep.Spec:
    """The cell's spec: the template with n, L, lr, the budget (C_T t_inf GD steps; SGD the same
    epochs) rounded up to a multiple of N_LOGS logs, and SGD's batch size."""
    b = batch_size(cell.n) if cell.optimiser == "sgd" else cell.n
    steps = math.ceil(budget(cell, step["t_inf"]))
    if st.max_steps:
        steps = min(steps, st.max_steps)
    log_every = max(1, math.ceil(steps / N_LOGS))
    ov: dict[str, Any] = {"train.lr": step["lr"], "train.log_every": log_every,
                          "train.steps": log_every * math.ceil(steps / log_every)}
    if cell.optimiser == "sgd":
        ov["train.batch_size"] = b
    return sweep.override_spec(_base_spec(st, cell.n, cell.length), ov)


# ----------------------------------------------------------------------------------------------
# statistics (public: tested on synthetic data in tests/experiments/test_e1_width_law.py)

def converged(steps_L: np.ndarray, loss_L: np.ndarray, budget: float, eps: float = EPS) -> bool:
    """Whether a run's loss reached eps of its initial value by step ``budget``
    (b1.steps_to_fraction, log-linear between logs; a diverged or never-reaching run is not)."""
    t = steps_to_fraction(steps_L, loss_L, eps)
    return bool(math.isfinite(t) and t <= budget)


def width_threshold(widths: Any, frac_M: Any, level: float = LEVEL) -> float:
    """Smallest width at which the converged fraction reaches ``level``: the first grid width m_j
    with f >= level, interpolated linearly in (ln m, f) from m_{j-1}; widths[0] if the first
    width already meets it (left-censored), inf if none does (right-censored)."""
    w = np.asarray(widths, np.float64)
    f = np.asarray(frac_M, np.float64)
    if w.ndim != 1 or f.shape != w.shape or np.any(np.diff(w) <= 0):
        raise ValueError(f"widths must be increasing and match the fractions, got {w}, {f}")
    ok = f >= level
    if not ok.any():
        return math.inf
    j = int(np.argmax(ok))
    if j == 0:
        return float(w[0])
    a = (level - f[j - 1]) / (f[j] - f[j - 1])
    return float(math.exp(math.log(w[j - 1]) + a * (math.log(w[j]) - math.log(w[j - 1]))))


class LawFit(NamedTuple):
    """Fits of ln m* against ln x (power) and x (exponential) over the usable cells."""

    x: np.ndarray
    mstar: np.ndarray
    power: stats.Fit
    expo: stats.Fit
    dr2: float          # R^2(power) - R^2(exponential)


def law_fit(x: Any, mstar: Any, lo: float, hi: float = math.inf) -> LawFit | None:
    """:class:`LawFit` over the cells with lo < m* < hi (uncensored: lo = the smallest width, hi =
    inf); None with fewer than 3 such cells or a constant m*."""
    x = np.asarray(x, np.float64)
    m = np.asarray(mstar, np.float64)
    keep = np.isfinite(m) & (m > lo) & (m < hi)
    if keep.sum() < 3 or np.ptp(m[keep]) == 0:
        return None
    x, m = x[keep], m[keep]
    pw = stats.fit_line(np.log(x), np.log(m))
    ex = stats.fit_line(x, np.log(m))
    return LawFit(x, m, pw, ex, pw.r2 - ex.r2)


def mstar_of(widths: Any, conv_CWS: np.ndarray) -> np.ndarray:
    """m* per cell (C,) from converged flags (cells, widths, seeds)."""
    c = np.asarray(conv_CWS, np.float64)
    return np.array([width_threshold(widths, c[i].mean(axis=1)) for i in range(c.shape[0])])


def bootstrap_law(x: Any, widths: Any, conv_CWS: np.ndarray, *, n_boot: int = N_BOOT,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seed bootstrap of the law: (dR2 (B,), power exponent p (B,)); NaN for undefined draws."""
    c = np.asarray(conv_CWS, np.float64)
    S = c.shape[2]
    lo = float(np.asarray(widths)[0])
    rng = np.random.default_rng(seed)
    d, p = np.full(n_boot, np.nan), np.full(n_boot, np.nan)
    for k in range(n_boot):
        f = law_fit(x, mstar_of(widths, c[:, :, rng.integers(0, S, S)]), lo)
        if f is not None:
            d[k], p[k] = f.dr2, f.power.slope
    return d, p


# ----------------------------------------------------------------------------------------------
# runs

def _dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / NAME


def run(results_dir: str | Path, scale: str = "default") -> None:
    """Per cell: the kernel step and budget (a small .npz, reused when the template and sizes are
    unchanged), then the cell's sweep store (resumable)."""
    st = SETTINGS[check_scale(scale)]
    out = _dir(results_dir)
    tmpl = SPEC_PATH.read_text()
    for cell in cells(st):
        path = out / f"step_n{cell.n}_L{cell.length}.npz"
        want = {"scale": scale, "setting": st._asdict(), "template": store.spec_hash({"t": tmpl}),
                "n": cell.n, "length": cell.length, "eps": EPS}
        if not is_done(path, want):
            save_piece(path, want, **cell_step(_base_spec(st, cell.n, cell.length)))
        step = {k: float(v) for k, v in load_arrays(path)[0].items()}
        sweep_store(spec_for_cell(st, cell, step), out / cell.tag)


def _load(results_dir: str | Path) -> dict[str, Any]:
    """Converged flags per optimiser and axis: {'widths', 'seeds', (opt, axis): {'x', 'conv'
    (C, W, S), 'budget' (C,), 'cells'}}. FileNotFoundError when a cell has not been run."""
    out = _dir(results_dir)
    found = sorted(out.glob("gd_n*_L*"))
    if not found:
        raise FileNotFoundError(f"no E1 stores under {out}; run the experiment first")
    per: dict[tuple[int, int, str], Any] = {}
    widths = None
    for opt in OPTIMISERS:
        for d in sorted(out.glob(f"{opt}_n*_L*")):
            if not (d / store.HEADER).exists():
                raise FileNotFoundError(f"no finished store {d}; run the experiment first")
            ds = store.load_results(d)
            if not bool(ds["ran"].all()):     # an interrupted sweep: claims need every run
                raise FileNotFoundError(f"{d}: {int(ds['ran'].sum())} of {ds['ran'].size} runs "
                                        f"stored; finish the experiment first")
            spec = sweep.parse_spec(ds.attrs["spec_toml"], str(d))
            n, L = int(spec.fixed["task"]["n_train"]), int(spec.fixed["task"]["length"])
            step_arr = load_arrays(out / f"step_n{n}_L{L}.npz")[0]
            T = budget(Cell(opt, n, L), float(step_arr["t_inf"]))
            loss = ds["train_loss"].transpose("width", "seed", "step").values.astype(np.float64)
            steps = ds["step"].values.astype(np.float64)
            conv = np.array([[converged(steps, loss[w, s], T) for s in range(loss.shape[1])]
                             for w in range(loss.shape[0])])
            widths = ds["width"].values.astype(np.float64)
            per[(n, L, opt)] = {"conv": conv, "budget": T, "steps": steps, "loss": loss,
                                "lr": float(step_arr["lr"])}
    return {"widths": widths, "cells": per}


def _axes(res: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(opt, 'n' | 'L') -> {'x', 'conv' (C, W, S), 'keys'} from the stored cells, using the scale
    recorded in the stores (the n-axis: the most common L; the L-axis: the most common n)."""
    keys = list(res["cells"])
    Ls = [k[1] for k in keys if k[2] == "gd"]
    ns = [k[0] for k in keys if k[2] == "gd"]
    l_fixed = max(set(Ls), key=Ls.count)
    n_fixed = max(set(ns), key=ns.count)
    out = {}
    for opt in OPTIMISERS:
        for ax, sel in (("n", lambda k: k[1] == l_fixed), ("L", lambda k: k[0] == n_fixed)):
            ks = sorted((k for k in keys if k[2] == opt and sel(k)),
                        key=lambda k: k[0] if ax == "n" else k[1])
            if not ks:
                continue
            x = np.array([k[0] if ax == "n" else k[1] for k in ks], np.float64)
            out[(opt, ax)] = {"x": x, "keys": ks, "fixed": l_fixed if ax == "n" else n_fixed,
                              "conv": np.stack([res["cells"][k]["conv"] for k in ks])}
    return out


def _analysis(res: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    w = res["widths"]
    out = {}
    for key, a in _axes(res).items():
        ms = mstar_of(w, a["conv"])
        fit = law_fit(a["x"], ms, float(w[0]))
        d, p = bootstrap_law(a["x"], w, a["conv"])
        out[key] = {**a, "mstar": ms, "fit": fit, "dr2_ci": interval(d), "p_ci": interval(p),
                    "left": int(np.sum(ms == w[0])), "right": int(np.sum(~np.isfinite(ms)))}
    return out


# ----------------------------------------------------------------------------------------------
# figures

def figures(results_dir: str | Path, fig_dir: str | Path) -> list[Path]:
    res = _load(results_dir)
    an = _analysis(res)
    w = res["widths"]
    fig, axes = plots.new_figure(3, 1, width=3.3, height=3.0)
    ax = axes[0, 0]
    a = an.get(("gd", "n"))
    if a is not None:
        for col, x, c in zip(plots.width_colors(len(a["x"])), a["x"], a["conv"]):
            ax.plot(w, c.mean(axis=1), "o-", ms=3, color=col, label=f"GD n={x:g}")
    a = an.get(("sgd", "n"))
    if a is not None:
        for col, x, c in zip(plots.width_colors(len(a["x"])), a["x"], a["conv"]):
            ax.plot(w, c.mean(axis=1), "s--", ms=3, color=col, lw=0.8, label=f"SGD n={x:g}")
    ax.axhline(LEVEL, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("width m")
    ax.set_ylabel("fraction of seeds converged")
    ax.set_title(f"L = {an[('gd', 'n')]['fixed'] if ('gd', 'n') in an else '?'}: "
                 f"loss <= {EPS:g} L(0) in {C_T:g} t_inf")
    ax.legend(fontsize=5, ncol=2)
    for ax, axis_name, xlabel in ((axes[0, 1], "n", "n (training sequences)"),
                                  (axes[0, 2], "L", "L (sequence length)")):
        for opt, mk, col in (("gd", "o-", "C0"), ("sgd", "s--", "C3")):
            a = an.get((opt, axis_name))
            if a is None:
                continue
            ms = np.where(np.isfinite(a["mstar"]), a["mstar"], np.nan)
            lab = opt.upper()
            if a["fit"] is not None:
                lab += (f": p = {a['fit'].power.slope:.2f} [{a['p_ci'][0]:.2f}, {a['p_ci'][1]:.2f}],"
                        f" dR2 = {a['fit'].dr2:.3f}")
            ax.plot(a["x"], ms, mk, color=col, label=lab)
            cens = ~np.isfinite(a["mstar"])
            if cens.any():
                ax.plot(a["x"][cens], np.full(cens.sum(), w[-1]), "^", color=col, ms=6,
                        label=f"{opt.upper()}: > {w[-1]:g} (censored)")
            f = a["fit"]
            if f is not None:
                xx = np.linspace(f.x.min(), f.x.max(), 50)
                ax.plot(xx, np.exp(f.power.intercept + f.power.slope * np.log(xx)), ":",
                        color=col, lw=0.8)
                ax.plot(xx, np.exp(f.expo.intercept + f.expo.slope * xx), "-.", color=col,
                        lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("m* (half of the seeds converge)")
        ax.set_title(f"m* vs {axis_name} (dotted: power law, dash-dot: exponential)")
        ax.legend(fontsize=5)
    return plots.save(fig, Path(fig_dir) / NAME)


# ----------------------------------------------------------------------------------------------
# claims

def claims(results_dir: str | Path) -> list[Claim]:
    res = _load(results_dir)
    an = _analysis(res)
    w = res["widths"]
    out = []
    labels = {("gd", "n"): "E1.1", ("gd", "L"): "E1.2", ("sgd", "n"): "E1.3", ("sgd", "L"): "E1.4"}
    for key, lab in labels.items():
        if key not in an:
            continue
        a = an[key]
        opt, ax = key
        other = "L" if ax == "n" else "n"
        ms = ", ".join(f"{ax}={x:g}: " + (f"{m:.0f}" if math.isfinite(m) else f">{w[-1]:g}")
                       for x, m in zip(a["x"], a["mstar"]))
        f = a["fit"]
        if f is None:
            value, v = "fewer than 3 uncensored cells", "inconclusive"
        else:
            value = (fmt_interval(f.dr2, a["dr2_ci"], 3) + "; p = "
                     + fmt_interval(f.power.slope, a["p_ci"], 2))
            v = stats.at_least(f.dr2, a["dr2_ci"], 0.0)
        opt_txt = "full-batch GD" if opt == "gd" else "minibatch SGD (b = n/4, same epochs)"
        out.append(Claim(NAME, f"{lab} {opt_txt}, {other} = {a['fixed']}: the smallest width that "
                               f"converges linearly grows polynomially in {ax} (m*: {ms}; "
                               f"{a['left']} cells left-censored at m = {w[0]:g}, {a['right']} "
                               f"right-censored; {w.size} widths x {a['conv'].shape[2]} seeds)",
                         f"R^2(power) - R^2(exponential) of ln m* vs {ax} (seed bootstrap 95%); "
                         f"power exponent p",
                         value, "> 0", v))
    return out
