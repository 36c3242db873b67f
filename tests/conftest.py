"""Strict JAX settings for every test: rank promotion raises, float64 is available.

Tests that need float64 ask for it explicitly with dtype=jnp.float64 (x64 is enabled here, so
the default dtype of new arrays is float64 in tests unless a dtype is given).
"""
import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
