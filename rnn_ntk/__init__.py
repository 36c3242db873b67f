"""rnn_ntk: neural-tangent-kernel analysis of Elman RNNs on current JAX.

The public names below are loaded on first use (PEP 562 module ``__getattr__``): ``import
rnn_ntk`` and ``rnn-ntk --help`` do not import jax, flax or xarray; ``rnn_ntk.RNNConfig`` does.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY = {
    "ConfigError": "model", "ElmanRNN": "model", "RNNConfig": "model", "Scales": "model",
    "apply": "model", "hidden_states": "model", "init_params": "model",
    "ntk_lr_to_paper": "model", "paper_lr_to_ntk": "model",
    "gradient_descent_mse": "dynamics",
    "linearize": "linearize",
    "load_results": "store",
}

__all__ = [
    "ConfigError", "ElmanRNN", "RNNConfig", "Scales", "apply", "hidden_states", "init_params",
    "gradient_descent_mse", "linearize", "load_results", "ntk_lr_to_paper", "paper_lr_to_ntk", "__version__",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access and cache the attribute.

    A submodule (``rnn_ntk.sweep``, ...) is imported on first attribute access too, as the eager
    imports used to make ``import rnn_ntk; rnn_ntk.model`` work."""
    mod = _LAZY.get(name)
    if mod is not None:
        value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``rnn_ntk.linearize`` is the function, also once the submodule of that name is imported:
    the import system binds a loaded submodule as an attribute of its package, which would
    otherwise shadow the function (the eager imports used to rebind it)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (isinstance(value, types.ModuleType) and _LAZY.get(name) == name
                and value.__name__ == f"{__name__}.{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # static tools see the real names
    from rnn_ntk.dynamics import gradient_descent_mse
    from rnn_ntk.linearize import linearize
    from rnn_ntk.model import (ConfigError, ElmanRNN, RNNConfig, Scales, apply, hidden_states,
                               init_params, ntk_lr_to_paper, paper_lr_to_ntk)
    from rnn_ntk.store import load_results
