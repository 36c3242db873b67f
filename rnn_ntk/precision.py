"""Matrix-product precision: one scoped setting for the code that needs full float32 accuracy.

On NVIDIA Ampere/Hopper GPUs XLA may compute float32 matrix products in TF32 (a 10-bit mantissa)
unless a product asks for ``Precision.HIGHEST``; that costs kernels and closed-form dynamics about
three significant digits. The library therefore fixes the precision of every product it traces:

* kernels (empirical and infinite), ``linearize``, ``dynamics`` and the kernel-drift metric of
  training run under :func:`highest_precision` (full float32 on every backend), whatever the
  user's global ``jax_default_matmul_precision``;
* training runs under ``TrainConfig.matmul_precision`` (:data:`MATMUL_PRECISIONS`, default
  'highest'; 'tensorfloat32' or 'default' trade accuracy for speed on GPUs).

The setting is JAX's ``jax.default_matmul_precision`` context, entered while a function is
*traced*: every ``dot_general`` traced inside it records the precision explicitly (its lowered
StableHLO reads ``precision = [HIGHEST, HIGHEST]``), and jit caches key on it, so a program traced
under one setting is never reused under another. An explicit ``precision=`` argument of a product
still wins over the scope. On CPU all three settings compute the same full float32 products.

    @highest_precision
    def my_kernel(...): ...                    # every product traced inside is HIGHEST

    @with_matmul_precision(cfg.matmul_precision)
    def train(key, hparams): ...
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import jax

__all__ = ["MATMUL_PRECISIONS", "PRECISION_TOKENS", "check_matmul_precision", "highest_precision",
           "with_matmul_precision"]

F = TypeVar("F", bound=Callable[..., Any])

#: Names accepted for ``TrainConfig.matmul_precision`` (JAX's names): 'highest' = full float32,
#: 'tensorfloat32' = TF32 products where the hardware has them, 'default' = the backend's default
#: (TF32 on Ampere/Hopper GPUs, bfloat16 passes on TPUs).
MATMUL_PRECISIONS = ("highest", "tensorfloat32", "default")

#: The ``precision = [X, X]`` token a ``dot_general`` traced under each setting carries in the
#: lowered StableHLO text (``jax.jit(f).lower(...).as_text()``).
PRECISION_TOKENS = {"highest": "HIGHEST", "tensorfloat32": "HIGH", "default": "DEFAULT"}


def check_matmul_precision(name: Any) -> str:
    """Validate a precision name (one of :data:`MATMUL_PRECISIONS`).

    Args:
        name: the requested setting.
    Returns:
        ``name`` unchanged.
    Raises:
        ValueError: one line naming the allowed values.
    """
    if not isinstance(name, str) or name not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul_precision must be one of {list(MATMUL_PRECISIONS)}, got {name!r}")
    return name


def with_matmul_precision(name: str) -> Callable[[F], F]:
    """Decorator: run (and so trace) the function under ``jax.default_matmul_precision(name)``.

    Args:
        name: one of :data:`MATMUL_PRECISIONS` (checked when the decorator is made).
    Returns:
        A decorator; the wrapped function keeps its name, docstring and signature.
    """
    check_matmul_precision(name)

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with jax.default_matmul_precision(name):
                return fn(*args, **kwargs)
        return wrapped  # type: ignore[return-value]

    return decorate


#: Decorator: every matrix product traced inside the function is full float32 (HIGHEST).
highest_precision = with_matmul_precision("highest")
