"""The ``rnn-ntk kernel`` spec: TOML -> validated :class:`KernelSpec` with its data loaded.

Sections: ``[model]`` RNNConfig fields (scalars; ``width`` matters only for method 'empirical',
default 1), ``[data]`` either ``path`` (.npz with ``x`` (n, T, d) and optional ``lengths``,
``y``; or .npy holding x; relative to the spec's folder) or a task of the sweep specs (the
[task] fields of its kind, its traced parameters such as ``eps_x``, and ``seed``; drawn in
float32; the Gram is over the train then the test sequences), ``[kernel]`` kind, method, block,
dtype, compute, seed, order (:data:`KERNEL_FIELDS`).

[model], the [data] task and [kernel] are checked through :mod:`rnn_ntk.schema` like the sweep
spec's sections (``model.width: must be ...``, unknown keys with did-you-mean); every problem is
reported at once as a :class:`KernelSpecError`, before anything is written. The spec file is
read by :func:`rnn_ntk.schema.read_spec_file`, the reader of the sweep specs too.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rnn_ntk import schema
from rnn_ntk.kernels.gram import KINDS, METHODS
from rnn_ntk.model import RNNConfig
from rnn_ntk.schema import Field

__all__ = ["KernelSpec", "KernelSpecError", "KERNEL_FIELDS", "parse_kernel_spec",
           "load_kernel_spec"]

TOP_KEYS = ("name", "description", "model", "data", "kernel")
SHARED = ("input_dim", "output_dim")        # set once, in [model] or in a [data] task
FLOATS = ("float32", "float64")

KERNEL_FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("kind", "ntk", schema.choice(KINDS), "which Gram: 'ntk', 'nngp' or 'both'",
          choices=KINDS),
    Field("method", "infinite", schema.choice(METHODS),
          "'infinite' (width -> inf) or 'empirical' (one parameter draw)", choices=METHODS),
    Field("block", None, schema.integer(1), "rows per block (default: from the sizes)"),
    Field("dtype", "float32", schema.choice(FLOATS), "stored dtype", choices=FLOATS),
    Field("compute", None, schema.choice(FLOATS), "compute dtype (default: dtype)",
          choices=FLOATS),
    Field("seed", 0, schema.integer(0), "parameter draw of method 'empirical'"),
    Field("order", None, schema.integer(1), "quadrature order (default: adaptive)"),
)}
"""The [kernel] section's fields (name, default, check)."""

DATA_SEED = Field("seed", 0, schema.integer(0), "key of the task draw")


class KernelSpecError(ValueError):
    """A kernel spec is invalid; ``problems`` holds one line per problem (all that were found)."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """A validated ``rnn-ntk kernel`` spec with its data loaded.

    cfg: the network.  x (n, T, d), lengths (n,) or None, y or None: the data (for a task: the
    train sequences then the test sequences, ``n_train`` of them first).  kind, method, block,
    dtype (stored), compute ('float32'/'float64'), seed (parameter draw of method 'empirical'),
    order.  info: JSON-able description kept in the store header.
    """

    name: str
    cfg: RNNConfig
    x: np.ndarray
    lengths: np.ndarray | None
    y: np.ndarray | None
    n_train: int
    kind: str
    method: str
    block: int | None
    dtype: str
    compute: str
    seed: int
    order: int | None
    info: dict


@dataclasses.dataclass(frozen=True)
class _Data:
    """The [data] section's arrays: x (n, T, d), lengths (n,) or None, y or None."""

    x: np.ndarray
    lengths: np.ndarray | None
    y: np.ndarray | None
    n_train: int


def _checked(fields: Mapping[str, Field], given: Mapping[str, Any], where: str,
             problems: list[str]) -> dict[str, Any]:
    """``schema.validate`` of a section (no required check; problems appended); returns the
    normalised values of its good keys."""
    problems += schema.validate(fields, given, where=where, required=False)
    out = {}
    for k, v in given.items():
        if k in fields:
            v2, p = fields[k].check_static(v)
            if p is None:
                out[k] = v2
    return out


def _sections(raw: Mapping[str, Any], problems: list[str]) -> dict[str, dict]:
    """Top-level keys and section types: section -> table ({} when absent or not a table)."""
    for key in raw:
        if key not in TOP_KEYS:
            problems.append(f"{key}: unknown top-level key{schema.did_you_mean(key, TOP_KEYS)}")
    for key in ("name", "description"):
        if key in raw and not isinstance(raw[key], str):
            problems.append(f"{key}: must be a string, got {raw[key]!r}")
    sec = {}
    for s in ("model", "data", "kernel"):
        v = raw.get(s, {})
        if not isinstance(v, dict):
            problems.append(f"{s}: must be a table ([{s}]), got {v!r}")
            v = {}
        sec[s] = v
    if "data" not in raw:
        problems.append("data: required ([data] with `path`, or a task `kind`)")
    return sec


def _parse_kernel(given: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """[kernel]: every field's value (given or default); ``compute`` defaults to ``dtype``."""
    kern = {name: f.default for name, f in KERNEL_FIELDS.items()}
    kern.update(_checked(KERNEL_FIELDS, given, "kernel", problems))
    kern["compute"] = kern["compute"] or kern["dtype"]
    return kern


def _load_path(data: Mapping[str, Any], base: str | os.PathLike, problems: list[str]
               ) -> _Data | None:
    """[data] ``path``: a .npz (x, optional lengths, y) or .npy (x) file, relative to base."""
    for k in sorted(set(data) - {"path"}):
        problems.append(f"data.{k}: unknown key with `path` (a file brings x, lengths, y)")
    p = Path(base) / str(data["path"])
    x = lengths = y = None
    try:
        z = np.load(p, allow_pickle=False)      # .npy: an array; .npz: a (closable) archive
        if isinstance(z, np.ndarray):
            x = z
        else:
            with z:
                if "x" not in z.files:
                    problems.append(f"data.path: {p} holds no array 'x' (has {z.files})")
                else:
                    x = z["x"]
                    lengths = z["lengths"] if "lengths" in z.files else None
                    y = z["y"] if "y" in z.files else None
    except (OSError, ValueError) as e:
        problems.append(f"data.path: cannot read {p} ({e})")
    if x is not None and x.ndim != 3:
        problems.append(f"data.path: x must have shape (n, T, d), got {x.shape}")
        x = None
    return None if x is None else _Data(x, lengths, y, int(x.shape[0]))


def _task_values(data: Mapping[str, Any], model: dict[str, Any], problems: list[str]
                 ) -> dict[str, Any] | None:
    """The [data] task's checked values (the sweep's [task] fields of its kind, and ``seed``);
    ``input_dim`` / ``output_dim`` come from [model] or [data] (set once; copied into
    ``model``). None if there were problems."""
    from rnn_ntk import tasks
    kind = data.get("kind")
    fields = dict(schema.section_fields("task", kind=kind if kind in tasks.TASKS else None))
    fields["seed"] = DATA_SEED
    n0 = len(problems)
    vals = _checked(fields, data, "data", problems)
    for name in SHARED:
        if name in data and name in model:
            problems.append(f"data.{name}: set in [model] and in [data]; set it once")
        elif name in model:
            vals[name] = model[name]
        elif name in vals:
            model[name] = vals[name]
    vals.setdefault("target", "all" if model.get("readout") == "all" else "last")
    for name, f in fields.items():
        if f.required and name not in data and name not in vals:
            where = " (set it in [data] or [model])" if name in SHARED else ""
            problems.append(f"data.{name}: required{where}")
    return vals if len(problems) == n0 else None


def _sample_task(data: Mapping[str, Any], model: dict[str, Any], problems: list[str]
                 ) -> _Data | None:
    """[data] task: the train then the test sequences of one draw (float32, the sweeps' default,
    so x is the same whatever ``compute``)."""
    import jax

    from rnn_ntk import tasks
    vals = _task_values(data, model, problems)
    if vals is None:
        return None
    fields = schema.section_fields("task", kind=vals["kind"])
    seed = vals.pop("seed", 0)
    hp = {k: vals.pop(k) for k in list(vals) if fields[k].traced}
    try:
        tcfg = tasks.TaskConfig(**vals)
        d = tasks.sample_task(tcfg, jax.random.key(seed), hp, dtype=np.float32)
    except schema.ConfigError as e:
        problems.append(f"data: {e}")
        return None
    x = np.concatenate([np.asarray(d.x_train), np.asarray(d.x_test)])
    y = np.concatenate([np.asarray(d.y_train), np.asarray(d.y_test)])
    return _Data(x, None, y, tcfg.n_train)


def _parse_data(given: Mapping[str, Any], present: bool, model: dict[str, Any],
                base: str | os.PathLike, problems: list[str]) -> _Data | None:
    """[data]: a file (``path``) or a task (``kind``); its token dimension is model.input_dim
    unless [model] sets it."""
    if "path" in given and "kind" in given:
        problems.append("data: give either `path` or a task `kind`, not both")
        return None
    if "path" in given:
        out = _load_path(given, base, problems)
        if out is not None:
            model.setdefault("input_dim", int(out.x.shape[2]))
        return out
    if "kind" in given:
        return _sample_task(given, model, problems)
    if present:
        problems.append("data: needs `path` (a .npz/.npy file) or a task `kind`")
    return None


def _build_model(model: Mapping[str, Any], bad: bool, kern: Mapping[str, Any],
                 data_failed: bool, problems: list[str]) -> RNNConfig | None:
    """The RNNConfig of the checked [model] values (``bad``: [model] had problems already;
    ``data_failed``: [data] had (reported) problems, so input_dim is not demanded too); width
    defaults to 1 except for method 'empirical'."""
    n0 = len(problems)
    if kern["method"] == "empirical" and "width" not in model:
        problems.append("model.width: required for method 'empirical'")
    if "input_dim" not in model and not data_failed:
        problems.append("model.input_dim: required (or given by the data)")
    if bad or len(problems) > n0 or "input_dim" not in model:
        return None
    try:
        return RNNConfig(**{"width": 1, **model})
    except (schema.ConfigError, TypeError) as e:
        problems.append(f"model: {e}")
        return None


def _check_inputs(cfg: RNNConfig, data: _Data, kern: Mapping[str, Any],
                  problems: list[str]) -> None:
    """The data against the network: token dimension, then the Gram's own input checks."""
    from rnn_ntk.kernels.gram import _prepare
    if data.x.shape[2] != cfg.input_dim:
        problems.append(f"data: x has token dimension {data.x.shape[2]}, but model.input_dim "
                        f"is {cfg.input_dim}")
        return
    try:
        _prepare(cfg, data.x, None, data.lengths, None, kern["kind"], kern["method"],
                 {"b": np.zeros(cfg.width)} if kern["method"] == "empirical" else None,
                 kern["block"], kern["dtype"], kern["order"])
    except ValueError as e:
        problems.append(f"data: {e}")


def parse_kernel_spec(text: str, source: str = "<spec>", *, base: str | os.PathLike = "."
                      ) -> KernelSpec:
    """Parse and check an ``rnn-ntk kernel`` spec and load its data (see the module docstring).

    Args:
        text: the TOML text.
        source: where it came from (names the spec when it has no ``name``).
        base: the folder a [data] ``path`` is relative to.

    Returns:
        The validated :class:`KernelSpec`.

    Raises:
        KernelSpecError: listing every problem found (nothing is written).
    """
    raw = schema.parse_toml(text, source, KernelSpecError)
    problems: list[str] = []
    sec = _sections(raw, problems)
    kern = _parse_kernel(sec["kernel"], problems)
    n0 = len(problems)
    model = _checked(schema.section_fields("model"), sec["model"], "model", problems)
    bad_model = len(problems) > n0
    data = _parse_data(sec["data"], "data" in raw, model, base, problems)
    cfg = _build_model(model, bad_model, kern, data is None, problems)
    if cfg is not None and data is not None and not problems:
        _check_inputs(cfg, data, kern, problems)
    if problems:
        raise KernelSpecError(problems)
    info = {"source": source, "data": dict(sec["data"]), "n_train": int(data.n_train),
            "n": int(data.x.shape[0]), "kernel": kern}
    name = raw.get("name") if isinstance(raw.get("name"), str) else Path(source).stem
    return KernelSpec(name=name, cfg=cfg, x=data.x, lengths=data.lengths, y=data.y,
                      n_train=int(data.n_train), info=info, **kern)


def load_kernel_spec(path: str | os.PathLike) -> KernelSpec:
    """Read and check a spec file (see :func:`parse_kernel_spec`).

    Args:
        path: the spec file; [data] paths are relative to its folder.

    Returns:
        The validated :class:`KernelSpec`.
    """
    p = Path(path)
    return parse_kernel_spec(schema.read_spec_file(p, KernelSpecError), str(p), base=p.parent)
