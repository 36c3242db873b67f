"""linearize: the exact first-order Taylor model around params0."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_ntk
from rnn_ntk.linearize import linearize
from rnn_ntk.model import RNNConfig, init_params


def _flat_jacobian(cfg, params, x):
    """Brute-force Jacobian of apply with respect to the trainable groups, (outputs, P)."""
    groups = cfg.trainable

    def f(sub):
        return rnn_ntk.apply(cfg, {**params, **sub}, x).ravel()

    jac = jax.jacrev(f)({g: params[g] for g in groups})
    return jnp.concatenate([jac[g].reshape(jac[g].shape[0], -1) for g in groups], axis=1)


@pytest.mark.parametrize("readout", ["last", "all", "mean"])
@pytest.mark.parametrize("trainable", [("W",), ("U", "b"), ("W", "U", "b", "v")])
def test_flin_is_first_order_taylor(readout, trainable):
    cfg = RNNConfig(width=6, input_dim=2, output_dim=2, activation="tanh", readout=readout,
                    sigma_b=0.3, trainable=trainable)
    p0 = init_params(cfg, jax.random.key(0), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (3, 4, 2), jnp.float64)
    f_lin = linearize(cfg, p0)
    np.testing.assert_allclose(f_lin(p0, x), rnn_ntk.apply(cfg, p0, x), rtol=1e-14)

    # moved parameters: f_lin = f0 + J dtheta with the brute-force Jacobian
    dp = {g: (0.1 * jax.random.normal(jax.random.fold_in(jax.random.key(2), i), a.shape, a.dtype)
              if g in trainable else jnp.zeros_like(a)) for i, (g, a) in enumerate(p0.items())}
    p1 = jax.tree.map(jnp.add, p0, dp)
    J = _flat_jacobian(cfg, p0, x)
    dflat = jnp.concatenate([dp[g].ravel() for g in cfg.trainable])
    expected = rnn_ntk.apply(cfg, p0, x).ravel() + J @ dflat
    np.testing.assert_allclose(f_lin(p1, x).ravel(), expected, rtol=1e-11, atol=1e-12)

    # its gradient (at any point) is the network's Jacobian at params0
    def scalar(p, fn):
        return jnp.sum(fn(p, x) * jnp.arange(1.0, fn(p, x).size + 1).reshape(fn(p, x).shape))

    g_lin = jax.grad(scalar)(p1, f_lin)
    g_net = jax.grad(scalar)(p0, lambda p, x: rnn_ntk.apply(cfg, p, x))
    for g in cfg.trainable:
        np.testing.assert_allclose(g_lin[g], g_net[g], rtol=1e-11, atol=1e-12)


def test_flin_is_affine_in_params():
    cfg = RNNConfig(width=5, input_dim=2, activation="relu", readout="all")
    p0 = init_params(cfg, jax.random.key(3), jnp.float64)
    x = jax.random.normal(jax.random.key(4), (2, 3, 2), jnp.float64)
    f_lin = linearize(cfg, p0)
    d = jax.tree.map(lambda a: jnp.ones_like(a) * 0.3, p0)
    at = lambda s: f_lin(jax.tree.map(lambda a, b: a + s * b, p0, d), x)
    np.testing.assert_allclose(at(2.0) - at(1.0), at(1.0) - at(0.0), rtol=1e-10, atol=1e-12)
