"""Several JAX processes, one sweep: start-up of ``jax.distributed``, agreement, one writer.

    from rnn_ntk import distributed
    distributed.initialize()                       # first JAX call of the process (Slurm, TPU: auto)
    distributed.initialize("10.0.0.1:4321", 4, i)  # or by hand (or RNN_NTK_COORDINATOR, ...)
    distributed.agree({"spec": spec.resolved})     # every process holds the same plan, or all raise

This is JAX's multi-controller model: every process runs the same Python program, sees the
devices of all processes (``jax.devices()``) and its own (``jax.local_devices()``), and each
compiled program runs on all of them at once. :func:`rnn_ntk.lanes.train_many` lays a chunk's
lanes over a 1-D mesh of every global device; each process feeds its own devices' lanes and
gets every lane's records back (an all-gather of a few KB per lane).

Who writes the store: process 0 alone, and the others never open it. Why: (1) no shared file
system is needed (TPU pod hosts and many clusters have none: the store lives on process 0's
disk); (2) the store keeps the one-writer rules of a one-process run unchanged (the directory
lock, atomic chunk renames, the header, consolidation, ``--resume``), so a distributed store is
byte-for-byte the format of any other; (3) the records are small next to the training that makes
them (a chunk's records are KB to MB, gathered once per chunk), so one writer is not the
bottleneck. Each process writing its own lanes would need a shared file system, one chunk per
process per program and a merge, for no gain at these sizes. Process 0 plans what remains (reads
the done set on ``--resume``, holds the lock) and broadcasts it; the others rebuild the identical
plan and check it (:func:`agree`); after each chunk every process waits for process 0's write
(:func:`from_writer`), so an error there (disk full, ...) is raised on every process.

Start-up never hangs: :func:`initialize` arms a watchdog; a process that cannot join the cluster
(coordinator unreachable, or processes missing) within ``timeout_s`` (default 120 s, env
``RNN_NTK_DIST_TIMEOUT``) writes one line to stderr and exits with status 1. (JAX itself would
abort the process with a fatal-error stack trace after its own ``initialization_timeout``, set
30 s later than the watchdog.) After start-up JAX's heartbeat (100 s) ends processes whose peer
died, and a process waits at most the same timeout (+30 s) for the others when it exits.
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
from typing import Any, Callable, Mapping

__all__ = ["ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "ENV_TIMEOUT",
           "DEFAULT_TIMEOUT_S", "DistributedError", "MismatchError", "initialize", "process_count",
           "is_writer", "allgather_bytes", "broadcast_json", "agree", "from_writer"]

ENV_COORDINATOR = "RNN_NTK_COORDINATOR"
ENV_NUM_PROCESSES = "RNN_NTK_NUM_PROCESSES"
ENV_PROCESS_ID = "RNN_NTK_PROCESS_ID"
ENV_TIMEOUT = "RNN_NTK_DIST_TIMEOUT"
#: Seconds a process may take to join the cluster before it exits (env RNN_NTK_DIST_TIMEOUT).
DEFAULT_TIMEOUT_S = 120.0
#: JAX's own initialization_timeout is the watchdog's plus this (the watchdog speaks first).
_JAX_GRACE_S = 30

_ADDRESS_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class DistributedError(RuntimeError):
    """Several processes cannot run together (bad settings, a failed start, a failed peer).
    The message is one line."""


class MismatchError(DistributedError):
    """The processes hold different specs or plans; ``keys``: the differing (dotted) keys."""

    def __init__(self, message: str, keys: list[str]):
        super().__init__(message)
        self.keys = list(keys)


# ----------------------------------------------------------------------------------------------
# start-up

def _setting(name: str, value: Any, env: str, kind: Callable[[str], Any]) -> Any:
    """``value`` if given, else the environment variable ``env`` parsed by ``kind``, else None."""
    if value is not None:
        return value
    text = os.environ.get(env, "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise DistributedError(f"{env}={text!r}: {name} must be an integer") from None


def _timeout(timeout_s: float | None) -> float:
    t = _setting("the timeout (seconds)", timeout_s, ENV_TIMEOUT, float)
    t = DEFAULT_TIMEOUT_S if t is None else t
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1e6:
        raise DistributedError(f"timeout_s must be a number of seconds > 0, got {t!r}")
    return float(t)


def _check(coordinator: Any, num_processes: Any, process_id: Any) -> None:
    """One-line errors for settings JAX would reject late or obscurely."""
    if coordinator is not None and (not isinstance(coordinator, str)
                                    or not _ADDRESS_RE.match(coordinator)
                                    or not 0 < int(coordinator.rsplit(":", 1)[1]) < 65536):
        raise DistributedError(f"coordinator must be HOST:PORT (port 1-65535), got {coordinator!r}")
    for name, v, lo in (("num_processes", num_processes, 1), ("process_id", process_id, 0)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise DistributedError(f"{name} must be an integer >= {lo}, got {v!r}")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise DistributedError(f"process_id must be in [0, {num_processes}), got {process_id}")


def _exit_on_timeout(message: str) -> None:
    """The watchdog's default: one line on stderr, then exit status 1 at once (the main thread
    is blocked inside JAX's C++ start-up, so raising there is impossible)."""
    try:
        os.write(2, f"rnn_ntk.distributed: error: {message}\n".encode())
    finally:
        os._exit(1)


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: float | None = None,
               on_timeout: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Join this process to a multi-process JAX run; the first JAX call of the process.

    Where each setting comes from: the argument, else the environment variable
    (RNN_NTK_COORDINATOR = HOST:PORT of process 0, RNN_NTK_NUM_PROCESSES, RNN_NTK_PROCESS_ID),
    else JAX's cluster auto-detection (Slurm, Open MPI, Cloud TPU pods: with nothing given,
    this is plain ``jax.distributed.initialize()``). Explicit settings win over a detected
    cluster. CPU collectives go through gloo (``jax_cpu_collectives_implementation``, set to
    'gloo' unless configured otherwise). Calling it again in an initialised process does nothing.

    Args:
      coordinator: 'HOST:PORT' of process 0 (it serves the coordinator there).
      num_processes: N >= 1.
      process_id: this process's index in [0, N).
      timeout_s: seconds to join the cluster (coordinator reachable and all N processes
        connected); default env RNN_NTK_DIST_TIMEOUT, else 120.
      on_timeout: called with a one-line message from a watchdog thread when the time is up;
        default: write it to stderr and exit the process with status 1 (never a hang).

    Returns:
      (process index, process count).

    Raises:
      DistributedError: invalid settings, no cluster detected and nothing given, or JAX already
        running without jax.distributed (it must come before any other JAX call).
    """
    import jax
    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    coordinator = _setting("coordinator", coordinator, ENV_COORDINATOR, str)
    num_processes = _setting("num_processes", num_processes, ENV_NUM_PROCESSES, int)
    process_id = _setting("process_id", process_id, ENV_PROCESS_ID, int)
    _check(coordinator, num_processes, process_id)
    timeout = _timeout(timeout_s)
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    who = (f"process {process_id if process_id is not None else '?'} of "
           f"{num_processes if num_processes is not None else '?'}")
    where = coordinator or "the detected coordinator"
    message = (f"{who} could not join the cluster at {where} within {timeout:g} s "
               f"({ENV_TIMEOUT}): coordinator unreachable or not every process started")
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(timeout):
            (on_timeout or _exit_on_timeout)(message)

    threading.Thread(target=watchdog, name="rnn_ntk.distributed watchdog", daemon=True).start()
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=int(math.ceil(timeout)) + _JAX_GRACE_S,
                                   shutdown_timeout_seconds=int(math.ceil(timeout)) + _JAX_GRACE_S)
    except ValueError as e:     # JAX: nothing given and no cluster detected
        raise DistributedError(
            f"no cluster detected ({str(e).splitlines()[0] if str(e) else 'jax'}): give the "
            f"coordinator HOST:PORT, the number of processes and this process's id "
            f"(--coordinator/--num-processes/--process-id, or {ENV_COORDINATOR}, "
            f"{ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})") from None
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DistributedError(f"jax.distributed could not start: {first} (it must be the "
                               f"first JAX call of the process)") from None
    finally:
        done.set()
    return jax.process_index(), jax.process_count()


def process_count() -> int:
    """Number of JAX processes (1 without jax.distributed)."""
    import jax
    return jax.process_count()


def is_writer() -> bool:
    """Whether this process writes results: process 0 (always true in a one-process run)."""
    import jax
    return jax.process_index() == 0


# ----------------------------------------------------------------------------------------------
# collectives on bytes (every process must call them, in the same order)

def _padded(n: int) -> int:
    """Buffer length for ``n`` bytes: a power of two >= 64, so few shapes ever compile."""
    return 1 << max(6, (max(n, 1) - 1).bit_length())


def _gather_rows(row: Any) -> Any:
    import numpy as np
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(row))


def allgather_bytes(data: bytes) -> list[bytes]:
    """Every process's ``data``, in process order, on every process (a collective)."""
    import numpy as np
    if process_count() == 1:
        return [bytes(data)]
    lengths = _gather_rows(np.array([len(data)], np.int32)).reshape(-1)
    size = _padded(int(lengths.max()))
    row = np.zeros(size, np.uint8)
    row[:len(data)] = np.frombuffer(bytes(data), np.uint8)
    rows = _gather_rows(row).reshape(len(lengths), size)
    return [rows[i, :int(n)].tobytes() for i, n in enumerate(lengths)]


def broadcast_json(obj: Any = None) -> Any:
    """Process 0's JSON-able ``obj`` on every process (the others' argument is ignored)."""
    import numpy as np
    from jax.experimental import multihost_utils
    if process_count() == 1:
        return json.loads(json.dumps(obj))
    data = json.dumps(obj).encode() if is_writer() else b""
    n = int(np.asarray(multihost_utils.broadcast_one_to_all(np.array([len(data)], np.int32)))[0])
    buf = np.zeros(_padded(n), np.uint8)
    if is_writer():
        buf[:n] = np.frombuffer(data, np.uint8)
    got = np.asarray(multihost_utils.broadcast_one_to_all(buf), np.uint8)
    return json.loads(got[:n].tobytes())


def agree(payload: Mapping[str, Any], what: str = "spec") -> None:
    """Check that every process holds the same JSON-able ``payload`` (compared by the sha256 of
    its canonical JSON, :func:`rnn_ntk.store.spec_hash`); returns on agreement.

    Raises:
      MismatchError: on every process alike, naming the processes that differ from process 0
        and the differing dotted keys (:func:`rnn_ntk.store.spec_diff`).
    """
    from rnn_ntk import store
    if process_count() == 1:
        return
    hashes = allgather_bytes(store.spec_hash(payload).encode())
    if len(set(hashes)) == 1:
        return
    texts = allgather_bytes(store.canonical_json(payload).encode())
    held = [json.loads(t) for t in texts]
    odd = [i for i, h in enumerate(hashes) if h != hashes[0]]
    keys = sorted({k for i in odd for k in store.spec_diff(held[0], held[i])})
    raise MismatchError(
        f"the processes hold different {what}s: process{'es' if len(odd) > 1 else ''} "
        f"{', '.join(map(str, odd))} of {len(hashes)} differ{'' if len(odd) > 1 else 's'} "
        f"from process 0 in "
        f"{', '.join(keys) or 'its hash'}; every process must run the same {what}", keys)


def from_writer(fn: Callable[[], Any], errors: tuple[type[Exception], ...] = ()) -> Any:
    """``fn()`` on process 0 only; its JSON-able result on every process (a collective).

    An exception of a type in ``errors`` raised by ``fn`` is raised on every process (the same
    type, rebuilt from its JSON-able ``args``); any other is re-raised on process 0 and reported
    as a one-line DistributedError on the others. One process: just ``fn()``.
    """
    if process_count() == 1:
        return fn()
    out: dict[str, Any] = {}
    caught: BaseException | None = None
    if is_writer():
        try:
            out = {"ok": fn()}
        except Exception as e:   # noqa: BLE001 -- every process must hear of it
            caught = e
            kind = next((i for i, t in enumerate(errors) if isinstance(e, t)), -1)
            out = {"error": kind, "args": _jsonable_args(e), "text": _one_line(e)}
    got = broadcast_json(out)
    if caught is not None:
        raise caught
    if "error" in got:
        if got["error"] >= 0:
            raise errors[got["error"]](*got["args"])
        raise DistributedError(f"process 0 failed: {got['text']}")
    return got["ok"]


def _one_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _jsonable_args(e: BaseException) -> list:
    """The arguments that rebuild ``e`` (a SpecError is rebuilt from its list of problems)."""
    args = [e.problems] if isinstance(getattr(e, "problems", None), list) else list(e.args)
    try:
        return json.loads(json.dumps(args))
    except (TypeError, ValueError):
        return [str(e)]

