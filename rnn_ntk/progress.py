"""In-program step progress: a per-log hook for ``make_train`` and the host listener it reports to.

    train = make_train(cfg, on_log=progress_hook(cfg, every))   # a separately compiled variant
    with progress_listener(lambda lanes, steps: ...):
        records = jax.jit(train)(key, hparams, lane)

:func:`progress_hook` builds the hook: at every ``every``-th log (and the last) the program ends
the log's steps with an unordered host callback (``jax.debug.callback``) saying "runs L did these
steps"; the default program (no hook) has no callback (no cost, and it is never rebuilt). The
callback is a ``custom_vmap``, so a vmapped batch of b runs reports once with its b lane tags
(debug callbacks are otherwise unrolled into b calls); under lax.map (b = 1) and shard_map each run
reports by itself, from its device's thread. Its one operand is an int32 pair (2 lane + diverged,
log index): each operand costs the host a device_put, and the divergence flag orders the call
after the log's steps. The compiled callback is a module-level dispatcher that forwards to the
listener installed by :func:`progress_listener` (one at a time, serialised by a lock), so one
compiled program serves every call. A report costs the host from tens of microseconds (idle cores)
to about a millisecond (a loaded machine), so ``every`` should leave much more work than that
between reports (``rnn_ntk.sweep.progress_every`` picks it from the sweep's cost model). Records
are bit-identical with and without the hook.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import schema
from rnn_ntk.train import RunState, TrainConfig

Array = jax.Array

__all__ = ["progress_hook", "progress_listener"]

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


def progress_hook(cfg: TrainConfig, every: int) -> Callable[[Array, RunState, Any], None]:
    """The per-log hook of the progress variant of ``make_train(cfg, on_log=...)``.

    Args:
      cfg: the run's TrainConfig (its log_every and number of logs).
      every: report after every ``every``-th log and after the last, >= 1.

    Returns:
      ``on_log(k, state, lane)``: reports to the listener of :func:`progress_listener` that run
      ``lane`` (int, the tag passed to ``train(key, hparams, lane)``) did the steps since its
      previous report (over a run they sum to cfg.steps).
    """
    schema.check_int("progress_every", every, 1)
    report = _progress_reporter(cfg.log_every, every)
    last = cfg.steps // cfg.log_every

    def on_log(k: Array, state: RunState, lane: Any) -> None:
        # reads the divergence flag: runs after this log's steps
        codes = jnp.stack([2 * jnp.asarray(lane, jnp.int32)
                           + state.net.diverged.astype(jnp.int32), k.astype(jnp.int32)])
        if every == 1:
            report(codes)
        else:
            jax.lax.cond((k % every == 0) | (k == last), report, lambda c: c, codes)

    return on_log


@contextlib.contextmanager
def progress_listener(fn: Callable[[np.ndarray, int], None]) -> Iterator[None]:
    """Install ``fn(lanes, steps)`` as the receiver of progress reports while the block runs.

    Each call says that the runs tagged ``lanes`` (int array) each did ``steps`` more steps.
    Calls come from device threads, one at a time (under a lock). One listener at a time per
    process; on exit, waits for reports still in flight (jax.effects_barrier).

    Args:
      fn: the listener.
    """
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
