"""Tangent kernels of the Elman RNN: empirical (finite width) and infinite-width NNGP/NTK."""
