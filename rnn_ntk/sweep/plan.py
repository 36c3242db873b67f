"""Spec -> runs -> :class:`Plan`: buckets, packed widths and chunks (pure; runs nothing).

:func:`make_plan` is a pipeline of small steps: expand the runs, validate each bucket's configs
(:func:`_validate_buckets`), pack each bucket's widths into programs (:func:`_pack_widths`), and
split each program's lanes into chunks that fit the memory budget (:func:`_chunk_programs`). The
estimates come from :mod:`rnn_ntk.sweep.cost`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import platform
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from rnn_ntk import model as model_mod
from rnn_ntk import store, tasks, train
from rnn_ntk.model import RNNConfig
from rnn_ntk.sweep import cost
from rnn_ntk.sweep.spec import CATALOGUE, SHARED, Spec, SpecError, coord_value, jsonable
from rnn_ntk.tasks import TaskConfig
from rnn_ntk.train import TrainConfig

__all__ = [
    "Run", "key_coord", "expand_runs", "build_config", "fixed_lanes", "lane_values",
    "choose_width_groups",
    "Program", "Chunk", "Plan", "versions", "chunk_memory", "chunk_budget", "make_plan",
    "describe_plan",
]


# ---------------------------------------------------------------------------------------------
# runs and configs


@dataclasses.dataclass(frozen=True)
class Run:
    """One run: its coordinates (values of the spec's axes, store form), seed, width, the values of
    its static fields (section -> name -> value) and its lane hyperparameters (set by the spec)."""

    index: int
    coords: tuple
    seed: int
    width: int
    static: tuple          # ((section, name, value), ...) of the run's static axis values
    lanes: tuple           # ((name, value), ...) of lane values set by the spec (not width)
    key_coords: tuple      # ints folded into the run key


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def key_coord(name: str, value: Any) -> int:
    """The int folded into a run key for axis ``name`` at ``value`` (a hash of both)."""
    return _stable_int(f"{name}={json.dumps(jsonable(coord_value(value)))}")


def _factors(spec: Spec) -> list[list[dict[str, Any]]]:
    """The factors of the run product: one per independent axis and one per zip group."""
    factors: list[list[dict[str, Any]]] = []
    seen_groups = set()
    for a in spec.axes:
        if a.group is None:
            factors.append([{a.name: v} for v in a.values])
        elif a.group not in seen_groups:
            seen_groups.add(a.group)
            members = [b for b in spec.axes if b.group == a.group]
            factors.append([{b.name: b.values[i] for b in members}
                            for i in range(len(members[0].values))])
    return factors


def expand_runs(spec: Spec) -> list[Run]:
    """All runs of a spec, in order: the product over independent axes and zip groups, seed last.

    Each factor value's pieces (coordinates, static and lane values, key ints) are computed once,
    so a run costs a few tuple concatenations (10^5 runs plan in seconds)."""
    sec = {a.name: a.section for a in spec.axes}
    fields = {a.name: CATALOGUE[a.section][a.name] for a in spec.axes if a.section != "sweep"}
    pos = {a.name: i for i, a in enumerate(spec.axes)}
    axis = {a.name: a for a in spec.axes}
    fixed_width = spec.fixed["model"].get("width")

    def pieces(d: Mapping[str, Any]) -> tuple:
        coords = tuple((pos[n], axis[n].coord(v)) for n, v in d.items())
        static = tuple((sec[n], n, v) for n, v in d.items()
                       if n in fields and not fields[n].traced and n != "width")
        lanes = tuple((n, v) for n, v in d.items() if n in fields and fields[n].traced)
        keys = {n: key_coord(n, d[n]) for n in spec.key_axes if n in d}
        return d, coords, static, lanes, keys

    factors = [[pieces(d) for d in f] for f in _factors(spec)]
    n_axes = len(spec.axes)
    runs = []
    for i, combo in enumerate(itertools.product(*factors)):
        coords: list[Any] = [None] * n_axes
        static: tuple = ()
        lanes: tuple = ()
        keys: dict[str, int] = {}
        vals: dict[str, Any] = {}
        for d, c, st, ln, kc in combo:
            vals.update(d)
            for j, v in c:
                coords[j] = v
            static += st
            lanes += ln
            if kc:
                keys.update(kc)
        width = vals.get("width", fixed_width)
        runs.append(Run(i, tuple(coords), int(vals["seed"]), int(width), static, lanes,
                        tuple(keys[n] for n in spec.key_axes)))
    return runs


def _target_default(readout: str) -> str:
    return "all" if readout == "all" else "last"


def build_config(spec: Spec, static: Iterable[tuple[str, str, Any]], width: int) -> TrainConfig:
    """The TrainConfig of a run alone at its own width (raises ConfigError)."""
    kw: dict[str, dict[str, Any]] = {s: dict(spec.fixed[s]) for s in ("model", "task", "train")}
    for s, n, v in static:
        kw[s][n] = v
    fields = {s: {f.name for f in dataclasses.fields(c)}
              for s, c in (("model", RNNConfig), ("task", TaskConfig), ("train", TrainConfig))}
    # scalar model sigmas go into the config too (the traced hparams carry the same values)
    m = {n: v for n, v in kw["model"].items() if n in fields["model"]}
    m["width"] = width
    t = {n: v for n, v in kw["task"].items() if n in fields["task"]}
    for n in SHARED:
        if n in t:
            m[n] = t[n]
    t.setdefault("target", _target_default(m.get("readout", "last")))
    tr = {n: v for n, v in kw["train"].items() if n in fields["train"]}
    return TrainConfig(model=RNNConfig(**m), task=TaskConfig(**t), **tr)


def fixed_lanes(spec: Spec) -> dict[str, float]:
    """Lane hyperparameters set as scalars in the spec (name -> value)."""
    out = {}
    for s in ("model", "task", "train"):
        for n, v in spec.fixed[s].items():
            if CATALOGUE[s][n].traced:
                out[n] = v
    return out


def lane_values(lane_fixed: Mapping[str, float], run: Run) -> dict[str, float]:
    """A run's lane hyperparameters (name -> value): ``lane_fixed`` (:func:`fixed_lanes`), then
    the run's own axis values."""
    return {**lane_fixed, **dict(run.lanes)}


# ---------------------------------------------------------------------------------------------
# programs, chunks, the plan


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled program: a bucket's config at the array width of its packed widths.

    runs: indices into Plan.runs (all runs, finished ones included); todo: those still to do;
    chunk_lanes: lanes per chunk; run_bytes, out_bytes, est_run_s: the cost model's estimates of
    one run (memory in flight, records, seconds)."""

    id: str
    bucket: str              # canonical JSON of the bucket's static axis values
    static: tuple            # ((section, name, value), ...)
    cfg: TrainConfig
    widths: tuple[int, ...]
    runs: list[int]
    todo: list[int]
    chunk_lanes: int = 0
    run_bytes: int = 0
    out_bytes: int = 0
    est_run_s: float = 0.0

    @property
    def packed(self) -> bool:
        return len(self.widths) > 1


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Runs of one program computed by one train_many call (padded to ``size`` lanes)."""

    name: str
    program: int
    runs: tuple[int, ...]
    size: int


def versions() -> dict[str, str]:
    """Versions of python, rnn_ntk and the key packages (store attributes)."""
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    try:
        from rnn_ntk import __version__
        out["rnn_ntk"] = __version__
    except ImportError:
        out["rnn_ntk"] = "unknown"
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "xarray", "zarr"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a sweep will do: its runs, compiled programs and the chunks still to run.

    n_done: runs already in the store; max_memory: the budget in bytes of a chunk on all the
    devices (scaled to the devices a chunk uses where each has its own memory, see
    :func:`chunk_budget`); groups: the width groups per bucket (kept in the store's header, so a
    resumed store keeps its packing); device_memory: the bytes per device planned for
    (:func:`cost.device_memory`), memory_source: where that number came from ('memory_stats':
    each device's own memory, 'host RAM': shared by the devices); memory_fraction: the fraction
    of it budgeted (``cost.MEMORY_FRACTION``), or None when ``max_memory`` was given."""

    spec: Spec
    runs: list[Run]
    programs: list[Program]
    chunks: list[Chunk]
    n_done: int
    max_memory: int
    backend: str
    devices: list
    groups: dict[str, list[list[int]]]
    device_memory: int = 0
    memory_source: str = "host RAM"
    memory_fraction: float | None = None

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def axes(self) -> dict[str, list]:
        return {a.name: a.coords for a in self.spec.axes}

    def header(self) -> dict[str, Any]:
        """The store header of this plan (see :func:`rnn_ntk.store.open_store`)."""
        return {"name": self.spec.name, "description": self.spec.description,
                "spec": self.spec.resolved, "spec_toml": self.spec.text,
                "axes": jsonable(self.axes), "n_runs": len(self.runs),
                "versions": versions(), "plan": {"groups": self.groups},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    @property
    def steps_todo(self) -> int:
        """Training steps of the chunks still to do, summed over their runs (run-steps): the
        total of ``execute``'s ``on_step`` reports."""
        return sum(len(c.runs) * self.programs[c.program].cfg.steps for c in self.chunks)

    def estimate_seconds(self) -> tuple[float, float]:
        """(compile seconds, run seconds) of the chunks still to do."""
        progs = {c.program for c in self.chunks}
        comp = cost.compile_seconds(self.backend) * len(progs)
        run = 0.0
        for c in self.chunks:
            p = self.programs[c.program]
            per_dev = -(-c.size // self.n_devices)
            run += p.est_run_s * per_dev + cost.CHUNK_OVERHEAD_S
        return comp, run


def chunk_memory(p: Program, lanes: int, devices: Sequence[Any], backend: str) -> int:
    """Estimated bytes of a chunk of ``lanes`` runs of a program: the runs in flight at once
    under train's lane layout, plus every lane's records."""
    return _chunk_memory(p, lanes, _layout(p, lanes, devices, backend))


def _layout(p: Program, lanes: int, devices: Sequence[Any], backend: str) -> Any:
    return train.choose_layout(p.cfg, lanes, backend=backend, devices=list(devices))


def _chunk_memory(p: Program, lanes: int, layout: Any) -> int:
    if layout.strategy == "vmap":
        live = -(-lanes // layout.n_devices) * layout.n_devices
    else:
        live = layout.n_devices * layout.batch_size
    return live * p.run_bytes + lanes * (p.out_bytes + 64)


def choose_width_groups(widths_counts: Mapping[int, int], cost: Callable[[int, int], float],
                        compile_s: float) -> list[tuple[int, ...]]:
    """Partition sorted widths into contiguous groups minimising sum(compile_s + cost(M, n)).

    ``cost(M, n)`` is the time of n runs at array width M; a group runs at its largest width.
    Dynamic programming over the sorted widths (contiguous groups are optimal since cost grows
    with M)."""
    ws = sorted(widths_counts)
    K = len(ws)
    best = [0.0] + [math.inf] * K
    cut = [0] * (K + 1)
    for j in range(1, K + 1):
        for i in range(j):
            n = sum(widths_counts[w] for w in ws[i:j])
            c = best[i] + compile_s + cost(ws[j - 1], n)
            if c < best[j]:
                best[j], cut[j] = c, i
    groups = []
    j = K
    while j > 0:
        groups.append(tuple(ws[cut[j]:j]))
        j = cut[j]
    return groups[::-1]


# ---------------------------------------------------------------------------------------------
# make_plan: validate buckets -> pack widths -> programs -> chunks


@dataclasses.dataclass(frozen=True)
class _Bucket:
    """Runs sharing their static values: key (canonical JSON of those values), the values, the
    run indices, and the config of each width run alone (width -> TrainConfig)."""

    key: str
    static: tuple
    runs: list[int]
    cfgs: dict[int, TrainConfig | None]    # None: invalid (noted; make_plan raises)


def _fast_json(obj: Any) -> str:
    """``store.canonical_json(jsonable(obj))`` (tuples are JSON arrays either way): the
    conversion only runs when the text needs it (non-finite floats)."""
    try:
        return store.canonical_json(obj)
    except (ValueError, TypeError):
        return store.canonical_json(jsonable(obj))


def _bucket_key(run: Run) -> str:
    return _fast_json([[s, n, coord_value(v)] for s, n, v in run.static])


def _run_config(spec: Spec, run: Run, lane_fixed: Mapping[str, float],
                note: Callable[[str], Any]) -> TrainConfig | None:
    """The config of a run alone at its width, or None; notes a ConfigError and task lane
    parameters that the run's task kind does not have."""
    where = ", ".join(f"{n}={coord_value(v)}" for _, n, v in run.static)
    where = f" (run with width={run.width}{', ' + where if where else ''})"
    try:
        cfg = build_config(spec, run.static, run.width)
    except model_mod.ConfigError as e:
        note(f"{e}{where}")
        return None
    thp = tasks.default_task_hparams(cfg.task)
    for n in lane_values(lane_fixed, run):
        if n in CATALOGUE["task"] and n not in thp:
            note(f"task.{n}: not a parameter of task kind {cfg.task.kind!r} "
                 f"(its parameters: {', '.join(thp)})")
    return cfg


def _check_task_ranges(bucket: _Bucket, runs: Sequence[Run], lane_fixed: Mapping[str, float],
                       note: Callable[[str], Any]) -> None:
    """Task parameter values out of range (checked by the task module, per bucket and value)."""
    cfg = bucket.cfgs[runs[bucket.runs[0]].width]
    if cfg is None:
        return
    thp_names = tasks.default_task_hparams(cfg.task)
    vals: dict[str, set] = {}
    for i in bucket.runs:
        for n, v in lane_values(lane_fixed, runs[i]).items():
            if n in thp_names:
                vals.setdefault(n, set()).add(v)
    for n, vs in vals.items():
        for v in sorted(vs):
            try:
                tasks._resolve_hparams(cfg.task, {n: v})
            except model_mod.ConfigError as e:
                note(f"task.{n}: {e}")


def _validate_buckets(spec: Spec, runs: Sequence[Run]) -> list[_Bucket]:
    """Group runs into buckets by their static values and validate each width's config alone.

    Raises:
        SpecError: every distinct problem (bad field combinations, task parameters that do not
            apply to a kind or are out of range).
    """
    problems: dict[str, None] = {}          # insertion-ordered set of messages
    lane_fixed = fixed_lanes(spec)
    statics: dict[str, tuple] = {}
    members: dict[str, list[int]] = {}
    cfgs: dict[str, dict[int, TrainConfig | None]] = {}
    keys: dict[tuple, str] = {}              # static values -> bucket key (one JSON text each)
    for r in runs:
        try:
            key = keys.get(r.static) or keys.setdefault(r.static, _bucket_key(r))
        except TypeError:                    # unhashable static values
            key = _bucket_key(r)
        statics.setdefault(key, r.static)
        members.setdefault(key, []).append(r.index)
        by_width = cfgs.setdefault(key, {})
        if r.width not in by_width:
            by_width[r.width] = _run_config(spec, r, lane_fixed, problems.setdefault)
    buckets = [_Bucket(k, statics[k], members[k], cfgs[k]) for k in members]
    for b in buckets:
        _check_task_ranges(b, runs, lane_fixed, problems.setdefault)
    if problems:
        raise SpecError(list(problems))
    return buckets


def _width_groups(spec: Spec, bucket: _Bucket, runs: Sequence[Run],
                  stored: Sequence[Sequence[int]] | None, backend: str, n_devices: int
                  ) -> list[tuple[int, ...]]:
    """A bucket's widths packed into programs: as stored (a resumed store, if it covers the same
    widths), as forced by ``pack_widths``, or by the cost model."""
    counts: dict[int, int] = {}
    for i in bucket.runs:
        counts[runs[i].width] = counts.get(runs[i].width, 0) + 1
    widths = sorted(counts)
    if stored is not None and sorted(w for g in stored for w in g) == widths:
        return [tuple(g) for g in stored]
    if spec.pack_widths is True:
        return [tuple(widths)]
    if spec.pack_widths is False:
        return [(w,) for w in widths]
    base = bucket.cfgs[widths[-1]]

    def seconds(M: int, n: int) -> float:
        c = base.replace(model=base.model.replace(width=M))
        return cost.run_seconds(c, backend) * -(-n // n_devices)

    return choose_width_groups(counts, seconds, cost.compile_seconds(backend))


def _programs(buckets: Sequence[_Bucket], groups: Mapping[str, Sequence[tuple[int, ...]]],
              runs: Sequence[Run], done: set[tuple], backend: str) -> list[Program]:
    """One program per width group of each bucket, with the cost model's per-run estimates."""
    programs: list[Program] = []
    for b in buckets:
        for g in groups[b.key]:
            M = max(g)
            cfg = b.cfgs[M].replace(array_width=M) if len(g) > 1 else b.cfgs[M]
            members = [i for i in b.runs if runs[i].width in g]
            programs.append(Program(
                id=f"p{len(programs):03d}", bucket=b.key, static=b.static, cfg=cfg,
                widths=tuple(g), runs=members,
                todo=[i for i in members if runs[i].coords not in done],
                run_bytes=cost.run_bytes(cfg), out_bytes=cost.output_bytes(cfg),
                est_run_s=cost.run_seconds(cfg, backend)))
    return programs


def chunk_budget(max_memory: int, lanes: int, n_devices: int, own_memory: bool) -> int:
    """The memory budget (bytes) of a chunk of ``lanes`` runs laid out over ``n_devices``.

    ``max_memory`` is the budget of a chunk on all the devices. Devices with their own memory
    (``own_memory``, GPU/TPU): the chunk gets the share of the devices it uses,
    ``max_memory * min(lanes, n_devices) // n_devices`` (so one run must fit one device).
    Devices sharing the host's RAM: all of ``max_memory`` whatever the lanes."""
    if not own_memory:
        return max_memory
    return max_memory * min(lanes, n_devices) // n_devices


def _chunk_fits(p: Program, lanes: int, devices: Sequence[Any], backend: str, max_memory: int,
                own_memory: bool) -> bool:
    """Whether a chunk of ``lanes`` runs fits its budget; on an accelerator also that the lane
    layout runs them in one vmap per device (a chunk is then one batch per device, and the lane
    count is monotone in memory)."""
    layout = _layout(p, lanes, devices, backend)
    if backend != "cpu" and layout.strategy != "vmap":
        return False
    return _chunk_memory(p, lanes, layout) <= chunk_budget(max_memory, lanes, len(devices),
                                                           own_memory)


def _chunk_lanes(p: Program, chunk_size: int | None, devices: Sequence[Any], backend: str,
                 max_memory: int, own_memory: bool = False) -> int:
    """Lanes per chunk: the most that fit the memory budget (:func:`_chunk_fits`), at most
    ``chunk_size`` and about ``cost.TARGET_CHUNK_S`` of estimated work (at least one lane per
    device)."""
    lo, hi = 1, len(p.todo) or len(p.runs)
    while lo < hi:  # largest lane count whose chunk fits the budget
        mid = (lo + hi + 1) // 2
        if _chunk_fits(p, mid, devices, backend, max_memory, own_memory):
            lo = mid
        else:
            hi = mid - 1
    cap = lo if chunk_size is None else min(lo, chunk_size)
    D = len(devices)
    by_time = max(D, int(cost.TARGET_CHUNK_S / max(p.est_run_s, 1e-9)) * D)
    return max(1, min(cap, by_time))


def _chunks_of(p: Program, index: int, runs: Sequence[Run]) -> list[Chunk]:
    """A program's runs still to do in equal-size chunks of at most ``p.chunk_lanes`` lanes, each
    named by a hash of its runs' coordinates."""
    if not p.todo:
        return []
    n_chunks = -(-len(p.todo) // p.chunk_lanes)
    size = -(-len(p.todo) // n_chunks)
    chunks = []
    for j in range(n_chunks):
        sel = tuple(p.todo[j * size:(j + 1) * size])
        chunks.append(Chunk(_chunk_name(p.id, [runs[i].coords for i in sel]), index, sel, size))
    return chunks


def _chunk_name(program_id: str, coords: Sequence[tuple]) -> str:
    """A chunk's name: its program and a hash of its runs' coordinates."""
    return f"{program_id}-{hashlib.sha1(_fast_json(coords).encode()).hexdigest()[:10]}"


def _chunk_programs(spec: Spec, programs: Sequence[Program], runs: Sequence[Run],
                    devices: Sequence[Any], backend: str, max_memory: int,
                    own_memory: bool = False) -> tuple[list[Program], list[Chunk]]:
    """Programs with their lanes per chunk set, and the chunks still to run.

    Raises:
        SpecError: programs of which one run alone exceeds the memory budget.
    """
    problems, out, chunks = [], [], []
    for pi, p in enumerate(programs):
        one = chunk_memory(p, 1, devices, backend)
        one_budget = chunk_budget(max_memory, 1, len(devices), own_memory)
        if one > one_budget:
            where = " of one device" if own_memory and len(devices) > 1 else ""
            problems.append(f"program {p.id} (width {max(p.widths)}): one run needs about "
                            f"{_fmt_bytes(one)}, more than the memory budget{where} "
                            f"{_fmt_bytes(one_budget)} (--max-memory)")
            out.append(p)
            continue
        p = dataclasses.replace(p, chunk_lanes=_chunk_lanes(p, spec.chunk_size, devices, backend,
                                                             max_memory, own_memory))
        out.append(p)
        chunks += _chunks_of(p, pi, runs)
    if problems:
        raise SpecError(problems)
    return out, chunks


def make_plan(spec: Spec, *, max_memory: int | None = None, done: Iterable[tuple] = (),
              groups: Mapping[str, Sequence[Sequence[int]]] | None = None,
              devices: Sequence[Any] | None = None) -> Plan:
    """Validate a spec against the configs and plan programs, width packing and chunks.

    Args:
        spec: a parsed spec.
        max_memory: the memory budget in bytes of a chunk on all the devices (default:
            ``cost.MEMORY_FRACTION`` of :func:`cost.device_memory` times the number of devices);
            where the devices have their own memory (GPU/TPU ``memory_stats``), a chunk on fewer
            devices gets their share (:func:`chunk_budget`).
        done: coordinates of finished runs (skipped).
        groups: width groups per bucket from an earlier plan (a resumed store keeps its packing).
        devices: default ``jax.devices()``; any objects with ``platform`` (and, for their own
            memory, ``memory_stats()``) will do for planning.

    Returns:
        The :class:`Plan`.

    Raises:
        SpecError: listing every problem found (bad field combinations per bucket, task
            parameters that do not apply to a kind, a run that cannot fit the memory budget).
    """
    import jax
    devices = list(jax.devices()) if devices is None else list(devices)
    backend = getattr(devices[0], "platform", "cpu")
    per_device = cost.device_memory(devices)
    source = cost.memory_source(devices)
    fraction = cost.MEMORY_FRACTION if max_memory is None else None
    max_memory = (int(cost.MEMORY_FRACTION * per_device * len(devices)) if max_memory is None
                  else int(max_memory))
    own = source == "memory_stats"
    runs = expand_runs(spec)
    buckets = _validate_buckets(spec, runs)
    width_groups = {b.key: _width_groups(spec, b, runs, (groups or {}).get(b.key), backend,
                                         len(devices)) for b in buckets}
    programs = _programs(buckets, width_groups, runs, {tuple(c) for c in done}, backend)
    programs, chunks = _chunk_programs(spec, programs, runs, devices, backend, max_memory, own)
    n_done = sum(len(p.runs) - len(p.todo) for p in programs)
    return Plan(spec, runs, programs, chunks, n_done, max_memory, backend, devices,
                {k: [list(g) for g in wg] for k, wg in width_groups.items()},
                per_device, source, fraction)


# ---------------------------------------------------------------------------------------------
# describing a plan


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _fmt_s(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _describe_program(plan: Plan, pi: int, p: Program) -> str:
    st = ", ".join(f"{n}={coord_value(v)}" for _, n, v in p.static) or "(single bucket)"
    ws = ",".join(str(w) for w in p.widths)
    pack = f"widths {ws} packed at array width {max(p.widths)}" if p.packed else f"width {ws}"
    nch = sum(1 for c in plan.chunks if c.program == pi)
    lanes = len(p.todo)
    mem = chunk_memory(p, max(1, min(p.chunk_lanes, max(lanes, 1))), plan.devices, plan.backend)
    t = p.est_run_s * -(-lanes // plan.n_devices)
    return (f"  {p.id}  {st}; {pack}; {len(p.runs)} lanes ({lanes} to run), "
            f"{nch} chunk(s) of <= {p.chunk_lanes} lanes, ~{_fmt_bytes(mem)} per chunk, "
            f"~{_fmt_s(t)} + compile")


def _describe_memory(plan: Plan) -> str:
    """Which memory the plan sized its chunks for: device kind, bytes per device, fraction."""
    kind = getattr(plan.devices[0], "device_kind", plan.backend) if plan.devices else plan.backend
    if plan.memory_source == "memory_stats":
        mem = f"{_fmt_bytes(plan.device_memory)} free per device (memory_stats)"
    else:
        mem = (f"host RAM {_fmt_bytes(plan.device_memory * plan.n_devices)} available, shared by "
               f"the {plan.n_devices} device(s)")
    how = ("set by --max-memory" if plan.memory_fraction is None
           else f"{plan.memory_fraction:g} of it")
    return f"{kind}: {mem}; {how}"


def describe_plan(plan: Plan) -> str:
    """A human-readable summary of a plan (what ``rnn-ntk validate`` prints)."""
    spec = plan.spec
    ax = ", ".join(f"{a.name}={len(a.values)}" for a in spec.axes)
    lines = [f"sweep {spec.name!r}: {len(plan.runs)} runs over axes ({ax})"
             + (f", zip groups {[list(z) for z in spec.zips]}" if spec.zips else ""),
             f"backend {plan.backend}, {plan.n_devices} device(s), memory budget "
             f"{_fmt_bytes(plan.max_memory)} per chunk ({_describe_memory(plan)})"]
    if plan.n_done:
        lines.append(f"already finished: {plan.n_done} runs (skipped)")
    lines.append(f"{len(plan.programs)} compiled program(s), {len(plan.chunks)} chunk(s) to run:")
    lines += [_describe_program(plan, pi, p) for pi, p in enumerate(plan.programs)]
    comp, run = plan.estimate_seconds()
    lines.append(f"estimated time: ~{_fmt_s(comp + run)} ({_fmt_s(comp)} compiling, "
                 f"{_fmt_s(run)} training; rough)")
    return "\n".join(lines)
