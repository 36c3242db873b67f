"""Empirical (finite-width) tangent kernels of the Elman RNN (spec: rnn-kernels.md, section 3).

For a network f(theta, x) with trainable parameters theta (the groups in ``cfg.trainable``),

    NTK(x, x')  = (1/k) sum_j  < d f_j(x) / d theta, d f_j(x') / d theta >
    NNGP(x, x') = (1/k) sum_j  f_j(x) f_j(x')            (one draw; its mean over draws -> NNGP)

the mean over the k outputs being neural-tangents' default (``trace_axes=(-1,)``). Shapes: (n1, n2)
for readouts 'last' and 'mean', (n1, T1, n2, T2) for 'all' (entry [a, s, b, r] pairs f_s(x1[a])
with f_r(x2[b])). A leading seed axis on the parameters (``params['b'].ndim == 2``) gives a leading
seed axis on the kernels.

Structured method (default). With g_t the pre-activations and, for an output f_s,

    delta_{s,t} = d f_s / d g_t  in R^m          (back-propagated signal; 0 for t > s and past the end)

the chain rule gives, for the full recurrence (m = scales.width, d = input_dim),

    NTK(x, x') = sum_{t, t'} <delta_{s,t}, delta'_{s',t'}> C(t, t')                      [W, U, b]
                 + (s_v^2 / m) <hbar_s, hbar'_{s'}>                                          [v]
    C(t, t')   = (s_w^2 / m) <h_{t-1}, h'_{t'-1}> [W] + (s_u^2 / d) <x_t, x'_{t'}> [U] + s_b^2 [b]

(h_0 = 0, or with ``cfg.sigma_h`` > 0 the network's fixed random initial state
:func:`rnn_ntk.model.initial_state`, which enters the W part as h_{t-1} at t = 1; [G] = 1 when
group G is trainable; hbar is the state the readout uses: h_T for 'last', the
mean of h_t over the sequence's own steps for 'mean', h_s masked past the end for 'all'; with k > 1
outputs delta carries an output index j and <delta, delta'> is averaged over j). With a diagonal
recurrence (W an m-vector, recurrent term s_w w * h_{t-1}) the W part is instead

    s_w^2 sum_i A_i A'_i,      A_i = sum_t delta_{s,t,i} h_{t-1,i}.

So a kernel block is a contraction of per-example stacks: delta (n, T, k m) ('all': (n, T, T, k m)),
C-features [s_w h_{t-1} / sqrt(m), s_u x_t / sqrt(d), s_b] (n, T, m + d + 1) and hbar (n, m): time
O(n1 n2 T1 T2 (k m + m + d)) and memory O(n T k m), never the n x P Jacobian (P ~ m^2). The signals
come from one vjp of :func:`rnn_ntk.model.forward` with respect to its ``perturb_NTM`` argument
(d f / d perturb = delta), one cotangent per output coordinate.

Jacobian method: the plain reference, per-example Jacobians of the trainable parameters (a vmap of
``jax.jacrev`` of :func:`rnn_ntk.model.apply`), flattened and contracted: memory O(n k P).

Blocking: the stacks of all examples are kept (computed a wide block of examples at a time, so
the recurrence runs on large batches), and the kernel is contracted tile by tile (``block_size``
examples per tile; by default about 320 rows of examples x steps on CPU, where cache-sized Gram
tiles are fastest, larger on accelerators, and smaller when the memory estimate asks for it), only
the tile pairs on and above the diagonal when ``x2`` is None: up to 16 pairs in straight-line code,
more in a ``lax.map`` loop over the pairs. Seeds run
vmapped, or in memory-bounded batches. Everything runs in one ``jax.jit`` compiled once per
(cfg structure, shapes, method, plan); sigmas and the width are traced (``scales``), so new values
never recompile. The jacobian method uses a single tile unless ``block_size`` is given.
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk.kernels.inputs import check_batches
from rnn_ntk.model import (GROUPS, Params, RNNConfig, Scales, apply, forward, hidden_states,
                           initial_state, readout)
from rnn_ntk.precision import highest_precision

__all__ = ["METHODS", "memory_budget", "empirical_ntk", "empirical_nngp"]

Array = jax.Array

METHODS = ("structured", "jacobian")
_HI = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------
# validation


def _check_params(cfg: RNNConfig, params: Params) -> tuple[int | None, int]:
    """Validate the parameter dict; return (number of seeds or None, array width M)."""
    if not isinstance(params, dict) or set(params) != set(GROUPS):
        keys = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must be a dict with keys {list(GROUPS)}, got {keys}")
    b_shape = np.shape(params["b"])
    if len(b_shape) not in (1, 2):
        raise ValueError(f"params['b'] must have shape (m,) or (seeds, m), got {b_shape}")
    seeded = len(b_shape) == 2
    lead = b_shape[:1] if seeded else ()
    M = b_shape[-1]
    want = {"W": (M,) if cfg.recurrence == "diagonal" else (M, M), "U": (M, cfg.input_dim), "b": (M,),
            "v": (M, cfg.output_dim)}
    for g in GROUPS:
        if np.shape(params[g]) != lead + want[g]:
            raise ValueError(f"params['{g}'] must have shape {lead + want[g]} for this config "
                             f"(recurrence={cfg.recurrence!r}), got {np.shape(params[g])}")
    return (b_shape[0] if seeded else None), M


def _check_common(cfg: Any, params: Params, x1: Any, x2: Any, lengths1: Any, lengths2: Any,
                  scales: Any):
    if not isinstance(cfg, RNNConfig):
        raise ValueError(f"cfg must be an RNNConfig, got {type(cfg).__name__}")
    n_seeds, M = _check_params(cfg, params)
    _, _, l1, _, _, l2 = check_batches(x1, x2, lengths1, lengths2, cfg.input_dim)
    if scales is not None and not isinstance(scales, Scales):
        raise ValueError(f"scales must be an rnn_ntk.Scales or None, got {type(scales).__name__}")
    dtype = jnp.result_type(params["b"])
    sc = cfg.scales() if scales is None else scales
    sc = Scales(*(jnp.asarray(v, dtype) for v in sc))
    # the static key: structure only (sigmas and width travel as traced scales)
    skey = cfg.replace(width=M, sigma_w=1.0, sigma_u=1.0, sigma_b=1.0, sigma_v=1.0)
    return skey, n_seeds, M, l1, l2, sc, dtype


# ----------------------------------------------------------------------------------------------
# per-block stacks and their contractions


def _n_out(cfg: RNNConfig, T: int) -> tuple[int, ...]:
    """Output coordinates per example: (k,) for 'last'/'mean', (T, k) for 'all'."""
    return (T, cfg.output_dim) if cfg.readout == "all" else (cfg.output_dim,)


def _needs(cfg: RNNConfig) -> dict[str, bool]:
    tr = cfg.trainable
    diag = cfg.recurrence == "diagonal"
    F = ("W" in tr and not diag) or "U" in tr or "b" in tr
    A = "W" in tr and diag
    return {"F": F, "A": A, "D": F or A, "V": "v" in tr}


def _structured_stacks(cfg: RNNConfig, params: Params, x: Array, lengths: Array, scales: Scales
                       ) -> dict[str, Array]:
    """Per-example factors for one block x (b, T, d).

    D: (b, T, k m) delta_t / sqrt(k) ['all': (b, T_s, T_t, k m)]; F: (b, T, c) C-features;
    A: (b, k m) diagonal-W sums ['all': (b, T_s, k m)]; V: (b, m) s_v hbar / sqrt(m) ['all': (b, T, m)].
    """
    n, T, d = x.shape
    M = params["b"].shape[-1]
    k = cfg.output_dim
    dtype = params["b"].dtype
    need = _needs(cfg)
    out: dict[str, Array] = {}
    if need["D"]:
        def f(p):
            h, _ = forward(cfg, params, x, lengths, scales=scales, perturb_NTM=p)
            return readout(cfg, params, h, lengths, scales=scales), h

        _, vjp_fn, h = jax.vjp(f, jnp.zeros((n, T, M), dtype), has_aux=True)
        # one cotangent per output coordinate, set for every example at once (examples independent)
        shape = _n_out(cfg, T)
        q = math.prod(shape)
        eye = jnp.eye(q, dtype=dtype).reshape((q,) + shape)
        cots = jnp.broadcast_to(eye[:, None], (q, n) + shape)
        if q == 1:                  # a single cotangent: no vmap (a batch-1 dot is slower)
            D = vjp_fn(cots[0])[0][None]                            # (1, n, T, M)
        else:
            D = jax.vmap(vjp_fn)(cots)[0]                           # (q, n, T, M)
        if cfg.readout == "all":
            D = D.reshape(T, k, n, T, M).transpose(2, 0, 3, 1, 4)    # (n, T_s, T_t, k, M)
        else:
            D = D.reshape(k, n, T, M).transpose(1, 2, 0, 3)          # (n, T, k, M)
        D = D / math.sqrt(k)                                         # mean over outputs
        h0 = initial_state(cfg, x, lengths, M, dtype, width=scales.width)      # sigma_h; 0 if none
        h_prev = jnp.concatenate([h0[:, None, :], h[:, :-1]], axis=1)          # (n, T, M)
        if need["A"]:
            if cfg.readout == "all":
                A = jnp.sum(D * h_prev[:, None, :, None, :], axis=2)
            else:
                A = jnp.sum(D * h_prev[:, :, None, :], axis=1)
            out["A"] = scales.sigma_w * A.reshape(A.shape[:-2] + (k * M,))
        out["D"] = D.reshape(D.shape[:-2] + (k * M,))
    else:
        h = hidden_states(cfg, params, x, lengths, scales=scales)
    inv_sqrt_m = 1.0 / jnp.sqrt(scales.width)
    if need["F"]:
        parts = []
        if "W" in cfg.trainable and cfg.recurrence == "full":
            parts.append((scales.sigma_w * inv_sqrt_m) * h_prev)
        if "U" in cfg.trainable:
            parts.append((scales.sigma_u / math.sqrt(d)) * x.astype(dtype))
        if "b" in cfg.trainable:
            parts.append(scales.sigma_b * jnp.ones((n, T, 1), dtype))
        out["F"] = jnp.concatenate(parts, axis=-1)
    if need["V"]:
        # the state the readout uses (d f_j / d v_j = s_v hbar / sqrt(m)); model.readout conventions
        mask = (jnp.arange(T)[None, :] < lengths[:, None]).astype(dtype)   # (n, T)
        if cfg.readout == "last":
            hbar = h[:, -1]                       # state frozen after the end = state at the end
        elif cfg.readout == "mean":
            hbar = jnp.sum(h * mask[:, :, None], axis=1) / lengths[:, None].astype(dtype)
        else:
            hbar = h * mask[:, :, None]
        out["V"] = (scales.sigma_v * inv_sqrt_m) * hbar
    return out


def _structured_contract(cfg: RNNConfig, s1: dict[str, Array], s2: dict[str, Array]) -> Array:
    """Kernel block from two blocks' stacks: (b1, b2), or (b1, T1, b2, T2) for 'all'."""
    es = functools.partial(jnp.einsum, precision=_HI)
    terms = []
    if cfg.readout == "all":
        if "F" in s1:
            C = es("atf,buf->atbu", s1["F"], s2["F"])
            DD = es("astc,bruc->astbru", s1["D"], s2["D"])
            terms.append(jnp.sum(DD * C[:, None, :, :, None, :], axis=(2, 5)))
        if "A" in s1:
            terms.append(es("asc,brc->asbr", s1["A"], s2["A"]))
        if "V" in s1:
            terms.append(es("asm,brm->asbr", s1["V"], s2["V"]))
    else:
        if "F" in s1:
            C = es("atf,buf->atbu", s1["F"], s2["F"])
            DD = es("atc,buc->atbu", s1["D"], s2["D"])
            terms.append(jnp.sum(DD * C, axis=(1, 3)))
        if "A" in s1:
            terms.append(es("ac,bc->ab", s1["A"], s2["A"]))
        if "V" in s1:
            terms.append(es("am,bm->ab", s1["V"], s2["V"]))
    return functools.reduce(jnp.add, terms)


def _jacobian_stacks(cfg: RNNConfig, params: Params, x: Array, lengths: Array, scales: Scales
                     ) -> dict[str, Array]:
    """Per-example Jacobians of the trainable groups, flattened: J (b, *outputs, P) / sqrt(k)."""
    n, T, _ = x.shape
    train = {g: params[g] for g in cfg.trainable}

    def f_one(tp, x_TD, length):
        return apply(cfg, {**params, **tp}, x_TD[None], length[None], scales=scales)[0]

    J = jax.vmap(jax.jacrev(f_one), in_axes=(None, 0, 0))(train, x, lengths)
    shape = _n_out(cfg, T)
    flat = jnp.concatenate([J[g].reshape((n,) + shape + (-1,)) for g in cfg.trainable], axis=-1)
    return {"J": flat / math.sqrt(cfg.output_dim)}


def _jacobian_contract(cfg: RNNConfig, s1: dict[str, Array], s2: dict[str, Array]) -> Array:
    if cfg.readout == "all":
        return jnp.einsum("askp,brkp->asbr", s1["J"], s2["J"], precision=_HI)
    return jnp.einsum("akp,bkp->ab", s1["J"], s2["J"], precision=_HI)


_STACKS = {"structured": _structured_stacks, "jacobian": _jacobian_stacks}
_CONTRACT = {"structured": _structured_contract, "jacobian": _jacobian_contract}


# ----------------------------------------------------------------------------------------------
# blocking


# at most this many tile pairs are contracted in straight-line code (static slices of the stacks);
# more run in a lax.map loop, whose per-pair dynamic slices copy the tiles (measured: 10 pairs of
# 320-row tiles, m = 512, 10.9 ms in the loop vs 7.6 ms unrolled on a 2-core CPU)
_UNROLL_PAIRS = 16


class _Plan(NamedTuple):
    """Static blocking: contraction tiles of t1 (t2) examples; stacks computed g1 (g2) tiles at a
    time (so the recurrence runs on wide batches while the Gram tiles stay cache-sized); seeds
    processed seed_batch at a time."""

    t1: int
    t2: int
    g1: int
    g2: int
    seed_batch: int


def _layout(n: int, t: int, g: int) -> tuple[int, int]:
    """(number of real tiles, number of stack blocks) for n examples."""
    nt = -(-n // t)
    return nt, -(-nt // g)


def _to_blocks(x: Array, lengths: Array, rows: int, nblocks: int) -> tuple[Array, Array]:
    """Pad (n, T, d) to nblocks * rows (padding: zero inputs, full length); (nblocks, rows, T, d)."""
    n, T, d = x.shape
    pad = nblocks * rows - n
    x = jnp.pad(x, ((0, pad), (0, 0), (0, 0)))
    lengths = jnp.pad(lengths, (0, pad), constant_values=T)
    return x.reshape(nblocks, rows, T, d), lengths.reshape(nblocks, rows)


def _block_map(f, xs):
    """lax.map over a leading block axis, without a loop when there is a single block."""
    if jax.tree.leaves(xs)[0].shape[0] == 1:
        return jax.tree.map(lambda a: a[None], f(jax.tree.map(lambda a: a[0], xs)))
    return jax.lax.map(f, xs)


def _tiled_stacks(stacks, x: Array, lengths: Array, t: int, g: int) -> dict[str, Array]:
    """Stacks of x computed g tiles at a time, returned per tile: leaves (tiles, t, ...)."""
    nt, ns = _layout(x.shape[0], t, g)
    X, L = _to_blocks(x, lengths, g * t, ns)
    S = _block_map(lambda xl: stacks(*xl), (X, L))
    return jax.tree.map(lambda a: a.reshape((ns * g, t) + a.shape[2:]), S)


def _kernel_one(cfg: RNNConfig, method: str, plan: _Plan, symmetric: bool, params: Params,
                x1: Array, l1: Array, x2: Array, l2: Array, scales: Scales) -> Array:
    n1, T1, _ = x1.shape
    n2, T2, _ = x2.shape
    t1, t2 = plan.t1, plan.t2
    stacks = functools.partial(_STACKS[method], cfg, params, scales=scales)
    contract = functools.partial(_CONTRACT[method], cfg)
    S1 = _tiled_stacks(stacks, x1, l1, t1, plan.g1)
    nt1 = _layout(n1, t1, plan.g1)[0]
    if symmetric:
        S2, nt2 = S1, nt1
        pairs = [(i, j) for i in range(nt1) for j in range(i, nt1)]
    else:
        S2 = _tiled_stacks(stacks, x2, l2, t2, plan.g2)
        nt2 = _layout(n2, t2, plan.g2)[0]
        pairs = [(i, j) for i in range(nt1) for j in range(nt2)]
    I = jnp.asarray([p[0] for p in pairs], jnp.int32)
    J = jnp.asarray([p[1] for p in pairs], jnp.int32)

    def pair(ij):
        i, j = ij
        return contract(jax.tree.map(lambda a: a[i], S1), jax.tree.map(lambda a: a[j], S2))

    if len(pairs) <= _UNROLL_PAIRS:       # few tiles: static slices, no loop (no per-pair copies)
        Kp = jnp.stack([pair(p) for p in pairs])                        # (pairs, *tile)
    else:
        Kp = _block_map(pair, (I, J))                                   # (pairs, *tile)
    if len(pairs) == 1:
        K = Kp[0]
        return K[:n1, :, :n2] if cfg.readout == "all" else K[:n1, :n2]
    full = jnp.zeros((nt1, nt2) + Kp.shape[1:], Kp.dtype)
    if symmetric:
        perm = (0, 3, 4, 1, 2) if cfg.readout == "all" else (0, 2, 1)
        full = full.at[J, I].set(jnp.transpose(Kp, perm))
    full = full.at[I, J].set(Kp)
    if cfg.readout == "all":
        K = full.transpose(0, 2, 3, 1, 4, 5).reshape(nt1 * t1, T1, nt2 * t2, T2)
        return K[:n1, :, :n2]
    return full.transpose(0, 2, 1, 3).reshape(nt1 * t1, nt2 * t2)[:n1, :n2]


@functools.partial(jax.jit, static_argnames=("cfg", "method", "plan", "symmetric", "seeded"))
def _ntk_jit(cfg, method, plan, symmetric, seeded, params, x1, l1, x2, l2, scales):
    one = functools.partial(_kernel_one, cfg, method, plan, symmetric)
    if not seeded:
        return one(params, x1, l1, x2, l2, scales)
    n_seeds = params["b"].shape[0]
    f = lambda p: one(p, x1, l1, x2, l2, scales)  # noqa: E731
    if plan.seed_batch >= n_seeds:
        return jax.vmap(f)(params)
    return jax.lax.map(f, params, batch_size=plan.seed_batch)


# ----------------------------------------------------------------------------------------------
# memory plan

# rows (examples x steps) of a contraction tile: cache-sized on CPU, large on accelerators
_TILE_ROWS = {"cpu": 320, "accelerator": 8192}


def memory_budget() -> int:
    """Bytes a kernel computation may use by default.

    Half of the free device memory on accelerators; 40% of MemAvailable on the host otherwise.
    """
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # pragma: no cover - backends without memory stats
        stats = None
    if stats and "bytes_limit" in stats:
        return int(0.5 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(0.4 * int(line.split()[1]) * 1024)
    except OSError:  # pragma: no cover - non-Linux hosts
        pass
    return 4 << 30  # pragma: no cover


def _estimate_bytes(cfg: RNNConfig, method: str, M: int, n1: int, T1: int, n2: int, T2: int,
                    symmetric: bool, plan: _Plan, itemsize: int) -> int:
    """Rough peak bytes of one call: parameters, the stacks of all examples, the transients of
    one stack block or one tile pair (whichever is larger) and the output, per seed in flight."""
    k, d = cfg.output_dim, cfg.input_dim
    all_ = cfg.readout == "all"
    n_par = (M if cfg.recurrence == "diagonal" else M * M) + M * (d + 1 + k)

    def per_example(T: int) -> tuple[int, int]:
        """(stack floats, transient floats) per example of length T."""
        if method == "jacobian":
            P = sum({"W": M if cfg.recurrence == "diagonal" else M * M, "U": M * d, "b": M,
                     "v": M * k}[g] for g in cfg.trainable)
            q = k * (T if all_ else 1)
            return q * P, 2 * q * P + 4 * T * M
        c = M + d + 1
        ts = T if all_ else 1
        stack = ts * T * k * M + T * c + ts * k * M + ts * M
        return stack, 2 * ts * T * k * M + 6 * T * M

    st1, tr1 = per_example(T1)
    st2, tr2 = per_example(T2)
    nt1, ns1 = _layout(n1, plan.t1, plan.g1)
    nt2, ns2 = _layout(n2, plan.t2, plan.g2)
    stacks = ns1 * plan.g1 * plan.t1 * st1 + (0 if symmetric else ns2 * plan.g2 * plan.t2 * st2)
    transient = max(plan.g1 * plan.t1 * tr1, plan.g2 * plan.t2 * tr2)
    tt = plan.t1 * plan.t2
    if method == "jacobian":
        pair = tt * (T1 * T2 if all_ else 1) * 2
    elif all_:
        pair = tt * (2 * T1 * T1 * T2 * T2 + 3 * T1 * T2)
    else:
        pair = 3 * tt * T1 * T2
    out = 2 * n1 * n2 * (T1 * T2 if all_ else 1)
    return plan.seed_batch * itemsize * (n_par + stacks + max(transient, pair) + out)


def _plan(cfg: RNNConfig, method: str, M: int, n1: int, T1: int, n2: int, T2: int,
          symmetric: bool, n_seeds: int | None, itemsize: int, block_size: int | None,
          budget: int) -> _Plan:
    """Choose tiles, stack blocks and the seed batch so that the estimate fits ``budget``."""
    S = 1 if n_seeds is None else n_seeds

    def balanced(n: int, t: int) -> int:
        t = max(1, min(t, n))
        return -(-n // -(-n // t))

    def make(t: int, g: int | None, sb: int) -> _Plan:
        t1, t2 = balanced(n1, t), balanced(n2, t)
        if block_size is not None:
            t1, t2 = min(block_size, n1), min(block_size, n2)
        nt1, nt2 = -(-n1 // t1), -(-n2 // t2)
        g1, g2 = (nt1, nt2) if g is None else (min(g, nt1), min(g, nt2))
        g1, g2 = -(-nt1 // -(-nt1 // g1)), -(-nt2 // -(-nt2 // g2))   # balanced stack blocks
        return _Plan(t1, t2, g1, g2, sb)

    def fits(plan: _Plan) -> bool:
        return _estimate_bytes(cfg, method, M, n1, T1, n2, T2, symmetric, plan, itemsize) <= budget

    if method == "jacobian":                      # the plain reference: one block unless told
        t = max(n1, n2) if block_size is None else block_size
        sb = S
        while sb > 1 and not fits(make(t, 1, sb)):
            sb = -(-sb // 2)
        return make(t, 1, sb)
    if block_size is not None:
        t = block_size
    else:
        kind = "cpu" if jax.default_backend() == "cpu" else "accelerator"
        rows = T1 * T1 if cfg.readout == "all" else T1
        t = -(-_TILE_ROWS[kind] // rows)
    sb = S
    while sb > 1 and not fits(make(t, 1, sb)):
        sb = -(-sb // 2)
    while t > 1 and block_size is None and not fits(make(t, 1, sb)):
        t = -(-t // 2)
    g = max(-(-n1 // max(t, 1)), -(-n2 // max(t, 1)))
    while g > 1 and not fits(make(t, g, sb)):
        g = -(-g // 2)
    return make(t, g, sb)


# ----------------------------------------------------------------------------------------------
# public API


def _prepare_ntk(cfg, params, x1, x2, method, lengths1, lengths2, scales, block_size,
                 memory_budget_bytes) -> tuple:
    """Validate and plan; the positional arguments of :func:`_ntk_jit`."""
    skey, n_seeds, M, l1, l2, sc, dtype = _check_common(cfg, params, x1, x2, lengths1, lengths2,
                                                        scales)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                   or block_size < 1):
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
    symmetric = x2 is None
    n1, T1, _ = np.shape(x1)
    n2, T2 = (n1, T1) if symmetric else np.shape(x2)[:2]
    budget = memory_budget() if memory_budget_bytes is None else memory_budget_bytes
    plan = _plan(skey, method, M, n1, T1, n2, T2, symmetric, n_seeds, jnp.dtype(dtype).itemsize,
                 block_size, budget)
    x1 = jnp.asarray(x1, dtype)
    x2 = x1 if symmetric else jnp.asarray(x2, dtype)
    l2 = l1 if symmetric else l2
    return (skey, method, plan, symmetric, n_seeds is not None, params, x1, l1, x2, l2, sc)


@highest_precision
def empirical_ntk(cfg: RNNConfig, params: Params, x1: Array, x2: Array | None = None, *,
                  method: str = "structured", lengths1: Array | None = None,
                  lengths2: Array | None = None, scales: Scales | None = None,
                  block_size: int | None = None, memory_budget_bytes: int | None = None) -> Array:
    """Empirical NTK of the trainable groups, averaged over the k outputs.

    x1 (n1, T1, d), x2 (n2, T2, d) (default x1); lengths1/lengths2 (n,) for padded batches.
    Returns (n1, n2) for readouts 'last'/'mean' and (n1, T1, n2, T2) for 'all', with a leading
    seed axis when ``params`` has one (``params['b']`` of shape (S, m)). ``method`` is
    'structured' (contraction of hidden-state and back-propagated-signal stacks, memory
    O(n T k m); see the module docstring for the formulas) or 'jacobian' (per-example Jacobians,
    memory O(n k P): the reference). ``scales`` (default ``cfg.scales()``) may hold traced sigmas
    and the true width of a zero-padded net. ``block_size``: examples per contraction tile
    (default: cache-sized tiles, shrunk until the memory estimate fits ``memory_budget_bytes``,
    default :func:`memory_budget`; the jacobian method uses one tile unless told).
    """
    return _ntk_jit(*_prepare_ntk(cfg, params, x1, x2, method, lengths1, lengths2, scales,
                                  block_size, memory_budget_bytes))


@functools.partial(jax.jit, static_argnames=("cfg", "symmetric", "seeded", "seed_batch"))
def _nngp_jit(cfg, symmetric, seeded, seed_batch, params, x1, l1, x2, l2, scales):
    k = cfg.output_dim

    def one(p):
        f1 = apply(cfg, p, x1, l1, scales=scales)
        f2 = f1 if symmetric else apply(cfg, p, x2, l2, scales=scales)
        spec = "atk,buk->atbu" if cfg.readout == "all" else "ak,bk->ab"
        return jnp.einsum(spec, f1, f2, precision=_HI) / k

    if not seeded:
        return one(params)
    if seed_batch >= params["b"].shape[0]:
        return jax.vmap(one)(params)
    return jax.lax.map(one, params, batch_size=seed_batch)


@highest_precision
def empirical_nngp(cfg: RNNConfig, params: Params, x1: Array, x2: Array | None = None, *,
                   lengths1: Array | None = None, lengths2: Array | None = None,
                   scales: Scales | None = None) -> Array:
    """Finite-width output covariance of one draw: (1/k) sum_j f_j(x1) f_j(x2).

    Its mean over independent draws of the parameters tends to the NNGP kernel. Shapes and the
    seed axis as :func:`empirical_ntk`.
    """
    skey, n_seeds, M, l1, l2, sc, dtype = _check_common(cfg, params, x1, x2, lengths1, lengths2,
                                                        scales)
    symmetric = x2 is None
    n1, T1, _ = np.shape(x1)
    n2, T2 = (n1, T1) if symmetric else np.shape(x2)[:2]
    sb = 1
    if n_seeds is not None:
        per_seed = jnp.dtype(dtype).itemsize * (8 * (n1 * T1 + n2 * T2) * M + M * M)
        sb = max(1, min(n_seeds, memory_budget() // max(per_seed, 1)))
    x1 = jnp.asarray(x1, dtype)
    x2 = x1 if symmetric else jnp.asarray(x2, dtype)
    l2 = l1 if symmetric else l2
    return _nngp_jit(skey, symmetric, n_seeds is not None, int(sb), params, x1, l1, x2, l2, sc)
