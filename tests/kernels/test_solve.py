"""Solvers on Gram matrices (rnn_ntk.kernels.solve) against independent float64 computations:
numpy.linalg.solve, scipy.linalg.expm, scikit-learn's RBF SVC; CG (streamed from a store)
against the direct solve."""
import numpy as np
import pytest
import scipy.linalg

import rnn_ntk.kernels.solve as solve_mod
from rnn_ntk.kernels import gd_mse, gp_posterior, gram, gram_solve, kernel_ridge, svc
from rnn_ntk.model import RNNConfig


@pytest.fixture(scope="module")
def grams(tmp_path_factory):
    """NTK and NNGP of a relu RNN on 160 train + 40 test sequences, stored in float32 (blocks of
    48 rows: ragged), and the same matrices in float64 for the references."""
    rng = np.random.default_rng(0)
    cfg = RNNConfig(width=8, input_dim=3, sigma_w=1.2, sigma_b=0.3)
    x = rng.normal(size=(200, 6, 3))
    out = tmp_path_factory.mktemp("solve") / "g"
    nngp_s, ntk_s = gram(cfg, x, kind="both", block=48, dtype="float32", out=out)
    y = np.sin(x[:, -1, :2].sum(1, keepdims=True) * np.array([[1.0, 2.0]]))   # (200, 2)
    return {"ntk_s": ntk_s, "nngp_s": nngp_s, "ntk": np.asarray(ntk_s, np.float64),
            "nngp": np.asarray(nngp_s, np.float64), "y": y, "tr": slice(0, 160),
            "te": slice(160, 200)}


def _ref_solve(K, b, reg):
    return np.linalg.solve(K + reg * np.eye(len(K)), b)


@pytest.mark.parametrize("solver", ["direct", "cg"])
@pytest.mark.parametrize("diag_reg, absolute", [(1e-3, False), (0.05, True)])
@pytest.mark.parametrize("stored", [False, True])
def test_solve_matches_numpy(grams, solver, diag_reg, absolute, stored):
    K = grams["ntk"]                                     # what the float32 store holds, in f64
    k = grams["ntk_s"] if stored else K
    b = grams["y"]
    reg = diag_reg if absolute else diag_reg * np.trace(K) / len(K)
    ref = _ref_solve(K, b, reg)
    x, info = gram_solve(k, b, diag_reg, absolute, solver=solver, tol=1e-12, return_info=True)
    assert x.dtype == np.float64 and x.shape == b.shape
    np.testing.assert_allclose(x, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    if solver == "cg":
        assert info["converged"] and info["iterations"] < 200


def test_nystrom_preconditioner_cuts_iterations(grams):
    b = grams["y"][:, 0]
    _, plain = gram_solve(grams["ntk_s"], b, 1e-4, solver="cg", rank=0, tol=1e-10, return_info=True)
    _, pre = gram_solve(grams["ntk_s"], b, 1e-4, solver="cg", rank=60, tol=1e-10, return_info=True)
    assert plain["converged"] and pre["converged"]
    assert pre["iterations"] <= 0.6 * plain["iterations"], (pre, plain)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_kernel_ridge_and_gp_posterior(grams, solver):
    K, y = grams["nngp"], grams["y"]
    tr, te = grams["tr"], grams["te"]
    Ktr, Kx, Kss = K[tr, tr], K[te, tr], K[te, te]
    reg = 1e-2 * np.trace(Ktr) / 160
    A = Ktr + reg * np.eye(160)
    mean_ref = Kx @ np.linalg.solve(A, y[tr])
    var_ref = np.diag(Kss - Kx @ np.linalg.solve(A, Kx.T))
    pred = kernel_ridge(Ktr, y[tr], Kx, 1e-2, solver=solver, tol=1e-12)
    np.testing.assert_allclose(pred, mean_ref, rtol=1e-7, atol=1e-10)
    for kss in (Kss, np.diag(Kss)):
        mean, var = gp_posterior(Ktr, y[tr], Kx, kss, 1e-2, solver=solver, tol=1e-12)
        np.testing.assert_allclose(mean, mean_ref, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(var, var_ref, rtol=1e-6, atol=1e-9 * Kss.max())
    # 1-output targets keep their shape
    assert kernel_ridge(Ktr, y[tr, 0], Kx, 1e-2, solver=solver).shape == (40,)


def test_stored_test_kernel_is_streamed(grams):
    # the whole store as train Gram and as the "test" kernel: prediction = K (K + rI)^-1 y
    Ks, K, y = grams["ntk_s"], grams["ntk"], grams["y"]
    reg = 1e-2 * np.trace(K) / 200
    ref = K @ _ref_solve(K, y, reg)
    np.testing.assert_allclose(kernel_ridge(Ks, y, Ks, 1e-2, solver="cg", tol=1e-12), ref,
                               rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(solve_mod.matmul(Ks, y), K @ y, rtol=1e-12)


def test_gd_mse_at_t_matches_expm(grams):
    K, y = grams["ntk"], grams["y"]
    tr, te = grams["tr"], grams["te"]
    Ktr, Kx = K[tr, tr], K[te, tr]
    rng = np.random.default_rng(1)
    f0, ft0 = 0.1 * rng.normal(size=(160, 2)), 0.1 * rng.normal(size=(40, 2))
    lr, t = 0.7, 35.0
    a = lr / y[tr].size                                    # 'half_mean': L = mean(r^2) / 2
    E = scipy.linalg.expm(-a * t * Ktr)
    r0 = f0 - y[tr]
    train_ref = y[tr] + E @ r0
    test_ref = ft0 - Kx @ np.linalg.solve(Ktr, (np.eye(160) - E) @ r0)
    f_tr, f_te = gd_mse(Ktr, y[tr], Kx, t, learning_rate=lr, fx_train_0=f0, fx_test_0=ft0)
    np.testing.assert_allclose(f_tr, train_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(f_te, test_ref, rtol=1e-5, atol=1e-7)
    # t = infinity: direct and streamed CG (ridge keeps CG well conditioned) agree with numpy
    reg = 1e-3 * np.trace(Ktr) / 160
    inf_ref = ft0 - Kx @ _ref_solve(Ktr, r0, reg)
    for solver in ("direct", "cg"):
        f_tr, f_te = gd_mse(Ktr, y[tr], Kx, None, diag_reg=1e-3, fx_train_0=f0, fx_test_0=ft0,
                            solver=solver, tol=1e-12)
        np.testing.assert_allclose(f_tr, y[tr])
        np.testing.assert_allclose(f_te, inf_ref, rtol=1e-7, atol=1e-9)
    # finite t out of core (Lanczos on streamed products), several times at once, vs expm
    ts = np.array([5.0, 35.0])
    f_tr, f_te = gd_mse(Ktr, y[tr], Kx, ts, learning_rate=lr, fx_train_0=f0, fx_test_0=ft0,
                        solver="cg", tol=1e-12)
    assert f_tr.shape == (2, 160, 2) and f_te.shape == (2, 40, 2)
    np.testing.assert_allclose(f_tr[1], train_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(f_te[1], test_ref, rtol=1e-5, atol=1e-7)
    E5 = scipy.linalg.expm(-a * 5.0 * Ktr)
    np.testing.assert_allclose(f_tr[0], y[tr] + E5 @ r0, rtol=1e-6, atol=1e-8)
    # ... and from the store (whole 200 x 200 Gram as train set, 1 output), with a ridge
    Ks, K200, y200 = grams["ntk_s"], grams["ntk"], grams["y"][:, 0]
    reg = 1e-3 * np.trace(K200) / 200
    E = scipy.linalg.expm(-(lr / 200) * 20.0 * (K200 + reg * np.eye(200)))
    got = gd_mse(Ks, y200, None, 20.0, learning_rate=lr, diag_reg=1e-3, solver="cg", tol=1e-12)
    np.testing.assert_allclose(got, y200 + E @ (0.0 - y200), rtol=1e-6, atol=1e-8)


def test_svc_precomputed_equals_sklearn_rbf():
    from sklearn.datasets import make_moons
    from sklearn.svm import SVC
    X, lab = make_moons(n_samples=140, noise=0.2, random_state=0)
    Xtr, Xte, ytr = X[:100], X[100:], lab[:100]
    gamma = 1.5

    def rbf(A, B):
        return np.exp(-gamma * ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1))

    got = svc(rbf(Xtr, Xtr), ytr, rbf(Xte, Xtr), C=2.0)
    want = SVC(kernel="rbf", gamma=gamma, C=2.0).fit(Xtr, ytr).predict(Xte)
    np.testing.assert_array_equal(got, want)
    assert (got == lab[100:]).mean() > 0.8


def test_auto_solver_crossover_and_bad_input(grams):
    n_max = solve_mod.direct_max_n(budget=24 * 100 ** 2)
    assert n_max == 100
    assert solve_mod.choose_solver(np.zeros((100, 100)), budget=24 * 100 ** 2) == "direct"
    assert solve_mod.choose_solver(np.zeros((101, 101)), budget=24 * 100 ** 2) == "cg"
    with pytest.raises(ValueError, match="solver must be one of"):
        gram_solve(grams["ntk"], grams["y"], solver="lu")
    with pytest.raises(ValueError, match="must be square"):
        gram_solve(grams["ntk"][:10, :12], grams["y"][:10])
    with pytest.raises(ValueError, match=r"b must have shape \(200,\)"):
        gram_solve(grams["ntk_s"], grams["y"][:10])
    with pytest.raises(ValueError, match="diag_reg must be a finite number"):
        gram_solve(grams["ntk"], grams["y"], -1.0)
    with pytest.raises(ValueError, match="2-D Gram"):
        gram_solve(np.zeros((4, 2, 4, 2)), np.zeros(8), solver="cg")
