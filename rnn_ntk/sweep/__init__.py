"""Sweeps from a TOML file: spec -> validated :class:`Plan` -> chunks of lanes -> result store.

Modules: :mod:`~rnn_ntk.sweep.spec` (TOML -> validated Spec; override), :mod:`~rnn_ntk.sweep.plan`
(runs, configs, programs, chunks; pure), :mod:`~rnn_ntk.sweep.cost` (the one cost model: flops,
seconds, bytes, memory; imports no other rnn_ntk module), :mod:`~rnn_ntk.sweep.execute` (prepare,
execute, run_sweep), :mod:`~rnn_ntk.sweep.shard` (``--shard I/N``: cost-balanced chunk shares of
one store, its status) and :mod:`~rnn_ntk.sweep.demo`. Every public name of those modules is an
attribute of this package, imported on first use (so ``import rnn_ntk.sweep.cost`` loads neither
the planner nor the executor); setting one (``monkeypatch.setattr(sweep, "PROGRESS_MIN_RUN_S",
0)``) sets it in the module that owns it. ``rnn_ntk.sweep.execute`` is the function; import the
module's other names with ``from rnn_ntk.sweep.execute import ...``.

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
(``--max-memory``), at most ``chunk_size`` lanes and about ``cost.TARGET_CHUNK_S`` of estimated work;
each finished chunk is written atomically to the store (:mod:`rnn_ntk.store`), so ``--resume``
skips finished runs. One writer per output directory: :func:`run_sweep` (and the CLI) hold
:func:`rnn_ntk.store.lock_store` from opening the store to the last chunk. Nothing here prints:
the CLI reports progress through ``on_chunk`` (per chunk) and ``on_step`` (run-steps, from
``train.train_many``'s progress reports, every :func:`progress_every` logs of each run, or at
the chunk's end for runs too short to be worth a report).
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "spec": ("SECTIONS", "TOP_KEYS", "SWEEP_KEYS", "SHARED", "MAX_SEED", "CATALOGUE", "SpecError",
             "Axis", "Spec", "coord_value", "jsonable", "parse_spec", "load_spec", "override_spec"),
    "plan": ("Run", "key_coord", "expand_runs", "build_config", "fixed_lanes", "lane_values",
             "choose_width_groups", "Program", "Chunk", "Plan", "versions", "chunk_memory",
             "chunk_budget", "make_plan", "describe_plan"),
    "cost": ("COMPILE_S", "FLOPS", "F64_SLOWDOWN", "STEP_OVERHEAD_S", "CHUNK_OVERHEAD_S",
             "TARGET_CHUNK_S", "MEMORY_FRACTION", "PROGRESS_INTERVAL_S", "PROGRESS_MIN_RUN_S",
             "compile_seconds", "run_flops", "run_seconds", "progress_every", "output_bytes",
             "run_bytes", "device_memory", "memory_source", "available_memory", "parse_size"),
    "execute": ("run_chunk", "Summary", "prepare", "prepare_distributed", "execute", "run_sweep",
                "chunk_checkpoint", "adopt_checkpoints"),
    "shard": ("Shard", "parse_shard", "balance", "chunk_cost", "assignment", "shard_plan",
              "prepare_shard", "store_status", "format_status"),
    "demo": ("DEMO_SPEC", "demo_spec"),
}
_OWNER = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]


def _owner(name: str) -> types.ModuleType:
    return importlib.import_module(f"{__name__}.{_OWNER[name]}")


def __getattr__(name: str) -> Any:
    if name not in _OWNER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(_owner(name), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_OWNER))


_ORIGINAL: dict[str, Any] = {}     # owner's value of each re-exported name before it was first set


class _Package(types.ModuleType):
    """Setting a re-exported name sets it in its owning module (where the code reads it);
    deleting it restores the owner's original value (so monkeypatching tools that undo by
    delattr, e.g. pytest >= 9.2 for names absent from the package's own __dict__, work)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _OWNER:
            super().__setattr__(name, value)
        elif not (isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}"):
            owner = _owner(name)
            _ORIGINAL.setdefault(name, getattr(owner, name))
            setattr(owner, name, value)
        # else: the import system binding submodule `execute`; the function keeps the name

    def __delattr__(self, name: str) -> None:
        if name in _OWNER and name in _ORIGINAL:
            setattr(_owner(name), name, _ORIGINAL.pop(name))
        else:
            super().__delattr__(name)


sys.modules[__name__].__class__ = _Package
