"""Plan -> chunks of lanes over the devices -> result store (resume, atomic chunk writes).

One writer per output directory: :func:`run_sweep` (and the CLI) hold
:func:`rnn_ntk.store.lock_store` from opening the store to the last chunk; or one per shard
(``shard=``, :mod:`rnn_ntk.sweep.shard`), N shards writing one store at once. Nothing here prints:
callers follow progress through ``on_chunk`` (per chunk) and ``on_step`` (run-steps).

Several processes (``run_sweep(..., distributed=True)``, :mod:`rnn_ntk.distributed`): every
process runs every chunk (its lanes over the devices of all processes); process 0 alone holds
the lock, plans what remains, writes and consolidates the store (why: see
:mod:`rnn_ntk.distributed`); the others wait for each write.

Mid-run checkpoints (``[train] checkpoint_every = K``): a chunk of such a program keeps its lane
states in ``OUT/.checkpoints/<chunk>/`` (:mod:`rnn_ntk.checkpoint`, the last two every K steps),
deleted once the chunk is written; a resumed sweep first continues the chunks that hold a
checkpoint, from their last one, with their runs and lanes as saved (:func:`adopt_checkpoints`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from rnn_ntk import checkpoint as ckpt_lib
from rnn_ntk import distributed as dist
from rnn_ntk import store, train
from rnn_ntk.sweep import cost
from rnn_ntk.sweep.plan import (Chunk, Plan, Program, Run, _chunks_of, expand_runs, fixed_lanes,
                                lane_values, make_plan)
from rnn_ntk.sweep.shard import Shard, parse_shard, prepare_shard
from rnn_ntk.sweep.spec import Spec, SpecError

__all__ = ["run_chunk", "Summary", "prepare", "prepare_distributed", "execute", "run_sweep",
           "chunk_checkpoint", "adopt_checkpoints"]

_PARAM_DIMS = {"W": ("unit", "unit_in"), "U": ("unit", "input"), "b": ("unit",),
               "v": ("unit", "output")}


def _param_arrays(prefix: str, params: Mapping[str, Any], widths: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """Store variables of a run's final parameters (group -> (R, ...)): per-unit entries beyond
    each run's own width set to NaN (they are exact zeros of the padding)."""
    data, dims = {}, {}
    for g, a in params.items():
        a = np.array(a, dtype=np.result_type(a.dtype, np.float32))
        name = f"{prefix}_{g}"
        d = _PARAM_DIMS.get(g, tuple(f"{name}_{i}" for i in range(a.ndim - 1)))[: a.ndim - 1]
        for ax, dn in enumerate(d):
            if dn in ("unit", "unit_in"):
                idx = np.arange(a.shape[ax + 1])
                shape = [1] * a.ndim
                shape[0], shape[ax + 1] = len(widths), len(idx)
                mask = (idx[None, :] < widths[:, None]).reshape(shape)
                a = np.where(mask, a, np.nan)
        data[name], dims[name] = a, d
    return data, dims


def _records_to_arrays(records: Mapping[str, Any], widths: np.ndarray, n_logs: int
                       ) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """Flatten train_many's records into store variables (name -> array, name -> dims)."""
    data, dims = {}, {}
    for k, v in records.items():
        if isinstance(v, Mapping):  # final_params, lin_final_params
            prefix = "final" if k == "final_params" else k.replace("_params", "")
            d2, m2 = _param_arrays(prefix, v, widths)
            data.update(d2)
            dims.update(m2)
            continue
        a = np.asarray(v)
        if a.ndim >= 2 and a.shape[1] == n_logs:
            dims[k] = ("step",) + tuple(f"{k}_{i}" for i in range(a.ndim - 2))
        else:
            dims[k] = tuple(f"{k}_{i}" for i in range(a.ndim - 1))
        data[k] = a
    return data, dims


def _lane_hparams(plan: Plan, p: Program, padded: list[Run]) -> dict[str, np.ndarray]:
    """The traced hyperparameters of a chunk's lanes (name -> (R,)), the true width included."""
    lane_fixed = fixed_lanes(plan.spec)
    names = set(train.default_hparams(p.cfg))
    hp: dict[str, np.ndarray] = {}
    for r_i, r in enumerate(padded):
        vals = {n: v for n, v in lane_values(lane_fixed, r).items() if n in names}
        vals["width"] = float(r.width)
        for n, v in vals.items():
            hp.setdefault(n, np.full(len(padded), np.nan))[r_i] = v
    return hp


def _store_variables(p: Program, records: Mapping[str, Any], runs: list[Run]
                     ) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """A chunk's records (padding lanes dropped) as store variables, in record_names order."""
    import jax
    records = jax.tree.map(lambda a: np.asarray(a)[: len(runs)], records)
    widths = np.array([r.width for r in runs])
    order = list(train.record_names(p.cfg))
    records = {k: records[k] for k in sorted(records, key=lambda k: (
        order.index(k) if k in order else len(order), k))}
    data, dims = _records_to_arrays(records, widths, p.cfg.n_logs)
    data["array_width"] = np.full(len(runs), p.cfg.width_array, dtype=np.int64)
    dims["array_width"] = ()
    return data, dims


def run_chunk(plan: Plan, chunk: Chunk, on_step: Callable[[int], None] | None = None, *,
              checkpoint: ckpt_lib.ChunkCheckpoint | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """Train one chunk's runs (padded to the chunk size) and return the store variables.

    on_step(n): n more run-steps done (padding lanes not counted), from device threads, one call
    at a time, every :func:`cost.progress_every` logs of each run (or once, at the chunk's end,
    for short runs and with several processes); the calls sum to len(chunk.runs) * steps (steps
    restored from a checkpoint are reported first). checkpoint: the chunk's
    :func:`chunk_checkpoint` when its program has checkpoint_every (saves the lanes between
    segments, resumes from the last save)."""
    import jax
    import jax.numpy as jnp
    p = plan.programs[chunk.program]
    runs = [plan.runs[i] for i in chunk.runs]
    padded = runs + [runs[-1]] * (chunk.size - len(runs))
    keys = jnp.stack([train.run_key(r.seed, r.key_coords) for r in padded])
    hp = _lane_hparams(plan, p, padded)
    every = (cost.progress_every(p.cfg, plan.backend)
             if on_step is not None and jax.process_count() == 1 else 0)

    def report(lanes: np.ndarray, steps: int) -> None:   # filler lanes (index >= runs) are dropped
        n = int(np.count_nonzero(lanes < len(runs)))
        if n:
            on_step(n * steps)

    progress = report if every else None
    records = train.train_many(p.cfg, keys, hp, progress=progress, progress_every=max(every, 1),
                               checkpoint=checkpoint)
    records = jax.device_get(records)
    if on_step is not None and not every and p.cfg.steps:
        on_step(len(runs) * p.cfg.steps)   # short runs: the whole chunk at once
    return _store_variables(p, records, runs)


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a sweep did: runs in the store, runs trained now, diverged runs, wall time, paths."""

    n_runs: int
    n_trained: int
    n_skipped: int
    n_diverged: int
    wall_s: float
    out: Path
    results: Path


def prepare(spec: Spec, out_dir: str | os.PathLike, *, resume: bool = False,
            max_memory: int | None = None, plan: Plan | None = None) -> Plan:
    """Validate and plan, then create (or reopen, to resume) the store; returns the plan of what
    remains. Nothing is written when the spec is invalid or the store is refused. ``plan``:
    ``make_plan(spec, max_memory=max_memory)`` when the caller already made it (validating before
    taking the store's lock)."""
    if plan is None:
        plan = make_plan(spec, max_memory=max_memory)
    header = store.open_store(out_dir, plan.header(), resume=resume)
    done = store.done_runs(out_dir)
    if done or header.get("plan", {}).get("groups") != plan.groups:
        plan = make_plan(spec, max_memory=max_memory, done=done,
                         groups=header.get("plan", {}).get("groups"))
    return plan


def _summary(plan: Plan, out_dir: str | os.PathLike, n_trained: int, t0: float,
             shard: Shard | None = None) -> Summary:
    """Consolidate the store (a shard: only once every run is in) and count its runs and
    diverged runs (process 0; the counts are broadcast to the other processes)."""
    def counts() -> tuple[int, int, str]:
        path = (store.consolidate(out_dir) if shard is None
                else store.consolidate_if_complete(out_dir) or Path(out_dir))
        ds = store.load_results(out_dir)
        n_div = 0
        if "diverged" in ds:
            n_div = int((ds["diverged"].any("step") & ds["ran"]).sum())
        return int(ds["ran"].sum()), n_div, str(path)

    n_runs, n_div, path = dist.from_writer(counts, (store.StoreError,))
    return Summary(n_runs=n_runs, n_trained=n_trained, n_skipped=plan.n_done,
                   n_diverged=n_div, wall_s=time.perf_counter() - t0, out=Path(out_dir),
                   results=Path(path))


@contextlib.contextmanager
def prepare_distributed(spec: Spec, out_dir: str | os.PathLike, *, resume: bool = False,
                        max_memory: int | None = None) -> Iterator[tuple[Plan, str | None]]:
    """:func:`prepare` for several processes (a collective: every process enters it alike).

    Checks that every process holds the same spec, then process 0 plans, takes the store's lock
    (held until the block ends), opens the store (its done set on ``resume``) and broadcasts
    what remains (its memory budget, width groups and the runs to do); the others rebuild the
    same plan from it, and all check they agree on the chunks. Errors are raised on every
    process alike. One process: the same as locking and :func:`prepare`.

    Yields:
      (plan of what remains, the lock's note or None: a stale lock taken over).

    Raises:
      MismatchError: processes hold different specs (naming the keys) or plans.
      SpecError: the spec is invalid (on process 0's budget); StoreError: the store is refused.
    """
    dist.agree({"spec": spec.resolved}, "spec")
    with contextlib.ExitStack() as stack:
        mine: list[Plan] = []

        def plan_on_writer() -> dict[str, Any]:
            plan = make_plan(spec, max_memory=max_memory)
            lock = stack.enter_context(store.lock_store(out_dir))
            plan = prepare(spec, out_dir, resume=resume, max_memory=max_memory, plan=plan)
            mine.append(plan)
            return {"max_memory": plan.max_memory, "groups": plan.groups, "note": lock.note,
                    "todo": sorted(i for c in plan.chunks for i in c.runs)}

        got = dist.from_writer(plan_on_writer, (SpecError, store.StoreError))
        if mine:
            plan = mine[0]
        else:
            todo = set(got["todo"])
            done = [r.coords for i, r in enumerate(expand_runs(spec)) if i not in todo]
            plan = make_plan(spec, max_memory=got["max_memory"], done=done,
                             groups=got["groups"])
        dist.agree({"chunks": [[c.name, c.size] for c in plan.chunks],
                    "programs": [p.id for p in plan.programs]}, "plan")
        yield plan, got["note"]


def chunk_checkpoint(plan: Plan, chunk: Chunk, out_dir: str | os.PathLike
                     ) -> ckpt_lib.ChunkCheckpoint | None:
    """The checkpoints of ``chunk`` in ``out_dir`` (None when its program runs unsegmented:
    checkpoint_every 0 or >= steps; and in a run over several JAX processes, which does not
    checkpoint: a killed distributed chunk restarts from its first step). A checkpoint is used only by the same spec (hash), chunk
    name, program, runs and lane count."""
    import jax
    p = plan.programs[chunk.program]
    if not train.segment_logs(p.cfg) or jax.process_count() > 1:
        return None
    identity = {"spec_hash": store.spec_hash(plan.spec.resolved), "chunk": chunk.name,
                "program": p.id, "runs": list(chunk.runs), "size": chunk.size}
    return ckpt_lib.ChunkCheckpoint(ckpt_lib.checkpoint_dir(out_dir, chunk.name), identity)


def adopt_checkpoints(plan: Plan, out_dir: str | os.PathLike) -> Plan:
    """The plan with the chunks that hold a checkpoint in ``out_dir`` first, as they were saved.

    A resumed plan may cut its remaining runs into other chunks than the interrupted run did
    (fewer runs left, another memory budget); a chunk with a checkpoint of this spec whose runs
    are all still to do in this plan (same program) is kept as saved, the program's other runs
    are re-chunked around it. Checkpoints of chunks already written are deleted; others (another
    spec, or runs this plan does not run) are left alone."""
    ckpt_lib.remove_checkpoints(out_dir, [m["name"] for m in store.list_chunks(out_dir)])
    h = store.spec_hash(plan.spec.resolved)
    pending = {i: c.program for c in plan.chunks for i in c.runs}
    names = {c.name for c in plan.chunks}
    adopted: list[Chunk] = []
    for info in ckpt_lib.saved_chunks(out_dir):
        runs = tuple(info.get("runs", ()))
        pi = next((i for i, p in enumerate(plan.programs) if p.id == info.get("program")), None)
        if (info.get("spec_hash") != h or pi is None or not runs or info.get("chunk") in names
                or any(pending.get(i) != pi for i in runs)):
            continue
        adopted.append(Chunk(info["chunk"], pi, runs, int(info["size"])))
        for i in runs:
            del pending[i]
    if not adopted:
        return plan
    taken = {i for c in adopted for i in c.runs}
    chunks = list(adopted)
    for pi, p in enumerate(plan.programs):
        mine = [c for c in plan.chunks if c.program == pi]
        if not any(i in taken for c in mine for i in c.runs):
            chunks += mine
            continue
        rest = [i for c in mine for i in c.runs if i not in taken]
        chunks += _chunks_of(dataclasses.replace(p, todo=rest), pi, plan.runs)
    return dataclasses.replace(plan, chunks=chunks)


def execute(plan: Plan, out_dir: str | os.PathLike, *,
            on_chunk: Callable[[Chunk, float], None] | None = None,
            on_step: Callable[[int], None] | None = None,
            shard: Shard | None = None) -> Summary:
    """Run a prepared plan's chunks (each written atomically), then consolidate the store.

    on_chunk(chunk, seconds) after each written chunk; on_step(n) as training goes, n run-steps
    at a time (see :func:`run_chunk`; the calls sum to ``plan.steps_todo``). With on_step the
    progress variant of each program is compiled (records are bit-identical). The caller holds
    the store's lock (:func:`rnn_ntk.store.lock_store`), as :func:`run_sweep` does; a shard's
    plan (:func:`rnn_ntk.sweep.shard.prepare_shard`) passes ``shard``, which tags its chunks.
    Chunks holding a checkpoint continue from it (:func:`adopt_checkpoints`); a chunk's
    checkpoints are deleted once it is written."""
    t0 = time.perf_counter()
    n_trained = 0
    plan = adopt_checkpoints(plan, out_dir)
    for chunk in plan.chunks:
        t = time.perf_counter()
        p = plan.programs[chunk.program]
        ckpt = chunk_checkpoint(plan, chunk, out_dir)
        try:
            data, dims = run_chunk(plan, chunk, on_step, checkpoint=ckpt)
        finally:
            if ckpt is not None:
                ckpt.close()
        coords = [plan.runs[i].coords for i in chunk.runs]
        info = {"program": p.id, "array_width": p.cfg.width_array,
                "seconds": round(time.perf_counter() - t, 3),
                **({"shard": shard.label} if shard else {})}
        dist.from_writer(lambda: str(store.write_chunk(  # process 0 writes, all wait
            out_dir, chunk.name, coords, data, dims, np.arange(p.cfg.n_logs) * p.cfg.log_every,
            info=info, writer=shard.label if shard else None)), (store.StoreError,))
        if ckpt is not None:
            ckpt.delete()
        n_trained += len(chunk.runs)
        if on_chunk is not None:
            on_chunk(chunk, time.perf_counter() - t)
    return _summary(plan, out_dir, n_trained, t0, shard)


def run_sweep(spec: Spec, out_dir: str | os.PathLike, *, resume: bool = False,
              max_memory: int | None = None,
              on_chunk: Callable[[Chunk, float], None] | None = None,
              on_step: Callable[[int], None] | None = None,
              distributed: bool = False,
              shard: str | tuple[int, int] | Shard | None = None) -> Summary:
    """:func:`prepare` then :func:`execute`, holding the store's lock throughout (a second
    writer on ``out_dir`` gets StoreError; nothing is written when the spec is invalid).

    ``distributed``: one sweep over several JAX processes, every process calling this alike:
    :func:`rnn_ntk.distributed.initialize` (settings from RNN_NTK_COORDINATOR, ... or a
    detected cluster; a no-op when already initialised, which must happen before any other JAX
    call), then :func:`prepare_distributed` and :func:`execute`; process 0 writes ``out_dir``.
    Without it, a process of a multi-process JAX run is refused (ValueError).

    ``shard`` ('I/N', (I, N) or a :class:`~rnn_ntk.sweep.shard.Shard`): run only that shard's
    chunks (:mod:`rnn_ntk.sweep.shard`), holding its own lock, alongside the other shards; a bad
    shard (ValueError), another spec or another N in the store (StoreConflict) are refused before
    any compute. Not with ``distributed`` (ValueError)."""
    sh = parse_shard(shard) if shard is not None else None
    if distributed:
        if sh is not None:
            raise ValueError("run_sweep: shard and distributed exclude each other (a distributed "
                             "run is one writer over all processes)")
        dist.initialize()
        with prepare_distributed(spec, out_dir, resume=resume, max_memory=max_memory) as got:
            return execute(got[0], out_dir, on_chunk=on_chunk, on_step=on_step)
    import jax
    if jax.process_count() > 1:
        raise ValueError(f"run_sweep: this is one of {jax.process_count()} JAX processes; pass "
                         f"distributed=True (every process) so that process 0 alone writes")
    plan = make_plan(spec, max_memory=max_memory)
    if sh is not None:
        store.check_store(out_dir, plan.spec.resolved, sh.count)
    with store.lock_store(out_dir, shard=sh.label if sh else None):
        if sh is not None:
            plan = prepare_shard(spec, out_dir, sh, resume=resume, max_memory=max_memory,
                                 plan=plan)
        else:
            plan = prepare(spec, out_dir, resume=resume, max_memory=max_memory, plan=plan)
        return execute(plan, out_dir, on_chunk=on_chunk, on_step=on_step, shard=sh)
