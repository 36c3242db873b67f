"""Sweep specs: TOML text -> validated :class:`Spec` (every problem at once, did-you-mean).

Each section is checked with the fields the config modules declare once (:mod:`rnn_ntk.schema`,
``schema.section_fields``): scalars and every element of an axis go through the same
``Field.check_static``, so a spec reports the configs' messages, all of them at once. A traced task
parameter (``eps_x``, ``delta``, ``lag``, ...) is checked by the spec's task kind(s) that have it
(``section_fields("task", kind=...)``); bounds that depend on the whole config (``lag`` <= length)
are the planner's. :func:`override_spec` edits the parsed mapping and writes it back as TOML (the
text a store records).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import tomllib
import types
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from rnn_ntk import schema, tasks
from rnn_ntk.schema import Field, did_you_mean

__all__ = [
    "SECTIONS", "TOP_KEYS", "SWEEP_KEYS", "SHARED", "MAX_SEED", "CATALOGUE", "SpecError", "Axis",
    "Spec", "coord_value", "jsonable", "parse_spec", "load_spec",
    "override_spec",
]

SECTIONS = ("model", "task", "train", "sweep")
CONFIG_SECTIONS = ("model", "task", "train")
TOP_KEYS = ("name", "description", "out")
SWEEP_KEYS = ("seed", "seeds", "pack_widths", "chunk_size", "key_axes", "zip")
SHARED = ("input_dim", "output_dim")        # model and task fields set once (kept under 'task')
MAX_SEED = 2 ** 32

Catalogue = Mapping[str, Mapping[str, Field]]   # section -> {name: schema Field}


class SpecError(ValueError):
    """A sweep spec is invalid. ``problems`` holds one line per problem (all that were found)."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Catalogue(Mapping):
    """section ('model', 'task', 'train') -> {name: :class:`rnn_ntk.schema.Field`} of what a spec
    may set: ``schema.section_fields(section)`` (read-only), recomputed when the task registry
    ``tasks.TASKS`` changes (so a kind registered later is settable). ``Field.traced``: a lane."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[tuple, Mapping[str, Field]]] = {}

    def __getitem__(self, section: str) -> Mapping[str, Field]:
        if section not in CONFIG_SECTIONS:
            raise KeyError(section)
        registry = tuple(tasks.TASKS.items())
        memo = self._memo.get(section)
        if memo is None or memo[0] != registry:
            memo = (registry, types.MappingProxyType(schema.section_fields(section)))
            self._memo[section] = memo
        return memo[1]

    def __iter__(self) -> Iterator[str]:
        return iter(CONFIG_SECTIONS)

    def __len__(self) -> int:
        return len(CONFIG_SECTIONS)


CATALOGUE: Catalogue = _Catalogue()


def _sections_of(cat: Catalogue, name: str) -> list[str]:
    return [s for s in CONFIG_SECTIONS if name in cat[s]]


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
        return str(c) if self._mixed else c

    @functools.cached_property
    def _mixed(self) -> bool:
        """Whether the axis mixes kinds of values (computed once: coord is called per run)."""
        return len({_coord_kind(coord_value(x)) for x in self.values}) > 1

    @property
    def coords(self) -> list:
        """The axis' coordinate values: unique, in order of first appearance."""
        out: list = []
        seen: set = set()      # one kind per axis (mixed ones are str), so set == list semantics
        for v in self.values:
            c = self.coord(v)
            if c not in seen:
                seen.add(c)
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


# ---------------------------------------------------------------------------------------------
# value checks (the schema's fields)


def _kind_fields(given: Mapping[tuple[str, str], Any], zipped: Mapping[tuple[str, str], Any]
                 ) -> dict[str, dict[str, Field]]:
    """The [task] fields of each valid task kind the spec names (scalar, axis or zipped)."""
    raw = given.get(("task", "kind"), zipped.get(("task", "kind"), (None,))[0])
    kinds = raw if isinstance(raw, list) else [raw]
    return {k: schema.section_fields("task", kind=k)
            for k in kinds if isinstance(k, str) and k in tasks.TASKS}


def _checks(cat: Catalogue, kind_fields: Mapping[str, Mapping[str, Field]], s: str, name: str
            ) -> list[tuple[Field, str]]:
    """(field, label) checking one spec value: the section's field; a traced task parameter is
    checked by each of the spec's task kinds that has it (named when the spec has several)."""
    f = cat[s][name]
    if s != "task" or not f.traced:
        return [(f, "")]
    label = len(kind_fields) > 1
    own = [(fs[name], f" (task kind {k!r})" if label else "")
           for k, fs in kind_fields.items() if name in fs]
    return own or [(f, "")]     # a parameter of none of the spec's kinds: the planner says so


def _checked(checks: Sequence[tuple[Field, str]], v: Any, where: str, problems: list[str]) -> Any:
    """One value checked (``where: problem`` on failure); returns it normalised."""
    out = v
    for i, (f, label) in enumerate(checks):
        v2, p = f.check_static(v)
        if p is not None:
            problems.append(f"{where}: {p}{label}")
            return v
        out = v2 if i == 0 else out
    return out


def coord_value(v: Any) -> Any:
    """The store coordinate of an axis value: tuples of names (trainable) joined, tuples of
    numbers (position_weights) as "w1,w2,...", None -> 'full'."""
    if isinstance(v, tuple) and all(isinstance(s, str) for s in v):
        return "".join(v) if all(len(s) == 1 for s in v) else "+".join(v)
    if isinstance(v, tuple):
        return ",".join(repr(float(s)) for s in v)
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



# ---------------------------------------------------------------------------------------------
# parsing


def _zip_tables(zraw: Any, problems: list[str]) -> list[dict]:
    """[sweep.zip] as a list of tables (one per zip group)."""
    if isinstance(zraw, dict):
        return [zraw]
    if isinstance(zraw, list) and all(isinstance(z, dict) for z in zraw):
        return list(zraw)
    if zraw is not None:
        problems.append("sweep.zip: must be a table [sweep.zip] or tables [[sweep.zip]]")
    return []


def _parse_zips(zraw: Any, cat: Catalogue, problems: list[str]
                ) -> tuple[dict[tuple[str, str], tuple[list, int]], int]:
    """The [sweep.zip] table(s): (section, name) -> (values, group index), and the group count."""
    zip_tables = _zip_tables(zraw, problems)
    zipped: dict[tuple[str, str], tuple[list, int]] = {}
    for gi, zt in enumerate(zip_tables):
        where0 = "sweep.zip" if len(zip_tables) == 1 else f"sweep.zip[{gi}]"
        lengths = {}
        flat: dict[str, Any] = {}
        for key, v in zt.items():  # model.width = [...] parses as a nested table
            if key in CONFIG_SECTIONS and isinstance(v, dict):
                flat.update({f"{key}.{k}": e for k, e in v.items()})
            else:
                flat[key] = v
        for key, v in flat.items():
            sec, _, name = key.rpartition(".")
            secs = [sec] if sec else _sections_of(cat, name)
            secs = [s for s in secs if s in CONFIG_SECTIONS and name in cat[s]]
            if not secs:
                opts = [n for s in CONFIG_SECTIONS for n in cat[s]]
                problems.append(f"{where0}.{key}: unknown key{did_you_mean(name, opts)}")
                continue
            if name in SHARED and not sec:
                secs = ["task"]
            s = secs[0]
            if len(secs) > 1:
                problems.append(f"{where0}.{key}: ambiguous; write {secs[0]}.{name} or "
                                f"{secs[1]}.{name}")
                continue
            f = cat[s][name]
            if not isinstance(v, list) or (f.sequence and not schema.is_axis(f, v) and v):
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
                            f"got {n!r}")
        else:
            seeds = list(range(n))
    else:
        sv = sw.get("seed", 0)
        lst = sv if isinstance(sv, list) else [sv]
        if not lst:
            problems.append("sweep.seed: empty axis (give at least one value)")
        for e in lst:
            if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < MAX_SEED:
                problems.append(f"sweep.seed: seeds must be integers in [0, 2**32), got {e!r}")
                break
        else:
            seeds = list(lst)
            if len(set(seeds)) != len(seeds):
                problems.append(f"sweep.seed: repeated values in axis {seeds}")
    return seeds


def _check_top(raw: Mapping[str, Any], cat: Catalogue, problems: list[str]
               ) -> tuple[dict[str, str | None], dict[str, dict]]:
    """Top-level keys and section types: (name/description/out -> str or None, section -> table)."""
    for key in raw:
        if key in SECTIONS or key in TOP_KEYS:
            continue
        hint = did_you_mean(key, SECTIONS + TOP_KEYS)
        secs = _sections_of(cat, key)
        if secs and not hint:
            hint = f"; {key!r} belongs in [{secs[0]}]"
        problems.append(f"{key}: unknown top-level key{hint}")
    meta = {}
    for key in TOP_KEYS:
        if key in raw and not isinstance(raw[key], str):
            problems.append(f"{key}: must be a string, got {raw[key]!r}")
        meta[key] = raw.get(key) if isinstance(raw.get(key), str) else None
    for s in SECTIONS:
        if s in raw and not isinstance(raw[s], dict):
            problems.append(f"{s}: must be a table ([{s}]), got {raw[s]!r}")
    sec_raw = {s: raw.get(s, {}) if isinstance(raw.get(s, {}), dict) else {} for s in SECTIONS}
    return meta, sec_raw


def _given_values(sec_raw: Mapping[str, dict], cat: Catalogue, problems: list[str]
                  ) -> dict[tuple[str, str], Any]:
    """The values given in [model], [task], [train]: (section, name) -> raw value; unknown keys
    of those sections and of [sweep] are problems (did you mean, or the section they belong in)."""
    given: dict[tuple[str, str], Any] = {}
    for s in CONFIG_SECTIONS:
        for key, v in sec_raw[s].items():
            if key in cat[s]:
                given[(s, key)] = v
                continue
            secs = [o for o in _sections_of(cat, key) if o != s]
            hint = did_you_mean(key, cat[s])
            if not hint and secs:
                hint = f"; {key!r} belongs in [{secs[0]}]"
            elif not hint and key in SWEEP_KEYS:
                hint = f"; {key!r} belongs in [sweep]"
            problems.append(f"{s}.{key}: unknown key{hint}")
    for key in sec_raw["sweep"]:
        if key not in SWEEP_KEYS:
            secs = _sections_of(cat, key)
            hint = did_you_mean(key, SWEEP_KEYS)
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



def _parse_values(given: Mapping[tuple[str, str], Any], zipped: Mapping[tuple[str, str], Any],
                  cat: Catalogue, problems: list[str]
                  ) -> tuple[dict[str, dict[str, Any]], list[Axis]]:
    """Scalars and axes, every value checked by its schema field (each element of an axis,
    ``where[i]``): (section -> {name: normalised scalar}, axes in given then zipped order)."""
    kind_fields = _kind_fields(given, zipped)
    fixed: dict[str, dict[str, Any]] = {s: {} for s in CONFIG_SECTIONS}
    axes: list[Axis] = []

    def values(s: str, name: str, vs: Sequence[Any], where: str) -> tuple:
        checks = _checks(cat, kind_fields, s, name)
        return tuple(_checked(checks, e, f"{where}[{i}]", problems) for i, e in enumerate(vs))

    for (s, name), v in given.items():
        where = f"{s}.{name}"
        if not schema.is_axis(cat[s][name], v):
            fixed[s][name] = _checked(_checks(cat, kind_fields, s, name), v, where, problems)
        elif not v:
            problems.append(f"{where}: empty axis (give at least one value)")
        else:
            axes.append(Axis(s, name, values(s, name, v, where)))
    for (s, name), (v, gi) in zipped.items():
        axes.append(Axis(s, name, values(s, name, v, f"sweep.zip.{name}"), gi))
    return fixed, axes




def _coords(a: Axis) -> list | None:
    """The coordinates of an axis' values; None if one is a list or table (a bad value, already
    reported), which has no coordinate."""
    cs = [coord_value(x) for x in a.values]
    return None if any(isinstance(c, (list, dict)) for c in cs) else cs


def _check_axes(axes: Sequence[Axis], n_zip: int, problems: list[str]) -> None:
    """Repeated values in an axis, axis names set twice, repeated combinations of a zip group."""
    coords = {id(a): _coords(a) for a in axes}
    for a in axes:
        cs = coords[id(a)]
        if a.group is None and cs is not None and len(set(cs)) != len(cs):
            problems.append(f"{a.section}.{a.name}: repeated values in axis {list(a.values)}")
    names = [a.name for a in axes]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{n}: set in more than one section; axis names must be unique")
    for gi in range(n_zip):
        members = [coords[id(a)] for a in axes if a.group == gi]
        if members and all(cs is not None and len(cs) == len(members[0]) for cs in members):
            combos = list(zip(*members))
            if len(set(combos)) != len(combos):
                dup = sorted({c for c in combos if combos.count(c) > 1})
                problems.append(f"sweep.zip: repeated combinations {dup}")



def _fill_defaults(fixed: dict[str, dict[str, Any]], axes: Sequence[Axis], cat: Catalogue,
                   problems: list[str]) -> None:
    """Required fields (problems when missing) and defaults of the rest (into ``fixed``). Shared
    fields live under 'task'; traced task parameters' defaults depend on the config (the
    planner's); ``task.target`` follows the readout unless given."""
    axis_keys = {(a.section, a.name) for a in axes}
    for s in CONFIG_SECTIONS:
        for name, f in cat[s].items():
            if (s, name) in axis_keys or name in fixed[s] or s == "model" and name in SHARED:
                continue
            if f.required:
                where = " (set it in [task] or [model])" if name in SHARED else ""
                problems.append(f"{s}.{name}: required{where}")
            elif not (s == "task" and (f.traced or name == "target")):
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
        problems.append(f"sweep.pack_widths: must be \"auto\", true or false, got {pack!r}")
    chunk_size = sw.get("chunk_size")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        problems.append(f"sweep.chunk_size: must be a positive integer (lanes per chunk), "
                        f"got {chunk_size!r}")
        chunk_size = None
    key_axes = sw.get("key_axes", [])
    if not isinstance(key_axes, list) or not all(isinstance(k, str) for k in key_axes):
        problems.append(f"sweep.key_axes: must be a list of axis names, got {key_axes!r}")
        key_axes = []
    for k in key_axes:
        if k not in names:
            problems.append(f"sweep.key_axes: {k!r} is not a sweep axis{did_you_mean(k, names)}")
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
    resolved: dict[str, Any] = {s: dict(fixed[s]) for s in CONFIG_SECTIONS}
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
    raw = schema.parse_toml(text, source, SpecError)
    problems: list[str] = []
    cat = {s: CATALOGUE[s] for s in CONFIG_SECTIONS}
    meta, sec_raw = _check_top(raw, cat, problems)
    given = _given_values(sec_raw, cat, problems)
    sw = sec_raw["sweep"]
    zipped, n_zip = _parse_zips(sw.get("zip"), cat, problems)
    _merge_shared(given, zipped, problems)
    fixed, axes = _parse_values(given, zipped, cat, problems)
    _check_axes(axes, n_zip, problems)
    _fill_defaults(fixed, axes, cat, problems)
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
    return parse_spec(schema.read_spec_file(path, SpecError), str(Path(path)))


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
