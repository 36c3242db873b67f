"""The one cost model of a sweep: flops, seconds, bytes and the memory available (rough).

The constants only rank plans (``rnn-ntk validate`` prints the estimates as such). Everything
here is a function of a run's :class:`~rnn_ntk.train.TrainConfig` and the backend; this module
imports no other part of rnn_ntk at import time, so that the planner
(:mod:`rnn_ntk.sweep.plan`) and the lane layout (``choose_layout``) can both build on it.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from rnn_ntk.train import TrainConfig

__all__ = [
    "COMPILE_S", "FLOPS", "F64_SLOWDOWN", "STEP_OVERHEAD_S", "CHUNK_OVERHEAD_S", "TARGET_CHUNK_S",
    "MEMORY_FRACTION", "PROGRESS_INTERVAL_S", "PROGRESS_MIN_RUN_S", "compile_seconds",
    "run_flops", "run_seconds", "progress_every", "output_bytes", "run_bytes",
    "available_memory", "device_memory", "memory_source", "parse_size",
]

COMPILE_S = {"cpu": 8.0, "gpu": 20.0, "tpu": 30.0}     # seconds per compiled program
FLOPS = {"cpu": 1.5e10, "gpu": 1.0e13, "tpu": 1.0e13}  # per device, float32
F64_SLOWDOWN = {"cpu": 2.0, "gpu": 4.0, "tpu": 8.0}
STEP_OVERHEAD_S = {"cpu": 5e-6, "gpu": 2e-5, "tpu": 2e-5}  # per recurrence step of a scan
CHUNK_OVERHEAD_S = 0.05
TARGET_CHUNK_S = 120.0       # aim: a chunk is at most about this much estimated work
MEMORY_FRACTION = 0.6        # default budget: this fraction of each device's memory (device_memory)
PROGRESS_INTERVAL_S = 0.5    # aim: this much estimated work between two progress reports of a run
PROGRESS_MIN_RUN_S = 0.1     # runs estimated shorter than this report once, when their chunk ends


def compile_seconds(backend: str) -> float:
    """Estimated seconds to compile one program on ``backend`` ('cpu', 'gpu', 'tpu')."""
    return COMPILE_S.get(backend, 10.0)


def run_flops(cfg: TrainConfig) -> float:
    """Rough floating-point work of one run at the config's array width."""
    M, t = cfg.width_array, cfg.task
    T, d, k = t.length, t.input_dim, t.output_dim
    B = t.n_train if cfg.batch_size is None else cfg.batch_size
    per_ex = 2.0 * T * (M * M + M * d + M * k)        # forward flops of one sequence
    mult = 2.5 if cfg.linearized else 1.0
    step = 3.0 * B * per_ex * mult
    evaluate = (3.0 * t.n_train + t.n_test) * per_ex * mult
    total = cfg.steps * step + cfg.n_logs * evaluate
    if cfg.kernel_stride:
        P = cfg.n_probe
        total += (cfg.n_logs / cfg.kernel_stride + 1) * (2.0 * P * P * T * T * M + 3 * P * per_ex)
    return total


def run_seconds(cfg: TrainConfig, backend: str) -> float:
    """Estimated seconds of one run on one device, not counting compilation."""
    rate = FLOPS.get(backend, FLOPS["cpu"]) / (1.0 if cfg.dtype == "float32"
                                                 else F64_SLOWDOWN.get(backend, 2.0))
    scan_steps = (cfg.steps * 2 + cfg.n_logs * 3) * cfg.task.length
    return run_flops(cfg) / rate + scan_steps * STEP_OVERHEAD_S.get(backend, 5e-6)


def progress_every(cfg: TrainConfig, backend: str) -> int:
    """Logs between a run's progress reports (``train.train_many``'s progress_every), or 0: no
    reports from inside the program (runs estimated under PROGRESS_MIN_RUN_S; their steps are
    reported when the chunk ends). A report costs the host from tens of microseconds to about a
    millisecond on a loaded machine, so the run's n logs are split into r = max(1,
    floor(run_seconds / PROGRESS_INTERVAL_S)) even reports: about PROGRESS_INTERVAL_S or more of
    estimated work between two of them, and at least one per run (the last log always reports)."""
    run_s = run_seconds(cfg, backend)
    if run_s < PROGRESS_MIN_RUN_S:
        return 0
    n = cfg.steps // cfg.log_every
    r = max(1, math.floor(run_s / PROGRESS_INTERVAL_S))
    return max(1, -(-n // r))


def output_bytes(cfg: TrainConfig) -> int:
    """Bytes of one run's records, 8 an entry: the per-log records and, when saved, the initial
    and final parameters (and the linearised model's final ones) at the array width."""
    from rnn_ntk.train import record_names   # at call time: train imports this module
    n = len(record_names(cfg)) * cfg.n_logs
    if cfg.save_params:
        M, t = cfg.width_array, cfg.task
        n += (M * M + M * (t.input_dim + 1 + t.output_dim)) * (3 if cfg.linearized else 2)
    return n * 8


def run_bytes(cfg: TrainConfig) -> int:
    """Rough peak memory of one run in flight (bytes): parameters with gradients and optimiser
    state, activations of the largest forward pass, data, and the probe kernels when recorded.
    Used by ``choose_layout`` (runs per vmapped batch) and by the sweep planner (chunks)."""
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


def _host_bytes() -> int:
    """Bytes of host memory available now (MemAvailable; else free pages; else 4 GiB)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2 ** 30


def _free_bytes(device: Any) -> int | None:
    """A device's own memory free for new buffers, ``bytes_limit - bytes_in_use`` of its
    ``memory_stats()``; None for host (CPU) devices and where the backend reports no limit
    (memory_stats missing, None, raising, or without 'bytes_limit')."""
    if getattr(device, "platform", "cpu") == "cpu":
        return None
    try:
        stats = device.memory_stats()
    except Exception:  # not every backend (or device object) reports memory
        return None
    if not stats or not stats.get("bytes_limit"):
        return None
    return max(0, int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))


def _local_devices(backend: str | None) -> list:
    import jax
    return jax.local_devices(backend="cpu") if backend == "cpu" else jax.local_devices()


def device_memory(devices: Sequence[Any] | None = None) -> int:
    """Memory per device (bytes) that the planner and ``choose_layout`` size work for.

    Devices with their own memory (GPU/TPU): the least, over ``devices``, of
    ``memory_stats()["bytes_limit"] - memory_stats()["bytes_in_use"]``: the limit of XLA's
    allocator less the buffers alive when the plan is made (arrays the process already holds
    on the device), i.e. what new programs can allocate. Otherwise (host devices, or any device
    whose ``memory_stats`` is missing, None, raises or lacks 'bytes_limit'): the available host
    RAM shared by the devices, ``MemAvailable / len(devices)``.

    Args:
        devices: the devices work is laid out over; default ``jax.local_devices()``.

    Returns:
        Bytes per device (before MEMORY_FRACTION).
    """
    devices = _local_devices(None) if devices is None else list(devices)
    free = [_free_bytes(d) for d in devices]
    if devices and all(f is not None for f in free):
        return min(free)
    return _host_bytes() // max(1, len(devices))


def memory_source(devices: Sequence[Any] | None = None) -> str:
    """Where :func:`device_memory` took its number: 'memory_stats' (each device's own memory) or
    'host RAM' (shared by the devices)."""
    devices = _local_devices(None) if devices is None else list(devices)
    ok = devices and all(_free_bytes(d) is not None for d in devices)
    return "memory_stats" if ok else "host RAM"


def available_memory(backend: str | None = None, devices: Sequence[Any] | None = None) -> int:
    """Bytes a sweep may use by default: MEMORY_FRACTION of the memory of all ``devices``
    (:func:`device_memory` times their number): of the available host RAM on CPU, of the
    accelerators' own memory where they report it.

    Args:
        backend: 'cpu' for the host devices; default: the local devices of JAX's default backend.
        devices: the devices (overrides ``backend``).
    """
    if devices is None:
        if backend is None:
            import jax
            backend = jax.default_backend()
        devices = _local_devices(backend)
    devices = list(devices)
    return int(MEMORY_FRACTION * device_memory(devices) * max(1, len(devices)))


def parse_size(text: str) -> int:
    """'512M', '4G', '1.5GiB', '2e9' -> bytes (binary units: K = 1024).

    Raises:
        ValueError: not a size, or not positive and finite.
    """
    s = str(text).strip().upper().replace(" ", "")
    for suffix in ("IB", "B"):
        if s.endswith(suffix) and len(s) > len(suffix) and s[-len(suffix) - 1] in "KMGT":
            s = s[: -len(suffix)]
            break
    mult = 1
    if s and s[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(s[-1]) + 1)
        s = s[:-1]
    try:
        v = float(s) * mult
    except ValueError:
        raise ValueError(f"memory size must look like 512M, 4G or 2e9 bytes, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return int(v)
