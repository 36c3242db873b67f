"""Sweeps from a TOML file: spec -> validated :class:`Plan` -> chunks of lanes -> result store.

A spec has four sections (see ``experiments/example.toml``)::

    [model]  RNNConfig fields (width, activation, readout, sigma_w .. sigma_v, trainable, ...)
    [task]   TaskConfig fields (kind, n_train, n_test, length, input_dim, ...) and the task's
             numeric parameters (label_noise, eps_x, delta, ...)
    [train]  TrainConfig fields (steps, log_every, batch_size, optimizer, loss, dtype, ...) and
             lr, momentum, proj_radius
    [sweep]  seed = [0, 1] or seeds = N; pack_widths = "auto" | true | false; chunk_size;
             key_axes; [sweep.zip] (or [[sweep.zip]] for several groups)

``input_dim``/``output_dim`` are set once, in [model] or [task]. ``task.target`` defaults to 'all'
for readout 'all' and to 'last' otherwise. ``batch_size = "full"`` (or leaving it out) is full-batch GD.

Any scalar may be a list instead, which makes it a sweep axis (for ``trainable``, a list of lists);
keys of one ``[sweep.zip]`` table are tied: their lists have equal length and vary together. Runs
are the product of the independent axes (each zip group is one factor) and the seeds.

Axes that change shapes or code (width, length, n_train, activation, readout, steps, batch_size,
task kind, ...) split runs into buckets; numeric axes (seed, lr, momentum, sigma_*,
proj_radius, task parameters) are lanes of one compiled program (``train.train_many``'s
hparams). Widths of one bucket may share a program: the planner packs sorted widths into groups
by a cost model (padded flops against compile time, :func:`choose_width_groups`), each group run
at the array width of its largest member with every run's true width traced (the model masks
padded units exactly); ``pack_widths`` forces one group per bucket (true) or none (false).

Keys: a run's key is ``train.run_key(seed, coords)`` where ``coords`` hashes the run's values of
the axes named in ``[sweep] key_axes`` (default none): by default runs with the same seed share
initial parameters (nested across widths, see ``model.init_params``) and data, whatever their
other coordinates (a paired design). The key depends on values, never on positions, so adding
seeds or widths to a sweep never changes existing runs.

Chunks: a program's lanes are split into equal-size chunks that fit the memory budget
(``--max-memory``), at most ``chunk_size`` lanes and about ``TARGET_CHUNK_S`` of estimated work;
each finished chunk is written atomically to the store (:mod:`rnn_ntk.store`), so ``--resume``
skips finished runs. One writer per output directory: :func:`run_sweep` (and the CLI) hold
:func:`rnn_ntk.store.lock_store` from opening the store to the last chunk. Nothing here prints:
the CLI reports progress through ``on_chunk`` (per chunk) and ``on_step`` (run-steps, from
``train.train_many``'s progress reports, every :func:`progress_every` logs of each run, or at
the chunk's end for runs too short to be worth a report).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import platform
import time
import tomllib
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from rnn_ntk import model as model_mod
from rnn_ntk import store, tasks, train
from rnn_ntk.model import RNNConfig
from rnn_ntk.tasks import TaskConfig
from rnn_ntk.train import TrainConfig

SECTIONS = ("model", "task", "train", "sweep")
TOP_KEYS = ("name", "description", "out")
SWEEP_KEYS = ("seed", "seeds", "pack_widths", "chunk_size", "key_axes", "zip")
SHARED = ("input_dim", "output_dim")        # model and task fields set once
_TRAIN_SKIP = ("model", "task", "array_width")
_CHOICES: dict[str, Sequence[str]] = {
    "activation": sorted(model_mod.ACTIVATIONS), "readout": model_mod.READOUTS,
    "recurrence": model_mod.RECURRENCES, "kind": tasks.TASK_KINDS, "target": tasks.TARGETS,
    "link": sorted(tasks.LINKS), "teacher_activation": sorted(model_mod.ACTIVATIONS),
    "optimizer": train.OPTIMIZERS, "loss": train.LOSSES, "dtype": train.DTYPES,
    "init": train.INITS,
}
_INT_MIN = {"steps": 0, "kernel_stride": 0, "span": 0, "n_ref": 2}
_REQUIRED = {"model": ("width",), "task": ("kind", "n_train", "n_test", "length", "input_dim"),
             "train": ("steps",)}
MAX_SEED = 2 ** 32

# cost model (rough; the constants only rank plans, `validate` prints them as estimates)
COMPILE_S = {"cpu": 8.0, "gpu": 20.0, "tpu": 30.0}     # seconds per compiled program
FLOPS = {"cpu": 1.5e10, "gpu": 1.0e13, "tpu": 1.0e13}  # per device, float32
F64_SLOWDOWN = {"cpu": 2.0, "gpu": 4.0, "tpu": 8.0}
STEP_OVERHEAD_S = {"cpu": 5e-6, "gpu": 2e-5, "tpu": 2e-5}  # per recurrence step of a scan
CHUNK_OVERHEAD_S = 0.05
TARGET_CHUNK_S = 120.0       # aim: a chunk is at most about this much estimated work
MEMORY_FRACTION = 0.6        # default budget: this fraction of available memory
PROGRESS_INTERVAL_S = 0.5    # aim: this much estimated work between two progress reports of a run
PROGRESS_MIN_RUN_S = 0.1     # runs estimated shorter than this report once, when their chunk ends


class SpecError(ValueError):
    """A sweep spec is invalid. ``problems`` holds one line per problem (all that were found)."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# ---------------------------------------------------------------------------------------------
# field catalogue (derived from the config dataclasses, so new fields are picked up)


@dataclasses.dataclass(frozen=True)
class _Field:
    section: str
    name: str
    kind: str          # 'int', 'float', 'str', 'bool', 'strtuple', 'int?', 'any', 'lane'
    default: Any       # dataclasses.MISSING when required
    lane: bool         # a traced hyperparameter (lanes inside a bucket)


def _type_kind(hint: Any) -> str:
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    if hint is str:
        return "str"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and args and args[0] is str:
        return "strtuple"
    if args and set(args) == {int, type(None)}:
        return "int?"
    return "any"


def _probe_task(kind: str) -> TaskConfig | None:
    try:
        return TaskConfig(kind, n_train=2, n_test=2, length=4, input_dim=4)
    except model_mod.ConfigError:
        return None


def _catalogue() -> dict[str, dict[str, _Field]]:
    cat: dict[str, dict[str, _Field]] = {s: {} for s in ("model", "task", "train")}
    for section, cls, skip in (("model", RNNConfig, ()), ("task", TaskConfig, ()),
                               ("train", TrainConfig, _TRAIN_SKIP)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            cat[section][f.name] = _Field(section, f.name, _type_kind(hints[f.name]), f.default,
                                          False)
    task_hp: list[str] = []
    for kind in tasks.TASK_KINDS:
        t = _probe_task(kind)
        if t is not None:
            task_hp += [k for k in tasks.default_task_hparams(t) if k not in task_hp]
    probe = TrainConfig(RNNConfig(width=4, input_dim=4), _probe_task("random_labels"), steps=0)
    probe_hp = train.default_hparams(probe)
    for name in probe_hp:
        if name in cat["model"]:
            cat["model"][name] = dataclasses.replace(cat["model"][name], lane=name != "width")
        elif name in task_hp:
            cat["task"][name] = _Field("task", name, "float", None, True)
        else:
            # lr, momentum, proj_radius: defaults do not depend on the config
            cat["train"][name] = _Field("train", name, "float", float(probe_hp[name]), True)
    for name in task_hp:
        cat["task"].setdefault(name, _Field("task", name, "float", None, True))
    return cat


CATALOGUE = _catalogue()


def _section_of(name: str) -> list[str]:
    return [s for s, fields in CATALOGUE.items() if name in fields]


# ---------------------------------------------------------------------------------------------
# the parsed spec


@dataclasses.dataclass(frozen=True)
class Axis:
    """A sweep axis: its field, its values (python values), and its zip group (None = own factor)."""

    section: str
    name: str
    values: tuple
    group: int | None = None

    def coord(self, v: Any) -> Any:
        """The store coordinate of one of this axis' values (see :func:`coord_value`); an axis
        mixing kinds of values (e.g. batch_size 8 and "full") has string coordinates."""
        c = coord_value(v)
        kinds = {_coord_kind(coord_value(x)) for x in self.values}
        return str(c) if len(kinds) > 1 else c

    @property
    def coords(self) -> list:
        """The axis' coordinate values: unique, in order of first appearance."""
        out: list = []
        for v in self.values:
            c = self.coord(v)
            if c not in out:
                out.append(c)
        return out


@dataclasses.dataclass(frozen=True)
class Spec:
    """A validated sweep spec.

    resolved: JSON-able resolved spec (what a resume compares). text: the TOML text. fixed:
    section -> {name: scalar value} of the non-axis fields that were given or have defaults.
    axes: sweep axes in dimension order (``seed`` last). zips: the zip groups (axis names).
    """

    name: str
    description: str
    out: str | None
    text: str
    resolved: dict
    fixed: dict
    axes: tuple[Axis, ...]
    zips: tuple[tuple[str, ...], ...]
    pack_widths: Any
    chunk_size: int | None
    key_axes: tuple[str, ...]

    @property
    def axis_names(self) -> list[str]:
        return [a.name for a in self.axes]

    @property
    def dtypes(self) -> set[str]:
        for a in self.axes:
            if a.name == "dtype":
                return set(a.values)
        return {self.fixed["train"].get("dtype", "float32")}

    def axis(self, name: str) -> Axis:
        for a in self.axes:
            if a.name == name:
                return a
        raise KeyError(name)


def _did_you_mean(key: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fmt(v: Any) -> str:
    return repr(v)


def _check_value(f: _Field, v: Any, where: str) -> tuple[Any, str | None]:
    """Check one scalar value of a field; returns (normalised value, problem or None)."""
    kind, name = f.kind, f.name
    isnum = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            return v, f"{where}: must be an integer, got {_fmt(v)}"
        lo = _INT_MIN.get(name, 1)
        if v < lo:
            what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
            return v, f"{where}: must be {what}, got {v}"
        return v, None
    if kind == "int?":
        if isinstance(v, str) and v.lower() in ("full", "none"):
            return None, None
        if isinstance(v, bool) or not isinstance(v, int):
            return v, f"{where}: must be a positive integer or \"full\", got {_fmt(v)}"
        if v < 1:
            return v, f"{where}: must be a positive integer or \"full\", got {v}"
        return v, None
    if kind == "bool":
        if not isinstance(v, bool):
            return v, f"{where}: must be true or false, got {_fmt(v)}"
        return v, None
    if kind == "str":
        if not isinstance(v, str):
            return v, f"{where}: must be a string, got {_fmt(v)}"
        choices = _CHOICES.get(name)
        if choices is not None and v not in choices:
            return v, f"{where}: must be one of {list(choices)}, got {v!r}{_did_you_mean(v, choices)}"
        return v, None
    if kind == "strtuple":
        if isinstance(v, str):
            v = list(v) if set(v) <= set(model_mod.GROUPS) and v else [v]
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            return v, f"{where}: must be a list of strings, got {_fmt(v)}"
        if name == "trainable":
            if not v:
                return tuple(v), f"{where}: must name at least one of {list(model_mod.GROUPS)}"
            bad = [s for s in v if s not in model_mod.GROUPS]
            if bad:
                return tuple(v), f"{where}: unknown group(s) {bad}; groups are {list(model_mod.GROUPS)}"
            if len(set(v)) != len(v):
                return tuple(v), f"{where}: repeated groups {v}"
            return tuple(g for g in model_mod.GROUPS if g in v), None
        return tuple(v), None
    if kind in ("float", "lane") or f.lane:
        if name == "width":
            return _check_value(dataclasses.replace(f, kind="int"), v, where)
        if not isnum:
            return v, f"{where}: must be a number, got {_fmt(v)}"
        v = float(v)
        if name == "lr":
            if not math.isfinite(v) or v <= 0:
                return v, f"{where}: learning rate must be finite and > 0, got {v}"
        elif name == "proj_radius":
            if math.isnan(v) or v <= 0:
                return v, f"{where}: must be > 0 (inf = no projection), got {v}"
        elif not math.isfinite(v):
            return v, f"{where}: must be finite, got {v}"
        elif name == "momentum" and not 0 <= v < 1:
            return v, f"{where}: must be in [0, 1), got {v}"
        elif name.startswith("sigma_") and v < 0:
            return v, f"{where}: must be >= 0, got {v}"
        return v, None
    return v, None


def _is_axis(f: _Field, v: Any) -> bool:
    if f.kind == "strtuple":
        return isinstance(v, list) and bool(v) and all(isinstance(e, list) for e in v)
    return isinstance(v, list)


def coord_value(v: Any) -> Any:
    """The store coordinate of an axis value: tuples (trainable) joined, None -> 'full'."""
    if isinstance(v, tuple):
        return "".join(v) if all(len(s) == 1 for s in v) else "+".join(v)
    if v is None:
        return "full"
    return v


def _coord_kind(c: Any) -> str:
    if isinstance(c, bool):
        return "bool"
    if isinstance(c, (int, float)):
        return "number"
    return type(c).__name__


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    if isinstance(v, (tuple, list)):
        return [_jsonable(e) for e in v]
    if isinstance(v, dict):
        return {k: _jsonable(e) for k, e in v.items()}
    return v


def _parse_zips(zraw: Any, problems: list[str]
                ) -> tuple[dict[tuple[str, str], tuple[list, int]], int]:
    """The [sweep.zip] table(s): (section, name) -> (values, group index), and the group count."""
    zip_tables: list[dict] = []
    if isinstance(zraw, dict):
        zip_tables = [zraw]
    elif isinstance(zraw, list) and all(isinstance(z, dict) for z in zraw):
        zip_tables = list(zraw)
    elif zraw is not None:
        problems.append("sweep.zip: must be a table [sweep.zip] or tables [[sweep.zip]]")
    zipped: dict[tuple[str, str], tuple[list, int]] = {}
    for gi, zt in enumerate(zip_tables):
        where0 = "sweep.zip" if len(zip_tables) == 1 else f"sweep.zip[{gi}]"
        lengths = {}
        flat: dict[str, Any] = {}
        for key, v in zt.items():  # model.width = [...] parses as a nested table
            if key in CATALOGUE and isinstance(v, dict):
                flat.update({f"{key}.{k}": e for k, e in v.items()})
            else:
                flat[key] = v
        for key, v in flat.items():
            sec, _, name = key.rpartition(".")
            secs = [sec] if sec else _section_of(name)
            secs = [s for s in secs if s in CATALOGUE and name in CATALOGUE[s]]
            if not secs:
                opts = [n for s in CATALOGUE.values() for n in s]
                problems.append(f"{where0}.{key}: unknown key{_did_you_mean(name, opts)}")
                continue
            if name in SHARED and not sec:
                secs = ["task"]
            s = secs[0]
            if len(secs) > 1:
                problems.append(f"{where0}.{key}: ambiguous; write {secs[0]}.{name} or "
                                f"{secs[1]}.{name}")
                continue
            f = CATALOGUE[s][name]
            if not isinstance(v, list) or (f.kind == "strtuple" and not _is_axis(f, v) and v):
                problems.append(f"{where0}.{key}: must be a list of values (one per zipped run)")
                continue
            if not v:
                problems.append(f"{where0}.{key}: empty axis (give at least one value)")
                continue
            if (s, name) in zipped:
                problems.append(f"{where0}.{key}: appears in two zip groups")
                continue
            zipped[(s, name)] = (v, gi)
            lengths[key] = len(v)
        if len(set(lengths.values())) > 1:
            desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
            problems.append(f"{where0}: zipped axes must have equal lengths ({desc})")
    return zipped, len(zip_tables)


def _parse_seeds(sw: Mapping[str, Any], problems: list[str]) -> list[int]:
    """The base seeds from [sweep]: ``seed`` (an int or a list) or ``seeds`` (a count)."""
    seeds: list[int] = []
    if "seed" in sw and "seeds" in sw:
        problems.append("sweep.seed: give either seed (value or list) or seeds (a count), not both")
    elif "seeds" in sw:
        n = sw["seeds"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            problems.append(f"sweep.seeds: must be a positive integer (the number of seeds), "
                            f"got {_fmt(n)}")
        else:
            seeds = list(range(n))
    else:
        sv = sw.get("seed", 0)
        lst = sv if isinstance(sv, list) else [sv]
        if not lst:
            problems.append("sweep.seed: empty axis (give at least one value)")
        for e in lst:
            if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < MAX_SEED:
                problems.append(f"sweep.seed: seeds must be integers in [0, 2**32), got {_fmt(e)}")
                break
        else:
            seeds = list(lst)
            if len(set(seeds)) != len(seeds):
                problems.append(f"sweep.seed: repeated values in axis {seeds}")
    return seeds


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse and validate a TOML sweep spec; raises :class:`SpecError` listing every problem found."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError([f"{source}: invalid TOML: {e}"]) from None
    problems: list[str] = []
    for key in raw:
        if key in SECTIONS or key in TOP_KEYS:
            continue
        hint = _did_you_mean(key, SECTIONS + TOP_KEYS)
        secs = _section_of(key)
        if secs and not hint:
            hint = f"; {key!r} belongs in [{secs[0]}]"
        problems.append(f"{key}: unknown top-level key{hint}")
    meta = {}
    for key in TOP_KEYS:
        if key in raw and not isinstance(raw[key], str):
            problems.append(f"{key}: must be a string, got {_fmt(raw[key])}")
        meta[key] = raw.get(key) if isinstance(raw.get(key), str) else None
    for s in SECTIONS:
        if s in raw and not isinstance(raw[s], dict):
            problems.append(f"{s}: must be a table ([{s}]), got {_fmt(raw[s])}")
    sec_raw = {s: raw.get(s, {}) if isinstance(raw.get(s, {}), dict) else {} for s in SECTIONS}

    # collect given values: (section, name) -> raw value; zip groups
    given: dict[tuple[str, str], Any] = {}
    for s in ("model", "task", "train"):
        for key, v in sec_raw[s].items():
            if key in CATALOGUE[s]:
                given[(s, key)] = v
                continue
            secs = [o for o in _section_of(key) if o != s]
            hint = _did_you_mean(key, CATALOGUE[s])
            if not hint and secs:
                hint = f"; {key!r} belongs in [{secs[0]}]"
            elif not hint and key in SWEEP_KEYS:
                hint = f"; {key!r} belongs in [sweep]"
            problems.append(f"{s}.{key}: unknown key{hint}")
    sw = sec_raw["sweep"]
    for key in sw:
        if key not in SWEEP_KEYS:
            secs = _section_of(key)
            hint = _did_you_mean(key, SWEEP_KEYS)
            if not hint and secs:
                hint = f"; {key!r} belongs in [{secs[0]}] (a list there makes it an axis)"
            problems.append(f"sweep.{key}: unknown key{hint}")

    zipped, n_zip = _parse_zips(sw.get("zip"), problems)

    # shared fields: set once, in [model] or [task]
    for name in SHARED:
        if ("model", name) in given and ("task", name) in given:
            problems.append(f"model.{name}: set in [model] and in [task]; set it once")
        elif ("model", name) in given:
            given[("task", name)] = given.pop(("model", name))
        if ("model", name) in zipped:
            zipped[("task", name)] = zipped.pop(("model", name))
    for (s, name) in zipped:
        if (s, name) in given:
            problems.append(f"{s}.{name}: set in [{s}] and in [sweep.zip]; set it in one place")

    # values: scalars, axes
    fixed: dict[str, dict[str, Any]] = {"model": {}, "task": {}, "train": {}}
    axes: list[Axis] = []
    for (s, name), v in given.items():
        f = CATALOGUE[s][name]
        where = f"{s}.{name}"
        if _is_axis(f, v):
            if not v:
                problems.append(f"{where}: empty axis (give at least one value)")
                continue
            vals = []
            for i, e in enumerate(v):
                e2, p = _check_value(f, e, f"{where}[{i}]")
                if p:
                    problems.append(p)
                vals.append(e2)
            axes.append(Axis(s, name, tuple(vals)))
        else:
            v2, p = _check_value(f, v, where)
            if p:
                problems.append(p)
            fixed[s][name] = v2
    for (s, name), (v, gi) in zipped.items():
        f = CATALOGUE[s][name]
        vals = []
        for i, e in enumerate(v):
            e2, p = _check_value(f, e, f"sweep.zip.{name}[{i}]")
            if p:
                problems.append(p)
            vals.append(e2)
        axes.append(Axis(s, name, tuple(vals), gi))
    for a in axes:
        if a.group is None and len({coord_value(x) for x in a.values}) != len(a.values):
            problems.append(f"{a.section}.{a.name}: repeated values in axis {list(a.values)}")
    names = [a.name for a in axes]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{n}: set in more than one section; axis names must be unique")
    for gi in range(n_zip):
        members = [a for a in axes if a.group == gi]
        if members and all(len(a.values) == len(members[0].values) for a in members):
            combos = list(zip(*[[coord_value(x) for x in a.values] for a in members]))
            if len(set(combos)) != len(combos):
                dup = sorted({c for c in combos if combos.count(c) > 1})
                problems.append(f"sweep.zip: repeated combinations {dup}")

    # required fields and derived defaults
    axis_keys = {(a.section, a.name) for a in axes}
    for s, req in _REQUIRED.items():
        for name in req:
            if name in SHARED:
                if ("task", name) not in axis_keys and name not in fixed["task"]:
                    problems.append(f"task.{name}: required (set it in [task] or [model])")
            elif (s, name) not in axis_keys and name not in fixed[s]:
                problems.append(f"{s}.{name}: required")
    for s in ("model", "task", "train"):
        for name, f in CATALOGUE[s].items():
            if ((s, name) in axis_keys or name in fixed[s] or f.default is dataclasses.MISSING
                    or f.default is None and f.lane):
                continue
            if s == "model" and name in SHARED:
                continue
            if s == "task" and name == "target":
                continue  # follows the readout unless given
            fixed[s][name] = f.default

    # sweep section
    seeds = _parse_seeds(sw, problems)
    pack = sw.get("pack_widths", "auto")
    if pack not in ("auto", True, False) or (isinstance(pack, int) and not isinstance(pack, bool)):
        problems.append(f"sweep.pack_widths: must be \"auto\", true or false, got {_fmt(pack)}")
    chunk_size = sw.get("chunk_size")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        problems.append(f"sweep.chunk_size: must be a positive integer (lanes per chunk), "
                        f"got {_fmt(chunk_size)}")
        chunk_size = None
    key_axes = sw.get("key_axes", [])
    if not isinstance(key_axes, list) or not all(isinstance(k, str) for k in key_axes):
        problems.append(f"sweep.key_axes: must be a list of axis names, got {_fmt(key_axes)}")
        key_axes = []
    for k in key_axes:
        if k not in names:
            problems.append(f"sweep.key_axes: {k!r} is not a sweep axis{_did_you_mean(k, names)}")

    if problems:
        raise SpecError(problems)

    # dimension order: [model], [task], [train] axes in file order, zipped axes, then seed
    order = {("model", n): i for i, n in enumerate(sec_raw["model"])}
    order.update({("task", n): 1000 + i for i, n in enumerate(sec_raw["task"])})
    order.update({("task", n): i for n in SHARED for i in [order.get(("model", n))] if i is not None})
    order.update({("train", n): 2000 + i for i, n in enumerate(sec_raw["train"])})
    axes.sort(key=lambda a: (a.group is not None, order.get((a.section, a.name), 0)
                             if a.group is None else 0))
    axes.append(Axis("sweep", "seed", tuple(seeds)))

    resolved: dict[str, Any] = {s: dict(fixed[s]) for s in ("model", "task", "train")}
    for a in axes:
        if a.group is None and a.section in resolved:
            resolved[a.section][a.name] = list(a.values)
    resolved["sweep"] = {"seed": seeds, "pack_widths": pack, "chunk_size": chunk_size,
                         "key_axes": list(key_axes),
                         "zip": [{a.name: list(a.values) for a in axes if a.group == gi}
                                 for gi in range(n_zip)]}
    resolved = _jsonable(resolved)
    zips = tuple(tuple(a.name for a in axes if a.group == gi) for gi in range(n_zip))
    name = meta["name"] or (Path(source).stem if source and not source.startswith("<") else "sweep")
    return Spec(name=name, description=meta["description"] or "", out=meta["out"], text=text,
                resolved=resolved, fixed=fixed, axes=tuple(axes), zips=zips, pack_widths=pack,
                chunk_size=chunk_size, key_axes=tuple(key_axes))



def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate a spec file (see :func:`parse_spec`)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError([f"{path}: cannot read spec file ({e.strerror})"]) from None
    return parse_spec(text, str(p))


def _toml_value(v: Any) -> str:
    """A TOML literal for a scalar or (nested) list: bool, int, float (inf, nan), str."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(e) for e in v) + "]"
    raise SpecError([f"override value {v!r}: not a TOML scalar or list"])


def override_spec(spec: Spec, overrides: Mapping[str, Any]) -> Spec:
    """``spec`` with some values replaced, re-parsed and validated (e.g. an experiment's scales).

    ``overrides`` maps 'section.name' (e.g. 'model.width', 'task.n_train', 'sweep.seeds') to a
    scalar or a list; each must replace a one-line ``name = ...`` entry already present in that
    table of the spec's TOML text (its trailing comment is dropped). The new text is what the
    store records, so a resumed store compares the values actually used. SpecError if a key is
    not found once, or the result is invalid.
    """
    problems = []
    for key in overrides:
        if key.count(".") != 1:
            problems.append(f"override {key!r}: must be 'section.name'")
    if problems:
        raise SpecError(problems)
    found = dict.fromkeys(overrides, 0)
    section = None
    out = []
    for line in spec.text.splitlines():
        head = line.strip()
        if head.startswith("[") and not head.startswith("[["):
            section = head[1:head.index("]")].strip() if "]" in head else None
        elif head.startswith("[["):
            section = None
        else:
            name = head.split("=", 1)[0].strip() if "=" in head and not head.startswith("#") else ""
            key = f"{section}.{name}"
            if name and key in overrides:
                found[key] += 1
                indent = line[:len(line) - len(line.lstrip())]
                line = f"{indent}{name} = {_toml_value(overrides[key])}"
        out.append(line)
    problems = [f"override {k!r}: found {n} one-line '{k.split('.')[1]} = ...' entries in "
                f"[{k.split('.')[0]}], need exactly 1" for k, n in found.items() if n != 1]
    if problems:
        raise SpecError(problems)
    text = "\n".join(out) + "\n"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise SpecError([f"override {k!r}: the entry spans several lines; write it on one"
                         for k in overrides]) from None
    for key, v in overrides.items():
        sec, name = key.split(".")
        want = list(v) if isinstance(v, tuple) else v
        got = raw.get(sec, {}).get(name)
        if got != want and not (isinstance(want, float) and isinstance(got, float)
                                and math.isnan(want) and math.isnan(got)):
            problems.append(f"override {key!r}: the entry spans several lines; write it on one")
    if problems:
        raise SpecError(problems)
    return parse_spec(text, spec.name)


# ---------------------------------------------------------------------------------------------
# runs and buckets


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
    return _stable_int(f"{name}={json.dumps(_jsonable(coord_value(value)))}")


def expand_runs(spec: Spec) -> list[Run]:
    """All runs of a spec, in order: the product over independent axes and zip groups, seed last."""
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
    sec = {a.name: a.section for a in spec.axes}
    fields = {a.name: CATALOGUE[a.section][a.name] for a in spec.axes if a.section != "sweep"}
    runs = []
    for i, combo in enumerate(_product(factors)):
        vals: dict[str, Any] = {}
        for d in combo:
            vals.update(d)
        width = vals.get("width", spec.fixed["model"].get("width"))
        static = tuple((sec[n], n, v) for n, v in vals.items()
                       if n in fields and not fields[n].lane and n != "width")
        lanes = tuple((n, v) for n, v in vals.items() if n in fields and fields[n].lane)
        kc = tuple(key_coord(n, vals[n]) for n in spec.key_axes)
        runs.append(Run(i, tuple(a.coord(vals[a.name]) for a in spec.axes), int(vals["seed"]),
                        int(width), static, lanes, kc))
    return runs


def _product(factors: list[list[dict]]) -> Iterable[tuple[dict, ...]]:
    yield from itertools.product(*factors)


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


def _lane_fixed(spec: Spec) -> dict[str, float]:
    """Lane hyperparameters set as scalars in the spec."""
    out = {}
    for s in ("model", "task", "train"):
        for n, v in spec.fixed[s].items():
            if CATALOGUE[s][n].lane:
                out[n] = v
    return out


# ---------------------------------------------------------------------------------------------
# cost model


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
    """Bytes of one run's records (and final parameters when saved)."""
    n = len(train.record_names(cfg)) * cfg.n_logs
    if cfg.save_params:
        M, t = cfg.width_array, cfg.task
        n += (M * M + M * (t.input_dim + 1 + t.output_dim)) * (2 if cfg.linearized else 1)
    return n * 8


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
# the plan


@dataclasses.dataclass
class Program:
    """One compiled program: a bucket's config at the array width of its packed widths."""

    id: str
    bucket: str              # canonical JSON of the bucket's static axis values
    static: tuple            # ((section, name, value), ...)
    cfg: TrainConfig
    widths: tuple[int, ...]
    runs: list[int]          # indices into Plan.runs (all runs, finished ones included)
    todo: list[int]          # runs still to do
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


@dataclasses.dataclass
class Plan:
    spec: Spec
    runs: list[Run]
    programs: list[Program]
    chunks: list[Chunk]
    n_done: int
    max_memory: int
    backend: str
    devices: list
    groups: dict[str, list[list[int]]]

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
                "axes": _jsonable(self.axes), "n_runs": len(self.runs),
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
        comp = COMPILE_S.get(self.backend, 10.0) * len(progs)
        run = 0.0
        for c in self.chunks:
            p = self.programs[c.program]
            per_dev = -(-c.size // self.n_devices)
            run += p.est_run_s * per_dev + CHUNK_OVERHEAD_S
        return comp, run


def available_memory(backend: str | None = None) -> int:
    """Bytes a sweep may use by default: MEMORY_FRACTION of the available host memory, or of the
    accelerators' memory limits."""
    import jax
    backend = backend or jax.default_backend()
    if backend != "cpu":
        total = 0
        for dev in jax.local_devices():
            try:
                stats = dev.memory_stats() or {}
            except Exception:  # not every backend reports memory
                stats = {}
            total += int(stats.get("bytes_limit", 0))
        if total:
            return int(total * MEMORY_FRACTION)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * MEMORY_FRACTION)
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * MEMORY_FRACTION)
    except (ValueError, OSError, AttributeError):
        return 4 * 2 ** 30


def parse_size(text: str) -> int:
    """'512M', '4G', '1.5GiB', '2e9' -> bytes (binary units: K = 1024)."""
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


def _chunk_memory(p: Program, lanes: int, devices: Sequence[Any], backend: str) -> int:
    """Estimated bytes of a chunk of ``lanes`` runs of a program: the runs in flight at once
    under train's lane layout, plus every lane's records."""
    layout = train.choose_layout(p.cfg, lanes, backend=backend, devices=list(devices))
    if layout.strategy == "vmap":
        live = -(-lanes // layout.n_devices) * layout.n_devices
    else:
        live = layout.n_devices * layout.batch_size
    return live * p.run_bytes + lanes * (p.out_bytes + 64)


def make_plan(spec: Spec, *, max_memory: int | None = None, done: Iterable[tuple] = (),
              groups: Mapping[str, Sequence[Sequence[int]]] | None = None,
              devices: Sequence[Any] | None = None) -> Plan:
    """Validate a spec against the configs and plan programs, width packing and chunks.

    done: coordinates of finished runs (skipped). groups: width groups per bucket from an earlier
    plan (a resumed store keeps its packing). devices: default ``jax.devices()``. Raises
    :class:`SpecError` listing every problem found (bad field combinations per bucket, task
    parameters that do not apply to a kind, a run that cannot fit the memory budget).
    """
    import jax
    devices = list(jax.devices()) if devices is None else list(devices)
    backend = getattr(devices[0], "platform", "cpu")
    D = len(devices)
    max_memory = available_memory(backend) if max_memory is None else int(max_memory)
    runs = expand_runs(spec)
    lane_fixed = _lane_fixed(spec)
    problems: list[str] = []

    # buckets: runs grouped by static values; each width validated alone
    buckets: dict[str, dict[str, Any]] = {}
    cfg_cache: dict[tuple, TrainConfig | None] = {}
    seen_problems = set()

    def note(msg: str) -> None:
        if msg not in seen_problems:
            seen_problems.add(msg)
            problems.append(msg)

    for r in runs:
        bkey = store.canonical_json(_jsonable([[s, n, coord_value(v)] for s, n, v in r.static]))
        ck = (bkey, r.width)
        if ck not in cfg_cache:
            where = ", ".join(f"{n}={coord_value(v)}" for _, n, v in r.static)
            where = f" (run with width={r.width}{', ' + where if where else ''})"
            try:
                cfg = build_config(spec, r.static, r.width)
            except model_mod.ConfigError as e:
                cfg = None
                note(f"{e}{where}")
            if cfg is not None:
                thp = tasks.default_task_hparams(cfg.task)
                lanes = dict(lane_fixed)
                lanes.update({n: v for n, v in r.lanes})
                task_lane_names = [n for n in lanes if n in CATALOGUE["task"]]
                for n in task_lane_names:
                    if n not in thp:
                        note(f"task.{n}: not a parameter of task kind {cfg.task.kind!r} "
                             f"(its parameters: {', '.join(thp)})")
            cfg_cache[ck] = cfg
        b = buckets.setdefault(bkey, {"static": r.static, "runs": []})
        b["runs"].append(r.index)
    # task parameter ranges (checked by the task module, per bucket and value)
    for bkey, b in buckets.items():
        r0 = runs[b["runs"][0]]
        cfg = cfg_cache.get((bkey, r0.width))
        if cfg is None:
            continue
        thp_names = tasks.default_task_hparams(cfg.task)
        vals: dict[str, set] = {}
        for i in b["runs"]:
            lanes = dict(lane_fixed)
            lanes.update(dict(runs[i].lanes))
            for n, v in lanes.items():
                if n in thp_names:
                    vals.setdefault(n, set()).add(v)
        for n, vs in vals.items():
            for v in sorted(vs):
                try:
                    tasks._resolve_hparams(cfg.task, {n: v})
                except model_mod.ConfigError as e:
                    note(f"task.{n}: {e}")
    if problems:
        raise SpecError(problems)

    # width groups per bucket
    comp = COMPILE_S.get(backend, 10.0)
    groups_out: dict[str, list[list[int]]] = {}
    programs: list[Program] = []
    done = {tuple(c) for c in done}
    for bkey, b in buckets.items():
        counts: dict[int, int] = {}
        for i in b["runs"]:
            counts[runs[i].width] = counts.get(runs[i].width, 0) + 1
        widths = sorted(counts)
        base = cfg_cache[(bkey, widths[-1])]
        if groups is not None and bkey in groups and sorted(w for g in groups[bkey] for w in g) == widths:
            wg = [tuple(g) for g in groups[bkey]]
        elif spec.pack_widths is True:
            wg = [tuple(widths)]
        elif spec.pack_widths is False:
            wg = [(w,) for w in widths]
        else:
            def cost(M: int, n: int) -> float:
                c = base.replace(model=base.model.replace(width=M))
                return run_seconds(c, backend) * -(-n // D)
            wg = choose_width_groups(counts, cost, comp)
        groups_out[bkey] = [list(g) for g in wg]
        for g in wg:
            M = max(g)
            alone = cfg_cache[(bkey, M)]
            cfg = alone.replace(array_width=M) if len(g) > 1 else alone
            members = [i for i in b["runs"] if runs[i].width in g]
            p = Program(id=f"p{len(programs):03d}", bucket=bkey, static=b["static"], cfg=cfg,
                        widths=tuple(g), runs=members,
                        todo=[i for i in members if runs[i].coords not in done])
            p.run_bytes, p.out_bytes = train.run_bytes(cfg), output_bytes(cfg)
            p.est_run_s = run_seconds(cfg, backend)
            programs.append(p)

    # chunks
    chunks: list[Chunk] = []
    for pi, p in enumerate(programs):
        n = len(p.todo) or len(p.runs)
        if _chunk_memory(p, 1, devices, backend) > max_memory:
            problems.append(f"program {p.id} (width {max(p.widths)}): one run needs about "
                            f"{_fmt_bytes(_chunk_memory(p, 1, devices, backend))}, more than the memory "
                            f"budget {_fmt_bytes(max_memory)} (--max-memory)")
            continue
        lo, hi = 1, n
        while lo < hi:  # largest lane count whose chunk fits the budget
            mid = (lo + hi + 1) // 2
            if _chunk_memory(p, mid, devices, backend) <= max_memory:
                lo = mid
            else:
                hi = mid - 1
        cap = lo
        if spec.chunk_size is not None:
            cap = min(cap, spec.chunk_size)
        by_time = max(D, int(TARGET_CHUNK_S / max(p.est_run_s, 1e-9)) * D)
        cap = max(1, min(cap, by_time))
        p.chunk_lanes = cap
        todo = p.todo
        if not todo:
            continue
        n_chunks = -(-len(todo) // cap)
        size = -(-len(todo) // n_chunks)
        for j in range(n_chunks):
            sel = tuple(todo[j * size:(j + 1) * size])
            h = hashlib.sha1(store.canonical_json(
                _jsonable([list(runs[i].coords) for i in sel])).encode()).hexdigest()[:10]
            chunks.append(Chunk(f"{p.id}-{h}", pi, sel, size))
    if problems:
        raise SpecError(problems)
    n_done = sum(len(p.runs) - len(p.todo) for p in programs)
    return Plan(spec, runs, programs, chunks, n_done, max_memory, backend, devices, groups_out)


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


def describe_plan(plan: Plan) -> str:
    """A human-readable summary of a plan (what ``rnn-ntk validate`` prints)."""
    spec = plan.spec
    ax = ", ".join(f"{a.name}={len(a.values)}" for a in spec.axes)
    lines = [f"sweep {spec.name!r}: {len(plan.runs)} runs over axes ({ax})"
             + (f", zip groups {[list(z) for z in spec.zips]}" if spec.zips else ""),
             f"backend {plan.backend}, {plan.n_devices} device(s), memory budget "
             f"{_fmt_bytes(plan.max_memory)}"]
    if plan.n_done:
        lines.append(f"already finished: {plan.n_done} runs (skipped)")
    lines.append(f"{len(plan.programs)} compiled program(s), {len(plan.chunks)} chunk(s) to run:")
    for pi, p in enumerate(plan.programs):
        st = ", ".join(f"{n}={coord_value(v)}" for _, n, v in p.static) or "(single bucket)"
        ws = ",".join(str(w) for w in p.widths)
        pack = f"widths {ws} packed at array width {max(p.widths)}" if p.packed else f"width {ws}"
        nch = sum(1 for c in plan.chunks if c.program == pi)
        lanes = len(p.todo)
        mem = _chunk_memory(p, max(1, min(p.chunk_lanes, max(lanes, 1))), plan.devices, plan.backend)
        t = p.est_run_s * -(-lanes // plan.n_devices)
        lines.append(f"  {p.id}  {st}; {pack}; {len(p.runs)} lanes ({lanes} to run), "
                     f"{nch} chunk(s) of <= {p.chunk_lanes} lanes, ~{_fmt_bytes(mem)} per chunk, "
                     f"~{_fmt_s(t)} + compile")
    comp, run = plan.estimate_seconds()
    lines.append(f"estimated time: ~{_fmt_s(comp + run)} ({_fmt_s(comp)} compiling, "
                 f"{_fmt_s(run)} training; rough)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# running


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


_PARAM_DIMS = {"W": ("unit", "unit_in"), "U": ("unit", "input"), "b": ("unit",),
               "v": ("unit", "output")}


def _records_to_arrays(records: Mapping[str, Any], widths: np.ndarray, n_logs: int
                       ) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """Flatten train_many's records into store variables; per-unit entries beyond each run's own
    width set to NaN (they are exact zeros of the padding)."""
    data, dims = {}, {}
    for k, v in records.items():
        if isinstance(v, Mapping):  # final_params, lin_final_params
            prefix = "final" if k == "final_params" else k.replace("_params", "")
            for g, a in v.items():
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
            continue
        a = np.asarray(v)
        if a.ndim >= 2 and a.shape[1] == n_logs:
            dims[k] = ("step",) + tuple(f"{k}_{i}" for i in range(a.ndim - 2))
        else:
            dims[k] = tuple(f"{k}_{i}" for i in range(a.ndim - 1))
        data[k] = a
    return data, dims


def run_chunk(plan: Plan, chunk: Chunk, on_step: Callable[[int], None] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """Train one chunk's runs (padded to the chunk size) and return the store variables.
    on_step(n): n more run-steps done (padding lanes not counted), from device threads, one call
    at a time, every :func:`progress_every` logs of each run (or once, at the chunk's end, for
    short runs); the calls sum to len(chunk.runs) * steps."""
    import jax
    import jax.numpy as jnp
    p = plan.programs[chunk.program]
    runs = [plan.runs[i] for i in chunk.runs]
    padded = runs + [runs[-1]] * (chunk.size - len(runs))
    keys = jnp.stack([train.run_key(r.seed, r.key_coords) for r in padded])
    lane_fixed = _lane_fixed(plan.spec)
    names = set(train.default_hparams(p.cfg))
    hp: dict[str, np.ndarray] = {}
    for r_i, r in enumerate(padded):
        vals = {n: v for n, v in lane_fixed.items() if n in names}
        vals.update({n: v for n, v in r.lanes if n in names})
        vals["width"] = float(r.width)
        for n, v in vals.items():
            hp.setdefault(n, np.full(len(padded), np.nan))[r_i] = v
    every = progress_every(p.cfg, plan.backend) if on_step is not None else 0

    def report(lanes: np.ndarray, steps: int) -> None:   # filler lanes (index >= runs) are dropped
        n = int(np.count_nonzero(lanes < len(runs)))
        if n:
            on_step(n * steps)

    progress = report if every else None
    records = train.train_many(p.cfg, keys, hp, progress=progress, progress_every=max(every, 1))
    records = jax.device_get(records)
    if on_step is not None and not every and p.cfg.steps:
        on_step(len(runs) * p.cfg.steps)   # short runs: the whole chunk at once
    records = jax.tree.map(lambda a: np.asarray(a)[: len(runs)], records)
    widths = np.array([r.width for r in runs])
    order = list(train.record_names(p.cfg))
    records = {k: records[k] for k in sorted(records, key=lambda k: (
        order.index(k) if k in order else len(order), k))}
    data, dims = _records_to_arrays(records, widths, p.cfg.n_logs)
    data["array_width"] = np.full(len(runs), p.cfg.width_array, dtype=np.int64)
    dims["array_width"] = ()
    return data, dims


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


def execute(plan: Plan, out_dir: str | os.PathLike, *,
            on_chunk: Callable[[Chunk, float], None] | None = None,
            on_step: Callable[[int], None] | None = None) -> Summary:
    """Run a prepared plan's chunks (each written atomically), then consolidate the store.

    on_chunk(chunk, seconds) after each written chunk; on_step(n) as training goes, n run-steps
    at a time (see :func:`run_chunk`; the calls sum to ``plan.steps_todo``). With on_step the
    progress variant of each program is compiled (records are bit-identical). The caller holds
    the store's lock (:func:`rnn_ntk.store.lock_store`), as :func:`run_sweep` does."""
    t0 = time.perf_counter()
    steps_cache: dict[int, np.ndarray] = {}
    n_trained = 0
    for chunk in plan.chunks:
        t = time.perf_counter()
        p = plan.programs[chunk.program]
        data, dims = run_chunk(plan, chunk, on_step)
        if chunk.program not in steps_cache:
            steps_cache[chunk.program] = np.arange(p.cfg.n_logs) * p.cfg.log_every
        coords = [plan.runs[i].coords for i in chunk.runs]
        store.write_chunk(out_dir, chunk.name, coords, data, dims, steps_cache[chunk.program],
                          info={"program": p.id, "array_width": p.cfg.width_array,
                                "seconds": round(time.perf_counter() - t, 3)})
        n_trained += len(chunk.runs)
        if on_chunk is not None:
            on_chunk(chunk, time.perf_counter() - t)
    path = store.consolidate(out_dir)
    ds = store.load_results(out_dir)
    n_div = 0
    if "diverged" in ds:
        n_div = int((ds["diverged"].any("step") & ds["ran"]).sum())
    return Summary(n_runs=int(ds["ran"].sum()), n_trained=n_trained, n_skipped=plan.n_done,
                   n_diverged=n_div, wall_s=time.perf_counter() - t0, out=Path(out_dir),
                   results=path)


def run_sweep(spec: Spec, out_dir: str | os.PathLike, *, resume: bool = False,
              max_memory: int | None = None,
              on_chunk: Callable[[Chunk, float], None] | None = None,
              on_step: Callable[[int], None] | None = None) -> Summary:
    """:func:`prepare` then :func:`execute`, holding the store's lock throughout (a second
    writer on ``out_dir`` gets StoreError; nothing is written when the spec is invalid)."""
    plan = make_plan(spec, max_memory=max_memory)
    with store.lock_store(out_dir):
        plan = prepare(spec, out_dir, resume=resume, max_memory=max_memory, plan=plan)
        return execute(plan, out_dir, on_chunk=on_chunk, on_step=on_step)


# ---------------------------------------------------------------------------------------------
# the built-in demo

DEMO_SPEC = """\
# rnn-ntk demo: memorising random labels with gradient descent, a few widths x seeds,
# training only W (the papers' setting) or all of W, U, b, v.
name = "demo"
description = "random labels (n = 32, T = 8, d = 4), full-batch GD, lr = 1"

[model]
width = [16, 32, 64, 128]
activation = "relu"
readout = "last"
trainable = [["W"], ["W", "U", "b", "v"]]

[task]
kind = "random_labels"
n_train = 32
n_test = 32
length = 8
input_dim = 4

[train]
optimizer = "sgd"
steps = 300
log_every = 10
lr = 1.0
dtype = "float32"

[sweep]
seeds = 3
pack_widths = "auto"
"""


def demo_spec() -> Spec:
    """The built-in demo sweep (``rnn-ntk demo``)."""
    return parse_spec(DEMO_SPEC, "<demo>")
