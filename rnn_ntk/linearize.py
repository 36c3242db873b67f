"""The linearised (first-order Taylor) network around its initial parameters.

    f_lin(theta, x) = f(theta_0, x) + J(theta_0, x) (theta - theta_0)

computed with one forward-mode product (jax.jvp), never the Jacobian itself.
"""
from __future__ import annotations

from typing import Callable

import jax

from rnn_ntk.model import Params, RNNConfig, Scales, apply
from rnn_ntk.precision import highest_precision

__all__ = ["linearize"]


def linearize(cfg: RNNConfig, params0: Params, *, scales: Scales | None = None
              ) -> Callable[..., jax.Array]:
    """Return ``f_lin(params, x, lengths=None)``: the exact first-order model around ``params0``.

    Works for every readout and trainable subset (groups that do not move contribute nothing,
    since their displacement is zero). Output shapes are those of :func:`rnn_ntk.apply`.
    """

    @highest_precision
    def f_lin(params: Params, x_NTD: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        def f(p: Params) -> jax.Array:
            return apply(cfg, p, x_NTD, lengths, scales=scales)

        tangent = jax.tree.map(lambda a, a0: a - a0, params, params0)
        y0, dy = jax.jvp(f, (params0,), (tangent,))
        return y0 + dy

    return f_lin
