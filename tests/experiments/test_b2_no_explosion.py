"""B2 (no exponential explosion): the pieces against independent computations, and the experiment
end to end at scale 'ci'."""
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from rnn_ntk import model
from rnn_ntk.reproduce import VERDICTS, load_experiment

# shares the ci runs of the session fixture ci_results with test_cli_reproduce.py:
# one pytest-xdist worker runs both files
pytestmark = pytest.mark.xdist_group("b2_ci_runs")


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


def _tangent_direct(cfg, params, x, sigma_w, v, a, T):
    """ln ||J_{a->a+k} v|| for k = 1..T-a from brute-force Jacobians of the plain loop."""
    m = params["W"].shape[0]
    h_a = _direct_states(cfg, params, x, sigma_w, jnp.zeros(m), 0, a)
    out = []
    for t in range(a + 1, T + 1):
        J = jax.jacfwd(lambda h: _direct_states(cfg, params, x, sigma_w, h, a, t))(h_a)
        out.append(math.log(float(jnp.linalg.norm(J @ v))))
    return np.array(out)


@pytest.mark.parametrize("activation,c", [("relu", 1.0), ("tanh", 2.0)])
def test_tangent_log_norms_match_brute_force_jacobians(activation, c):
    m, T = 9, 6
    cfg = b2.model_config(activation, m)
    params = model.init_params(cfg, jax.random.key(5), jnp.float64)
    x = b2.input_sequences(2, 2, T, dtype=jnp.float64)
    key = jax.random.key(7)
    got = np.asarray(b2.tangent_log_norms(cfg, params, x, key, b2.scales_for(cfg, c, m, jnp.float64)))
    assert got.shape == (2, T - b2.START)
    v = jax.random.normal(key, (2, m), jnp.float64)          # the same draw as the function's
    v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
    for i in range(2):
        want = _tangent_direct(cfg, params, x[i], math.sqrt(2 * c), v[i], b2.START, T)
        np.testing.assert_allclose(got[i], want, rtol=1e-9, atol=1e-9)


def test_tangent_log_norms_exact_with_padding():
    """A net zero-padded to a larger array width: v lives on the true units only, and the result
    is the unpadded net's brute-force tangent for that v."""
    m, M, T = 6, 10, 5
    cfg = b2.model_config("relu", M)
    params = b2.seed_params(m, 0, M)
    params64 = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}
    x = b2.input_sequences(1, 2, T, dtype=jnp.float64)
    key = jax.random.key(1)
    got = np.asarray(b2.tangent_log_norms(cfg, params64, x, key,
                                          b2.scales_for(cfg, 1.0, m, jnp.float64)))
    v = jax.random.normal(key, (2, M), jnp.float64)[:, :m]
    v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
    small = {"W": params64["W"][:m, :m], "U": params64["U"][:m], "b": params64["b"][:m],
             "v": params64["v"][:m]}
    cfg_m = b2.model_config("relu", m)
    for i in range(2):
        want = _tangent_direct(cfg_m, small, x[i], math.sqrt(2.0), v[i], b2.START, T)
        np.testing.assert_allclose(got[i], want, rtol=1e-9, atol=1e-9)


def test_growth_exponents_recover_known_slopes():
    rng = np.random.default_rng(0)
    S, n, K = 6, 3, 40
    g = rng.normal(0.0, 0.1, S)
    k = np.arange(1, K + 1)
    # an arbitrary transient before MIN_FIT_LAG must not matter
    y = g[:, None, None] * k + 0.3 + 1e-3 * rng.normal(size=(S, n, K))
    y[..., :b2.MIN_FIT_LAG - 1] += 5.0
    np.testing.assert_allclose(b2.growth_exponents(y), g, atol=2e-4)
    with pytest.raises(ValueError, match="two lags"):
        b2.growth_exponents(y[..., :b2.MIN_FIT_LAG])


def test_spread_exponent_recovers_m_to_the_minus_half_and_not_a_third():
    rng = np.random.default_rng(3)
    widths = np.array([64, 128, 256, 512, 1024, 2048])
    S = 400
    for a in (-0.5, -1 / 3):
        g = rng.normal(size=(widths.size, S)) * (0.8 * (widths / 64.0) ** a)[:, None]
        sp = b2.spread_exponent(widths, g, n_boot=300)
        assert abs(sp["slope"] - a) < 0.04
        assert sp["ci"][0] <= sp["slope"] <= sp["ci"][1] and sp["ci"][1] - sp["ci"][0] < 0.1
    np.testing.assert_allclose(sp["sigma"], g.std(axis=1, ddof=1))


def test_boundary_exponent_of_a_quenched_spread():
    """ell_{s,k} = g_s k with g_s ~ N(0, (s0 m^-1/2)^2): the spread s0 m^-1/2 k reaches ln 2 at
    L* = ln 2 sqrt(m) / s0, so q = 1/2; a random walk (std sqrt(k/m)) gives L* ~ m, q = 1."""
    rng = np.random.default_rng(4)
    widths = np.array([64, 256, 1024, 4096])
    S, K = 400, 300
    k = np.arange(1, K + 1)
    s0 = 0.3
    z = rng.normal(size=(widths.size, S, 1))
    ell = z * (s0 / np.sqrt(widths))[:, None, None] * k
    bd = b2.boundary_exponent(widths, ell, n_boot=30)
    want = np.floor(math.log(2) * np.sqrt(widths) / s0)
    assert np.all(np.abs(bd["lstar"] - want) <= 0.1 * want + 1)
    assert bd["n_used"] == 4 and abs(bd["slope"] - 0.5) < 0.03
    walk = np.cumsum(rng.normal(size=(widths.size, S, K)), axis=-1) / np.sqrt(widths / 2.0)[:, None, None]
    bw = b2.boundary_exponent(widths[:3], walk[:3], n_boot=30)
    assert bw["n_used"] == 3 and abs(bw["slope"] - 1.0) < 0.1
    # a width whose spread never leaves the band is censored and left out
    ell2 = ell.copy()
    ell2[-1] = 0.0
    assert b2.boundary_exponent(widths, ell2, n_boot=5)["n_used"] == 3


def test_spread_length():
    ell = np.array([[0.0, 1.0, 1.0, 3.0], [0.0, -1.0, 1.0, -3.0]])    # std 0, 1.41, 0, 4.24
    assert b2.spread_length(ell, band=1.0) == 1
    assert b2.spread_length(ell, band=2.0) == 3
    assert b2.spread_length(ell, band=5.0) == 4


def test_inside_fraction_counts_paths_inside_the_hypothesis_only():
    widths = [16, 64]                             # L_h = 4, 8
    S, n, L = 10, 2, 20
    r16 = np.ones((S, n, L))
    r64 = np.ones((S, n, L))
    r16[:3, 0, 3] = 5.0                           # 3 of 20 paths leave the band at l = 4 <= L_h
    r16[:, :, 4:] = 100.0                         # outside the hypothesis: ignored
    r64[0, 1, 7] = 0.2                            # 1 of 20 leaves at l = 8 <= L_h
    r64[1, 1, 2] = np.nan                         # a NaN counts as outside
    F, (lo, hi) = b2.inside_fraction(widths, [r16, r64], n_boot=300)
    assert F == pytest.approx(1 - 5 / 40)
    assert lo < F <= hi <= 1.0
    assert b2.inside_fraction(widths, [np.ones((S, n, L))] * 2, n_boot=10)[0] == 1.0


def test_hypothesis_length():
    assert [b2.hypothesis_length(m) for m in (64, 100, 1024, 1000)] == [8, 10, 32, 31]


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
    g = b2.lag_grid(100, (64, 256, 1024, 1 << 16))
    assert g[0] == 1 and g[-1] == 100 - b2.START and np.all(np.diff(g) > 0)
    assert set(range(20, 99, 20)) | {8, 16, 32} <= set(g.tolist()) and 256 not in g
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
    assert len(cl) == 9
    assert [c.role for c in cl] == ["claim"] * 4 + ["control"] * 4 + ["extra"]
    assert all(c.verdict in VERDICTS and c.experiment == b2.NAME for c in cl)
    assert all(c.value and c.criterion for c in cl)
    # an interrupted run (one piece missing) reads as "not finished", never as an IndexError
    part = tmp_path / "partial"
    shutil.copytree(res / b2.NAME, part / b2.NAME)
    next((part / b2.NAME).glob("jac_relu_c1_*.npz")).unlink()
    with pytest.raises(FileNotFoundError, match="1 pieces of the ci run .* not stored yet"):
        b2.claims(part)


def test_claims_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the experiment first"):
        b2.claims(tmp_path)


def test_lag_buckets_cover_the_lags_and_cutting_the_inputs_changes_nothing():
    lags = b2.lag_grid(100, (64, 256, 1024))
    bk = b2.lag_buckets(lags)
    np.testing.assert_array_equal(np.concatenate(bk), np.sort(lags))
    assert len(bk) == 3 and bk[0][-1] <= 99 // 6 < bk[1][0]
    # h_(a+k) depends on the first a + k inputs only: the cut inputs give the same sigma_max
    m, T = 8, 9
    cfg = b2.model_config("relu", m)
    params = model.init_params(cfg, jax.random.key(2), jnp.float64)
    x = b2.input_sequences(0, 1, T, dtype=jnp.float64)
    sc = b2.scales_for(cfg, 1.0, m, jnp.float64)
    lb = jnp.asarray([2, 4])
    full, _ = b2.backward_sigma(cfg, params, x, lb, jax.random.key(0), sc, iters=300)
    cut, _ = b2.backward_sigma(cfg, params, x[:, :b2.START + 4], lb, jax.random.key(0), sc,
                               iters=300)
    np.testing.assert_allclose(np.asarray(cut), np.asarray(full), rtol=1e-8)
