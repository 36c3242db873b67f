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


def _orthonormal_tokens(n, T, d, seed):
    """(n, T, d) with the T tokens of each sequence orthonormal (T <= d)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.linalg.qr(rng.standard_normal((d, d)))[0][:, :T].T for _ in range(n)])


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.3])
def test_linear_kernel_diag_closed_form_and_monte_carlo(alpha):
    # orthogonal tokens: drive^2 sum_(k<T) (1 + k^2) alpha^(2k), summed here term by term
    x = _orthonormal_tokens(2, 6, 8, 0)
    want = 0.3 ** 2 * sum((1 + k * k) * alpha ** (2 * k) for k in range(6))
    np.testing.assert_allclose(d2.linear_kernel_diag(alpha, 0.3, x), want, rtol=1e-12)
    # any tokens: a wide linear diagonal network (activation 'identity', sign init) by Monte
    # Carlo; its NTK diagonal is the mean of m iid unit terms with relative sd ~2-4
    m = 40000
    cfg = model.RNNConfig(width=m, input_dim=d2.INPUT_DIM, activation="identity",
                          readout="last", trainable=("W", "U"), recurrence="diagonal",
                          sigma_b=0.0)
    p = d2.init_with(cfg, jax.random.key(7), "sign", jnp.float64)
    xs = d2.input_sequences(3, 3, 7)
    sc = d2.scales_for(cfg, alpha, 0.5, jnp.float64)
    gW, gU = d2.gradient_norms(cfg, p, xs, jnp.full((3,), 7, jnp.int32), sc)
    mc = np.asarray(gW) ** 2 + np.asarray(gU) ** 2
    np.testing.assert_allclose(mc, d2.linear_kernel_diag(alpha, 0.5, np.asarray(xs)), rtol=0.08)


@pytest.mark.parametrize("alpha,drive", [(0.9, 1.0), (1.0, 0.3), (1.3, 0.05)])
def test_lipschitz_bound_holds_and_is_nearly_attained_when_linear(small, alpha, drive):
    cfg, params, x = small
    n, T, _ = x.shape
    v2 = float(np.mean(np.asarray(params["v"]) ** 2))
    for TT in (1, 2, 5, T):
        sc = d2.scales_for(cfg, alpha, drive, jnp.float64)
        kd = d2.ntk_diagonal(cfg, params, x[:, :TT], sc)
        assert np.all(kd <= v2 * d2.lipschitz_bound(alpha, drive, np.array([TT]))[0])
    # G(T) = sum_(t<T) gain^t: continuous through gain = 1, and the T = 1 bound is drive^2
    np.testing.assert_allclose(d2.lipschitz_bound(1.0, 0.5, np.arange(1, 9)),
                               d2.lipschitz_bound(1.0 + 1e-9, 0.5, np.arange(1, 9)), rtol=1e-6)
    assert d2.lipschitz_bound(1.3, 0.5, np.array([1]))[0] == pytest.approx(0.25)
    G = sum(1.3 ** t for t in range(5))
    assert d2.lipschitz_bound(1.3, 0.5, np.array([5]))[0] == pytest.approx((G - 1) ** 2
                                                                          + 0.25 * G ** 2)


def test_mean_phi_prime_sq_and_mean_field_sensitivity(small):
    cfg, params, x = small
    sc = d2.scales_for(cfg, 1.1, 0.7, jnp.float64)
    # direct loop: E over units and sequences of (1 - tanh(g_t)^2)^2
    n, T, d = x.shape
    W, U = np.asarray(params["W"]), np.asarray(params["U"])
    h = np.zeros((n, W.size))
    want = []
    for t in range(T):
        g = 1.1 * W * h + 0.7 * np.asarray(x[:, t]) @ U.T
        want.append(np.mean((1 - np.tanh(g) ** 2) ** 2))
        h = np.tanh(g)
    np.testing.assert_allclose(d2.mean_phi_prime_sq(cfg, params, x, sc), want, rtol=1e-10)
    # constant E phi'^2 = p: the mean-field slope is ln(alpha sqrt(p)) exactly
    lg = d2.mf_log_sensitivity(np.full(12, 0.36), 1.25, 8)
    np.testing.assert_allclose(np.diff(lg), math.log(1.25 * 0.6), rtol=1e-12)
    with pytest.raises(ValueError, match="kmax"):
        d2.mf_log_sensitivity(np.full(5, 0.5), 1.0, 5)


def test_linear_window():
    p = np.array([1.0, 0.999, 0.995, 0.99, 0.98, 0.9, 0.5])            # lost: 0, .001, .006, .016,
    np.testing.assert_array_equal(d2.linear_window(p, np.array([1, 2, 4, 5, 7]), 0.02),
                                  [1, 2, 4])                             # .036, .136, .636


def test_lag_ratio_interval():
    long_, short = np.array([100.0, 120.0, 110.0, 90.0]), np.array([10.0, 12.0, 11.0, 9.0])
    assert d2.lag_ratio_interval(long_, short, 1000) == pytest.approx((10.0, 10.0))
    lo, hi = d2.lag_ratio_interval(np.array([20.0, 200.0, 20.0, 200.0]), np.full(4, 10.0), 1000)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(20.0)
    with pytest.raises(ValueError, match="S"):
        d2.lag_ratio_interval(long_, short[:3], 1000)


def test_ci_end_to_end(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(d2.NAME)                        # d2.run(res, "ci"), shared with other tests
    stored = rerun_changes_nothing(d2, res, "*.npz")
    assert len(stored) == len(d2.VARIANTS) + len(d2.ALPHAS)
    paths = d2.figures(res, tmp_path / "figures")
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
    cl = d2.claims(res)
    assert [c.claim[:4] for c in cl] == ["D2.1", "D2.2", "D2.4", "D2.1", "D2.4", "D2.3", "D2.5"]
    assert all(c.verdict in VERDICTS and c.experiment == d2.NAME for c in cl)
    assert cl[0].verdict == cl[3].verdict == "agrees"          # a bound: holds at any size
    # the stored NTK diagonal is the structured empirical NTK's (the squared gradient norms)
    a, _ = load_arrays(res / d2.NAME / "init_sign_drive0p1.npz")
    st = d2.SETTINGS["ci"]
    cfg = d2.model_config(st.width)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(d2.BASE_SEED), 1), 1)
    params = d2.init_with(cfg, key, "sign", jnp.float64)
    x = d2.input_sequences(1, st.n_inputs, max(st.T_grid))[:, :st.T_grid[-1]]
    kd = d2.ntk_diagonal(cfg, params, x, d2.scales_for(cfg, d2.ALPHAS[2], 0.1, jnp.float64))
    np.testing.assert_allclose(a["ntk_diag"][1, 2, -1], kd, rtol=1e-8)
    # the training used the normalised step and did not diverge at this size
    a, _ = load_arrays(res / d2.NAME / "train_alpha1.npz")
    assert np.all(a["lr"] > 0) and not a["diverged"].any()
    assert np.all(a["train_loss"][:, -1] < a["train_loss"][:, 0])


def test_claims_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the experiment first"):
        d2.claims(tmp_path)
