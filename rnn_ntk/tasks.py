"""Synthetic sequence tasks from the theory papers on RNN training, drawn from a JAX key.

Every task is a pure, jittable function of ``(key, thp)``: the static structure (shapes, which code
runs) lives in the frozen :class:`TaskConfig`, and every numeric knob (``delta``, ``eps_x``,
``rho``, ``lag``, ``label_noise`` ...) is a *traced* value in the dict ``thp``, so a sweep over
them, jitted or vmapped, never recompiles. Defaults come from :func:`default_task_hparams`.

Conventions (1-indexed positions t = 1..T in the math, 0-indexed in code):

* ``sample_task(tcfg, key, thp)`` draws the train set from ``fold_in(key, 0)``, the test set from
  ``fold_in(key, 1)`` and the target function from kt = ``fold_in(key, 2)`` (shared by both).
  kt' = ``fold_in(kt, 1)`` draws the function's weights together with a reference sample of
  ``n_ref`` inputs used only to normalise the targets (Monte-Carlo estimates of the moments
  below), so normalisation is a fixed property of the target function, never of the data; the
  teacher's parameters come from ``fold_in(kt, 0)``. Each of these keys is used for one flat
  Gaussian draw that is sliced into the pieces (fewer random draws compile much faster on CPU).
* x is (n, T, d); y is (n, k) for target 'last' (y_T) and (n, T, k) for target 'all' (y_1..y_T).
* ``label_noise`` is the std of Gaussian noise added to the *train* labels only.
* Tokens of norm ``eps_x`` are ``eps_x * u`` with u uniform on the unit sphere (of the subspace
  named per kind).

Kinds (:data:`TASK_KINDS`, the built-in entries of the registry :data:`TASKS`). Each kind is one
:class:`TaskKind` entry: its traced parameters (schema Fields with defaults and checks), the static
options it uses, its input draws and builder, and its target draws, parameters and values; the
public functions dispatch through it, so a new kind is one entry (``TASKS[name] = TaskKind(...)``):

``random_labels`` (Allen-Zhu, Li & Song 2019, memorisation). First token
    x_1 = (cos(th)/sqrt2, sin(th)/sqrt2 * v, 1/sqrt2) with v uniform on the unit sphere of
    R^{d-2}: unit norm, last coordinate 1/sqrt2 (a bias in disguise). For v_i, v_j of two
    sequences ||x_1^i - x_1^j|| = sin(th)/sqrt2 * ||v_i - v_j||, so with s_min the smallest
    pairwise ||v_i - v_j|| in the set, sin(th) = min(1, sqrt2 * delta / s_min) makes the minimum
    pairwise first-token separation exactly ``delta`` (capped at s_min/sqrt2, the most these
    random directions allow; :func:`task_stats` reports the measured value). Separation holds
    within the train set and within the test set. Tokens x_t (t >= 2) have norm ``eps_x`` <= 1.
    Labels are iid N(0, 1) at every position ('all') or at the last one ('last').

``concept`` (Allen-Zhu & Li 2019). x_1 = (1/sqrt2) e_1 + (1/sqrt2) e_d is the same for every
    sequence; x_{i+1} = z_i (i = 1..T-1) with z_i of norm ``eps_x`` <= 1 in the first d-1
    coordinates (last coordinate 0). With a_ij ~ N(0, 1) (one per output), w_ij ~ N(0, I_d) and
    phi_j cycling through (z^2, sin z, cos z, exp z) for j = 1..p (``n_terms``),
        S_i(z) = sum_{j<=p} a_ij phi_j(<w_ij, z>),
        y_{l+1} = (1/sqrt l) sum_{i<=l} (S_i(z_i) - mu_i) / sd_i,
    where mu_i, sd_i are the mean and std of S_i(z) under the token distribution (reference
    sample). So every term is standardised and E y_t = 0, Var y_t = 1 for every t >= 2 (up to
    the reference sample's Monte-Carlo error), for any ``eps_x``; y_1 = 0.

``wang_additive`` (Wang et al. 2021). Tokens of norm ``eps_x`` (whole R^d), beta_l ~ N(0, I_d),
    f = ``link`` (odd: 'sin', 'tanh' or 'linear'):
        y_t = c_t sum_{l<=t} f(beta_l^T x_l),     c_t = (sum_{l<=t} E f(beta_l^T x)^2)^{-1/2},
    so E y_t = 0 exactly (f odd, tokens symmetric) and Var y_t = 1 (reference estimate).

``wang_nvar`` (Wang et al. 2021). N = ``n_vars`` positions with offsets 0 = o_1 < .. < o_N =
    l0 (``span``), o_j = round((j-1) l0 / (N-1)). beta ~ N(0, I_{Nd} / N),
        y_t = c f(sum_j beta_j^T x_{t - l0 + o_j}),     c = (E f(beta^T [x..x])^2)^{-1/2},
    i.e. the window of span l0 ends at t ('last': positions T - l0 + o_j). Tokens before the
    start (index < 1, only for target 'all') count as 0, so early y_t have smaller variance.

``lag`` (Cayci & Eryilmaz 2024). Tokens of norm ``eps_x``, beta ~ N(0, I_d) per output,
    y_t = g(x_{t-k}) = c f(beta^T x_{t-k}) for t > k and 0 for t <= k, k = round(``lag``)
    (traced; 'last' needs k <= T-1), c = (E f(beta^T x)^2)^{-1/2}.

``state_space`` (Cayci & Eryilmaz 2024). s_0 = 0,
        s_t = rho s_{t-1} + (1 - rho) tanh(A s_{t-1} + B x_t),     y_t = c C s_t,
    s_t in R^r (``state_dim``), A = 0.5 G / ||G||_2 (G, B ~ N(0, 1) entries), C ~ N(0, 1/r),
    memory decay ``rho`` in [0, 1) traced. Each step is a convex combination of s_{t-1} and a
    tanh, so |s_t|_inf <= 1 always, and the map is a contraction with rate
    rho + (1 - rho)/2 < 1 (fading memory). c = (E ||C s_T||^2 / k)^{-1/2} (reference sample),
    so Var y_T is about 1; y has mean 0 exactly (the system is odd in x).

``teacher``. A random Elman RNN from :mod:`rnn_ntk.model`: :func:`teacher_config` (width
    ``teacher_width``, activation ``teacher_activation``, readout = target, s_u = sqrt(d) so the
    input drive has variance eps_x^2, s_b = 0), parameters ``init_params(cfg, fold_in(fold_in(key,
    2), 0))`` and outputs ``apply(cfg, params, x, scales=Scales(teacher_sigma_w, sqrt(d), 0, c,
    m))``: the normalisation is the read-out multiplier c = 1/RMS of the s_v = 1 output at step
    T (over the reference sample and the k outputs), so Var y_T averaged over the outputs is
    about 1 (single outputs vary with the teacher's read-out column norms); mean 0 for an odd
    activation such as the default tanh.

``ntk_teacher`` (Cayci & Eryilmaz 2024: a target inside the kernel class of the *diagonal* RNN).
    M = ``ntk_units`` reference units theta_i = (w_i, u_i) in R^D, D = 1 + d, iid N(0, I_D): the
    initialisation law of one unit of a diagonal RNN (:mod:`rnn_ntk.model`, recurrence
    'diagonal'). Each runs the single-unit recurrence
        g_t = s_w w h_{t-1} + (s_u / sqrt d) <u, x_t>,    h_t = phi(g_t),    h_0 = 0,
    with s_w = ``teacher_sigma_w``, s_u = sqrt(d) (input drive of variance eps_x^2, as for
    ``teacher``), no bias, phi = ``teacher_activation``. Per output k a bounded transport map
        nu_k(theta) = tanh(A_k theta / sqrt(D) + a_k) / sqrt(D),    A_k (D, D), a_k (D,) iid N(0, 1),
    so ||nu_k(theta)|| < 1 for every theta, and
        y_{t,k}(x) = c_k (1/M) sum_i <nu_k(theta_i), grad_theta h_t(x; theta_i)>,
    a Monte-Carlo estimate (M draws of the initialisation) of the element
        f_{t,k}(x) = E_theta[ <c_k nu_k(theta), grad_theta h_t(x; theta)> ]
    of the transport-mapping class of Cayci & Eryilmaz (transport c_k nu_k, sup norm <= c_k).
    The gradient is over (w, u): the groups {W, U} of a diagonal student with sigma_w = s_w,
    sigma_u = sqrt(d), sigma_b = 0 and the same activation, whose units have the same law. Such a
    student (read-out (s_v / sqrt m) sum_i v_i h_i) linearised at its initialisation and moved by
    delta_i = sign(v_i) c_k nu_k(theta_i) / (s_v E|v| sqrt m) has f_lin -> f_k as m -> inf
    (law of large numbers, v independent of theta), with ||delta_i|| <= sqrt(pi/2) B_k /
    (s_v sqrt m), B_k = c_k sup ||nu_k||: inside the per-unit projection ball rho / sqrt m once
    rho >= sqrt(pi/2) B_k / s_v. ``transport_bound`` = c_k max_i ||nu_k(theta_i)|| estimates B_k.
    c_k = 1/RMS of the un-normalised y_{T,k} over the reference sample, so Var y_{T,k} ~ 1 for
    every output; mean 0 exactly for an odd phi (y(-x) = -y(x), tokens symmetric). There are no
    random output signs: a sign drawn independently of theta would make the expectation 0 and
    the normalised sum a Gaussian-process draw, which is not in the class. The Monte-Carlo
    remainder has variance Var_theta(<nu, grad h>) / M: about 0.6% of Var y at M = 512 and 0.15%
    at M = 2048 for d = 8, T = 5, s_w = 0.5 (one draw).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import model, schema
from rnn_ntk.schema import ConfigError

Array = jax.Array

__all__ = ["TARGETS", "LINKS", "CONCEPT_PHIS", "COMMON_HPARAMS", "TaskConfig", "TaskKind", "TASKS",
           "TASK_KINDS", "Data", "hparam_fields", "task_fields", "default_task_hparams",
           "sample_task", "sample_inputs", "target_params", "target_values", "task_stats",
           "nvar_offsets", "teacher_config", "ntk_teacher_config", "ntk_transport",
           "ntk_teacher_features", "state_space_states"]

TARGETS = ("last", "all")
LINKS: dict[str, Callable[[Array], Array]] = {
    "sin": jnp.sin,
    "tanh": jnp.tanh,
    "linear": lambda s: s,
}
# phi_j of the concept class, cycled over j = 1..p
CONCEPT_PHIS: tuple[tuple[str, Callable[[Array], Array]], ...] = (
    ("square", jnp.square), ("sin", jnp.sin), ("cos", jnp.cos), ("exp", jnp.exp))


def _kind(v: Any) -> str:
    if not isinstance(v, str):
        raise schema.Invalid(f"must be a string, got {v!r}")
    if v not in TASKS:
        raise schema.Invalid(f"must be one of {list(TASKS)}, got {v!r}{schema.did_you_mean(v, TASKS)}")
    return v


_COMMON = ("kind", "n_train", "n_test", "length", "input_dim", "output_dim", "target")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Static description of a task; validated on construction (one-line ConfigError naming the field).

    kind: one of :data:`TASKS` (:data:`TASK_KINDS`).  n_train, n_test: sequences.  length: T.
    input_dim: d.  output_dim: k.  target: 'last' (y is (n, k)) or 'all' (y is (n, T, k)).
    Kind-specific static options (left at their defaults by the kinds whose :class:`TaskKind`
    entry does not list them in ``options``):
      n_terms: p, terms per position of the concept class.  n_vars: N and span: l0 of the
      N-variable target.  link: f of the Wang and lag targets ('sin', 'tanh', 'linear').
      state_dim: r of the state-space system.  teacher_width, teacher_activation: the teacher RNN
      (teacher_activation is also the activation of the ntk_teacher's units).  ntk_units: M,
      the reference units of the ntk_teacher.
      n_ref: size of the reference sample used to normalise targets (all kinds but random_labels).
    Fields are declared once with their checks (``schema.fields_of(TaskConfig)``); the kind's
    own rules (:attr:`TaskKind.check`) run after them.
    """

    kind: str = schema.field(check=_kind, doc="task kind, a key of tasks.TASKS")
    n_train: int = schema.field(check=schema.integer(1), doc="training sequences")
    n_test: int = schema.field(check=schema.integer(1), doc="test sequences")
    length: int = schema.field(check=schema.integer(1), doc="sequence length T")
    input_dim: int = schema.field(check=schema.integer(1), doc="token dimension d")
    output_dim: int = schema.field(1, check=schema.integer(1), doc="outputs k")
    target: str = schema.field("last", choices=TARGETS, doc="'last' or 'all' positions")
    n_terms: int = schema.field(3, check=schema.integer(1), doc="concept: terms p per position")
    n_vars: int = schema.field(2, check=schema.integer(1), doc="wang_nvar: variables N")
    span: int = schema.field(1, check=schema.integer(0), doc="wang_nvar: span l0")
    link: str = schema.field("sin", choices=sorted(LINKS), doc="link f of wang_* and lag")
    state_dim: int = schema.field(8, check=schema.integer(1), doc="state_space: state size r")
    teacher_width: int = schema.field(32, check=schema.integer(1), doc="teacher: width")
    teacher_activation: str = schema.field("tanh", choices=sorted(model.ACTIVATIONS),
                                           doc="teacher / ntk_teacher: activation")
    ntk_units: int = schema.field(512, check=schema.integer(1), doc="ntk_teacher: units M")
    n_ref: int = schema.field(2048, check=schema.integer(2), doc="reference sample size")

    def __post_init__(self) -> None:
        schema.check_config(self)
        tk = TASKS[self.kind]
        for f in schema.fields_of(TaskConfig):
            if f.name in _COMMON or f.name in tk.options or getattr(self, f.name) == f.default:
                continue
            kinds = [k for k, e in TASKS.items() if f.name in e.options]
            raise ConfigError(f"{f.name} only applies to kind(s) {kinds}, not {self.kind!r}; "
                              f"leave it at its default {f.default!r}")
        if tk.check is not None:
            problem = tk.check(self)
            if problem:
                raise ConfigError(problem)

    def replace(self, **changes: Any) -> "TaskConfig":
        return dataclasses.replace(self, **changes)


class Data(NamedTuple):
    """A sampled task: x (n, T, d); y (n, k) for target 'last', (n, T, k) for target 'all'."""

    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array


# ----------------------------------------------------------------------------------------------
# the registry entry of a kind


Fields = tuple[schema.Field, ...]


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """Everything about one task kind; ``TASKS[name]`` is the only place a kind is described.

    hparams: its traced numeric parameters besides the common ``label_noise`` and ``eps_x`` (a
        field named like a common one replaces it), as schema Fields with defaults and checks;
        or ``hparams(tcfg)`` when a default or bound depends on the config (``tcfg`` is None
        when only the kind is known, e.g. in a spec: the config-free bounds).
    options: the static :class:`TaskConfig` options it uses (the others keep their defaults).
    input_shapes(tcfg, n) -> {name: shape}: the Gaussian draws n input sequences come from.
    inputs(tcfg, g, hp, dtype) -> x (n, T, d) from those draws (``hp``: the task hparams).
    target_shapes(tcfg) -> {name: shape}: Gaussian draws of the target's weights and 'ref'
        sample; None: no target function, the labels are iid N(0, 1) draws.
    target_params(tcfg, kt, g, hp, dtype) -> tparams (a pytree), kt = fold_in(key, 2) and g the
        draws of target_shapes (from fold_in(kt, 1)).
    target_values(tcfg, tparams, x) -> y: (n, k) for target 'last', (n, T, k) for 'all'.
    check(tcfg) -> a one-line problem or None: rules of the kind on the config.
    """

    hparams: Fields | Callable[[TaskConfig | None], Fields] = ()
    options: tuple[str, ...] = ()
    input_shapes: Callable[[TaskConfig, int], dict[str, tuple[int, ...]]] | None = None
    inputs: Callable[..., Array] | None = None
    target_shapes: Callable[[TaskConfig], dict[str, tuple[int, ...]]] | None = None
    target_params: Callable[..., Any] | None = None
    target_values: Callable[[TaskConfig, Any, Array], Array] | None = None
    check: Callable[[TaskConfig], str | None] | None = None

    def __post_init__(self) -> None:
        names = {f.name for f in schema.fields_of(TaskConfig)}
        bad = [o for o in self.options if o not in names or o in _COMMON]
        if bad:
            raise ConfigError(f"TaskKind.options: {bad} are not options of TaskConfig")
        if (self.input_shapes is None) != (self.inputs is None):
            raise ConfigError("TaskKind: give input_shapes and inputs together (or neither)")
        given = [self.target_shapes is None, self.target_params is None,
                 self.target_values is None]
        if len(set(given)) != 1:
            raise ConfigError("TaskKind: give target_shapes, target_params and target_values "
                              "together (or none, for iid labels)")

    def hparam_fields(self, tcfg: TaskConfig | None) -> Fields:
        own = self.hparams(tcfg) if callable(self.hparams) else tuple(self.hparams)
        by_name = {f.name: f for f in own}
        common = tuple(by_name.pop(f.name, f) for f in COMMON_HPARAMS)
        return common + tuple(by_name.values())


def _nonneg(name: str, default: float, doc: str) -> schema.Field:
    return schema.Field(name, default, schema.number(schema.between(0.0), ">= 0"), doc, traced=True)


COMMON_HPARAMS: Fields = (
    _nonneg("label_noise", 0.0, "std of the Gaussian noise on the train labels"),
    _nonneg("eps_x", 1.0, "token norm"),
)
_EPS_UNIT = schema.Field("eps_x", 1.0, schema.number(schema.between(0.0, 1.0),
                                                     "in [0, 1] (tokens must have norm <= 1)"),
                         "token norm (<= 1)", traced=True)


def hparam_fields(tcfg: TaskConfig) -> Fields:
    """The task's traced numeric parameters as schema Fields, bounds bound to ``tcfg``."""
    return TASKS[tcfg.kind].hparam_fields(tcfg)


def task_fields(kind: str | None = None) -> Fields:
    """The fields a spec's [task] section may set: the TaskConfig fields used by ``kind`` and its
    traced parameters (config-free bounds); with kind None those of every kind (see
    :func:`rnn_ntk.schema.section_fields`)."""
    if kind is not None and kind not in TASKS:
        raise ConfigError(f"kind: must be one of {list(TASKS)}, got {kind!r}"
                          f"{schema.did_you_mean(str(kind), TASKS)}")
    entries = list(TASKS.values()) if kind is None else [TASKS[kind]]
    static = tuple(f for f in schema.fields_of(TaskConfig)
                   if f.name in _COMMON or any(f.name in e.options for e in entries))
    hps: dict[str, schema.Field] = {}
    for e in entries:
        for f in e.hparam_fields(None):
            hps.setdefault(f.name, f)
    return static + tuple(hps.values())


def default_task_hparams(tcfg: TaskConfig) -> dict[str, float]:
    """The traced numeric parameters of the task with their defaults (always has 'label_noise').

    eps_x: token norm (<= 1 for random_labels and concept).  delta: requested first-token
    separation (random_labels).  lag: k of the lag target (rounded to an integer).  rho: memory
    decay of the state-space system.  teacher_sigma_w: recurrent multiplier of the teacher (for
    ntk_teacher: s_w of its diagonal units). Declared in the kind's :class:`TaskKind` entry.
    """
    return {f.name: float(f.default) for f in hparam_fields(tcfg)}


def _is_concrete(v: Any) -> bool:
    return not isinstance(v, jax.core.Tracer)


def _resolve_hparams(tcfg: TaskConfig, thp: dict[str, Any] | None) -> dict[str, Any]:
    """The task's hparams: defaults overridden by ``thp`` (other keys of ``thp`` are ignored, so a
    trainer may pass its whole hparams dict). Concrete values (scalars or arrays) are checked
    with the declared checks here; traced ones cannot be and are used as given."""
    if thp is not None and not isinstance(thp, dict):
        raise ConfigError(f"thp must be a dict of task hparams, got {type(thp).__name__}")
    hp: dict[str, Any] = {}
    for f in hparam_fields(tcfg):
        v = f.default if thp is None else thp.get(f.name, f.default)
        if _is_concrete(v):
            _, problem = f.check_value(v)
            if problem is not None:
                raise ConfigError(f"task hparam {f.name!r} {problem}")
        hp[f.name] = v
    return hp


# ----------------------------------------------------------------------------------------------
# randomness: one flat Gaussian draw per key (XLA:CPU compile time grows with each separate draw
# and is several times larger for a rank-3 draw than for a flat one)

def _draw(key: Array, shapes: dict[str, tuple[int, ...]], dtype: Any) -> dict[str, Array]:
    """Independent N(0, 1) arrays of the given shapes, all sliced from one flat draw of ``key``."""
    sizes = [math.prod(s) for s in shapes.values()]
    flat = jax.random.normal(key, (sum(sizes),), dtype)
    out, i = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes):
        out[name] = flat[i:i + size].reshape(shape)
        i += size
    return out


def _unit(g: Array) -> Array:
    """Gaussian vectors (last axis) -> uniform on the unit sphere."""
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# inputs

def _min_pair_distance(v_ND: Array, block: int = 512) -> Array:
    """min_{i != j} ||v_i - v_j|| for unit rows v (n, e), in row blocks (memory O(block * n))."""
    n = v_ND.shape[0]
    if n < 2:
        return jnp.asarray(2.0, v_ND.dtype)  # no pairs: the largest distance of unit vectors
    cols = jnp.arange(n)

    def max_dot(r_B: Array) -> Array:
        G = v_ND[jnp.minimum(r_B, n - 1)] @ v_ND.T
        off = (r_B[:, None] != cols[None, :]) & (r_B[:, None] < n)
        return jnp.max(jnp.where(off, G, -jnp.inf))

    if n <= block:
        dot = max_dot(cols)
    else:
        nb = -(-n // block)
        dot = jnp.max(jax.lax.map(max_dot, jnp.arange(nb * block).reshape(nb, block)))
    return jnp.sqrt(jnp.maximum(2.0 - 2.0 * dot, 0.0))


def _sphere_shapes(tcfg: TaskConfig, n: int) -> dict[str, tuple[int, ...]]:
    """The default input draws: one Gaussian per token."""
    return {"z": (n, tcfg.length, tcfg.input_dim)}


def _sphere_inputs(tcfg: TaskConfig, g: dict[str, Array], hp: dict, dtype: Any) -> Array:
    """The default inputs: tokens of norm eps_x, uniform on the sphere of R^d."""
    return jnp.asarray(hp["eps_x"], dtype) * _unit(g["z"])


def _random_labels_shapes(tcfg: TaskConfig, n: int) -> dict[str, tuple[int, ...]]:
    T, d = tcfg.length, tcfg.input_dim
    return {"v": (n, d - 2), "z": (n, T - 1, d)}


def _random_labels_inputs(tcfg: TaskConfig, g: dict[str, Array], hp: dict, dtype: Any) -> Array:
    """delta-separated first tokens (module docstring), then tokens of norm eps_x."""
    eps = jnp.asarray(hp["eps_x"], dtype)
    r = 1.0 / math.sqrt(2.0)
    v = _unit(g["v"])
    n = v.shape[0]
    s_min = _min_pair_distance(v)
    delta = jnp.asarray(hp["delta"], dtype)
    safe = jnp.where(s_min > 0, s_min, 1.0)
    sin_th = jnp.where(s_min > 0, jnp.minimum(1.0, math.sqrt(2.0) * delta / safe), 1.0)
    cos_th = jnp.sqrt(jnp.maximum(1.0 - sin_th * sin_th, 0.0))
    ones = jnp.ones((n, 1), dtype)
    x1 = jnp.concatenate([(r * cos_th) * ones, (r * sin_th) * v, r * ones], axis=-1)
    return jnp.concatenate([x1[:, None, :], eps * _unit(g["z"])], axis=1)


def _concept_tokens(g: Array, eps: Any, dtype: Any) -> Array:
    """Tokens z of norm eps in the first d-1 coordinates (last coordinate 0) from Gaussians g
    (..., d-1): (..., d)."""
    return jnp.concatenate([jnp.asarray(eps, dtype) * _unit(g), jnp.zeros(g.shape[:-1] + (1,), dtype)],
                           axis=-1)


def _concept_shapes(tcfg: TaskConfig, n: int) -> dict[str, tuple[int, ...]]:
    return {"z": (n, tcfg.length - 1, tcfg.input_dim - 1)}


def _concept_inputs(tcfg: TaskConfig, g: dict[str, Array], hp: dict, dtype: Any) -> Array:
    """The common first token (e_1 + e_d)/sqrt2, then concept tokens of norm eps_x."""
    eps = jnp.asarray(hp["eps_x"], dtype)
    r = 1.0 / math.sqrt(2.0)
    z = _concept_tokens(g["z"], eps, dtype)
    n, d = z.shape[0], tcfg.input_dim
    x1 = jnp.zeros((d,), dtype).at[0].set(r).at[d - 1].set(r)
    return jnp.concatenate([jnp.broadcast_to(x1, (n, 1, d)), z], axis=1)


def _input_shapes(tcfg: TaskConfig, n: int) -> dict[str, tuple[int, ...]]:
    """Gaussian draws that n input sequences are built from (the kind's entry, or the default)."""
    tk = TASKS[tcfg.kind]
    return (tk.input_shapes or _sphere_shapes)(tcfg, n)


def _build_inputs(tcfg: TaskConfig, g: dict[str, Array], hp: dict, dtype: Any) -> Array:
    """Input sequences (n, T, d) from the Gaussian draws of :func:`_input_shapes`."""
    tk = TASKS[tcfg.kind]
    return (tk.inputs or _sphere_inputs)(tcfg, g, hp, dtype)


def sample_inputs(tcfg: TaskConfig, key: Array, n: int, thp: dict | None = None,
                  dtype: Any = jnp.float32) -> Array:
    """n fresh input sequences (n, T, d) of the task's input distribution, drawn from ``key``
    (e.g. extra evaluation inputs for :func:`target_values`; jitted, ``n`` static)."""
    return _sample_inputs(tcfg, key, n, _resolve_hparams(tcfg, thp), jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("tcfg", "n", "dtype"))
def _sample_inputs(tcfg: TaskConfig, key: Array, n: int, hp: dict, dtype: Any) -> Array:
    return _build_inputs(tcfg, _draw(key, _input_shapes(tcfg, n), dtype), hp, dtype)


# ----------------------------------------------------------------------------------------------
# target functions

def nvar_offsets(tcfg: TaskConfig) -> tuple[int, ...]:
    """Offsets 0 = o_1 < .. < o_N = span of the N-variable target (static)."""
    N, l0 = tcfg.n_vars, tcfg.span
    if N == 1:
        return (0,)
    return tuple(int(math.floor(j * l0 / (N - 1) + 0.5)) for j in range(N))


def teacher_config(tcfg: TaskConfig) -> model.RNNConfig:
    """The teacher RNN's static config (its sigma_w and sigma_v are set per sample via Scales)."""
    d = tcfg.input_dim
    return model.RNNConfig(width=tcfg.teacher_width, input_dim=d, output_dim=tcfg.output_dim,
                           activation=tcfg.teacher_activation, readout=tcfg.target,
                           sigma_w=1.0, sigma_u=math.sqrt(d), sigma_b=0.0, sigma_v=1.0)


def _rms_scale(y: Array, axis: Any = None) -> Array:
    """1 / sqrt(mean y^2), with 1 where y is identically 0."""
    ms = jnp.mean(y * y, axis=axis)
    return jnp.where(ms > 0, 1.0 / jnp.sqrt(jnp.where(ms > 0, ms, 1.0)), 1.0)


def _teacher_scales(tcfg: TaskConfig, sigma_w: Any, sigma_v: Any, dtype: Any) -> model.Scales:
    d = tcfg.input_dim
    return model.Scales(sigma_w=jnp.asarray(sigma_w, dtype), sigma_u=jnp.asarray(math.sqrt(d), dtype),
                        sigma_b=jnp.asarray(0.0, dtype), sigma_v=jnp.asarray(sigma_v, dtype),
                        width=jnp.asarray(float(tcfg.teacher_width), dtype))


def ntk_teacher_config(tcfg: TaskConfig) -> model.RNNConfig:
    """The ntk_teacher's M units as a diagonal RNN (s_w is set per sample via Scales; b = v = 0)."""
    d = tcfg.input_dim
    return model.RNNConfig(width=tcfg.ntk_units, input_dim=d, output_dim=1,
                           activation=tcfg.teacher_activation, readout="all", sigma_w=1.0,
                           sigma_u=math.sqrt(d), sigma_b=0.0, sigma_v=1.0, trainable=("W", "U"),
                           recurrence="diagonal")


def ntk_transport(A_KDD: Array, a_KD: Array, theta_MD: Array) -> Array:
    """nu_k(theta_i) = tanh(A_k theta_i / sqrt(D) + a_k) / sqrt(D): (K, M, D), each norm < 1."""
    D = theta_MD.shape[-1]
    z = jnp.einsum("kde,me->kmd", A_KDD, theta_MD) / math.sqrt(D) + a_KD[:, None, :]
    return jnp.tanh(z) / math.sqrt(D)


def ntk_teacher_features(tcfg: TaskConfig, tparams: dict, x_NTD: Array) -> Array:
    """Un-normalised ntk_teacher outputs (1/M) sum_i <nu_k(theta_i), grad_theta h_t(x; theta_i)>
    for every t: (n, T, k). One forward-mode product (jax.jvp) of the M-unit diagonal recurrence
    per output, tangent (nu_w, nu_u) = nu_k(theta_i) on unit i (the units are independent)."""
    cfg = ntk_teacher_config(tcfg)
    W, U = tparams["W"], tparams["U"]
    M, d = U.shape
    dtype = U.dtype
    scales = model.Scales(sigma_w=jnp.asarray(tparams["sigma_w"], dtype),
                          sigma_u=jnp.asarray(math.sqrt(d), dtype),
                          sigma_b=jnp.asarray(0.0, dtype), sigma_v=jnp.asarray(1.0, dtype),
                          width=jnp.asarray(float(M), dtype))
    fixed = {"b": jnp.zeros((M,), dtype), "v": jnp.zeros((M, 1), dtype)}

    def states(W_M: Array, U_MD: Array) -> Array:
        return model.hidden_states(cfg, {"W": W_M, "U": U_MD, **fixed}, x_NTD, scales=scales)

    def one_output(nu_MD: Array) -> Array:
        dh_NTM = jax.jvp(states, (W, U), (nu_MD[:, 0], nu_MD[:, 1:]))[1]
        return jnp.mean(dh_NTM, axis=-1)

    return jnp.moveaxis(jax.vmap(one_output)(tparams["nu"]), 0, -1)


@jax.jit
def state_space_states(tparams: dict, x_NTD: Array) -> Array:
    """States s_1..s_T (n, T, r) of s_t = rho s_{t-1} + (1 - rho) tanh(A s_{t-1} + B x_t), s_0 = 0."""
    A, B, rho = tparams["A"], tparams["B"], tparams["rho"]
    n = x_NTD.shape[0]

    def step(s_NR, x_ND):
        s_new = rho * s_NR + (1.0 - rho) * jnp.tanh(s_NR @ A.T + x_ND @ B.T)
        return s_new, s_new

    s0 = jnp.zeros((n, A.shape[0]), x_NTD.dtype)
    _, s_TNR = jax.lax.scan(step, s0, jnp.swapaxes(x_NTD, 0, 1))
    return jnp.swapaxes(s_TNR, 0, 1)


def _concept_terms(tcfg: TaskConfig, tp: dict, z_NLD: Array) -> Array:
    """S_i(z_i) = sum_j a_ij phi_j(<w_ij, z_i>) for z (..., L, d): (..., L, k)."""
    s = jnp.einsum("...ld,ljd->...lj", z_NLD, tp["w"])
    P = jnp.stack([CONCEPT_PHIS[j % len(CONCEPT_PHIS)][1](s[..., j]) for j in range(tcfg.n_terms)],
                  axis=-1)
    return jnp.einsum("...lj,ljk->...lk", P, tp["a"])


# one function per kind and role; the registry TASKS (end of the module) ties them together


def _concept_target_shapes(tcfg: TaskConfig) -> dict[str, tuple[int, ...]]:
    T, d, k, R = tcfg.length, tcfg.input_dim, tcfg.output_dim, tcfg.n_ref
    return {"a": (T - 1, tcfg.n_terms, k), "w": (T - 1, tcfg.n_terms, d), "ref": (R, d - 1)}


def _concept_target_params(tcfg: TaskConfig, kt: Array, g: dict, hp: dict, dtype: Any) -> dict:
    eps = jnp.asarray(hp["eps_x"], dtype)
    tp: dict[str, Any] = {"a": g["a"], "w": g["w"]}
    S_ref = _concept_terms(tcfg, tp, _concept_tokens(g["ref"], eps, dtype)[:, None, :])
    sd = jnp.std(S_ref, axis=0)
    return dict(tp, mu=jnp.mean(S_ref, axis=0), sd=jnp.where(sd > 0, sd, 1.0))


def _concept_target_values(tcfg: TaskConfig, tparams: dict, x_NTD: Array) -> Array:
    Z = (_concept_terms(tcfg, tparams, x_NTD[:, 1:, :]) - tparams["mu"][None]) / tparams["sd"][None]
    L = Z.shape[1]
    if tcfg.target == "last":
        return jnp.sum(Z, axis=1) / math.sqrt(L)
    cum = jnp.cumsum(Z, axis=1) / jnp.sqrt(jnp.arange(1, L + 1, dtype=Z.dtype))[None, :, None]
    return jnp.concatenate([jnp.zeros_like(cum[:, :1, :]), cum], axis=1)


def _additive_target_shapes(tcfg: TaskConfig) -> dict[str, tuple[int, ...]]:
    T, d, k, R = tcfg.length, tcfg.input_dim, tcfg.output_dim, tcfg.n_ref
    return {"beta": (T, d, k), "ref": (R, d)}


def _additive_target_params(tcfg: TaskConfig, kt: Array, g: dict, hp: dict, dtype: Any) -> dict:
    eps = jnp.asarray(hp["eps_x"], dtype)
    F = LINKS[tcfg.link](jnp.einsum("rd,tdk->rtk", eps * _unit(g["ref"]), g["beta"]))
    return {"beta": g["beta"], "var": jnp.mean(F * F, axis=0)}


def _additive_target_values(tcfg: TaskConfig, tparams: dict, x_NTD: Array) -> Array:
    F = LINKS[tcfg.link](jnp.einsum("ntd,tdk->ntk", x_NTD, tparams["beta"]))
    cv = jnp.cumsum(tparams["var"], axis=0)                              # (T, k)
    c = jnp.where(cv > 0, 1.0 / jnp.sqrt(jnp.where(cv > 0, cv, 1.0)), 1.0)
    if tcfg.target == "last":
        return jnp.sum(F, axis=1) * c[None, -1, :]
    return jnp.cumsum(F, axis=1) * c[None]


def _nvar_target_shapes(tcfg: TaskConfig) -> dict[str, tuple[int, ...]]:
    d, k, R = tcfg.input_dim, tcfg.output_dim, tcfg.n_ref
    return {"beta": (tcfg.n_vars, d, k), "ref": (R, tcfg.n_vars, d)}


def _nvar_target_params(tcfg: TaskConfig, kt: Array, g: dict, hp: dict, dtype: Any) -> dict:
    eps = jnp.asarray(hp["eps_x"], dtype)
    beta = g["beta"] / math.sqrt(tcfg.n_vars)
    s = jnp.einsum("rnd,ndk->rk", eps * _unit(g["ref"]), beta)
    return {"beta": beta, "c": _rms_scale(LINKS[tcfg.link](s), axis=0)}


def _nvar_target_values(tcfg: TaskConfig, tparams: dict, x_NTD: Array) -> Array:
    f, l0, beta = LINKS[tcfg.link], tcfg.span, tparams["beta"]
    T = x_NTD.shape[1]
    if tcfg.target == "last":
        s = sum(x_NTD[:, T - 1 - l0 + o, :] @ beta[j] for j, o in enumerate(nvar_offsets(tcfg)))
        return tparams["c"][None, :] * f(s)
    xp = jnp.pad(x_NTD, ((0, 0), (l0, 0), (0, 0)))    # x_{t - l0 + o} = xp[t + o], 0 before 1
    s = sum(jnp.einsum("ntd,dk->ntk", xp[:, o:o + T, :], beta[j])
            for j, o in enumerate(nvar_offsets(tcfg)))
    return tparams["c"][None, None, :] * f(s)


def _lag_target_shapes(tcfg: TaskConfig) -> dict[str, tuple[int, ...]]:
    return {"beta": (tcfg.input_dim, tcfg.output_dim), "ref": (tcfg.n_ref, tcfg.input_dim)}


def _lag_target_params(tcfg: TaskConfig, kt: Array, g: dict, hp: dict, dtype: Any) -> dict:
    eps = jnp.asarray(hp["eps_x"], dtype)
    return {"beta": g["beta"], "lag": jnp.asarray(hp["lag"], dtype),
            "c": _rms_scale(LINKS[tcfg.link](eps * _unit(g["ref"]) @ g["beta"]), axis=0)}


def _lag_target_values(tcfg: TaskConfig, tparams: dict, x_NTD: Array) -> Array:
    T = x_NTD.shape[1]
    idx = jnp.arange(T) - jnp.round(tparams["lag"]).astype(jnp.int32)
    xs = jnp.take(x_NTD, jnp.clip(idx, 0, T - 1), axis=1)
    s = jnp.einsum("ntd,dk->ntk", xs, tparams["beta"])
    g = tparams["c"][None, None, :] * LINKS[tcfg.link](s)
    y = jnp.where((idx >= 0)[None, :, None], g, 0.0)
    return y[:, -1, :] if tcfg.target == "last" else y


def _state_space_target_shapes(tcfg: TaskConfig) -> dict[str, tuple[int, ...]]:
    T, d, k, R, r = tcfg.length, tcfg.input_dim, tcfg.output_dim, tcfg.n_ref, tcfg.state_dim
    return {"G": (r, r), "B": (r, d), "C": (k, r), "ref": (R, T, d)}


def _state_space_target_params(tcfg: TaskConfig, kt: Array, g: dict, hp: dict, dtype: Any) -> dict:
    eps = jnp.asarray(hp["eps_x"], dtype)
    tp = {"A": 0.5 * g["G"] / jnp.linalg.norm(g["G"], ord=2), "B": g["B"],
          "C": g["C"] / math.sqrt(tcfg.state_dim), "rho": jnp.asarray(hp["rho"], dtype)}
    s_ref = state_space_states(tp, eps * _unit(g["ref"]))[:, -1, :]
    return dict(tp, c=_rms_scale(s_ref @ tp["C"].T, axis=0))


def _state_space_target_values(tcfg: TaskConfig, tparams: dict, x_NTD: Array) -> Array:
    s = state_space_states(tparams, x_NTD)
    y = tparams["c"][None, None, :] * jnp.einsum("ntr,kr->ntk", s, tparams["C"])
    return y[:, -1, :] if tcfg.target == "last" else y


def _ref_sequences(tcfg: TaskConfig) -> dict[str, tuple[int, ...]]:
    return {"ref": (tcfg.n_ref, tcfg.length, tcfg.input_dim)}


def _teacher_target_params(tcfg: TaskConfig, kt: Array, g: dict, hp: dict, dtype: Any) -> dict:
    eps = jnp.asarray(hp["eps_x"], dtype)
    cfg = teacher_config(tcfg)
    params = model.init_params(cfg, jax.random.fold_in(kt, 0), dtype)
    scales = _teacher_scales(tcfg, hp["teacher_sigma_w"], 1.0, dtype)
    y_ref = model.apply(cfg, params, eps * _unit(g["ref"]), scales=scales)
    if tcfg.target == "all":
        y_ref = y_ref[:, -1, :]
    return {"params": params,
            "scales": _teacher_scales(tcfg, hp["teacher_sigma_w"], _rms_scale(y_ref), dtype)}


def _teacher_target_values(tcfg: TaskConfig, tparams: dict, x_NTD: Array) -> Array:
    return model.apply(teacher_config(tcfg), tparams["params"], x_NTD, scales=tparams["scales"])


def _ntk_teacher_target_shapes(tcfg: TaskConfig) -> dict[str, tuple[int, ...]]:
    T, d, k, R = tcfg.length, tcfg.input_dim, tcfg.output_dim, tcfg.n_ref
    M, D = tcfg.ntk_units, d + 1
    return {"W": (M,), "U": (M, d), "A": (k, D, D), "a": (k, D), "ref": (R, T, d)}


def _ntk_teacher_target_params(tcfg: TaskConfig, kt: Array, g: dict, hp: dict, dtype: Any) -> dict:
    eps = jnp.asarray(hp["eps_x"], dtype)
    theta = jnp.concatenate([g["W"][:, None], g["U"]], axis=1)
    nu = ntk_transport(g["A"], g["a"], theta)
    tp = {"W": g["W"], "U": g["U"], "A": g["A"], "a": g["a"], "nu": nu,
          "sigma_w": jnp.asarray(hp["teacher_sigma_w"], dtype)}
    c = _rms_scale(ntk_teacher_features(tcfg, tp, eps * _unit(g["ref"]))[:, -1, :], axis=0)
    return dict(tp, c=c, transport_bound=c * jnp.max(jnp.linalg.norm(nu, axis=-1), axis=-1))


def _ntk_teacher_target_values(tcfg: TaskConfig, tparams: dict, x_NTD: Array) -> Array:
    y = tparams["c"][None, None, :] * ntk_teacher_features(tcfg, tparams, x_NTD)
    return y[:, -1, :] if tcfg.target == "last" else y


def _target_kind(tcfg: TaskConfig) -> TaskKind:
    tk = TASKS[tcfg.kind]
    if tk.target_shapes is None:
        raise ConfigError(f"kind {tcfg.kind!r} has no target function (its labels are iid noise)")
    return tk


def target_params(tcfg: TaskConfig, key: Array, thp: dict | None = None,
                  dtype: Any = jnp.float32) -> dict[str, Any]:
    """The target function of the task with key ``key``: a pytree.

    Drawn from kt = fold_in(key, 2): weights and reference sample from fold_in(kt, 1), the
    teacher's parameters from ``init_params(teacher_config(tcfg), fold_in(kt, 0))``.
    concept: a (T-1, p, k), w (T-1, p, d), mu, sd (T-1, k).  wang_additive: beta (T, d, k),
    var (T, k) = E f(beta_t^T x)^2.  wang_nvar: beta (N, d, k), c (k,).  lag: beta (d, k), c (k,),
    lag.  state_space: A (r, r), B (r, d), C (k, r), rho, c (k,).  teacher: params (the teacher's
    groups), scales (:class:`rnn_ntk.model.Scales`).  ntk_teacher: W (M,), U (M, d) (the units
    theta_i = (W_i, U_i)), A (k, D, D), a (k, D), nu (k, M, D) = nu_k(theta_i), sigma_w, c (k,),
    transport_bound (k,) = c_k max_i ||nu_k(theta_i)||.  random_labels has no target function.
    """
    _target_kind(tcfg)
    return _target_params(tcfg, key, _resolve_hparams(tcfg, thp), jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("tcfg", "dtype"))
def _target_params(tcfg: TaskConfig, key: Array, hp: dict, dtype: Any) -> dict[str, Any]:
    tk = _target_kind(tcfg)
    kt = jax.random.fold_in(key, 2)
    g = _draw(jax.random.fold_in(kt, 1), tk.target_shapes(tcfg), dtype)
    return tk.target_params(tcfg, kt, g, hp, dtype)


@functools.partial(jax.jit, static_argnames=("tcfg",))
def target_values(tcfg: TaskConfig, tparams: dict, x_NTD: Array) -> Array:
    """Noiseless targets of any inputs x (n, T, d): (n, k) for 'last', (n, T, k) for 'all'.

    See the module docstring for each kind's formula; ``tparams`` is from :func:`target_params`.
    """
    return _target_kind(tcfg).target_values(tcfg, tparams, x_NTD)


# ----------------------------------------------------------------------------------------------
# sampling

def _split(tcfg: TaskConfig, key: Array, n: int, hp: dict, tparams: Any, dtype: Any,
           train: bool) -> tuple[Array, Array]:
    """One data set from one Gaussian draw of ``key``: inputs, iid labels (kinds without a target
    function), label noise."""
    y_shape = (n, tcfg.length, tcfg.output_dim) if tcfg.target == "all" else (n, tcfg.output_dim)
    shapes = dict(_input_shapes(tcfg, n))
    iid_labels = TASKS[tcfg.kind].target_shapes is None
    if iid_labels:
        shapes["labels"] = y_shape
    if train:
        shapes["noise"] = y_shape
    g = _draw(key, shapes, dtype)
    x = _build_inputs(tcfg, g, hp, dtype)
    y = g["labels"] if iid_labels else target_values(tcfg, tparams, x)
    if train:
        y = y + jnp.asarray(hp["label_noise"], dtype) * g["noise"]
    return x, y


def sample_task(tcfg: TaskConfig, key: Array, thp: dict | None = None,
                dtype: Any = jnp.float32) -> Data:
    """Draw a task: train from fold_in(key, 0), test from fold_in(key, 1), target from fold_in(key, 2).

    ``thp``: the task's numeric parameters (missing ones take :func:`default_task_hparams`; other
    keys are ignored); they may be traced, so jit and vmap over (key, thp) work, and a new value
    never recompiles (the work itself is jitted with ``tcfg`` and ``dtype`` static, so eager calls
    are compiled once per config too). Concrete values are range-checked first (ConfigError).
    Label noise N(0, label_noise^2) is added to the train labels only. Arrays have dtype
    ``dtype`` (default float32).
    """
    hp = _resolve_hparams(tcfg, thp)
    return _sample_task(tcfg, key, hp, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("tcfg", "dtype"))
def _sample_task(tcfg: TaskConfig, key: Array, hp: dict, dtype: Any) -> Data:
    iid_labels = TASKS[tcfg.kind].target_shapes is None
    tparams = None if iid_labels else _target_params(tcfg, key, hp, dtype)
    x_tr, y_tr = _split(tcfg, jax.random.fold_in(key, 0), tcfg.n_train, hp, tparams, dtype, True)
    x_te, y_te = _split(tcfg, jax.random.fold_in(key, 1), tcfg.n_test, hp, tparams, dtype, False)
    return Data(x_tr, y_tr, x_te, y_te)


# ----------------------------------------------------------------------------------------------
# diagnostics

def _np_min_pair_distance(x_ND: np.ndarray, block: int = 1024) -> float:
    n = x_ND.shape[0]
    if n < 2:
        return float("inf")
    sq = np.sum(x_ND * x_ND, axis=1)
    best = np.inf
    for i0 in range(0, n, block):
        xb = x_ND[i0:i0 + block]
        D2 = sq[i0:i0 + block, None] + sq[None, :] - 2.0 * xb @ x_ND.T
        idx = np.arange(i0, i0 + xb.shape[0])
        D2[np.arange(xb.shape[0]), idx] = np.inf
        j = np.argmin(D2, axis=1)
        # recompute the nearest pairs directly (the Gram form loses digits for close points)
        d = np.linalg.norm(xb - x_ND[j], axis=1)
        best = min(best, float(np.min(d)))
    return best


def task_stats(tcfg: TaskConfig, data: Data) -> dict[str, float]:
    """Diagnostics of a sampled task (not jittable; numpy float64 on the host).

    token_norm_max / token_norm_mean: over tokens t >= 2.  first_token_*: norms, last coordinate
    and (random_labels, concept) the measured min pairwise separation ``delta_train`` /
    ``delta_test`` of first tokens.  y_*_mean / y_*_var: over all label entries; for target 'all'
    also y_*_var_last (position T).
    """
    out: dict[str, float] = {}
    x_tr = np.asarray(data.x_train, np.float64)
    x_te = np.asarray(data.x_test, np.float64)
    xs = np.concatenate([x_tr, x_te], axis=0)
    norms = np.linalg.norm(xs, axis=-1)
    if xs.shape[1] > 1:
        out["token_norm_max"] = float(norms[:, 1:].max())
        out["token_norm_mean"] = float(norms[:, 1:].mean())
    out["first_token_norm_min"] = float(norms[:, 0].min())
    out["first_token_norm_max"] = float(norms[:, 0].max())
    out["first_token_last_coord_min"] = float(xs[:, 0, -1].min())
    out["first_token_last_coord_max"] = float(xs[:, 0, -1].max())
    out["delta_train"] = _np_min_pair_distance(x_tr[:, 0, :])
    out["delta_test"] = _np_min_pair_distance(x_te[:, 0, :])
    for name, y in (("y_train", data.y_train), ("y_test", data.y_test)):
        y = np.asarray(y, np.float64)
        out[f"{name}_mean"] = float(y.mean())
        out[f"{name}_var"] = float(y.var())
        if tcfg.target == "all":
            out[f"{name}_var_last"] = float(y[:, -1, :].var())
    return out


# ----------------------------------------------------------------------------------------------
# the registry: one entry per kind (a new kind is one more entry; see TaskKind)

def _check_random_labels(t: TaskConfig) -> str | None:
    if t.input_dim < 3:
        return (f"input_dim must be >= 3 for kind 'random_labels' (first tokens need room to be "
                f"separated), got {t.input_dim}")
    return None


def _check_concept(t: TaskConfig) -> str | None:
    if t.input_dim < 2:
        return f"input_dim must be >= 2 for kind 'concept', got {t.input_dim}"
    if t.length < 2:
        return f"length must be >= 2 for kind 'concept', got {t.length}"
    return None


def _check_nvar(t: TaskConfig) -> str | None:
    if t.span < t.n_vars - 1:
        return f"span must be >= n_vars - 1 = {t.n_vars - 1} (distinct positions), got {t.span}"
    if t.span > t.length - 1:
        return f"span must be <= length - 1 = {t.length - 1}, got {t.span}"
    return None


def _lag_hparams(t: TaskConfig | None) -> Fields:
    """lag: k of y_t = g(x_{t-k}); an integer <= T-1 (target 'last') or <= T (target 'all')."""
    if t is None:
        return (schema.Field("lag", 2.0, schema.number(
            lambda a: (a >= 0) & (a == np.round(a)), "an integer >= 0"), "lag k", traced=True),)
    hi = t.length - 1 if t.target == "last" else t.length
    return (schema.Field("lag", float(min(2, t.length - 1)), schema.number(
        lambda a: (a >= 0) & (a <= hi) & (a == np.round(a)), f"an integer in [0, {hi}]"),
        "lag k", traced=True),)


_DELTA = schema.Field("delta", 0.1, schema.number(schema.between(0.0, math.sqrt(2.0)),
                                                  "in [0, sqrt(2)]"),
                      "requested first-token separation", traced=True)
_RHO = schema.Field("rho", 0.9, schema.number(schema.between(0.0, 1.0, hi_open=True), "in [0, 1)"),
                    "memory decay", traced=True)
_TEACHER_SW = _nonneg("teacher_sigma_w", 1.0, "recurrent multiplier of the teacher")

TASKS: dict[str, TaskKind] = {
    "random_labels": TaskKind(
        hparams=(_EPS_UNIT, _DELTA), input_shapes=_random_labels_shapes,
        inputs=_random_labels_inputs, check=_check_random_labels),
    "concept": TaskKind(
        hparams=(_EPS_UNIT,), options=("n_terms", "n_ref"), input_shapes=_concept_shapes,
        inputs=_concept_inputs, target_shapes=_concept_target_shapes,
        target_params=_concept_target_params, target_values=_concept_target_values,
        check=_check_concept),
    "wang_additive": TaskKind(
        options=("link", "n_ref"), target_shapes=_additive_target_shapes,
        target_params=_additive_target_params, target_values=_additive_target_values),
    "wang_nvar": TaskKind(
        options=("n_vars", "span", "link", "n_ref"), target_shapes=_nvar_target_shapes,
        target_params=_nvar_target_params, target_values=_nvar_target_values, check=_check_nvar),
    "lag": TaskKind(
        hparams=_lag_hparams, options=("link", "n_ref"), target_shapes=_lag_target_shapes,
        target_params=_lag_target_params, target_values=_lag_target_values),
    "state_space": TaskKind(
        hparams=(_RHO,), options=("state_dim", "n_ref"), target_shapes=_state_space_target_shapes,
        target_params=_state_space_target_params, target_values=_state_space_target_values),
    "teacher": TaskKind(
        hparams=(_TEACHER_SW,), options=("teacher_width", "teacher_activation", "n_ref"),
        target_shapes=_ref_sequences, target_params=_teacher_target_params,
        target_values=_teacher_target_values),
    "ntk_teacher": TaskKind(
        hparams=(_TEACHER_SW,), options=("teacher_activation", "ntk_units", "n_ref"),
        target_shapes=_ntk_teacher_target_shapes, target_params=_ntk_teacher_target_params,
        target_values=_ntk_teacher_target_values),
}
TASK_KINDS = tuple(TASKS)   # the built-in kinds, in registry order
