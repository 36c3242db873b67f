"""Many runs of one bucket as lanes of one compiled program, over the devices.

    records_R = train_many(cfg, keys_R, hparams_R)     # R runs, records with a leading run axis R
    keys_R = run_keys(base_seed, coords_RC)            # one key per run, stable as sweeps grow

Lane layout (:func:`train_many`): a :class:`Layout` is (number of devices, per-device strategy).
The run axis is padded to a multiple of the device count and sharded over a 1-D mesh ('runs') with
``shard_map``; on each device the runs go through ``lax.map`` with ``batch_size`` b (b = 1: one
run at a time, each run a plain single-run program; b > 1: b runs vmapped per iteration) or a full
``vmap``. The default (:func:`choose_layout`) was chosen by measurement (benchmarks/
train_throughput.py): on CPU a program on one host device runs its small matmuls on about one core
and vmapped (batched) small matmuls are no faster per core than a loop, so all host devices
(jax_num_cpu_devices, set by the caller) each run their share with ``lax.map`` (b = 1); on GPU/TPU
wide ``vmap`` is the point, capped by memory.

Compiled programs are cached per (cfg, layout, hparam names, progress_every); new hparam values
or keys of the same R never recompile. :func:`release_compiled` drops them when the process
nears Linux's memory-map limit (XLA:CPU keeps ~500 maps per cached program). Step progress
(``train_many(..., progress=fn)``) runs a variant of the program with the per-log hook of
:mod:`rnn_ntk.progress`.

Checkpointed runs (``train_many(..., checkpoint=ckpt)`` with cfg.checkpoint_every = K): the lanes
run the segment program (:func:`rnn_ntk.train.make_segment`, compiled once per (cfg, layout)
like the single program, laid out the same way, the segment's first log shared by all lanes)
segment after segment, and the lane states and records so far go to ``ckpt``
(:mod:`rnn_ntk.checkpoint`) between segments; a call finding a saved state continues after it.
The single program of a run never depends on K.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnn_ntk.progress import progress_hook, progress_listener
from rnn_ntk import schema
from rnn_ntk.train import (TrainConfig, _complete_hparams, check_hparams, make_segment, make_train,
                           run_state_shape, segment_logs, segment_starts)
# the one cost model (imports no other rnn_ntk module at import time)
from rnn_ntk.sweep import cost

Array = jax.Array

__all__ = ["ACCEL_MEMORY_FRACTION", "MAP_COUNT_FRACTION", "Layout", "choose_layout",
           "release_compiled", "run_key", "run_keys", "train_many"]

#: Fraction of a device's memory a vmapped batch may use: the cost model's MEMORY_FRACTION
#: (kept under this name for importers; choose_layout reads ``cost.MEMORY_FRACTION``).
ACCEL_MEMORY_FRACTION = cost.MEMORY_FRACTION

#: Fraction of the kernel's per-process memory-map limit (vm.max_map_count) above which
#: :func:`release_compiled` drops every compiled program before the next compile.
MAP_COUNT_FRACTION = 0.6


# ----------------------------------------------------------------------------------------------
# Run keys

def _check_coord(c: Any) -> int:
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < 2 ** 32:
        raise ValueError(f"run_key: coordinates must be ints in [0, 2**32), got {c!r}")
    return int(c)


def run_key(base_seed: int, coords: tuple[int, ...]) -> Array:
    """The key of the run at ``coords`` of a sweep.

    Args:
      base_seed: int in [0, 2**32).
      coords: the run's coordinates, e.g. (seed index, width index, lr index), ints in [0, 2**32).

    Returns:
      A typed key: fold_in(...fold_in(key(base_seed), c_0)..., c_last). Adding runs never
      changes existing ones.
    """
    key = jax.random.key(_check_coord(base_seed))
    for c in coords:
        key = jax.random.fold_in(key, _check_coord(c))
    return key


def run_keys(base_seed: int, coords_RC: Any) -> Array:
    """:func:`run_key` for many runs at once.

    Args:
      base_seed: int in [0, 2**32).
      coords_RC: (R, C) integer array, one row of coordinates per run.

    Returns:
      (R,) typed keys, the same values as ``run_key(base_seed, row)`` per row.
    """
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
# Lane layout

@dataclasses.dataclass(frozen=True)
class Layout:
    """How R runs are laid out: over ``n_devices`` devices (a 1-D mesh 'runs'), and on each device
    with ``strategy`` 'map' (lax.map, ``batch_size`` runs vmapped per iteration) or 'vmap'
    (all of the device's runs vmapped at once)."""

    n_devices: int = 1
    strategy: str = "map"
    batch_size: int = 1

    def __post_init__(self) -> None:
        schema.check_int("n_devices", self.n_devices, 1)
        schema.require("strategy", self.strategy, schema.choice(("map", "vmap")))
        schema.check_int("batch_size", self.batch_size, 1)


def choose_layout(cfg: TrainConfig, n_runs: int, *, backend: str | None = None,
                  devices: list | None = None) -> Layout:
    """The default lane layout (rule measured with benchmarks/train_throughput.py --layouts).

    Several processes (jax.distributed): all global devices whatever ``n_runs``.
    CPU: every host device (jax_num_cpu_devices) takes an equal share of the runs (never more
    devices than runs) and runs it with lax.map, one run per iteration (batch_size 1): each
    iteration is then exactly the single-run program, the fastest thing per core on XLA CPU
    (vmapped runs are batched small matmuls: measured within a few percent of it per core even
    for tiny runs, slower for larger ones; the parallelism comes from the devices). It also
    makes a run's bits independent of R, so adding runs to a bucket never changes existing ones.
    GPU/TPU: all devices, and on each a vmap of all its runs, or lax.map over vmapped batches of
    as many runs as fit: floor(MEMORY_FRACTION * device_memory / run_bytes), both from
    :mod:`rnn_ntk.sweep.cost` (the memory the sweep planner sizes chunks for: each device's own
    ``memory_stats()`` where reported, else the host RAM shared by the devices).

    Args:
      cfg: the bucket's TrainConfig (its per-run memory, :func:`rnn_ntk.sweep.cost.run_bytes`).
      n_runs: R, the runs of the call.
      backend: 'cpu', 'gpu', 'tpu'; default: the platform of ``devices[0]``.
      devices: default jax.devices().

    Returns:
      The :class:`Layout`.
    """
    devices = jax.devices() if devices is None else devices
    backend = devices[0].platform if backend is None else backend
    # several processes: every global device, also for fewer runs (each process must feed its
    # own devices' share of one program; the padding repeats the last run)
    D = len(devices) if jax.process_count() > 1 else max(1, min(len(devices), n_runs))
    per_dev = -(-n_runs // D)
    if backend == "cpu":
        return Layout(D, "map", 1)
    here = [d for d in devices if getattr(d, "process_index", 0) == jax.process_index()]
    mem = cost.device_memory(here or devices)      # this process's devices report memory
    fit = max(1, int(cost.MEMORY_FRACTION * mem) // max(1, cost.run_bytes(cfg)))
    if fit >= per_dev:
        return Layout(D, "vmap", per_dev)
    return Layout(D, "map", fit)


# ----------------------------------------------------------------------------------------------
# Compiled-program headroom (Linux memory-map limit)

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
    memory-map limit.

    Why: XLA's CPU backend maps each compiled kernel into its own pages, about 3 memory maps per
    kernel and ~500 per small training program, and keeps them while the program is cached.
    A process that compiles a few hundred programs (a long sweep of buckets compiled apart,
    `rnn-ntk reproduce` of every experiment, a test session) reaches Linux's default
    vm.max_map_count of 65530, where LLVM fails with "Cannot allocate memory" and the process
    aborts. :func:`train_many` calls this before it builds a new program.

    Args:
      force: drop the programs whatever the count.

    Returns:
      Whether the programs were dropped (later calls recompile).
    """
    if not force:
        counts = _map_counts()
        if counts is None or counts[0] <= MAP_COUNT_FRACTION * counts[1]:
            return False
    _many_fn.cache_clear()
    _segment_fn.cache_clear()
    jax.clear_caches()
    gc.collect()
    return True


# ----------------------------------------------------------------------------------------------
# Many runs

@functools.lru_cache(maxsize=16)
def _many_fn(cfg: TrainConfig, layout: Layout, key_impl: str | None, hp_names: tuple[str, ...],
             devices: tuple, progress: int = 0) -> Callable:
    """The compiled program fn(kd_R, hp_R[, lane_R]) (lane_R: progress tags, progress only).
    Runs only on a cache miss, i.e. before a new program compiles: the memory-map check lives
    here, off the path of calls that reuse a program (reading /proc/self/maps costs ~2 ms at
    700 maps and grows with the count).

    No buffer donation (``donate_argnums``), on purpose: the inputs are the key data (R, 2)
    uint32, the hyperparameters (R,) each and the lane tags (R,) int32, a few bytes per lane;
    every large per-lane buffer (parameters, optimiser state, data, activations) is made inside
    the program from the key, so XLA already reuses it, and no output has an input's shape and
    dtype to alias. Donating would save nothing and would invalidate the caller's ``keys``
    (passed through unchanged when no padding is needed)."""
    release_compiled()
    train = make_train(cfg, on_log=progress_hook(cfg, progress) if progress else None)

    def one(kd, hp, *lane):
        key = kd if key_impl is None else jax.random.wrap_key_data(kd, impl=key_impl)
        return train(key, hp, *lane)

    return _over_lanes(one, layout, devices, n_batched=3 if progress else 2)


def _over_lanes(one: Callable, layout: Layout, devices: tuple, *, n_batched: int,
                n_shared: int = 0) -> Callable:
    """jit of ``one`` over the runs: fn(*shared, *batched_R) calls one(*shared, *lane_args) per
    lane, the lanes by vmap or lax.map as ``layout`` says, sharded over ``devices`` along the run
    axis when there are several; the first ``n_shared`` arguments go to every lane unbatched."""
    def local(*args):
        shared, args_R = args[:n_shared], args[n_shared:]

        def lane(*a):
            return one(*shared, *a)

        if layout.strategy == "vmap":
            return jax.vmap(lane)(*args_R)
        return jax.lax.map(lambda a: lane(*a), args_R, batch_size=layout.batch_size)

    if layout.n_devices == 1:
        return jax.jit(local)
    mesh = Mesh(np.asarray(devices), ("runs",))
    spec = PartitionSpec("runs")
    sharded = jax.shard_map(local, mesh=mesh,
                            in_specs=(PartitionSpec(),) * n_shared + (spec,) * n_batched,
                            out_specs=spec, check_vma=False)
    return jax.jit(sharded)


def _key_data(keys: Array) -> tuple[str | None, Array]:
    """(key implementation or None for raw keys, key data (R, ...)) of train_many's keys."""
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        key_impl, kd = str(jax.random.key_impl(keys)), jax.random.key_data(keys)
    else:
        key_impl, kd = None, jnp.asarray(keys)
    if kd.ndim < 2:
        raise ValueError(f"keys must have a leading run axis, got shape {keys.shape}")
    if kd.shape[0] == 0:
        raise ValueError("keys: need at least one run")
    return key_impl, kd


def _checked_layout(cfg: TrainConfig, layout: Layout | None, R: int) -> Layout:
    if layout is None:
        layout = choose_layout(cfg, R)
        if jax.process_count() > 1:    # one program on all processes: process 0's layout
            from rnn_ntk.distributed import broadcast_json
            layout = Layout(**broadcast_json(dataclasses.asdict(layout)))
        return layout
    if not isinstance(layout, Layout):
        raise ValueError(f"layout must be a Layout, got {layout!r}")
    n_available = len(jax.devices())
    if layout.n_devices > n_available:
        raise ValueError(f"layout: n_devices={layout.n_devices} but only {n_available} devices")
    if jax.process_count() > 1 and layout.n_devices != n_available:
        raise ValueError(f"layout: n_devices={layout.n_devices}, but with several processes every "
                         f"one of the {n_available} global devices takes lanes")
    return layout


def _global_call(fn: Callable, devices: tuple, *args: Any) -> Any:
    """Several processes: ``fn`` on the global mesh, inputs cut from the (identical) host arrays
    of every process, outputs all-gathered to every process as numpy arrays."""
    from jax.experimental import multihost_utils
    sharding = NamedSharding(Mesh(np.asarray(devices), ("runs",)), PartitionSpec("runs"))

    def put(a: Any) -> Array:
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return multihost_utils.process_allgather(fn(*jax.tree.map(put, args)), tiled=True)


def _real_lanes_only(progress: Callable[[np.ndarray, int], None], R: int
                     ) -> Callable[[np.ndarray, int], None]:
    """The progress callback as the engine calls it: the padding lanes (index >= R) dropped, and
    no call when only padding lanes report."""
    def report(lanes: np.ndarray, steps: int) -> None:
        lanes = lanes[lanes < R]
        if lanes.size:
            progress(lanes, steps)
    return report


def train_many(cfg: TrainConfig, keys: Array, hparams: dict[str, Any], *,
               layout: Layout | None = None,
               progress: Callable[[np.ndarray, int], None] | None = None,
               progress_every: int = 1, checkpoint: Any = None) -> dict[str, Array]:
    """R runs of one bucket in one compiled program.

    The runs are padded to a multiple of layout.n_devices (by repeating the last run; the padding
    is dropped) and sharded over a 1-D mesh 'runs' of the first n_devices devices with shard_map;
    see :class:`Layout` and :func:`choose_layout`. Several processes
    (:mod:`rnn_ntk.distributed`) call it alike: the mesh holds every global device, each process
    feeds its own devices' lanes and gets all R runs' records back (numpy). Compiled programs are cached per (cfg, layout,
    hparam names); new hparam values or keys of the same R never recompile.

    Args:
      cfg: the bucket's TrainConfig.
      keys: (R,) typed keys (e.g. from :func:`run_keys`) or raw (R, 2) uint32 key data.
      hparams: name -> (R,) array or scalar (broadcast); missing names take their defaults
        (:func:`rnn_ntk.train.default_hparams`).
      layout: the lane layout; default :func:`choose_layout`.
      progress: None (the default program, no callback), or ``progress(lanes, steps)``, called
        after every ``progress_every``-th log and the last of each run (once per vmapped batch)
        with the run indices ``lanes`` (into 0..R-1; device padding is dropped) that each did
        ``steps`` more steps; over the whole call they sum to R * cfg.steps run-steps. Calls come
        from device threads, one at a time. Runs the progress variant of the program (compiled
        and cached separately per progress_every, see :mod:`rnn_ntk.progress`) and returns when
        every report is delivered. Records are bit-identical to progress=None.
      progress_every: logs between reports (>= 1).
      checkpoint: None, or where to keep the lanes' state between segments (a
        :class:`rnn_ntk.checkpoint.ChunkCheckpoint`: ``restore(like, meta)``, ``save(step, tree,
        meta)``). With cfg.checkpoint_every = K (0 < K < steps) the runs go through the segment
        program (:func:`rnn_ntk.train.make_segment`, one compiled program for every segment):
        after each segment of ceil(K / log_every) logs but the last, the lane states (padded
        lanes included) and the records so far are saved; a call finding a saved state continues
        after it (progress then first reports the restored steps). Records are bit-identical to
        a call without checkpoint (tested on CPU). Ignored when cfg.checkpoint_every is 0 or
        >= steps.

    Returns:
      make_train's records with a leading run axis R (numpy arrays when checkpointed).
    """
    check_hparams(cfg, hparams)
    key_impl, kd = _key_data(keys)
    R = kd.shape[0]
    hp = _complete_hparams(cfg, hparams, runs=R)
    layout = _checked_layout(cfg, layout, R)
    if progress is not None:
        schema.check_int("progress_every", progress_every, 1)
    devices = tuple(jax.devices()[:layout.n_devices])
    D = layout.n_devices
    Rp = -(-R // D) * D
    if Rp != R:
        idx = np.concatenate([np.arange(R), np.full((Rp - R,), R - 1)])
        kd = kd[idx]
        hp = {k: a[idx] for k, a in hp.items()}
    if checkpoint is not None and segment_logs(cfg):
        return _train_segments(cfg, kd, hp, key_impl, layout, devices, R, checkpoint, progress,
                               progress_every)
    # checkpoint_every never changes the program of an unsegmented run: one cached program
    one_cfg = cfg.replace(checkpoint_every=0) if cfg.checkpoint_every else cfg
    fn = _many_fn(one_cfg, layout, key_impl, tuple(hp), devices,
                  0 if progress is None else progress_every)
    args: tuple = (kd, hp) if progress is None else (kd, hp, np.arange(Rp, dtype=np.int32))
    run = fn
    if jax.process_count() > 1:
        run = functools.partial(_global_call, fn, devices)
    elif D > 1:
        sharding = NamedSharding(Mesh(np.asarray(devices), ("runs",)), PartitionSpec("runs"))
        args = jax.device_put(args, sharding)
    if progress is None:
        out = run(*args)
    else:
        report = _real_lanes_only(progress, R)
        with progress_listener(report):
            out = jax.block_until_ready(run(*args))
    if Rp != R:
        out = jax.tree.map(lambda a: a[:R], out)
    return out


# ----------------------------------------------------------------------------------------------
# Checkpointed runs: the segment program over ranges of logs, states saved in between

@functools.lru_cache(maxsize=16)
def _segment_fn(cfg: TrainConfig, layout: Layout, key_impl: str | None, hp_names: tuple[str, ...],
                devices: tuple, progress: int = 0) -> Callable:
    """The compiled segment program fn(k0, kd_R, hp_R, state_R[, lane_R]) -> (state_R,
    records_R (R, L), saved_R): :func:`rnn_ntk.train.make_segment` laid out as :func:`_many_fn`
    lays out make_train (k0, the segment's first log, is shared by the lanes: not batched, so
    the program's conds stay branches under vmap)."""
    release_compiled()
    seg = make_segment(cfg, on_log=progress_hook(cfg, progress) if progress else None)

    def one(k0, kd, hp, state, *lane):
        key = kd if key_impl is None else jax.random.wrap_key_data(kd, impl=key_impl)
        return seg(key, hp, state, k0, *lane)

    return _over_lanes(one, layout, devices, n_batched=4 if progress else 3, n_shared=1)


def _fingerprint(cfg: TrainConfig, kd: Any, hp: dict[str, np.ndarray], L: int) -> dict[str, Any]:
    """What a saved lane state belongs to: the config, the lanes' keys and hyper-parameters and
    the segment length (a checkpoint of anything else is refused)."""
    import hashlib
    h = hashlib.sha256(repr(cfg).encode())
    h.update(np.ascontiguousarray(np.asarray(kd)).tobytes())
    for k in sorted(hp):
        h.update(k.encode())
        h.update(np.ascontiguousarray(hp[k]).tobytes())
    return {"lanes_sha256": h.hexdigest(), "lanes": int(np.shape(kd)[0]), "segment_logs": L,
            "n_logs": cfg.n_logs, "log_every": cfg.log_every}


def _train_segments(cfg: TrainConfig, kd: Any, hp: dict[str, np.ndarray], key_impl: str | None,
                    layout: Layout, devices: tuple, R: int, checkpoint: Any,
                    progress: Callable[[np.ndarray, int], None] | None, progress_every: int
                    ) -> dict[str, Any]:
    """train_many's checkpointed path (kd, hp already padded to the device multiple)."""
    L = segment_logs(cfg)
    starts = segment_starts(cfg)
    Rp, D, n_logs = int(np.shape(kd)[0]), layout.n_devices, cfg.n_logs
    fn = _segment_fn(cfg, layout, key_impl, tuple(hp), devices,
                     0 if progress is None else progress_every)
    sharding = (NamedSharding(Mesh(np.asarray(devices), ("runs",)), PartitionSpec("runs"))
                if D > 1 else jax.sharding.SingleDeviceSharding(devices[0]))
    key0 = kd[0] if key_impl is None else jax.random.wrap_key_data(kd[0], impl=key_impl)
    one = run_state_shape(cfg, key0, {k: a[0] for k, a in hp.items()})
    state_like = jax.tree.map(lambda s: jax.ShapeDtypeStruct((Rp,) + s.shape, s.dtype,
                                                             sharding=sharding), one)
    rec_like = jax.eval_shape(lambda *a: fn(*a)[1], np.int32(0), kd, hp, state_like,
                              *(() if progress is None else (np.zeros(Rp, np.int32),)))
    records = {k: np.zeros((Rp, n_logs) + s.shape[2:], s.dtype) for k, s in rec_like.items()}
    meta = _fingerprint(cfg, kd, hp, L)
    like = {"state": state_like, "records": records}
    first = 0
    restored = checkpoint.restore(like, meta)
    if restored is not None:
        saved_meta, tree = restored
        first = int(saved_meta["segment"])
        state, records = tree["state"], {k: np.asarray(a) for k, a in tree["records"].items()}
    else:
        state = jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype), sharding),
                             state_like)
    args = (kd, hp) if progress is None else (kd, hp, np.arange(Rp, dtype=np.int32))
    if D > 1:
        args = jax.device_put(args, sharding)
    k_dtype = jnp.arange(1).dtype

    def run() -> dict[str, Any]:
        nonlocal state
        saved = {}
        for j in range(first, len(starts)):
            k0 = starts[j]
            state, rec, saved = fn(np.asarray(k0, k_dtype), *args[:2], state, *args[2:])
            lo, hi = max(k0, 0), min(k0 + L, n_logs)
            for k, a in jax.device_get(rec).items():
                records[k][:, lo:hi] = a[:, lo - k0:hi - k0]
            if 0 < hi - 1 and j + 1 < len(starts):     # none at step 0 or at the end
                checkpoint.save((hi - 1) * cfg.log_every, {"state": state, "records": records},
                                dict(meta, segment=j + 1))
        return saved

    if progress is None:
        saved = run()
    else:
        report = _real_lanes_only(progress, R)
        with progress_listener(report):
            if first:     # the steps before the restored state, as if run now
                report(np.arange(Rp), (min(starts[first], n_logs) - 1) * cfg.log_every)
            saved = jax.block_until_ready(run())
    out: dict[str, Any] = {k: a[:R] for k, a in records.items()}
    out.update(jax.tree.map(lambda a: np.asarray(a)[:R], jax.device_get(saved)))
    return out
