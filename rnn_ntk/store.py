"""Result store of a sweep: atomic chunk writes, resume bookkeeping, and the xarray view.

No training happens here; this module only moves numpy arrays between memory and disk.

Layout of an output directory ``OUT``::

    OUT/sweep.json              header: resolved spec (+ its TOML text and hash), the sweep axes and
                                their coordinate values, versions, and the plan's packing decisions
    OUT/chunks/<name>/data.npz  one finished chunk: arrays with a leading run axis
    OUT/chunks/<name>/manifest.json
                                written last inside the chunk; lists the chunk's runs (coordinates)
    OUT/results.zarr            consolidated store (zarr v2 format), written when a run finishes
                                (by a sharded run: when the last run of the store is in)
    OUT/shards.json             a sharded store (``--shard I/N``): N and each chunk's shard
    OUT/.rnn-ntk.lock           while a writer runs: its pid, host and start time (see lock_store);
                                shards hold it shared (see below)
    OUT/.rnn-ntk.lock.shard-I-of-N
                                while shard I of N runs: its pid, host and start time

A chunk is written into ``OUT/chunks/.tmp-<name>-<pid>`` (files fsync'ed, manifest last) and then
renamed to ``OUT/chunks/<name>`` in one ``os.rename``: a chunk directory either exists complete or
not at all, so a crash (even SIGKILL) never leaves a half-written chunk that reads as valid. Leftover
``.tmp-*`` directories are ignored and removed on resume (a shard removes only its own,
``.tmp-shard-I-of-N-*``).

Shards: N processes (``--shard I/N``, e.g. a scheduler's job array on a shared file system) fill
one store at the same time. Each holds its own lock file (exclusive) and the directory lock
shared, so a plain writer (exclusive) and shards exclude each other, and two processes of the same
shard are refused. Nothing is read, modified and written back by several writers: the header and
``shards.json`` are created once with an exclusive ``os.link`` (the first of N shards starting at
once creates them, the others compare with them), and completion is the set of chunk directories
(one atomic rename each), read by a directory scan.

The dataset (``load_results``) is dense over the sweep axes: one dimension per axis (plus ``seed``,
always present) with the axis values as coordinates, then ``step`` and any per-variable dims.
Combinations that were not run (zipped axes, ragged buckets, unfinished chunks) are NaN for float
variables and False for boolean ones; the boolean variable ``ran`` marks the cells holding a
finished run. Buckets with different ``steps``/``log_every`` share the union of their ``step``
values (NaN elsewhere); per-unit arrays (final parameters) are NaN beyond each run's own width.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

__all__ = ["HEADER", "CHUNKS", "RESULTS", "MANIFEST", "DATA", "LOCK", "SHARDS", "FORMAT",
           "StoreError", "StoreConflict", "canonical_json", "spec_hash", "spec_diff",
           "read_header", "StoreLock", "lock_store", "shard_lock_path", "lock_state",
           "open_store", "check_store", "open_shards", "read_shards", "remove_partial",
           "write_chunk", "list_chunks", "done_runs", "assemble", "consolidate",
           "consolidate_if_complete", "load_results"]

HEADER = "sweep.json"
CHUNKS = "chunks"
RESULTS = "results.zarr"
MANIFEST = "manifest.json"
DATA = "data.npz"
LOCK = ".rnn-ntk.lock"
SHARDS = "shards.json"
FORMAT = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class StoreError(RuntimeError):
    """A store cannot be created, resumed or read. The message is one line."""


class StoreConflict(StoreError):
    """The store holds another sweep: a different spec, or another shard count (the CLI exits 2
    for shards: the arguments are wrong, not the store's state)."""


# ---------------------------------------------------------------------------------------------
# small helpers


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text (sorted keys, no whitespace): the basis of the spec hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved spec."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    return {prefix: d}


def spec_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved specs (added/removed keys included)."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if k not in a or k not in b or a[k] != b[k])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    _write_file(tmp, (json.dumps(obj, indent=1) + "\n").encode())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _as_key(coords: Iterable[Any]) -> tuple:
    return tuple(coords)


# ---------------------------------------------------------------------------------------------
# creating / resuming


def read_header(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The header (``sweep.json``) of a store directory."""
    path = Path(out_dir) / HEADER
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{out_dir} is not a sweep store (no {HEADER})") from None
    except json.JSONDecodeError as e:
        raise StoreError(f"{path} is not valid JSON: {e}") from None


# ---------------------------------------------------------------------------------------------
# one writer per directory


@dataclasses.dataclass
class StoreLock:
    """A held writer lock on a store directory (see :func:`lock_store`). ``note``: one line
    saying that a stale lock was taken over, else None. A shard's lock also holds the
    directory lock shared (``shared_fd``)."""

    path: Path
    fd: int
    note: str | None = None
    created_dir: bool = False
    shared_fd: int = -1

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent); an output directory that this
        lock created and that is still empty is removed too. A shard drops its shared hold on
        the directory lock, and removes that file too when it was the last holder."""
        if self.shared_fd >= 0:
            fd, self.shared_fd = self.shared_fd, -1
            _drop_shared(self.path.parent / LOCK, fd)
        if self.fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding the flock
        finally:
            os.close(self.fd)
            self.fd = -1
        if self.created_dir:
            try:
                self.path.parent.rmdir()  # only succeeds when empty
            except OSError:
                pass

    def __enter__(self) -> "StoreLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _lock_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode(errors="replace")
        info = json.loads(text) if text.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe_holder(info: Mapping[str, Any]) -> str:
    if not info:
        return "holder unknown (empty lock file)"
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started "
            f"{info.get('started', '?')}")


def _pid_alive(pid: Any) -> bool | None:
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shard_lock_path(out_dir: str | os.PathLike, label: str) -> Path:
    """The lock file of one shard (``label`` e.g. 'shard-0-of-4'): ``OUT/.rnn-ntk.lock.<label>``."""
    return Path(out_dir) / f"{LOCK}.{label}"


def _flock_same_file(path: Path, mode: int) -> int | None:
    """Open ``path`` (created if missing) and flock it non-blocking; the fd, or None when held
    by another writer in a conflicting mode. Retries when the file was replaced meanwhile (a
    releasing holder removes it)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return _close_none(fd)
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed this file as we opened it: lock the new one


def _close_none(fd: int) -> None:
    os.close(fd)
    return None


def _drop_shared(path: Path, fd: int) -> None:
    """Release a shared hold of the directory lock; the last holder (the one that can turn it
    exclusive) removes the file, as a plain writer does."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                path.unlink()
        except FileNotFoundError:
            pass
    except BlockingIOError:
        pass        # other shards still hold it (the conversion dropped ours)
    finally:
        os.close(fd)


def _live_shards(out: Path) -> list[str]:
    """'I/N (holder)' of the shard locks in ``out`` whose holders live (see :func:`lock_state`)."""
    found = []
    for p in sorted(out.glob(f"{LOCK}.shard-*")):
        info, state = lock_state(p)
        if state != "dead":
            m = re.match(r"shard-(\d+)-of-(\d+)$", p.name[len(LOCK) + 1:])
            label = f"{m.group(1)}/{m.group(2)}" if m else p.name
            found.append(f"{label} ({_describe_holder(info)})")
    return found


def lock_store(out_dir: str | os.PathLike, *, shard: str | None = None) -> StoreLock:
    """Take the writer lock of ``out_dir`` (created if missing) or raise StoreError naming the
    holder; use as a context manager (released on exit, also on exceptions).

    The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``OUT/.rnn-ntk.lock``, which holds the
    writer's pid, host and start time. The kernel drops a flock when its process dies (even by
    SIGKILL), so a lock file left behind by a dead writer is stale: the next writer takes it
    over (``note`` says so). A flock held by a live process, on this host or (on file systems
    that support it, e.g. NFSv4) another, refuses the second writer. Release removes the file.

    ``shard`` (a label such as 'shard-0-of-4'): the same on the shard's own file
    (:func:`shard_lock_path`), plus a shared flock on ``OUT/.rnn-ntk.lock``: any number of
    shards run at once, a plain writer is refused while one runs, and a shard while a plain
    writer runs.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StoreError(f"{out} exists and is not a directory")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK if shard is None else shard_lock_path(out, shard)
    fd = _flock_same_file(path, fcntl.LOCK_EX)
    if fd is None:
        info = _read_json_file(path)
        shards = _live_shards(out) if shard is None else []
        who = (f"rnn-ntk shard(s) {', '.join(shards)}" if shards
               else f"another rnn-ntk writer ({_describe_holder(info)})")
        raise StoreError(f"{out} is in use by {who}; wait for it to finish or stop it, "
                         f"then use --resume")
    lock = StoreLock(path, fd, created_dir=created)
    try:
        if shard is not None:
            lock.shared_fd = _flock_same_file(out / LOCK, fcntl.LOCK_SH)
            if lock.shared_fd is None:
                lock.shared_fd = -1
                info = _read_json_file(out / LOCK)
                raise StoreError(f"{out} is in use by a plain (unsharded) rnn-ntk writer "
                                 f"({_describe_holder(info)}); shards cannot join it")
        old = _lock_holder(fd)
        if old:
            gone = ""
            if old.get("host") == socket.gethostname() and _pid_alive(old.get("pid")) is False:
                gone = "; that process is gone"
            lock.note = (f"taking over the stale lock of {out}"
                         f"{'' if shard is None else ' ' + shard} ({_describe_holder(old)}{gone}); "
                         f"it was not released")
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)
    except BaseException:
        lock.release()
        raise
    return lock


def _read_json_file(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _held_here(path: Path) -> bool | None:
    """Whether a process on this host holds a lock on ``path`` (from /proc/locks, without taking
    one); None when that cannot be told."""
    try:
        ino = os.stat(path).st_ino
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if "->" in parts:          # a waiter, not a holder
            continue
        for p in parts:
            if p.count(":") == 2 and p.rsplit(":", 1)[1] == str(ino):
                return True
    return False


def lock_state(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """(holder info, state) of a lock file, read-only (takes no lock). state: 'absent' (no
    file), 'live' (its holder runs: a lock on the file in /proc/locks, or a live pid, on this
    host), 'dead' (left behind by a writer that died without releasing it), 'unknown' (held by
    another host: its liveness cannot be told from here)."""
    path = Path(path)
    if not path.exists():
        return {}, "absent"
    info = _read_json_file(path)
    if info and info.get("host") != socket.gethostname():
        return info, "unknown"
    alive = _pid_alive(info.get("pid"))
    if alive is False:         # its writer is gone (whoever else may lock the file now)
        return info, "dead"
    held = _held_here(path)
    if held is None:
        held = bool(alive)
    return info, "live" if held else "dead"


def _entries(out: Path) -> list[Path]:
    """A directory's entries, without the lock files."""
    return [p for p in out.iterdir() if p.name != LOCK and not p.name.startswith(LOCK + ".")]


def _create_exclusive(path: Path, obj: Any) -> bool:
    """Write JSON to ``path`` unless it exists, atomically and race-free (a complete temporary
    file hard-linked into place: exactly one of several concurrent creators succeeds); returns
    whether this call created it."""
    tmp = path.with_name(f".tmp-{path.name}-{socket.gethostname()}-{os.getpid()}-"
                         f"{threading.get_ident()}")
    _write_file(tmp, (json.dumps(obj, indent=1) + "\n").encode())
    try:
        os.link(tmp, path)
        created = True
    except FileExistsError:
        created = False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return created


def _check_spec(out: Path, old: Mapping[str, Any], header: Mapping[str, Any], what: str) -> None:
    if old.get("spec_hash") != header["spec_hash"] or old.get("spec") != header["spec"]:
        changed = spec_diff(old.get("spec", {}), header["spec"])
        raise StoreConflict(f"{what} {out}: the spec changed since the first run "
                            f"(changed: {', '.join(changed) or 'spec hash'}); use a new --out "
                            f"directory")


def check_store(out_dir: str | os.PathLike, spec: Mapping[str, Any],
                shards: int | None = None) -> None:
    """Read-only check before any compute that a store (if there is one) holds this spec and, for
    a shard, the same shard count; raises StoreConflict naming what differs."""
    out = Path(out_dir)
    if (out / HEADER).is_file():
        _check_spec(out, read_header(out), {"spec": spec, "spec_hash": spec_hash(spec)},
                    "cannot run into")
    if shards is not None:
        rec = read_shards(out)
        if rec is not None and rec.get("count") != shards:
            raise StoreConflict(f"{out} is split into {rec.get('count')} shards ({SHARDS}), "
                                f"not {shards}; use --shard I/{rec.get('count')}")


def open_store(out_dir: str | os.PathLike, header: Mapping[str, Any], *, resume: bool,
               shard: str | None = None) -> dict[str, Any]:
    """Create a store, or reopen one to resume; returns the header in force.

    ``header`` must hold ``spec`` (the resolved spec, a JSON-able dict), ``axes`` (ordered mapping
    axis name -> list of coordinate values) and may hold anything else JSON-able (``spec_toml``,
    ``versions``, ``plan``, ``n_runs``); ``spec_hash`` is added here.

    New store: ``out_dir`` must not exist or be empty (else StoreError: nothing is overwritten).
    Resume: ``out_dir`` must hold a header whose resolved spec equals ``header['spec']``; otherwise
    StoreError naming the changed keys. The stored header is returned (so the first run's packing
    decisions, kept in ``header['plan']``, stay in force); leftover temporary chunk dirs are removed.

    ``shard`` (a label, e.g. 'shard-0-of-4'; the caller holds that shard's lock): shards create
    the header race-free (the first of several starting at once creates it, the others compare
    their spec with it: StoreConflict when it differs). Without ``resume`` a shard joins a store
    of the same spec as long as it has written no chunk there itself; only its own leftover
    temporary chunk dirs are removed.
    """
    out = Path(out_dir)
    header = dict(header)
    header["spec_hash"] = spec_hash(header["spec"])
    header.setdefault("format", FORMAT)
    if shard is not None:
        return _open_shared(out, header, resume=resume, shard=shard)
    if resume:
        if not (out / HEADER).exists():
            if out.exists() and _entries(out):
                raise StoreError(f"cannot resume: {out} is not empty but holds no {HEADER}")
            resume = False  # nothing to resume: start fresh
        else:
            old = read_header(out)
            _check_spec(out, old, header, "cannot resume")
            remove_partial(out)
            return old
    if out.exists():
        if not out.is_dir():
            raise StoreError(f"{out} exists and is not a directory")
        if _entries(out):
            raise StoreError(f"{out} is not empty; pass --resume to continue it, or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / CHUNKS).mkdir(exist_ok=True)
    _write_json_atomic(out / HEADER, header)
    return header


def _open_shared(out: Path, header: dict[str, Any], *, resume: bool, shard: str) -> dict[str, Any]:
    if out.exists() and not (out / HEADER).exists() and [   # (what other shards make meanwhile)
            p for p in _entries(out) if not p.name.startswith(".tmp-") and p.name not in (
                CHUNKS, SHARDS, HEADER)]:
        raise StoreError(f"{out} is not empty but holds no {HEADER}; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    if not _create_exclusive(out / HEADER, header):
        old = read_header(out)
        _check_spec(out, old, header, "cannot run into")
        header = old
    (out / CHUNKS).mkdir(exist_ok=True)
    if not resume and any(m.get("info", {}).get("shard") == shard for m in list_chunks(out)):
        raise StoreError(f"{shard} has already written chunks to {out}; pass --resume to "
                         f"continue it")
    remove_partial(out, writer=shard)
    return header


def read_shards(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The shard record (``shards.json``) of a store, or None when it has none."""
    path = Path(out_dir) / SHARDS
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{path} is not valid JSON: {e}") from None


def open_shards(out_dir: str | os.PathLike, record: Mapping[str, Any]) -> dict[str, Any]:
    """Create the shard record (``count``: N, ``spec_hash``, ``chunks``: the assignment) or, when
    a shard created it first, return the stored one after checking that N and the spec hash
    agree (else StoreConflict). The stored assignment is the one every shard follows."""
    out = Path(out_dir)
    if _create_exclusive(out / SHARDS, dict(record)):
        return dict(record)
    old = read_shards(out) or {}
    if old.get("count") != record["count"]:
        raise StoreConflict(f"{out} is split into {old.get('count')} shards ({SHARDS}), not "
                            f"{record['count']}; use --shard I/{old.get('count')}")
    if old.get("spec_hash") != record["spec_hash"]:
        raise StoreConflict(f"{out}: {SHARDS} was made for another spec; use a new --out")
    return old


def remove_partial(out_dir: str | os.PathLike, writer: str | None = None) -> int:
    """Remove leftover temporary directories of interrupted writes; returns how many. With
    ``writer`` (a shard's label) only that writer's temporary chunk dirs."""
    n = 0
    bases = (Path(out_dir), Path(out_dir) / CHUNKS) if writer is None else (Path(out_dir) / CHUNKS,)
    prefix = ".tmp-" if writer is None else f".tmp-{writer}-"
    for base in bases:
        if not base.is_dir():
            continue
        for p in base.iterdir():
            if p.name.startswith(prefix):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                n += 1
    return n


# ---------------------------------------------------------------------------------------------
# chunks


def write_chunk(out_dir: str | os.PathLike, name: str, coords: Sequence[Sequence[Any]],
                data: Mapping[str, np.ndarray], dims: Mapping[str, Sequence[str]],
                steps: Sequence[int], info: Mapping[str, Any] | None = None,
                writer: str | None = None) -> Path:
    """Write one finished chunk atomically; returns its directory.

    coords: one coordinate tuple per run (values of the header's axes, in order), R runs.
    data: name -> array with leading run axis (R, ...). dims: name -> dim names of the trailing
    axes (a variable whose first trailing dim is ``step`` is indexed by ``steps``; the other dims
    are positional and NaN-filled to the largest size across chunks). info: JSON-able extras.
    writer: a shard's label, put in the temporary directory's name (``.tmp-<writer>-...``) so
    that the shard's resume removes its own leftovers only.
    """
    if not _NAME_RE.match(name):
        raise StoreError(f"bad chunk name {name!r}")
    R = len(coords)
    steps = [int(s) for s in steps]
    arrays: dict[str, np.ndarray] = {}
    for k, a in data.items():
        a = np.asarray(a)
        if k not in dims:
            raise StoreError(f"chunk {name}: no dims given for variable {k!r}")
        if a.ndim != 1 + len(dims[k]) or a.shape[0] != R:
            raise StoreError(f"chunk {name}: variable {k!r} has shape {a.shape}, expected ({R}, ...) "
                             f"with dims {list(dims[k])}")
        if "step" in dims[k] and (list(dims[k]).index("step") != 0 or a.shape[1] != len(steps)):
            raise StoreError(f"chunk {name}: variable {k!r} must have 'step' first with {len(steps)} "
                             f"entries")
        arrays[k] = a
    out = Path(out_dir)
    final = out / CHUNKS / name
    if final.exists():
        raise StoreError(f"chunk {name} already exists in {out}")
    tmp = out / CHUNKS / (f".tmp-{name}-{os.getpid()}" if writer is None
                          else f".tmp-{writer}-{name}-{socket.gethostname()}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with open(tmp / DATA, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    manifest = {"name": name, "format": FORMAT, "runs": [list(c) for c in coords],
                "steps": steps, "dims": {k: list(v) for k, v in dims.items()},
                "info": dict(info or {})}
    _write_file(tmp / MANIFEST, (json.dumps(manifest) + "\n").encode())
    _fsync_dir(tmp)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    return final


def list_chunks(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Manifests of the finished chunks, sorted by name (directories without a manifest ignored)."""
    base = Path(out_dir) / CHUNKS
    if not base.is_dir():
        return []
    out = []
    for p in sorted(base.iterdir()):
        if p.name.startswith(".") or not (p / MANIFEST).is_file():
            continue
        m = json.loads((p / MANIFEST).read_text())
        m["path"] = str(p)
        out.append(m)
    return out


def done_runs(out_dir: str | os.PathLike) -> set[tuple]:
    """Coordinate tuples of all runs in finished chunks."""
    return {_as_key(r) for m in list_chunks(out_dir) for r in m["runs"]}


# ---------------------------------------------------------------------------------------------
# assembling the dataset


def _fill_for(dtype: np.dtype) -> tuple[np.dtype, Any]:
    if dtype == np.bool_:
        return np.dtype(bool), False
    if np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
        return dtype, np.nan
    return np.dtype(np.float64), np.nan


def _attrs(header: dict[str, Any], ran: np.ndarray, chunks: list[dict[str, Any]]
           ) -> dict[str, Any]:
    """The dataset's attributes: the spec (JSON, TOML, hash), versions, run counts, chunks."""
    attrs = {
        "rnn_ntk_store_format": int(header.get("format", FORMAT)),
        "name": str(header.get("name", "")),
        "spec_json": canonical_json(header["spec"]),
        "spec_toml": str(header.get("spec_toml", "")),
        "spec_hash": str(header["spec_hash"]),
        "versions": canonical_json(header.get("versions", {})),
        "n_runs_planned": int(header.get("n_runs", int(ran.size))),
        "n_runs_done": int(ran.sum()),
        "chunks": canonical_json(sorted(m["name"] for m in chunks)),
        "layout": ("dense over sweep axes; cells not run are NaN (float) / False (bool); "
                   "'ran' marks finished runs; step is the union over buckets"),
    }
    for pkg, ver in header.get("versions", {}).items():
        attrs[f"version_{pkg}"] = str(ver)
    prec = header["spec"].get("train", {}).get("matmul_precision")
    if prec is not None:  # absent in stores written before TrainConfig.matmul_precision existed
        attrs["matmul_precision"] = prec if isinstance(prec, str) else canonical_json(prec)
    return attrs


def assemble(out_dir: str | os.PathLike) -> xr.Dataset:
    """Build the dense dataset from the header and the finished chunks (see the module docstring)."""
    out = Path(out_dir)
    header = read_header(out)
    axes: dict[str, list] = {k: list(v) for k, v in header["axes"].items()}
    ax_names = list(axes)
    ax_index = {k: {v: i for i, v in enumerate(vals)} for k, vals in axes.items()}
    chunks = list_chunks(out)

    # union of steps, variable dims/dtypes and positional sizes
    steps_all: set[int] = set()
    var_dims: dict[str, list[str]] = {}
    var_dtype: dict[str, np.dtype] = {}
    dim_size: dict[str, int] = {}
    seen: dict[tuple, str] = {}
    loaded = []
    for m in chunks:
        with np.load(Path(m["path"]) / DATA) as z:
            arrays = {k: z[k] for k in z.files}
        loaded.append((m, arrays))
        for r in m["runs"]:
            key = _as_key(r)
            if key in seen:
                raise StoreError(f"run {dict(zip(ax_names, key))} is in two chunks "
                                 f"({seen[key]} and {m['name']})")
            seen[key] = m["name"]
        steps_all.update(m["steps"])
        for k, a in arrays.items():
            d = m["dims"][k]
            if k in var_dims and var_dims[k] != d:
                raise StoreError(f"variable {k!r} has dims {d} in chunk {m['name']} but "
                                 f"{var_dims[k]} elsewhere")
            var_dims[k] = d
            dt = _fill_for(a.dtype)[0]
            var_dtype[k] = np.result_type(var_dtype[k], dt) if k in var_dtype else dt
            for name, size in zip(d, a.shape[1:]):
                if name != "step":
                    dim_size[name] = max(dim_size.get(name, 0), size)
    steps = np.array(sorted(steps_all), dtype=np.int64)
    step_pos = {s: i for i, s in enumerate(steps.tolist())}
    ax_shape = tuple(len(axes[k]) for k in ax_names)

    full: dict[str, np.ndarray] = {}
    for k, d in var_dims.items():
        shape = ax_shape + tuple(len(steps) if n == "step" else dim_size[n] for n in d)
        full[k] = np.full(shape, _fill_for(var_dtype[k])[1], dtype=var_dtype[k])
    ran = np.zeros(ax_shape, dtype=bool)

    for m, arrays in loaded:
        try:
            idx = [np.array([ax_index[a][r[j]] for r in m["runs"]], dtype=np.intp)
                   for j, a in enumerate(ax_names)]
        except KeyError as e:
            raise StoreError(f"chunk {m['name']} has a run with coordinate {e} that is not on the "
                             f"store's axes") from None
        ran[tuple(idx)] = True
        sidx = np.array([step_pos[s] for s in m["steps"]], dtype=np.intp)
        for k, a in arrays.items():
            d = m["dims"][k]
            if d and d[0] == "step":
                sel = tuple(i[:, None] for i in idx) + (sidx[None, :],) + tuple(
                    slice(0, n) for n in a.shape[2:])
            else:
                sel = tuple(idx) + tuple(slice(0, n) for n in a.shape[1:])
            full[k][sel] = a

    coords: dict[str, Any] = {k: np.asarray(v) for k, v in axes.items()}
    coords["step"] = steps
    data_vars = {k: (tuple(ax_names) + tuple(var_dims[k]), v) for k, v in full.items()}
    data_vars["ran"] = (tuple(ax_names), ran)
    return xr.Dataset(data_vars, coords=coords, attrs=_attrs(header, ran, chunks))


def consolidate(out_dir: str | os.PathLike) -> Path:
    """Write ``OUT/results.zarr`` from the finished chunks (temp dir, then rename); returns its path."""
    out = Path(out_dir)
    ds = assemble(out)
    tmp = out / f".tmp-{RESULTS}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True)
    final = out / RESULTS
    if final.exists():
        old = out / f".tmp-old-{RESULTS}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(out)
    return final


def _consolidated(out: Path) -> xr.Dataset | None:
    """``OUT/results.zarr`` opened, when it exists and holds exactly the finished chunks."""
    res = out / RESULTS
    if not res.is_dir():
        return None
    ds = xr.open_dataset(res, engine="zarr", consolidated=True, chunks=None)
    names = sorted(m["name"] for m in list_chunks(out))
    if ds.attrs.get("chunks") == canonical_json(names):
        return ds
    ds.close()
    return None


def consolidate_if_complete(out_dir: str | os.PathLike) -> Path | None:
    """Consolidate a store filled by shards once every planned run is in; returns the path of
    ``results.zarr``, or None while runs are missing. Shards finishing at the same time
    serialise on ``OUT/.rnn-ntk.lock.consolidate`` (a blocking flock; that file stays): the
    second finds the store already consolidated and keeps it."""
    out = Path(out_dir)
    if len(done_runs(out)) < int(read_header(out).get("n_runs", 0)):
        return None
    fd = os.open(out / f"{LOCK}.consolidate", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ds = _consolidated(out)
        if ds is not None:
            ds.close()
            return out / RESULTS
        return consolidate(out)
    finally:
        os.close(fd)


def load_results(path: str | os.PathLike) -> xr.Dataset:
    """Open a sweep's results as an xarray Dataset (e.g. ``ds.sel(width=256, lr=0.1)``).

    ``path`` is a run's output directory or its ``results.zarr``. From a directory, the
    consolidated ``results.zarr`` is used when it is up to date with the finished chunks; otherwise
    (a run still going, or interrupted, or shards still filling it) the dataset is assembled from
    the finished chunks: cells not run yet are NaN (float) / False (bool) and ``ran`` is False
    there (a store with no finished chunk holds ``ran`` alone).
    """
    p = Path(path)
    if p.is_dir() and (p / HEADER).is_file():
        ds = _consolidated(p)
        return ds.load() if ds is not None else assemble(p)
    if p.is_dir() and ((p / ".zmetadata").is_file() or (p / "zarr.json").is_file()):
        return xr.open_dataset(p, engine="zarr", chunks=None).load()
    raise StoreError(f"{path} is neither a sweep output directory nor a results.zarr store")
