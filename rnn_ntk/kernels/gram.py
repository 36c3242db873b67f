"""Gram matrices of whole data sets, computed block by block and optionally streamed to disk.

``gram(cfg, x)`` is a loop of the kernels of :mod:`rnn_ntk.kernels` (``infinite_kernels``, or
``empirical_ntk`` / ``empirical_nngp`` for one parameter draw) over square blocks of rows:
block (i, j) is the kernel between rows ``[i b, (i+1) b)`` of x and rows ``[j b, (j+1) b)`` of x2.
With ``x2=None`` (a symmetric Gram) only blocks with i <= j are computed; diagonal blocks come
from the kernel's own symmetric path (exactly symmetric) and block (j, i) is the transpose of
block (i, j). Memory is a few blocks, independent of n.

Blocks run over all local devices: block k of the work list is dispatched to device
k mod D (``jax.default_device``), up to ``2 D`` blocks in flight, and the host writes finished
blocks while the devices compute. ``process_index`` / ``process_count`` (default: this JAX
process of ``jax.process_count()``) select every ``process_count``-th block of the work list,
so several processes can share one store (each writes its own blocks; resume reruns the rest).

Store layout of ``out=DIR`` (zarr format 3, one uncompressed chunk per block)::

    DIR/gram.json          header: kinds, method, config, shapes, block, dtype and a sha256 of
                           every input (x, lengths, x2, lengths2, params): the resume check
    DIR/gram.zarr/ntk      (n1, n2) for readouts 'last'/'mean', (n1, T1, n2, T2) for 'all'
    DIR/gram.zarr/nngp     (same; only the kinds asked for are stored)
    DIR/done/<i>_<j>       written after block (i, j) (and its mirror (j, i)) is on disk

A block's chunk files are written by zarr through a temporary file and a rename, then fsync'ed,
and only then is its done-marker written (fsync'ed, renamed): a block without a marker is
recomputed on resume, so a crash (even SIGKILL) never leaves a block that reads as finished.
Blocks not yet written read as NaN.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np

from rnn_ntk import store as store_mod
from rnn_ntk.kernels.empirical import empirical_nngp, empirical_ntk
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.kernels.inputs import check_lengths, check_x
from rnn_ntk.model import RNNConfig

__all__ = ["gram", "load_gram", "StoredGram", "GramBlocks", "plan_blocks", "KINDS", "METHODS",
           "GRAM_HEADER"]

KINDS = ("ntk", "nngp", "both")
METHODS = ("infinite", "empirical")
GRAM_HEADER = "gram.json"
GRAM_ARRAYS = "gram.zarr"
DONE = "done"
FORMAT = 1
BLOCK_ELEMS = 1 << 22          # default block: about this many kernel entries (16 MB in float32)


# ---------------------------------------------------------------------------------------------
# blocks


@dataclasses.dataclass(frozen=True)
class GramBlocks:
    """The block grid of a Gram matrix: n1 x n2 rows of sequences in blocks of ``block`` rows.

    ``pairs`` is the work list, in order: every (i, j) for a cross Gram, i <= j for a symmetric
    one. ``mine(k, count)`` is the share of process k of count (every count-th pair).
    """

    n1: int
    n2: int
    block: int
    symmetric: bool

    @property
    def nb1(self) -> int:
        return -(-self.n1 // self.block)

    @property
    def nb2(self) -> int:
        return -(-self.n2 // self.block)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.nb1)
                for j in range(i if self.symmetric else 0, self.nb2)]

    def rows(self, i: int, n: int) -> slice:
        return slice(i * self.block, min((i + 1) * self.block, n))

    def mine(self, index: int, count: int) -> list[tuple[int, int]]:
        return self.pairs[index::count]


def plan_blocks(n1: int, n2: int | None, block: int) -> GramBlocks:
    """The block grid for an (n1, n2) Gram (``n2=None``: symmetric n1 x n1)."""
    return GramBlocks(n1, n1 if n2 is None else n2, block, n2 is None)


def default_block(readout: str, T1: int, T2: int) -> int:
    """Rows per block: about ``BLOCK_ELEMS`` kernel entries per block ('all' has T1 T2 per pair)."""
    per_pair = T1 * T2 if readout == "all" else 1
    return max(8, math.isqrt(max(BLOCK_ELEMS // per_pair, 1)))


# ---------------------------------------------------------------------------------------------
# validation and hashing


def _digest(a: Any) -> str | None:
    if a is None:
        return None
    arr = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _params_digest(params: Any) -> str | None:
    if params is None:
        return None
    h = hashlib.sha256()
    for k in sorted(params):
        h.update(k.encode())
        h.update(_digest(params[k]).encode())
    return h.hexdigest()


def _check_x(name: str, x: Any, d: int) -> np.ndarray:
    """:func:`rnn_ntk.kernels.inputs.check_x`, and (the store hashes the values) real, finite."""
    check_x(name, x, d)
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds non-finite values")
    return arr


def _check_lengths(name: str, lengths: Any, n: int, T: int) -> np.ndarray | None:
    """None, or :func:`rnn_ntk.kernels.inputs.check_lengths` (integer dtype, values in [1, T])."""
    return None if lengths is None else check_lengths(name, lengths, n, T)


@dataclasses.dataclass(frozen=True)
class _Job:
    cfg: RNNConfig
    x: np.ndarray
    x2: np.ndarray | None
    lengths: np.ndarray | None
    lengths2: np.ndarray | None
    kinds: tuple[str, ...]          # stored kinds, in order ('nngp', 'ntk')
    method: str
    params: Any
    grid: GramBlocks
    dtype: np.dtype                 # stored dtype
    order: int | None

    @property
    def n1(self) -> int:
        return self.x.shape[0]

    @property
    def n2(self) -> int:
        return self.n1 if self.x2 is None else self.x2.shape[0]

    @property
    def T1(self) -> int:
        return self.x.shape[1]

    @property
    def T2(self) -> int:
        return self.T1 if self.x2 is None else self.x2.shape[1]

    def shape(self) -> tuple[int, ...]:
        if self.cfg.readout == "all":
            return (self.n1, self.T1, self.n2, self.T2)
        return (self.n1, self.n2)

    def identity(self) -> dict[str, Any]:
        """What a resumed store must match (compared key by key)."""
        return {"cfg": dataclasses.asdict(self.cfg) | {"trainable": list(self.cfg.trainable)},
                "kinds": list(self.kinds), "method": self.method, "block": self.grid.block,
                "dtype": self.dtype.name, "order": self.order, "shape": list(self.shape()),
                "compute": np.dtype(jax.dtypes.canonicalize_dtype(np.float64)).name,
                "inputs": {"x": _digest(self.x), "lengths": _digest(self.lengths),
                           "x2": _digest(self.x2), "lengths2": _digest(self.lengths2),
                           "params": _params_digest(self.params)}}


def _prepare(cfg, x, x2, lengths, lengths2, kind, method, params, block, dtype, order) -> _Job:
    if not isinstance(cfg, RNNConfig):
        raise ValueError(f"cfg must be an RNNConfig, got {type(cfg).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method == "infinite" and params is not None:
        raise ValueError("params are only used by method='empirical' (the infinite-width kernel "
                         "has none)")
    if method == "empirical":
        if params is None:
            raise ValueError("method='empirical' needs params (one draw, e.g. "
                             "init_params(cfg, key))")
        if not isinstance(params, dict) or "b" not in params:
            raise ValueError("params must be a dict of parameter groups {'W','U','b','v'}")
        if np.ndim(params["b"]) != 1:
            raise ValueError(f"params must be one draw (no leading seed axis), got params['b'] of "
                             f"shape {np.shape(params['b'])}")
    if method == "infinite" and cfg.recurrence != "full":
        raise ValueError(f"recurrence={cfg.recurrence!r} has no infinite-width limit; use "
                         "method='empirical'")
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise ValueError(f"block must be a positive integer or None, got {block!r}")
    x = _check_x("x", x, cfg.input_dim)
    lengths = _check_lengths("lengths", lengths, x.shape[0], x.shape[1])
    if x2 is None:
        if lengths2 is not None:
            raise ValueError("lengths2 was given without x2 (x2=None uses x and lengths)")
    else:
        x2 = _check_x("x2", x2, cfg.input_dim)
        lengths2 = _check_lengths("lengths2", lengths2, x2.shape[0], x2.shape[1])
    T2 = x.shape[1] if x2 is None else x2.shape[1]
    if block is None:        # the default side, evened out so the last block is not a sliver
        b0 = default_block(cfg.readout, x.shape[1], T2)
        n_max = max(x.shape[0], 0 if x2 is None else x2.shape[0])
        block = -(-n_max // -(-n_max // b0))
    compute = np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
    dt = compute if dtype is None else np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"dtype must be a floating dtype, got {dt}")
    kinds = ("nngp", "ntk") if kind == "both" else (kind,)
    grid = plan_blocks(x.shape[0], None if x2 is None else x2.shape[0], block)
    return _Job(cfg, x, x2, lengths, lengths2, kinds, method, params, grid, dt, order)


# ---------------------------------------------------------------------------------------------
# one block


def _rows(a: np.ndarray | None, s: slice, pad_to: int) -> np.ndarray | None:
    """Rows s of a, padded to ``pad_to`` rows with copies of its first row (so every block has
    the same shape and reuses one compiled program; the padded rows are sliced off)."""
    if a is None:
        return None
    r = a[s]
    if r.shape[0] < pad_to:
        r = np.concatenate([r, np.repeat(r[:1], pad_to - r.shape[0], axis=0)], axis=0)
    return r


def _launch(job: _Job, i: int, j: int) -> tuple[Any, ...]:
    """Dispatch block (i, j) on the current default device; returns un-fetched kernel arrays in
    the order of ``job.kinds`` (asynchronous: nothing waits here)."""
    g, b = job.grid, job.grid.block
    diag = g.symmetric and i == j
    x2 = job.x if job.x2 is None else job.x2
    l2 = job.lengths if job.x2 is None else job.lengths2
    p1, p2 = min(b, job.n1), min(b, job.n2)     # every block of a side has the same shape
    xa = _rows(job.x, g.rows(i, job.n1), p1)
    la = _rows(job.lengths, g.rows(i, job.n1), p1)
    xb = None if diag else _rows(x2, g.rows(j, job.n2), p2)
    lb = None if diag else _rows(l2, g.rows(j, job.n2), p2)
    if job.method == "infinite":
        nngp, ntk = infinite_kernels(job.cfg, xa, xb, lengths1=la, lengths2=lb, order=job.order)
        out = {"nngp": nngp, "ntk": ntk}
        return tuple(out[k] for k in job.kinds)
    res = []
    for k in job.kinds:
        fn = empirical_ntk if k == "ntk" else empirical_nngp
        res.append(fn(job.cfg, job.params, xa, xb, lengths1=la, lengths2=lb))
    return tuple(res)


def _fetch(job: _Job, i: int, j: int, arrays: Sequence[Any]) -> list[np.ndarray]:
    """Host copies of a block's kernels, padding rows dropped, in the stored dtype."""
    g = job.grid
    r1 = g.rows(i, job.n1)
    r2 = g.rows(j, job.n2)
    h1, h2 = r1.stop - r1.start, r2.stop - r2.start
    out = []
    for a in arrays:
        a = np.asarray(a)
        a = a[:h1, :, :h2, :] if a.ndim == 4 else a[:h1, :h2]
        out.append(np.ascontiguousarray(a, dtype=job.dtype))
    return out


def _blocks(job: _Job, pairs: Sequence[tuple[int, int]], devices: Sequence[Any]
            ) -> Iterator[tuple[int, int, list[np.ndarray]]]:
    """Finished blocks in order, computed over ``devices`` with up to 2 D blocks in flight."""
    inflight: collections.deque = collections.deque()
    depth = 2 * len(devices)
    for k, (i, j) in enumerate(pairs):
        with jax.default_device(devices[k % len(devices)]):
            inflight.append((i, j, _launch(job, i, j)))
        if len(inflight) >= depth:
            i0, j0, arrs = inflight.popleft()
            yield i0, j0, _fetch(job, i0, j0, arrs)
    while inflight:
        i0, j0, arrs = inflight.popleft()
        yield i0, j0, _fetch(job, i0, j0, arrs)


# ---------------------------------------------------------------------------------------------
# the stored array


class StoredGram:
    """A Gram matrix in a store (``DIR/gram.zarr/<kind>``), read lazily.

    Indexing (``K[a:b, c:d]``) reads only the chunks it touches and returns a numpy array;
    ``np.asarray(K)`` reads everything. ``shape``, ``dtype``, ``ndim``, ``kind``, ``block``,
    ``info`` (the header), ``complete`` (every block written), ``iter_blocks()``.
    """

    def __init__(self, path: str | os.PathLike, kind: str, info: dict[str, Any]):
        import zarr
        self.path = Path(path)
        self.kind = kind
        self.info = info
        self._arr = zarr.open_array(self.path / GRAM_ARRAYS / kind, mode="r")
        self.shape = tuple(self._arr.shape)
        self.dtype = np.dtype(self._arr.dtype)
        self.ndim = len(self.shape)
        self.block = int(info["block"])
        self._chunk_shape = tuple(self._arr.chunks)
        codecs = self._arr.metadata.codecs
        # uncompressed little-endian chunks (as gram() writes them) are read as raw files
        self._raw = (len(codecs) == 1 and type(codecs[0]).__name__ == "BytesCodec"
                     and str(getattr(codecs[0].endian, "value", codecs[0].endian)) == "little")

    def __repr__(self) -> str:
        return (f"StoredGram({str(self.path)!r}, kind={self.kind!r}, shape={self.shape}, "
                f"dtype={self.dtype}, complete={self.complete})")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._arr[key])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = np.asarray(self._arr[...])
        return a if dtype is None else a.astype(dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def complete(self) -> bool:
        grid = _grid_of(self.info)
        return len(_done(self.path)) == len(grid.pairs)

    def read_block(self, i: int, j: int) -> np.ndarray:
        """Block (i, j): rows [i b, (i+1) b) of x against rows [j b, (j+1) b) of x2, shape
        (h, w) or (h, T1, w, T2); NaN where not written. Uncompressed stores are read straight
        from the chunk file (several times faster than zarr's decode path)."""
        b = self.block
        n1 = self.shape[0]
        n2 = self.shape[2] if self.ndim == 4 else self.shape[1]
        r, c = slice(i * b, min((i + 1) * b, n1)), slice(j * b, min((j + 1) * b, n2))
        if not self._raw:
            return self[r, :, c, :] if self.ndim == 4 else self[r, c]
        idx = (i, j) if self.ndim == 2 else (i, 0, j, 0)
        f = self.path.joinpath(GRAM_ARRAYS, self.kind, "c", *map(str, idx))
        try:
            a = np.fromfile(f, dtype=self.dtype.newbyteorder("<")).reshape(self._chunk_shape)
        except FileNotFoundError:
            a = np.full(self._chunk_shape, np.nan, self.dtype)
        h, w = r.stop - r.start, c.stop - c.start
        a = a[:h, :, :w, :] if self.ndim == 4 else a[:h, :w]
        return a.astype(self.dtype, copy=False)

    def iter_blocks(self, rows: slice | None = None) -> Iterator[tuple[slice, slice, np.ndarray]]:
        """Every stored block as (row slice, column slice, array), row-major, one block in memory
        at a time; ``rows`` (a slice of block-aligned rows) restricts to the blocks it overlaps."""
        b = self.block
        n1, n2 = self.shape[0], self.shape[2] if self.ndim == 4 else self.shape[1]
        lo, hi = (0, n1) if rows is None else (rows.start or 0, min(rows.stop, n1))
        for i in range(lo // b, -(-hi // b)):
            r = slice(i * b, min((i + 1) * b, n1))
            for j in range(-(-n2 // b)):
                c = slice(j * b, min((j + 1) * b, n2))
                yield r, c, self.read_block(i, j)


def _done(out: Path) -> set[tuple[int, int]]:
    d = out / DONE
    if not d.is_dir():
        return set()
    res = set()
    for p in d.iterdir():
        parts = p.name.split("_")
        if len(parts) == 2 and all(s.isdigit() for s in parts):
            res.add((int(parts[0]), int(parts[1])))
    return res


def _grid_of(info: dict[str, Any]) -> GramBlocks:
    return GramBlocks(int(info["n1"]), int(info["n2"]), int(info["block"]), bool(info["symmetric"]))


def load_gram(path: str | os.PathLike, kind: str | None = None, *, allow_partial: bool = False
              ) -> Any:
    """Open a stored Gram (written by :func:`gram` with ``out=path`` or ``rnn-ntk kernel``).

    Returns a :class:`StoredGram` for one kind (``kind`` 'ntk' or 'nngp', default: the stored
    one), or the tuple (nngp, ntk) when both are stored and ``kind`` is None or 'both'. An
    unfinished store (blocks missing: a run interrupted) raises StoreError unless
    ``allow_partial`` (missing blocks read as NaN).
    """
    out = Path(path)
    hp = out / GRAM_HEADER
    try:
        info = json.loads(hp.read_text())
    except FileNotFoundError:
        raise store_mod.StoreError(f"{out} is not a Gram store (no {GRAM_HEADER})") from None
    except json.JSONDecodeError as e:
        raise store_mod.StoreError(f"{hp} is not valid JSON: {e}") from None
    kinds = list(info["kinds"])
    if kind is None or kind == "both":
        want = kinds
        if kind == "both" and kinds != ["nngp", "ntk"]:
            raise store_mod.StoreError(f"{out} holds only {kinds}, not both kernels")
    else:
        if kind not in kinds:
            raise store_mod.StoreError(f"{out} holds {kinds}, not {kind!r}")
        want = [kind]
    grid = _grid_of(info)
    done = _done(out)
    if not allow_partial and len(done) < len(grid.pairs):
        raise store_mod.StoreError(
            f"{out} is unfinished: {len(done)} of {len(grid.pairs)} blocks written; continue it "
            f"with resume=True (rnn-ntk kernel --resume) or pass allow_partial=True")
    arrays = tuple(StoredGram(out, k, info) for k in want)
    return arrays[0] if len(arrays) == 1 else arrays


# ---------------------------------------------------------------------------------------------
# writing


def _chunk_files(arr_dir: Path, i: int, j: int, ndim: int) -> list[Path]:
    idx = (i, j) if ndim == 2 else (i, 0, j, 0)
    return [arr_dir.joinpath("c", *map(str, idx))]


def _fsync_file(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_block(out: Path, arrays: dict[str, Any], job: _Job, i: int, j: int,
                 blocks: list[np.ndarray]) -> None:
    g = job.grid
    r1, r2 = g.rows(i, job.n1), g.rows(j, job.n2)
    mirror = g.symmetric and i != j
    for k, a in zip(job.kinds, blocks):
        z = arrays[k]
        if a.ndim == 4:
            z[r1, :, r2, :] = a
            if mirror:
                z[r2, :, r1, :] = np.transpose(a, (2, 3, 0, 1))
        else:
            z[r1, r2] = a
            if mirror:
                z[r2, r1] = a.T
        base = out / GRAM_ARRAYS / k
        files = _chunk_files(base, i, j, a.ndim)
        if mirror:
            files += _chunk_files(base, j, i, a.ndim)
        for f in files:
            _fsync_file(f)
    marker = out / DONE / f"{i}_{j}"
    tmp = out / DONE / f".tmp-{i}_{j}-{os.getpid()}"
    store_mod._write_file(tmp, b"")
    os.replace(tmp, marker)


def _open_store(out: Path, job: _Job, resume: bool, extra: dict[str, Any] | None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create the store (header, empty arrays) or reopen it for resume after checking that it was
    made from the same inputs and config. Returns (header, {kind: zarr array})."""
    import zarr
    ident = job.identity()
    hp = out / GRAM_HEADER
    if resume and hp.is_file():
        try:
            old = json.loads(hp.read_text())
        except json.JSONDecodeError as e:
            raise store_mod.StoreError(f"{hp} is not valid JSON: {e}") from None
        changed = store_mod.spec_diff(old.get("identity", {}), ident)
        if changed:
            raise store_mod.StoreError(
                f"cannot resume {out}: it was made from other inputs or config (differs: "
                f"{', '.join(changed)}); use a new output directory")
        store_mod.remove_partial(out)
        for p in (out / GRAM_ARRAYS).rglob("*.partial"):
            p.unlink(missing_ok=True)
        arrays = {k: zarr.open_array(out / GRAM_ARRAYS / k, mode="r+") for k in job.kinds}
        return old, arrays
    if out.exists():
        if not out.is_dir():
            raise store_mod.StoreError(f"{out} exists and is not a directory")
        if [p for p in out.iterdir() if p.name != store_mod.LOCK]:
            if resume:
                raise store_mod.StoreError(f"cannot resume: {out} is not empty but holds no "
                                           f"{GRAM_HEADER}")
            raise store_mod.StoreError(f"{out} is not empty; pass resume=True (--resume) to "
                                       f"continue it, or choose a new output directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / DONE).mkdir(exist_ok=True)
    shape = job.shape()
    b = job.grid.block
    chunks = (b, job.T1, b, job.T2) if len(shape) == 4 else (b, b)
    chunks = tuple(min(c, s) for c, s in zip(chunks, shape))
    arrays = {}
    for k in job.kinds:
        arrays[k] = zarr.create_array(out / GRAM_ARRAYS / k, shape=shape, chunks=chunks,
                                      dtype=job.dtype, compressors=None, fill_value=np.nan,
                                      config={"write_empty_chunks": True})
    g = job.grid
    header = {"format": FORMAT, "kinds": list(job.kinds), "method": job.method,
              "readout": job.cfg.readout, "n1": g.n1, "n2": g.n2, "T1": job.T1, "T2": job.T2,
              "block": b, "symmetric": g.symmetric, "dtype": job.dtype.name,
              "n_blocks": len(g.pairs), "identity": ident,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "extra": dict(extra or {})}
    store_mod._write_json_atomic(hp, header)
    return header, arrays


def gram(cfg: RNNConfig, x: Any, x2: Any = None, *, lengths: Any = None, lengths2: Any = None,
         kind: str = "ntk", method: str = "infinite", params: Any = None,
         out: str | os.PathLike | None = None, resume: bool = False, block: int | None = None,
         dtype: Any = None, order: int | None = None, devices: Sequence[Any] | None = None,
         process_index: int | None = None, process_count: int | None = None,
         on_block: Callable[[int, int], None] | None = None,
         info: dict[str, Any] | None = None) -> Any:
    """Gram matrix of ``cfg``'s kernel over whole data sets, in blocks (see the module docstring).

    Args:
      cfg: the network (readout 'last'/'mean' give (n1, n2), 'all' (n1, T1, n2, T2)).
      x: inputs (n1, T1, d); x2: (n2, T2, d) or None for the symmetric Gram of x.
      lengths, lengths2: (n,) integer lengths of padded sequences (default: full length).
      kind: 'ntk', 'nngp' or 'both' (then the result is the pair (nngp, ntk)).
      method: 'infinite' (:func:`infinite_kernels`) or 'empirical' (``empirical_ntk`` /
        ``empirical_nngp`` of ``params``, one draw).
      out: None (return numpy arrays) or a directory for the zarr store (must be new or empty
        unless ``resume``).
      resume: continue a store: finished blocks are skipped; a store made from other inputs,
        config, kind, method, block, dtype or compute precision (x64) is refused (StoreError
        naming the differences).
      block: rows per block (default: about 4M kernel entries per block).
      dtype: stored dtype (default: JAX's default float, float64 under x64); kernels are
        computed in the default float and cast.
      order: quadrature order for activations without a closed form (infinite method).
      devices: where blocks run (default ``jax.local_devices()``).
      process_index, process_count: this process computes pairs k with
        k mod process_count == process_index (default: JAX's process index and count).
      on_block: called as ``on_block(done, total)`` after each block is written (total counts
        this process's blocks, done includes those skipped on resume); an exception raised
        there stops the loop with the written blocks kept.
      info: JSON-able extras kept in the store header (``extra``).

    Returns:
      numpy array(s) when ``out`` is None, else :class:`StoredGram` (a tuple (nngp, ntk) for
      ``kind='both'``), readable lazily; the store is complete only once every process ran.
    """
    job = _prepare(cfg, x, x2, lengths, lengths2, kind, method, params, block, dtype, order)
    devices = list(devices) if devices is not None else jax.local_devices()
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if not (isinstance(pc, int) and pc >= 1 and isinstance(pi, int) and 0 <= pi < pc):
        raise ValueError(f"need 0 <= process_index < process_count, got {pi} and {pc}")
    pairs = job.grid.mine(pi, pc)
    if out is None:
        if pc > 1:
            raise ValueError("process_count > 1 needs out=DIR (the processes share a store)")
        full = [np.full(job.shape(), np.nan, job.dtype) for _ in job.kinds]
        for n_done, (i, j, blocks) in enumerate(_blocks(job, pairs, devices), 1):
            g = job.grid
            r1, r2 = g.rows(i, job.n1), g.rows(j, job.n2)
            for f, a in zip(full, blocks):
                if a.ndim == 4:
                    f[r1, :, r2, :] = a
                    if g.symmetric and i != j:
                        f[r2, :, r1, :] = np.transpose(a, (2, 3, 0, 1))
                else:
                    f[r1, r2] = a
                    if g.symmetric and i != j:
                        f[r2, r1] = a.T
            if on_block is not None:
                on_block(n_done, len(pairs))
        return tuple(full) if len(full) > 1 else full[0]

    outp = Path(out)
    # one writer per store; processes of a distributed run share it (each writes its own blocks)
    lock = store_mod.lock_store(outp) if pc == 1 else contextlib.nullcontext()
    with lock:
        _, arrays = _open_store(outp, job, resume, info)
        done = _done(outp)
        todo = [p for p in pairs if p not in done]
        n_done = len(pairs) - len(todo)
        if on_block is not None and n_done:
            on_block(n_done, len(pairs))
        for i, j, blocks in _blocks(job, todo, devices):
            _write_block(outp, arrays, job, i, j, blocks)
            n_done += 1
            if on_block is not None:
                on_block(n_done, len(pairs))
    return load_gram(outp, "both" if kind == "both" else kind, allow_partial=pc > 1)


_SPEC_NAMES = ("KernelSpec", "KernelSpecError", "parse_kernel_spec", "load_kernel_spec")


def __getattr__(name: str) -> Any:
    """The kernel spec's names, which live in :mod:`rnn_ntk.kernels.spec` (still importable from
    here; imported on first use, since that module imports this one)."""
    if name in _SPEC_NAMES:
        from rnn_ntk.kernels import spec
        return getattr(spec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
