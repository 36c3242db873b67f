"""Elman RNN in the NTK parameterisation (spec: shared/spec/rnn-kernels.md, section 1).

    g_t = (s_w / sqrt(m)) W h_{t-1} + (s_u / sqrt(d)) U x_t + s_b b        h_0 = 0
    h_t = phi(g_t)
    f_t = (s_v / sqrt(m)) v^T h_t

With ``sigma_h > 0`` the initial state is random instead, h_0 = sigma_h z, z ~ N(0, I_m) per
sequence (Alemohammad et al., "The Recurrent Neural Tangent Kernel", ICLR 2021); z is a fixed
function of the sequence, see :func:`initial_state`.

All weights are N(0, 1) at initialisation. With ``recurrence='diagonal'`` W is an m-vector and the
recurrent term is ``s_w * (w * h_{t-1})`` (no 1/sqrt(m)).

The functional API (``init_params``, ``apply``, ``hidden_states``, ``forward``) is what every other
module uses; :class:`ElmanRNN` is a thin flax face over the same math.

Scales (the sigmas and the width used in the 1/sqrt(m) factors) are separated from the static
structure of :class:`RNNConfig` so that the training engine can pass them as traced values
(:class:`Scales`): a new sigma never recompiles, and a net zero-padded to a larger array width runs
at its true width (``Scales.width``), its padded units masked to exactly zero.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_ntk import schema
from rnn_ntk.schema import ConfigError

Array = jax.Array
Params = dict[str, Array]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "erf": jax.scipy.special.erf,
    "tanh": jnp.tanh,
    "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    "softplus": jax.nn.softplus,
    "identity": lambda z: z,
}
READOUTS = ("last", "all", "mean")
GROUPS = ("W", "U", "b", "v")
RECURRENCES = ("full", "diagonal")
__all__ = ["ACTIVATIONS", "READOUTS", "GROUPS", "RECURRENCES", "ConfigError", "RNNConfig", "Scales",
           "paper_lr_to_ntk", "ntk_lr_to_paper", "param_shapes", "init_params", "pad_params",
           "unpad_params", "forward", "hidden_states", "readout", "apply", "pattern", "ElmanRNN"]


def _trainable(v: Any) -> tuple[str, ...]:
    """A non-empty set of groups (a sequence, or a string such as 'Wv') in canonical order."""
    if isinstance(v, str):
        v = list(v) if set(v) <= set(GROUPS) and v else [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
        raise schema.Invalid(f"must be a list of strings, got {v!r}")
    if not v:
        raise schema.Invalid(f"must name at least one of {list(GROUPS)}")
    bad = [s for s in v if s not in GROUPS]
    if bad:
        raise schema.Invalid(f"unknown group(s) {bad}; groups are {list(GROUPS)}")
    if len(set(v)) != len(v):
        raise schema.Invalid(f"repeated groups {list(v)}")
    # canonical order, so that equal configs hash equal
    return tuple(g for g in GROUPS if g in v)


_SCALE = schema.number(schema.between(0.0), ">= 0")


def _seed(v: Any) -> int:
    v = schema.integer(0)(v)
    if v >= 2 ** 31:
        raise schema.Invalid(f"must be an integer in [0, 2**31), got {v}")
    return v


@dataclasses.dataclass(frozen=True)
class RNNConfig:
    """Static description of an Elman RNN; validated on construction (one-line ConfigError).

    width: hidden units m.  input_dim: token dimension d.  output_dim: outputs k.
    activation: one of ``ACTIVATIONS``.  readout: 'last' (f_T), 'all' (f_1..f_T) or 'mean'.
    sigma_*: the multipliers s_w, s_u, s_b, s_v of the NTK parameterisation (traced
    hyper-parameters of a training run, defaults for its hparams).
    trainable: non-empty subset of {'W', 'U', 'b', 'v'}; kernels are for this subset.
    recurrence: 'full' (W is m x m) or 'diagonal' (W is an m-vector).
    sigma_h: std of the random initial state h_0 (the RNTK paper's sigma_h; 0 = h_0 = 0, the
    default). h0_seed: the seed of h_0's draw (a fixed part of the network function, not trained);
    see :func:`initial_state`.
    Each field is declared once with its check (:mod:`rnn_ntk.schema`); ``schema.fields_of(RNNConfig)``.
    """

    width: int = schema.field(check=schema.integer(1), doc="hidden units m")
    input_dim: int = schema.field(check=schema.integer(1), doc="token dimension d")
    output_dim: int = schema.field(1, check=schema.integer(1), doc="outputs k")
    activation: str = schema.field("relu", choices=sorted(ACTIVATIONS), doc="phi")
    readout: str = schema.field("last", choices=READOUTS, doc="'last', 'all' or 'mean'")
    sigma_w: float = schema.field(1.0, check=_SCALE, traced=True, doc="recurrent multiplier s_w")
    sigma_u: float = schema.field(1.0, check=_SCALE, traced=True, doc="input multiplier s_u")
    sigma_b: float = schema.field(0.0, check=_SCALE, traced=True, doc="bias multiplier s_b")
    sigma_v: float = schema.field(1.0, check=_SCALE, traced=True, doc="read-out multiplier s_v")
    trainable: tuple[str, ...] = schema.field(GROUPS, check=_trainable, sequence=True,
                                              doc="trained groups")
    recurrence: str = schema.field("full", choices=RECURRENCES, doc="'full' or 'diagonal'")
    sigma_h: float = schema.field(0.0, check=_SCALE, doc="std of the random initial state h_0")
    h0_seed: int = schema.field(0, check=_seed, doc="seed of h_0's draw, in [0, 2**31)")

    def __post_init__(self) -> None:
        schema.check_config(self)

    def replace(self, **changes: Any) -> "RNNConfig":
        return dataclasses.replace(self, **changes)

    def scales(self, dtype: Any = None) -> "Scales":
        """The config's multipliers and width as a :class:`Scales` (python floats unless dtype)."""
        vals = (self.sigma_w, self.sigma_u, self.sigma_b, self.sigma_v, float(self.width))
        if dtype is not None:
            vals = tuple(jnp.asarray(v, dtype) for v in vals)
        return Scales(*vals)

    @property
    def phi(self) -> Callable[[Array], Array]:
        return ACTIVATIONS[self.activation]

    @classmethod
    def paper(cls, width: int, input_dim: int, output_dim: int = 1, readout: str = "all",
              **overrides: Any) -> "RNNConfig":
        """The convention of Allen-Zhu, Li & Song (2019) and Allen-Zhu & Li (2019).

        Their net h_t = ReLU(W h_{t-1} + A x_t), y_t = B h_t with W, A ~ N(0, 2/m),
        B ~ N(0, 1/d_out), only W trained, is exactly this network (with h = sqrt(m) h_theirs) at
        s_w = sqrt(2), s_u = sqrt(2 d), s_b = 0, s_v = 1/sqrt(d_out), trainable = {W}.
        Convert their GD step with :func:`paper_lr_to_ntk`.
        """
        kw: dict[str, Any] = dict(
            width=width, input_dim=input_dim, output_dim=output_dim, activation="relu",
            readout=readout, sigma_w=math.sqrt(2.0), sigma_u=math.sqrt(2.0 * input_dim),
            sigma_b=0.0, sigma_v=1.0 / math.sqrt(output_dim), trainable=("W",))
        kw.update(overrides)
        return cls(**kw)


def paper_lr_to_ntk(lr_paper: float, width: int) -> float:
    """GD step eta on the papers' W equals step eta * m / 2 on this parameterisation's W."""
    return lr_paper * width / 2.0


def ntk_lr_to_paper(lr_ntk: float, width: int) -> float:
    """Inverse of :func:`paper_lr_to_ntk`."""
    return 2.0 * lr_ntk / width


class Scales(NamedTuple):
    """Multipliers and the true width; floats or (traced) scalars. A pytree."""

    sigma_w: Any
    sigma_u: Any
    sigma_b: Any
    sigma_v: Any
    width: Any


def param_shapes(cfg: RNNConfig, width: int | None = None) -> dict[str, tuple[int, ...]]:
    """Shapes of the parameter groups at ``width`` (default ``cfg.width``)."""
    m = cfg.width if width is None else width
    w_shape = (m,) if cfg.recurrence == "diagonal" else (m, m)
    return {"W": w_shape, "U": (m, cfg.input_dim), "b": (m,), "v": (m, cfg.output_dim)}


def _rows_normal(key: Array, rows: int, cols: int, dtype: Any) -> Array:
    """(rows, cols) N(0, 1); row i drawn from fold_in(key, i), so a draw is a prefix of a larger one."""
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (cols,), dtype))(
        jnp.arange(rows))


def init_params(cfg: RNNConfig, key: Array, dtype: Any = None, *, array_width: int | None = None,
                width: Any = None) -> Params:
    """All groups N(0, 1): {'W': (m, m) or (m,), 'U': (m, d), 'b': (m,), 'v': (m, k)}.

    Each group has its own key ``fold_in(key, i)``, and each row of a matrix its own key, so the
    draw for width m is the top-left block of the draw for any larger width: a net zero-padded to
    ``array_width`` (units at index >= ``width``, default ``cfg.width``, set to exactly 0; ``width``
    may be traced) has the same parameters as the net initialised alone at its own width.
    """
    dtype = jnp.zeros(()).dtype if dtype is None else dtype  # float32, or float64 under x64
    M = cfg.width if array_width is None else array_width
    m = cfg.width if width is None else width
    kW, kU, kb, kv = (jax.random.fold_in(key, i) for i in range(4))
    keep = (jnp.arange(M) < m).astype(dtype)
    if cfg.recurrence == "diagonal":
        W = jax.random.normal(kW, (M,), dtype) * keep
    else:
        W = _rows_normal(kW, M, M, dtype) * keep[:, None] * keep[None, :]
    return {"W": W,
            "U": _rows_normal(kU, M, cfg.input_dim, dtype) * keep[:, None],
            "b": jax.random.normal(kb, (M,), dtype) * keep,
            "v": _rows_normal(kv, M, cfg.output_dim, dtype) * keep[:, None]}


def pad_params(params: Params, width: int) -> Params:
    """Zero-pad a net's parameters to a larger array width (its units beyond are masked off)."""
    m = params["b"].shape[-1]
    if width < m:
        raise ConfigError(f"cannot pad width {m} down to {width}")
    p = width - m
    out = {}
    for g, a in params.items():
        if g == "W" and a.ndim == 2:
            out[g] = jnp.pad(a, ((0, p), (0, p)))
        else:
            out[g] = jnp.pad(a, ((0, p),) + ((0, 0),) * (a.ndim - 1))
    return out


def unpad_params(params: Params, width: int) -> Params:
    """Inverse of :func:`pad_params`."""
    return {g: (a[:width, :width] if g == "W" and a.ndim == 2 else a[:width]) for g, a in params.items()}


def _as_lengths(lengths: Array | None, n: int, T: int) -> Array:
    if lengths is None:
        return jnp.full((n,), T, dtype=jnp.int32)
    return jnp.asarray(lengths).astype(jnp.int32)


def forward(cfg: RNNConfig, params: Params, x_NTD: Array, lengths: Array | None = None, *,
            scales: Scales | None = None, perturb_NTM: Array | None = None) -> tuple[Array, Array]:
    """Run the recurrence. Returns (h_NTM, g_NTM): hidden states and pre-activations.

    ``lengths`` (n,): steps t >= lengths[i] leave sequence i's state unchanged (h stays at
    h_{len}) and its pre-activation there is reported as 0. ``perturb_NTM`` is added to g_t
    before phi (zero by default); differentiating the outputs with respect to it gives the
    back-propagated signals delta_t = d f / d g_t used by the structured empirical kernels.
    Units at index >= ``scales.width`` (zero-padded nets) are masked to exactly zero.
    """
    s = cfg.scales() if scales is None else scales
    n, T, d = x_NTD.shape
    m = params["b"].shape[-1]
    phi = cfg.phi
    dtype = params["b"].dtype
    lens = _as_lengths(lengths, n, T)
    unit_mask = (jnp.arange(m, dtype=dtype) < s.width).astype(dtype)[None, :]   # (1, m)
    inv_sqrt_m = 1.0 / jnp.sqrt(jnp.asarray(s.width, dtype))
    inv_sqrt_d = 1.0 / math.sqrt(d)
    # input and bias drive for all steps at once: (T, n, m)
    x_TND = jnp.swapaxes(x_NTD, 0, 1).astype(dtype)
    drive_TNM = (s.sigma_u * inv_sqrt_d) * jnp.einsum("tnd,md->tnm", x_TND, params["U"]) \
        + s.sigma_b * params["b"][None, None, :]
    if perturb_NTM is not None:
        drive_TNM = drive_TNM + jnp.swapaxes(perturb_NTM, 0, 1)
    active_TN = (jnp.arange(T)[:, None] < lens[None, :])
    W = params["W"]
    diagonal = cfg.recurrence == "diagonal"

    def step(h_NM, inp):
        drive_NM, active_N = inp
        if diagonal:
            rec = s.sigma_w * (h_NM * W[None, :])
        else:
            rec = (s.sigma_w * inv_sqrt_m) * (h_NM @ W.T)
        g = (rec + drive_NM) * unit_mask
        h_new = phi(g) * unit_mask
        a = active_N[:, None]
        h_out = jnp.where(a, h_new, h_NM)
        return h_out, (h_out, jnp.where(a, g, 0.0))

    h0 = initial_state(cfg, x_NTD, lens, m, dtype, width=s.width)
    _, (h_TNM, g_TNM) = jax.lax.scan(step, h0, (drive_TNM, active_TN))
    return jnp.swapaxes(h_TNM, 0, 1), jnp.swapaxes(g_TNM, 0, 1)


# ---------------------------------------------------------------------- sigma_h: random h_0
_GOLDEN = 0x9E3779B9


def _mix32(h: Array) -> Array:
    """murmur3's 32-bit finaliser (a bijection of uint32 with good avalanche)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def sequence_hash(x_NTD: Array, lengths: Array | None = None) -> Array:
    """A 32-bit hash of each sequence's values and length, (n,) uint32; jittable.

    Only the steps t < lengths[i] enter (padding never does), -0.0 hashes as 0.0, and the hash is
    of the values' bits in x's dtype: equal sequences (values and lengths) get equal hashes in any
    padded batch; different ones collide with probability ~2^-32.
    """
    n, T, d = x_NTD.shape
    lens = _as_lengths(lengths, n, T)
    if jnp.dtype(x_NTD.dtype).itemsize < 4 or not jnp.issubdtype(x_NTD.dtype, jnp.floating):
        x_NTD = x_NTD.astype(jnp.float32)
    x = jnp.where(x_NTD == 0, jnp.zeros((), x_NTD.dtype), x_NTD)        # -0.0 -> 0.0
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)                   # (n, T, d[, 2])
    bits = bits.reshape(n, T, -1)                                        # (n, T, w)
    w = bits.shape[-1]
    pos = jnp.arange(T * w, dtype=jnp.uint32).reshape(1, T, w)
    terms = _mix32(bits ^ _mix32(pos * jnp.uint32(_GOLDEN) + jnp.uint32(1)))
    valid = (jnp.arange(T)[None, :, None] < lens[:, None, None])
    total = jnp.sum(jnp.where(valid, terms, jnp.uint32(0)), axis=(1, 2), dtype=jnp.uint32)
    return _mix32(total ^ _mix32(lens.astype(jnp.uint32) + jnp.uint32(_GOLDEN)))


def initial_state(cfg: RNNConfig, x_NTD: Array, lengths: Array | None, array_width: int,
                  dtype: Any, *, width: Any = None) -> Array:
    """The initial hidden state h_0, (n, array_width): zeros when ``cfg.sigma_h == 0``.

    Otherwise h_0 = sigma_h z with z ~ N(0, I_m) per sequence (the RNTK paper's random initial
    state): z is a fixed function of the network (``cfg.h0_seed``) and of the sequence
    (:func:`sequence_hash` of its values and length): unit i is drawn from
    ``fold_in(fold_in(key(h0_seed), hash), i)``. So equal sequences get equal h_0 (the network is
    a function of its input, which the empirical kernels and training need), different ones
    independent draws, and the draw at width m is the prefix of any wider draw (units at index >=
    ``width``, default ``array_width``, are 0). Over draws of h0_seed, E[h_0 . h_0'] / m =
    sigma_h^2 1[x = x'] (the white-noise term of the infinite-width kernels).
    """
    n = x_NTD.shape[0]
    if cfg.sigma_h == 0:
        return jnp.zeros((n, array_width), dtype)
    keys = jax.vmap(lambda hsh: jax.random.fold_in(jax.random.key(cfg.h0_seed), hsh))(
        sequence_hash(x_NTD.astype(dtype), lengths))
    units = jnp.arange(array_width)
    z = jax.vmap(lambda k: jax.vmap(
        lambda i: jax.random.normal(jax.random.fold_in(k, i), (), dtype))(units))(keys)
    m = array_width if width is None else width
    keep = (units < m).astype(dtype)[None, :]
    return (cfg.sigma_h * z) * keep
# ---------------------------------------------------------------------- end sigma_h


def hidden_states(cfg: RNNConfig, params: Params, x_NTD: Array, lengths: Array | None = None, *,
                  scales: Scales | None = None) -> Array:
    """Hidden states h_1..h_T, shape (n, T, m). Past a sequence's length its state is frozen."""
    return forward(cfg, params, x_NTD, lengths, scales=scales)[0]


def readout(cfg: RNNConfig, params: Params, h_NTM: Array, lengths: Array | None = None, *,
            scales: Scales | None = None) -> Array:
    """Outputs from hidden states: (n, k) for 'last'/'mean', (n, T, k) for 'all'.

    'last' reads h at each sequence's own end; 'mean' averages f_t over its own steps; 'all'
    gives f_t for every t, and 0 at padded steps t >= length.
    """
    s = cfg.scales() if scales is None else scales
    n, T, _ = h_NTM.shape
    dtype = h_NTM.dtype
    lens = _as_lengths(lengths, n, T)
    coef = s.sigma_v / jnp.sqrt(jnp.asarray(s.width, dtype))
    f_NTK = coef * jnp.einsum("ntm,mk->ntk", h_NTM, params["v"])
    if cfg.readout == "last":
        # the state is frozen after the end, so h_T is h at the sequence's own end
        return f_NTK[:, -1, :]
    mask_NT = (jnp.arange(T)[None, :] < lens[:, None]).astype(dtype)
    if cfg.readout == "all":
        return f_NTK * mask_NT[:, :, None]
    return jnp.sum(f_NTK * mask_NT[:, :, None], axis=1) / lens[:, None].astype(dtype)


def apply(cfg: RNNConfig, params: Params, x_NTD: Array, lengths: Array | None = None, *,
          scales: Scales | None = None) -> Array:
    """Network outputs for x (n, T, d): (n, k) for 'last' and 'mean', (n, T, k) for 'all'."""
    h = hidden_states(cfg, params, x_NTD, lengths, scales=scales)
    return readout(cfg, params, h, lengths, scales=scales)


def pattern(cfg: RNNConfig, params: Params, x_NTD: Array, lengths: Array | None = None, *,
            scales: Scales | None = None) -> Array:
    """Activation pattern 1[g_t > 0], (n, T, m) booleans (ReLU sign pattern for diagnostics)."""
    return forward(cfg, params, x_NTD, lengths, scales=scales)[1] > 0


class ElmanRNN(nn.Module):
    """Flax module over the same math as :func:`apply`.

    ``ElmanRNN(cfg).init(key, x)`` gives ``{'params': {'W','U','b','v'}}``, each drawn N(0, 1);
    ``.apply(variables, x, lengths)`` equals ``apply(cfg, variables['params'], x, lengths)``.
    """

    cfg: RNNConfig

    @nn.compact
    def __call__(self, x_NTD: Array, lengths: Array | None = None) -> Array:
        shapes = param_shapes(self.cfg)
        params = {}
        for g, shape in shapes.items():
            params[g] = self.param(g, nn.initializers.normal(stddev=1.0), shape, jnp.zeros(()).dtype)
        return apply(self.cfg, params, x_NTD, lengths)
