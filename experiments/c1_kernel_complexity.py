"""C1: a scale-free kernel complexity ranks the targets (Wang, Shen, Hu & Cao 2021).

Claim of the paper: for an Elman RNN trained in the NTK regime, the generalisation error on n
samples is controlled by the data-dependent complexity sqrt(y^T H^-1 y / n), H the (infinite-width)
NTK Gram matrix of the training inputs. Additive targets y = sum_l f(beta_l^T x_l) and targets that
depend on few nearby tokens (N variables within a short span l0) have a bounded complexity (so they
are learnable with n ~ poly samples); the measure grows with N and with the span l0; for random
labels it does not shrink; tokens of unit norm are no worse than shrunk ones (the paper drops the
small-norm condition ||x_l|| <= eps of earlier work).

The measure (scale-free; issue 15)
----------------------------------
      c(n) = sqrt(y^T (H + j I)^-1 y  tr(H)) / n,   j = JITTER * mean(diag H), JITTER = 1e-8,
(:func:`complexity`). It equals sqrt(y^T H'^-1 y / n) for H' = H / mean(diag H), the Gram matrix
normalised to unit mean diagonal, and is invariant under H -> a H. The paper's sqrt(y^T H^-1 y / n)
is not: with ReLU, zero bias and h0 = 0 the NTK is positively homogeneous of degree 2 in the
tokens, H(a x) = a^2 H(x) exactly (measured: mean diag H 45 at eps = 1 vs 0.45 at eps = 0.1, 4
seeds, n = 400), so the unnormalised measure compared unlike scales; the former C1.6 ratio 0.107
was that factor 1/10 and nothing else (scale-free: 0.70 vs 0.65). Every claim below uses c.

Setup (what this module measures)
---------------------------------
* Model: ``RNNConfig.paper`` (ReLU, s_w = sqrt 2, s_u = sqrt(2 d), s_b = 0, s_v = 1), only W
  trained, readout 'last'; d = 3, T = 10.
* Inputs: for seed s, key k_s = fold_in(fold_in(key(BASE_SEED), s), 1); n_max + n_test sequences of
  tokens uniform on the sphere of radius eps (``tasks.sample_inputs`` of the wang kinds), eps = 1
  for every target but ``additive_eps0.1`` (eps = 0.1, same key); ``random`` uses the
  random_labels kind (``tasks.sample_task``, iid N(0, 1) labels). So all eps = 1 targets of a seed
  share their inputs (a paired design).
* Targets (link sin, Var y = 1): ``additive`` / ``additive_eps0.1`` (the wang_additive target
  function, ``tasks.target_params`` from k_s); lag-set targets y = c f(sum_j beta_j^T x_{T-l_j})
  for a set of lags {l_j} (:func:`lag_target`, beta_j ~ N(0, I_d / N) so the argument's variance
  is the same for every N, c = 1 / rms of f over a reference sample of 4096 token draws, so
  Var y = 1 for every target): ``N1``..``N4`` and ``N2_l01``, ``N2_l06``, ``N2_l09`` are the
  lag sets of the wang_nvar kind (N variables at offsets ``tasks.nvar_offsets`` within span l0,
  window ending at T: N1 = {3}, N2 = {0, 3}, N3 = {0, 1, 3}, N4 = {0, 1, 2, 3}; N2_l0k = {0, k});
  ``S1``..``S4`` (C1.1's series): for each N the mean of c over ALL C(4, N) lag sets of size N
  drawn from the fixed lag set {0, 1, 2, 3}, so every lag enters each N's mean equally often.
* Kernel part (float64): H = infinite-width W-only NTK of the first n sequences (nested subsets),
  c(n) for every n, and the infinite-width kernel-regression test MSE (jitter as ridge).
* Training part: the finite RNN (width m, float32, init 'symmetric' so f_0 = 0 as in kernel
  regression, full-batch GD on the 'mean' loss, lr = 0.5 n / lambda_max(H) (half the stability
  limit of the NTK linearisation; lambda_max the seed mean of the kernel part's top eigenvalue at
  n_max), ``steps`` steps) at n = n_max, test MSE on n_test fresh sequences, for the scale's
  ``train_targets`` (all ten task targets at default and large; at 'ci' only the two additive
  ones, which share one compiled program, to keep the test suite fast). The runs are training
  sweeps: ``experiments/c1_kernel_complexity.toml``, filled in per target (task kind, N, span,
  eps_x), scale (m, n_max, n_test, steps, seeds) and lr by ``rnn_ntk.sweep.override_spec``, and
  run by ``rnn_ntk.sweep.run_sweep`` into ``<results>/c1_kernel_complexity/train/<target>/`` (one
  resumable store per target, seeds as lanes of one program; each store keeps its filled-in
  spec); each finished store's final test/train MSE per seed are then read back with
  ``rnn_ntk.store.load_results`` into ``train_<target>.npz``, what the claims use. One store per
  target rather than one spec zipping the target fields: override_spec replaces one-line entries
  of the top-level tables, and the store is dense over its axes. Seed s of a sweep is the run key
  ``train.run_key(s, ())`` = key(s) for every target (a paired design): the trained runs see the
  wang_nvar / wang_additive / random_labels task kinds of ``rnn_ntk.tasks``, whose target
  functions have the same law as the kernel part's, not the same samples.

Agreement criteria
------------------
Statistics at n_max with 95% intervals from a bootstrap over seeds (resampling whole seeds);
verdicts are symmetric (``stats.verdict``: agrees only when the whole interval meets the
criterion, disagrees when it misses it wholly, else inconclusive); one-sided criteria are tested
one-sided (``stats.at_most`` / ``stats.at_least``).
C1.1  (claim) grows with N at a fixed lag set: log-log slope of the S-series mean c vs N = 1..4
      (``stats.fit_power_law``, seed bootstrap): agrees if the interval lies above 0.
C1.2  (claim) grows with the span l0 at N = 2: log-log slope of c vs l0 in {1, 3, 6, 9} (N2_l01,
      N2, N2_l06, N2_l09): agrees if above 0.
C1.3  (claim) bounded in n: log-log slope of c(n) vs n for ``additive``, ``N1`` and ``N2_l01``:
      agrees if every slope is at most 0.1 (one row; worst decides).
C1.4  (control) random labels: log-log slope of c(n) vs n at least 0 (does not shrink).
C1.5  (extra; the paper gives a bound, not a ranking) Spearman correlation over the trained
      targets between the seed-mean c and the trained RNN's seed-mean test MSE: agrees if > 0.5.
C1.6  (claim) unit-norm tokens: ratio c_additive(eps=1) / c_additive(eps=0.1) at most 1.

Changes of criteria (issue 15, fixed before the default-scale run that decides them):
* every claim: the scale-free c instead of sqrt(y^T H^-1 y / n) (reason above); the symmetric
  verdict, one-sided where the claim is one-sided (C1.3 "at most", C1.4 "at least", C1.6 "at
  most").
* C1.1 and C1.2 were Spearman(N or l0, c) >= 0.8 over four points; under the symmetric verdict a
  four-point Spearman (values in steps of 0.2) agrees only when every bootstrap draw is perfectly
  ordered up to one swap, so the statistic is now the log-log slope (continuous, same meaning:
  "grows"). C1.1's series was N1..N4 of the wang_nvar layout, where N = 1 uses only x_{T-3} and
  every N >= 2 adds x_T (N was confounded with which lags enter); it is now the S series (fixed
  lag set, every lag equally often, same argument variance and Var y = 1 at every N).
* C1.6 keeps its bound (<= 1). With the homogeneous kernel the token norm cannot change H's
  shape, only the target: sin(beta^T x) at eps = 0.1 is nearly linear, at eps = 1 it is not, so
  the ratio measures the link's nonlinearity at unit scale (see the claim text).
* C1.5 over the trained targets of the scale (ten at default).
"""
from __future__ import annotations

import itertools
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

__all__ = ["NAME", "TITLE", "Target", "TARGETS", "LAGSET_TARGETS", "Setting", "SETTINGS",
           "complexity", "lag_target", "draw_lag_target", "target_lags", "model_config",
           "task_config", "run_key", "train_lr", "train_spec", "train_results", "run", "figures",
           "claims"]

NAME = "c1_kernel_complexity"
TITLE = ("Scale-free kernel complexity sqrt(y^T H^-1 y tr H) / n ranks targets (Wang, Shen, Hu & "
         "Cao 2021): additive, N-variable, span, random labels, token norm; vs RNN test error")

SPEC_PATH = Path(__file__).with_suffix(".toml")
INPUT_DIM = 3
LENGTH = 10
JITTER = 1e-8
BASE_SEED = 2021
N_SPAN = 3                       # span of the N-variable series (lags 0..3)
N_REF = 4096                     # reference tokens normalising a lag-set target


class Target(NamedTuple):
    """A target: ``kind`` a task kind of :mod:`rnn_ntk.tasks` (trainable) or 'lagset' (the mean
    over every lag set of size ``n_vars`` in {0..span}; kernel part only)."""
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
LAGSET_TARGETS = tuple(Target(f"S{N}", "lagset", N, N_SPAN) for N in (1, 2, 3, 4))
ALL_TARGETS = TARGETS + LAGSET_TARGETS
N_SERIES = ("S1", "S2", "S3", "S4")
SPAN_SERIES = (("N2_l01", 1), ("N2", 3), ("N2_l06", 6), ("N2_l09", 9))
BOUNDED = ("additive", "N1", "N2_l01")


class Setting(NamedTuple):
    ns: tuple[int, ...]
    n_test: int
    seeds: int
    train_seeds: int
    width: int
    steps: int
    train_targets: tuple[str, ...]


_ALL = tuple(t.name for t in TARGETS)
SETTINGS = {
    # ci: every code path at the smallest sizes; the two additive targets share one compiled
    # training program
    "ci": Setting(ns=(8, 16), n_test=8, seeds=2, train_seeds=2, width=8, steps=5,
                  train_targets=("additive", "additive_eps0.1")),
    "default": Setting(ns=(50, 100, 200, 400), n_test=200, seeds=4, train_seeds=2, width=128,
                       steps=1500, train_targets=_ALL),
    # large: one H200, ~10 min (kernels at n = 1600 are seconds; 10 sweeps of 4 seeds x 6000
    # full-batch steps at m = 512, n = 1600)
    "large": Setting(ns=(50, 100, 200, 400, 800, 1600), n_test=1000, seeds=8, train_seeds=4,
                     width=512, steps=6000, train_targets=_ALL),
}


# ----------------------------------------------------------------------------------------------
# pieces (public: tested in tests/experiments/test_c1_kernel_complexity.py)

def complexity(H_NN: np.ndarray, y_N: np.ndarray, jitter: float = JITTER) -> float | np.ndarray:
    """The scale-free complexity sqrt(y^T (H + j I)^-1 y tr(H)) / n, j = jitter * mean(diag H).

    Invariant under H -> a H (a > 0); equal to sqrt(y^T H'^-1 y / n) for H' = H / mean(diag H).
    By one Cholesky factorisation in float64 (shared by the columns of a 2-D ``y_N``).

    Args:
      H_NN: (n, n) positive semi-definite Gram matrix.
      y_N: (n,) labels, or (n, k) for k label vectors on the same inputs.
      jitter: relative ridge.

    Returns:
      A float for (n,) labels, a (k,) array for (n, k) labels.
    """
    H = np.asarray(H_NN, np.float64)
    y = np.asarray(y_N, np.float64)
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be (n,) or (n, k), got shape {y.shape}")
    n = y.shape[0]
    if H.shape != (n, n):
        raise ValueError(f"H must be ({n}, {n}) for y of length {n}, got {H.shape}")
    tr = float(np.trace(H))
    if not tr > 0:
        raise ValueError(f"H must have a positive trace, got {tr}")
    L = np.linalg.cholesky(H + jitter * tr / n * np.eye(n))
    z = np.linalg.solve(L, y)
    c = np.sqrt(np.sum(z * z, axis=0) * tr) / n
    return float(c) if y.ndim == 1 else c


def lag_target(x_NTD: np.ndarray, lags: tuple[int, ...], beta_JD: np.ndarray) -> np.ndarray:
    """The unnormalised lag-set target sin(sum_j beta_j^T x_{T - lags_j}) of each sequence.

    Args:
      x_NTD: (n, T, d) inputs.
      lags: J distinct lags in [0, T - 1] (lag 0 is the last token x_T).
      beta_JD: (J, d) weights.

    Returns:
      (n,) values.
    """
    x = np.asarray(x_NTD, np.float64)
    T = x.shape[1]
    if len(set(lags)) != len(lags) or not all(0 <= l < T for l in lags):
        raise ValueError(f"lags must be distinct and in [0, {T - 1}], got {lags}")
    beta = np.asarray(beta_JD, np.float64)
    if beta.shape != (len(lags), x.shape[2]):
        raise ValueError(f"beta must be ({len(lags)}, {x.shape[2]}), got {beta.shape}")
    return np.sin(sum(x[:, T - 1 - l, :] @ beta[j] for j, l in enumerate(lags)))


def draw_lag_target(rng: np.random.Generator, lags: tuple[int, ...], d: int, eps: float
                    ) -> tuple[np.ndarray, float]:
    """beta (J, d) ~ N(0, I_d / J) and the normalisation c = 1 / rms sin(sum_j beta_j^T z_j) over
    N_REF reference draws of tokens z_j uniform on the sphere of radius eps (so Var y ~ 1)."""
    J = len(lags)
    beta = rng.normal(size=(J, d)) / math.sqrt(J)
    z = rng.normal(size=(N_REF, J, d))
    z = eps * z / np.linalg.norm(z, axis=-1, keepdims=True)
    s = np.einsum("rjd,jd->r", z, beta)
    return beta, float(1.0 / np.sqrt(np.mean(np.sin(s) ** 2)))


def target_lags(t: Target) -> list[tuple[int, ...]]:
    """The lag sets of a lag-set target: one for a wang_nvar target (its window ending at T), all
    C(span + 1, N) subsets of {0..span} of size N for a 'lagset' target."""
    if t.kind == "wang_nvar":
        offs = tasks.nvar_offsets(task_config(t, 1, 1))
        return [tuple(sorted(t.span - o for o in offs))]
    if t.kind == "lagset":
        return list(itertools.combinations(range(t.span + 1), t.n_vars))
    raise ValueError(f"target {t.name!r} of kind {t.kind!r} has no lag sets")


def model_config(width: int) -> model.RNNConfig:
    return model.RNNConfig.paper(width=width, input_dim=INPUT_DIM, readout="last")


def task_config(t: Target, n_train: int, n_test: int) -> tasks.TaskConfig:
    kw = {}
    kind = "wang_nvar" if t.kind == "lagset" else t.kind
    if kind == "wang_nvar":
        kw = dict(n_vars=t.n_vars, span=t.span)
    return tasks.TaskConfig(kind=kind, n_train=n_train, n_test=n_test, length=LENGTH,
                            input_dim=INPUT_DIM, **kw)


def run_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(BASE_SEED), seed)


# ----------------------------------------------------------------------------------------------
# run

def _data(t: Target, st: Setting, s: int):
    """(x_train, y_train, x_test, y_test) of target t, seed s (float64 numpy), n_max train."""
    nmax = max(st.ns)
    key = jax.random.fold_in(run_key(s), 1)
    if t.kind == "random_labels":
        d = tasks.sample_task(task_config(t, nmax, st.n_test), key, {"eps_x": t.eps},
                              dtype=jnp.float64)
        return tuple(np.asarray(a) for a in (d.x_train, d.y_train[:, 0], d.x_test, d.y_test[:, 0]))
    tc = task_config(Target("inputs", "wang_additive"), nmax, st.n_test)
    x = tasks.sample_inputs(tc, jax.random.fold_in(key, 0), nmax + st.n_test, {"eps_x": t.eps},
                            dtype=jnp.float64)
    if t.kind == "wang_additive":
        tp = tasks.target_params(tc, key, {"eps_x": t.eps}, dtype=jnp.float64)
        y = np.asarray(tasks.target_values(tc, tp, x))[:, 0]
        x = np.asarray(x)
        return x[:nmax], y[:nmax], x[nmax:], y[nmax:]
    x = np.asarray(x)
    ys = []
    for lags in target_lags(t):
        rng = np.random.default_rng([BASE_SEED, s, len(lags), *lags])
        beta, c = draw_lag_target(rng, lags, INPUT_DIM, t.eps)
        ys.append(c * lag_target(x, lags, beta))
    y = np.stack(ys, axis=-1)                                   # (n, lag sets)
    return x[:nmax], y[:nmax], x[nmax:], y[nmax:]


def _kernel_piece(t: Target, st: Setting) -> dict[str, np.ndarray]:
    """Per seed and n: c(n) (the mean over the target's lag sets), kernel-regression test MSE,
    and lambda_max(H) at n_max."""
    cfg = model_config(st.width)
    meas = np.zeros((st.seeds, len(st.ns)))
    kr = np.zeros((st.seeds, len(st.ns)))
    lam = np.zeros((st.seeds,))
    with jax.enable_x64(True):
        for s in range(st.seeds):
            x, y, xt, yt = _data(t, st, s)
            y, yt = y.reshape(len(y), -1), yt.reshape(len(yt), -1)
            _, H = infinite_kernels(cfg, x)
            _, Ht = infinite_kernels(cfg, xt, x)
            H, Ht = np.asarray(H), np.asarray(Ht)
            lam[s] = np.linalg.eigvalsh(H)[-1]
            for i, n in enumerate(st.ns):
                meas[s, i] = np.mean(complexity(H[:n, :n], y[:n]))
                p = np.concatenate([np.asarray(kernel_regression(   # one lag set at a time: one
                    H[:n, :n], y[:n, k:k + 1], Ht[:, :n], diag_reg=JITTER))  # compile per n
                    for k in range(y.shape[1])], axis=1)
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
    for t in ALL_TARGETS:
        kp = out / f"kernel_{t.name}.npz"
        if not is_done(kp, want):
            save_piece(kp, want, **_kernel_piece(t, st))
    for t in TARGETS:
        if t.name not in st.train_targets:
            continue
        tp = out / f"train_{t.name}.npz"
        if not is_done(tp, want):
            k, _ = load_piece(out / f"kernel_{t.name}.npz", want)
            store_dir = out / "train" / t.name
            spec = train_spec(t, st, train_lr(st, float(np.mean(k["lam_max"]))))
            sweep_store(spec, store_dir)
            save_piece(tp, want, **train_results(store_dir))


def _load(results_dir):
    """Every stored piece of the last run (K for every target, R for the trained ones); each must
    have been made with the settings of the first target's kernel piece
    (``protocol.load_piece``)."""
    out = Path(results_dir) / NAME
    want = load_piece(out / f"kernel_{TARGETS[0].name}.npz")[1].get("settings")
    if want is None:
        raise FileNotFoundError(f"results under {out} have no settings (an older format); run "
                                f"the experiment again")
    trained = want["setting"].get("train_targets")
    if trained is None:
        raise FileNotFoundError(f"results under {out} are of an older format; run the experiment "
                                f"again")
    K = {t.name: load_piece(out / f"kernel_{t.name}.npz", want)[0] for t in ALL_TARGETS}
    R = {t.name: load_piece(out / f"train_{t.name}.npz", want)[0] for t in TARGETS
         if t.name in trained}
    return K, R


# ----------------------------------------------------------------------------------------------
# figures and claims

def _trained(R) -> list[Target]:
    return [t for t in TARGETS if t.name in R]


def figures(results_dir, fig_dir) -> list[Path]:
    import matplotlib.ticker

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
    ax[0, 0].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax[0, 0].set_xlabel("training samples n")
    ax[0, 0].set_ylabel("sqrt(y^T H^-1 y tr H) / n")
    ax[0, 0].legend(fontsize=5.5, ncol=2, loc="lower left")
    ax[0, 0].set_title("scale-free complexity vs n (log-log slope)")
    xs = [1, 2, 3, 4]
    mN = [K[n]["measure"][:, -1].mean() for n in N_SERIES]
    fN = stats.fit_power_law(xs, np.stack([K[n]["measure"][:, -1] for n in N_SERIES], 1), n_boot=200)
    ax[0, 1].plot(xs, mN, "o-", label=f"N, all lag sets in {{0..{N_SPAN}}}; slope {fN.slope:+.2f}")
    ls = [l for _, l in SPAN_SERIES]
    mL = [K[n]["measure"][:, -1].mean() for n, _ in SPAN_SERIES]
    fL = stats.fit_power_law(ls, np.stack([K[n]["measure"][:, -1] for n, _ in SPAN_SERIES], 1),
                             n_boot=200)
    ax[0, 1].plot(ls, mL, "s--", label=f"span l0 (N = 2); slope {fL.slope:+.2f}")
    ax[0, 1].set_xscale("log")
    ax[0, 1].set_xlabel("N variables  /  span l0 (tokens)")
    ax[0, 1].set_ylabel(f"complexity at n = {int(ns[-1])}")
    ax[0, 1].legend(loc="upper left", fontsize=6.5)
    tr = _trained(R)
    meas = np.array([K[t.name]["measure"][:, -1].mean() for t in tr])
    err = np.array([R[t.name]["test_mse"].mean() for t in tr])
    rho = stats.spearman(meas, err)
    for t, a, b in zip(tr, meas, err):
        c = cols[TARGETS.index(t)]
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
    last = {name: K[name]["measure"][:, -1] for name in K}

    fN = stats.fit_power_law([1, 2, 3, 4], np.stack([last[n] for n in N_SERIES], 1))
    mN = ", ".join(f"{last[n].mean():.3f}" for n in N_SERIES)
    out.append(Claim(
        NAME, f"complexity grows with the number of variables N (lag set {{0..{N_SPAN}}} fixed: "
        f"mean over all lag sets of size N; c = {mN} for N = 1..4)",
        f"log-log slope of complexity vs N at n={nlast}", fmt_fit(fN, signed=True), "> 0",
        stats.verdict(fN.slope, fN.ci95, 1e-12, math.inf)))
    ls = [l for _, l in SPAN_SERIES]
    fL = stats.fit_power_law(ls, np.stack([last[n] for n, _ in SPAN_SERIES], 1))
    mL = ", ".join(f"{last[n].mean():.3f}" for n, _ in SPAN_SERIES)
    out.append(Claim(
        NAME, f"complexity grows with the span l0 (N = 2, lags {{0, l0}}; c = {mL} for l0 = "
        f"{', '.join(map(str, ls))})", f"log-log slope of complexity vs l0 at n={nlast}",
        fmt_fit(fL, signed=True), "> 0", stats.verdict(fL.slope, fL.ci95, 1e-12, math.inf)))
    fits = {n: stats.fit_power_law(ns, K[n]["measure"]) for n in BOUNDED}
    txt = "; ".join(f"{n} {fmt_fit(fits[n], signed=True)}" for n in BOUNDED)
    out.append(Claim(NAME, "complexity stays bounded in n for additive / N=1 / N=2,l0=1 targets",
                     "log-log slope of complexity vs n (worst of three)", txt, "every slope <= 0.1",
                     stats.combine([stats.at_most(fits[n].slope, fits[n].ci95, 0.1)
                                    for n in BOUNDED])))
    fr = stats.fit_power_law(ns, K["random"]["measure"])
    out.append(Claim(NAME, "complexity does not shrink for random labels",
                     "log-log slope of complexity vs n (random labels)",
                     fmt_fit(fr, signed=True), ">= 0", stats.at_least(fr.slope, fr.ci95, 0.0),
                     role="control"))
    tr = _trained(R)
    arrM = [last[t.name] for t in tr]
    arrE = [R[t.name]["test_mse"] for t in tr]
    nm = len(arrM)
    est, ci = stats.bootstrap_seeds(lambda *v: stats.spearman(v[:nm], v[nm:]), arrM + arrE)
    kr = [K[t.name]["kr_test_mse"][:, -1].mean() for t in tr]
    rho_kr = stats.spearman([a.mean() for a in arrM], kr)
    out.append(Claim(NAME, "complexity ranking matches the ranking of trained-RNN test errors",
                     f"Spearman(complexity, RNN test MSE) over {nm} trained targets, n={nlast}",
                     f"{fmt_interval(est, ci)} (vs infinite-width kernel regression "
                     f"error: {rho_kr:.3f})", "> 0.5",
                     stats.verdict(est, ci, 0.5 + 1e-12, 1.0), role="extra"))
    a1, a01 = last["additive"], last["additive_eps0.1"]
    est, ci = stats.bootstrap_seeds(lambda a, b: a / b, [a1, a01])
    e1, e01 = R["additive"]["test_mse"].mean(), R["additive_eps0.1"]["test_mse"].mean()
    out.append(Claim(NAME, "unit-norm tokens are not worse than shrunk ones (additive target; the "
                     "ReLU NTK is homogeneous, H(0.1 x) = 0.01 H(x), so only the target differs: "
                     "sin(beta^T x) is nearly linear at eps = 0.1)",
                     f"complexity(eps=1) / complexity(eps=0.1) at n={nlast}",
                     f"{fmt_interval(est, ci)} (c {a1.mean():.3f} vs {a01.mean():.3f}; RNN test "
                     f"MSE {e1:.3f} vs {e01:.3f})", "<= 1", stats.at_most(est, ci, 1.0)))
    return out
