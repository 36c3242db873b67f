"""B2: no exponential explosion at initialisation (Allen-Zhu, Li & Song 2019).

Claim of the paper: for the ReLU Elman RNN h_t = ReLU(W h_{t-1} + A x_t) with W, A ~ N(0, 2/m) and
inputs ||x_t|| <= 1, at a random initialisation (width m >= poly(n, L, d)) the forward states stay
bounded, ||h_l|| <= O(l), and the backward products D_l W D_{l-1} W ... D_{a+1} W have spectral
norm at most polynomial in the lag l - a: no exponential explosion (nor vanishing), although each
product is of l - a random matrices.

Setup (what this module measures)
---------------------------------
* Model: ``RNNConfig.paper`` (ReLU, s_w = sqrt(2c), s_u = sqrt(2d), s_b = 0; this repository's
  h = sqrt(m) h_paper), with the recurrent variance scaled by c in {0.5, 1, 2} (the papers' W ~
  N(0, 2c/m)), and the same networks with tanh. Input dimension d = 10.
* Inputs: the ``random_labels`` task's inputs (tasks.sample_inputs): unit-norm first token with
  last coordinate 1/sqrt(2), later tokens uniform on the unit sphere (eps_x = 1), L steps.
* Forward: ||h_l||^2 / m for l = 1..L, per seed and sequence (n_seq sequences share a seed's
  weights).
* Backward: J_{a->l} = d h_l / d h_a (an m x m matrix: D_l W~ D_{l-1} ... D_{a+1} W~ with
  W~ = s_w W / sqrt(m) and D_t = diag(phi'(g_t))), start a = 1, lag k = l - a on a grid of lags
  up to L - 1. Its top singular value by power iteration on J^T J, J v by a linearised forward
  (jax.linearize of ``model.forward`` in its ``perturb_NTM`` argument: a perturbation W~ v of
  g_{a+1}) and J^T u by its transpose; no m x m matrix is ever formed.

Predictions (spec: rnn-kernels.md, section 2)
---------------------------------------------
The variance recursion q_1 = s_u^2 |x_1|^2 / d + s_b^2, q_t = s_w^2 V(q_{t-1}) + s_u^2 |x_t|^2/d
+ s_b^2 gives E ||h_l||^2 / m -> P_l = V(q_l, q_l, q_l). For ReLU, V(q, q, q) = q / 2 and
s_w^2 = 2c, so P_l = sum_{t<=l} c^(l-t) ||x_t||^2 (s_u^2 / d = 2): at c = 1 and unit tokens,
P_l = l exactly, i.e. ||h_l||^2 / (m l) -> 1. For tanh V is computed by quadrature.
Backward: E ||D_t W~ u||^2 = chi_t ||u||^2 with chi_t = s_w^2 Vd(q_t, q_t, q_t) (ReLU: chi_t = c),
so the mean-field log-norm of J_{a->a+k} is (1/2) sum_{t=a+1}^{a+k} ln chi_t (ReLU: (k/2) ln c);
the spectral norm exceeds the normalised Frobenius norm by a sub-exponential factor (about
sqrt(e (k+1)) for products of k independent Gaussian matrices with m >> k), whose least-squares
slope over lags 5..99 is about 0.015 per step.

The papers' hypothesis, and the (m, L) boundary (issue 15)
----------------------------------------------------------
AZLS assume m >= poly(n, L): the theorem says nothing about L > sqrt(m). The first design tested
the forward recursion at L = 100 for every width (100 > sqrt(1024) = 32) and found 3 of 8 seeds at
m = 1024 above 2x the prediction at l = 100 and 5 below 0.5x. The cause is measured here: each
weight draw W has its own growth exponent g (the finite-time Lyapunov exponent of the linearised
dynamics, the per-step slope of ln ||d h_{a+k} / d h_a v||), spread over draws by sigma_g(m); the
log-norm then spreads like sigma_g k, and the seed mean of ||h_l||^2 is dominated by the few draws
with g > 0. So the claims below test (i) the papers' claims only INSIDE the hypothesis,
l <= L_h(m) = floor(c_h sqrt(m)) with c_h = 1, and (ii) the boundary itself as a law. c_h = 1 is
the weakest polynomial hypothesis (m >= L^2) at which the accumulated spread sigma_g L_h stays
O(1) if sigma_g ~ m^(-1/2) (the expected finite-width scaling); L_h = 8, 16, 32 at m = 64, 256,
1024. Whether that expectation holds is measured (B2.8), and B2.2 measures the boundary directly.

Per-seed statistics: ell_{s,k} = mean over the seed's sequences of ln(||J_{a->a+k} v|| / ||v||)
for a random unit v per sequence (one linearised forward pass gives every lag: :func:`tangent_log_norms`),
g_s = mean over the seed's sequences of the least-squares slope of ln ||J_{a->a+k} v|| against
k over k in [MIN_FIT_LAG, L - a] (:func:`growth_exponents`).

Agreement criteria (fixed before the default-scale run; never tuned)
--------------------------------------------------------------------
R_l = ||h_l||^2 / (m P_l) per path (seed, sequence); 95% intervals are percentile bootstraps over
seeds. Statistics use the largest width of the scale unless stated.

B2.1  (claim) ReLU, c = 1, forward, inside the hypothesis: F = the fraction of paths (all widths)
      whose max_{l <= L_h(m)} |ln R_l| <= ln 4 (the norm within a factor 2 of the kernel
      prediction sqrt(m P_l), P_l = l: the papers' ||h_l|| <= O(l) with a stated constant).
      Agrees if F >= 0.9 (with high probability), one-sided (stats.at_least).
      Changed (issue 15): was "seed-mean R_l within 10% for all l <= 100 at m = 1024", i.e. outside
      the hypothesis (L = 100 > sqrt(m)) and a seed MEAN of a heavy-tailed ratio.
B2.2  (claim) the boundary: L*(m) = the number of leading lags k at which the spread over seeds
      std_s(ell_{s,k}) stays <= ln 2 (the draws' norms agree within a factor 2), capped at L - a
      (censored widths are left out of the fit). Power-law exponent q of L* against m: the
      boundary is polynomial (m >= L^(1/q), the papers' m >= poly(L), degree 1/q in [1, 4]) if
      q lies in [0.25, 1.0]; an exponential boundary m >= e^(cL) would give q -> 0. Inconclusive
      if fewer than two widths have 0 < L* < L - a.
      Changed (issue 15): was the exponent of the forward seed-mean's exit length l*, which is
      dominated by the heaviest seed.
B2.3  (claim) ReLU, c = 1, backward, inside the hypothesis (lags <= L_h(m)): log-log slope p of
      the seed-mean sigma_max against the lag. Agrees if p <= 1 (growth at most polynomial,
      sub-linear; products of independent Gaussian matrices give p about 0.5), one-sided.
B2.4  (claim) ReLU, c = 1, backward, inside the hypothesis: per-step slope beta of
      ln(seed-mean sigma_max) against the lag, lags in [MIN_FIT_LAG, L_h(m)]. Agrees if the whole
      interval lies in [-0.05, 0.05] (flat: a seventh of the c = 2 rate (1/2) ln 2).
B2.5  (control) ReLU, c = 2 and c = 0.5 (one row each), backward, all lags: beta as in B2.4.
      Agrees if R^2 >= 0.95 and beta lies in (1/2) ln c +- (0.25 |(1/2) ln c| + 0.02); R^2 < 0.95
      is a disagreement.
B2.6  (control) tanh, c = 1, forward: E = max_{l <= L} |mean_S R_l - 1| (all l: tanh contracts,
      no hypothesis needed). Agrees if E <= 0.10.
B2.7  (control) tanh, c in {0.5, 1, 2}, backward: beta (lags >= 5) against the mean-field slope
      beta_mf (the same fit applied to (1/2) sum ln chi_t). Agrees if |beta - beta_mf| <= 0.25
      |beta_mf| + 0.02 for every c (one row; the worst c decides).
B2.8  (extra: the papers do not measure it) the spread law: sigma_g(m) = std over seeds of g_s,
      ReLU c = 1, every forward width; power-law exponent a of sigma_g against m. Agrees if a lies
      in [-0.75, -0.25] (expected -1/2: a sum of m independent unit contributions per step).
Verdicts are symmetric (stats.verdict): agrees when the whole 95% interval meets the criterion,
disagrees when it wholly misses it, else inconclusive.
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

from rnn_ntk import model, plots, stats, tasks
from rnn_ntk.kernels.vtransforms import get_vtransform
from rnn_ntk.experiments.protocol import fmt_interval, is_done, not_finished, save_piece
from rnn_ntk.reproduce import Claim, check_scale, load_arrays
from rnn_ntk.stats import combine, fit_rate

NAME = "b2_no_explosion"
TITLE = ("No exponential explosion at initialisation (Allen-Zhu, Li & Song 2019): forward norms "
         "and backward Jacobian spectral norms vs length, ReLU and tanh, c in {0.5, 1, 2}")

ACTIVATIONS = ("relu", "tanh")
CS = (0.5, 1.0, 2.0)
INPUT_DIM = 10
START = 1            # a: the Jacobian is d h_l / d h_a with a = START (1-indexed)
TOL = 0.10           # forward agreement band
BASE_SEED = 2019
MIN_FIT_LAG = 5      # per-step slope fits use lags >= this


class Setting(NamedTuple):
    """Sizes of one scale. widths: forward widths; jac_widths: widths of the Jacobian analysis."""

    widths: tuple[int, ...]
    length: int
    seeds: int
    n_seq: int
    jac_widths: tuple[int, ...]
    jac_seeds: int
    iters: int
    pad: bool = False     # run every width zero-padded to the largest (one compilation; for ci)


SETTINGS = {
    "ci": Setting(widths=(16, 36), length=12, seeds=3, n_seq=2, jac_widths=(16, 36), jac_seeds=2,
                  iters=8, pad=True),
    # forward + tangents: 6 (activation, c) x 5 widths x 24 seeds; Jacobians: 6 x 3 widths x 8
    # seeds x 14 lags x 30 power iterations (about 4 min on 2 quiet CPU cores)
    "default": Setting(widths=(64, 128, 256, 512, 1024), length=100, seeds=24, n_seq=8,
                       jac_widths=(64, 256, 1024), jac_seeds=8, iters=30),
    # one H200: under 10 min (the m = 4096 Jacobians dominate)
    "large": Setting(widths=(64, 128, 256, 512, 1024, 2048, 4096), length=200, seeds=64,
                     n_seq=16, jac_widths=(64, 256, 1024, 4096), jac_seeds=16, iters=50),
}

C_H = 1.0            # hypothesis region: lags / steps l <= floor(C_H sqrt(m))
BAND = math.log(4.0)       # B2.1: |ln R_l| <= ln 4 (the norm within a factor 2)
SPREAD_BAND = math.log(2.0)  # B2.2: std over seeds of ln ||J v|| <= ln 2
HIGH_PROB = 0.9      # B2.1: the fraction of paths inside the band


def hypothesis_length(width: int) -> int:
    """L_h(m) = floor(C_H sqrt(m)): the longest length inside the papers' m >= poly(L) (here
    m >= L^2 / C_H^2)."""
    return int(math.floor(C_H * math.sqrt(width) + 1e-9))


# ----------------------------------------------------------------------------------------------
# pieces of the analysis (public: tested in tests/experiments/test_b2_no_explosion.py)

def lag_grid(length: int, widths: tuple[int, ...] = ()) -> np.ndarray:
    """Lags k = l - a of the Jacobian analysis for a = START: ten about log-spaced, every 20th,
    the longest (length - START) and the hypothesis lengths L_h(m) of ``widths`` that fit."""
    kmax = length - START
    if kmax < 1:
        raise ValueError(f"length must be > {START}, got {length}")
    g = np.round(np.geomspace(1, kmax, 10)).astype(int)
    hyp = [hypothesis_length(m) for m in widths if 1 <= hypothesis_length(m) <= kmax]
    return np.unique(np.concatenate([g, np.arange(20, kmax, 20), [kmax], hyp])).astype(int)


def lag_buckets(lags: np.ndarray) -> list[np.ndarray]:
    """The sorted lags split in three groups (up to kmax/6, up to 2 kmax/5, the rest), each
    computed on inputs cut after its longest lag: the Jacobian of a short lag needs only the
    first a + k steps (about half the work of running every lag over the whole sequence)."""
    lags = np.sort(np.asarray(lags))
    kmax = int(lags[-1])
    edges = [kmax // 6, (2 * kmax) // 5, kmax]
    out, lo = [], 0
    for e in edges:
        b = lags[(lags > lo) & (lags <= e)]
        if b.size:
            out.append(b)
        lo = max(lo, e)
    return out


def model_config(activation: str, width: int) -> model.RNNConfig:
    """The papers' network (ReLU or tanh); s_w is passed per c through Scales."""
    return model.RNNConfig.paper(width=width, input_dim=INPUT_DIM, activation=activation)


def scales_for(cfg: model.RNNConfig, c: float, width: int, dtype: Any) -> model.Scales:
    """Scales with s_w^2 = 2c (the papers' W ~ N(0, 2c/m)) at true width ``width``; the other
    multipliers from cfg."""
    return model.Scales(*(jnp.asarray(v, dtype) for v in
                          (math.sqrt(2.0 * c), cfg.sigma_u, cfg.sigma_b, cfg.sigma_v, width)))


def input_sequences(seed: int, n: int, length: int, dtype: Any = jnp.float32) -> jax.Array:
    """(n, length, d) inputs of the random_labels task (unit tokens) for seed index ``seed``."""
    tcfg = tasks.TaskConfig(kind="random_labels", n_train=n, n_test=1, length=length,
                            input_dim=INPUT_DIM)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(BASE_SEED), seed), 0)
    return tasks.sample_inputs(tcfg, key, n, {"eps_x": 1.0}, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("array_width",))
def _init_wide(key: jax.Array, width: jax.Array, *, array_width: int) -> model.Params:
    cfg = model_config("relu", array_width)   # the draw depends on the shapes only
    return model.init_params(cfg, key, jnp.float32, array_width=array_width, width=width)


def seed_params(width: int, seed: int, array_width: int | None = None) -> model.Params:
    """float32 N(0, 1) parameters of seed index ``seed`` at ``width``, zero-padded to
    ``array_width`` (default: width); the same draw for every activation and c."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(BASE_SEED), seed), 1)
    M = width if array_width is None else array_width
    return _init_wide(key, jnp.asarray(width, jnp.float32), array_width=M)


def mean_field(activation: str, sigma_w: float, sigma_u: float, sigma_b: float,
               x_NTD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel recursion's predictions for each sequence, float64: (P_NT, log_chi_NT).

    q_1 = s_u^2 |x_1|^2 / d + s_b^2, q_t = s_w^2 V(q_{t-1}) + s_u^2 |x_t|^2 / d + s_b^2;
    P_t = V(q_t, q_t, q_t) = lim E ||h_t||^2 / m and log_chi_t = ln(s_w^2 Vd(q_t, q_t, q_t)), the
    mean-field log growth of ||d h_t / d h_{t-1} u||^2 per step.
    """
    x = np.asarray(x_NTD, np.float64)
    d = x.shape[-1]
    drive = sigma_u ** 2 * np.sum(x * x, axis=-1) / d + sigma_b ** 2       # (n, T)
    with jax.enable_x64(True):
        P, chi = _mf_scan(activation, jnp.asarray(sigma_w ** 2, jnp.float64),
                          jnp.asarray(drive, jnp.float64))
        return np.asarray(P), np.log(np.asarray(chi))


@functools.partial(jax.jit, static_argnames=("activation",))
def _mf_scan(activation: str, sw2: jax.Array, drive_NT: jax.Array) -> tuple[jax.Array, jax.Array]:
    vfn = get_vtransform(activation)

    def step(v_prev, drive_N):
        q = sw2 * v_prev + drive_N
        V, Vd = vfn(q, q, q)
        return V, (V, sw2 * Vd)

    _, (P_TN, chi_TN) = jax.lax.scan(step, jnp.zeros_like(drive_NT[:, 0]), drive_NT.T)
    return P_TN.T, chi_TN.T


@functools.partial(jax.jit, static_argnames=("cfg",))
def forward_sq_norms(cfg: model.RNNConfig, params: model.Params, x_NTD: jax.Array,
                     scales: model.Scales) -> jax.Array:
    """||h_t||^2 / m for every sequence and step, (n, T), accumulated in float64 when enabled."""
    h = model.hidden_states(cfg, params, x_NTD, scales=scales)
    h64 = h.astype(jnp.promote_types(h.dtype, jnp.float64))
    return jnp.sum(h64 * h64, axis=-1) / jnp.asarray(scales.width, h64.dtype)


def _safe_normalise(u_BM: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(u / ||u||, ||u||) row by row, scaled by max |u| first so that neither tiny nor huge norms
    under- or overflow; zero rows stay zero."""
    s = jnp.max(jnp.abs(u_BM), axis=1, keepdims=True)
    s = jnp.where(s > 0, s, 1.0)
    r = u_BM / s
    nr = jnp.sqrt(jnp.sum(r * r, axis=1, keepdims=True))
    nr_safe = jnp.where(nr > 0, nr, 1.0)
    return r / nr_safe, (nr * s)[:, 0]


@functools.partial(jax.jit, static_argnames=("cfg", "start", "iters"))
def backward_sigma(cfg: model.RNNConfig, params: model.Params, x_NTD: jax.Array, lags_K: jax.Array,
                   key: jax.Array, scales: model.Scales, *, start: int = START,
                   iters: int = 30) -> tuple[jax.Array, jax.Array]:
    """Top singular value of J = d h_{start+k} / d h_start for each sequence and lag k.

    x (n, T, d), lags (K,) with 1 <= k <= T - start. Power iteration on J^T J from a random start
    (``key``), ``iters`` products J v (linearised forward from a perturbation W~ v of
    g_{start+1}) and J^T u (its transpose). Returns (sigma (n, K), rel_change (n, K)): the final
    ||J v|| and its relative change over the last iteration (a convergence diagnostic).
    ||J v|| <= sigma_max always, so the estimate can only err low.
    """
    n, T, _ = x_NTD.shape
    K = lags_K.shape[0]
    M = params["b"].shape[-1]
    B = n * K
    xb = jnp.repeat(x_NTD, K, axis=0)                       # (B, T, d): sequence-major
    out_idx = (start - 1) + jnp.tile(lags_K, n)             # 0-based index of h_{start+k}
    rows = jnp.arange(B)
    zero = jnp.zeros((B, T, M), params["b"].dtype)

    def h_of_p(p):
        return model.forward(cfg, params, xb, scales=scales, perturb_NTM=p)[0]

    _, f_jvp = jax.linearize(h_of_p, zero)
    f_vjp = jax.linear_transpose(f_jvp, zero)
    w_scale = scales.sigma_w / jnp.sqrt(jnp.asarray(scales.width, zero.dtype))
    W = params["W"]

    def J(v):                                   # (B, M) -> (B, M)
        p = zero.at[:, start, :].set(w_scale * (v @ W.T))  # index start = g_{start+1}
        return f_jvp(p)[rows, out_idx]

    def JT(u):
        (g,) = f_vjp(zero.at[rows, out_idx].set(u))
        return w_scale * (g[:, start, :] @ W)

    v0, _ = _safe_normalise(jax.random.normal(key, (B, M), zero.dtype))

    def body(_, carry):
        v, _ = carry
        u_hat, s = _safe_normalise(J(v))
        v_new, _ = _safe_normalise(JT(u_hat))
        return v_new, s

    v, s_last = jax.lax.fori_loop(0, iters - 1, body, (v0, jnp.zeros((B,), zero.dtype)))
    _, s = _safe_normalise(J(v))
    rel = jnp.abs(s - s_last) / jnp.where(s > 0, s, 1.0)
    return s.reshape(n, K), rel.reshape(n, K)


@functools.partial(jax.jit, static_argnames=("cfg", "start"))
def tangent_log_norms(cfg: model.RNNConfig, params: model.Params, x_NTD: jax.Array,
                      key: jax.Array, scales: model.Scales, *, start: int = START) -> jax.Array:
    """ln(||J_{a->a+k} v|| / ||v||) for every lag k = 1..T-a, J = d h_{a+k} / d h_a, a = ``start``,
    v a random unit vector per sequence (supported on the true width's units): one linearised
    forward pass from the perturbation W~ v of g_{a+1}. x (n, T, d) -> (n, T - a), float64 logs
    of a tangent renormalised every step (no over- or underflow at any lag).
    """
    n, T, _ = x_NTD.shape
    M = params["b"].shape[-1]
    dt = params["b"].dtype
    zero = jnp.zeros((n, T, M), dt)
    mask = (jnp.arange(M) < scales.width).astype(dt)
    v = jax.random.normal(key, (n, M), dt) * mask[None, :]
    v, _ = _safe_normalise(v)
    w_scale = scales.sigma_w / jnp.sqrt(jnp.asarray(scales.width, dt))
    p = zero.at[:, start, :].set(w_scale * (v @ params["W"].T))

    def h_of_p(pp):
        return model.forward(cfg, params, x_NTD, scales=scales, perturb_NTM=pp)[0]

    _, th = jax.jvp(h_of_p, (zero,), (p,))                  # (n, T, M): tangent of every h_t
    _, nrm = jax.vmap(_safe_normalise, in_axes=1, out_axes=1)(th[:, start:, :])
    return jnp.log(nrm.astype(jnp.promote_types(dt, jnp.float64)))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _forward_and_tangent(cfg: model.RNNConfig, params: model.Params, x_NTD: jax.Array,
                         key: jax.Array, scales: model.Scales) -> tuple[jax.Array, jax.Array]:
    """:func:`forward_sq_norms` and :func:`tangent_log_norms` in one compiled program."""
    return (forward_sq_norms(cfg, params, x_NTD, scales),
            tangent_log_norms(cfg, params, x_NTD, key, scales))


def seed_ratio(norm2_SNL: np.ndarray, pred_SNL: np.ndarray) -> np.ndarray:
    """Per-seed forward ratio r_SL = mean over the seed's sequences of (||h_l||^2/m) / P_l."""
    return np.mean(np.asarray(norm2_SNL, np.float64) / np.asarray(pred_SNL, np.float64), axis=1)


def max_deviation(r_SL: np.ndarray, *, n_boot: int = 2000, seed: int = 0
                  ) -> tuple[float, tuple[float, float]]:
    """E = max_l |mean_S r_SL - 1| and its 95% percentile bootstrap interval over seeds.
    Non-finite ratios (overflow) count as infinitely far."""
    r = np.asarray(r_SL, np.float64)

    def stat(rows):
        dev = np.abs(np.mean(rows, axis=0) - 1.0)
        return float(np.max(np.where(np.isfinite(dev), dev, np.inf)))

    est = stat(r)
    rng = np.random.default_rng(seed)
    S = r.shape[0]
    boots = np.array([stat(r[rng.integers(0, S, S)]) for _ in range(n_boot)])
    finite = np.where(np.isfinite(boots), boots, np.finfo(np.float64).max)
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return est, (float(lo), float(hi))


def exit_length(R_L: np.ndarray, tol: float = TOL) -> int:
    """Number of leading steps l = 1, 2, ... with |R_l - 1| <= tol (len(R_L) if all are)."""
    bad = ~(np.abs(np.asarray(R_L, np.float64) - 1.0) <= tol)   # NaN counts as outside
    return int(np.argmax(bad)) if bad.any() else int(len(R_L))


def inside_fraction(widths: Any, ratios: list[np.ndarray], band: float = BAND, *,
                    n_boot: int = 2000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """B2.1: the fraction of paths whose max_{l <= L_h(m)} |ln R_l| <= band, over all widths.

    ``ratios``: per width, R (S, n, L) = ||h_l||^2 / (m P_l) per seed, sequence and step (the
    same S at every width). Non-finite or non-positive ratios count as outside. The 95% interval
    resamples seeds (the same indices at every width). Returns (fraction, (lo, hi))."""
    ins = []
    for m, r in zip(widths, ratios):
        r = np.asarray(r, np.float64)[..., :hypothesis_length(int(m))]
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = np.abs(np.log(r))
        ok = np.all(np.isfinite(dev) & (dev <= band), axis=-1)          # (S, n)
        ins.append(ok)
    ins_WSn = np.stack(ins).astype(np.float64)
    est = float(ins_WSn.mean())
    rng = np.random.default_rng(seed)
    S = ins_WSn.shape[1]
    boots = [ins_WSn[:, rng.integers(0, S, S)].mean() for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return est, (float(lo), float(hi))


def growth_exponents(lognorm_SnK: np.ndarray, min_lag: int = MIN_FIT_LAG) -> np.ndarray:
    """Per-seed growth exponents g_s (S,): the least-squares slope of ln ||J_{a->a+k} v|| against
    the lag k = 1..K over k >= min_lag, per sequence, averaged over the seed's sequences.
    lognorm (S, n, K) with lag k at index k - 1."""
    y = np.asarray(lognorm_SnK, np.float64)
    k = np.arange(1, y.shape[-1] + 1, dtype=np.float64)
    keep = k >= min_lag
    if keep.sum() < 2:
        raise ValueError(f"growth exponents need at least two lags >= {min_lag}, got {y.shape[-1]}")
    kk = k[keep] - k[keep].mean()
    yy = y[..., keep]
    slopes = np.sum(kk * (yy - yy.mean(axis=-1, keepdims=True)), axis=-1) / np.sum(kk * kk)
    return slopes.mean(axis=-1)


def spread_exponent(widths: Any, g_WS: np.ndarray, *, n_boot: int = 2000, seed: int = 0
                    ) -> dict[str, Any]:
    """B2.8: power-law exponent of sigma_g(m) = std over seeds (ddof 1) of the growth exponents
    g_WS (widths, seeds) against m; 95% interval from resampling seeds (the same indices at every
    width; draws with a zero std are dropped). Returns {'sigma': (W,), 'slope', 'ci'}."""
    g = np.asarray(g_WS, np.float64)
    lm = np.log(np.asarray(widths, np.float64))
    sig = g.std(axis=1, ddof=1)
    slope = stats.fit_line(lm, np.log(sig)).slope
    rng = np.random.default_rng(seed)
    S = g.shape[1]
    boots = []
    for _ in range(n_boot):
        sb = g[:, rng.integers(0, S, S)].std(axis=1, ddof=1)
        if np.all(sb > 0):
            boots.append(np.polyfit(lm, np.log(sb), 1)[0])
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (math.nan, math.nan)
    return {"sigma": sig, "slope": float(slope), "ci": (float(lo), float(hi))}


def spread_length(ell_SK: np.ndarray, band: float = SPREAD_BAND) -> int:
    """Number of leading lags k = 1, 2, ... at which the std over seeds (ddof 1) of ell_SK (S, K)
    stays <= band (K if all do); a non-finite std counts as outside."""
    sd = np.std(np.asarray(ell_SK, np.float64), axis=0, ddof=1)
    bad = ~(sd <= band)
    return int(np.argmax(bad)) if bad.any() else int(sd.size)


def boundary_exponent(widths: Any, ell_WSK: np.ndarray, band: float = SPREAD_BAND, *,
                      n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """B2.2: power-law exponent q of the boundary L*(m) = :func:`spread_length` against m.

    ell (widths, seeds, K): per-seed ln ||J_{a->a+k} v|| (mean over the seed's sequences). The fit
    uses the widths with 0 < L* < K (censored ones are left out); the 95% interval resamples seeds
    (the same indices at every width; a resample's L* of 0 counts as 1, of K as K).
    Returns {'lstar': (W,), 'used': (W,) bool, 'n_used', 'slope', 'ci'}; slope NaN if n_used < 2."""
    e = np.asarray(ell_WSK, np.float64)
    Wn, S, K = e.shape
    lm = np.log(np.asarray(widths, np.float64))
    lstar = np.array([spread_length(e[w], band) for w in range(Wn)])
    used = (lstar > 0) & (lstar < K)
    out: dict[str, Any] = {"lstar": lstar, "used": used, "n_used": int(used.sum()),
                           "slope": math.nan, "ci": (math.nan, math.nan)}
    if used.sum() < 2:
        return out
    x = lm[used]
    out["slope"] = float(np.polyfit(x, np.log(lstar[used]), 1)[0])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, S, S)
        lb = np.array([spread_length(e[w, idx], band) for w in np.flatnonzero(used)])
        boots.append(np.polyfit(x, np.log(np.maximum(lb, 1)), 1)[0])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    out["ci"] = (float(lo), float(hi))
    return out


# ----------------------------------------------------------------------------------------------
# run: resumable pieces, one .npz per (activation, c, width)

def _settings_meta(st: Setting, scale: str) -> dict[str, Any]:
    return json.loads(json.dumps({"scale": scale, **st._asdict()}))


def _c_tag(c: float) -> str:
    return f"{c:g}".replace(".", "p")


def _fwd_path(out: Path, act: str, c: float, m: int) -> Path:
    return out / f"fwd_{act}_c{_c_tag(c)}_m{m}.npz"


def _jac_path(out: Path, act: str, c: float, m: int) -> Path:
    return out / f"jac_{act}_c{_c_tag(c)}_m{m}.npz"


def run(results_dir: str | Path, scale: str = "default") -> None:
    """Forward norms at every width and backward spectral norms at the Jacobian widths, for
    each activation and c; finished pieces (same scale settings) are skipped."""
    st = SETTINGS[check_scale(scale)]
    out = Path(results_dir) / NAME
    meta = _settings_meta(st, scale)
    L = st.length
    lags = lag_grid(L, st.jac_widths)

    def arrays_at(m: int) -> int:
        return max(st.widths + st.jac_widths) if st.pad else m

    with jax.enable_x64(True):
        xs = [input_sequences(s, st.n_seq, L) for s in range(st.seeds)]
        # every forward piece first (cheap; the ReLU c = 1 law first), then the Jacobians
        combos = sorted(((act, c) for act in ACTIVATIONS for c in CS),
                        key=lambda ac: (ac != ("relu", 1.0), ACTIVATIONS.index(ac[0])))
        for act, c in combos:
            for m in st.widths:
                path = _fwd_path(out, act, c, m)
                if is_done(path, meta):
                    continue
                cfg = model_config(act, arrays_at(m))
                sc = scales_for(cfg, c, m, jnp.float32)
                norm2, tan = [], []
                for s in range(st.seeds):
                    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(BASE_SEED), s), 3)
                    a, b = _forward_and_tangent(cfg, seed_params(m, s, arrays_at(m)), xs[s],
                                                key, sc)
                    norm2.append(np.asarray(a))
                    tan.append(np.asarray(b))
                pred = np.stack([mean_field(act, math.sqrt(2 * c), cfg.sigma_u, cfg.sigma_b,
                                            np.asarray(xs[s]))[0] for s in range(st.seeds)])
                save_piece(path, meta, {"activation": act, "c": c, "width": m},
                           norm2=np.stack(norm2), pred=pred, tan_log=np.stack(tan))
        for act, c in combos:
            for m in st.jac_widths:
                path = _jac_path(out, act, c, m)
                if is_done(path, meta):
                    continue
                cfg = model_config(act, arrays_at(m))
                sc = scales_for(cfg, c, m, jnp.float32)
                sig, rel, mf = [], [], []
                for s in range(st.jac_seeds):
                    log_chi = mean_field(act, math.sqrt(2 * c), cfg.sigma_u, cfg.sigma_b,
                                         np.asarray(xs[s]))[1][0]   # sequence 0 = x0
                    x0 = xs[s][:1]
                    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(BASE_SEED), s), 2)
                    prm = seed_params(m, s, arrays_at(m))
                    a, b = [], []
                    for lb in lag_buckets(lags):      # h_(a+k) needs only a + k steps
                        sa, sb = backward_sigma(cfg, prm, x0[:, :START + int(lb[-1])],
                                                jnp.asarray(lb), key, sc, iters=st.iters)
                        a.append(np.asarray(sa, np.float64)[0])
                        b.append(np.asarray(sb, np.float64)[0])
                    sig.append(np.concatenate(a))
                    rel.append(np.concatenate(b))
                    cum = np.concatenate([[0.0], np.cumsum(log_chi[START:])])  # t = a+1 ..
                    mf.append(0.5 * cum[lags])
                save_piece(path, meta, {"activation": act, "c": c, "width": m},
                           sigma=np.stack(sig), rel_change=np.stack(rel), mf_log=np.stack(mf),
                           lags=lags)


# ----------------------------------------------------------------------------------------------
# loading stored results

def _scan(results_dir: str | Path) -> dict[str, Any]:
    """All stored pieces: {'fwd': {(act, c, m): arrays}, 'jac': {...}, 'settings': meta}."""
    out = Path(results_dir) / NAME
    res: dict[str, Any] = {"fwd": {}, "jac": {}, "settings": None}
    for kind in ("fwd", "jac"):
        for path in sorted(out.glob(f"{kind}_*.npz")):
            arrays, meta = load_arrays(path)
            res[kind][(meta["activation"], float(meta["c"]), int(meta["width"]))] = arrays
            res["settings"] = meta["settings"]
    if not res["fwd"] or not res["jac"]:
        raise FileNotFoundError(f"no stored results under {out}; run the experiment first")
    st, combos = res["settings"], len(ACTIVATIONS) * len(CS)
    missing = (combos * len(st["widths"]) - len(res["fwd"])
               + combos * len(st["jac_widths"]) - len(res["jac"]))
    if missing > 0:      # an interrupted run: figures and claims need every piece
        raise not_finished(f"{missing} pieces", NAME, st["scale"], out)
    return res


def _widths(res: dict[str, Any], kind: str, act: str, c: float) -> list[int]:
    return sorted(m for (a, cc, m) in res[kind] if a == act and cc == c)


# ----------------------------------------------------------------------------------------------
# figures

def figures(results_dir: str | Path, fig_dir: str | Path) -> list[Path]:
    res = _scan(results_dir)
    fig_dir = Path(fig_dir)
    paths: list[Path] = []

    # 1. forward ratio R_l vs l, per width (seed means), and the seeds of the widest net at c = 1
    panels = [("relu", 0.5, "linear"), ("relu", 1.0, "log"), ("relu", 2.0, "log"),
              ("tanh", 1.0, "linear")]
    fig, axes = plots.new_figure(len(panels) + 1, 1, width=3.0, height=2.9)
    for ax, (act, c, yscale) in zip(axes[0], panels):
        ws = _widths(res, "fwd", act, c)
        for col, m in zip(plots.width_colors(len(ws)), ws):
            a = res["fwd"][(act, c, m)]
            R = seed_ratio(a["norm2"], a["pred"]).mean(axis=0)
            ax.plot(np.arange(1, R.size + 1), R, color=col, label=f"m={m}, l*={exit_length(R)}")
        ax.axhspan(1 - TOL, 1 + TOL, color="grey", alpha=0.2, lw=0, label="10% band")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale(yscale)
        ax.set_xlabel("step l")
        ax.set_ylabel(r"$\|h_l\|^2/(m\,P_l)$ (seed mean)")
        ax.set_title(f"{act}, c={c:g}")
        ax.legend(loc="upper left", fontsize=6)
    ax = axes[0, -1]
    m = _widths(res, "fwd", "relu", 1.0)[-1]
    a = res["fwd"][("relu", 1.0, m)]
    r = seed_ratio(a["norm2"], a["pred"])
    for s_, row in enumerate(r):
        ax.plot(np.arange(1, row.size + 1), row, color=plots.width_colors(len(r))[s_], lw=1)
    ax.axhspan(1 - TOL, 1 + TOL, color="grey", alpha=0.2, lw=0)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step l")
    ax.set_ylabel(r"$\|h_l\|^2/(m\,P_l)$ (one seed each)")
    ax.set_title(f"relu, c=1, m={m}: {len(r)} seeds")
    paths += plots.save(fig, fig_dir / f"{NAME}_forward")

    # 2. backward sigma_max vs lag at the largest Jacobian width, per c, with mean-field slopes
    fig, axes = plots.new_figure(2, 1, width=3.6, height=3.0)
    for ax, act in zip(axes[0], ACTIVATIONS):
        cols = plots.width_colors(len(CS))
        for col, c in zip(cols, CS):
            m = _widths(res, "jac", act, c)[-1]
            a = res["jac"][(act, c, m)]
            lags, sig = a["lags"], a["sigma"]
            keep = lags >= MIN_FIT_LAG
            fit = fit_rate(lags[keep], sig[:, keep])
            mf = fit_rate(lags[keep], np.exp(a["mf_log"][:, keep]))
            ax.plot(lags, sig.mean(axis=0), "o-", color=col, ms=3,
                    label=f"c={c:g}: slope {fit.slope:.3f} (mf {mf.slope:.3f})")
            # mean-field line through the measured value at the first fitted lag
            k0 = np.flatnonzero(keep)[0]
            ax.plot(lags, sig.mean(axis=0)[k0] * np.exp(mf.slope * (lags - lags[k0])), "--",
                    color=col, lw=0.9)
        ax.set_yscale("log")
        ax.set_xlabel("lag l - a (steps)")
        ax.set_ylabel(r"$\sigma_{\max}(\partial h_l/\partial h_a)$")
        ax.set_title(f"{act}, m={m}; dashed: mean-field rate")
        ax.legend(fontsize=6)
    paths += plots.save(fig, fig_dir / f"{NAME}_backward")

    # 3. ReLU c = 1: sigma_max vs lag per width (inside the hypothesis solid), the seed spread
    #    of ln ||J v|| vs lag per width, and the law: sigma_g(m) and L*(m)
    law = _law(res)
    fig, axes = plots.new_figure(3, 1, width=3.4, height=3.0)
    ax = axes[0, 0]
    ws = _widths(res, "jac", "relu", 1.0)
    for col, m in zip(plots.width_colors(len(ws)), ws):
        a = res["jac"][("relu", 1.0, m)]
        lags, mean = a["lags"], a["sigma"].mean(axis=0)
        ins = lags <= hypothesis_length(m)
        ax.plot(lags, mean, ":", color=col, lw=0.9)
        ax.plot(lags[ins], mean[ins], "o-", ms=3, color=col,
                label=f"m={m} (solid: k <= L_h = {hypothesis_length(m)})")
    kk = np.asarray(res["jac"][("relu", 1.0, ws[-1])]["lags"], np.float64)
    ax.plot(kk, np.sqrt(np.e * (kk + 1)), "k--", lw=0.8, label=r"$\sqrt{e(k+1)}$ (Gaussian products)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lag k = l - a (steps)")
    ax.set_ylabel(r"seed-mean $\sigma_{\max}(\partial h_l/\partial h_a)$")
    ax.set_title("ReLU, c = 1: backward")
    ax.legend(fontsize=6)
    ax = axes[0, 1]
    fw = law["widths"]
    for col, m, ell in zip(plots.width_colors(len(fw)), fw, law["ell"]):
        k = np.arange(1, ell.shape[-1] + 1)
        ax.plot(k, ell.std(axis=0, ddof=1), color=col, label=f"m={m}")
        ax.axvline(hypothesis_length(m), color=col, lw=0.6, ls=":")
    ax.axhline(SPREAD_BAND, color="k", lw=0.8, ls="--", label="ln 2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lag k (dotted: L_h(m) = sqrt(m))")
    ax.set_ylabel(r"std over seeds of $\ln\|J_{a\to a+k}v\|$")
    ax.set_title("ReLU, c = 1: spread of the draws")
    ax.legend(fontsize=6)
    ax = axes[0, 2]
    mm = np.asarray(fw, np.float64)
    sp, bd = law["spread"], law["boundary"]
    ax.plot(mm, sp["sigma"], "o-", color="C0",
            label=f"$\\sigma_g$: exponent {sp['slope']:.2f} [{sp['ci'][0]:.2f}, {sp['ci'][1]:.2f}]")
    ax.plot(mm, sp["sigma"][0] * (mm / mm[0]) ** -0.5, "C0:", lw=0.9, label=r"$\propto m^{-1/2}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width m")
    ax.set_ylabel(r"$\sigma_g$ (std of per-seed growth exponents)", color="C0")
    ax2 = ax.twinx()
    ax2.plot(mm, bd["lstar"], "s-", color="C3",
             label=f"L*: exponent {bd['slope']:.2f} [{bd['ci'][0]:.2f}, {bd['ci'][1]:.2f}]")
    ax2.plot(mm, [hypothesis_length(int(m)) for m in mm], "C3:", lw=0.9, label=r"$\sqrt{m}$")
    ax2.set_yscale("log")
    ax2.set_ylabel("L*(m): lags with spread <= ln 2", color="C3")
    h1, l1_ = ax.get_legend_handles_labels()
    h2, l2_ = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1_ + l2_, fontsize=6, loc="lower left")
    ax.set_title("the (m, L) boundary")
    paths += plots.save(fig, fig_dir / f"{NAME}_relu_c1")
    return paths


def _law(res: dict[str, Any]) -> dict[str, Any]:
    """ReLU c = 1 at every forward width: per-seed ln ||J v|| (mean over sequences) ell
    (W, S, K), growth exponents g (W, S), the spread law and the boundary."""
    ws = _widths(res, "fwd", "relu", 1.0)
    tan = [np.asarray(res["fwd"][("relu", 1.0, m)]["tan_log"], np.float64) for m in ws]
    ell = np.stack([t.mean(axis=1) for t in tan])
    g = np.stack([growth_exponents(t) for t in tan])
    return {"widths": ws, "ell": ell, "g": g, "spread": spread_exponent(ws, g),
            "boundary": boundary_exponent(ws, ell)}


# ----------------------------------------------------------------------------------------------
# claims

def _forward_claims(res: dict) -> list[Claim]:
    """B2.1: forward norms inside the hypothesis, all ReLU c = 1 widths."""
    out: list[Claim] = []
    # B2.1 forward inside the hypothesis, all widths
    ws = _widths(res, "fwd", "relu", 1.0)
    ratios = [np.asarray(res["fwd"][("relu", 1.0, m)]["norm2"], np.float64)
              / np.asarray(res["fwd"][("relu", 1.0, m)]["pred"], np.float64) for m in ws]
    F, Fci = inside_fraction(ws, ratios)
    S, n = ratios[0].shape[:2]
    Lw = ratios[-1].shape[-1]
    big = ratios[-1][..., -1]
    up, down = int(np.sum(big.mean(axis=1) > 2.0)), int(np.sum(big.mean(axis=1) < 0.5))
    out.append(Claim(NAME, f"B2.1 ReLU c = 1, inside the papers' hypothesis l <= L_h(m) = sqrt(m): "
                           f"||h_l|| stays within a factor 2 of the kernel prediction sqrt(m P_l) "
                           f"with high probability (m = {ws[0]}..{ws[-1]}, {S} seeds x {n} "
                           f"sequences; outside it, at l = {Lw} and m = {ws[-1]}, {up} of {S} seeds "
                           f"are above 2x the prediction and {down} below 0.5x)",
                     "fraction of paths with max_{l <= sqrt(m)} |ln R_l| <= ln 4 (seed bootstrap 95%)",
                     fmt_interval(F, Fci), f">= {HIGH_PROB}", stats.at_least(F, Fci, HIGH_PROB)))
    return out


def _boundary_claims(law: dict, S: int) -> list[Claim]:
    """B2.2: the (m, L) boundary of the papers' hypothesis as a measured law."""
    out: list[Claim] = []
    bd = law["boundary"]
    v2 = "inconclusive" if bd["n_used"] < 2 else stats.verdict(bd["slope"], bd["ci"], 0.25, 1.0)
    lst = ", ".join(f"m={m}: {l}" for m, l in zip(law["widths"], bd["lstar"]))
    out.append(Claim(NAME, f"B2.2 ReLU c = 1: the papers' m >= poly(L) as a measured boundary: the "
                           f"lag L*(m) up to which the weight draws' ln ||d h_(a+k)/d h_a v|| agree "
                           f"within ln 2 (std over {S} seeds) grows polynomially with m (L*: {lst}; "
                           f"m >= L^(1/q))",
                     "power-law exponent q of L*(m) (seed bootstrap 95%)",
                     fmt_interval(bd["slope"], bd["ci"], 2) + f" over {bd['n_used']} widths",
                     "in [0.25, 1.0]", v2))
    return out


def _backward_claims(res: dict, law: dict) -> list[Claim]:
    """B2.3-B2.5: ReLU backward products inside the hypothesis and the c != 1 controls."""
    out: list[Claim] = []
    m = _widths(res, "jac", "relu", 1.0)[-1]
    Lh = hypothesis_length(m)
    a = res["jac"][("relu", 1.0, m)]
    ins = a["lags"] <= Lh
    lags, sig = a["lags"][ins], a["sigma"][:, ins]
    p = stats.fit_power_law(lags, sig)
    out.append(Claim(NAME, f"B2.3 ReLU c = 1, inside the hypothesis: backward products grow at most "
                           f"polynomially in the lag (m = {m}, lags 1..{Lh} = sqrt(m))",
                     "log-log slope of the seed-mean sigma_max vs lag (seed bootstrap 95%)",
                     fmt_interval(p.slope, p.ci95), "<= 1", stats.at_most(p.slope, p.ci95, 1.0)))
    keep = lags >= MIN_FIT_LAG
    b = fit_rate(lags[keep], sig[:, keep])
    g_big = law["g"][-1]
    out.append(Claim(NAME, f"B2.4 ReLU c = 1, inside the hypothesis: backward log-norm flat in the lag "
                           f"(m = {m}, lags {MIN_FIT_LAG}..{Lh}; per-seed growth exponents at "
                           f"m = {law['widths'][-1]}: {g_big.min():+.3f} to {g_big.max():+.3f} per step)",
                     "slope of ln seed-mean sigma_max per step (seed bootstrap 95%)",
                     fmt_interval(b.slope, b.ci95, 4), "in [-0.05, 0.05]",
                     stats.verdict(b.slope, b.ci95, -0.05, 0.05)))

    for c in (2.0, 0.5):
        m = _widths(res, "jac", "relu", c)[-1]
        a = res["jac"][("relu", c, m)]
        lags, sig = a["lags"], a["sigma"]
        keep = lags >= MIN_FIT_LAG
        b = fit_rate(lags[keep], sig[:, keep])
        target = 0.5 * math.log(c)
        tol = 0.25 * abs(target) + 0.02
        v = stats.verdict(b.slope, b.ci95, target - tol, target + tol)
        if b.r2 < 0.95:
            v = "disagrees"
        out.append(Claim(NAME, f"B2.5 ReLU c = {c:g}: backward log-norm linear in the lag with the "
                               f"mean-field rate (1/2) ln c = {target:.3f} (m = {m})",
                         f"slope of ln sigma_max per step, lags >= {MIN_FIT_LAG}; R^2",
                         fmt_interval(b.slope, b.ci95, 4) + f"; R^2 = {b.r2:.4f}",
                         f"in [{target - tol:.3f}, {target + tol:.3f}] and R^2 >= 0.95", v,
                         role="control"))
    return out


def _tanh_claims(res: dict) -> list[Claim]:
    """B2.6-B2.7: the tanh controls (forward recursion, mean-field backward rate)."""
    out: list[Claim] = []
    m = _widths(res, "fwd", "tanh", 1.0)[-1]
    a = res["fwd"][("tanh", 1.0, m)]
    r = seed_ratio(a["norm2"], a["pred"])
    est, ci = max_deviation(r)
    out.append(Claim(NAME, f"B2.6 tanh: at c = 1 the forward norm follows the kernel recursion, "
                           f"||h_l||^2/(m P_l) within 10% for all l <= {r.shape[1]} (m = {m}; the "
                           f"seed mean stays in the band for the first {exit_length(r.mean(axis=0))} "
                           f"steps)",
                     "max_l |R_l - 1| (seed bootstrap 95%)", fmt_interval(est, ci), "<= 0.10",
                     stats.at_most(est, ci, TOL), role="control"))


    vs, parts = [], []
    for c in CS:
        m = _widths(res, "jac", "tanh", c)[-1]
        a = res["jac"][("tanh", c, m)]
        lags, sig = a["lags"], a["sigma"]
        keep = lags >= MIN_FIT_LAG
        b = fit_rate(lags[keep], sig[:, keep])
        mf = fit_rate(lags[keep], np.exp(a["mf_log"][:, keep])).slope
        tol = 0.25 * abs(mf) + 0.02
        vs.append(stats.verdict(b.slope, b.ci95, mf - tol, mf + tol))
        parts.append(f"c={c:g}: {fmt_interval(b.slope, b.ci95, 3)} vs mf {mf:.3f}")
    out.append(Claim(NAME, f"B2.7 tanh: backward log-norm changes at the mean-field rate "
                           f"(1/2) ln(s_w^2 E phi'(g)^2) (m = {m})",
                     f"slope of ln sigma_max per step, lags >= {MIN_FIT_LAG}, vs mean-field slope",
                     "; ".join(parts), "|slope - mf| <= 0.25 |mf| + 0.02 for every c",
                     combine(vs), role="control"))
    return out


def _spread_claims(law: dict) -> list[Claim]:
    """B2.8: the spread over weight draws of the per-seed growth exponents."""
    out: list[Claim] = []
    sp = law["spread"]
    sg = ", ".join(f"m={m}: {v:.4f}" for m, v in zip(law["widths"], sp["sigma"]))
    out.append(Claim(NAME, f"B2.8 ReLU c = 1: the spread over weight draws of the per-seed growth "
                           f"exponent (per-step slope of ln ||d h_(a+k)/d h_a v||, lags "
                           f"{MIN_FIT_LAG}..{law['ell'].shape[-1]}) falls like m^-1/2 "
                           f"(sigma_g: {sg})",
                     "power-law exponent of sigma_g(m) (seed bootstrap 95%)",
                     fmt_interval(sp["slope"], sp["ci"], 2), "in [-0.75, -0.25]",
                     stats.verdict(sp["slope"], sp["ci"], -0.75, -0.25), role="extra"))
    return out


def claims(results_dir: str | Path) -> list[Claim]:
    res = _scan(results_dir)
    law = _law(res)
    S = np.asarray(res["fwd"][("relu", 1.0, _widths(res, "fwd", "relu", 1.0)[0])]["norm2"]).shape[0]
    return (_forward_claims(res) + _boundary_claims(law, S) + _backward_claims(res, law)
            + _tanh_claims(res) + _spread_claims(law))
