"""dynamics: closed-form gradient flow / gradient descent against direct integration and loops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import rnn_ntk
from rnn_ntk.dynamics import gradient_descent, gradient_descent_mse, kernel_regression, nngp_posterior
from rnn_ntk.linearize import linearize
from rnn_ntk.model import RNNConfig, init_params

RATE = {"half_mean": lambda lr, N: lr / N, "mean": lambda lr, N: 2 * lr / N,
        "half_sum": lambda lr, N: lr, "sum": lambda lr, N: 2 * lr}


def _features(key, n_train, n_test, P):
    """Random features: K = J J^T on train + test points (singular when P < n_train)."""
    J = np.asarray(jax.random.normal(key, (n_train + n_test, P), jnp.float64)) / np.sqrt(P)
    return J[:n_train], J[n_train:]


def _problem(seed, n=6, n_test=4, k=2, P=10):
    rng = np.random.default_rng(seed)
    Jx, Js = _features(jax.random.key(seed), n, n_test, P)
    y = rng.normal(size=(n, k))
    f0 = rng.normal(size=(n, k)) * 0.3
    fs0 = rng.normal(size=(n_test, k)) * 0.3
    return Jx @ Jx.T, Js @ Jx.T, y, f0, fs0


def _ode_reference(K_reg, Kx, y, f0, fs0, a, t_end):
    """DOP853 integration of d f/dt = -a K (f_train - y) for train and test jointly."""
    n, k = y.shape

    def rhs(_, z):
        f = z[: n * k].reshape(n, k)
        r = f - y
        return np.concatenate([(-a * K_reg @ r).ravel(), (-a * Kx @ r).ravel()])

    sol = solve_ivp(rhs, (0.0, t_end), np.concatenate([f0.ravel(), fs0.ravel()]), method="DOP853",
                    rtol=1e-13, atol=1e-14)
    z = sol.y[:, -1]
    return z[: n * k].reshape(n, k), z[n * k:].reshape(-1, k)


@pytest.mark.parametrize("loss", ["half_mean", "mean", "sum"])
@pytest.mark.parametrize("diag_reg,absolute", [(0.0, False), (0.1, False), (0.05, True)])
def test_flow_matches_ode_integration(loss, diag_reg, absolute):
    K, Kx, y, f0, fs0 = _problem(0)
    lr, t = 0.7, 3.0 if loss == "sum" else 20.0
    pred = gradient_descent_mse(K, y, lr, diag_reg, absolute, loss=loss)
    ftr, fte = pred(t, f0, fs0, Kx)
    reg = diag_reg if absolute else diag_reg * np.trace(K) / K.shape[0]
    ref_tr, ref_te = _ode_reference(K + reg * np.eye(6), Kx, y, f0, fs0, RATE[loss](lr, y.size), t)
    np.testing.assert_allclose(ftr, ref_tr, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(fte, ref_te, rtol=1e-9, atol=1e-11)
    # the flow actually moved the outputs (the check is not trivially satisfied)
    assert np.abs(ftr - f0).max() > 0.1


def test_flow_matches_explicit_euler_first_order():
    """Euler with step h has O(h) error towards the closed form: halving h halves it."""
    K, Kx, y, f0, fs0 = _problem(1)
    lr, t = 1.0, 15.0
    a = lr / y.size
    ftr, fte = gradient_descent_mse(K, y, lr)(t, f0, fs0, Kx)
    errs = []
    for h in (1e-2, 5e-3):
        f, fs = f0.copy(), fs0.copy()
        for _ in range(int(round(t / h))):
            r = f - y
            f, fs = f - h * a * K @ r, fs - h * a * Kx @ r
        errs.append(max(np.abs(f - ftr).max(), np.abs(fs - fte).max()))
    assert errs[1] < 1e-4
    assert 1.8 < errs[0] / errs[1] < 2.2


def test_time_array_infinity_and_kernel_regression():
    K, Kx, y, f0, fs0 = _problem(2)
    pred = gradient_descent_mse(K, y, 0.5)
    ts = np.array([[0.0, 1.0, 7.5], [40.0, 1e3, np.inf]])
    ftr, fte = pred(ts, f0, fs0, Kx)
    assert ftr.shape == (2, 3, 6, 2) and fte.shape == (2, 3, 4, 2)
    for idx in np.ndindex(ts.shape):
        a, b = pred(float(ts[idx]), f0, fs0, Kx)
        np.testing.assert_allclose(ftr[idx], a, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(fte[idx], b, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(ftr[0, 0], f0, rtol=1e-14)
    np.testing.assert_allclose(fte[0, 0], fs0, rtol=1e-14)
    # t = inf (eigenbasis) == t = None (solve) == kernel regression of the residual
    inf_tr, inf_te = pred(None, f0, fs0, Kx)
    kr = fs0 + np.asarray(kernel_regression(K, y - f0, Kx))
    kr_direct = fs0 + Kx @ np.linalg.solve(K, y - f0)
    np.testing.assert_allclose(kr, kr_direct, rtol=1e-10)
    np.testing.assert_allclose(inf_tr, y, rtol=1e-14)
    np.testing.assert_allclose(ftr[1, 2], y, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(inf_te, kr_direct, rtol=1e-9)
    np.testing.assert_allclose(fte[1, 2], kr_direct, rtol=1e-8)


def test_return_conventions_and_default_f0():
    K, Kx, y, f0, fs0 = _problem(3)
    pred = gradient_descent_mse(K, y)
    only_train = pred(2.0)
    assert only_train.shape == y.shape
    # default fx_train_0 = 0: f = y - exp(-K t / N) y, computed independently with expm
    from scipy.linalg import expm
    np.testing.assert_allclose(only_train, y - expm(-K * 2.0 / y.size) @ y, rtol=1e-12)
    only_test = pred(2.0, None, fs0, Kx)
    both = pred(2.0, 0.0, fs0, Kx)
    np.testing.assert_allclose(only_test, both[1], rtol=1e-14)
    assert isinstance(both, tuple) and len(both) == 2


def test_sample_axes_layout_n_T():
    """Kernel (n, T, n, T) with y (n, T, k) equals the flattened (nT, nT) problem."""
    rng = np.random.default_rng(4)
    n, T, k, P = 3, 2, 2, 9
    J = rng.normal(size=(n * T + 2 * T, P))
    K4 = (J[: n * T] @ J[: n * T].T).reshape(n, T, n, T)
    Kx4 = (J[n * T:] @ J[: n * T].T).reshape(2, T, n, T)
    y = rng.normal(size=(n, T, k))
    f0, fs0 = 0.1 * rng.normal(size=(n, T, k)), 0.1 * rng.normal(size=(2, T, k))
    a, b = gradient_descent_mse(K4, y, 0.3, 0.01)([1.0, 5.0], f0, fs0, Kx4)
    a2, b2 = gradient_descent_mse(K4.reshape(n * T, n * T), y.reshape(n * T, k) , 0.3, 0.01)(
        [1.0, 5.0], f0.reshape(n * T, k), fs0.reshape(2 * T, k), Kx4.reshape(2 * T, n * T))
    assert a.shape == (2, n, T, k) and b.shape == (2, 2, T, k)
    np.testing.assert_allclose(a.reshape(2, n * T, k), a2, rtol=1e-12)
    np.testing.assert_allclose(b.reshape(2, 2 * T, k), b2, rtol=1e-12)


@pytest.mark.parametrize("P", [4, 12])       # P < n: singular kernel
@pytest.mark.parametrize("loss", ["half_mean", "mean", "sum"])
def test_discrete_gd_matches_parameter_space_loop(P, loss):
    """GD on theta of f = f0 + J (theta - theta0) (one head per output) vs the closed form."""
    n, n_test, k = 8, 3, 2
    Jx, Js = _features(jax.random.key(10 + P), n, n_test, P)
    rng = np.random.default_rng(P)
    y = rng.normal(size=(n, k))
    f0, fs0 = 0.2 * rng.normal(size=(n, k)), 0.2 * rng.normal(size=(n_test, k))
    K, Kx = Jx @ Jx.T, Js @ Jx.T
    lam_max = np.linalg.eigvalsh(K).max()
    a_per_lr = RATE[loss](1.0, y.size)
    lr = 0.9 / (a_per_lr * lam_max)          # a * lam_max = 0.9
    losses = {"half_mean": lambda r: 0.5 * jnp.mean(r ** 2), "mean": lambda r: jnp.mean(r ** 2),
              "half_sum": lambda r: 0.5 * jnp.sum(r ** 2), "sum": lambda r: jnp.sum(r ** 2)}

    def L(theta):
        return losses[loss](f0 + jnp.asarray(Jx) @ theta - y)

    grad = jax.jit(jax.grad(L))
    theta = jnp.zeros((P, k))
    steps = [0, 1, 2, 7, 30]
    traj_tr, traj_te = [], []
    for s in range(max(steps) + 1):
        if s in steps:
            traj_tr.append(f0 + Jx @ np.asarray(theta))
            traj_te.append(fs0 + Js @ np.asarray(theta))
        theta = theta - lr * grad(theta)
    ftr, fte = gradient_descent(K, y, lr, loss=loss)(np.array(steps), f0, fs0, Kx)
    np.testing.assert_allclose(ftr, np.stack(traj_tr), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fte, np.stack(traj_te), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("a_lam", [1.5, 2.3])   # oscillating-convergent, and divergent
def test_discrete_gd_large_steps(a_lam):
    K, Kx, y, f0, fs0 = _problem(5, P=12)
    lr = a_lam / (RATE["half_mean"](1.0, y.size) * np.linalg.eigvalsh(K).max())
    a = RATE["half_mean"](lr, y.size)
    f, fs = f0.copy(), fs0.copy()
    out_tr, out_te = [], []
    for _ in range(12):
        r = f - y
        f, fs = f - a * K @ r, fs - a * Kx @ r
        out_tr.append(f)
        out_te.append(fs)
    ftr, fte = gradient_descent(K, y, lr)(np.arange(1, 13), f0, fs0, Kx)
    np.testing.assert_allclose(ftr, np.stack(out_tr), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(fte, np.stack(out_te), rtol=1e-9, atol=1e-11)


def test_discrete_gd_limit_and_small_step_flow():
    K, Kx, y, f0, fs0 = _problem(6, P=12)
    lr = 1.0
    pred = gradient_descent(K, y, lr)
    inf_tr, inf_te = pred(np.inf, f0, fs0, Kx)
    np.testing.assert_allclose(inf_tr, y, rtol=1e-10)
    np.testing.assert_allclose(inf_te, fs0 + Kx @ np.linalg.solve(K, y - f0), rtol=1e-8)
    none_tr, none_te = pred(None, f0, fs0, Kx)
    np.testing.assert_allclose(none_te, inf_te, rtol=1e-8)
    # many tiny steps of size lr/M approach the flow at time lr * t
    M = 2000
    fine = gradient_descent(K, y, lr / M)(5.0 * M, f0, fs0, Kx)
    flow = gradient_descent_mse(K, y, lr)(5.0, f0, fs0, Kx)
    np.testing.assert_allclose(fine[1], flow[1], rtol=1e-3)


def _brute_ntk(cfg, params, x):
    """J J^T over the trainable groups by jax.jacrev; (n, n) or (n, T, n, T) (output_dim 1)."""
    def f(sub):
        return rnn_ntk.apply(cfg, {**params, **sub}, x)[..., 0]

    jac = jax.jacrev(f)({g: params[g] for g in cfg.trainable})
    lead = jac[cfg.trainable[0]].shape[: x.ndim - 1 - (cfg.readout != "all")]
    J = jnp.concatenate([jac[g].reshape(lead + (-1,)) for g in cfg.trainable], axis=-1)
    return jnp.tensordot(J, J, axes=((J.ndim - 1,), (J.ndim - 1,)))


@pytest.mark.parametrize("readout,trainable,engine_loss", [("last", ("W", "U", "b", "v"), "mean"),
                                                           ("all", ("W",), "sum_from_2")])
def test_linearised_rnn_gd_matches_closed_form(readout, trainable, engine_loss):
    """Full-batch GD of the linearised RNN on the training engine's own loss (train.loss_value)
    equals the discrete closed form with the brute-force empirical NTK at theta_0.

    Engine 'mean' is loss='mean'; engine 'sum_from_2' (1/2 sum over positions >= 2) is
    loss='half_sum' on the kernel restricted to positions >= 2, position 1 moving as a test point.
    """
    from rnn_ntk.tasks import TaskConfig
    from rnn_ntk.train import TrainConfig, loss_value
    n, n_test, T, d = 5, 3, 3, 3
    cfg = RNNConfig(width=8, input_dim=d, output_dim=1, activation="tanh", readout=readout,
                    sigma_w=1.2, sigma_b=0.2, trainable=trainable)
    tcfg = TrainConfig(model=cfg, task=TaskConfig(kind="random_labels", n_train=n, n_test=n_test,
                                                  length=T, input_dim=d, target=readout),
                       steps=1, loss=engine_loss, dtype="float64")
    p0 = init_params(cfg, jax.random.key(0), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (n, T, d), jnp.float64)
    xs = jax.random.normal(jax.random.key(2), (n_test, T, d), jnp.float64)
    f0, fs0 = rnn_ntk.apply(cfg, p0, x), rnn_ntk.apply(cfg, p0, xs)
    y = jax.random.normal(jax.random.key(3), f0.shape, jnp.float64)
    f_lin = linearize(cfg, p0)

    Kall = jax.jit(lambda p: _brute_ntk(cfg, p, jnp.concatenate([x, xs], axis=0)))(p0)
    if engine_loss == "mean":
        K, Kx, loss = Kall[:n, :n], Kall[n:, :n], "mean"
        K_eig = np.asarray(K)
    else:   # train entries: positions >= 2 of the training sequences
        K, loss = Kall[:n, 1:, :n, 1:], "half_sum"
        Kx_first, Kx = Kall[:n, :1, :n, 1:], Kall[n:, :, :n, 1:]
        K_eig = np.asarray(K).reshape(n * (T - 1), -1)
    lr = 0.5 / (RATE[loss](1.0, y.size) * np.linalg.eigvalsh(K_eig).max())

    @jax.jit
    def trajectory(p):
        """20 explicit GD steps on the linearised net; outputs on train and test at every step."""
        def step(p, _):
            def L(sub):
                return loss_value(tcfg, f_lin({**p, **sub}, x), y)
            g = jax.grad(L)({k: p[k] for k in trainable})
            new = {**p, **{k: p[k] - lr * g[k] for k in trainable}}
            return new, (f_lin(p, x), f_lin(p, xs))
        return jax.lax.scan(step, p, None, length=21)[1]

    steps = np.array([0, 1, 5, 20])
    all_tr, all_te = trajectory(p0)
    ref_tr, ref_te = np.asarray(all_tr[steps]), np.asarray(all_te[steps])
    if engine_loss == "mean":
        ftr, fte = gradient_descent(K, y, lr, loss=loss)(steps, f0, fs0, Kx)
    else:
        pred = gradient_descent(K, y[:, 1:], lr, loss=loss)
        ftr_rest, fte = pred(steps, f0[:, 1:], fs0, Kx)
        _, ftr_first = pred(steps, f0[:, 1:], f0[:, :1], Kx_first)
        ftr = np.concatenate([ftr_first, ftr_rest], axis=2)
    assert np.abs(ref_tr[-1] - ref_tr[0]).max() > 1e-2        # training moved the outputs
    for got, ref in ((ftr, ref_tr), (fte, ref_te)):
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_nngp_posterior_against_joint_precision():
    """Posterior mean/cov from the Schur complement vs. from the joint precision matrix."""
    rng = np.random.default_rng(7)
    J = rng.normal(size=(9, 14))
    Kj = J @ J.T / 14
    K, Kx, Kss = Kj[:6, :6], Kj[6:, :6], Kj[6:, 6:]
    y = rng.normal(size=(6, 2))
    noise = 0.05
    mean, cov = nngp_posterior(K, y, Kx, Kss, noise, True)
    Prec = np.linalg.inv(Kj + np.diag([noise] * 6 + [0.0] * 3))
    cov_ref = np.linalg.inv(Prec[6:, 6:])
    mean_ref = -cov_ref @ Prec[6:, :6] @ y
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(kernel_regression(K, y, Kx, noise, True), mean_ref, rtol=1e-8)
    # relative regulariser: diag_reg * mean(diag K)
    rel = kernel_regression(K, y, Kx, 0.1)
    np.testing.assert_allclose(rel, Kx @ np.linalg.solve(K + 0.1 * np.trace(K) / 6 * np.eye(6), y),
                               rtol=1e-10)


def test_jit_and_float32():
    K, Kx, y, f0, fs0 = _problem(8)
    pred = gradient_descent_mse(K, y, 0.5)
    jitted = jax.jit(lambda t: pred(t, f0, fs0, Kx))
    np.testing.assert_allclose(jitted(3.0)[1], pred(3.0, f0, fs0, Kx)[1], rtol=1e-12)
    p32 = gradient_descent_mse(K.astype(np.float32), y.astype(np.float32), 0.5)
    out = p32(3.0, f0.astype(np.float32))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, pred(3.0, f0), rtol=1e-4, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    K, Kx, y, f0, fs0 = _problem(9)
    with pytest.raises(ValueError, match="loss"):
        gradient_descent_mse(K, y, loss="l1")
    with pytest.raises(ValueError, match="learning_rate"):
        gradient_descent(K, y, -1.0)
    with pytest.raises(ValueError, match="diag_reg"):
        gradient_descent_mse(K, y, 1.0, -0.1)
    with pytest.raises(ValueError, match="k_train_train"):
        gradient_descent_mse(K[:, :5], y)
    with pytest.raises(ValueError, match="y_train"):
        gradient_descent_mse(K, y[:5])
    pred = gradient_descent_mse(K, y)
    with pytest.raises(ValueError, match="k_test_train"):
        pred(1.0, f0, fs0)
    with pytest.raises(ValueError, match="k_test_train"):
        pred(1.0, f0, fs0, Kx[:, :5])
    with pytest.raises(ValueError, match="fx_train_0"):
        pred(1.0, f0[:5])
    with pytest.raises(ValueError, match="both None"):
        pred(1.0, None)
    with pytest.raises(ValueError, match="k_test_test"):
        nngp_posterior(K, y, Kx, Kx)
