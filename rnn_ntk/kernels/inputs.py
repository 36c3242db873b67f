"""Input checks shared by the empirical and infinite-width kernels (one place, one message each).

Every check raises ``ValueError`` with a one-line message before any compute.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_x", "check_lengths", "check_batches"]


def check_x(name: str, x: Any, input_dim: int) -> tuple[int, int]:
    """Check that ``x`` is a batch of sequences (n, T, d) with n, T >= 1 and d = ``input_dim``.

    Args:
        name: the argument's name, for the message ('x1', 'x2').
        x: array-like (numpy, jax, traced), shape (n, T, d).
        input_dim: the model's token dimension d.

    Returns:
        (n, T).
    """
    shape = tuple(np.shape(x))
    if len(shape) != 3:
        raise ValueError(f"{name} must have shape (n, T, d), got shape {shape}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{name} must have n >= 1 sequences of T >= 1 steps, got shape {shape}")
    if shape[2] != input_dim:
        raise ValueError(f"{name} has token dimension {shape[2]}, but cfg.input_dim is {input_dim}")
    return shape[0], shape[1]


def check_lengths(name: str, lengths: Any, n: int, T: int) -> np.ndarray | jax.Array:
    """Check per-sequence lengths of a padded batch: shape (n,), an integer dtype, values in [1, T].

    Floats are refused even when integral (one rule for every kernel). Traced lengths are checked
    for shape and dtype only (their values are unknown at trace time).

    Args:
        name: the argument's name, for the message ('lengths1', 'lengths2').
        lengths: None (every sequence has length T) or array-like (n,) of integers.
        n, T: the batch size and the padded length of the matching x.

    Returns:
        int32 lengths (n,): a numpy array, or a jax array when ``lengths`` is traced.
    """
    if lengths is None:
        return np.full((n,), T, dtype=np.int32)
    shape = tuple(np.shape(lengths))
    if shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one length per sequence), got {shape}")
    dtype = lengths.dtype if hasattr(lengths, "dtype") else np.asarray(lengths).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{name} must have an integer dtype, got {dtype}")
    if isinstance(lengths, jax.core.Tracer):
        return jnp.asarray(lengths, jnp.int32)
    arr = np.asarray(lengths)
    if arr.min() < 1 or arr.max() > T:
        raise ValueError(f"{name} must lie in [1, {T}], got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int32)


def check_batches(x1: Any, x2: Any, lengths1: Any, lengths2: Any, input_dim: int
                  ) -> tuple[int, int, Any, int, int, Any]:
    """Check the (x1, x2, lengths1, lengths2) of a kernel call; x2=None means x2 = x1.

    Returns:
        (n1, T1, lengths1, n2, T2, lengths2) with int32 lengths from :func:`check_lengths`;
        for x2=None, (n2, T2, lengths2) repeat x1's.
    """
    n1, T1 = check_x("x1", x1, input_dim)
    l1 = check_lengths("lengths1", lengths1, n1, T1)
    if x2 is None:
        if lengths2 is not None:
            raise ValueError("lengths2 was given without x2 (x2=None uses x1 and lengths1)")
        return n1, T1, l1, n1, T1, l1
    n2, T2 = check_x("x2", x2, input_dim)
    return n1, T1, l1, n2, T2, check_lengths("lengths2", lengths2, n2, T2)
