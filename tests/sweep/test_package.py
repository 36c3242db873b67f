"""The rnn_ntk.sweep package: every name it had as one module, imported lazily from the module
that owns it, and set there when set on the package."""
import ast
import importlib
import subprocess
import sys
import types

import pytest

import rnn_ntk.sweep.execute  # noqa: F401  (the submodule must not shadow the function execute)
from rnn_ntk import sweep, train
from rnn_ntk.sweep import cost
from sweep_helpers import parse

# the public names of rnn_ntk/sweep.py before the split (less the names it imported)
FORMER_NAMES = (
    "SECTIONS", "TOP_KEYS", "SWEEP_KEYS", "SHARED", "MAX_SEED", "COMPILE_S", "FLOPS",
    "F64_SLOWDOWN", "STEP_OVERHEAD_S", "CHUNK_OVERHEAD_S", "TARGET_CHUNK_S", "MEMORY_FRACTION",
    "PROGRESS_INTERVAL_S", "PROGRESS_MIN_RUN_S", "SpecError", "CATALOGUE", "Axis", "Spec",
    "coord_value", "parse_spec", "load_spec", "override_spec", "Run", "key_coord", "expand_runs",
    "build_config", "run_flops", "run_seconds", "progress_every", "output_bytes",
    "choose_width_groups", "Program", "Chunk", "Plan", "available_memory", "parse_size",
    "make_plan", "describe_plan", "versions", "run_chunk", "Summary", "prepare", "execute",
    "run_sweep", "DEMO_SPEC", "demo_spec",
)


def test_every_former_name_is_the_owning_modules_object():
    assert set(FORMER_NAMES) <= set(sweep.__all__) <= set(dir(sweep))
    for name in sweep.__all__:
        owners = [m for m in ("spec", "plan", "cost", "execute", "shard", "demo")
                  if name in importlib.import_module(f"rnn_ntk.sweep.{m}").__all__]
        assert len(owners) == 1, (name, owners)
        assert getattr(sweep, name) is getattr(importlib.import_module(
            f"rnn_ntk.sweep.{owners[0]}"), name)
    assert callable(sweep.execute) and not isinstance(sweep.execute, types.ModuleType)
    from rnn_ntk.sweep import execute
    assert execute is sweep.execute
    assert train.run_bytes is cost.run_bytes            # one cost model
    assert not hasattr(sweep, "no_such_name")


def test_the_cost_model_imports_neither_planner_nor_executor():
    code = ("import sys, rnn_ntk.train; "
            "print(sorted(m for m in sys.modules if m.startswith('rnn_ntk.sweep')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ast.literal_eval(out.stdout.strip()) == ["rnn_ntk.sweep", "rnn_ntk.sweep.cost"]


def test_setting_a_name_on_the_package_sets_it_where_it_is_read(monkeypatch):
    cfg = sweep.build_config(parse(), (), 4)
    before = cost.PROGRESS_MIN_RUN_S
    assert sweep.progress_every(cfg, "cpu") == 0        # a tiny run reports at its chunk's end
    monkeypatch.setattr(sweep, "PROGRESS_MIN_RUN_S", 0.0)
    monkeypatch.setattr(sweep, "PROGRESS_INTERVAL_S", 1e-9)
    assert cost.PROGRESS_MIN_RUN_S == 0.0 == sweep.PROGRESS_MIN_RUN_S
    assert sweep.progress_every(cfg, "cpu") == 1        # now every log
    monkeypatch.undo()
    assert cost.PROGRESS_MIN_RUN_S == before and sweep.progress_every(cfg, "cpu") == 0


def test_deleting_a_set_name_restores_the_owners_value():
    """Undo by delattr (pytest >= 9.2's monkeypatch for names not in the package's __dict__):
    the owning module gets its original value back, and the package reads it again."""
    execute_mod = importlib.import_module("rnn_ntk.sweep.execute")     # the module, not the function
    original = execute_mod.run_sweep
    fake = object()
    sweep.run_sweep = fake
    assert execute_mod.run_sweep is fake and sweep.run_sweep is fake
    sweep.run_sweep = object()                          # a second set keeps the first original
    del sweep.run_sweep
    assert execute_mod.run_sweep is original and sweep.run_sweep is original
    with pytest.raises(AttributeError):
        del sweep.run_sweep                             # nothing set: nothing to delete
