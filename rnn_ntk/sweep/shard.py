"""Scheduler shards: ``--shard I/N`` runs a deterministic, cost-balanced share of a sweep's chunks.

The chunks of the full plan (made as if nothing had run, so that every shard starts from the
same list) are dealt to N shards by greedy longest-processing-time (:func:`balance`): chunks in
order of decreasing estimated cost (:func:`chunk_cost`, the cost model's seconds; ties by chunk
index), each to the shard with the least work so far (ties by shard index). The first shard to
start records this assignment in ``OUT/shards.json`` (an exclusive create,
:func:`rnn_ntk.store.open_shards`); every shard, on every host, then follows the stored one, so
hosts that would size chunks differently (other free memory, another device count) still split
the same way and never overlap. A chunk runs with the lane count it was planned with.

Each shard holds its own lock (``OUT/.rnn-ntk.lock.shard-I-of-N``) and the directory lock
shared (:func:`rnn_ntk.store.lock_store`); ``--resume`` with the same shard continues it (its
finished chunks are skipped, a chunk cut off by a kill is rerun). The shard that writes the last
missing run consolidates ``results.zarr``; before that, ``load_results`` assembles whatever
chunks are in (cells not yet run are NaN, ``ran`` False).

:func:`store_status` / :func:`format_status` (``rnn-ntk status DIR``) read a store without taking
any lock, while shards run. A shard is

- ``done``: every chunk assigned to it is in the store;
- ``running``: a live process holds its lock (on this host: a lock on the file in /proc/locks;
  ``running?`` when the holder is on another host, whose processes cannot be seen from here);
- ``failed``: its lock file was left behind by a process that died without releasing it (killed,
  crashed, node lost); one chunk (the one it was training) counts as failed, the rest pending;
  rerun it with ``--resume``;
- ``pending``: no process holds it and chunks remain (not started yet, or stopped cleanly).

The estimated time left scales the cost model's estimate of each shard's remaining chunks by the
ratio of measured to estimated seconds over the chunks already written (their manifests keep the
seconds each took, compilation included), and takes the largest over shards (they run in
parallel).
"""
from __future__ import annotations

import dataclasses
import heapq
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from rnn_ntk import store
from rnn_ntk.sweep import cost

if TYPE_CHECKING:
    from rnn_ntk.sweep.plan import Chunk, Plan
    from rnn_ntk.sweep.spec import Spec

__all__ = ["Shard", "parse_shard", "balance", "chunk_cost", "assignment", "shard_plan",
           "prepare_shard", "store_status", "format_status"]

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"--shard: {name} must be an integer, got {v!r}")
        if self.count < 1:
            raise ValueError(f"--shard: N must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"--shard: I must be in 0..{self.count - 1} for N = {self.count}, "
                             f"got {self.index}")

    @property
    def label(self) -> str:
        """'shard-I-of-N': the name of its lock file and of its temporary chunk dirs."""
        return f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: str | Sequence[int] | Shard) -> Shard:
    """A :class:`Shard` from 'I/N', (I, N) or a Shard; ValueError (one line) otherwise."""
    if isinstance(value, Shard):
        return value
    if isinstance(value, str):
        m = _SHARD_RE.match(value)
        if not m:
            raise ValueError(f"--shard: expected I/N with integers 0 <= I < N, got {value!r}")
        return Shard(int(m.group(1)), int(m.group(2)))
    try:
        i, n = value
    except (TypeError, ValueError):
        raise ValueError(f"--shard: expected (I, N), got {value!r}") from None
    return Shard(i, n)


def balance(costs: Sequence[float], n: int) -> list[int]:
    """The shard of each item: greedy longest-processing-time over ``n`` shards.

    Items in order of decreasing cost (ties: lower index first) each go to the shard with the
    least total so far (ties: lower shard index). Deterministic; the largest shard total is at
    most 4/3 of the optimum, and exceeds the smallest by at most the largest single cost.

    Args:
        costs: the cost of each item (>= 0).
        n: the number of shards (>= 1).

    Returns:
        A list of shard indices, one per item.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    order = sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i))
    heap = [(0.0, s) for s in range(n)]
    owner = [0] * len(costs)
    for i in order:
        load, s = heapq.heappop(heap)
        owner[i] = s
        heapq.heappush(heap, (load + float(costs[i]), s))
    return owner


def chunk_cost(plan: Plan, chunk: Chunk) -> float:
    """Estimated seconds of a chunk (as in :meth:`Plan.estimate_seconds`: the program's
    seconds per run times its runs per device, plus ``cost.CHUNK_OVERHEAD_S``)."""
    p = plan.programs[chunk.program]
    return p.est_run_s * -(-chunk.size // plan.n_devices) + cost.CHUNK_OVERHEAD_S


def assignment(plan: Plan, count: int) -> dict[str, Any]:
    """The shard record of a full plan (one made with nothing done): every chunk as its program,
    the range [start, stop) of the program's runs, lanes, estimated cost and shard.

    Returns:
        ``{"count", "spec_hash", "n_runs", "chunks": [{"name", "program", "start", "stop",
        "size", "cost", "shard"}, ...]}`` (JSON-able; see :func:`rnn_ntk.store.open_shards`).
    """
    if plan.n_done:
        raise ValueError("assignment needs the full plan (made without finished runs)")
    pos = [{r: k for k, r in enumerate(p.runs)} for p in plan.programs]
    costs = [chunk_cost(plan, c) for c in plan.chunks]
    owner = balance(costs, count)
    units = []
    for c, c_cost, s in zip(plan.chunks, costs, owner):
        start = pos[c.program][c.runs[0]]
        units.append({"name": c.name, "program": c.program, "start": start,
                      "stop": start + len(c.runs), "size": c.size, "cost": round(c_cost, 6),
                      "shard": s})
    return {"count": count, "spec_hash": store.spec_hash(plan.spec.resolved),
            "n_runs": len(plan.runs), "chunks": units}


def shard_plan(plan: Plan, record: Mapping[str, Any], shard: Shard,
               done: set[tuple] | frozenset = frozenset()) -> Plan:
    """The plan of one shard: its chunks from the record, less runs already in the store.

    Args:
        plan: the full plan (made without finished runs, with the store's width groups).
        record: the store's shard record (:func:`assignment`).
        shard: which shard.
        done: coordinates of finished runs.

    Returns:
        ``plan`` with ``chunks`` = the shard's chunks still to run (a chunk partly done keeps
        its lane count and runs the rest under a new name) and ``n_done`` = its finished runs.

    Raises:
        rnn_ntk.store.StoreConflict: the record does not fit this plan.
    """
    from rnn_ntk.sweep.plan import Chunk, _chunk_name
    chunks, n_done = [], 0
    for u in record["chunks"]:
        if u["shard"] != shard.index:
            continue
        if not 0 <= u["program"] < len(plan.programs):
            raise store.StoreConflict(f"{store.SHARDS} names program {u['program']}, which this "
                                      f"plan does not have; use a new --out")
        p = plan.programs[u["program"]]
        sel = tuple(p.runs[u["start"]:u["stop"]])
        coords = [plan.runs[i].coords for i in sel]
        if len(sel) != u["stop"] - u["start"] or _chunk_name(p.id, coords) != u["name"]:
            raise store.StoreConflict(f"{store.SHARDS} does not match this plan (chunk "
                                      f"{u['name']}); use a new --out")
        left = tuple(i for i, c in zip(sel, coords) if c not in done)
        n_done += len(sel) - len(left)
        if not left:
            continue
        name = u["name"] if len(left) == len(sel) else _chunk_name(
            p.id, [plan.runs[i].coords for i in left])
        chunks.append(Chunk(name, u["program"], left, int(u["size"])))
    return dataclasses.replace(plan, chunks=chunks, n_done=n_done)


def prepare_shard(spec: Spec, out_dir: str | os.PathLike, shard: Shard, *, resume: bool = False,
                  max_memory: int | None = None, plan: Plan | None = None) -> Plan:
    """Open (or join) the store as ``shard`` and return its plan (the caller holds the shard's
    lock, ``store.lock_store(out, shard=shard.label)``).

    Creates the header and the shard record race-free when this is the first shard to start;
    otherwise checks them (StoreConflict: another spec, another N). ``plan``: the full plan, when
    the caller made it already (validating before taking the lock)."""
    from rnn_ntk.sweep.plan import make_plan
    if plan is None or plan.n_done:
        plan = make_plan(spec, max_memory=max_memory)
    header = store.open_store(out_dir, plan.header(), resume=resume, shard=shard.label)
    groups = header.get("plan", {}).get("groups")
    if groups != plan.groups:
        plan = make_plan(spec, max_memory=max_memory, groups=groups)
    record = store.read_shards(out_dir)
    if record is None or record.get("count") != shard.count:
        record = store.open_shards(out_dir, assignment(plan, shard.count))
    return shard_plan(plan, record, shard, store.done_runs(out_dir))


# ---------------------------------------------------------------------------------------------
# status (read-only)


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def store_status(out_dir: str | os.PathLike) -> dict[str, Any]:
    """What a store holds and who is writing it, read without taking any lock.

    Returns:
        A dict: ``name``, ``n_runs`` (planned), ``runs_done``, ``chunks_done``, ``writer`` (the
        plain writer's lock state: 'absent' | 'live' | 'dead' | 'unknown'), ``shards`` (None, or
        one dict per shard: ``shard`` 'I/N', ``state`` ('done' | 'running' | 'running?' |
        'failed' | 'pending'), ``host``, ``pid``, chunk counts ``done``, ``running``,
        ``failed``, ``pending``, ``runs_done``, ``runs``, ``left_s``), ``left_s`` (estimated
        seconds left, or None), ``calibrated`` (whether measured chunk times scaled it).

    Raises:
        rnn_ntk.store.StoreError: ``out_dir`` is not a sweep store.
    """
    out = Path(out_dir)
    header = store.read_header(out)
    manifests = store.list_chunks(out)
    names = {m["name"] for m in manifests}
    runs_done = len({tuple(r) for m in manifests for r in m["runs"]})
    n_runs = int(header.get("n_runs", runs_done))
    info, writer = store.lock_state(out / store.LOCK)
    if not info:               # shards hold the directory lock with an empty file
        writer = "absent"
    st: dict[str, Any] = {"name": header.get("name", ""), "out": str(out), "n_runs": n_runs,
                          "runs_done": runs_done, "chunks_done": len(manifests),
                          "writer": writer, "writer_info": info, "shards": None,
                          "left_s": None, "calibrated": False}
    seconds = [(m["info"].get("seconds"), len(m["runs"])) for m in manifests
               if isinstance(m.get("info", {}).get("seconds"), (int, float))]
    record = store.read_shards(out)
    if record is None:
        if seconds:
            per_run = sum(s for s, _ in seconds) / max(1, sum(r for _, r in seconds))
            st["left_s"] = per_run * (n_runs - runs_done)
            st["calibrated"] = True
        return st
    units = record["chunks"]
    unit_cost = {u["name"]: float(u["cost"]) for u in units}
    timed = [(m["info"]["seconds"], unit_cost[m["name"]]) for m in manifests
             if m["name"] in unit_cost and isinstance(m.get("info", {}).get("seconds"),
                                                      (int, float))]
    factor = 1.0
    if timed and sum(c for _, c in timed) > 0:
        factor = sum(s for s, _ in timed) / sum(c for _, c in timed)
        st["calibrated"] = True
    shards = []
    for i in range(int(record["count"])):
        label = f"shard-{i}-of-{record['count']}"
        mine = [u for u in units if u["shard"] == i]
        left = [u for u in mine if u["name"] not in names]
        linfo, lstate = store.lock_state(store.shard_lock_path(out, label))
        partial = any(p.name.startswith(f".tmp-{label}-")
                      for p in (out / store.CHUNKS).glob(".tmp-*"))
        if not left:
            state = "done"
        elif lstate == "live":
            state = "running"
        elif lstate == "unknown":
            state = "running?"
        elif lstate == "dead" or partial:
            state = "failed"
        else:
            state = "pending"
        running = int(bool(left) and state.startswith("running"))
        failed = int(bool(left) and state == "failed")
        shards.append({
            "shard": f"{i}/{record['count']}", "state": state, "host": linfo.get("host"),
            "pid": linfo.get("pid"), "done": len(mine) - len(left), "running": running,
            "failed": failed, "pending": len(left) - running - failed,
            "runs_done": sum(len(m["runs"]) for m in manifests
                             if m.get("info", {}).get("shard") == label),
            "runs": sum(u["stop"] - u["start"] for u in mine),
            "left_s": factor * sum(float(u["cost"]) for u in left)})
    st["shards"] = shards
    st["left_s"] = max((s["left_s"] for s in shards), default=0.0)
    return st


def format_status(st: Mapping[str, Any]) -> str:
    """The text ``rnn-ntk status`` prints for :func:`store_status`."""
    n, d = st["n_runs"], st["runs_done"]
    pct = f" ({100 * d / n:.0f}%)" if n else ""
    lines = [f"sweep {st['name']!r} in {st['out']}: {d}/{n} runs finished{pct}, "
             f"{st['chunks_done']} chunk(s) written"]
    if st["writer"] != "absent":
        who = st["writer_info"]
        lines.append(f"plain writer: {st['writer']} (pid {who.get('pid', '?')} on host "
                     f"{who.get('host', '?')}, started {who.get('started', '?')})")
    how = "measured chunk times" if st["calibrated"] else "the cost model only, no chunk timed yet"
    if st["shards"] is None:
        if d < n:
            lines.append(f"estimated time left: ~{_fmt_s(st['left_s'])} (one writer; from {how})")
        return "\n".join(lines)
    here = socket.gethostname()
    lines.append(f"{len(st['shards'])} shards (chunks done / running / failed / pending):")
    lines.append(f"  {'shard':>7}  {'state':<8}  {'done':>5} {'run':>4} {'fail':>4} {'pend':>5}  "
                 f"{'runs':>11}  {'left':>8}  holder")
    for s in st["shards"]:
        holder = ""
        if s["state"] in ("running", "running?", "failed") and s["pid"] is not None:
            holder = f"pid {s['pid']}" + ("" if s["host"] == here else f" on {s['host']}")
        left = "-" if s["state"] == "done" else "~" + _fmt_s(s["left_s"])
        lines.append(f"  {s['shard']:>7}  {s['state']:<8}  {s['done']:>5} {s['running']:>4} "
                     f"{s['failed']:>4} {s['pending']:>5}  {s['runs_done']:>5}/{s['runs']:<5}  "
                     f"{left:>8}  {holder}".rstrip())
    if d < n:
        idle = [s["shard"] for s in st["shards"] if s["state"] in ("failed", "pending")]
        note = f"; not running: {', '.join(idle)} (start with --shard I/N [--resume])" if idle else ""
        lines.append(f"estimated time left: ~{_fmt_s(st['left_s'])} with the shards in parallel "
                     f"(from {how}){note}")
    if any(s["state"] == "running?" for s in st["shards"]):
        lines.append("running?: held from another host; its process cannot be checked from here")
    return "\n".join(lines)
