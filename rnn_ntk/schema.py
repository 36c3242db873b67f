"""One schema for configs, sweep specs and hyper-parameters: each field is declared once.

A :class:`Field` is a name, a default (or :data:`REQUIRED`), a check, a doc line, whether it is
*traced* (a hyper-parameter whose value is a lane of a compiled program, e.g. ``lr``, ``sigma_w``,
``eps_x``, rather than a static config field) and, for string options, its choices. A check is a
function ``value -> normalised value`` that raises :class:`Invalid` with a problem text such as
``"must be a positive integer, got 0"``; the factories below (:func:`integer`,
:func:`optional_integer`, :func:`boolean`, :func:`choice`, :func:`number`) build the usual ones.
Number checks accept arrays too (a hyper-parameter with a leading run axis) and name the first bad
entry.

Three users, one set of rules:

* Config dataclasses declare their fields with :func:`field` (``dataclasses.field`` plus the
  schema entry in its metadata) and call :func:`check_config` first thing in ``__post_init__``:
  it raises the *first* problem as a one-line :class:`ConfigError` ``"<name>: <problem>"`` and
  stores normalised values (e.g. ``trainable`` in canonical order). Cross-field rules stay in
  ``__post_init__`` after it.
* Sweep specs collect *every* problem: ``validate(fields, mapping, where="model")`` returns lines
  ``"model.<name>: <problem>"``, ``"model.<key>: unknown key (did you mean 'width'?)"`` and
  ``"model.<name>: required"``, the messages of the spec parser. A spec parser gets each section's
  fields from :func:`section_fields`::

      section_fields("model")               # RNNConfig fields; sigma_* are traced
      section_fields("task", kind="lag")    # TaskConfig fields used by that kind + its traced
                                            #   parameters (label_noise, eps_x, lag)
      section_fields("task")                # every kind's fields and parameters (unknown keys)
      section_fields("train")               # TrainConfig fields a spec may set + lr, momentum,
                                            #   proj_radius (traced)

  and checks one element of an axis (:func:`is_axis`) with ``fields[name].check_static(v) ->
  (v, problem | None)`` (``where[i]: problem``; a traced field takes one number there). Required
  fields are ``Field.required`` (``input_dim``/``output_dim`` may come from [model] or [task]:
  pass ``required=False`` and check those where they are shared). Traced task parameters' defaults in the kind-free fields
  are placeholders where they depend on the config (``lag``): take run defaults from
  ``rnn_ntk.train.default_hparams(cfg)``. Fields a spec cannot set (``TrainConfig.model``, ``.task``,
  ``.array_width``) have ``spec=False`` and are left out of :func:`section_fields`.
* Hyper-parameters of a run: ``rnn_ntk.train.hparam_fields(cfg)`` (and
  ``rnn_ntk.tasks.hparam_fields(tcfg)``) bind the config-dependent bounds (``width`` <= the array
  width, ``lag`` <= length); ``rnn_ntk.train.check_hparams`` checks concrete values with them.

This module imports only the standard library and numpy (the config modules import it).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["REQUIRED", "ConfigError", "Invalid", "Field", "field", "fields_of", "check_config",
           "validate", "first_problem", "did_you_mean", "require", "check_int", "integer",
           "optional_integer", "boolean", "choice", "number", "between", "is_axis", "section_fields",
           "Check", "parse_toml", "read_spec_file"]


class ConfigError(ValueError):
    """A configuration field has a bad value. The message is one line naming the field."""


class Invalid(Exception):
    """Raised by a check; ``args[0]`` is the problem text ("must be ..., got ...")."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The default of a field that must be given."""

Check = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class Field:
    """One declared field or hyper-parameter.

    name: its key.  default: value when not given, or :data:`REQUIRED`.  check: ``value ->
    normalised value``, raising :class:`Invalid` (None: anything goes).  doc: one line.  traced:
    a hyper-parameter that is a traced lane value, not a static config field.  choices: the
    allowed strings of a string option (for did-you-mean and docs; the check enforces them).
    spec: whether a sweep spec may set it.  sequence: one value is itself a list (``trainable``),
    so in a spec only a list of lists is an axis (:func:`is_axis`).
    """

    name: str
    default: Any = REQUIRED
    check: Check | None = None
    doc: str = ""
    traced: bool = False
    choices: tuple[str, ...] | None = None
    spec: bool = True
    sequence: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check_value(self, value: Any) -> tuple[Any, str | None]:
        """(normalised value, None), or (value, problem text) if the value is bad."""
        if self.check is None:
            return value, None
        try:
            return self.check(value), None
        except Invalid as e:
            return value, str(e.args[0])

    def check_static(self, value: Any) -> tuple[Any, str | None]:
        """:meth:`check_value` of one static value (a config field, one value of a spec): a
        traced field takes a single number here, not an array of run values."""
        if self.traced and not _static_number(value):
            return value, f"must be a number, got {value!r}"
        return self.check_value(value)

    def replace(self, **changes: Any) -> "Field":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# checks


def _static_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def integer(minimum: int = 1) -> Check:
    """An integer >= minimum (python or numpy integers, normalised to int; bools are rejected)."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def check(v: Any) -> int:
        if not _is_int(v):
            raise Invalid(f"must be an integer, got {v!r}")
        if v < minimum:
            raise Invalid(f"must be {what}, got {v}")
        return int(v)
    return check


def optional_integer(minimum: int = 1, words: Sequence[str] = ("full", "none")) -> Check:
    """None (also spelled by one of ``words``, any case), or an integer >= minimum."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    alt = f'"{words[0]}"' if words else "None"

    def check(v: Any) -> int | None:
        if v is None or isinstance(v, str) and v.lower() in words:
            return None
        if not _is_int(v) or v < minimum:
            raise Invalid(f"must be {what} or {alt}, got {v!r}")
        return int(v)
    return check


def boolean() -> Check:
    """True or False (not 0/1)."""
    def check(v: Any) -> bool:
        if not isinstance(v, (bool, np.bool_)):
            raise Invalid(f"must be true or false, got {v!r}")
        return bool(v)
    return check


def did_you_mean(key: str, options: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest option, or ``""``."""
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def choice(options: Iterable[str]) -> Check:
    """One of ``options`` (a string)."""
    opts = list(options)

    def check(v: Any) -> str:
        if not isinstance(v, str):
            raise Invalid(f"must be a string, got {v!r}")
        if v not in opts:
            raise Invalid(f"must be one of {opts}, got {v!r}{did_you_mean(v, opts)}")
        return v
    return check


def _fmt_number(a: np.ndarray, bad: np.ndarray) -> str:
    if a.ndim == 0:
        return f"{a.item()}"
    i = tuple(int(j) for j in np.argwhere(bad)[0])
    where = i[0] if len(i) == 1 else i
    return f"{a[i].item()} (entry {where})"


def number(ok: Callable[[np.ndarray], np.ndarray] | None = None, must: str = "",
           *, finite: bool = True, text: str | None = None) -> Check:
    """A real number, or an array of them (every entry is checked).

    finite: NaN and inf are rejected first ("must be finite").  ok: elementwise predicate of the
    valid values; a failure reads ``"must be <must>, got v"`` (or ``"<text>, got v"``). Python
    numbers are normalised to float, arrays are returned as they are.
    """
    message = text if text is not None else f"must be {must}"

    def check(v: Any) -> Any:
        if isinstance(v, (bool, np.bool_, str)) or v is None:
            raise Invalid(f"must be a number, got {v!r}")
        if _static_number(v):                   # fast path: one python or numpy scalar
            x = float(v)
            if finite and not math.isfinite(x):
                raise Invalid(f"must be finite, got {x}")
            with np.errstate(invalid="ignore"):
                if ok is not None and not bool(ok(np.float64(x))):
                    raise Invalid(f"{message}, got {x}")
            return x
        try:
            a = np.asarray(v)
        except Exception:
            raise Invalid(f"must be a number, got {v!r}") from None
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise Invalid(f"must be a number, got {v!r}")
        a = a.astype(np.float64)
        if finite:
            bad = ~np.isfinite(a)
            if np.any(bad):
                raise Invalid(f"must be finite, got {_fmt_number(a, bad)}")
        if ok is not None:
            with np.errstate(invalid="ignore"):
                bad = ~np.asarray(ok(a), bool)
            if np.any(bad):
                raise Invalid(f"{message}, got {_fmt_number(a, bad)}")
        return float(a) if isinstance(v, (int, float, np.number)) else v
    return check


# ---------------------------------------------------------------------------------------------
# configs


def field(default: Any = REQUIRED, *, check: Check | None = None, doc: str = "",
          traced: bool = False, choices: Iterable[str] | None = None, spec: bool = True,
          sequence: bool = False) -> Any:
    """A dataclass field carrying its schema entry (the name is filled in by :func:`fields_of`).

    ``choices`` without ``check`` makes the check :func:`choice`\\ (choices).
    """
    choices = None if choices is None else tuple(choices)
    if check is None and choices is not None:
        check = choice(choices)
    entry = Field("", default, check, doc, traced, choices, spec, sequence)
    if default is REQUIRED:
        return dataclasses.field(metadata={"schema": entry})
    return dataclasses.field(default=default, metadata={"schema": entry})


_FIELDS_CACHE: dict[type, tuple[Field, ...]] = {}


def fields_of(cls: type) -> tuple[Field, ...]:
    """The schema fields of a config dataclass, in declaration order."""
    out = _FIELDS_CACHE.get(cls)
    if out is None:
        out = tuple(f.metadata["schema"].replace(name=f.name) for f in dataclasses.fields(cls)
                    if "schema" in f.metadata)
        _FIELDS_CACHE[cls] = out
    return out


def check_config(obj: Any) -> None:
    """Check every schema field of a frozen config dataclass in declaration order; raise the first
    problem as ``ConfigError("<name>: <problem>")``; store the normalised values. A traced field
    (whose check also takes arrays of run values) holds one static number in a config."""
    for f in fields_of(type(obj)):
        v = getattr(obj, f.name)
        v2, problem = f.check_static(v)
        if problem is not None:
            raise ConfigError(f"{f.name}: {problem}")
        if v2 is not v:
            object.__setattr__(obj, f.name, v2)


def require(name: str, value: Any, check: Check) -> Any:
    """The normalised value, or ``ConfigError("<name>: <problem>")``: one check of an argument
    that is not a config field (e.g. ``progress``, a Layout's strategy)."""
    try:
        return check(value)
    except Invalid as e:
        raise ConfigError(f"{name}: {e.args[0]}") from None


def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise ``ConfigError("<name>: ...")`` unless value is an integer >= minimum (numpy integers
    accepted, bools rejected): the one integer check of arguments."""
    require(name, value, integer(minimum))


# ---------------------------------------------------------------------------------------------
# many problems at once (spec sections)


def _as_dict(fields: Mapping[str, Field] | Iterable[Field]) -> dict[str, Field]:
    if isinstance(fields, Mapping):
        return dict(fields)
    return {f.name: f for f in fields}


def validate(fields: Mapping[str, Field] | Iterable[Field], mapping: Mapping[str, Any], *,
             where: str = "", required: bool = True) -> list[str]:
    """Every problem of ``mapping`` (scalar values) against ``fields``, one line each, in the
    order: unknown keys (with did-you-mean), bad values, missing required fields.

    where: prefix of the names (``"model"`` gives ``"model.width: ..."``).  required: report
    required fields that are missing.
    """
    fs = _as_dict(fields)
    pre = f"{where}." if where else ""
    problems = []
    for key in mapping:
        if key not in fs:
            problems.append(f"{pre}{key}: unknown key{did_you_mean(key, fs)}")
    for key, v in mapping.items():
        if key in fs:
            _, p = fs[key].check_static(v)
            if p is not None:
                problems.append(f"{pre}{key}: {p}")
    if required:
        for name, f in fs.items():
            if f.required and name not in mapping:
                problems.append(f"{pre}{name}: required")
    return problems


def is_axis(f: Field, value: Any) -> bool:
    """Whether a spec value is a sweep axis: a list, or for a sequence field a non-empty list of
    lists."""
    if f.sequence:
        return isinstance(value, list) and bool(value) and all(isinstance(e, list) for e in value)
    return isinstance(value, list)


def first_problem(fields: Mapping[str, Field] | Iterable[Field], mapping: Mapping[str, Any]
                  ) -> tuple[str, str] | None:
    """(name, problem) of the first bad value of ``mapping`` (keys without a field are ignored),
    in field order; None if all are good."""
    for name, f in _as_dict(fields).items():
        if name in mapping:
            _, p = f.check_value(mapping[name])
            if p is not None:
                return name, p
    return None


def section_fields(section: str, kind: str | None = None) -> dict[str, Field]:
    """The fields a sweep spec section may set: ``"model"``, ``"task"`` (of one ``kind``, or of
    every kind when None) or ``"train"`` (see the module docstring). Imports the config module."""
    if kind is not None and section != "task":
        raise ValueError(f"kind only applies to section 'task', not {section!r}")
    if section == "model":
        from rnn_ntk.model import RNNConfig
        out = {f.name: f for f in fields_of(RNNConfig)}
    elif section == "task":
        from rnn_ntk import tasks
        out = {f.name: f for f in tasks.task_fields(kind)}
    elif section == "train":
        from rnn_ntk import train
        out = {f.name: f for f in fields_of(train.TrainConfig)}
        out.update({f.name: f for f in train.TRAIN_HPARAMS})
    else:
        raise ValueError(f"section must be 'model', 'task' or 'train', got {section!r}"
                         f"{did_you_mean(str(section), ('model', 'task', 'train'))}")
    return {n: f for n, f in out.items() if f.spec}


def between(lo: float | None = None, hi: float | None = None, *, hi_open: bool = False
            ) -> Callable[[np.ndarray], np.ndarray]:
    """Elementwise predicate lo <= a (<= or <) hi for :func:`number`."""
    def ok(a: np.ndarray) -> np.ndarray:
        good = np.ones(a.shape, bool)
        if lo is not None:
            good &= a >= lo
        if hi is not None:
            good &= (a < hi) if hi_open else (a <= hi)
        return good
    return ok


def parse_toml(text: str, source: str, error: Callable[[list[str]], Exception]) -> dict[str, Any]:
    """The parsed TOML of a spec file (sweep or kernel spec).

    Args:
        text: the TOML text.
        source: where it came from (names it in the problem).
        error: the spec's error class, built from a list of problem lines.

    Returns:
        The parsed table; invalid TOML raises ``error(["<source>: invalid TOML: ..."])``.
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error([f"{source}: invalid TOML: {e}"]) from None


def read_spec_file(path: str | os.PathLike, error: Callable[[list[str]], Exception]) -> str:
    """The text of a spec file (sweep or kernel spec); an unreadable file raises
    ``error(["<path>: cannot read spec file (<reason>)"])``."""
    try:
        return Path(path).read_text()
    except OSError as e:
        raise error([f"{path}: cannot read spec file ({e.strerror})"]) from None
