"""The compiled training engine: one run is one pure function, many runs are lanes of one program.

    train = make_train(cfg)                 # cfg: TrainConfig (static structure)
    records = train(key, hparams)           # hparams: dict of traced scalars (never recompiles)
    records = train_many(cfg, keys_R, hparams_R)   # R runs of one bucket, leading run axis R

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

Lane layout (``train_many``): a :class:`Layout` is (number of devices, per-device strategy). The
run axis is padded to a multiple of the device count and sharded over a 1-D mesh ('runs') with
``shard_map``; on each device the runs go through ``lax.map`` with ``batch_size`` b (b = 1: one run
at a time, each run a plain single-run program; b > 1: b runs vmapped per iteration) or a full
``vmap``. The default (:func:`choose_layout`) was chosen by measurement (benchmarks/
train_throughput.py): on CPU a program on one host device runs its small matmuls on about one
core and vmapped (batched) small matmuls are no faster per core than a loop, so all host devices
(jax_num_cpu_devices, set by the caller) each run their share with ``lax.map`` (b = 1); on
GPU/TPU wide ``vmap`` is the point, capped by memory.

Progress (``train_many(..., progress=fn, progress_every=k)``, ``make_train(cfg, progress=k)``):
a separately compiled variant of the program in which every k-th log (and the last) ends with an
unordered host callback (``jax.debug.callback``) saying "runs L did these steps"; the default
program has no callback (no cost, and it is never rebuilt). The callback is a ``custom_vmap``,
so a vmapped batch of b runs reports once with its b lane tags (debug callbacks are otherwise
unrolled into b calls); under lax.map (b = 1) and shard_map each run reports by itself, from its
device's thread. Its one operand is an int32 pair (2 lane + diverged, log index): each operand
costs the host a device_put, and the divergence flag orders the call after the log's steps. The
compiled callback is a module-level dispatcher that forwards to the listener installed by
:func:`progress_listener` (one at a time, serialised by a lock), so one compiled program serves
every call. A report costs the host from tens of microseconds (idle cores) to about a
millisecond (a loaded machine), so k should leave much more work than that between reports
(``rnn_ntk.sweep.progress_every`` picks k from the sweep's cost model).
Records are bit-identical with and without progress.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import threading
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnn_ntk import tasks
from rnn_ntk.linearize import linearize
from rnn_ntk.model import (GROUPS, ConfigError, Params, RNNConfig, Scales, forward, init_params,
                           readout)

Array = jax.Array

OPTIMIZERS = ("sgd", "momentum", "adam")
LOSSES = ("mean", "sum_from_2")
DTYPES = ("float32", "float64")
INITS = ("gaussian", "symmetric")
MODEL_HPARAMS = ("lr", "momentum", "sigma_w", "sigma_u", "sigma_b", "sigma_v", "width",
                 "proj_radius")
DEFAULT_LR = 0.1
DEFAULT_MOMENTUM = 0.9
ADAM_B2 = 0.999


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static structure of a training run (one compiled program); validated on construction.

    model: RNNConfig.  task: tasks.TaskConfig (input/output dims must match the model's; readout
    'all' <-> target 'all').  steps: optimiser steps, a multiple of log_every (0 = evaluate the
    initialisation only).  log_every: steps between records.  batch_size: None = full-batch GD,
    else minibatch SGD of that size (<= task.n_train), reshuffled every epoch.  optimizer: 'sgd',
    'momentum' (heavy ball) or 'adam' (b1 = hparams['momentum']).  loss: 'mean' or 'sum_from_2'
    (needs target 'all' and T >= 2).  dtype: 'float32' or 'float64'.  array_width: None or the
    padded array width (>= model.width); the true width is hparams['width'].  save_params: also
    return the final parameters.  init: 'gaussian' or 'symmetric' (even width; initial output
    exactly 0).  projection: after every step project each unit's trainable incoming weights
    (its rows of W, U and b jointly) onto the ball of radius hparams['proj_radius']/sqrt(width)
    around their initial values.  linearized: train the linearised model side by side.
    kernel_stride: every kernel_stride logs record the relative change of the empirical NTK on
    the first n_probe test inputs (0 = off).  n_probe: probe inputs for the kernel (<= n_test).
    """

    model: RNNConfig
    task: Any  # tasks.TaskConfig
    steps: int
    log_every: int = 1
    batch_size: int | None = None
    optimizer: str = "sgd"
    loss: str = "mean"
    dtype: str = "float32"
    array_width: int | None = None
    save_params: bool = False
    init: str = "gaussian"
    projection: bool = False
    linearized: bool = False
    kernel_stride: int = 0
    n_probe: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.model, RNNConfig):
            raise ConfigError(f"model must be an RNNConfig, got {type(self.model).__name__}")
        if not isinstance(self.task, tasks.TaskConfig):
            raise ConfigError(f"task must be a tasks.TaskConfig, got {type(self.task).__name__}")
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
        _check_int("log_every", self.log_every, 1)
        _check_int("steps", self.steps, 0)
        if self.steps % self.log_every:
            raise ConfigError(f"steps ({self.steps}) must be a multiple of log_every "
                              f"({self.log_every})")
        if self.batch_size is not None:
            _check_int("batch_size", self.batch_size, 1)
            if self.batch_size > t.n_train:
                raise ConfigError(f"batch_size ({self.batch_size}) must be <= task.n_train "
                                  f"({t.n_train}), or None for full-batch GD")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("loss", self.loss, LOSSES)
        if self.loss == "sum_from_2" and (t.target != "all" or t.length < 2):
            raise ConfigError("loss 'sum_from_2' needs task target 'all' and length >= 2")
        _check_choice("dtype", self.dtype, DTYPES)
        if self.array_width is not None:
            _check_int("array_width", self.array_width, m.width)
        _check_bool("save_params", self.save_params)
        _check_choice("init", self.init, INITS)
        if self.init == "symmetric" and m.width % 2:
            raise ConfigError(f"init 'symmetric' needs an even model.width, got {m.width}")
        _check_bool("projection", self.projection)
        if self.projection and not set(m.trainable) & {"W", "U", "b"}:
            raise ConfigError("projection needs at least one of W, U, b trainable (it acts on "
                              "each unit's incoming weights)")
        _check_bool("linearized", self.linearized)
        _check_int("kernel_stride", self.kernel_stride, 0)
        _check_int("n_probe", self.n_probe, 1)
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


def default_hparams(cfg: TrainConfig) -> dict[str, float]:
    """The traced hyperparameters of a run and their defaults.

    lr, momentum (momentum optimizer's beta; adam's b1; unused by sgd), sigma_w/u/b/v (from
    cfg.model), width (true width, cfg.model.width), proj_radius (inf), and the task's numeric
    parameters (tasks.default_task_hparams).
    """
    m = cfg.model
    hp = {"lr": DEFAULT_LR, "momentum": DEFAULT_MOMENTUM, "sigma_w": float(m.sigma_w),
          "sigma_u": float(m.sigma_u), "sigma_b": float(m.sigma_b), "sigma_v": float(m.sigma_v),
          "width": float(m.width), "proj_radius": math.inf}
    thp = {k: float(v) for k, v in tasks.default_task_hparams(cfg.task).items()}
    clash = set(hp) & set(thp)
    if clash:
        raise ConfigError(f"task: hyperparameter name(s) {sorted(clash)} clash with the model's")
    hp.update(thp)
    return hp


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


def _complete_hparams(cfg: TrainConfig, hparams: dict[str, Any]) -> dict[str, Array]:
    """Defaults filled in, every value a scalar of the run's dtype. Unknown names are an error."""
    defaults = default_hparams(cfg)
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(f"hparams: unknown name(s) {unknown}; known: {sorted(defaults)}")
    out = {}
    for k, v in defaults.items():
        a = jnp.asarray(hparams.get(k, v), cfg.jnp_dtype)
        if a.ndim:
            raise ValueError(f"hparams[{k!r}] must be a scalar for one run, got shape {a.shape}")
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
    Compiled once per cfg; hparams may be partial (defaults fill in).
    """
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
    ``weight_N`` (n,) weights examples (minibatch padding), None = all weight 1."""
    r2 = jnp.square(pred - y)
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
# Progress reports (host callbacks of the progress variant of the program)

_progress_lock = threading.Lock()
_progress_fn: Callable[[np.ndarray, int], None] | None = None


def _dispatch_progress(log_every: int, every: int, codes: Any) -> None:
    """Host side of a progress report (called from device threads). codes (..., 2) int32: per
    reporting run (2 lane + diverged, log index k); the report at log k covers the logs since
    the previous report, (k - every * floor((k - 1) / every)) * log_every steps. Forwards
    (lane tags, steps) to the installed listener under the lock (listeners need not be
    thread-safe)."""
    codes = np.asarray(codes).reshape(-1, 2)
    k = int(codes[0, 1])
    steps = (k - every * ((k - 1) // every)) * log_every
    with _progress_lock:
        if _progress_fn is not None:
            _progress_fn(codes[:, 0] >> 1, steps)


@functools.lru_cache(maxsize=None)
def _progress_reporter(log_every: int, every: int) -> Callable[[Array], Array]:
    """report(codes) -> codes: one unordered host callback (see the module docstring); under
    vmap one callback for the whole batch (custom_vmap rule)."""
    host = functools.partial(_dispatch_progress, log_every, every)

    @jax.custom_batching.custom_vmap
    def report(codes: Array) -> Array:
        jax.debug.callback(host, codes, ordered=False)
        return codes

    @report.def_vmap
    def report_vmap(axis_size: int, in_batched: list, codes: Array) -> tuple[Array, Any]:
        if not in_batched[0]:
            codes = jnp.broadcast_to(codes, (axis_size,) + jnp.shape(codes))
        jax.debug.callback(host, codes, ordered=False)
        return codes, True

    return report


@contextlib.contextmanager
def progress_listener(fn: Callable[[np.ndarray, int], None]):
    """Install ``fn(lanes, steps)`` as the receiver of progress reports while the block runs:
    each call says that the runs tagged ``lanes`` (int array) each did ``steps`` more steps.
    Calls come from device threads, one at a time (under a lock). One listener at a time per
    process; on exit, waits for reports still in flight (jax.effects_barrier)."""
    global _progress_fn
    with _progress_lock:
        if _progress_fn is not None:
            raise RuntimeError("a progress listener is already installed (one progress-reporting "
                               "training call at a time per process)")
        _progress_fn = fn
    try:
        yield
    finally:
        jax.effects_barrier()
        with _progress_lock:
            _progress_fn = None


def make_train(cfg: TrainConfig, *, progress: int = 0, data: Any = None
               ) -> Callable[..., dict[str, Array]]:
    """``train(key, hparams) -> records``: one run, pure and jittable (jit it, or use train_many).

    progress: 0 (default): no callback. k >= 1: the variant that reports to the listener of
    :func:`progress_listener` after every k-th log and the last, with the steps since the
    previous report (they sum to cfg.steps), tagged with ``train(key, hparams, lane)``'s int
    ``lane`` (default 0; ignored without progress).

    hparams: dict of scalars (a subset of :func:`default_hparams`; missing ones take their
    defaults, as constants of the trace, so a jitted train compiles once per set of names: pass
    complete dicts, ``default_hparams(cfg) | overrides``, to compile once per cfg). Returns a dict of arrays with leading axis
    cfg.n_logs (:func:`record_names`), plus 'init_params', 'final_params' (and
    'lin_final_params'), each {'W', 'U', 'b', 'v'} at the array width, when cfg.save_params.

    data: None (default: each run draws its task data, ``tasks.sample_task``), or fixed arrays
    ``tasks.Data(x_train, y_train, x_test, y_test)`` shaped as the task's (n_train, n_test,
    length, input_dim, output_dim) would be, used by every run (real data sets); constants of
    the compiled program.
    """
    _check_int("progress", progress, 0)
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
    mcfg = cfg.model
    trainable = mcfg.trainable
    n_chunks = cfg.steps // cfg.log_every
    minibatch = cfg.batch_size is not None
    if cfg.kernel_stride:
        from rnn_ntk.kernels.empirical import empirical_ntk
    else:
        empirical_ntk = None

    def train(key: Array, hparams: dict[str, Any], lane: Any = 0) -> dict[str, Array]:
        hp = _complete_hparams(cfg, hparams)
        params0, data_, scales, shuffle_key = _setup(cfg, key, hp, data)
        x_tr, y_tr, x_te, y_te = data_.x_train, data_.y_train, data_.x_test, data_.y_test
        n, T = x_tr.shape[0], x_tr.shape[1]
        dtype = cfg.jnp_dtype
        frozen = {g: a for g, a in params0.items() if g not in trainable}
        theta0 = {g: params0[g] for g in trainable}
        opt = _make_optimizer(cfg, hp)
        radius = hp["proj_radius"] / jnp.sqrt(hp["width"])

        def net_pred(theta, x):
            p = {**frozen, **theta}
            h, g = forward(mcfg, p, x, scales=scales)
            return readout(mcfg, p, h, scales=scales), g

        if cfg.linearized:
            f_lin = linearize(mcfg, params0, scales=scales)

            def lin_pred(theta, x):
                return f_lin({**frozen, **theta}, x), None

        def make_step(pred_fn):
            def batch_loss(theta, x, y, w):
                return loss_value(cfg, pred_fn(theta, x)[0], y, w)

            def step(state, batch):
                theta, ost, div = state
                loss, grads = jax.value_and_grad(batch_loss)(theta, *batch)
                upd, ost_new = opt.update(grads, ost, theta)
                theta_new = optax.apply_updates(theta, upd)
                if cfg.projection:
                    theta_new = project(cfg, theta_new, theta0, radius)
                div_new = div | ~(jnp.isfinite(loss) & _all_finite(theta_new))
                return (_tree_where(div_new, theta, theta_new), _tree_where(div_new, ost, ost_new),
                        div_new)
            return step

        net_step = make_step(net_pred)
        lin_step = make_step(lin_pred) if cfg.linearized else None

        def one_step(carry, i):
            out = {}
            if minibatch:
                # a new permutation at each epoch's first step only: the predicate depends on the
                # step alone, so the cond stays a branch under vmap (one O(n log n) draw per epoch,
                # not per step)
                nb = -(-cfg.task.n_train // cfg.batch_size)
                out["perm"] = jax.lax.cond(
                    i % nb == 0, lambda: epoch_permutation(cfg, shuffle_key, i // nb),
                    lambda: carry["perm"])
                idx, w = batch_slice(cfg, out["perm"], i)
                batch = (x_tr[idx], y_tr[idx], w)
            else:
                batch = (x_tr, y_tr, None)
            out["net"] = net_step(carry["net"], batch)
            if cfg.linearized:
                out["lin"] = lin_step(carry["lin"], batch)
            return out, None

        pattern0 = forward(mcfg, params0, x_tr, scales=scales)[1] > 0
        n_pattern = jnp.asarray(n * T, dtype) * hp["width"]
        y_tr_norm = jnp.sqrt(jnp.sum(jnp.square(y_tr)))
        y_te_norm = jnp.sqrt(jnp.sum(jnp.square(y_te)))
        if cfg.kernel_stride:
            x_probe = x_te[:cfg.n_probe]
            K0 = empirical_ntk(mcfg, params0, x_probe, method="structured", scales=scales)
            K0_norm = jnp.sqrt(jnp.sum(jnp.square(K0)))

        def dtheta(theta, prefix):
            out = {}
            for g in GROUPS:
                if g in theta:
                    out[f"{prefix}dtheta_{g}"] = jnp.sqrt(jnp.sum(jnp.square(theta[g] - params0[g])))
                else:
                    out[f"{prefix}dtheta_{g}"] = jnp.zeros((), dtype)
            return out

        def evaluate(carry, k):
            theta, _, div = carry["net"]

            def full_loss(th):
                pred, g = net_pred(th, x_tr)
                return loss_value(cfg, pred, y_tr), (pred, g)

            (tr_loss, (pred_tr, g_tr)), grads = jax.value_and_grad(full_loss, has_aux=True)(theta)
            pred_te = net_pred(theta, x_te)[0]
            rec = {"train_loss": tr_loss, "test_loss": loss_value(cfg, pred_te, y_te),
                   **dtheta(theta, ""), "grad_norm": jnp.sqrt(_sqnorm(grads)),
                   "sign_flip": jnp.sum(pattern0 != (g_tr > 0)).astype(dtype) / n_pattern,
                   "diverged": div}
            if cfg.linearized:
                ltheta, _, ldiv = carry["lin"]
                lpred_tr = lin_pred(ltheta, x_tr)[0]
                lpred_te = lin_pred(ltheta, x_te)[0]
                gap_tr = jnp.sqrt(jnp.sum(jnp.square(pred_tr - lpred_tr)))
                gap_te = jnp.sqrt(jnp.sum(jnp.square(pred_te - lpred_te)))
                rec.update({"lin_train_loss": loss_value(cfg, lpred_tr, y_tr),
                            "lin_test_loss": loss_value(cfg, lpred_te, y_te),
                            "gap_train": gap_tr, "gap_train_rel": gap_tr / y_tr_norm,
                            "gap_probe": gap_te, "gap_probe_rel": gap_te / y_te_norm,
                            **dtheta(ltheta, "lin_"), "lin_diverged": ldiv})
            if cfg.kernel_stride:
                def kernel_change(th):
                    K = empirical_ntk(mcfg, {**frozen, **th}, x_probe, method="structured",
                                      scales=scales)
                    return (jnp.sqrt(jnp.sum(jnp.square(K - K0))) / K0_norm).astype(dtype)

                rec["ntk_change"] = jax.lax.cond(k % cfg.kernel_stride == 0, kernel_change,
                                                 lambda th: jnp.full((), jnp.nan, dtype), theta)
            return rec

        def run_chunk(carry, k):
            steps = (k - 1) * cfg.log_every + jnp.arange(cfg.log_every)
            carry = jax.lax.scan(one_step, carry, steps)[0]
            if progress:  # reads the divergence flag: runs after this log's steps
                codes = jnp.stack([2 * jnp.asarray(lane, jnp.int32)
                                   + carry["net"][2].astype(jnp.int32), k.astype(jnp.int32)])
                report = _progress_reporter(cfg.log_every, progress)
                if progress == 1:
                    report(codes)
                else:
                    jax.lax.cond((k % progress == 0) | (k == n_chunks), report, lambda c: c,
                                 codes)
            return carry

        def log(carry, k):
            # log 0 evaluates the initialisation; log k > 0 first runs its log_every steps. One
            # body for both keeps the program (and its compile time) at one copy of evaluate.
            carry = jax.lax.cond(k > 0, run_chunk, lambda c, _: c, carry, k)
            return carry, evaluate(carry, k)

        no_div = jnp.asarray(False)
        carry = {"net": (theta0, opt.init(theta0), no_div)}
        if cfg.linearized:
            carry["lin"] = (theta0, opt.init(theta0), no_div)
        if minibatch:   # replaced at step 0 (an epoch's first step)
            carry["perm"] = jnp.zeros((-(-n // cfg.batch_size) * cfg.batch_size,), jnp.int32)
        carry, out = jax.lax.scan(log, carry, jnp.arange(n_chunks + 1))
        if cfg.save_params:
            out["init_params"] = params0
            out["final_params"] = {**frozen, **carry["net"][0]}
            if cfg.linearized:
                out["lin_final_params"] = {**frozen, **carry["lin"][0]}
        return out

    return train


# ----------------------------------------------------------------------------------------------
# Run keys

def _check_coord(c: Any) -> int:
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < 2 ** 32:
        raise ValueError(f"run_key: coordinates must be ints in [0, 2**32), got {c!r}")
    return int(c)


def run_key(base_seed: int, coords: tuple[int, ...]) -> Array:
    """The key of the run at ``coords`` (e.g. (seed index, width index, lr index)) of a sweep:
    fold_in(...fold_in(key(base_seed), c_0)..., c_last). Adding runs never changes existing ones."""
    key = jax.random.key(_check_coord(base_seed))
    for c in coords:
        key = jax.random.fold_in(key, _check_coord(c))
    return key


def run_keys(base_seed: int, coords_RC: Any) -> Array:
    """``run_key`` for many runs at once: coords_RC (R, C) ints -> (R,) keys (same values)."""
    coords = np.asarray(coords_RC)
    if coords.ndim != 2 or not np.issubdtype(coords.dtype, np.integer):
        raise ValueError(f"run_keys: coords must be an (R, C) integer array, got {coords.shape}")
    for c in (coords.min(initial=0), coords.max(initial=0), base_seed):
        _check_coord(int(c) if not isinstance(c, int) else c)
    return _run_keys(int(base_seed), jnp.asarray(coords, jnp.uint32))


@jax.jit
def _run_keys(base_seed: int, coords_RC: Array) -> Array:
    def one(cs):
        key = jax.random.key(base_seed)
        for j in range(cs.shape[0]):
            key = jax.random.fold_in(key, cs[j])
        return key
    return jax.vmap(one)(coords_RC)


# ----------------------------------------------------------------------------------------------
# Many runs: lanes

@dataclasses.dataclass(frozen=True)
class Layout:
    """How R runs are laid out: over ``n_devices`` devices (a 1-D mesh 'runs'), and on each device
    with ``strategy`` 'map' (lax.map, ``batch_size`` runs vmapped per iteration) or 'vmap'
    (all of the device's runs vmapped at once)."""

    n_devices: int = 1
    strategy: str = "map"
    batch_size: int = 1

    def __post_init__(self) -> None:
        _check_int("n_devices", self.n_devices, 1)
        _check_choice("strategy", self.strategy, ("map", "vmap"))
        _check_int("batch_size", self.batch_size, 1)


# Fraction of accelerator memory a vmapped bucket may use.
ACCEL_MEMORY_FRACTION = 0.5


def run_bytes(cfg: TrainConfig) -> int:
    """Rough peak memory of one run in flight (bytes): parameters with gradients and optimiser
    state, activations of the largest forward pass, data, and the probe kernels when recorded.
    Used by :func:`choose_layout` (runs per vmapped batch) and by the sweep planner (chunks)."""
    M, t = cfg.width_array, cfg.task
    B = t.n_train if cfg.batch_size is None else cfg.batch_size
    n_models = 2 if cfg.linearized else 1
    P = M * M + M * (t.input_dim + 1 + t.output_dim)
    opt_copies = {"sgd": 0, "momentum": 1, "adam": 2}.get(cfg.optimizer, 2)
    params = P * (4 + opt_copies) * n_models
    acts = max(B, t.n_train, t.n_test) * t.length * M * 8 * n_models
    y = t.length if t.target == "all" else 1
    data = (t.n_train + t.n_test) * t.length * (t.input_dim + y * t.output_dim) * 2
    kern = 0
    if cfg.kernel_stride:
        kern = 4 * cfg.n_probe * t.length * M + 2 * (cfg.n_probe * t.length) ** 2
    item = 4 if cfg.dtype == "float32" else 8
    return int((params + acts + data + kern) * item * 2)


def choose_layout(cfg: TrainConfig, n_runs: int, *, backend: str | None = None,
                  devices: list | None = None) -> Layout:
    """The default lane layout (rule measured with benchmarks/train_throughput.py --layouts).

    CPU: every host device (jax_num_cpu_devices) takes an equal share of the runs (never more
    devices than runs) and runs it with lax.map, one run per iteration (batch_size 1): each
    iteration is then exactly the single-run program, the fastest thing per core on XLA CPU
    (vmapped runs are batched small matmuls: measured within a few percent of it per core even
    for tiny runs, slower for larger ones; the parallelism comes from the devices). It also makes a run's bits independent of R, so adding
    runs to a bucket never changes existing ones. GPU/TPU: all devices, and on each a vmap of
    all its runs, or lax.map over vmapped batches as large as ACCEL_MEMORY_FRACTION of the
    device memory allows.
    """
    devices = jax.devices() if devices is None else devices
    backend = devices[0].platform if backend is None else backend
    D = max(1, min(len(devices), n_runs))
    per_dev = -(-n_runs // D)
    if backend == "cpu":
        return Layout(D, "map", 1)
    mem = None
    try:
        stats = devices[0].memory_stats()
        mem = stats.get("bytes_limit") if stats else None
    except Exception:  # memory_stats is not available on every backend
        mem = None
    mem = 16 * 2 ** 30 if not mem else mem
    fit = max(1, int(ACCEL_MEMORY_FRACTION * mem // max(1, run_bytes(cfg))))
    if fit >= per_dev:
        return Layout(D, "vmap", per_dev)
    return Layout(D, "map", fit)


# ----------------------------------------------------------------------------------------------
# Compiled-program headroom (Linux memory-map limit)

#: Fraction of the kernel's per-process memory-map limit (vm.max_map_count) above which
#: :func:`release_compiled` drops every compiled program before the next compile.
MAP_COUNT_FRACTION = 0.6


def _map_counts() -> tuple[int, int] | None:
    """(memory maps this process holds, the kernel's limit), or None where /proc lacks them."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        with open("/proc/self/maps", "rb") as f:
            used = sum(1 for _ in f)
    except (OSError, ValueError):
        return None
    return used, limit


def release_compiled(force: bool = False) -> bool:
    """Drop every compiled program of this process (jax.clear_caches and this module's program
    cache) when ``force`` or when the process holds more than MAP_COUNT_FRACTION of the kernel's
    memory-map limit; returns whether it dropped them (later calls recompile).

    Why: XLA's CPU backend maps each compiled kernel into its own pages, about 3 memory maps per
    kernel and ~500 per small training program, and keeps them while the program is cached.
    A process that compiles a few hundred programs (a long sweep of buckets compiled apart,
    `rnn-ntk reproduce` of every experiment, a test session) reaches Linux's default
    vm.max_map_count of 65530, where LLVM fails with "Cannot allocate memory" and the process
    aborts. :func:`train_many` calls this before it builds a new program."""
    if not force:
        counts = _map_counts()
        if counts is None or counts[0] <= MAP_COUNT_FRACTION * counts[1]:
            return False
    _many_fn.cache_clear()
    jax.clear_caches()
    gc.collect()
    return True


@functools.lru_cache(maxsize=16)
def _many_fn(cfg: TrainConfig, layout: Layout, key_impl: str | None, hp_names: tuple[str, ...],
             devices: tuple, progress: int = 0) -> Callable:
    """The compiled program fn(kd_R, hp_R[, lane_R]) (lane_R: progress tags, progress only).
    Runs only on a cache miss, i.e. before a new program compiles: the memory-map check lives
    here, off the path of calls that reuse a program (reading /proc/self/maps costs ~2 ms at
    700 maps and grows with the count)."""
    release_compiled()
    train = make_train(cfg, progress=progress)

    def one(kd, hp, *lane):
        key = kd if key_impl is None else jax.random.wrap_key_data(kd, impl=key_impl)
        return train(key, hp, *lane)

    def local(*args_R):
        if layout.strategy == "vmap":
            return jax.vmap(one)(*args_R)
        return jax.lax.map(lambda a: one(*a), args_R, batch_size=layout.batch_size)

    if layout.n_devices == 1:
        return jax.jit(local)
    mesh = Mesh(np.asarray(devices), ("runs",))
    spec = PartitionSpec("runs")
    sharded = jax.shard_map(local, mesh=mesh, in_specs=(spec,) * (3 if progress else 2),
                            out_specs=spec, check_vma=False)
    return jax.jit(sharded)


def train_many(cfg: TrainConfig, keys: Array, hparams: dict[str, Any], *,
               layout: Layout | None = None,
               progress: Callable[[np.ndarray, int], None] | None = None,
               progress_every: int = 1) -> dict[str, Array]:
    """R runs of one bucket: ``keys`` (R,) (typed keys, e.g. from :func:`run_keys`, or raw
    (R, 2) uint32), ``hparams`` a dict whose values are (R,) arrays or scalars (broadcast);
    missing names take their defaults. Returns make_train's records with a leading run axis R.

    The runs are padded to a multiple of layout.n_devices (by repeating the last run; the padding
    is dropped) and sharded over a 1-D mesh 'runs' of the first n_devices devices with shard_map;
    see :class:`Layout` and :func:`choose_layout`. (Single process: the inputs are host arrays.
    Several hosts would use the same mesh over all global devices with inputs built by
    jax.make_array_from_process_local_data.)
    Compiled programs are cached per (cfg, layout, hparam names); new hparam values or keys of
    the same R never recompile.

    progress: None (the default program, no callback), or ``progress(lanes, steps)``, called
    after every ``progress_every``-th log and the last of each run (once per vmapped batch)
    with the run indices ``lanes`` (into 0..R-1; device padding is dropped) that each did
    ``steps`` more steps; over the whole call they sum to R * cfg.steps run-steps. Calls come
    from device threads, one at a time. Runs the progress variant of the program (compiled and
    cached separately per progress_every, see :func:`progress_listener`) and returns when every
    report is delivered. Records are bit-identical to progress=None.
    """
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        key_impl = str(jax.random.key_impl(keys))
        kd = jax.random.key_data(keys)
    else:
        key_impl, kd = None, jnp.asarray(keys)
    if kd.ndim < 2:
        raise ValueError(f"keys must have a leading run axis, got shape {keys.shape}")
    R = kd.shape[0]
    if R == 0:
        raise ValueError("keys: need at least one run")
    defaults = default_hparams(cfg)
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(f"hparams: unknown name(s) {unknown}; known: {sorted(defaults)}")
    hp = {}
    for k in defaults:
        a = np.asarray(hparams.get(k, defaults[k]), dtype=np.dtype(cfg.dtype))
        if a.ndim == 0:
            a = np.full((R,), a)
        if a.shape != (R,):
            raise ValueError(f"hparams[{k!r}] must be a scalar or have shape ({R},), got {a.shape}")
        hp[k] = a
    if layout is None:
        layout = choose_layout(cfg, R)
    elif not isinstance(layout, Layout):
        raise ValueError(f"layout must be a Layout, got {layout!r}")
    all_devices = jax.devices()
    if layout.n_devices > len(all_devices):
        raise ValueError(f"layout: n_devices={layout.n_devices} but only {len(all_devices)} "
                         f"devices")
    devices = tuple(all_devices[:layout.n_devices])
    D = layout.n_devices
    Rp = -(-R // D) * D
    if Rp != R:
        idx = np.concatenate([np.arange(R), np.full((Rp - R,), R - 1)])
        kd = kd[idx]
        hp = {k: a[idx] for k, a in hp.items()}
    if progress is not None:
        _check_int("progress_every", progress_every, 1)
    fn = _many_fn(cfg, layout, key_impl, tuple(hp), devices,
                  0 if progress is None else progress_every)
    args: tuple = (kd, hp) if progress is None else (kd, hp, np.arange(Rp, dtype=np.int32))
    if D > 1:
        sharding = NamedSharding(Mesh(np.asarray(devices), ("runs",)), PartitionSpec("runs"))
        args = jax.device_put(args, sharding)
    if progress is None:
        out = fn(*args)
    else:
        def report(lanes: np.ndarray, steps: int) -> None:
            lanes = lanes[lanes < R]
            if lanes.size:
                progress(lanes, steps)

        with progress_listener(report):
            out = jax.block_until_ready(fn(*args))
    if Rp != R:
        out = jax.tree.map(lambda a: a[:R], out)
    return out
