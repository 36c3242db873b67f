"""Infinite-width NNGP / NTK of the Elman RNN against independent computations.

- V-transforms: closed forms against quadrature and special values (the quadrature's accuracy
  against scipy is in test_quadrature.py).
- Kernels: closed forms (one step = one-hidden-layer network; ReLU at s_w^2 = 2), Monte-Carlo
  output covariances of random networks (rnn_ntk.init_params / apply), and brute-force NTKs
  J J^T from jax.jacrev of rnn_ntk.apply averaged over seeds at growing width.
- Structure: PSD and exact symmetry, x2=None vs x2=x1, tiles vs one tile, padded batches vs
  each sequence alone, zero-variance inputs, dtypes, input validation.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_ntk.kernels import vtransforms as vt
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.model import RNNConfig, apply, init_params


# --------------------------------------------------------------------------- helpers
def _np_erf(x):
    from scipy.special import erf
    return erf(x)


NUMPY_ACTS = {
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "softplus": (lambda z: np.logaddexp(0.0, z), lambda z: 1.0 / (1.0 + np.exp(-z))),
    "gelu": (lambda z: 0.5 * z * (1.0 + _np_erf(z / math.sqrt(2.0))),
             lambda z: 0.5 * (1.0 + _np_erf(z / math.sqrt(2.0)))
             + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)),
}


def _cov_points(seed=0, n=40, vmax=4.0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.0, vmax, n)
    b = rng.uniform(0.0, vmax, n)
    rho = rng.uniform(-1.0, 1.0, n)
    rho[:4] = [1.0, -1.0, 0.999, -0.999]
    a[4], b[5] = 0.0, 0.0
    a[6] = b[6] = 0.0
    return a, rho * np.sqrt(a * b), b


def _flat_jacobian(cfg, params, x, lengths, scales):
    """d outputs / d trainable params, flattened: out_shape + (P,)."""
    trainable = {g: params[g] for g in cfg.trainable}

    def f(tp):
        return apply(cfg, {**params, **tp}, x, lengths, scales=scales)

    out_ndim = len(jax.eval_shape(f, trainable).shape)
    J = jax.jacrev(f)(trainable)
    return jnp.concatenate([J[g].reshape(J[g].shape[:out_ndim] + (-1,)) for g in cfg.trainable],
                           axis=-1)


def _empirical_ntks(cfg, x1, l1, x2, l2, widths, n_seeds):
    """Brute-force NTK J1 J2^T (mean over the k outputs): (len(widths), n_seeds, ...).

    Each width-m net is the model's zero-padded net at array width max(widths) (its padded
    units are exactly inert, so J J^T is that of the width-m net): one compilation for all.
    """
    M = max(widths)
    cfgM = cfg.replace(width=M)

    @jax.jit
    def ntks(m):
        scales = cfgM.scales()._replace(width=m)

        def one(key):
            params = init_params(cfgM, key, width=m)
            J1 = _flat_jacobian(cfgM, params, x1, l1, scales)
            J2 = _flat_jacobian(cfgM, params, x2, l2, scales)
            if cfg.readout == "all":
                return jnp.einsum("atkp,bskp->atbs", J1, J2) / cfg.output_dim
            return jnp.einsum("akp,bkp->ab", J1, J2) / cfg.output_dim
        return jax.lax.map(one, jax.random.split(jax.random.PRNGKey(0), n_seeds))
    return np.stack([np.asarray(ntks(jnp.asarray(float(m)))) for m in widths])


def _mc_outputs(cfg, x1, l1, x2, n_nets, seed=0):
    """Outputs on x1 and x2 of n_nets random float32 networks: (N, n, k) or (N, n, T, k)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), n_nets)

    @jax.jit
    def run(keys):
        def one(key):
            params = init_params(cfg, key, jnp.float32)
            return (apply(cfg, params, jnp.asarray(x1, jnp.float32), l1),
                    apply(cfg, params, jnp.asarray(x2, jnp.float32)))
        return jax.vmap(one)(keys)
    f1, f2 = run(keys)
    return np.asarray(f1, np.float64), np.asarray(f2, np.float64)


def _params(cases, slow=()):
    """Case names as pytest params; those in ``slow`` only run with -m slow (suite time)."""
    return [pytest.param(c, marks=pytest.mark.slow) if c in slow else c for c in cases]


def _ragged(rng, n, T, d, lengths):
    """x (n, T, d) with NaN at padded steps (they must never be read)."""
    x = rng.normal(size=(n, T, d))
    for i, L in enumerate(lengths):
        x[i, L:] = np.nan
    return x


# --------------------------------------------------------------------------- V-transforms
def test_polynomial_arcsin_arccos_match_numpy():
    x = np.concatenate([np.linspace(-1.0, 1.0, 20001), [-1.0, 1.0, 0.5, -0.5, 1 - 1e-12]])
    assert np.max(np.abs(np.asarray(vt.arcsin(jnp.asarray(x))) - np.arcsin(x))) < 1e-15
    assert np.max(np.abs(np.asarray(vt.arccos(jnp.asarray(x))) - np.arccos(x))) < 1e-15
    x32 = jnp.asarray(x, jnp.float32)
    ref32 = np.asarray(x32, np.float64)
    for f, g in ((vt.arcsin, np.arcsin), (vt.arccos, np.arccos)):
        out = f(x32)
        assert out.dtype == jnp.float32
        # within float32 rounding of the input (|arcsin'| is unbounded at +-1, so compare there
        # by the exact value at the rounded input)
        assert np.max(np.abs(np.asarray(out, np.float64) - g(ref32))) < 2e-6


def test_relu_closed_form_special_values_and_quadrature():
    a = np.array([0.7, 2.0, 1.3, 0.4])
    b = np.array([1.1, 0.5, 1.3, 3.0])
    sab = np.sqrt(a * b)
    # rho = 1: E[relu(u) relu(w)] = sqrt(ab)/2, Vd = 1/2; rho = 0: sqrt(ab)/(2 pi), 1/4;
    # rho = -1: 0, 0 (never both positive)
    for rho, V_ref, Vd_ref in ((1.0, sab / 2, 0.5), (0.0, sab / (2 * math.pi), 0.25),
                               (-1.0, 0.0 * sab, 0.0)):
        V, Vd = vt.relu_v(jnp.asarray(a), jnp.asarray(rho * sab), jnp.asarray(b))
        np.testing.assert_allclose(V, V_ref, atol=1e-15)
        np.testing.assert_allclose(Vd, Vd_ref + 0 * sab, atol=1e-15)
    A, C, B = (jnp.asarray(v) for v in _cov_points())
    V, Vd = vt.relu_v(A, C, B)
    Vq, Vdq = vt.quadrature_v(jax.nn.relu, A, C, B)        # kink: algebraic convergence
    assert np.max(np.abs(V - Vq)) < 1e-3
    assert np.max(np.abs(Vd - Vdq)) < 1e-2


def test_erf_closed_form_against_quadrature():
    A, C, B = (jnp.asarray(v) for v in _cov_points(1))
    V, Vd = vt.erf_v(A, C, B)
    erf = jax.scipy.special.erf
    Vq, Vdq = vt.quadrature_v(erf, A, C, B)                  # default order
    assert np.max(np.abs(V - Vq)) < 1e-13 and np.max(np.abs(Vd - Vdq)) < 1e-13


def test_zero_variance_values():
    b = jnp.asarray([0.0, 0.8, 2.5])
    z0 = jnp.zeros(3)
    V, Vd = vt.relu_v(z0, z0, b)
    assert np.all(np.asarray(V) == 0) and np.all(np.asarray(Vd) == 0)   # relu(0) = relu'(0) = 0
    V, Vd = vt.erf_v(z0, z0, b)
    np.testing.assert_allclose(V, 0.0, atol=1e-16)
    np.testing.assert_allclose(Vd, (4 / math.pi) / np.sqrt(1 + 2 * np.asarray(b)), rtol=1e-14)
    # softplus: V(0, 0, b) = softplus(0) E[softplus(sqrt(b) z)], Vd = sigmoid(0) E[sigmoid(...)]
    phi, dphi = NUMPY_ACTS["softplus"]
    V, Vd = vt.get_vtransform("softplus")(z0, z0, b)
    zz = np.linspace(-12, 12, 4001)
    w = np.exp(-0.5 * zz * zz)
    w /= w.sum()
    for i, bi in enumerate(np.asarray(b)):
        ref_V = math.log(2.0) * np.sum(w * phi(math.sqrt(bi) * zz))
        ref_Vd = 0.5 * np.sum(w * dphi(math.sqrt(bi) * zz))
        assert abs(float(V[i]) - ref_V) < 2e-6 and abs(float(Vd[i]) - ref_Vd) < 2e-6
    assert np.all(np.isfinite(np.asarray(V))) and np.all(np.isfinite(np.asarray(Vd)))


# --------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("trainable", [("W", "U", "b", "v"), ("W",), ("U", "b")])
def test_relu_critical_diagonal_closed_form(trainable):
    """ReLU, s_w^2 = 2: q_t = q_{t-1} + s_u^2 |x_t|^2/d + s_b^2, K(t, t) = s_v^2 q_t / 2 and
    Theta(t, t) = s_v^2 q_t / 2 [v] + (s_v^2 / 2) sum_{r <= t} C_r with
    C_r = q_{r-1} [W] + s_u^2 |x_r|^2 / d [U] + s_b^2 [b] (Vd = 1/2 at equal inputs)."""
    su, sb, sv, d, T = 1.3, 0.5, 0.9, 3, 6
    cfg = RNNConfig(width=1, input_dim=d, activation="relu", readout="all", sigma_w=math.sqrt(2),
                    sigma_u=su, sigma_b=sb, sigma_v=sv, trainable=trainable)
    x = np.random.default_rng(3).normal(size=(4, T, d))
    K, N = infinite_kernels(cfg, x)
    drive = su ** 2 * np.sum(x ** 2, axis=-1) / d + sb ** 2            # (n, T)
    q = np.cumsum(drive, axis=1)
    q_prev = np.concatenate([np.zeros((4, 1)), q[:, :-1]], axis=1)
    C = ("W" in trainable) * q_prev + ("U" in trainable) * su ** 2 * np.sum(x ** 2, -1) / d \
        + ("b" in trainable) * sb ** 2
    K_diag = np.einsum("itit->it", np.asarray(K))
    N_diag = np.einsum("itit->it", np.asarray(N))
    np.testing.assert_allclose(K_diag, sv ** 2 * q / 2, rtol=1e-13)
    np.testing.assert_allclose(N_diag, sv ** 2 * q / 2 * ("v" in trainable)
                               + sv ** 2 / 2 * np.cumsum(C, axis=1), rtol=1e-13)


@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("trainable", [("W", "U", "b", "v"), ("U",), ("b", "v")])
def test_one_step_is_one_hidden_layer_network(act, trainable):
    """T = 1: f(x) = s_v/sqrt(m) v^T phi(s_u U x/sqrt(d) + s_b b), written out by hand."""
    su, sb, sv, d = 0.8, 0.6, 1.4, 2
    cfg = RNNConfig(width=1, input_dim=d, activation=act, readout="last", sigma_w=1.7,
                    sigma_u=su, sigma_b=sb, sigma_v=sv, trainable=trainable)
    rng = np.random.default_rng(4)
    x1, x2 = rng.normal(size=(3, 1, d)), rng.normal(size=(2, 1, d))
    K, N = infinite_kernels(cfg, x1, x2)
    a, bb = x1[:, 0], x2[:, 0]
    S = su ** 2 * a @ bb.T / d + sb ** 2
    q1 = su ** 2 * np.sum(a * a, 1) / d + sb ** 2
    q2 = su ** 2 * np.sum(bb * bb, 1) / d + sb ** 2
    if act == "relu":
        nrm = np.sqrt(np.outer(q1, q2))
        th = np.arccos(np.clip(S / nrm, -1, 1))
        V = nrm * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
        Vd = (np.pi - th) / (2 * np.pi)
    else:
        den = np.outer(1 + 2 * q1, 1 + 2 * q2)
        V = 2 / np.pi * np.arcsin(2 * S / np.sqrt(den))
        Vd = 4 / np.pi / np.sqrt(den - 4 * S ** 2)
    direct = su ** 2 * a @ bb.T / d * ("U" in trainable) + sb ** 2 * ("b" in trainable)
    np.testing.assert_allclose(K, sv ** 2 * V, rtol=1e-13)
    np.testing.assert_allclose(N, sv ** 2 * (V * ("v" in trainable) + Vd * direct), rtol=1e-12,
                               atol=1e-15)


# --------------------------------------------------------------------------- Monte Carlo NNGP
MC_CASES = {
    # name: (activation, readout, T1, T2, ragged lengths for x1 or None)
    "relu-last-unequal-T": ("relu", "last", 5, 3, None),
    "erf-all-ragged": ("erf", "all", 4, 4, [4, 2, 1, 3]),
    "tanh-mean-ragged": ("tanh", "mean", 4, 3, [4, 2, 1, 3]),
}


@pytest.mark.parametrize("case", _params(MC_CASES, slow=("tanh-mean-ragged",)))
def test_nngp_matches_monte_carlo_output_covariance(case):
    act, readout, T1, T2, lens = MC_CASES[case]
    d, n_nets = 2, 600
    cfg = RNNConfig(width=64, input_dim=d, activation=act, readout=readout, sigma_w=1.3,
                    sigma_u=1.0, sigma_b=0.4, sigma_v=1.1)
    rng = np.random.default_rng(5)
    x1 = _ragged(rng, 4, T1, d, lens) if lens else rng.normal(size=(4, T1, d))
    x2 = rng.normal(size=(3, T2, d))
    l1 = None if lens is None else jnp.asarray(lens)
    f1, f2 = _mc_outputs(cfg, x1, l1, x2, n_nets)
    f1, f2 = f1[..., 0].reshape(n_nets, -1), f2[..., 0].reshape(n_nets, -1)
    prods = f1[:, :, None] * f2[:, None, :]
    emp, se = prods.mean(0), prods.std(0) / math.sqrt(n_nets)
    K, _ = infinite_kernels(cfg, x1, x2, lengths1=l1)
    K = np.asarray(K).reshape(emp.shape)
    zero = se == 0                                   # padded 'all' steps: exactly 0 both ways
    assert np.all(K[zero] == 0) and np.all(emp[zero] == 0)
    z = np.abs(emp - K)[~zero] / se[~zero]
    assert z.max() < 4.5, f"max |z| = {z.max():.2f}"
    assert np.abs(emp - K).max() < 0.2 * np.abs(K).max()


# --------------------------------------------------------------------------- brute-force NTK
NTK_CASES = {
    # name: (activation, readout, trainable, output_dim, T1, T2, ragged x1 lengths, x1_1 = 0)
    "relu-last-all-k2-unequal-zero-first": ("relu", "last", ("W", "U", "b", "v"), 2, 4, 3,
                                            None, True),
    "erf-all-W-ragged": ("erf", "all", ("W",), 1, 3, 3, [3, 1, 2], False),
    "tanh-mean-Ub-ragged": ("tanh", "mean", ("U", "b"), 1, 3, 2, [3, 1, 2], False),
    "relu-last-v": ("relu", "last", ("v",), 1, 3, 3, None, False),
}


@pytest.mark.parametrize("case", _params(NTK_CASES, slow=("relu-last-v",)))
def test_ntk_matches_brute_force_jacobians_as_width_grows(case):
    act, readout, trainable, k, T1, T2, lens, zero_first = NTK_CASES[case]
    d, widths, n_seeds = 2, (32, 128, 512), 16
    # zero_first: s_b = 0 and x_1 = 0, so g_1 = 0 exactly (zero variance; relu'(0) = 0)
    cfg = RNNConfig(width=1, input_dim=d, output_dim=k, activation=act, readout=readout,
                    sigma_w=1.2, sigma_u=1.1, sigma_b=0.0 if zero_first else 0.5,
                    sigma_v=0.9, trainable=trainable)
    rng = np.random.default_rng(6)
    x1 = _ragged(rng, 3, T1, d, lens) if lens else rng.normal(size=(3, T1, d))
    x2 = rng.normal(size=(2, T2, d))
    if zero_first:
        x1[:2, 0] = 0.0
        x2[0, 0] = 0.0
    l1 = None if lens is None else jnp.asarray(lens)
    _, N = infinite_kernels(cfg, x1, x2, lengths1=l1)
    N = np.asarray(N)
    assert np.all(np.isfinite(N))
    scale = np.abs(N).max()
    E = _empirical_ntks(cfg, jnp.asarray(np.nan_to_num(x1)), l1, jnp.asarray(x2), None, widths,
                        n_seeds)                                  # (widths, seeds, ...)
    errs = [np.abs(Em.mean(0) - N).max() / scale for Em in E]
    assert errs[-1] < 0.5 * errs[0], errs                     # 16x the width: error falls
    # at the largest width the seed mean agrees entrywise within Monte-Carlo noise
    # (dropping or adding one trainable group moves some entry by >= 5 standard errors here)
    mean, se = E[-1].mean(0), E[-1].std(0) / math.sqrt(n_seeds)
    exact = se == 0                                 # padded 'all' entries: 0 for every seed
    assert np.all(mean[exact] == 0) and np.all(N[exact] == 0)
    z = np.abs(mean - N)[~exact] / se[~exact]
    assert z.max() < 4.0, (errs, z.max())


# --------------------------------------------------------------------------- structure
@pytest.mark.parametrize("act,readout", [("relu", "last"), ("erf", "all"), ("tanh", "mean")])
def test_gram_is_exactly_symmetric_and_psd(act, readout):
    cfg = RNNConfig(width=1, input_dim=2, activation=act, readout=readout, sigma_w=1.1,
                    sigma_b=0.2)
    n, T = 9, 4
    lens = np.array([4, 1, 3, 4, 2, 4, 3, 1, 2])
    x = _ragged(np.random.default_rng(7), n, T, 2, lens)
    for A in infinite_kernels(cfg, x, lengths1=lens, block_size=4):     # 3 x 3 tiles
        A = np.asarray(A).reshape(n * (T if readout == "all" else 1), -1)
        assert np.array_equal(A, A.T)
        ev = np.linalg.eigvalsh(A)
        assert ev.min() >= -1e-10 * ev.max()


@pytest.mark.parametrize("act,readout", [("relu", "all"),
                                         pytest.param("tanh", "last", marks=pytest.mark.slow)])
def test_tiles_and_x2_none_agree_with_one_tile_and_x2_x1(act, readout):
    cfg = RNNConfig(width=1, input_dim=2, activation=act, readout=readout, sigma_w=1.1,
                    sigma_b=0.2)
    lens = np.array([4, 1, 3, 4, 2, 3, 1])
    x = _ragged(np.random.default_rng(12), 7, 4, 2, lens)
    tiled = infinite_kernels(cfg, x, lengths1=lens, block_size=3)       # x2=None, 3 x 3 tiles
    one = infinite_kernels(cfg, x, lengths1=lens)                         # one tile
    full = infinite_kernels(cfg, x, x, lengths1=lens, lengths2=lens, block_size=2)
    # closed forms are symmetric in (x, x') to rounding; the quadrature rule is not (u and w
    # are discretised differently), so tanh agrees with itself only to the rule's accuracy
    tol = dict(rtol=1e-12, atol=1e-14) if act != "tanh" else dict(rtol=0, atol=5e-6)
    for A, A1, Ax in zip(tiled, one, full):
        np.testing.assert_allclose(A1, A, **tol)
        np.testing.assert_allclose(Ax, A, **tol)


@pytest.mark.parametrize("readout", ["last", "all", pytest.param("mean", marks=pytest.mark.slow)])
def test_padded_batch_equals_each_sequence_alone(readout):
    cfg = RNNConfig(width=1, input_dim=2, activation="erf", readout=readout, sigma_w=1.4,
                    sigma_b=0.3, trainable=("W", "v"))
    rng = np.random.default_rng(8)
    l1, l2 = np.array([3, 1, 3]), np.array([2, 2])
    x1, x2 = _ragged(rng, 3, 4, 2, l1), _ragged(rng, 2, 4, 2, l2)
    K, N = infinite_kernels(cfg, x1, x2, lengths1=l1, lengths2=l2, block_size=2)
    K, N = np.asarray(K), np.asarray(N)
    assert np.all(np.isfinite(K)) and np.all(np.isfinite(N))
    for L1 in set(l1):                 # sequences of one length together, unpadded
        for L2 in set(l2):
            i, j = np.flatnonzero(l1 == L1), np.flatnonzero(l2 == L2)
            Ki, Ni = infinite_kernels(cfg, x1[i, :L1], x2[j, :L2])
            if readout == "all":
                for A, Ai in ((K, Ki), (N, Ni)):
                    B = A[i][:, :, j]                          # (|i|, T1, |j|, T2)
                    np.testing.assert_allclose(B[:, :L1, :, :L2], Ai, rtol=1e-13)
                    # padded steps are 0, as the model's 'all' outputs
                    assert np.all(B[:, L1:] == 0) and np.all(B[:, :, :, L2:] == 0)
            else:
                np.testing.assert_allclose(K[np.ix_(i, j)], Ki, rtol=1e-13)
                np.testing.assert_allclose(N[np.ix_(i, j)], Ni, rtol=1e-13)


@pytest.mark.parametrize("act", ["relu", "softplus", "tanh"])
def test_zero_variance_inputs_give_finite_kernels(act):
    cfg = RNNConfig(width=1, input_dim=2, activation=act, readout="all", sigma_b=0.0)
    x = np.random.default_rng(9).normal(size=(3, 3, 2))
    x[:, 0] = 0.0
    x[1] = 0.0                                   # a sequence of zeros: all variances 0 for relu
    K, N = infinite_kernels(cfg, x, order=16)
    assert np.all(np.isfinite(np.asarray(K))) and np.all(np.isfinite(np.asarray(N)))
    if act == "relu":
        assert np.all(np.asarray(K)[1] == 0) and np.all(np.asarray(N)[1] == 0)


def test_dtype_follows_x64_flag_and_float32_is_accurate():
    cfg = RNNConfig(width=1, input_dim=1, sigma_w=1.4, sigma_b=0.1)
    x = np.random.default_rng(10).normal(size=(5, 30, 1))
    K64, N64 = infinite_kernels(cfg, x.astype(np.float32))
    assert K64.dtype == jnp.float64
    with jax.enable_x64(False):
        K32, N32 = infinite_kernels(cfg, x)
        assert K32.dtype == jnp.float32 and N32.dtype == jnp.float32
    # float32 keeps ~1e-6: in particular the NTK diagonal (rho = 1, where arccos is steepest)
    for A32, A64 in ((K32, K64), (N32, N64)):
        np.testing.assert_allclose(np.asarray(A32, np.float64), A64, rtol=1e-5)


def test_output_dim_and_width_do_not_change_the_kernel():
    x = np.random.default_rng(11).normal(size=(3, 4, 2))
    cfg = RNNConfig(width=7, input_dim=2, output_dim=1)
    K, N = infinite_kernels(cfg, x)
    K3, N3 = infinite_kernels(cfg.replace(width=99, output_dim=3), x)
    assert np.array_equal(K, K3) and np.array_equal(N, N3)


def test_bad_inputs_raise_one_line_errors():
    cfg = RNNConfig(width=1, input_dim=2)
    x = np.zeros((3, 4, 2))
    bad = [
        (dict(cfg=cfg.replace(recurrence="diagonal"), x1=x), "recurrence"),
        (dict(cfg=cfg, x1=np.zeros((3, 4))), "x1"),
        (dict(cfg=cfg, x1=np.zeros((3, 4, 5))), "input_dim"),
        (dict(cfg=cfg, x1=x, x2=np.zeros((2, 4, 3))), "input_dim"),
        (dict(cfg=cfg, x1=x, lengths1=[1, 5, 2]), "lengths1"),
        (dict(cfg=cfg, x1=x, lengths1=[1, 2]), "lengths1"),
        (dict(cfg=cfg, x1=x, lengths1=[0, 2, 2]), "lengths1"),
        (dict(cfg=cfg, x1=x, lengths2=[1, 2, 2]), "lengths2"),
        (dict(cfg=cfg, x1=x, block_size=0), "block_size"),
        (dict(cfg=cfg.replace(activation="tanh"), x1=x, order=1), "order"),
    ]
    for kw, word in bad:
        with pytest.raises(ValueError, match=word) as info:
            infinite_kernels(**kw)
        assert "\n" not in str(info.value)
