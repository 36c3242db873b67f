"""Strict JAX settings for every test: rank promotion raises, float64 is available.

x64 is enabled, so arrays made without an explicit dtype are float64 in tests; code under test
that must run in float32 asks for it explicitly. Two host CPU devices are exposed so that the
training engine's device-sharded lane layout is exercised on a CPU-only machine.

Compiled programs are dropped after each test module: a whole session compiles well over a
hundred training programs, and XLA's CPU backend keeps ~500 memory maps per cached program, which
would otherwise exhaust Linux's vm.max_map_count (65530) and abort the session inside a compile
(see rnn_ntk.train.release_compiled).

One persistent JAX compilation cache serves the whole session (every xdist worker and every
``rnn-ntk`` subprocess the tests start, through JAX_COMPILATION_CACHE_DIR): a program dropped
after a module, or compiled again by a CLI subprocess, is loaded instead of compiled. Tests that
count compiles count cache loads as compiles too (train_helpers._count_compiles).
"""
import os
import shutil
import tempfile

# XLA's CPU backend spends most of this suite compiling small programs (LLVM codegen): without
# backend optimisation and with the classic (non-MLIR) fusion emitters it compiles them about 2x
# faster. RNN_NTK_TEST_FAST_COMPILE=0 keeps XLA's defaults (records that two different programs
# compute are then compared bit for bit: train_helpers.EXACT_ACROSS_PROGRAMS). Set before JAX
# creates its backend; xdist workers and subprocesses inherit it.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
if (os.environ.get("RNN_NTK_TEST_FAST_COMPILE", "1") != "0"
        and FAST_COMPILE_FLAGS not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                     FAST_COMPILE_FLAGS]))
    os.environ["RNN_NTK_TEST_ADDED_XLA_FLAGS"] = FAST_COMPILE_FLAGS    # train_helpers.xla_default_env

import jax  # noqa: E402
import pytest  # noqa: E402

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    """The first process of the session (the xdist controller, or the only one) makes the cache
    folder and exports it; xdist workers and subprocesses inherit the environment."""
    if not os.environ.get(_CACHE_ENV):
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="rnn-ntk-test-jax-cache-")
        config._rnn_ntk_cache_dir = os.environ[_CACHE_ENV]
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_unconfigure(config):
    made = getattr(config, "_rnn_ntk_cache_dir", None)
    if made:
        shutil.rmtree(made, ignore_errors=True)
        if os.environ.get(_CACHE_ENV) == made:
            del os.environ[_CACHE_ENV]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n``, ``--dist loadgroup``) each test file runs on one worker, so its
    module-scoped fixtures (trained runs shared by a file's tests) are computed once; files that
    share a session fixture's runs name one ``xdist_group`` explicitly (``pytestmark``)."""
    for item in items:
        if not any(True for _ in item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_num_cpu_devices", 2)


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs_after_module():
    yield
    from rnn_ntk import train
    train.release_compiled(force=True)


@pytest.fixture(scope="session")
def ci_results(tmp_path_factory):
    """``ci_results(*names) -> Path``: one results folder for the whole session into which each
    named experiment is run once at scale 'ci' (on first request). The experiment tests and the
    CLI's reproduce/figures tests share these runs instead of each training its own; tests that
    run an experiment again into it check that nothing is recomputed (the resume rule), and write
    figures and RESULTS.md into their own tmp_path."""
    from rnn_ntk.reproduce import load_experiment

    root = tmp_path_factory.mktemp("ci_results")
    done: set[str] = set()

    def get(*names: str):
        for name in names:
            if name not in done:
                load_experiment(name).run(root, "ci")
                done.add(name)
        return root

    return get


@pytest.fixture
def rerun_changes_nothing():
    """``check(exp, res, pattern="**/*") -> files``: the experiment's stored files under
    ``res/exp.NAME`` matching ``pattern``, after checking that running ``exp`` again at scale
    'ci' rewrites none of them and adds none (the resume rule: finished pieces are reused)."""
    def stored(exp, res, pattern):
        return sorted(p for p in (res / exp.NAME).glob(pattern) if p.is_file())

    def check(exp, res, pattern="**/*"):
        files = stored(exp, res, pattern)
        stamps = [p.stat().st_mtime_ns for p in files]
        exp.run(res, "ci")
        assert stored(exp, res, pattern) == files
        assert [p.stat().st_mtime_ns for p in files] == stamps
        return files
    return check
