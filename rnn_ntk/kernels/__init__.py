"""Tangent kernels of the Elman RNN: empirical (finite width) and infinite-width NNGP/NTK, Gram
matrices of whole data sets (in blocks, optionally streamed to a store) and solvers on them."""
from rnn_ntk.kernels.empirical import empirical_nngp, empirical_ntk
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.kernels.gram import StoredGram, gram, load_gram
from rnn_ntk.kernels.solve import gd_mse, gp_posterior, gram_solve, kernel_ridge, svc

__all__ = ["StoredGram", "empirical_nngp", "empirical_ntk", "gd_mse", "gp_posterior", "gram",
           "gram_solve", "infinite_kernels", "kernel_ridge", "load_gram", "svc"]
