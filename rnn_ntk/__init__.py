"""rnn_ntk: neural-tangent-kernel analysis of Elman RNNs on current JAX."""
from rnn_ntk.model import (
    ConfigError,
    ElmanRNN,
    RNNConfig,
    Scales,
    apply,
    hidden_states,
    init_params,
    ntk_lr_to_paper,
    paper_lr_to_ntk,
)
from rnn_ntk.dynamics import gradient_descent_mse
from rnn_ntk.linearize import linearize
from rnn_ntk.store import load_results

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "ElmanRNN", "RNNConfig", "Scales", "apply", "hidden_states", "init_params",
    "gradient_descent_mse", "linearize", "load_results", "ntk_lr_to_paper", "paper_lr_to_ntk", "__version__",
]
