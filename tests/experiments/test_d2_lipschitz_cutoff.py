"""D2 (activation-Lipschitz cutoff): the pieces against independent computations, and the
experiment end to end at scale 'ci'."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_ntk import model
from rnn_ntk.reproduce import VERDICTS, load_arrays, load_experiment


d2 = load_experiment("d2_lipschitz_cutoff")


def _direct_f(params, x_TD, alpha, drive):
    """Last output of the diagonal tanh RNN by a plain python loop (no model code)."""
    m, d = params["U"].shape
    su = drive * math.sqrt(d)
    h = jnp.zeros(m, x_TD.dtype)
    for t in range(x_TD.shape[0]):
        h = jnp.tanh(alpha * params["W"] * h + (su / math.sqrt(d)) * (params["U"] @ x_TD[t]))
    return (1.0 / math.sqrt(m)) * (params["v"][:, 0] @ h)


@pytest.fixture(scope="module")
def small():
    m, n, T = 12, 3, 9
    cfg = d2.model_config(m)
    params = d2.init_with(cfg, jax.random.key(4), "sign", jnp.float64)
    x = d2.input_sequences(0, n, T)
    return cfg, params, x


@pytest.mark.parametrize("alpha,drive", [(0.9, 1.0), (1.3, 0.1)])
def test_gradient_norms_match_a_direct_loop_and_respect_lengths(small, alpha, drive):
    cfg, params, x = small
    n, T, _ = x.shape
    sc = d2.scales_for(cfg, alpha, drive, jnp.float64)
    lengths = jnp.asarray([T, 4, 6], jnp.int32)
    gW, gU = d2.gradient_norms(cfg, params, x, lengths, sc)
    for i in range(n):
        xi = x[i, :int(lengths[i])]
        g = jax.grad(lambda p: _direct_f({**params, **p}, xi, alpha, drive))(
            {"W": params["W"], "U": params["U"]})
        np.testing.assert_allclose(gW[i], np.linalg.norm(g["W"]), rtol=1e-10)
        np.testing.assert_allclose(gU[i], np.linalg.norm(g["U"]), rtol=1e-10)


def test_ntk_diagonal_is_the_squared_gradient_norm(small):
    cfg, params, x = small
    n, T, _ = x.shape
    sc = d2.scales_for(cfg, 1.1, 1.0, jnp.float64)
    kd = d2.ntk_diagonal(cfg, params, x, sc)
    gW, gU = d2.gradient_norms(cfg, params, x, jnp.full((n,), T, jnp.int32), sc)
    np.testing.assert_allclose(kd, np.asarray(gW) ** 2 + np.asarray(gU) ** 2, rtol=1e-9)


def test_sensitivity_matches_the_direct_input_jacobian_and_the_lipschitz_bound(small):
    cfg, params, x = small
    n, T, d = x.shape
    for alpha, drive in ((0.5, 1.0), (1.3, 0.1)):
        sc = d2.scales_for(cfg, alpha, drive, jnp.float64)
        S = np.asarray(d2.sensitivity(cfg, params, x, sc))
        assert S.shape == (n, T)
        m = params["b"].shape[0]
        # per unit |d h_T,i / d h_{T-k},i| <= alpha^k and |tanh'| <= 1, so
        # S_k <= alpha^k (drive / sqrt(m)) sum_i |v_i| ||U_i||
        bound = drive / math.sqrt(m) * float(np.sum(np.abs(params["v"][:, 0])
                                                    * np.linalg.norm(params["U"], axis=1)))
        for i in range(n):
            g = jax.grad(lambda xx: _direct_f(params, xx, alpha, drive))(x[i])   # (T, d)
            want = np.linalg.norm(np.asarray(g), axis=1)[::-1]
            np.testing.assert_allclose(S[i], want, rtol=1e-10)
            assert np.all(S[i] <= alpha ** np.arange(T) * bound * (1 + 1e-12))


def test_init_with():
    cfg = d2.model_config(64)
    key = jax.random.key(0)
    g = d2.init_with(cfg, key, "gaussian", jnp.float64)
    s = d2.init_with(cfg, key, "sign", jnp.float64)
    np.testing.assert_array_equal(np.abs(s["W"]), 1.0)
    np.testing.assert_array_equal(np.sign(s["W"]), np.sign(g["W"]))
    np.testing.assert_array_equal(s["U"], g["U"])
    assert 0.2 < np.mean(np.asarray(s["W"]) > 0) < 0.8
    with pytest.raises(ValueError, match="init"):
        d2.init_with(cfg, key, "orthogonal", jnp.float64)


def test_drive_is_the_input_standard_deviation():
    """g_1 = s_u/sqrt(d) U x_1 with s_u = drive sqrt(d): its variance over units is drive^2."""
    m = 8000
    cfg = d2.model_config(m)
    p = d2.init_with(cfg, jax.random.key(1), "sign", jnp.float64)
    x = d2.input_sequences(0, 2, 1)
    for drive in d2.DRIVES:
        sc = d2.scales_for(cfg, 1.0, drive, jnp.float64)
        g = model.forward(cfg, p, x, scales=sc)[1][:, 0, :]
        np.testing.assert_allclose(np.var(np.asarray(g), axis=1), drive ** 2, rtol=0.05)


def test_steps_to_threshold():
    loss = np.array([[1.0, 0.5, 0.09, 0.01],      # reached at log 2
                     [2.0, 1.9, 1.0, 0.5],        # never (needs <= 0.2)
                     [1.0, np.nan, 0.05, 0.0],    # NaN never counts; reached at log 2
                     [1.0, 0.1, 1.0, 1.0]])       # exactly 0.1 x initial counts
    np.testing.assert_array_equal(d2.steps_to_threshold(loss, 10), [20.0, np.nan, 20.0, 10.0])


def test_lag_ratio():
    r, lc, sc = d2.lag_ratio(np.array([100.0, 300.0, 200.0]), np.array([10.0, 20.0, 30.0]), 1000)
    assert (r, lc, sc) == (10.0, False, False)
    r, lc, sc = d2.lag_ratio(np.array([np.nan, np.nan, 50.0]), np.array([10.0, 20.0, 30.0]), 1000)
    assert r == 50.0 and lc and not sc
    r, lc, sc = d2.lag_ratio(np.array([np.nan] * 3), np.array([np.nan, np.nan, 10.0]), 1000)
    assert r == 1.0 and lc and sc


def test_ci_end_to_end(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(d2.NAME)                        # d2.run(res, "ci"), shared with other tests
    stored = rerun_changes_nothing(d2, res, "*.npz")
    assert len(stored) == len(d2.VARIANTS) + len(d2.ALPHAS)
    paths = d2.figures(res, tmp_path / "figures")
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
    cl = d2.claims(res)
    assert len(cl) == 4 * len(d2.DRIVES) + 1
    assert all(c.verdict in VERDICTS and c.experiment == d2.NAME for c in cl)
    # the training used the normalised step and did not diverge at this size
    a, _ = load_arrays(res / d2.NAME / "train_alpha1.npz")
    assert np.all(a["lr"] > 0) and not a["diverged"].any()
    assert np.all(a["train_loss"][:, -1] < a["train_loss"][:, 0])


def test_claims_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the experiment first"):
        d2.claims(tmp_path)
