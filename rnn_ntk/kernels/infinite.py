"""Infinite-width NNGP and NTK of the Elman RNN (spec: shared/spec/rnn-kernels.md, section 2).

For sequences x (length T) and x' (length T'), with V, Vd the V-transforms of the activation
(:mod:`rnn_ntk.kernels.vtransforms`) and [G] = 1 when parameter group G is trainable:

    q_0 = 0,  q_t = s_w^2 V(q_{t-1}, q_{t-1}, q_{t-1}) [t > 1] + s_u^2 |x_t|^2 / d + s_b^2
    P_{t,s}  = V(q_{t-1}, S_{t-1,s-1}, q'_{s-1})          (0 when t = 1 or s = 1: h_0 = 0)
    S_{t,s}  = s_w^2 P_{t,s} + s_u^2 <x_t, x'_s> / d + s_b^2
    C_{t,s}  = s_w^2 P_{t,s} [W] + s_u^2 <x_t, x'_s> / d [U] + s_b^2 [b]
    Th_{t,s} = C_{t,s} + s_w^2 Vd(q_{t-1}, S_{t-1,s-1}, q'_{s-1}) Th_{t-1,s-1}

and for the outputs f_t(x), f_s(x'):

    NNGP  K(t, s)  = s_v^2 V(q_t, S_{t,s}, q'_s)
    NTK   Th(t, s) = s_v^2 V(q_t, S_{t,s}, q'_s) [v] + s_v^2 Vd(q_t, S_{t,s}, q'_s) Th_{t,s}

Random initial state (``cfg.sigma_h`` > 0, the RNTK paper's h_0 ~ N(0, sigma_h^2 I) per
sequence, independent across sequences; :func:`rnn_ntk.model.initial_state`). h_0 is no output of
phi, so it enters only the state covariance at t - 1 = 0 and s - 1 = 0:

    P_{1,1} = sigma_h^2 1[x = x']        q_1 = s_w^2 sigma_h^2 + s_u^2 |x_1|^2 / d + s_b^2

and P_{1,s} = P_{t,1} = 0 for s, t > 1 (h_0 is independent of everything the network computes:
the correlation of h_0 with a later state is O(1/sqrt(m))). Th_{0,.} = 0 (h_0 is no function of
the parameters), so the term reaches the NTK through C_{1,1} ([W]) and the recursion. "The same
sequence" x = x' means equal lengths and equal values at every step (exact float64 equality; the
finite network tells sequences apart by a hash of the same values): k(x, x) carries the term and
a Gram matrix has it on its diagonal (and between duplicates), a white-noise term. For 'last' the
pair (1, 1) of end-aligned sequences exists only when the lengths agree.

Readouts: 'last' -> K(T, T') (an entry only involves the time pairs (T-k, T'-k): the sequences
are aligned at their ends and the cost is O(min(T, T')) per pair); 'all' -> K(t, s) on the whole
grid, shape (n1, T1, n2, T2); 'mean' -> (1 / (T T')) sum_{t, s} K(t, s). With ``lengths`` each
sequence uses its own length, exactly as :func:`rnn_ntk.model.readout`: 'last' is at its own end,
'mean' averages its own steps, 'all' is 0 at padded steps. Steps past a sequence's length are
never read (their values may be anything finite or not).

With k > 1 outputs (independent readout columns) the kernel is K (x) I_k; this returns K, i.e.
the mean over outputs of the per-output kernels (neural-tangents' default trace_axes=(-1,)).
``cfg.width`` is ignored. The diagonal recurrence has no Gaussian limit and is refused.

Work is done in tiles of (block x block) pairs of sequences, one jitted program per call: a
``fori_loop`` over tiles writes each into the outputs in place, and inside a tile a scan over
time is vectorised over its pairs ('last': the last min(T1, T2) end-aligned steps, carrying
(block, block) arrays; 'all' / 'mean': over t, carrying (block, block, T2) rows of the grid).
Memory is the outputs plus one tile. For x2=None only tiles on and above the diagonal are
computed and mirrored, so the Gram matrices are exactly symmetric. Activations without a closed
form cost order^2 (16384 by default) phi and exp evaluations per V-transform, several thousand
times relu; their accuracy contract is in :mod:`rnn_ntk.kernels.vtransforms`.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk.kernels.inputs import check_batches
from rnn_ntk.kernels.vtransforms import DEFAULT_ORDER, get_vtransform, quadrature_cost
from rnn_ntk.model import RNNConfig
from rnn_ntk.precision import highest_precision

__all__ = ["sequence_ids", "infinite_kernels"]

Array = jax.Array

# Tile sizes: a tile of (block1 x block2) pairs works on per-step arrays of block1 * block2
# entries ('last') or block1 * block2 * T2 ('all', 'mean'), times the quadrature order for
# activations without a closed form. On CPU small, cache-resident tiles are fastest; on
# accelerators large tiles amortise the per-step launch cost.
_TILE_ELEMS = {"cpu": {"last": 1 << 14, "grid": 1 << 16, "quadrature": 1 << 20},
               "accelerator": {"last": 1 << 22, "grid": 1 << 24, "quadrature": 1 << 26}}


def _float_dtype() -> Any:
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _scalars(cfg: RNNConfig, dtype: Any) -> dict[str, Array]:
    d = cfg.input_dim
    return {"sh2": jnp.asarray(cfg.sigma_h ** 2, dtype),          # sigma_h (h_0 variance)
            "sw2": jnp.asarray(cfg.sigma_w ** 2, dtype),
            "su2d": jnp.asarray(cfg.sigma_u ** 2 / d, dtype),
            "sb2": jnp.asarray(cfg.sigma_b ** 2, dtype),
            "sv2": jnp.asarray(cfg.sigma_v ** 2, dtype)}


# --------------------------------------------------------------------------- per-sequence parts
def _variances(vfn, x_NTD: Array, lens_N: Array, sc: dict[str, Array]) -> tuple[Array, Array]:
    """Zero the padded steps of x and return (x_NTD, q_NT), q_t the pre-activation variance."""
    n, T, _ = x_NTD.shape
    valid_NT = jnp.arange(T)[None, :] < lens_N[:, None]
    x_NTD = jnp.where(valid_NT[:, :, None], x_NTD, 0.0)
    drive_TN = sc["su2d"] * jnp.sum(x_NTD * x_NTD, axis=-1).T

    def step(q_prev, drive):
        q = sc["sw2"] * vfn(q_prev, q_prev, q_prev)[0] + drive + sc["sb2"]
        return q, q

    first = drive_TN[0] + sc["sb2"] + sc["sw2"] * sc["sh2"]   # h_0: variance sigma_h^2, not V(.)
    _, rest = jax.lax.scan(step, first, drive_TN[1:])
    q_TN = jnp.concatenate([first[None, :], rest], axis=0)
    return x_NTD, q_TN.T


def _end_align(x_NTD: Array, q_NT: Array, lens_N: Array, window: int
               ) -> tuple[Array, Array, Array]:
    """Shift each sequence to end at step T and keep the last ``window`` steps.

    Returns x (window, n, d), q (window, n), active (window, n), time-major for the scan.
    """
    n, T, _ = x_NTD.shape
    cols = jnp.arange(T - window, T)
    src_NW = cols[None, :] - (T - lens_N)[:, None]
    act_NW = src_NW >= 0
    idx_NW = jnp.clip(src_NW, 0, T - 1)
    xa = jnp.take_along_axis(x_NTD, idx_NW[:, :, None], axis=1)
    qa = jnp.take_along_axis(q_NT, idx_NW, axis=1)
    xa = jnp.where(act_NW[:, :, None], xa, 0.0)
    qa = jnp.where(act_NW, qa, 0.0)
    return jnp.swapaxes(xa, 0, 1), qa.T, act_NW.T


# --------------------------------------------------------------------------- sigma_h: h_0 terms
def sequence_ids(*xs_lens: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
    """Exact identity of sequences across arrays: for pairs (x (n, T, d), lengths (n,)), int32
    ids (n,) such that two sequences get the same id iff their lengths are equal and their values
    at the steps before their lengths are equal (float64 ==; -0.0 == 0.0)."""
    table: dict[bytes, int] = {}
    out = []
    for x, lens in xs_lens:
        x = np.asarray(x, np.float64)
        ids = np.empty(x.shape[0], np.int32)
        for i in range(x.shape[0]):
            key = np.ascontiguousarray(x[i, :int(lens[i])] + 0.0).tobytes()   # -0.0 + 0.0 = 0.0
            ids[i] = table.setdefault(key, len(table))
        out.append(ids)
    return out


def _h0_cov(sc: dict[str, Array], id1_A: Array, id2_B: Array) -> Array:
    """P_{1,1} = sigma_h^2 1[x = x'] for a tile, (A, B)."""
    return sc["sh2"] * (id1_A[:, None] == id2_B[None, :]).astype(sc["sh2"].dtype)


def _first_steps(lens_N: Array, T: int, window: int) -> Array:
    """(window, n): True at the end-aligned step that is each sequence's own t = 1."""
    cols = jnp.arange(T - window, T)
    return (cols[:, None] - (T - lens_N)[None, :]) == 0
# --------------------------------------------------------------------------- end sigma_h


# --------------------------------------------------------------------------- tiles
def _gram(a: Array, b: Array) -> Array:
    return jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)


def _flags(trainable: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(float(g in trainable) for g in ("W", "U", "b", "v"))


def _tile_last(vfn, trainable, sc, x1_WAD, q1_WA, a1_WA, f1_WA, id1_A, x2_WBD, q2_WB, a2_WB,
               f2_WB, id2_B):
    """'last' kernels of a tile of end-aligned sequences: (A, B) NNGP and NTK.

    Carries V and Vd * Th at the previous aligned step (0 before a pair's first common step,
    which is h_0 = 0); only the diagonal (T-k, T'-k) of the time grid is visited. f1, f2 mark
    each sequence's first step (where P_{1,1} = sigma_h^2 1[x = x'] enters).
    """
    tW, tU, tb, tv = _flags(trainable)
    A, B = q1_WA.shape[1], q2_WB.shape[1]
    P0 = _h0_cov(sc, id1_A, id2_B)

    def step(carry, inp):
        V_prev, VdTh_prev = carry
        x1, q1, a1, f1, x2, q2, a2, f2 = inp
        G = sc["su2d"] * _gram(x1, x2)
        rec = sc["sw2"] * (V_prev + jnp.where(f1[:, None] & f2[None, :], P0, 0.0))
        S = (rec + G) + sc["sb2"]
        Th = (tW * rec + tU * G + tb * sc["sb2"]) + sc["sw2"] * VdTh_prev
        V, Vd = vfn(q1[:, None], S, q2[None, :])
        both = a1[:, None] & a2[None, :]
        return (jnp.where(both, V, 0.0), jnp.where(both, Vd * Th, 0.0)), None

    zero = jnp.zeros((A, B), q1_WA.dtype)
    (V, VdTh), _ = jax.lax.scan(step, (zero, zero),
                                (x1_WAD, q1_WA, a1_WA, f1_WA, x2_WBD, q2_WB, a2_WB, f2_WB))
    return sc["sv2"] * V, sc["sv2"] * (tv * V + VdTh)


def _tile_grid(vfn, trainable, mean, sc, x1_ATD, q1_AT, l1_A, id1_A, x2_BSD, q2_BS, l2_B, id2_B,
               write=None, outs=None):
    """Whole-grid kernels of a tile: (A, B) for 'mean'; for 'all' the rows are written into the
    outputs as they are made (``outs = write(outs, t, (K_ABS, N_ABS))`` per row t; the outputs
    come back), so no (A, T1, B, T2) tile is stacked, transposed or copied.

    Scans over t, carrying the row t-1 of V and Vd * Th over s; the value at (t-1, s-1) is the
    row shifted by one step (0 at s = 1 and at t = 1, except P_{1,1} = sigma_h^2 1[x = x']).
    """
    tW, tU, tb, tv = _flags(trainable)
    A, T1, d = x1_ATD.shape
    B, T2, _ = x2_BSD.shape
    dtype = q1_AT.dtype
    x2_flat = x2_BSD.reshape(B * T2, d)
    valid2_BS = jnp.arange(T2)[None, :] < l2_B[:, None]
    P0 = _h0_cov(sc, id1_A, id2_B)[:, :, None] * (jnp.arange(T2) == 0).astype(dtype)[None, None, :]

    def shift(a_ABS):
        return jnp.pad(a_ABS[:, :, :-1], ((0, 0), (0, 0), (1, 0)))

    def step(carry, inp):
        V_row, VdTh_row, acc = carry
        x1_t, q1_t, valid1_t, t = inp
        G = sc["su2d"] * _gram(x1_t, x2_flat).reshape(A, B, T2)
        rec = sc["sw2"] * (shift(V_row) + jnp.where(t == 0, P0, 0.0))
        S = (rec + G) + sc["sb2"]
        Th = (tW * rec + tU * G + tb * sc["sb2"]) + sc["sw2"] * shift(VdTh_row)
        V, Vd = vfn(q1_t[:, None, None], S, q2_BS[None, :, :])
        VdTh = Vd * Th
        valid = valid1_t[:, None, None] & valid2_BS[None, :, :]
        K = jnp.where(valid, sc["sv2"] * V, 0.0)
        N = jnp.where(valid, sc["sv2"] * (tv * V + VdTh), 0.0)
        if mean:
            return (V, VdTh, (acc[0] + jnp.sum(K, axis=-1), acc[1] + jnp.sum(N, axis=-1))), None
        return (V, VdTh, write(acc, t, (K, N))), None

    zero = jnp.zeros((A, B, T2), dtype)
    zsum = jnp.zeros((A, B), dtype)
    valid1_TA = jnp.arange(T1)[:, None] < l1_A[None, :]
    xs = (jnp.swapaxes(x1_ATD, 0, 1), q1_AT.T, valid1_TA, jnp.arange(T1, dtype=jnp.int32))
    (_, _, acc), _ = jax.lax.scan(step, (zero, zero, (zsum, zsum) if mean else outs), xs)
    if mean:
        norm = l1_A[:, None].astype(dtype) * l2_B[None, :].astype(dtype)
        return acc[0] / norm, acc[1] / norm
    return acc


# --------------------------------------------------------------------------- driver
@functools.partial(jax.jit, static_argnames=(
    "activation", "order", "trainable", "readout", "blocks", "symmetric"))
def _kernels(x1, l1, x2, l2, sc, id1, id2, *, activation, order, trainable, readout, blocks, symmetric):
    """Both kernels for padded inputs (n1 = nb1 * b1 rows, n2 = nb2 * b2 rows).

    Tiles (i, j) (i <= j when symmetric) run one after another in a ``fori_loop`` that writes
    them into the outputs in place ('all': each row of a tile as its scan makes it), so memory is
    the outputs plus one tile's working set. The tiling divides n when it can
    (:func:`_tiling`): then no padded copy of the outputs is sliced afterwards.
    """
    vfn = get_vtransform(activation, order)
    (nb1, b1), (nb2, b2) = blocks
    x1, q1 = _variances(vfn, x1, l1, sc)
    if symmetric:
        x2, q2, l2, id2 = x1, q1, l1, id1
    else:
        x2, q2 = _variances(vfn, x2, l2, sc)
    if readout == "last":
        window = min(x1.shape[1], x2.shape[1])
        al1 = _end_align(x1, q1, l1, window) + (_first_steps(l1, x1.shape[1], window),)
        al2 = al1 if symmetric else (_end_align(x2, q2, l2, window)
                                     + (_first_steps(l2, x2.shape[1], window),))

        def tile(ij):
            s1 = [jax.lax.dynamic_slice_in_dim(a, ij[0] * b1, b1, axis=1) for a in al1]
            s2 = [jax.lax.dynamic_slice_in_dim(a, ij[1] * b2, b2, axis=1) for a in al2]
            i1 = jax.lax.dynamic_slice_in_dim(id1, ij[0] * b1, b1)
            i2 = jax.lax.dynamic_slice_in_dim(id2, ij[1] * b2, b2)
            return _tile_last(vfn, trainable, sc, *s1, i1, *s2, i2)
    else:
        def tile(ij, **into):
            s1 = [jax.lax.dynamic_slice_in_dim(a, ij[0] * b1, b1, axis=0)
                  for a in (x1, q1, l1, id1)]
            s2 = [jax.lax.dynamic_slice_in_dim(a, ij[1] * b2, b2, axis=0)
                  for a in (x2, q2, l2, id2)]
            return _tile_grid(vfn, trainable, readout == "mean", sc, *s1, *s2, **into)

    pairs = [(i, j) for i in range(nb1) for j in range(i if symmetric else 0, nb2)]
    I = jnp.asarray([p[0] for p in pairs], jnp.int32)
    J = jnp.asarray([p[1] for p in pairs], jnp.int32)
    grid = readout == "all"
    flip = (2, 3, 0, 1) if grid else (1, 0)
    T1, T2 = x1.shape[1], x2.shape[1]
    shape = (nb1 * b1, T1, nb2 * b2, T2) if grid else (nb1 * b1, nb2 * b2)
    z = jnp.zeros((), jnp.int32)

    def at(i, j):                                     # start index of block (i, j)
        return (i * b1, z, j * b2, z) if grid else (i * b1, j * b2)

    def write_row(i, j, outs, t, rows):
        # row t of tile (i, j), (A, B, T2), into [i-block, t, j-block, :] (contiguous runs of T2)
        return tuple(jax.lax.dynamic_update_slice(full, r[:, None], (i * b1, t, j * b2, z))
                     for full, r in zip(outs, rows))

    def mirror(i, j, outs):
        # with symmetry, tile (i, j) transposed into (j, i); a diagonal tile is replaced by its
        # symmetrised self, so the result is exactly symmetric
        size = (b1, T1, b2, T2) if grid else (b1, b2)
        new = []
        for full in outs:
            t = jax.lax.dynamic_slice(full, at(i, j), size)
            tT = jnp.transpose(t, flip)
            new.append(jax.lax.dynamic_update_slice(
                full, jnp.where(i == j, 0.5 * (t + tT), tT), at(j, i)))
        return tuple(new)

    def body(p, outs):
        # each tile is written in place into the outputs ('all': row by row), then, with
        # symmetry, its transpose
        i, j = I[p], J[p]
        if grid:
            outs = tile((i, j), write=functools.partial(write_row, i, j), outs=outs)
        else:
            outs = tuple(jax.lax.dynamic_update_slice(full, t, at(i, j))
                         for full, t in zip(outs, tile((i, j))))
        return mirror(i, j, outs) if symmetric else outs

    outs = (jnp.zeros(shape, x1.dtype), jnp.zeros(shape, x1.dtype))
    return jax.lax.fori_loop(0, len(pairs), body, outs)


def _default_block(readout: str, T2: int, mem_factor: int) -> int:
    budgets = _TILE_ELEMS["cpu" if jax.default_backend() == "cpu" else "accelerator"]
    per_pair = (1 if readout == "last" else T2) * mem_factor
    budget = budgets["quadrature"] if mem_factor > 1 else budgets[
        "last" if readout == "last" else "grid"]
    return max(8, int(math.isqrt(max(budget // per_pair, 1))))


def _tiling(n: int, block: int) -> tuple[int, int]:
    """(tiles, tile side): the largest side in [block / 2, block] that divides n, so no padded copy
    of the outputs is sliced off; else ceil(n / block) tiles of the least side that covers n."""
    for side in range(min(block, n), max(1, block // 2) - 1, -1):
        if n % side == 0:
            return n // side, side
    nb = -(-n // block)
    return nb, -(-n // nb)


def _pad_rows(x: np.ndarray, lens: np.ndarray, n_pad: int) -> tuple[np.ndarray, np.ndarray]:
    extra = n_pad - x.shape[0]
    if extra == 0:
        return x, lens
    x = np.concatenate([x, np.zeros((extra,) + x.shape[1:], x.dtype)], axis=0)
    return x, np.concatenate([lens, np.full((extra,), x.shape[1], np.int32)])


@highest_precision
def infinite_kernels(cfg: RNNConfig, x1: Any, x2: Any = None, *, lengths1: Any = None,
                     lengths2: Any = None, block_size: int | None = None,
                     order: int | None = None) -> tuple[Array, Array]:
    """Infinite-width NNGP and NTK of ``cfg``'s RNN between x1 (n1, T1, d) and x2 (n2, T2, d).

    Returns (nngp, ntk), each (n1, n2) for readout 'last' or 'mean' and (n1, T1, n2, T2) for
    'all' (see the module docstring for the recursion). x2=None means x2 = x1 (and lengths2 =
    lengths1); then only tiles on or above the diagonal are computed and the result is exactly
    symmetric. ``lengths1`` / ``lengths2``: (n,) integers in [1, T], each sequence's own length
    in a padded batch. The NTK is for the trainable groups ``cfg.trainable``. Computed in the
    default float dtype (float64 when jax_enable_x64 is on, else float32). ``block_size``: tile
    side in sequences (default chosen from a memory budget). ``order``: quadrature order for
    activations without a closed form (default ``vtransforms.DEFAULT_ORDER``).
    """
    if not isinstance(cfg, RNNConfig):
        raise ValueError(f"cfg must be an RNNConfig, got {type(cfg).__name__}")
    if cfg.recurrence != "full":
        raise ValueError(f"recurrence={cfg.recurrence!r} has no Gaussian infinite-width limit; "
                         "infinite_kernels needs recurrence='full'")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                   or block_size < 1):
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
    n_order = DEFAULT_ORDER if order is None else order
    get_vtransform(cfg.activation, n_order)          # validates the order
    d = cfg.input_dim
    n1, T1, lens1, n2, T2, lens2 = check_batches(x1, x2, lengths1, lengths2, d)
    lens1, lens2 = np.asarray(lens1), np.asarray(lens2)
    symmetric = x2 is None

    dtype = _float_dtype()
    mem_factor = quadrature_cost(cfg.activation, n_order)
    block = block_size or _default_block(cfg.readout, T2, mem_factor)
    nb1, b1 = _tiling(n1, block)
    nb2, b2 = (nb1, b1) if symmetric else _tiling(n2, block)
    x1p, l1p = _pad_rows(np.asarray(x1, dtype), lens1, nb1 * b1)
    if symmetric:
        x2p, l2p = x1p[:0], l1p[:0]                  # unused
    else:
        x2p, l2p = _pad_rows(np.asarray(x2, dtype), lens2, nb2 * b2)
    # sigma_h: exact sequence identities for the h_0 term (padding rows are never read)
    id1, id2 = sequence_ids((x1p, l1p), (x2p, l2p)) if cfg.sigma_h > 0 else (
        np.arange(x1p.shape[0], dtype=np.int32), np.arange(x2p.shape[0], dtype=np.int32))
    K, N = _kernels(x1p, l1p, x2p, l2p, _scalars(cfg, dtype), id1, id2, activation=cfg.activation,
                    order=n_order if mem_factor > 1 else DEFAULT_ORDER,
                    trainable=cfg.trainable, readout=cfg.readout,
                    blocks=((nb1, b1), (nb2, b2)), symmetric=symmetric)
    if nb1 * b1 == n1 and nb2 * b2 == n2:
        return K, N
    if cfg.readout == "all":
        return K[:n1, :, :n2, :], N[:n1, :, :n2, :]
    return K[:n1, :n2], N[:n1, :n2]
