"""Strict JAX settings for every test: rank promotion raises, float64 is available.

x64 is enabled, so arrays made without an explicit dtype are float64 in tests; code under test
that must run in float32 asks for it explicitly. Two host CPU devices are exposed so that the
training engine's device-sharded lane layout is exercised on a CPU-only machine.
"""
import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_num_cpu_devices", 2)
