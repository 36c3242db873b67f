"""Finite-width kernels converge to the infinite-width ones at rate width^-1/2.

For widths 32..512 (zero-padded nets of array width 512 run at their true width through traced
scales, so one compilation serves every width) and 16 independent draws per width, the relative
Frobenius error of a single draw's empirical NTK to the infinite-width NTK, averaged over the
draws, is fitted against the width on log-log axes; likewise for the finite-width NNGP given the
hidden layer, (s_v^2 / m) <hbar, hbar'> = E_v[f f'] (the v-only NTK of the same draw). The slopes
must lie in [-0.65, -0.35] and the error at the largest width must be small. Fixed keys: this is
deterministic; the chosen sizes keep the slope more than two bootstrap standard errors inside the
interval (checked over several other key choices when the test was written).
"""
import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import stats
from rnn_ntk.kernels.empirical import empirical_ntk
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.model import RNNConfig, Scales, init_params

WIDTHS = (32, 64, 128, 256, 512)
SEEDS = 16


def _relative_errors(K_S, K_inf):
    diff = np.asarray(K_S) - np.asarray(K_inf)[None]
    return np.linalg.norm(diff.reshape(diff.shape[0], -1), axis=1) / np.linalg.norm(K_inf)


def test_empirical_kernels_converge_like_inverse_sqrt_width():
    M = max(WIDTHS)
    cfg = RNNConfig(width=M, input_dim=3, activation="erf", readout="last", sigma_w=1.0,
                    sigma_b=0.3)
    x = jax.random.normal(jax.random.key(100), (5, 4, 3), jnp.float64)
    nngp, ntk = (np.asarray(a) for a in infinite_kernels(cfg, x))
    err_ntk, err_nngp = [], []
    for m in WIDTHS:
        keys = jax.random.split(jax.random.fold_in(jax.random.key(0), m), SEEDS)
        params = jax.vmap(lambda k: init_params(cfg, k, jnp.float64, array_width=M, width=m))(keys)
        sc = Scales(cfg.sigma_w, cfg.sigma_u, cfg.sigma_b, cfg.sigma_v, float(m))
        K = empirical_ntk(cfg, params, x, scales=sc)
        Kv = empirical_ntk(cfg.replace(trainable=("v",)), params, x, scales=sc)
        err_ntk.append(_relative_errors(K, ntk))
        err_nngp.append(_relative_errors(Kv, nngp))
    for name, err in (("ntk", err_ntk), ("nngp", err_nngp)):
        err_SX = np.stack(err, axis=1)
        fit = stats.fit_power_law(WIDTHS, err_SX, n_boot=500)
        assert -0.65 <= fit.slope <= -0.35, (name, str(fit))
        assert err_SX[:, -1].mean() < 0.15, (name, err_SX.mean(axis=0))
        assert err_SX[:, 0].mean() > 2.5 * err_SX[:, -1].mean(), (name, err_SX.mean(axis=0))
