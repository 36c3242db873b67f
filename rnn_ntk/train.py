"""The training program: one run is one pure function of (key, hparams) for a static TrainConfig.

    train = make_train(cfg)                 # cfg: TrainConfig (static structure)
    records = train(key, hparams)           # hparams: dict of traced scalars (never recompiles)
    records = rnn_ntk.lanes.train_many(cfg, keys_R, hparams_R)   # R runs, leading run axis R

A run (``make_train``):
  1. ``params0 = init_params(fold_in(key, 0))`` ('gaussian'; or 'symmetric', see
     :func:`symmetric_params`), zero-padded to ``array_width`` and run at its true width
     ``hparams['width']`` (traced), so a width ladder packs into one compiled program.
  2. ``data = tasks.sample_task(cfg.task, fold_in(key, 1), task hparams)``.
  3. ``steps`` optimiser steps (optax 'sgd', 'momentum' (heavy ball) or 'adam', whose lr and
     momentum (adam: b1) are injected hyperparameters, i.e. traced) on the trainable groups only
     (the others are constants of the loss, so they get no update at all); minibatches, if any,
     come from a per-epoch permutation drawn from ``fold_in(key, 2)``. The steps run as a
     ``lax.scan`` over logs whose body runs the log's ``log_every`` steps (an inner ``lax.scan``;
     none for log 0) and then evaluates the records.
  4. Records at step 0 and after every ``log_every`` steps (leading axis
     ``n_logs = steps // log_every + 1``), see :func:`record_names`.

Losses, with residual r = f(x) - y:
  'mean':       mean of r^2 over examples, positions and outputs (no factor 1/2);
  'sum_from_2': (1/2) sum_i sum_{t >= 2} ||r_{i,t}||^2 (target 'all'), the loss of Allen-Zhu, Li &
                Song, summed over the examples of the batch, so that their GD step size converts
                with :func:`rnn_ntk.model.paper_lr_to_ntk`.
``position_weights`` (target 'all'; one weight w_t >= 0 per position) multiply each position's
squared residual in either loss, e.g. a step scaled per output position (w_t ~ 1 / the NTK's
diagonal at position t). ``center``: the centred model f(theta; x) - f(theta_0; x) (the initial
output removed, as in Chizat, Oyallon & Bach 2019) is trained and recorded, implemented exactly as
the network fitting the shifted targets y + f(theta_0; x) (train and test sets; the linearised
model likewise); gap records and the ||y|| normalisers are those of the task's own targets.
A minibatch of size b draws a fresh permutation of the n training examples each epoch and walks it
in ceil(n / b) batches; when b does not divide n the last batch of an epoch holds the n mod b
remaining examples (padded to b with weight-0 entries), so every example is visited exactly once
per epoch. train_loss / test_loss / grad_norm are always full-set values.

Divergence: if at some step the loss or the updated parameters are not finite, the run's
parameters (and optimiser state) are frozen at the parameters where that happened and
``diverged`` is True from the next log on. Metrics after divergence are evaluated at the frozen
parameters (so they repeat, and train_loss is typically inf or NaN); they are never NaN-filled.
The linearised model, when trained, is frozen independently (``lin_diverged``). Runs are
independent: a diverged lane never touches another lane.

The program (``make_train``) is a ``lax.scan`` over logs of top-level pure functions: the state
carried from step to step is a named :class:`RunState` (``net`` and ``lin``, each a
:class:`ModelState` (theta, optimiser state, diverged), and the epoch order ``perm``); the run's
constants (initial parameters, data, optimiser, reference pattern and kernel) are a
:class:`RunContext` built once per run by :func:`run_context`; :func:`train_step` is one
optimiser step, :func:`run_log_steps` the steps of one log and :func:`evaluate` a log's records.
``make_train(cfg, on_log=hook)`` traces a generic per-log hook into the program (the progress
reports of :mod:`rnn_ntk.progress`); the default program has none.

Many runs as lanes of one program, over devices (``train_many``, ``Layout``, ``choose_layout``,
``run_key(s)``, ``release_compiled``) live in :mod:`rnn_ntk.lanes`; step progress
(``progress_listener``, ``progress_hook``) in :mod:`rnn_ntk.progress`. Their old names stay
importable from here (``rnn_ntk.train.train_many`` ...) through a lazy module ``__getattr__``.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_ntk import schema, tasks
from rnn_ntk.linearize import linearize
from rnn_ntk.model import (GROUPS, ConfigError, Params, RNNConfig, Scales, apply, forward,
                           init_params, readout)
from rnn_ntk.precision import MATMUL_PRECISIONS, highest_precision, with_matmul_precision
from rnn_ntk.sweep.cost import run_bytes

Array = jax.Array

__all__ = ["ADAM_B2", "DEFAULT_LR", "DEFAULT_MOMENTUM", "DTYPES", "INITS", "LOSSES",
           "MODEL_HPARAMS", "OPTIMIZERS", "LogHook", "ModelState", "RunContext", "RunSetup",
           "RunState", "TrainConfig", "batch_indices", "batch_slice", "default_hparams",
           "epoch_permutation", "evaluate", "hparam_scales", "initial_state", "loss_value",
           "make_train", "model_step", "predict", "project", "record_names", "run_bytes",
           "run_context", "run_log_steps", "run_state_shape", "segment_logs", "segment_starts",
           "make_segment", "setup_run", "symmetric_params", "train_step"]

OPTIMIZERS = ("sgd", "momentum", "adam")
LOSSES = ("mean", "sum_from_2")
DTYPES = ("float32", "float64")
INITS = ("gaussian", "symmetric")
MODEL_HPARAMS = ("lr", "momentum", "sigma_w", "sigma_u", "sigma_b", "sigma_v", "width",
                 "proj_radius")
DEFAULT_LR = 0.1
DEFAULT_MOMENTUM = 0.9
ADAM_B2 = 0.999


def _position_weights(v: Any) -> tuple[float, ...] | None:
    """None (every position weight 1), or a non-empty list of finite weights >= 0, not all 0."""
    if v is None:
        return None
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, np.ndarray)):
        raise schema.Invalid(f"must be a list of per-position weights, got {v!r}")
    if not all(isinstance(w, (int, float, np.integer, np.floating)) and not isinstance(w, bool)
               for w in v):
        raise schema.Invalid(f"must be a list of numbers, got {list(v)!r}")
    w = tuple(float(x) for x in v)
    if not w or not all(math.isfinite(x) and x >= 0 for x in w) or not any(x > 0 for x in w):
        raise schema.Invalid(f"must be finite weights >= 0, not all 0, got {list(w)}")
    return w


def _instance(cls: type, what: str) -> schema.Check:
    def check(v: Any) -> Any:
        if not isinstance(v, cls):
            raise schema.Invalid(f"must be {what}, got {type(v).__name__}")
        return v
    return check


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static structure of a training run (one compiled program); validated on construction.

    model: RNNConfig.  task: tasks.TaskConfig (input/output dims must match the model's; readout
    'all' <-> target 'all').  steps: optimiser steps, a multiple of log_every (0 = evaluate the
    initialisation only).  log_every: steps between records.  batch_size: None (or "full") =
    full-batch GD, else minibatch SGD of that size (<= task.n_train), reshuffled every epoch.
    optimizer: 'sgd', 'momentum' (heavy ball) or 'adam' (b1 = hparams['momentum']).  loss: 'mean'
    or 'sum_from_2' (needs target 'all' and T >= 2).  dtype: 'float32' or 'float64'.
    array_width: None or the padded array width (>= model.width); the true width is
    hparams['width'].  save_params: also return the final parameters.  init: 'gaussian' or
    'symmetric' (even width; initial output exactly 0).  projection: after every step project each
    unit's trainable incoming weights (its rows of W, U and b jointly) onto the ball of radius
    hparams['proj_radius']/sqrt(width) around their initial values.  linearized: train the
    linearised model side by side.  kernel_stride: every kernel_stride logs record the relative
    change of the empirical NTK on the first n_probe test inputs (0 = off).  n_probe: probe inputs
    for the kernel (<= n_test).  matmul_precision: precision of the run's matrix products
    (rnn_ntk.precision.MATMUL_PRECISIONS): 'highest' (full float32 on every backend), or
    'tensorfloat32' / 'default' (TF32 on Ampere/Hopper GPUs: faster, ~3 fewer digits); the
    kernel-drift metric is always 'highest'.  checkpoint_every: K > 0 runs a checkpointed run
    (``train_many(..., checkpoint=...)``) as segments of ceil(K / log_every) logs, saving the lane
    states between segments (:func:`segment_logs`); 0 (the default), or K >= steps, is one
    program. The records never depend on it.  position_weights: None, or one weight per
    position (length task.length, target 'all') multiplying that position's squared residuals in
    the loss.  center: train the centred model f(theta) - f(theta_0) (see the module docstring).
    Fields are declared once with their checks (``schema.fields_of(TrainConfig)``); the traced
    hyper-parameters of a run are :func:`hparam_fields`.
    """

    model: RNNConfig = schema.field(check=_instance(RNNConfig, "an RNNConfig"), spec=False,
                                    doc="the network")
    task: Any = schema.field(check=_instance(tasks.TaskConfig, "a tasks.TaskConfig"), spec=False,
                             doc="the task (tasks.TaskConfig)")
    steps: int = schema.field(check=schema.integer(0), doc="optimiser steps")
    log_every: int = schema.field(1, check=schema.integer(1), doc="steps between records")
    batch_size: int | None = schema.field(None, check=schema.optional_integer(1),
                                          doc='minibatch size, None or "full" = full batch')
    optimizer: str = schema.field("sgd", choices=OPTIMIZERS, doc="optax optimiser")
    loss: str = schema.field("mean", choices=LOSSES, doc="training loss")
    dtype: str = schema.field("float32", choices=DTYPES, doc="floating dtype of the run")
    array_width: int | None = schema.field(None, check=schema.optional_integer(1, words=()),
                                           spec=False, doc="padded array width (packed widths)")
    save_params: bool = schema.field(False, check=schema.boolean(), doc="return final params")
    init: str = schema.field("gaussian", choices=INITS, doc="initialisation")
    projection: bool = schema.field(False, check=schema.boolean(), doc="project onto the ball")
    linearized: bool = schema.field(False, check=schema.boolean(), doc="train f_lin too")
    kernel_stride: int = schema.field(0, check=schema.integer(0), doc="logs between NTK records")
    n_probe: int = schema.field(32, check=schema.integer(1), doc="probe inputs of the NTK record")
    matmul_precision: str = schema.field("highest", choices=MATMUL_PRECISIONS,
                                         doc="precision of the run's matrix products")
    checkpoint_every: int = schema.field(0, check=schema.integer(0),
                                         doc="steps between mid-run checkpoints of a sweep chunk "
                                             "(0 = off); never changes the records")
    position_weights: tuple[float, ...] | None = schema.field(
        None, check=_position_weights, sequence=True,
        doc="per-position loss weights (target 'all'), None = all 1")
    center: bool = schema.field(False, check=schema.boolean(),
                                doc="train the centred model f(theta) - f(theta_0)")

    def __post_init__(self) -> None:
        schema.check_config(self)
        m, t = self.model, self.task
        if t.input_dim != m.input_dim:
            raise ConfigError(f"task: input_dim {t.input_dim} does not match model.input_dim "
                              f"{m.input_dim}")
        if t.output_dim != m.output_dim:
            raise ConfigError(f"task: output_dim {t.output_dim} does not match model.output_dim "
                              f"{m.output_dim}")
        if (m.readout == "all") != (t.target == "all"):
            raise ConfigError(f"task: target {t.target!r} does not fit model.readout "
                              f"{m.readout!r} ('all' readout needs target 'all' and vice versa)")
        if self.steps % self.log_every:
            raise ConfigError(f"steps ({self.steps}) must be a multiple of log_every "
                              f"({self.log_every})")
        if self.batch_size is not None and self.batch_size > t.n_train:
            raise ConfigError(f"batch_size ({self.batch_size}) must be <= task.n_train "
                              f"({t.n_train}), or None for full-batch GD")
        if self.loss == "sum_from_2" and (t.target != "all" or t.length < 2):
            raise ConfigError("loss 'sum_from_2' needs task target 'all' and length >= 2")
        if self.position_weights is not None and (t.target != "all"
                                                  or len(self.position_weights) != t.length):
            raise ConfigError(f"position_weights: needs task target 'all' and one weight per "
                              f"position ({t.length}), got {len(self.position_weights)} weights "
                              f"with target {t.target!r}")
        if self.array_width is not None and self.array_width < m.width:
            raise ConfigError(f"array_width: must be >= model.width ({m.width}), got "
                              f"{self.array_width}")
        if self.init == "symmetric" and m.width % 2:
            raise ConfigError(f"init 'symmetric' needs an even model.width, got {m.width}")
        if self.projection and not set(m.trainable) & {"W", "U", "b"}:
            raise ConfigError("projection needs at least one of W, U, b trainable (it acts on "
                              "each unit's incoming weights)")
        if self.kernel_stride and self.n_probe > t.n_test:
            raise ConfigError(f"n_probe ({self.n_probe}) must be <= task.n_test ({t.n_test})")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def n_logs(self) -> int:
        return self.steps // self.log_every + 1

    @property
    def width_array(self) -> int:
        """The array width M of the parameters (array_width, or model.width)."""
        return self.model.width if self.array_width is None else self.array_width

    @property
    def jnp_dtype(self) -> Any:
        return jnp.float32 if self.dtype == "float32" else jnp.float64


TRAIN_HPARAMS: tuple[schema.Field, ...] = (
    schema.Field("lr", DEFAULT_LR, schema.number(lambda a: np.isfinite(a) & (a > 0), finite=False,
                                                 text="learning rate must be finite and > 0"),
                 "learning rate", traced=True),
    schema.Field("momentum", DEFAULT_MOMENTUM,
                 schema.number(schema.between(0.0, 1.0, hi_open=True), "in [0, 1)"),
                 "heavy-ball beta ('momentum'), adam's b1; unused by sgd", traced=True),
    schema.Field("proj_radius", math.inf,
                 schema.number(lambda a: a > 0, finite=False,
                               text="must be > 0 (inf = no projection)"),
                 "projection radius rho (ball rho/sqrt(width))", traced=True),
)
"""The optimiser's traced hyper-parameters (config-independent defaults and checks)."""


def hparam_fields(cfg: TrainConfig) -> tuple[schema.Field, ...]:
    """The traced hyper-parameters of a run, each declared once with its default and check.

    lr, momentum, proj_radius (:data:`TRAIN_HPARAMS`); sigma_w/u/b/v (the traced fields of
    RNNConfig, defaults from cfg.model); width (the true width, default cfg.model.width, an integer
    in [1, array width]); the task's parameters (:func:`rnn_ntk.tasks.hparam_fields`).
    """
    return _hparam_fields(cfg, tasks.TASKS[cfg.task.kind])


@functools.lru_cache(maxsize=256)
def _hparam_fields(cfg: TrainConfig, kind: tasks.TaskKind) -> tuple[schema.Field, ...]:
    # cached per config and registry entry of its task kind
    m, M = cfg.model, cfg.width_array
    own = {f.name: f for f in TRAIN_HPARAMS}
    own.update({f.name: f.replace(default=float(getattr(m, f.name)))
                for f in schema.fields_of(RNNConfig) if f.traced})
    own["width"] = schema.Field(
        "width", float(m.width),
        schema.number(lambda a: (a >= 1) & (a <= M) & (a == np.round(a)),
                      f"an integer in [1, {M}] (the array width)"),
        "true width m of the run", traced=True)
    task_f = tasks.hparam_fields(cfg.task)
    clash = sorted(set(own) & {f.name for f in task_f})
    if clash:
        raise ConfigError(f"task: hyperparameter name(s) {clash} clash with the model's")
    return tuple(own[n] for n in MODEL_HPARAMS) + task_f


def default_hparams(cfg: TrainConfig) -> dict[str, float]:
    """The traced hyperparameters of a run and their defaults (see :func:`hparam_fields`).

    lr, momentum (momentum optimizer's beta; adam's b1; unused by sgd), sigma_w/u/b/v (from
    cfg.model), width (true width, cfg.model.width), proj_radius (inf), and the task's numeric
    parameters (tasks.default_task_hparams).
    """
    return {f.name: float(f.default) for f in hparam_fields(cfg)}


def check_hparams(cfg: TrainConfig, hparams: dict[str, Any]) -> None:
    """Check the concrete values of ``hparams`` (scalars or arrays with any leading run axes)
    with the declared checks (:func:`hparam_fields`: lr > 0, 0 <= momentum < 1, width an integer
    <= the array width, task ranges, ...); raise the first problem as a one-line ConfigError
    ``"hparams['lr']: ..."`` naming the first bad entry. Traced values and unknown names are
    skipped (the normaliser reports unknown names)."""
    if not isinstance(hparams, Mapping):
        raise ConfigError(f"hparams must be a dict of hyperparameters, got {type(hparams).__name__}")
    fields = {f.name: f for f in hparam_fields(cfg)}
    for name, v in hparams.items():
        if name not in fields or isinstance(v, jax.core.Tracer):
            continue
        _, problem = fields[name].check_value(v)
        if problem is not None:
            raise ConfigError(f"hparams[{name!r}]: {problem}")


def record_names(cfg: TrainConfig) -> tuple[str, ...]:
    """Names of the per-log records of a run (each of leading length cfg.n_logs).

    train_loss, test_loss, dtheta_W/U/b/v (||theta_t - theta_0|| per group, 0 for frozen groups),
    grad_norm (full-batch gradient over the trainable groups), sign_flip (fraction of the
    activation-pattern entries 1[g > 0] on the training set, counted over the true width, that
    differ from the initial pattern), diverged (bool). With linearized: lin_train_loss,
    lin_test_loss, gap_train = ||f_net - f_lin|| on the training set, gap_train_rel = gap_train /
    ||y_train||, gap_probe and gap_probe_rel on the test set, lin_dtheta_<G>, lin_diverged. With
    kernel_stride: ntk_change = ||K_t - K_0||_F / ||K_0||_F (NaN at logs not on the stride).
    """
    names = ["train_loss", "test_loss"] + [f"dtheta_{g}" for g in GROUPS] + [
        "grad_norm", "sign_flip", "diverged"]
    if cfg.linearized:
        names += ["lin_train_loss", "lin_test_loss", "gap_train", "gap_train_rel", "gap_probe",
                  "gap_probe_rel"] + [f"lin_dtheta_{g}" for g in GROUPS] + ["lin_diverged"]
    if cfg.kernel_stride:
        names.append("ntk_change")
    return tuple(names)


def _complete_hparams(cfg: TrainConfig, hparams: dict[str, Any], runs: int | None = None
                      ) -> dict[str, Any]:
    """The one hparams normaliser: defaults filled in, every value of the run's dtype, unknown
    names an error. runs None: one run, jnp scalars (values may be traced; concrete ones are
    checked with :func:`check_hparams`). runs R: host numpy arrays (R,), scalars broadcast
    (train_many checks them first)."""
    defaults = default_hparams(cfg)
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(f"hparams: unknown name(s) {unknown}; known: {sorted(defaults)}")
    if runs is None:
        check_hparams(cfg, hparams)
    out = {}
    for k, v in defaults.items():
        if runs is None:
            a = jnp.asarray(hparams.get(k, v), cfg.jnp_dtype)
            if a.ndim:
                raise ValueError(f"hparams[{k!r}] must be a scalar for one run, got shape {a.shape}")
        else:
            a = np.asarray(hparams.get(k, v), dtype=np.dtype(cfg.dtype))
            if a.ndim == 0:
                a = np.full((runs,), a)
            if a.shape != (runs,):
                raise ValueError(f"hparams[{k!r}] must be a scalar or have shape ({runs},), "
                                 f"got {a.shape}")
        out[k] = a
    return out


def hparam_scales(hp: dict[str, Any]) -> Scales:
    """The model's :class:`Scales` from a run's hyperparameters."""
    return Scales(hp["sigma_w"], hp["sigma_u"], hp["sigma_b"], hp["sigma_v"], hp["width"])


def symmetric_params(cfg: RNNConfig, params: Params) -> Params:
    """Pair the units: unit j copies the incoming weights (row of W, U, b) of unit 2 floor(j/2)
    and its readout row v times (-1)^j, so paired units have identical states and the output is
    exactly 0 at any input. Built from a Gaussian draw, so the prefix (padding) property of
    :func:`init_params` is kept for even widths."""
    M = params["b"].shape[0]
    src = (jnp.arange(M) // 2) * 2
    sign = jnp.where(jnp.arange(M) % 2 == 0, 1.0, -1.0).astype(params["v"].dtype)
    return {"W": params["W"][src], "U": params["U"][src], "b": params["b"][src],
            "v": params["v"][src] * sign[:, None]}


class RunSetup(NamedTuple):
    """What a run starts from: the initial parameters (array width), its data and scales."""

    params0: Params
    data: Any  # tasks.Data
    scales: Scales
    shuffle_key: Array


def setup_run(cfg: TrainConfig, key: Array, hparams: dict[str, Any]) -> RunSetup:
    """The initial parameters and the data of the run (key, hparams), exactly as train uses them.

    params0 from fold_in(key, 0), data from fold_in(key, 1), minibatch order from fold_in(key, 2).
    Compiled once per cfg; hparams may be partial (defaults fill in). Traced at
    cfg.matmul_precision, as in train (task data may come from matrix products).
    """
    with jax.default_matmul_precision(cfg.matmul_precision):
        return _setup_jit(cfg, key, _complete_hparams(cfg, hparams))


def _setup(cfg: TrainConfig, key: Array, hparams: dict[str, Any], data: Any = None) -> RunSetup:
    hp = _complete_hparams(cfg, hparams)
    dtype = cfg.jnp_dtype
    scales = hparam_scales(hp)
    params0 = init_params(cfg.model, jax.random.fold_in(key, 0), dtype,
                          array_width=cfg.width_array, width=hp["width"])
    if cfg.init == "symmetric":
        params0 = symmetric_params(cfg.model, params0)
    if data is None:            # fixed data (make_train(data=...)) replaces the task's draw
        thp = {k: hp[k] for k in tasks.default_task_hparams(cfg.task)}
        data = tasks.sample_task(cfg.task, jax.random.fold_in(key, 1), thp, dtype=dtype)
    else:
        data = jax.tree.map(lambda a: jnp.asarray(a, dtype), data)
    return RunSetup(params0, data, scales, jax.random.fold_in(key, 2))


_setup_jit = jax.jit(_setup, static_argnums=0)


def epoch_permutation(cfg: TrainConfig, shuffle_key: Array, epoch: Any) -> Array:
    """The example order of epoch ``epoch``: jax.random.permutation(fold_in(key, epoch), n),
    padded with zeros to ceil(n/b) * b entries (the padding carries weight 0 in a minibatch)."""
    n, b = cfg.task.n_train, cfg.batch_size
    pad = -(-n // b) * b - n
    perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n).astype(jnp.int32)
    return jnp.concatenate([perm, jnp.zeros((pad,), jnp.int32)])


def batch_slice(cfg: TrainConfig, perm: Array, step: Any) -> tuple[Array, Array]:
    """Minibatch of optimiser step ``step`` from its epoch's ``perm`` (:func:`epoch_permutation`):
    (indices (b,), weights (b,) of 0/1), the slice j = step mod ceil(n/b) of b entries."""
    n, b = cfg.task.n_train, cfg.batch_size
    nb = -(-n // b)
    weight = jnp.concatenate([jnp.ones((n,), cfg.jnp_dtype), jnp.zeros((nb * b - n,), cfg.jnp_dtype)])
    j = step % nb
    return (jax.lax.dynamic_slice_in_dim(perm, j * b, b),
            jax.lax.dynamic_slice_in_dim(weight, j * b, b))


def batch_indices(cfg: TrainConfig, shuffle_key: Array, step: Any) -> tuple[Array, Array]:
    """Minibatch of optimiser step ``step`` (0-based): (indices (b,), weights (b,) of 0/1).

    Epoch e = step // ceil(n/b) uses the permutation jax.random.permutation(fold_in(key, e), n),
    walked in consecutive slices of b; the last slice is padded with weight-0 entries. (The
    training loop draws each epoch's permutation once, at the epoch's first step, and carries it;
    this function is the same minibatch computed from scratch.)
    """
    nb = -(-cfg.task.n_train // cfg.batch_size)
    return batch_slice(cfg, epoch_permutation(cfg, shuffle_key, step // nb), step)


def loss_value(cfg: TrainConfig, pred: Array, y: Array, weight_N: Array | None = None) -> Array:
    """The training loss of predictions ``pred`` against ``y`` (see the module docstring);
    ``weight_N`` (n,) weights examples (minibatch padding), None = all weight 1;
    ``cfg.position_weights`` weight positions."""
    r2 = jnp.square(pred - y)
    if cfg.position_weights is not None:                      # (n, T, k) * (1, T, 1)
        r2 = r2 * jnp.asarray(cfg.position_weights, r2.dtype)[None, :, None]
    if cfg.loss == "sum_from_2":
        per_ex = 0.5 * jnp.sum(r2[:, 1:], axis=tuple(range(1, r2.ndim)))
        return jnp.sum(per_ex) if weight_N is None else jnp.sum(weight_N * per_ex)
    per_ex = jnp.mean(r2, axis=tuple(range(1, r2.ndim)))
    if weight_N is None:
        return jnp.mean(per_ex)
    return jnp.sum(weight_N * per_ex) / jnp.sum(weight_N)


def _make_optimizer(cfg: TrainConfig, hp: dict[str, Array]) -> optax.GradientTransformation:
    kw = dict(hyperparam_dtype=cfg.jnp_dtype)
    if cfg.optimizer == "sgd":
        return optax.inject_hyperparams(optax.sgd, **kw)(learning_rate=hp["lr"])
    if cfg.optimizer == "momentum":
        return optax.inject_hyperparams(optax.sgd, **kw)(learning_rate=hp["lr"],
                                                         momentum=hp["momentum"])
    return optax.inject_hyperparams(optax.adam, **kw)(learning_rate=hp["lr"], b1=hp["momentum"],
                                                      b2=ADAM_B2)


def _tree_where(pred: Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def _all_finite(tree: Any) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return functools.reduce(jnp.logical_and, leaves, jnp.asarray(True))


def _sqnorm(tree: Any) -> Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def project(cfg: TrainConfig, theta: Params, theta0: Params, radius: Array) -> Params:
    """Project each unit r's trainable incoming weights (W[r], U[r], b[r] jointly) onto the ball
    of radius ``radius`` around theta0. v is not projected. An inf radius changes nothing."""
    inc = [g for g in ("W", "U", "b") if g in theta]
    M = theta0["v"].shape[0] if "v" in theta0 else theta[inc[0]].shape[0]
    sq = jnp.zeros((M,), theta[inc[0]].dtype)
    for g in inc:
        d = theta[g] - theta0[g]
        sq = sq + (jnp.sum(jnp.square(d), axis=1) if d.ndim == 2 else jnp.square(d))
    norm = jnp.sqrt(sq)
    factor = jnp.where(norm > radius, radius / jnp.where(norm > 0, norm, 1.0), 1.0)
    out = dict(theta)
    for g in inc:
        d = theta[g] - theta0[g]
        f = factor[:, None] if d.ndim == 2 else factor
        out[g] = theta0[g] + f * d
    return out


# ----------------------------------------------------------------------------------------------
# The run: its state, constants, step and evaluation

class ModelState(NamedTuple):
    """One trained model of a run: ``theta`` (the trainable groups, array width), the optimiser
    state, and ``diverged`` (bool scalar; once True, theta and the optimiser state are frozen)."""

    theta: Params
    opt_state: Any
    diverged: Array


class RunState(NamedTuple):
    """What a run carries from step to step: the network (``net``), its linearisation (``lin``,
    None unless cfg.linearized), and the current epoch's example order (``perm``,
    (ceil(n/b) b,) int32, :func:`epoch_permutation`; None for full-batch GD)."""

    net: ModelState
    lin: ModelState | None = None
    perm: Array | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class RunContext:
    """The constants of one run inside the program (built by :func:`run_context` from the key and
    hparams; closed over by the step and the evaluation, never passed through a transformation).

    params0: initial parameters {'W','U','b','v'} (array width M); theta0 / frozen: its trainable
    and frozen groups.  data: tasks.Data (cfg.center: targets + f(theta_0; x)).  scales: Scales.
    shuffle_key: minibatch order key.  opt: the optax optimiser.  radius: projection radius proj_radius / sqrt(width).  f_lin: the
    linearised model (None unless cfg.linearized).  pattern0: (n, T, M) initial activation
    pattern on the training set; n_pattern: entries of it at the true width.  y_train_norm /
    y_test_norm: ||y|| of each set.  x_probe (n_probe, T, d), K0, K0_norm: the probe inputs and
    their initial empirical NTK (None unless cfg.kernel_stride).
    """

    cfg: TrainConfig
    params0: Params
    theta0: Params
    frozen: Params
    data: Any  # tasks.Data
    scales: Scales
    shuffle_key: Array
    opt: optax.GradientTransformation
    radius: Array
    f_lin: Callable[..., Array] | None
    pattern0: Array
    n_pattern: Array
    y_train_norm: Array
    y_test_norm: Array
    x_probe: Array | None = None
    K0: Array | None = None
    K0_norm: Array | None = None


def _probe_ntk(cfg: TrainConfig, params: Params, x_probe: Array, scales: Scales) -> Array:
    from rnn_ntk.kernels.empirical import empirical_ntk   # only programs with kernel_stride
    return empirical_ntk(cfg.model, params, x_probe, method="structured", scales=scales)


def _norm(a: Array) -> Array:
    return jnp.sqrt(jnp.sum(jnp.square(a)))


def run_context(cfg: TrainConfig, key: Array, hparams: dict[str, Any], data: Any = None
                ) -> RunContext:
    """The constants of the run (key, hparams), traced inside the program.

    Args:
      cfg: the run's TrainConfig.
      key: the run's key (see :func:`setup_run` for what is drawn from it).
      hparams: scalars, a subset of :func:`default_hparams` (defaults fill in).
      data: None (the task's draw) or fixed ``tasks.Data`` arrays (see :func:`make_train`).

    Returns:
      The :class:`RunContext`.
    """
    hp = _complete_hparams(cfg, hparams)
    params0, data, scales, shuffle_key = _setup(cfg, key, hp, data)
    trainable = cfg.model.trainable
    opt = _make_optimizer(cfg, hp)
    radius = hp["proj_radius"] / jnp.sqrt(hp["width"])
    f_lin = linearize(cfg.model, params0, scales=scales) if cfg.linearized else None
    n, T = data.x_train.shape[0], data.x_train.shape[1]
    pattern0 = forward(cfg.model, params0, data.x_train, scales=scales)[1] > 0
    n_pattern = jnp.asarray(n * T, cfg.jnp_dtype) * hp["width"]
    y_train_norm, y_test_norm = _norm(data.y_train), _norm(data.y_test)
    if cfg.center:              # f - f_0 fits y  <=>  f fits y + f_0 (same residuals)
        f0 = functools.partial(apply, cfg.model, params0, scales=scales)
        data = tasks.Data(data.x_train, data.y_train + f0(data.x_train), data.x_test,
                          data.y_test + f0(data.x_test))
    probe = {}
    if cfg.kernel_stride:
        x_probe = data.x_test[:cfg.n_probe]
        K0 = _probe_ntk(cfg, params0, x_probe, scales)
        probe = {"x_probe": x_probe, "K0": K0, "K0_norm": _norm(K0)}
    return RunContext(
        cfg=cfg, params0=params0, theta0={g: params0[g] for g in trainable},
        frozen={g: a for g, a in params0.items() if g not in trainable}, data=data,
        scales=scales, shuffle_key=shuffle_key, opt=opt, radius=radius, f_lin=f_lin,
        pattern0=pattern0, n_pattern=n_pattern, y_train_norm=y_train_norm,
        y_test_norm=y_test_norm, **probe)


def predict(ctx: RunContext, theta: Params, x_NTD: Array, linear: bool = False
            ) -> tuple[Array, Array | None]:
    """(predictions, pre-activations g (n, T, M) or None for the linearised model) of the run's
    network (``linear`` False) or its linearisation at trainable groups ``theta``."""
    p = {**ctx.frozen, **theta}
    if linear:
        return ctx.f_lin(p, x_NTD), None
    h, g = forward(ctx.cfg.model, p, x_NTD, scales=ctx.scales)
    return readout(ctx.cfg.model, p, h, scales=ctx.scales), g


def model_step(ctx: RunContext, state: ModelState, batch: tuple, linear: bool = False
               ) -> ModelState:
    """One optimiser step of the network (or its linearisation) on ``batch`` = (x (b, T, d),
    y, weights (b,) or None), projected when cfg.projection; frozen where it diverges."""
    cfg = ctx.cfg

    def batch_loss(theta, x, y, w):
        return loss_value(cfg, predict(ctx, theta, x, linear)[0], y, w)

    theta, ost, div = state
    loss, grads = jax.value_and_grad(batch_loss)(theta, *batch)
    upd, ost_new = ctx.opt.update(grads, ost, theta)
    theta_new = optax.apply_updates(theta, upd)
    if cfg.projection:
        theta_new = project(cfg, theta_new, ctx.theta0, ctx.radius)
    div_new = div | ~(jnp.isfinite(loss) & _all_finite(theta_new))
    return ModelState(_tree_where(div_new, theta, theta_new), _tree_where(div_new, ost, ost_new),
                      div_new)


def train_step(ctx: RunContext, state: RunState, i: Array) -> RunState:
    """Optimiser step ``i`` (0-based) of the run: its minibatch, then the network's step and
    (cfg.linearized) the linearised model's on the same batch."""
    cfg, d = ctx.cfg, ctx.data
    perm = state.perm
    if cfg.batch_size is not None:
        # a new permutation at each epoch's first step only: the predicate depends on the step
        # alone, so the cond stays a branch under vmap (one O(n log n) draw per epoch, not per step)
        nb = -(-cfg.task.n_train // cfg.batch_size)
        perm = jax.lax.cond(i % nb == 0, lambda: epoch_permutation(cfg, ctx.shuffle_key, i // nb),
                            lambda: state.perm)
        idx, w = batch_slice(cfg, perm, i)
        batch = (d.x_train[idx], d.y_train[idx], w)
    else:
        batch = (d.x_train, d.y_train, None)
    net = model_step(ctx, state.net, batch)
    lin = model_step(ctx, state.lin, batch, linear=True) if cfg.linearized else None
    return RunState(net, lin, perm)


def run_log_steps(ctx: RunContext, state: RunState, k: Array) -> RunState:
    """The log_every steps of log ``k`` >= 1 (steps (k - 1) log_every ... k log_every - 1)."""
    steps = (k - 1) * ctx.cfg.log_every + jnp.arange(ctx.cfg.log_every)
    return jax.lax.scan(lambda s, i: (train_step(ctx, s, i), None), state, steps)[0]


def initial_state(ctx: RunContext) -> RunState:
    """The state at step 0 (perm is a placeholder: step 0 draws epoch 0's order)."""
    cfg = ctx.cfg
    no_div = jnp.asarray(False)
    net = ModelState(ctx.theta0, ctx.opt.init(ctx.theta0), no_div)
    lin = ModelState(ctx.theta0, ctx.opt.init(ctx.theta0), no_div) if cfg.linearized else None
    perm = None
    if cfg.batch_size is not None:
        perm = jnp.zeros((-(-cfg.task.n_train // cfg.batch_size) * cfg.batch_size,), jnp.int32)
    return RunState(net, lin, perm)


def _dtheta(ctx: RunContext, theta: Params, prefix: str) -> dict[str, Array]:
    out = {}
    for g in GROUPS:
        if g in theta:
            out[f"{prefix}dtheta_{g}"] = _norm(theta[g] - ctx.params0[g])
        else:
            out[f"{prefix}dtheta_{g}"] = jnp.zeros((), ctx.cfg.jnp_dtype)
    return out


def _net_records(ctx: RunContext, net: ModelState) -> tuple[dict[str, Array], Array, Array]:
    """The network's records and its predictions on the training and test sets."""
    cfg, d = ctx.cfg, ctx.data
    theta = net.theta

    def full_loss(th):
        pred, g = predict(ctx, th, d.x_train)
        return loss_value(cfg, pred, d.y_train), (pred, g)

    (tr_loss, (pred_tr, g_tr)), grads = jax.value_and_grad(full_loss, has_aux=True)(theta)
    pred_te = predict(ctx, theta, d.x_test)[0]
    rec = {"train_loss": tr_loss, "test_loss": loss_value(cfg, pred_te, d.y_test),
           **_dtheta(ctx, theta, ""), "grad_norm": jnp.sqrt(_sqnorm(grads)),
           "sign_flip": jnp.sum(ctx.pattern0 != (g_tr > 0)).astype(cfg.jnp_dtype) / ctx.n_pattern,
           "diverged": net.diverged}
    return rec, pred_tr, pred_te


def _lin_records(ctx: RunContext, lin: ModelState, pred_tr: Array, pred_te: Array
                 ) -> dict[str, Array]:
    """The linearised model's records and its gaps to the network's predictions."""
    cfg, d = ctx.cfg, ctx.data
    lpred_tr = predict(ctx, lin.theta, d.x_train, linear=True)[0]
    lpred_te = predict(ctx, lin.theta, d.x_test, linear=True)[0]
    gap_tr = _norm(pred_tr - lpred_tr)
    gap_te = _norm(pred_te - lpred_te)
    return {"lin_train_loss": loss_value(cfg, lpred_tr, d.y_train),
            "lin_test_loss": loss_value(cfg, lpred_te, d.y_test),
            "gap_train": gap_tr, "gap_train_rel": gap_tr / ctx.y_train_norm,
            "gap_probe": gap_te, "gap_probe_rel": gap_te / ctx.y_test_norm,
            **_dtheta(ctx, lin.theta, "lin_"), "lin_diverged": lin.diverged}


def _ntk_change(ctx: RunContext, theta: Params, k: Array) -> Array:
    """||K_t - K_0||_F / ||K_0||_F on the probe inputs at logs on the stride, NaN elsewhere."""
    dtype = ctx.cfg.jnp_dtype

    @highest_precision
    def kernel_change(th):
        K = _probe_ntk(ctx.cfg, {**ctx.frozen, **th}, ctx.x_probe, ctx.scales)
        return (_norm(K - ctx.K0) / ctx.K0_norm).astype(dtype)

    return jax.lax.cond(k % ctx.cfg.kernel_stride == 0, kernel_change,
                        lambda th: jnp.full((), jnp.nan, dtype), theta)


def evaluate(ctx: RunContext, state: RunState, k: Array) -> dict[str, Array]:
    """The records of log ``k`` (:func:`record_names`), scalars, from the run's state."""
    rec, pred_tr, pred_te = _net_records(ctx, state.net)
    if ctx.cfg.linearized:
        rec.update(_lin_records(ctx, state.lin, pred_tr, pred_te))
    if ctx.cfg.kernel_stride:
        rec["ntk_change"] = _ntk_change(ctx, state.net.theta, k)
    return rec


def _saved_params(ctx: RunContext, state: RunState) -> dict[str, Params]:
    out = {"init_params": ctx.params0, "final_params": {**ctx.frozen, **state.net.theta}}
    if ctx.cfg.linearized:
        out["lin_final_params"] = {**ctx.frozen, **state.lin.theta}
    return out


#: ``on_log(k, state, tag)``: called inside the program after the steps of log k >= 1.
LogHook = Callable[[Array, RunState, Any], None]


def _check_program(cfg: TrainConfig, on_log: LogHook | None, data: Any) -> None:
    """make_train's / make_segment's argument checks (one line each, before any trace)."""
    if on_log is not None and not callable(on_log):
        raise TypeError(f"on_log must be a callable or None, got {on_log!r}")
    if data is not None:         # fixed data: shapes must be the task's
        t = cfg.task
        ys = (t.length, t.output_dim) if t.target == "all" else (t.output_dim,)
        want = {"x_train": (t.n_train, t.length, t.input_dim), "y_train": (t.n_train,) + ys,
                "x_test": (t.n_test, t.length, t.input_dim), "y_test": (t.n_test,) + ys}
        for name, shape in want.items():
            got = tuple(np.shape(getattr(data, name, None)))
            if got != shape:
                raise ConfigError(f"data.{name} must have shape {shape} for this task, got {got}")
    if cfg.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError("dtype 'float64' needs jax_enable_x64 (jax.config.update('jax_enable_x64', "
                          "True))")


def _log_body(ctx: RunContext, on_log: LogHook | None, tag: Any
              ) -> Callable[[RunState, Array], tuple[RunState, dict[str, Array]]]:
    """The scan body over logs, ``log(state, k) -> (state, records of log k)``: log 0 evaluates
    the initialisation; log k > 0 first runs its log_every steps (and the hook). One body for
    both keeps the program (and its compile time) at one copy of evaluate. make_train and
    make_segment run this same body."""
    def advance(state, k):
        state = run_log_steps(ctx, state, k)
        if on_log is not None:
            on_log(k, state, tag)
        return state

    def log(state, k):
        state = jax.lax.cond(k > 0, advance, lambda s, _: s, state, k)
        return state, evaluate(ctx, state, k)

    return log


def make_train(cfg: TrainConfig, *, on_log: LogHook | None = None, data: Any = None
               ) -> Callable[..., dict[str, Array]]:
    """One run as a pure, jittable function (jit it, or use :func:`rnn_ntk.lanes.train_many`).

    Args:
      cfg: the run's static structure.
      on_log: None (the default program), or a hook ``on_log(k, state, tag)`` traced into the
        program after the steps of every log k >= 1 (k an int scalar, state the
        :class:`RunState`, tag the ``tag`` argument of train). It is called for its effects
        only (e.g. a host callback; :func:`rnn_ntk.progress.progress_hook`); what it returns is
        ignored, and it must not change the records.
      data: None (each run draws its task data, ``tasks.sample_task``), or fixed arrays
        ``tasks.Data(x_train, y_train, x_test, y_test)`` shaped as the task's would be, used by
        every run (real data sets); constants of the compiled program.

    Returns:
      ``train(key, hparams, tag=0) -> records``. hparams: dict of scalars (a subset of
      :func:`default_hparams`; missing ones take their defaults, as constants of the trace, so a
      jitted train compiles once per set of names: pass complete dicts, ``default_hparams(cfg) |
      overrides``, to compile once per cfg). tag: any value the hook reads (e.g. the run's lane
      index); unused without a hook. records: a dict of arrays with leading axis cfg.n_logs
      (:func:`record_names`), plus 'init_params', 'final_params' (and 'lin_final_params'), each
      {'W', 'U', 'b', 'v'} at the array width, when cfg.save_params.
    """
    _check_program(cfg, on_log, data)

    @with_matmul_precision(cfg.matmul_precision)  # every product of the run, traced inside
    def train(key: Array, hparams: dict[str, Any], tag: Any = 0) -> dict[str, Array]:
        ctx = run_context(cfg, key, hparams, data)
        state, out = jax.lax.scan(_log_body(ctx, on_log, tag), initial_state(ctx),
                                  jnp.arange(cfg.n_logs))
        if cfg.save_params:
            out.update(_saved_params(ctx, state))
        return out

    return train


# ----------------------------------------------------------------------------------------------
# Segments: the same program cut into ranges of logs, resumable from a saved state

def segment_logs(cfg: TrainConfig) -> int:
    """Logs per segment of a checkpointed run: L = ceil(checkpoint_every / log_every), so a
    checkpoint falls every L log_every >= checkpoint_every steps, on a log boundary; 0 when the
    run is one program (checkpoint_every 0, or L log_every >= steps: no checkpoint before the
    end)."""
    K = cfg.checkpoint_every
    L = -(-K // cfg.log_every)
    return L if K and L * cfg.log_every < cfg.steps else 0


def segment_starts(cfg: TrainConfig) -> list[int]:
    """First log index k0 of each segment of a checkpointed run (:func:`make_segment` runs logs
    k0 .. k0 + L - 1; those outside 0 .. n_logs - 1 are skipped): 1 - L (log 0 alone), then
    1, 1 + L, ...: segment j >= 1 ends at step j L log_every, where its checkpoint is taken."""
    L = segment_logs(cfg)
    if not L:
        raise ConfigError(f"checkpoint_every ({cfg.checkpoint_every}): the run has no segments "
                          f"(0 or >= steps {cfg.steps})")
    return [1 - L + j * L for j in range(1 + -(-(cfg.n_logs - 1) // L))]


def make_segment(cfg: TrainConfig, *, on_log: LogHook | None = None, data: Any = None
                 ) -> Callable[..., tuple[RunState, dict[str, Array], dict[str, Params]]]:
    """One run as segments of L = :func:`segment_logs` logs: the body of :func:`make_train`
    (the same top-level functions, the same records bit for bit) run over a range of logs from
    a given state, so a run can stop after any segment and continue from its saved state.

    Args:
      cfg: the run's static structure (checkpoint_every > 0 and < steps).
      on_log, data: as :func:`make_train`.

    Returns:
      ``segment(key, hparams, state, k0, tag=0) -> (state, records, saved)``: runs logs
      k0 .. k0 + L - 1 (k0 an int scalar, traced: one compiled program serves every segment;
      logs outside 0 .. n_logs - 1 are skipped and their records are zeros); ``state``: the
      :class:`RunState` after log k0 - 1, ignored when k0 <= 0 (the run's initial state is used;
      pass zeros shaped as :func:`run_state_shape`); records: (L,) per name; saved: the
      'init_params' / 'final_params' (/ 'lin_final_params') of :func:`make_train` at the end
      of the segment when cfg.save_params, else {}.
    """
    _check_program(cfg, on_log, data)
    L = segment_logs(cfg)
    if not L:
        segment_starts(cfg)        # raises the one-line error

    @with_matmul_precision(cfg.matmul_precision)
    def segment(key: Array, hparams: dict[str, Any], state: RunState, k0: Array, tag: Any = 0
                ) -> tuple[RunState, dict[str, Array], dict[str, Params]]:
        ctx = run_context(cfg, key, hparams, data)
        log = _log_body(ctx, on_log, tag)
        k0 = jnp.asarray(k0)
        first = k0 <= 0
        state = jax.tree.map(lambda a, b: jnp.where(first, a, b), initial_state(ctx), state)
        shapes = jax.eval_shape(lambda s, k: log(s, k)[1], state, k0)

        def skip(s, k):
            return s, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

        def masked(s, k):
            return jax.lax.cond((k >= 0) & (k < cfg.n_logs), log, skip, s, k)

        state, out = jax.lax.scan(masked, state, k0 + jnp.arange(L, dtype=k0.dtype))
        return state, out, (_saved_params(ctx, state) if cfg.save_params else {})

    return segment


def run_state_shape(cfg: TrainConfig, key: Array, hparams: dict[str, Any], data: Any = None
                    ) -> RunState:
    """The :class:`RunState` of a run as ``jax.ShapeDtypeStruct`` leaves (nothing computed):
    the state a segment program carries (:func:`make_segment`)."""
    return jax.eval_shape(lambda k, hp: initial_state(run_context(cfg, k, hp, data)), key,
                          hparams)


# ----------------------------------------------------------------------------------------------
# Names that moved: rnn_ntk.train.X keeps working (PEP 562), without importing lanes/progress at
# import time (they import this module).

_MOVED = {"train_many": "lanes", "run_key": "lanes", "run_keys": "lanes", "Layout": "lanes",
          "choose_layout": "lanes", "release_compiled": "lanes", "MAP_COUNT_FRACTION": "lanes",
          "ACCEL_MEMORY_FRACTION": "lanes", "progress_listener": "progress"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(f"rnn_ntk.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MOVED))
