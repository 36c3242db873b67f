"""D2: the activation-Lipschitz cutoff of long-term dependencies (Cayci & Eryilmaz 2024).

Claim of the paper: for diagonal RNNs trained by gradient descent (kernel regime), the bounds on
the width and on the iteration complexity depend on the sequence length T through the factor
sum_{t<T} (L_phi alpha)^t, with L_phi the Lipschitz constant of the activation and alpha the
scale of the (diagonal) recurrent weights: bounded in T when L_phi alpha < 1, polynomial at
L_phi alpha = 1, exponential above; and dependencies at lag k enter with weight (L_phi alpha)^k,
so long lags degrade geometrically below the cutoff.

Setup (what this module measures)
---------------------------------
* Model: diagonal Elman RNN (``recurrence='diagonal'``), tanh (L_phi = 1), read-out 'last',
  trainable groups {W, U} (v fixed, s_b = 0), input dimension d = 8, tokens uniform on the unit
  sphere (the ``lag`` task's inputs, eps_x = 1).
* How alpha enters: the recurrent term is s_w (w_i h_i) with s_w = alpha and, for the claims,
  **w_i = +-1 with random signs** ('sign' init: every unit's recurrent coefficient has modulus
  exactly alpha, so L_phi alpha is the per-step Lipschitz constant of every unit). For comparison
  the figures also show the training engine's init ('gaussian': w_i ~ N(0, 1), so alpha is the
  RMS of the coefficients).
* Input drive: s_u = drive * sqrt(d), so each unit's input drive has standard deviation
  ``drive``. drive = 1 (unit drive, U ~ N(0, I_d) on unit-norm tokens) and drive = 0.1
  (small drive: pre-activations stay in the near-linear range of tanh, where phi' ~ L_phi and the
  Lipschitz bound can be tight).
* At initialisation, for T in the T grid (prefixes of the same sequences): the gradient norms
  ||d f / d W||, ||d f / d U|| of the last output, the empirical NTK diagonal (structured method;
  equal to ||d f/d W||^2 + ||d f/d U||^2), and at T = T_max the sensitivity
  S_k = ||d f / d x_{T-k}|| of the output to the token k steps back.
* Training (``rnn_ntk.train.train_many``; this engine draws the 'gaussian' init): lag-k teachers
  y = c sin(beta^T x_{T-k}) (kind 'lag', k in {1, 5, 10}), full-batch GD on the mean squared
  error with step lr = n / (2 lambda_max(K_0)) (K_0 the empirical NTK of the training inputs at
  initialisation: the top kernel mode is removed in one step, half the stability limit), the
  same seeds (inputs and initial weights) for every alpha and k. Steps to threshold N = the
  first logged step with train loss <= 0.1 x the initial train loss (censored at the budget).

Agreement criteria (fixed before any run; never tuned)
------------------------------------------------------
Kbar(T) = seed mean of the mean NTK diagonal over the inputs; 95% intervals are seed bootstraps
(stats.fit_power_law; per-step rates are fitted as power laws in e^T). Fits use T >= 10.
Criteria are evaluated for each drive (one row per drive); a row combining several alpha
agrees when every alpha agrees, disagrees when any disagrees, else is inconclusive.

D2.1  Below the cutoff (L_phi alpha in {0.5, 0.9}): NTK diagonal bounded in T: log-log slope p of
      Kbar(T) with |p| <= 0.25.
D2.2  At the cutoff (L_phi alpha = 1): polynomial growth: p in [0.25, 2.5] (the bound's gradient
      is O(T), its square O(T^2), plus slack).
D2.3  Above the cutoff (L_phi alpha in {1.1, 1.3}): exponential growth: per-step rate r of
      ln Kbar(T) with r >= ln(L_phi alpha) (at least half the bound's rate 2 ln(L_phi alpha) of
      the squared gradient).
D2.4  Long lags degrade like (L_phi alpha)^k below the cutoff (alpha in {0.5, 0.9}): with
      ln rho = per-step slope of ln(seed-mean S_k) over 1 <= k <= min(20, T_max - 1),
      rho / (L_phi alpha) in [0.9, 1.05] (the rate attained within 10%; rho <= L_phi alpha holds
      unit by unit, the 5% above it is room for the fit).
D2.5  Training, below the cutoff (alpha in {0.5, 0.9}): lag-10 teachers take at least twice as
      many steps as lag-1 teachers: N(k=10) / N(k=1) >= 2 (medians over seeds; a censored N(10)
      counts at the budget, which makes the ratio a lower bound). Agrees if >= 2 for both alpha;
      disagrees if < 2 for either; inconclusive when N(1) itself is censored.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import model, plots, stats, tasks, train
from rnn_ntk.kernels.empirical import empirical_ntk
from rnn_ntk.experiments.protocol import fmt_fit, is_done, save_piece
from rnn_ntk.reproduce import Claim, check_scale, load_arrays
from rnn_ntk.stats import combine, fit_rate

NAME = "d2_lipschitz_cutoff"
TITLE = ("Activation-Lipschitz cutoff (Cayci & Eryilmaz 2024): diagonal tanh RNN gradients, NTK "
         "diagonal and lag sensitivity vs T for L*alpha in {0.5..1.3}; GD on lag-k teachers")

ALPHAS = (0.5, 0.9, 1.0, 1.1, 1.3)
L_PHI = 1.0                   # tanh
INPUT_DIM = 8
DRIVES = (1.0, 0.1)
TEACHER_LAGS = (1, 5, 10)
VARIANTS = (("sign", 1.0), ("sign", 0.1), ("gaussian", 1.0))   # (init, drive)
BASE_SEED = 2024
MIN_FIT_T = 10
SENS_FIT_MAX = 20
THRESHOLD = 0.1               # train loss <= THRESHOLD x initial train loss


class Setting(NamedTuple):
    """Sizes of one scale (init analysis: width, T_grid, seeds, n_inputs; training: train_*)."""

    width: int
    T_grid: tuple[int, ...]
    seeds: int
    n_inputs: int
    train_width: int
    train_length: int
    n_train: int
    n_test: int
    steps: int
    log_every: int
    train_seeds: int


SETTINGS = {
    "ci": Setting(width=16, T_grid=(5, 10, 15), seeds=2, n_inputs=3, train_width=16,
                  train_length=12, n_train=8, n_test=8, steps=40, log_every=1, train_seeds=2),
    "default": Setting(width=512, T_grid=(5, 10, 15, 20, 30, 40), seeds=4, n_inputs=16,
                       train_width=128, train_length=20, n_train=64, n_test=64, steps=1000,
                       log_every=1, train_seeds=3),
    "large": Setting(width=4096, T_grid=(5, 10, 15, 20, 25, 30, 35, 40), seeds=16, n_inputs=64,
                     train_width=1024, train_length=20, n_train=256, n_test=256, steps=4000,
                     log_every=1, train_seeds=8),
}


# ----------------------------------------------------------------------------------------------
# pieces (public: tested in tests/experiments/test_d2_lipschitz_cutoff.py)

def model_config(width: int) -> model.RNNConfig:
    """Diagonal tanh RNN, read-out 'last', trainable {W, U}, s_b = 0, s_v = 1. s_w (alpha) and
    s_u (drive sqrt(d)) are passed through Scales (:func:`scales_for`); the config's values are
    those of alpha = 1, drive = 1."""
    return model.RNNConfig(width=width, input_dim=INPUT_DIM, output_dim=1, activation="tanh",
                           readout="last", sigma_w=1.0, sigma_u=math.sqrt(INPUT_DIM),
                           sigma_b=0.0, sigma_v=1.0, trainable=("W", "U"), recurrence="diagonal")


def scales_for(cfg: model.RNNConfig, alpha: Any, drive: Any, dtype: Any) -> model.Scales:
    """s_w = alpha, s_u = drive sqrt(d) (input drive of standard deviation ``drive`` per unit)."""
    return model.Scales(*(jnp.asarray(v, dtype) for v in
                          (alpha, drive * math.sqrt(INPUT_DIM), cfg.sigma_b, cfg.sigma_v,
                           cfg.width)))


def init_with(cfg: model.RNNConfig, key: jax.Array, init: str, dtype: Any) -> model.Params:
    """N(0, 1) parameters; init 'sign' replaces the diagonal W by sign(W) (|w_i| = 1, so the
    recurrent coefficient s_w w_i has modulus exactly s_w = alpha)."""
    if init not in ("sign", "gaussian"):
        raise ValueError(f"init must be 'sign' or 'gaussian', got {init!r}")
    return _init_jit(cfg, key, init, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _init_jit(cfg: model.RNNConfig, key: jax.Array, init: str, dtype: Any) -> model.Params:
    p = model.init_params(cfg, key, dtype)
    if init == "sign":
        p = {**p, "W": jnp.where(p["W"] >= 0, 1.0, -1.0).astype(dtype)}
    return p


def input_sequences(seed: int, n: int, length: int, dtype: Any = jnp.float64) -> jax.Array:
    """(n, length, d) unit-norm tokens (the lag task's inputs) of seed index ``seed``."""
    tcfg = tasks.TaskConfig(kind="lag", n_train=n, n_test=1, length=length, input_dim=INPUT_DIM)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(BASE_SEED), seed), 0)
    return _inputs_jit(tcfg, key, n, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _inputs_jit(tcfg: tasks.TaskConfig, key: jax.Array, n: int, dtype: Any) -> jax.Array:
    return tasks.sample_inputs(tcfg, key, n, {"eps_x": 1.0}, dtype=dtype)


def _f_one(cfg, params, x_TD, length, scales):
    return model.apply(cfg, params, x_TD[None], length[None], scales=scales)[0, 0]


@functools.partial(jax.jit, static_argnames=("cfg",))
def gradient_norms(cfg: model.RNNConfig, params: model.Params, x_NTD: jax.Array,
                   lengths_N: jax.Array, scales: model.Scales) -> tuple[jax.Array, jax.Array]:
    """(||d f / d W||, ||d f / d U||) of each sequence's last output f = f_{length}: (n,), (n,)."""
    def one(x, ln):
        g = jax.grad(lambda p: _f_one(cfg, {**params, **p}, x, ln, scales))(
            {"W": params["W"], "U": params["U"]})
        return jnp.sqrt(jnp.sum(g["W"] ** 2)), jnp.sqrt(jnp.sum(g["U"] ** 2))
    return jax.vmap(one)(x_NTD, lengths_N)


@functools.partial(jax.jit, static_argnames=("cfg",))
def sensitivity(cfg: model.RNNConfig, params: model.Params, x_NTD: jax.Array,
                scales: model.Scales) -> jax.Array:
    """S_k = ||d f / d x_{T-k}|| for k = 0..T-1 (the last output f = f_T): (n, T)."""
    T = x_NTD.shape[1]
    full = jnp.full((), T, jnp.int32)
    g = jax.vmap(jax.grad(lambda x: _f_one(cfg, params, x, full, scales)))(x_NTD)   # (n, T, d)
    return jnp.sqrt(jnp.sum(g * g, axis=-1))[:, ::-1]


def ntk_diagonal(cfg: model.RNNConfig, params: model.Params, x_NTD: jax.Array,
                 scales: model.Scales) -> np.ndarray:
    """Diagonal of the empirical NTK (structured method, trainable {W, U}) of the inputs: (n,)."""
    return np.diag(np.asarray(empirical_ntk(cfg, params, x_NTD, method="structured",
                                            scales=scales)))


def steps_to_threshold(loss_RL: np.ndarray, log_every: int, frac: float = THRESHOLD
                       ) -> np.ndarray:
    """First logged step with loss <= frac * loss at step 0, per run (R,); NaN if never (censored).
    Non-finite losses never count as reached."""
    loss = np.asarray(loss_RL, np.float64)
    ok = np.isfinite(loss) & (loss <= frac * loss[:, :1])
    first = np.argmax(ok, axis=1)
    return np.where(ok.any(axis=1), first * log_every, np.nan).astype(np.float64)


def lag_ratio(n_long: np.ndarray, n_short: np.ndarray, budget: int) -> tuple[float, bool, bool]:
    """median(N_long) / median(N_short), censored N counted at ``budget``. Returns (ratio,
    long_censored, short_censored) where *_censored says the median itself is censored."""
    nl = np.where(np.isfinite(n_long), n_long, budget)
    ns = np.where(np.isfinite(n_short), n_short, budget)
    ml, ms = float(np.median(nl)), float(np.median(ns))
    short_c = float(np.median(np.where(np.isfinite(n_short), n_short, np.inf))) == np.inf
    long_c = float(np.median(np.where(np.isfinite(n_long), n_long, np.inf))) == np.inf
    return ml / max(ms, 1.0), long_c, short_c


# ----------------------------------------------------------------------------------------------
# run

_INIT_FIELDS = ("width", "T_grid", "seeds", "n_inputs")


def _meta(st: Setting, scale: str, part: str) -> dict[str, Any]:
    """The settings a piece depends on ('init' or 'train' fields), as stored in its meta."""
    fields = {k: v for k, v in st._asdict().items() if (k in _INIT_FIELDS) == (part == "init")}
    return json.loads(json.dumps({"scale": scale, **fields}))


def _tag(v: float) -> str:
    return f"{v:g}".replace(".", "p")


def _init_path(out: Path, init: str, drive: float) -> Path:
    return out / f"init_{init}_drive{_tag(drive)}.npz"


def _train_path(out: Path, alpha: float) -> Path:
    return out / f"train_alpha{_tag(alpha)}.npz"


def train_config(st: Setting) -> train.TrainConfig:
    mcfg = model_config(st.train_width)
    tcfg = tasks.TaskConfig(kind="lag", n_train=st.n_train, n_test=st.n_test,
                            length=st.train_length, input_dim=INPUT_DIM, target="last")
    return train.TrainConfig(model=mcfg, task=tcfg, steps=st.steps, log_every=st.log_every,
                             optimizer="sgd", loss="mean", dtype="float32")


def _init_piece(st: Setting, init: str, drive: float) -> dict[str, np.ndarray]:
    cfg = model_config(st.width)
    Tg = np.asarray(st.T_grid)
    Tmax = int(Tg.max())
    S, A, nT, n = st.seeds, len(ALPHAS), len(Tg), st.n_inputs
    gW = np.zeros((S, A, nT, n))
    gU = np.zeros((S, A, nT, n))
    kd = np.zeros((S, A, nT, n))
    sens = np.zeros((S, A, n, Tmax))
    for s in range(S):
        x = input_sequences(s, n, Tmax)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(BASE_SEED), s), 1)
        params = init_with(cfg, key, init, jnp.float64)
        x_rep = jnp.tile(x, (nT, 1, 1))                      # T-major: rows j*n .. j*n + n-1
        len_rep = jnp.repeat(jnp.asarray(Tg, jnp.int32), n)
        for a, alpha in enumerate(ALPHAS):
            sc = scales_for(cfg, alpha, drive, jnp.float64)
            w, u = gradient_norms(cfg, params, x_rep, len_rep, sc)
            gW[s, a] = np.asarray(w).reshape(nT, n)
            gU[s, a] = np.asarray(u).reshape(nT, n)
            for j, T in enumerate(Tg):
                kd[s, a, j] = ntk_diagonal(cfg, params, x[:, :T], sc)
            sens[s, a] = np.asarray(sensitivity(cfg, params, x, sc))
    return {"grad_W": gW, "grad_U": gU, "ntk_diag": kd, "sens": sens, "T_grid": Tg,
            "alphas": np.asarray(ALPHAS)}


@functools.lru_cache(maxsize=8)
def _setup_fn(cfg: train.TrainConfig):
    """train.setup_run compiled once per config (initial parameters and data of a run)."""
    return jax.jit(functools.partial(train.setup_run, cfg))


def _train_piece(st: Setting, alpha: float) -> dict[str, np.ndarray]:
    cfg = train_config(st)
    runs = [(s, k) for s in range(st.train_seeds) for k in TEACHER_LAGS]
    keys = train.run_keys(BASE_SEED, np.asarray([[s] for s, _ in runs]))
    setup = _setup_fn(cfg)
    lrs = []
    for r, (s, k) in enumerate(runs):
        hp = {"sigma_w": alpha, "lag": float(k), "eps_x": 1.0}
        rs = setup(keys[r], hp)
        K = np.asarray(empirical_ntk(cfg.model, rs.params0, rs.data.x_train, scales=rs.scales),
                       np.float64)
        lam = float(np.linalg.eigvalsh(K)[-1])
        lrs.append(st.n_train / (2.0 * lam))
    hps = {"lr": np.asarray(lrs), "sigma_w": np.full(len(runs), alpha),
           "lag": np.asarray([float(k) for _, k in runs]), "eps_x": np.ones(len(runs))}
    rec = train.train_many(cfg, keys, hps)
    return {"train_loss": np.asarray(rec["train_loss"], np.float64),
            "test_loss": np.asarray(rec["test_loss"], np.float64),
            "diverged": np.asarray(rec["diverged"]), "lr": np.asarray(lrs),
            "seed": np.asarray([s for s, _ in runs]), "lag": np.asarray([k for _, k in runs]),
            "log_every": np.asarray(st.log_every), "steps": np.asarray(st.steps)}


def run(results_dir: str | Path, scale: str = "default") -> None:
    """Init-time analyses per (init, drive) and training per alpha; finished pieces skipped."""
    st = SETTINGS[check_scale(scale)]
    out = Path(results_dir) / NAME
    meta_i, meta_t = _meta(st, scale, "init"), _meta(st, scale, "train")
    with jax.enable_x64(True):
        for init, drive in VARIANTS:
            path = _init_path(out, init, drive)
            if not is_done(path, meta_i):
                save_piece(path, meta_i, {"init": init, "drive": drive},
                           **_init_piece(st, init, drive))
        for alpha in ALPHAS:
            path = _train_path(out, alpha)
            if not is_done(path, meta_t):
                save_piece(path, meta_t, {"alpha": alpha}, **_train_piece(st, alpha))


# ----------------------------------------------------------------------------------------------
# loading

def _load(results_dir: str | Path) -> dict[str, Any]:
    out = Path(results_dir) / NAME
    res: dict[str, Any] = {"init": {}, "train": {}}
    for init, drive in VARIANTS:
        p = _init_path(out, init, drive)
        if p.exists():
            res["init"][(init, drive)] = load_arrays(p)[0]
    for alpha in ALPHAS:
        p = _train_path(out, alpha)
        if p.exists():
            res["train"][alpha] = load_arrays(p)[0]
    if len(res["init"]) < len(VARIANTS) or len(res["train"]) < len(ALPHAS):
        raise FileNotFoundError(f"results under {out} are missing or incomplete; run the "
                                f"experiment first")
    return res


def _kbar(a: dict[str, np.ndarray]) -> np.ndarray:
    """Seed-by-T matrices of the input-mean NTK diagonal: (S, A, nT)."""
    return a["ntk_diag"].mean(axis=-1)


def _fits(a: dict[str, np.ndarray], ai: int) -> tuple[stats.Fit, stats.Fit]:
    Tg = a["T_grid"]
    keep = Tg >= MIN_FIT_T
    K = _kbar(a)[:, ai][:, keep]
    return stats.fit_power_law(Tg[keep], K), fit_rate(Tg[keep], K)


def _sens_fit(a: dict[str, np.ndarray], ai: int) -> stats.Fit:
    S_k = a["sens"][:, ai].mean(axis=1)              # (S, T): mean over inputs
    kmax = min(SENS_FIT_MAX, S_k.shape[1] - 1)
    k = np.arange(1, kmax + 1)
    return fit_rate(k, S_k[:, 1:kmax + 1])


def _training_table(res: dict[str, Any]) -> dict[float, dict[int, np.ndarray]]:
    """{alpha: {lag: steps to threshold per seed (NaN = censored)}}."""
    tab: dict[float, dict[int, np.ndarray]] = {}
    for alpha, a in res["train"].items():
        N = steps_to_threshold(a["train_loss"], int(a["log_every"]))
        tab[alpha] = {k: N[a["lag"] == k] for k in TEACHER_LAGS}
    return tab


# ----------------------------------------------------------------------------------------------
# figures

def figures(results_dir: str | Path, fig_dir: str | Path) -> list[Path]:
    res = _load(results_dir)
    fig_dir = Path(fig_dir)
    paths: list[Path] = []
    cols = plots.width_colors(len(ALPHAS))

    # 1. NTK diagonal and gradient norms vs T, one row per (init, drive)
    fig, axes = plots.new_figure(3, len(VARIANTS), width=3.1, height=2.6)
    for row, (init, drive) in enumerate(VARIANTS):
        a = res["init"][(init, drive)]
        Tg = a["T_grid"]
        for ai, alpha in enumerate(ALPHAS):
            p, r = _fits(a, ai)
            lab = f"L*alpha={L_PHI * alpha:g}: p={p.slope:.2f}, r={r.slope:.3f}"
            axes[row, 0].plot(Tg, _kbar(a)[:, ai].mean(axis=0), "o-", ms=3, color=cols[ai],
                              label=lab)
            axes[row, 1].plot(Tg, a["grad_W"][:, ai].mean(axis=(0, 2)), "o-", ms=3,
                              color=cols[ai], label=f"L*alpha={L_PHI * alpha:g}")
            axes[row, 2].plot(Tg, a["grad_U"][:, ai].mean(axis=(0, 2)), "o-", ms=3,
                              color=cols[ai])
        for col, ylab in enumerate(["NTK diagonal K(x, x)", r"$\|\partial f/\partial W\|$",
                                    r"$\|\partial f/\partial U\|$"]):
            ax = axes[row, col]
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T (steps)")
            ax.set_ylabel(ylab)
            ax.set_title(f"{init} init, drive {drive:g}")
        axes[row, 0].legend(fontsize=5.5)
    paths += plots.save(fig, fig_dir / f"{NAME}_init_vs_T")

    # 2. sensitivity to x_{T-k} vs k, with (L alpha)^k references
    fig, axes = plots.new_figure(len(VARIANTS), 1, width=3.4, height=3.0)
    for ax, (init, drive) in zip(axes[0], VARIANTS):
        a = res["init"][(init, drive)]
        S_k = a["sens"].mean(axis=(0, 2))                # (A, T)
        k = np.arange(S_k.shape[1])
        for ai, alpha in enumerate(ALPHAS):
            f = _sens_fit(a, ai)
            ax.plot(k, S_k[ai], color=cols[ai],
                    label=f"L*alpha={L_PHI * alpha:g}: rho={math.exp(f.slope):.3f}")
            ax.plot(k, S_k[ai, 1] * (L_PHI * alpha) ** (k - 1.0), ":", color=cols[ai], lw=0.9)
        ax.set_yscale("log")
        ax.set_ylim(max(S_k[S_k > 0].min(), 1e-12) * 0.5, S_k.max() * 3)
        ax.set_xlabel("lag k (steps before the output)")
        ax.set_ylabel(r"$\|\partial f/\partial x_{T-k}\|$ (mean)")
        ax.set_title(f"{init} init, drive {drive:g}; dotted: $(L\\alpha)^k$")
        ax.legend(fontsize=5.5)
    paths += plots.save(fig, fig_dir / f"{NAME}_sensitivity")

    # 3. training: steps to threshold vs teacher lag, and loss curves at the longest lag
    tab = _training_table(res)
    fig, axes = plots.new_figure(3, 1, width=3.4, height=3.0)
    ax = axes[0, 0]
    any_a = res["train"][ALPHAS[0]]
    budget = int(any_a["steps"])
    for ai, alpha in enumerate(ALPHAS):
        med, cens = [], []
        for k in TEACHER_LAGS:
            N = tab[alpha][k]
            Nc = np.where(np.isfinite(N), N, budget)
            med.append(float(np.median(Nc)))
            cens.append(bool(np.median(np.where(np.isfinite(N), N, np.inf)) == np.inf))
        ax.plot(TEACHER_LAGS, med, "-", color=cols[ai], label=f"alpha={alpha:g} (RMS)")
        for k, mv, c in zip(TEACHER_LAGS, med, cens):
            ax.plot([k], [mv], "o", color=cols[ai], mfc="none" if c else cols[ai])
    ax.axhline(budget, color="grey", ls="--", lw=0.8, label="budget (open: not reached)")
    ax.set_yscale("log")
    ax.set_xlabel("teacher lag k (steps)")
    ax.set_ylabel(f"GD steps to loss <= {THRESHOLD:g} x initial")
    ax.set_title("gaussian init (training engine)")
    ax.set_ylim(top=budget * 40)        # headroom above the budget line for the legend
    ax.legend(fontsize=5.5, ncol=2, loc="upper center")
    ax = axes[0, 1]
    kmax = TEACHER_LAGS[-1]
    for ai, alpha in enumerate(ALPHAS):
        a = res["train"][alpha]
        sel = a["lag"] == kmax
        L = a["train_loss"][sel]
        rel = L / L[:, :1]
        steps = np.arange(L.shape[1]) * int(a["log_every"])
        ax.plot(steps, np.exp(np.log(rel).mean(axis=0)), color=cols[ai], label=f"alpha={alpha:g}")
    ax.axhline(THRESHOLD, color="grey", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("GD step")
    ax.set_ylabel("train loss / initial (geometric seed mean)")
    ax.set_title(f"lag-{kmax} teacher")
    ax.legend(fontsize=6)
    ax = axes[0, 2]
    for ai, alpha in enumerate(ALPHAS):
        a = res["train"][alpha]
        rel = a["test_loss"][:, -1] / a["test_loss"][:, 0]
        ax.plot(TEACHER_LAGS, [float(np.median(rel[a["lag"] == k])) for k in TEACHER_LAGS], "o-",
                color=cols[ai], label=f"alpha={alpha:g}")
    ax.axhline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("teacher lag k (steps)")
    ax.set_ylabel(f"test loss after {budget} steps / initial (median)")
    ax.set_title("generalisation (descriptive)")
    ax.legend(fontsize=6)
    paths += plots.save(fig, fig_dir / f"{NAME}_training")
    return paths


# ----------------------------------------------------------------------------------------------
# claims

def claims(results_dir: str | Path) -> list[Claim]:
    res = _load(results_dir)
    out: list[Claim] = []
    idx = {alpha: i for i, alpha in enumerate(ALPHAS)}
    below = [x for x in ALPHAS if L_PHI * x < 1]
    above = [x for x in ALPHAS if L_PHI * x > 1]
    at = [x for x in ALPHAS if L_PHI * x == 1]
    for drive in DRIVES:
        a = res["init"][("sign", drive)]
        ctx = f"sign init, drive {drive:g}"
        vs, parts = [], []
        for x in below:
            p, _ = _fits(a, idx[x])
            vs.append(stats.verdict(p.slope, p.ci95, -0.25, 0.25))
            parts.append(f"L*alpha={x:g}: {fmt_fit(p)}")
        out.append(Claim(NAME, f"D2.1 below the cutoff the NTK diagonal is bounded in T ({ctx})",
                         f"log-log slope p of the NTK diagonal vs T, T >= {MIN_FIT_T}",
                         "; ".join(parts), "|p| <= 0.25 for each L*alpha < 1", combine(vs)))
        vs, parts = [], []
        for x in at:
            p, _ = _fits(a, idx[x])
            vs.append(stats.verdict(p.slope, p.ci95, 0.25, 2.5))
            parts.append(f"L*alpha={x:g}: {fmt_fit(p)}")
        out.append(Claim(NAME, f"D2.2 at the cutoff the NTK diagonal grows polynomially in T "
                               f"({ctx})",
                         f"log-log slope p of the NTK diagonal vs T, T >= {MIN_FIT_T}",
                         "; ".join(parts), "p in [0.25, 2.5]", combine(vs)))
        vs, parts = [], []
        for x in above:
            _, r = _fits(a, idx[x])
            lo = math.log(L_PHI * x)
            vs.append(stats.verdict(r.slope, r.ci95, lo, np.inf))
            parts.append(f"L*alpha={x:g}: {fmt_fit(r, 4)} (needs >= {lo:.3f})")
        out.append(Claim(NAME, f"D2.3 above the cutoff the NTK diagonal grows exponentially in T "
                               f"({ctx})",
                         f"per-step rate r of ln NTK diagonal vs T, T >= {MIN_FIT_T}",
                         "; ".join(parts), "r >= ln(L*alpha) for each L*alpha > 1", combine(vs)))
        vs, parts = [], []
        for x in below:
            f = _sens_fit(a, idx[x])
            rho = math.exp(f.slope)
            ratio, lo, hi = (rho / (L_PHI * x), math.exp(f.ci95[0]) / (L_PHI * x),
                             math.exp(f.ci95[1]) / (L_PHI * x))
            vs.append(stats.verdict(ratio, (lo, hi), 0.9, 1.05))
            parts.append(f"L*alpha={x:g}: rho/(L*alpha) = {ratio:.3f} [{lo:.3f}, {hi:.3f}]")
        out.append(Claim(NAME, f"D2.4 below the cutoff the output's sensitivity to x_(T-k) decays "
                               f"like (L*alpha)^k ({ctx})",
                         f"rho = exp(per-step slope of ln S_k), 1 <= k <= {SENS_FIT_MAX}",
                         "; ".join(parts), "rho/(L*alpha) in [0.9, 1.05] for each L*alpha < 1",
                         combine(vs)))

    tab = _training_table(res)
    budget = int(res["train"][ALPHAS[0]]["steps"])
    vs, parts = [], []
    k_long, k_short = TEACHER_LAGS[-1], TEACHER_LAGS[0]
    test_rel = {}
    for x in below:
        a = res["train"][x]
        rel = a["test_loss"][:, -1] / a["test_loss"][:, 0]
        test_rel[x] = (float(np.median(rel[a["lag"] == k_short])),
                       float(np.median(rel[a["lag"] == k_long])))
    for x in below:
        ratio, long_c, short_c = lag_ratio(tab[x][k_long], tab[x][k_short], budget)
        if short_c:
            v = "inconclusive"
        elif ratio >= 2:
            v = "agrees"
        else:
            v = "disagrees"
        vs.append(v)
        parts.append(f"alpha={x:g}: {'>= ' if long_c else ''}{ratio:.2f}")
    out.append(Claim(NAME, f"D2.5 below the cutoff GD needs more steps for long-lag teachers "
                           f"(gaussian init with RMS alpha, the training engine's; budget "
                           f"{budget} steps; descriptive: final/initial test loss, lag "
                           f"{k_short} vs lag {k_long}: "
                           + ", ".join(f"alpha={x:g}: {a_:.2f} vs {b_:.2f}"
                                       for x, (a_, b_) in test_rel.items()) + ")",
                     f"median steps to loss <= {THRESHOLD:g} x initial, lag {k_long} / lag "
                     f"{k_short}", "; ".join(parts), ">= 2 for each alpha < 1", combine(vs)))
    return out
