"""Empirical NTK / NNGP against independent brute-force computations.

The reference is a jax.jacrev of rnn_ntk.apply over the whole batch with respect to the flattened
trainable groups, contracted J1 J2^T and averaged over the outputs; the NNGP reference is the
explicit outer product of apply's outputs.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_ntk
from rnn_ntk.kernels import empirical as emp
from rnn_ntk.kernels.empirical import empirical_nngp, empirical_ntk
from rnn_ntk.model import RNNConfig, Scales, init_params, pad_params

N1, T1, N2, T2, D = 4, 4, 3, 6, 3
LEN1 = np.array([4, 2, 1, 3])
LEN2 = np.array([6, 1, 4])


def _brute_ntk(cfg, params, x1, l1, x2, l2, scales=None):
    """(1/k) sum_j J1_j J2_j^T with J the whole-batch jax.jacrev of apply (flattened groups)."""
    groups = cfg.trainable

    def jac(x, lengths):
        def f(sub):
            return rnn_ntk.apply(cfg, {**params, **sub}, x, lengths, scales=scales)

        out_shape = f({g: params[g] for g in groups}).shape
        J = jax.jacrev(f)({g: params[g] for g in groups})
        return jnp.concatenate([J[g].reshape(out_shape + (-1,)) for g in groups], axis=-1)

    def kernel(x1, x2):
        J1, J2 = jac(x1, l1), jac(x2, l2)
        spec = "atkp,bukp->atbu" if cfg.readout == "all" else "akp,bkp->ab"
        return jnp.einsum(spec, J1, J2) / cfg.output_dim

    return np.asarray(jax.jit(kernel)(x1, x2))  # one compilation instead of many eager ones


def _inputs(seed=1):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x1 = jax.random.normal(k1, (N1, T1, D), jnp.float64)
    x2 = jax.random.normal(k2, (N2, T2, D), jnp.float64)
    return x1, x2


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _check_methods(cfg, methods):
    params = init_params(cfg, jax.random.key(0), jnp.float64)
    x1, x2 = _inputs()
    ref = _brute_ntk(cfg, params, x1, LEN1, x2, LEN2)
    assert np.linalg.norm(ref) > 0
    shape = (N1, T1, N2, T2) if cfg.readout == "all" else (N1, N2)
    for method in methods:
        K = empirical_ntk(cfg, params, x1, x2, method=method, lengths1=LEN1, lengths2=LEN2)
        assert K.shape == shape and K.dtype == jnp.float64
        assert _rel(K, ref) < 1e-10, (method, _rel(K, ref))


# Every activation, readout, trainable subset and the diagonal recurrence, each case checked with
# two outputs, x2 of a different length and ragged lengths on both sides (the full Cartesian
# product would only repeat the same code paths at many compilations' cost).
CASES = [
    # (activation, readout, trainable, recurrence, also check the jacobian method)
    ("relu", "last", "WUbv", "full", True),
    ("erf", "mean", "WUbv", "full", False),
    ("tanh", "all", "WUbv", "full", True),
    ("gelu", "all", "WUbv", "full", False),
    ("softplus", "last", "WUbv", "full", False),
    ("identity", "mean", "WUbv", "full", True),
    ("relu", "all", "W", "full", False),
    ("tanh", "last", "Ub", "full", False),
    ("erf", "mean", "v", "full", False),
    ("softplus", "all", "Wv", "full", True),
    ("erf", "last", "WUbv", "diagonal", False),
    ("tanh", "all", "W", "diagonal", True),
    ("relu", "mean", "Wv", "diagonal", False),
]
SUBSETS = ["WUbv", "W", "U", "Ub", "v", "Wv"]


@pytest.mark.parametrize("activation,readout,trainable,recurrence,jacobian", CASES)
def test_structured_and_jacobian_match_brute_force(activation, readout, trainable, recurrence,
                                                   jacobian):
    cfg = RNNConfig(width=6, input_dim=D, output_dim=2, activation=activation, readout=readout,
                    sigma_w=1.3, sigma_u=0.9, sigma_b=0.4, sigma_v=1.1,
                    trainable=tuple(trainable), recurrence=recurrence)
    _check_methods(cfg, emp.METHODS if jacobian else ("structured",))


@pytest.mark.slow
@pytest.mark.parametrize("recurrence", ["full", "diagonal"])
@pytest.mark.parametrize("trainable", SUBSETS)
@pytest.mark.parametrize("readout", ["last", "mean", "all"])
@pytest.mark.parametrize("activation", ["relu", "erf", "tanh", "gelu", "softplus", "identity"])
def test_full_product(activation, readout, trainable, recurrence):
    """The whole Cartesian product (slow: ~200 compilations)."""
    cfg = RNNConfig(width=6, input_dim=D, output_dim=2, activation=activation, readout=readout,
                    sigma_w=0.9, sigma_u=1.1, sigma_b=0.3, sigma_v=0.8,
                    trainable=tuple(trainable), recurrence=recurrence)
    _check_methods(cfg, emp.METHODS)


@pytest.mark.parametrize("readout", ["last", "all"])
def test_symmetric_and_blocks(readout):
    cfg = RNNConfig(width=6, input_dim=D, output_dim=2, activation="tanh", readout=readout,
                    sigma_b=0.2)
    params = init_params(cfg, jax.random.key(3), jnp.float64)
    x = jax.random.normal(jax.random.key(4), (7, T1, D), jnp.float64)
    lens = np.array([4, 1, 3, 2, 4, 4, 1])
    ref = _brute_ntk(cfg, params, x, lens, x, lens)
    whole = empirical_ntk(cfg, params, x, lengths1=lens)
    assert _rel(whole, ref) < 1e-10
    # blocks of 3 (7 = 3 + 3 + 1 padded): symmetric path (upper triangle mirrored) and general path
    blocked = empirical_ntk(cfg, params, x, lengths1=lens, block_size=3)
    np.testing.assert_allclose(blocked, whole, rtol=1e-12, atol=1e-14)
    # one example per tile: 28 tile pairs, more than are unrolled, so the lax.map loop runs
    assert 7 * 8 // 2 > emp._UNROLL_PAIRS
    looped = empirical_ntk(cfg, params, x, lengths1=lens, block_size=1)
    np.testing.assert_allclose(looped, whole, rtol=1e-12, atol=1e-14)
    x2 = jax.random.normal(jax.random.key(5), (5, T2, D), jnp.float64)
    l2 = np.array([6, 2, 5, 1, 3])
    one = empirical_ntk(cfg, params, x, x2, lengths1=lens, lengths2=l2)
    K = empirical_ntk(cfg, params, x, x2, lengths1=lens, lengths2=l2, block_size=2)
    np.testing.assert_allclose(K, one, rtol=1e-12, atol=1e-14)
    if readout == "all":
        # the automatic plan under a tiny memory budget also blocks, with the same result
        K = empirical_ntk(cfg, params, x, lengths1=lens, memory_budget_bytes=1)
        np.testing.assert_allclose(K, whole, rtol=1e-12, atol=1e-14)
    # a symmetric kernel is symmetric
    if readout == "last":
        np.testing.assert_allclose(blocked, blocked.T, rtol=1e-12)
    else:
        np.testing.assert_allclose(blocked, blocked.transpose(2, 3, 0, 1), rtol=1e-12)


@pytest.mark.parametrize("method", emp.METHODS)
def test_seed_axis_equals_loop_over_seeds(method):
    cfg = RNNConfig(width=5, input_dim=D, output_dim=2, activation="tanh", readout="mean",
                    sigma_b=0.3)
    keys = jax.random.split(jax.random.key(7), 3)
    stacked = jax.vmap(lambda k: init_params(cfg, k, jnp.float64))(keys)
    x1, x2 = _inputs(2)
    loop = np.stack([empirical_ntk(cfg, jax.tree.map(lambda a: a[s], stacked), x1, x2,
                                   method=method, lengths1=LEN1, lengths2=LEN2) for s in range(3)])
    assert loop.std(axis=0).max() > 0  # the seeds differ
    K = empirical_ntk(cfg, stacked, x1, x2, method=method, lengths1=LEN1, lengths2=LEN2)
    assert K.shape == (3, N1, N2)
    np.testing.assert_allclose(K, loop, rtol=1e-12, atol=1e-14)
    # seeds processed in memory-bounded batches (lax.map path) and blocked
    K2 = empirical_ntk(cfg, stacked, x1, x2, method=method, lengths1=LEN1, lengths2=LEN2,
                       block_size=2, memory_budget_bytes=1)
    np.testing.assert_allclose(K2, loop, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("readout", ["mean", "all"])
def test_nngp_is_outer_product_of_outputs(readout):
    cfg = RNNConfig(width=9, input_dim=D, output_dim=2, activation="softplus", readout=readout,
                    sigma_b=0.3)
    keys = jax.random.split(jax.random.key(8), 2)
    stacked = jax.vmap(lambda k: init_params(cfg, k, jnp.float64))(keys)
    x1, x2 = _inputs(3)
    K = np.asarray(empirical_nngp(cfg, stacked, x1, x2, lengths1=LEN1, lengths2=LEN2))
    Ksym = np.asarray(empirical_nngp(cfg, stacked, x1, lengths1=LEN1))
    for s in range(2):
        p = jax.tree.map(lambda a: a[s], stacked)
        f1 = np.asarray(rnn_ntk.apply(cfg, p, x1, LEN1))
        f2 = np.asarray(rnn_ntk.apply(cfg, p, x2, LEN2))
        if readout == "all":
            ref = sum(f1[:, :, None, None, j] * f2[None, None, :, :, j] for j in range(2)) / 2
            ref_sym = sum(f1[:, :, None, None, j] * f1[None, None, :, :, j] for j in range(2)) / 2
        else:
            ref = sum(np.outer(f1[:, j], f2[:, j]) for j in range(2)) / 2
            ref_sym = sum(np.outer(f1[:, j], f1[:, j]) for j in range(2)) / 2
        np.testing.assert_allclose(K[s], ref, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(Ksym[s], ref_sym, rtol=1e-12, atol=1e-15)
        single = empirical_nngp(cfg, p, x1, x2, lengths1=LEN1, lengths2=LEN2)
        np.testing.assert_allclose(single, ref, rtol=1e-12, atol=1e-15)


def test_padded_net_and_traced_scales():
    cfg = RNNConfig(width=5, input_dim=D, output_dim=1, activation="tanh", readout="all",
                    sigma_w=1.2, sigma_b=0.4)
    params = init_params(cfg, jax.random.key(9), jnp.float64)
    x1, x2 = _inputs(4)
    ref = _brute_ntk(cfg, params, x1, LEN1, x2, LEN2)
    # the same net zero-padded to 8 units, run at its true width 5 through traced scales
    padded = pad_params(params, 8)
    wide = cfg.replace(width=8)

    @jax.jit
    def k_traced(sw, width):
        sc = Scales(sw, cfg.sigma_u, cfg.sigma_b, cfg.sigma_v, width)
        return empirical_ntk(wide, padded, x1, x2, lengths1=LEN1, lengths2=LEN2, scales=sc)

    np.testing.assert_allclose(k_traced(1.2, 5.0), ref, rtol=1e-10, atol=1e-14)
    # another sigma through the same compiled function = the config with that sigma
    ref2 = _brute_ntk(cfg.replace(sigma_w=0.7), params, x1, LEN1, x2, LEN2)
    np.testing.assert_allclose(k_traced(0.7, 5.0), ref2, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(
        empirical_ntk(wide, padded, x1, x2, method="jacobian", lengths1=LEN1, lengths2=LEN2,
                      scales=Scales(1.2, 1.0, 0.4, 1.0, 5.0)), ref, rtol=1e-10, atol=1e-14)


def test_new_sigmas_do_not_recompile():
    cfg = RNNConfig(width=4, input_dim=D, readout="last")
    params = init_params(cfg, jax.random.key(0), jnp.float64)
    x1, _ = _inputs()
    empirical_ntk(cfg, params, x1)
    before = emp._ntk_jit._cache_size()
    K = empirical_ntk(cfg.replace(sigma_w=0.5, sigma_b=0.2), params, x1)
    assert emp._ntk_jit._cache_size() == before
    ref = _brute_ntk(cfg.replace(sigma_w=0.5, sigma_b=0.2), params, x1, None, x1, None)
    assert _rel(K, ref) < 1e-10


def test_float32():
    cfg = RNNConfig(width=16, input_dim=D, readout="last")
    params = init_params(cfg, jax.random.key(0), jnp.float64)
    x1, _ = _inputs()
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    K = empirical_ntk(cfg, p32, x1.astype(jnp.float32))
    assert K.dtype == jnp.float32
    ref = _brute_ntk(cfg, params, x1, None, x1, None)
    assert _rel(K, ref) < 1e-5


def test_bad_input_errors():
    cfg = RNNConfig(width=4, input_dim=D)
    params = init_params(cfg, jax.random.key(0), jnp.float64)
    x1, x2 = _inputs()
    with pytest.raises(ValueError, match="method"):
        empirical_ntk(cfg, params, x1, method="fast")
    with pytest.raises(ValueError, match="x1"):
        empirical_ntk(cfg, params, x1[0])
    with pytest.raises(ValueError, match="x2 has token dimension"):
        empirical_ntk(cfg, params, x1, x2[:, :, :2])
    with pytest.raises(ValueError, match="lengths1"):
        empirical_ntk(cfg, params, x1, lengths1=np.array([1, 2]))
    with pytest.raises(ValueError, match="lengths1 must lie"):
        empirical_ntk(cfg, params, x1, lengths1=np.array([1, 2, 5, 1]))
    with pytest.raises(ValueError, match="lengths2 was given without x2"):
        empirical_nngp(cfg, params, x1, lengths2=LEN2)
    with pytest.raises(ValueError, match="block_size"):
        empirical_ntk(cfg, params, x1, block_size=0)
    with pytest.raises(ValueError, match=r"params\['W'\]"):
        empirical_ntk(cfg.replace(recurrence="diagonal"), params, x1)
    with pytest.raises(ValueError, match="params must be a dict"):
        empirical_ntk(cfg, {"W": params["W"]}, x1)
