"""Tangent kernels of the Elman RNN: empirical (finite width) and infinite-width NNGP/NTK."""
from rnn_ntk.kernels.empirical import empirical_nngp, empirical_ntk
from rnn_ntk.kernels.infinite import infinite_kernels

__all__ = ["empirical_nngp", "empirical_ntk", "infinite_kernels"]
