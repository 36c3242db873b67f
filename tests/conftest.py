"""Strict JAX settings for every test: rank promotion raises, float64 is available.

x64 is enabled, so arrays made without an explicit dtype are float64 in tests; code under test
that must run in float32 asks for it explicitly. Two host CPU devices are exposed so that the
training engine's device-sharded lane layout is exercised on a CPU-only machine.

XLA's backend optimisation level is set to 0 for the tests (unless XLA_FLAGS already sets it): the
suite is dominated by compiling many small programs, and level 0 cut the CPU time of
tests/test_train.py from 111 to 82 s and of tests/experiments + tests/kernels + tests/test_sweep.py
from 401 to 306 s (this 2-core machine, same code). Results are compared with tolerances, which
hold at either level.
"""
import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402  (XLA_FLAGS must be set before the backend starts)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_num_cpu_devices", 2)
