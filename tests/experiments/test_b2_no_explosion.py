"""B2 (no exponential explosion): the pieces against independent computations, and the experiment
end to end at scale 'ci'."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from rnn_ntk import model
from rnn_ntk.reproduce import VERDICTS, load_experiment


b2 = load_experiment("b2_no_explosion")


def _direct_states(cfg, params, x, sigma_w, h0, t0, t1):
    """h_{t1} from h_{t0} by a plain python loop over the recurrence (1-indexed steps)."""
    m, d = params["U"].shape
    h = h0
    for t in range(t0 + 1, t1 + 1):
        g = (sigma_w / math.sqrt(m)) * (params["W"] @ h) \
            + (cfg.sigma_u / math.sqrt(d)) * (params["U"] @ x[t - 1]) + cfg.sigma_b * params["b"]
        h = cfg.phi(g)
    return h


@pytest.mark.parametrize("activation,c", [("relu", 1.0), ("relu", 2.0), ("tanh", 0.5)])
def test_backward_sigma_matches_svd_of_the_brute_force_jacobian(activation, c):
    m, T = 10, 7
    cfg = b2.model_config(activation, m)
    params = model.init_params(cfg, jax.random.key(3), jnp.float64)
    x = b2.input_sequences(0, 2, T, dtype=jnp.float64)
    lags = np.array([1, 3, T - b2.START])
    sc = b2.scales_for(cfg, c, m, jnp.float64)
    sig, rel = b2.backward_sigma(cfg, params, x, jnp.asarray(lags), jax.random.key(0), sc,
                                 iters=400)
    sw = math.sqrt(2 * c)
    for i in range(x.shape[0]):
        h_a = _direct_states(cfg, params, x[i], sw, jnp.zeros(m), 0, b2.START)
        for j, k in enumerate(lags):
            J = jax.jacrev(lambda h: _direct_states(cfg, params, x[i], sw, h, b2.START,
                                                    b2.START + int(k)))(h_a)
            s_true = np.linalg.svd(np.asarray(J), compute_uv=False)[0]
            assert sig[i, j] <= s_true * (1 + 1e-9)          # ||J v|| never exceeds sigma_max
            np.testing.assert_allclose(sig[i, j], s_true, rtol=1e-5)
    assert np.all(np.asarray(rel) < 1e-4)


def test_backward_sigma_exact_with_padding():
    """A net zero-padded to a larger array width gives the same spectral norms (ci uses this)."""
    m, M, T = 8, 16, 6
    x = b2.input_sequences(1, 1, T, dtype=jnp.float32)
    lags = jnp.asarray(b2.lag_grid(T))
    out = []
    for arr in (m, M):
        cfg = b2.model_config("relu", arr)
        sig, _ = b2.backward_sigma(cfg, b2.seed_params(m, 0, arr), x, lags, jax.random.key(1),
                                   b2.scales_for(cfg, 1.0, m, jnp.float32), iters=200)
        out.append(np.asarray(sig))
    np.testing.assert_allclose(out[0], out[1], rtol=1e-3)


def test_safe_normalise_handles_extreme_scales():
    u = jnp.asarray([[1e-30, 2e-30, 0.0], [3e30, -4e30, 0.0], [0.0, 0.0, 0.0]], jnp.float32)
    v, n = b2._safe_normalise(u)
    np.testing.assert_allclose(np.asarray(n), [math.sqrt(5) * 1e-30, 5e30, 0.0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(v[1]), [0.6, -0.8, 0.0], rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(v)))


def test_mean_field_relu_is_the_closed_form():
    rng = np.random.default_rng(0)
    n, T, d = 3, 9, b2.INPUT_DIM
    x = rng.normal(size=(n, T, d))
    x *= rng.uniform(0.2, 1.0, size=(n, T, 1)) / np.linalg.norm(x, axis=-1, keepdims=True)
    for c in (0.5, 1.0, 2.0):
        P, log_chi = b2.mean_field("relu", math.sqrt(2 * c), math.sqrt(2 * d), 0.0, x)
        nx2 = np.sum(x * x, axis=-1)
        want = np.stack([[sum(c ** (t - s) * nx2[i, s] for s in range(t + 1)) for t in range(T)]
                         for i in range(n)])
        np.testing.assert_allclose(P, want, rtol=1e-12)
        np.testing.assert_allclose(log_chi, math.log(c), atol=1e-12)


def test_mean_field_tanh_matches_one_dimensional_quadrature():
    d = b2.INPUT_DIM
    x = np.zeros((1, 4, d))
    x[0, :, 0] = [1.0, 0.5, 1.0, 0.8]
    sw, su, sb = math.sqrt(2.0), math.sqrt(2 * d), 0.3
    P, log_chi = b2.mean_field("tanh", sw, su, sb, x)

    def gauss(f, q):
        return integrate.quad(lambda z: f(math.sqrt(q) * z) * math.exp(-z * z / 2)
                              / math.sqrt(2 * math.pi), -12, 12, epsabs=1e-13)[0]

    v = 0.0
    for t in range(4):
        q = sw ** 2 * v + su ** 2 * x[0, t] @ x[0, t] / d + sb ** 2
        v = gauss(lambda z: math.tanh(z) ** 2, q)
        vd = gauss(lambda z: (1 - math.tanh(z) ** 2) ** 2, q)
        np.testing.assert_allclose(P[0, t], v, rtol=1e-6)
        np.testing.assert_allclose(log_chi[0, t], math.log(sw ** 2 * vd), atol=1e-6)


@pytest.mark.parametrize("activation,c", [("relu", 0.5), ("tanh", 1.0)])
def test_forward_norms_approach_the_recursion_at_large_width(activation, c):
    """Monte Carlo: a wide network's ||h_l||^2/m, averaged over seeds, is the recursion's P_l."""
    m, T, S = 2048, 4, 6
    cfg = b2.model_config(activation, m)
    x = b2.input_sequences(0, 8, T)
    sc = b2.scales_for(cfg, c, m, jnp.float32)
    norm2 = np.stack([np.asarray(b2.forward_sq_norms(cfg, b2.seed_params(m, s), x, sc))
                      for s in range(S)])
    P = b2.mean_field(activation, math.sqrt(2 * c), cfg.sigma_u, cfg.sigma_b, np.asarray(x))[0]
    ratio = norm2.mean(axis=(0, 1)) / P.mean(axis=0)
    np.testing.assert_allclose(ratio, 1.0, atol=0.06)


def test_forward_sq_norms_is_the_hidden_state_norm():
    m, T = 12, 5
    cfg = b2.model_config("tanh", m)
    params = model.init_params(cfg, jax.random.key(0), jnp.float64)
    x = b2.input_sequences(0, 2, T, dtype=jnp.float64)
    got = np.asarray(b2.forward_sq_norms(cfg, params, x, b2.scales_for(cfg, 2.0, m, jnp.float64)))
    for i in range(2):
        for t in range(1, T + 1):
            h = _direct_states(cfg, params, x[i], 2.0, jnp.zeros(m), 0, t)
            np.testing.assert_allclose(got[i, t - 1], float(h @ h) / m, rtol=1e-10)


def test_exit_length():
    assert b2.exit_length(np.array([1.0, 1.05, 0.95, 1.2, 1.0])) == 3
    assert b2.exit_length(np.array([1.3, 1.0])) == 0
    assert b2.exit_length(np.array([1.0, 1.0])) == 2
    assert b2.exit_length(np.array([1.0, np.nan, 1.0])) == 1
    assert b2.exit_length(np.array([1.0, np.inf])) == 1


def test_exit_length_exponent_recovers_a_known_power():
    """Ratios 1 + l / (20 l0(m)) leave the 10% band after l* = 2 l0(m) steps; l0 ~ m^0.5."""
    widths = np.array([64, 256, 1024, 4096])
    L, S = 400, 5
    rng = np.random.default_rng(1)
    l0 = 4.3 * np.sqrt(widths / 64.0)
    ll = np.arange(1, L + 1)
    r = 1.0 + ll[None, None, :] / (20.0 * l0[:, None, None]) \
        + 1e-5 * rng.normal(size=(widths.size, S, L))
    ex = b2.exit_length_exponent(widths, r, n_boot=200)
    np.testing.assert_array_equal(ex["lstar"], np.floor(2 * l0).astype(int))
    assert ex["n_used"] == 4
    assert abs(ex["slope"] - 0.5) < 0.03
    assert ex["ci"][0] <= ex["slope"] <= ex["ci"][1]
    # censored widths (l* = L) are left out of the fit
    r2 = r.copy()
    r2[-1] = 1.0
    assert b2.exit_length_exponent(widths, r2, n_boot=10)["n_used"] == 3


def test_max_deviation():
    rng = np.random.default_rng(2)
    S, L = 40, 6
    dev = np.array([0.0, 0.02, -0.08, 0.05, 0.01, 0.0])
    r = 1.0 + dev[None, :] + 0.01 * rng.normal(size=(S, L))
    est, (lo, hi) = b2.max_deviation(r, n_boot=500)
    assert abs(est - 0.08) < 0.01
    assert lo <= est <= hi and hi - lo < 0.03
    est_inf, _ = b2.max_deviation(np.concatenate([r[:, :2], np.full((S, 1), np.inf)], axis=1),
                                  n_boot=20)
    assert est_inf == np.inf


def test_lag_grid():
    g = b2.lag_grid(100)
    assert g[0] == 1 and g[-1] == 100 - b2.START and np.all(np.diff(g) > 0)
    assert set(range(20, 99, 20)) <= set(g.tolist())
    with pytest.raises(ValueError, match="length"):
        b2.lag_grid(1)


def test_ci_end_to_end(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(b2.NAME)                        # b2.run(res, "ci"), shared with the CLI tests
    stored = rerun_changes_nothing(b2, res, "*.npz")
    st = b2.SETTINGS["ci"]
    assert len(stored) == len(b2.ACTIVATIONS) * len(b2.CS) * (len(st.widths) + len(st.jac_widths))
    paths = b2.figures(res, tmp_path / "figures")
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    cl = b2.claims(res)
    assert len(cl) == 8
    assert all(c.verdict in VERDICTS and c.experiment == b2.NAME for c in cl)
    assert all(c.value and c.criterion for c in cl)


def test_claims_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the experiment first"):
        b2.claims(tmp_path)
