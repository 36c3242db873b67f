"""C1: a kernel complexity measure ranks the targets (Wang, Shen, Hu & Cao 2021).

Claim of the paper: for an Elman RNN trained in the NTK regime, the generalisation error on n
samples is controlled by the data-dependent complexity sqrt(y^T H^-1 y / n), H the (infinite-width)
NTK Gram matrix of the training inputs. Additive targets y = sum_l f(beta_l^T x_l) and targets that
depend on few nearby tokens (N variables within a short span l0) have a bounded complexity (so they
are learnable with n ~ poly samples); the measure grows with N and with the span l0; for random
labels it does not shrink; tokens of unit norm are no worse than shrunk ones.

Setup (what this module measures)
---------------------------------
* Model: ``RNNConfig.paper`` (ReLU, s_w = sqrt 2, s_u = sqrt(2 d), s_b = 0, s_v = 1), only W
  trained, readout 'last'; d = 3, T = 10.
* Targets (tasks.py kinds, link sin, normalised to Var y = 1): ``additive`` (wang_additive,
  eps_x = 1), ``additive_eps0.1`` (tokens of norm 0.1), ``N1``..``N4`` (wang_nvar, span 3),
  ``N2_l01``, ``N2_l06``, ``N2_l09`` (N = 2, span 1, 6, 9; span 3 is ``N2``), ``random``
  (random_labels: iid N(0, 1) labels, first token of the random_labels kind, eps_x = 1).
* Kernel part (float64): for each seed s the task is drawn at n_max from key
  fold_in(fold_in(key(BASE_SEED), s), 1); the Gram H = infinite-width W-only NTK of the first n
  sequences (nested subsets), and the measure
      c(n) = sqrt(y^T (H + j I)^-1 y / n),   j = JITTER * mean(diag H), JITTER = 1e-8,
  and the infinite-width kernel-regression test MSE (same jitter as ridge) for every n.
* Training part: the finite RNN (width m, float32, init 'symmetric' so f_0 = 0 as in kernel
  regression, full-batch GD on the 'mean' loss, lr = 0.5 n / lambda_max(H) (half the stability
  limit of the NTK linearisation; lambda_max the seed mean of the kernel part's top eigenvalue at
  n_max), ``steps`` steps) at n = n_max, test MSE on n_test fresh sequences. The runs are training
  sweeps: ``experiments/c1_kernel_complexity.toml``, filled in per target (task kind, N, span,
  eps_x), scale (m, n_max, n_test, steps, seeds) and lr by ``rnn_ntk.sweep.override_spec``, and
  run by ``rnn_ntk.sweep.run_sweep`` into ``<results>/c1_kernel_complexity/train/<target>/`` (one
  resumable store per target, seeds as lanes of one program; each store keeps its filled-in
  spec); each finished store's final test/train MSE per seed are then read back with
  ``rnn_ntk.store.load_results`` into ``train_<target>.npz``, what the claims use. One store per target rather than one spec zipping the target fields: override_spec
  replaces one-line entries of the top-level tables, and the store is dense over its axes (a zip
  of kind, n_vars, span, eps_x and lr would be a 5-dimensional array, nearly all empty). Seed s
  of a sweep is the run key ``train.run_key(s, ())`` = key(s) for every target (a paired design,
  as the kernel part's): not the kernel part's keys, and float32 draws besides, so the trained
  runs see the same target distributions and target functions' law as the kernel part, not the
  same samples.

Agreement criteria (fixed before any run; never tuned)
------------------------------------------------------
Statistics at n_max with 95% intervals from a bootstrap over seeds (resampling whole seeds).
C1.1  Spearman rank correlation of the seed-mean measure with N over N = 1..4 (span 3): agrees
      if >= 0.8 (monotone up to one adjacent swap).
C1.2  the same for the span l0 in {1, 3, 6, 9} at N = 2: agrees if >= 0.8.
C1.3  bounded in n: the log-log slope of c(n) vs n (stats.fit_power_law, seed bootstrap) for
      ``additive``, ``N1`` and ``N2_l01``: agrees if every slope <= 0.1 (one row; worst decides).
C1.4  random labels: log-log slope of c(n) vs n >= 0 (does not shrink); agrees if >= 0.
C1.5  ranking: Spearman correlation over all ten targets between the seed-mean measure and the
      trained RNN's seed-mean test MSE: agrees if > 0.5.
C1.6  unit-norm tokens: ratio c_additive(eps=1) / c_additive(eps=0.1): agrees if <= 1.
A verdict is 'disagrees' when the whole interval misses the criterion (stats.verdict).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import model, plots, stats, sweep, tasks
from rnn_ntk.dynamics import kernel_regression
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.experiments.protocol import (fmt_fit, fmt_interval, is_done, load_piece, save_piece,
                                         settings, sweep_store)
from rnn_ntk.reproduce import Claim, check_scale
from rnn_ntk.store import load_results

NAME = "c1_kernel_complexity"
TITLE = ("Kernel complexity sqrt(y^T H^-1 y / n) ranks targets (Wang, Shen, Hu & Cao 2021): "
         "additive, N-variable, span, random labels, token norm; vs RNN test error")

SPEC_PATH = Path(__file__).with_suffix(".toml")
INPUT_DIM = 3
LENGTH = 10
JITTER = 1e-8
BASE_SEED = 2021
N_SPAN = 3                       # span of the N-variable series


class Target(NamedTuple):
    name: str
    kind: str
    n_vars: int = 2
    span: int = 1
    eps: float = 1.0


TARGETS = (
    Target("additive", "wang_additive"),
    Target("additive_eps0.1", "wang_additive", eps=0.1),
    Target("N1", "wang_nvar", 1, N_SPAN),
    Target("N2", "wang_nvar", 2, N_SPAN),
    Target("N3", "wang_nvar", 3, N_SPAN),
    Target("N4", "wang_nvar", 4, N_SPAN),
    Target("N2_l01", "wang_nvar", 2, 1),
    Target("N2_l06", "wang_nvar", 2, 6),
    Target("N2_l09", "wang_nvar", 2, 9),
    Target("random", "random_labels"),
)
N_SERIES = ("N1", "N2", "N3", "N4")
SPAN_SERIES = (("N2_l01", 1), ("N2", 3), ("N2_l06", 6), ("N2_l09", 9))
BOUNDED = ("additive", "N1", "N2_l01")


class Setting(NamedTuple):
    ns: tuple[int, ...]
    n_test: int
    seeds: int
    train_seeds: int
    width: int
    steps: int


SETTINGS = {
    "ci": Setting(ns=(12, 24), n_test=16, seeds=2, train_seeds=2, width=16, steps=20),
    "default": Setting(ns=(50, 100, 200, 400), n_test=200, seeds=4, train_seeds=2, width=128,
                       steps=1500),
    "large": Setting(ns=(50, 100, 200, 400, 800, 1600), n_test=1000, seeds=8, train_seeds=4,
                     width=512, steps=6000),
}


# ----------------------------------------------------------------------------------------------
# pieces (public: tested in tests/experiments/test_c1_kernel_complexity.py)

def complexity(H_NN: np.ndarray, y_N: np.ndarray, jitter: float = JITTER) -> float:
    """sqrt(y^T (H + j I)^-1 y / n) with j = jitter * mean(diag H), by a Cholesky solve (float64)."""
    H = np.asarray(H_NN, np.float64)
    y = np.asarray(y_N, np.float64).reshape(-1)
    n = y.shape[0]
    if H.shape != (n, n):
        raise ValueError(f"H must be ({n}, {n}) for y of length {n}, got {H.shape}")
    A = H + jitter * float(np.mean(np.diag(H))) * np.eye(n)
    L = np.linalg.cholesky(A)
    z = np.linalg.solve(L, y)
    return float(math.sqrt(z @ z / n))


def model_config(width: int) -> model.RNNConfig:
    return model.RNNConfig.paper(width=width, input_dim=INPUT_DIM, readout="last")


def task_config(t: Target, n_train: int, n_test: int) -> tasks.TaskConfig:
    kw = {}
    if t.kind == "wang_nvar":
        kw = dict(n_vars=t.n_vars, span=t.span)
    return tasks.TaskConfig(kind=t.kind, n_train=n_train, n_test=n_test, length=LENGTH,
                            input_dim=INPUT_DIM, **kw)


def run_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(BASE_SEED), seed)


# ----------------------------------------------------------------------------------------------
# run

def _kernel_piece(t: Target, st: Setting) -> dict[str, np.ndarray]:
    cfg = model_config(st.width)
    nmax = max(st.ns)
    tc = task_config(t, nmax, st.n_test)
    meas = np.zeros((st.seeds, len(st.ns)))
    kr = np.zeros((st.seeds, len(st.ns)))
    lam = np.zeros((st.seeds,))
    with jax.enable_x64(True):
        for s in range(st.seeds):
            data = tasks.sample_task(tc, jax.random.fold_in(run_key(s), 1), {"eps_x": t.eps},
                                     dtype=jnp.float64)
            _, H = infinite_kernels(cfg, data.x_train)
            _, Ht = infinite_kernels(cfg, data.x_test, data.x_train)
            H, Ht = np.asarray(H), np.asarray(Ht)
            y, yt = np.asarray(data.y_train)[:, 0], np.asarray(data.y_test)[:, 0]
            lam[s] = np.linalg.eigvalsh(H)[-1]
            for i, n in enumerate(st.ns):
                meas[s, i] = complexity(H[:n, :n], y[:n])
                p = np.asarray(kernel_regression(H[:n, :n], y[:n, None], Ht[:, :n],
                                                 diag_reg=JITTER))[:, 0]
                kr[s, i] = np.mean((p - yt) ** 2)
    return {"measure": meas, "kr_test_mse": kr, "lam_max": lam, "ns": np.asarray(st.ns)}


def train_lr(st: Setting, lam_max: float) -> float:
    """The training step: 0.5 n_max / lambda_max (half the linearisation's stability limit)."""
    return 0.5 * max(st.ns) / lam_max


def train_spec(t: Target, st: Setting, lr: float) -> sweep.Spec:
    """The training sweep of one target: the TOML template with the target's task fields, the
    scale's sizes and the step ``lr`` (see :func:`train_lr`) substituted."""
    return sweep.override_spec(sweep.load_spec(SPEC_PATH), {
        "model.width": st.width, "task.kind": t.kind, "task.n_vars": t.n_vars,
        "task.span": t.span, "task.eps_x": t.eps, "task.n_train": max(st.ns),
        "task.n_test": st.n_test, "train.steps": st.steps, "train.log_every": st.steps,
        "train.lr": float(lr), "sweep.seeds": st.train_seeds})


def train_results(store_dir) -> dict[str, np.ndarray]:
    """Per seed of a finished target store: final test and train MSE, divergence flag at the last
    record, and the step lr (from the stored spec)."""
    ds = load_results(store_dir).transpose("seed", "step")
    lr = sweep.parse_spec(ds.attrs["spec_toml"], f"{store_dir} (stored spec)").fixed["train"]["lr"]
    return {"test_mse": ds["test_loss"].values[:, -1], "train_mse": ds["train_loss"].values[:, -1],
            "diverged": ds["diverged"].values[:, -1], "lr": np.asarray(lr)}


def run(results_dir, scale: str = "default") -> None:
    st = SETTINGS[check_scale(scale)]
    out = Path(results_dir) / NAME
    want = settings(scale, st)
    for t in TARGETS:
        kp = out / f"kernel_{t.name}.npz"
        if not is_done(kp, want):
            save_piece(kp, want, **_kernel_piece(t, st))
    for t in TARGETS:
        tp = out / f"train_{t.name}.npz"
        if not is_done(tp, want):
            k, _ = load_piece(out / f"kernel_{t.name}.npz", want)
            store_dir = out / "train" / t.name
            spec = train_spec(t, st, train_lr(st, float(np.mean(k["lam_max"]))))
            sweep_store(spec, store_dir)
            save_piece(tp, want, **train_results(store_dir))


def _load(results_dir):
    """Every stored piece of the last run; each must have been made with the settings of the
    first target's kernel piece (``protocol.load_piece``)."""
    out = Path(results_dir) / NAME
    want = load_piece(out / f"kernel_{TARGETS[0].name}.npz")[1].get("settings")
    if want is None:
        raise FileNotFoundError(f"results under {out} have no settings (an older format); run "
                                f"the experiment again")
    K = {t.name: load_piece(out / f"kernel_{t.name}.npz", want)[0] for t in TARGETS}
    R = {t.name: load_piece(out / f"train_{t.name}.npz", want)[0] for t in TARGETS}
    return K, R


# ----------------------------------------------------------------------------------------------
# figures and claims

def figures(results_dir, fig_dir) -> list[Path]:
    K, R = _load(results_dir)
    fig, ax = plots.new_figure(3, width=3.6, height=3.0)
    cols = plots.width_colors(len(TARGETS))
    ns = K["additive"]["ns"]
    for c, t in zip(cols, TARGETS):
        m, se = stats.mean_sem(K[t.name]["measure"])
        slope = stats.fit_power_law(ns, K[t.name]["measure"], n_boot=200).slope
        ax[0, 0].errorbar(ns, m, yerr=se, color=c, marker="o", label=f"{t.name} (slope {slope:+.2f})")
    ax[0, 0].set_xscale("log")
    ax[0, 0].set_yscale("log")
    ax[0, 0].set_xticks(ns, [str(int(n)) for n in ns], minor=False)
    ax[0, 0].xaxis.set_minor_locator(__import__("matplotlib").ticker.NullLocator())
    ax[0, 0].set_xlabel("training samples n")
    ax[0, 0].set_ylabel("sqrt(y^T H^-1 y / n)")
    ax[0, 0].legend(fontsize=5.5, ncol=2, loc="center left")
    ax[0, 0].set_title("complexity vs n (log-log slope)")
    xs = [1, 2, 3, 4]
    mN = [K[n]["measure"][:, -1].mean() for n in N_SERIES]
    rhoN = stats.spearman(xs, mN)
    ax[0, 1].plot(xs, mN, "o-", label=f"N (span {N_SPAN}); Spearman {rhoN:.2f}")
    ls = [l for _, l in SPAN_SERIES]
    mL = [K[n]["measure"][:, -1].mean() for n, _ in SPAN_SERIES]
    rhoL = stats.spearman(ls, mL)
    ax[0, 1].plot(ls, mL, "s--", label=f"span l0 (N = 2); Spearman {rhoL:.2f}")
    ax[0, 1].set_xlabel("N variables  /  span l0 (tokens)")
    ax[0, 1].set_ylabel(f"complexity at n = {int(ns[-1])}")
    ax[0, 1].legend(loc="upper left", fontsize=7)
    meas = np.array([K[t.name]["measure"][:, -1].mean() for t in TARGETS])
    err = np.array([R[t.name]["test_mse"].mean() for t in TARGETS])
    rho = stats.spearman(meas, err)
    for c, t, a, b in zip(cols, TARGETS, meas, err):
        ax[0, 2].scatter([a], [b], color=c)
        ax[0, 2].annotate(t.name, (a, b), fontsize=6)
    ax[0, 2].scatter([], [], color="gray", label=f"Spearman {rho:.2f}")
    ax[0, 2].set_xscale("log")
    ax[0, 2].set_xlabel(f"complexity at n = {int(ns[-1])} (log scale)")
    ax[0, 2].set_ylabel("RNN test MSE (Var y = 1)")
    ax[0, 2].set_title("ranking vs trained RNN")
    ax[0, 2].legend()
    return plots.save(fig, Path(fig_dir) / NAME)


def claims(results_dir) -> list[Claim]:
    K, R = _load(results_dir)
    ns = K["additive"]["ns"]
    nlast = int(ns[-1])
    out = []

    def row(claim, statistic, est, ci, crit, lo, hi):
        out.append(Claim(NAME, claim, statistic, fmt_interval(est, ci), crit,
                         stats.verdict(est, ci, lo, hi)))

    arrN = [K[n]["measure"][:, -1] for n in N_SERIES]
    est, ci = stats.bootstrap_seeds(lambda *m: stats.spearman([1, 2, 3, 4], m), arrN)
    row("complexity grows with the number of variables N", f"Spearman(N, complexity) at n={nlast}, "
        f"N=1..4, span {N_SPAN}", est, ci, ">= 0.8", 0.8, 1.0)
    arrL = [K[n]["measure"][:, -1] for n, _ in SPAN_SERIES]
    est, ci = stats.bootstrap_seeds(lambda *m: stats.spearman([l for _, l in SPAN_SERIES], m), arrL)
    row("complexity grows with the span l0", f"Spearman(l0, complexity) at n={nlast}, N=2, "
        "l0 in {1,3,6,9}", est, ci, ">= 0.8", 0.8, 1.0)
    fits = {n: stats.fit_power_law(ns, K[n]["measure"]) for n in BOUNDED}
    worst = max(BOUNDED, key=lambda n: fits[n].slope)
    f = fits[worst]
    txt = "; ".join(f"{n} {fmt_fit(fits[n], signed=True)}"
                    for n in BOUNDED)
    out.append(Claim(NAME, "complexity stays bounded in n for additive / N=1 / N=2,l0=1 targets",
                     "log-log slope of complexity vs n (worst of three)", txt, "every slope <= 0.1",
                     stats.verdict(f.slope, f.ci95, -np.inf, 0.1)))
    fr = stats.fit_power_law(ns, K["random"]["measure"])
    out.append(Claim(NAME, "complexity does not shrink for random labels",
                     "log-log slope of complexity vs n (random labels)",
                     fmt_fit(fr, signed=True), ">= 0",
                     stats.verdict(fr.slope, fr.ci95, 0.0, np.inf)))
    arrM = [K[t.name]["measure"][:, -1] for t in TARGETS]
    arrE = [R[t.name]["test_mse"] for t in TARGETS]
    nm = len(arrM)
    est, ci = stats.bootstrap_seeds(lambda *v: stats.spearman(v[:nm], v[nm:]), arrM + arrE)
    kr = [K[t.name]["kr_test_mse"][:, -1].mean() for t in TARGETS]
    rho_kr = stats.spearman([a.mean() for a in arrM], kr)
    out.append(Claim(NAME, "complexity ranking matches the ranking of trained-RNN test errors",
                     f"Spearman(complexity, RNN test MSE) over {nm} targets, n={nlast}",
                     f"{fmt_interval(est, ci)} (vs infinite-width kernel regression "
                     f"error: {rho_kr:.3f})", "> 0.5",
                     stats.verdict(est, ci, 0.5 + 1e-12, 1.0)))
    a1, a01 = K["additive"]["measure"][:, -1], K["additive_eps0.1"]["measure"][:, -1]
    est, ci = stats.bootstrap_seeds(lambda a, b: a / b, [a1, a01])
    e1, e01 = R["additive"]["test_mse"].mean(), R["additive_eps0.1"]["test_mse"].mean()
    out.append(Claim(NAME, "unit-norm tokens are not worse than shrunk ones (additive target)",
                     f"complexity(eps=1) / complexity(eps=0.1) at n={nlast}",
                     f"{fmt_interval(est, ci)} (RNN test MSE {e1:.3f} vs {e01:.3f})",
                     "<= 1", stats.verdict(est, ci, 0.0, 1.0)))
    return out

