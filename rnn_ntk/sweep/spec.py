"""Sweep specs: TOML text -> validated :class:`Spec` (every problem at once, did-you-mean).

The field catalogue is derived from the config dataclasses (``RNNConfig``, ``TaskConfig``,
``TrainConfig``) and the hyper-parameters ``train.default_hparams`` traces, so new fields are
picked up. The validator (``_catalogue`` .. ``_check_value``) is kept together here so that it can
be replaced as one piece. :func:`override_spec` edits the parsed mapping and writes it back as
TOML (the text a store records).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from rnn_ntk import model as model_mod
from rnn_ntk import tasks, train
from rnn_ntk.model import RNNConfig
from rnn_ntk.tasks import TaskConfig
from rnn_ntk.train import TrainConfig

__all__ = [
    "SECTIONS", "TOP_KEYS", "SWEEP_KEYS", "SHARED", "MAX_SEED", "CATALOGUE", "SpecError", "Axis",
    "Spec", "coord_value", "jsonable", "parse_spec", "load_spec", "override_spec",
]

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


def jsonable(v: Any) -> Any:
    """``v`` with tuples as lists and non-finite floats as strings ('inf', '-inf', 'nan')."""
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    if isinstance(v, (tuple, list)):
        return [jsonable(e) for e in v]
    if isinstance(v, dict):
        return {k: jsonable(e) for k, e in v.items()}
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




def _load_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError([f"{source}: invalid TOML: {e}"]) from None


def _check_top(raw: Mapping[str, Any], problems: list[str]
               ) -> tuple[dict[str, str | None], dict[str, dict]]:
    """Top-level keys and section types: (name/description/out -> str or None, section -> table)."""
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
    return meta, sec_raw


def _given_values(sec_raw: Mapping[str, dict], problems: list[str]) -> dict[tuple[str, str], Any]:
    """The values given in [model], [task], [train]: (section, name) -> raw value; unknown keys
    of those sections and of [sweep] are problems."""
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
    for key in sec_raw["sweep"]:
        if key not in SWEEP_KEYS:
            secs = _section_of(key)
            hint = _did_you_mean(key, SWEEP_KEYS)
            if not hint and secs:
                hint = f"; {key!r} belongs in [{secs[0]}] (a list there makes it an axis)"
            problems.append(f"sweep.{key}: unknown key{hint}")
    return given


def _merge_shared(given: dict[tuple[str, str], Any], zipped: dict[tuple[str, str], Any],
                  problems: list[str]) -> None:
    """Shared fields (input_dim, output_dim) are set once, in [model] or [task]; they are kept
    under 'task'. A field may not be both given and zipped. Edits ``given`` and ``zipped``."""
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


def _check_values(f: _Field, values: Sequence[Any], where: str, problems: list[str]) -> tuple:
    """Check every value of an axis (``where[i]`` names each); returns the normalised values."""
    out = []
    for i, e in enumerate(values):
        e2, p = _check_value(f, e, f"{where}[{i}]")
        if p:
            problems.append(p)
        out.append(e2)
    return tuple(out)


def _parse_values(given: Mapping[tuple[str, str], Any], zipped: Mapping[tuple[str, str], Any],
                  problems: list[str]) -> tuple[dict[str, dict[str, Any]], list[Axis]]:
    """Scalars and axes: (section -> {name: checked scalar}, axes in given then zipped order)."""
    fixed: dict[str, dict[str, Any]] = {"model": {}, "task": {}, "train": {}}
    axes: list[Axis] = []
    for (s, name), v in given.items():
        f = CATALOGUE[s][name]
        where = f"{s}.{name}"
        if not _is_axis(f, v):
            v2, p = _check_value(f, v, where)
            if p:
                problems.append(p)
            fixed[s][name] = v2
        elif not v:
            problems.append(f"{where}: empty axis (give at least one value)")
        else:
            axes.append(Axis(s, name, _check_values(f, v, where, problems)))
    for (s, name), (v, gi) in zipped.items():
        vals = _check_values(CATALOGUE[s][name], v, f"sweep.zip.{name}", problems)
        axes.append(Axis(s, name, vals, gi))
    return fixed, axes


def _check_axes(axes: Sequence[Axis], n_zip: int, problems: list[str]) -> None:
    """Repeated values in an axis, axis names set twice, repeated combinations of a zip group."""
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


def _fill_defaults(fixed: dict[str, dict[str, Any]], axes: Sequence[Axis],
                   problems: list[str]) -> None:
    """Required fields (problems when missing) and defaults of the rest (into ``fixed``)."""
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


@dataclasses.dataclass(frozen=True)
class _SweepOptions:
    seeds: list[int]
    pack_widths: Any
    chunk_size: int | None
    key_axes: list[str]


def _parse_sweep_options(sw: Mapping[str, Any], names: Sequence[str], problems: list[str]
                         ) -> _SweepOptions:
    """[sweep]: the seeds, pack_widths, chunk_size and key_axes (names: the spec's axes)."""
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
    return _SweepOptions(seeds, pack, chunk_size, list(key_axes))


def _order_axes(axes: list[Axis], sec_raw: Mapping[str, dict], seeds: list[int]) -> list[Axis]:
    """Dimension order: [model], [task], [train] axes in file order, zipped axes, then seed."""
    order = {("model", n): i for i, n in enumerate(sec_raw["model"])}
    order.update({("task", n): 1000 + i for i, n in enumerate(sec_raw["task"])})
    order.update({("task", n): i for n in SHARED for i in [order.get(("model", n))] if i is not None})
    order.update({("train", n): 2000 + i for i, n in enumerate(sec_raw["train"])})
    out = sorted(axes, key=lambda a: (a.group is not None, order.get((a.section, a.name), 0)
                                      if a.group is None else 0))
    return out + [Axis("sweep", "seed", tuple(seeds))]


def _resolve(fixed: Mapping[str, dict], axes: Sequence[Axis], opts: _SweepOptions, n_zip: int
             ) -> dict[str, Any]:
    """The JSON-able resolved spec (what a resumed store compares)."""
    resolved: dict[str, Any] = {s: dict(fixed[s]) for s in ("model", "task", "train")}
    for a in axes:
        if a.group is None and a.section in resolved:
            resolved[a.section][a.name] = list(a.values)
    resolved["sweep"] = {"seed": opts.seeds, "pack_widths": opts.pack_widths,
                         "chunk_size": opts.chunk_size, "key_axes": list(opts.key_axes),
                         "zip": [{a.name: list(a.values) for a in axes if a.group == gi}
                                 for gi in range(n_zip)]}
    return jsonable(resolved)


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse and validate a TOML sweep spec.

    Args:
        text: the TOML text (see :mod:`rnn_ntk.sweep` for the sections).
        source: where it came from (a path names the spec when it has no ``name``).

    Returns:
        The validated :class:`Spec`.

    Raises:
        SpecError: listing every problem found, one line each.
    """
    raw = _load_toml(text, source)
    problems: list[str] = []
    meta, sec_raw = _check_top(raw, problems)
    given = _given_values(sec_raw, problems)
    sw = sec_raw["sweep"]
    zipped, n_zip = _parse_zips(sw.get("zip"), problems)
    _merge_shared(given, zipped, problems)
    fixed, axes = _parse_values(given, zipped, problems)
    _check_axes(axes, n_zip, problems)
    _fill_defaults(fixed, axes, problems)
    opts = _parse_sweep_options(sw, [a.name for a in axes], problems)
    if problems:
        raise SpecError(problems)
    axes = _order_axes(axes, sec_raw, opts.seeds)
    name = meta["name"] or (Path(source).stem if source and not source.startswith("<") else "sweep")
    return Spec(name=name, description=meta["description"] or "", out=meta["out"], text=text,
                resolved=_resolve(fixed, axes, opts, n_zip), fixed=fixed, axes=tuple(axes),
                zips=tuple(tuple(a.name for a in axes if a.group == gi) for gi in range(n_zip)),
                pack_widths=opts.pack_widths, chunk_size=opts.chunk_size,
                key_axes=tuple(opts.key_axes))


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate a spec file (see :func:`parse_spec`)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError([f"{path}: cannot read spec file ({e.strerror})"]) from None
    return parse_spec(text, str(p))


def _toml_value(v: Any) -> str:
    """A TOML literal: bool, int, float (inf, nan), str, (nested) list, inline table."""
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
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(e)}" for k, e in v.items()) + "}"
    raise SpecError([f"override value {v!r}: not a TOML scalar or list"])




_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(e, dict) for e in v)


def _dotted_entries(key: str, v: Any) -> list[str]:
    """``key = v``, a non-empty table as dotted keys (``key.name = ...``, in its order)."""
    if isinstance(v, dict) and v:
        return [e for k, sub in v.items() for e in _dotted_entries(f"{key}.{_toml_key(k)}", sub)]
    return [f"{key} = {_toml_value(v)}"]


def _toml_lines(table: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    """TOML lines of a parsed mapping (``tomllib.loads`` of them gives ``table`` back, in order):
    top-level tables as ``[name]``, arrays of tables as ``[[a.b]]``, other tables as dotted keys
    (which keeps the order of a zip table's keys: the axes' order)."""
    entries: list[str] = []
    sections: list[str] = []
    for k, v in table.items():
        head = ".".join(_toml_key(p) for p in path + (k,))
        if isinstance(v, dict) and not path:
            sections += ["", f"[{head}]"] + _toml_lines(v, (k,))
        elif _is_table_array(v):
            for e in v:
                sections += ["", f"[[{head}]]"] + _toml_lines(e, path + (k,))
        else:
            entries += _dotted_entries(_toml_key(k), v)
    return entries + sections


def override_spec(spec: Spec, overrides: Mapping[str, Any]) -> Spec:
    """``spec`` with some values replaced, re-validated (e.g. an experiment's scales).

    The spec's TOML is parsed, each entry named in ``overrides`` replaced in that mapping, and the
    mapping written back as TOML (comments are not kept): the new :attr:`Spec.text` is what a
    store records, and it parses to the values actually used.

    Args:
        spec: the spec to start from (left unchanged).
        overrides: 'section.name' (e.g. 'model.width', 'task.n_train', 'sweep.seeds') -> a TOML
            scalar or (nested) list; each must replace an entry already present in that table.

    Returns:
        The new validated :class:`Spec` (same name as ``spec`` unless its TOML names it).

    Raises:
        SpecError: a key that is not 'section.name' or names no entry of the spec, a value TOML
            cannot hold, or an invalid result.
    """
    problems = [f"override {key!r}: must be 'section.name'" for key in overrides
                if key.count(".") != 1]
    if problems:
        raise SpecError(problems)
    raw = tomllib.loads(spec.text)
    for key, v in overrides.items():
        sec, name = key.split(".")
        table = raw.get(sec)
        if not isinstance(table, dict) or name not in table:
            problems.append(f"override {key!r}: [{sec}] has no '{name} = ...' entry to replace")
        else:
            table[name] = v
    if problems:
        raise SpecError(problems)
    head = f"# spec {spec.name!r} with {', '.join(overrides)} overridden"
    return parse_spec("\n".join([head, *_toml_lines(raw)]) + "\n", spec.name)
