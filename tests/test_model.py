"""Model tests: the recurrence against a direct loop, the papers' convention, padding, lengths."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_ntk
from rnn_ntk.model import (ACTIVATIONS, ConfigError, RNNConfig, forward, init_params, pad_params,
                           paper_lr_to_ntk, ntk_lr_to_paper, unpad_params)


def _numpy_rnn(cfg, p, x):
    """Direct numpy loop of spec section 1: returns f_t for every t, (n, T, k)."""
    p = {g: np.asarray(a, np.float64) for g, a in p.items()}
    x = np.asarray(x, np.float64)
    n, T, d = x.shape
    m = cfg.width
    phi = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "identity": lambda z: z,
           "softplus": lambda z: np.log1p(np.exp(z))}[cfg.activation]
    h = np.zeros((n, m))
    out = []
    for t in range(T):
        if cfg.recurrence == "diagonal":
            rec = cfg.sigma_w * h * p["W"][None, :]
        else:
            rec = cfg.sigma_w / math.sqrt(m) * h @ p["W"].T
        g = rec + cfg.sigma_u / math.sqrt(d) * x[:, t] @ p["U"].T + cfg.sigma_b * p["b"][None, :]
        h = phi(g)
        out.append(cfg.sigma_v / math.sqrt(m) * h @ p["v"])
    return np.stack(out, axis=1)


@pytest.mark.parametrize("activation", ["relu", "tanh", "identity", "softplus"])
@pytest.mark.parametrize("recurrence", ["full", "diagonal"])
@pytest.mark.parametrize("readout", ["last", "all", "mean"])
def test_apply_matches_numpy_loop(activation, recurrence, readout):
    cfg = RNNConfig(width=7, input_dim=3, output_dim=2, activation=activation, readout=readout,
                    sigma_w=1.3, sigma_u=0.8, sigma_b=0.4, sigma_v=1.1, recurrence=recurrence)
    p = init_params(cfg, jax.random.key(0), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (5, 6, 3), jnp.float64)
    ref = _numpy_rnn(cfg, p, x)
    ref = {"last": ref[:, -1], "all": ref, "mean": ref.mean(axis=1)}[readout]
    np.testing.assert_allclose(rnn_ntk.apply(cfg, p, x), ref, rtol=1e-12, atol=1e-13)


def test_shapes_and_init_distribution():
    cfg = RNNConfig(width=300, input_dim=4, output_dim=3)
    p = init_params(cfg, jax.random.key(0))
    assert {g: a.shape for g, a in p.items()} == {"W": (300, 300), "U": (300, 4), "b": (300,),
                                                   "v": (300, 3)}
    w = np.asarray(p["W"]).ravel()
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1) < 0.01
    assert init_params(cfg.replace(recurrence="diagonal"), jax.random.key(0))["W"].shape == (300,)
    x = jnp.ones((2, 5, 4))
    assert rnn_ntk.hidden_states(cfg, p, x).shape == (2, 5, 300)
    assert rnn_ntk.apply(cfg.replace(readout="all"), p, x).shape == (2, 5, 3)
    assert rnn_ntk.apply(cfg.replace(readout="mean"), p, x).shape == (2, 3)


def test_papers_convention_is_the_same_network():
    """h_t = ReLU(W h + A x), y_t = B h_t with W, A ~ N(0, 2/m), B ~ N(0, 1/d_out): our preset equals it,
    and a GD step eta on their W equals a step eta m / 2 on ours."""
    m, d, k = 16, 3, 2
    cfg = RNNConfig.paper(width=m, input_dim=d, output_dim=k, readout="all")
    assert cfg.trainable == ("W",) and cfg.activation == "relu"
    p = init_params(cfg, jax.random.key(2), jnp.float64)
    Wt, At, Bt = math.sqrt(2 / m) * p["W"], math.sqrt(2 / m) * p["U"], p["v"].T / math.sqrt(k)
    x = jax.random.normal(jax.random.key(3), (4, 5, d), jnp.float64)
    y = jax.random.normal(jax.random.key(4), (4, 5, k), jnp.float64)

    def theirs(W):
        h = jnp.zeros((4, m))
        outs = []
        for t in range(5):
            h = jax.nn.relu(h @ W.T + x[:, t] @ At.T)
            outs.append(h @ Bt.T)
        return jnp.stack(outs, axis=1)

    np.testing.assert_allclose(rnn_ntk.apply(cfg, p, x), theirs(Wt), rtol=1e-12, atol=1e-13)
    eta = 0.05
    loss_theirs = lambda W: 0.5 * jnp.sum((theirs(W) - y) ** 2)
    loss_ours = lambda W: 0.5 * jnp.sum((rnn_ntk.apply(cfg, {**p, "W": W}, x) - y) ** 2)
    Wt1 = Wt - eta * jax.grad(loss_theirs)(Wt)
    W1 = p["W"] - paper_lr_to_ntk(eta, m) * jax.grad(loss_ours)(p["W"])
    np.testing.assert_allclose(math.sqrt(2 / m) * W1, Wt1, rtol=1e-12, atol=1e-14)
    assert ntk_lr_to_paper(paper_lr_to_ntk(eta, m), m) == pytest.approx(eta)


@pytest.mark.parametrize("activation", ["relu", "softplus", "tanh"])
def test_padded_units_are_inert(activation):
    """A net zero-padded to a larger array and run at its true width equals the net itself,
    including activations with phi(0) != 0 and a bias."""
    cfg = RNNConfig(width=6, input_dim=2, activation=activation, sigma_b=0.7, readout="all")
    key = jax.random.key(5)
    p = init_params(cfg, key, jnp.float64)
    big = init_params(cfg, key, jnp.float64, array_width=15, width=jnp.asarray(6.0))
    for g in p:
        np.testing.assert_array_equal(pad_params(p, 15)[g], big[g])
        np.testing.assert_array_equal(unpad_params(big, 6)[g], p[g])
    x = jax.random.normal(jax.random.key(6), (3, 4, 2), jnp.float64)
    np.testing.assert_allclose(rnn_ntk.apply(cfg, big, x), rnn_ntk.apply(cfg, p, x), rtol=1e-13, atol=1e-15)
    h = rnn_ntk.hidden_states(cfg, big, x)
    assert np.all(np.asarray(h[..., 6:]) == 0)


@pytest.mark.parametrize("readout", ["last", "all", "mean"])
def test_lengths_equal_unpadded_sequences(readout):
    cfg = RNNConfig(width=9, input_dim=2, activation="tanh", sigma_b=0.5, readout=readout)
    p = init_params(cfg, jax.random.key(7), jnp.float64)
    x = jax.random.normal(jax.random.key(8), (3, 6, 2), jnp.float64)
    lengths = jnp.array([6, 2, 4])
    # padding content must not matter
    x_noisy = x.at[1, 2:].set(100.0).at[2, 4:].set(-50.0)
    out = rnn_ntk.apply(cfg, p, x_noisy, lengths)
    for i, L in enumerate([6, 2, 4]):
        alone = rnn_ntk.apply(cfg, p, x[i:i + 1, :L])[0]
        if readout == "all":
            np.testing.assert_allclose(out[i, :L], alone, rtol=1e-13)
            assert np.all(np.asarray(out[i, L:]) == 0)
        else:
            np.testing.assert_allclose(out[i], alone, rtol=1e-13)


def test_flax_module_is_the_same_math():
    cfg = RNNConfig(width=5, input_dim=2, activation="erf", readout="mean", sigma_b=0.2)
    x = jax.random.normal(jax.random.key(9), (3, 4, 2))
    module = rnn_ntk.ElmanRNN(cfg)
    variables = module.init(jax.random.key(0), x)
    assert {g: a.shape for g, a in variables["params"].items()} == {
        "W": (5, 5), "U": (5, 2), "b": (5,), "v": (5, 1)}
    np.testing.assert_allclose(module.apply(variables, x),
                               rnn_ntk.apply(cfg, variables["params"], x), rtol=1e-13)


def test_scales_are_traceable_without_recompiling():
    cfg = RNNConfig(width=4, input_dim=2)
    p = init_params(cfg, jax.random.key(0))
    x = jnp.ones((2, 3, 2))
    traces = []

    @jax.jit
    def f(s):
        traces.append(1)
        return rnn_ntk.apply(cfg, p, x, scales=s)

    a = f(cfg.scales(jnp.float64))
    b = f(cfg.replace(sigma_w=2.0).scales(jnp.float64))
    assert len(traces) == 1 and not np.allclose(a, b)
    np.testing.assert_allclose(b, rnn_ntk.apply(cfg.replace(sigma_w=2.0), p, x), rtol=1e-13)


def test_pattern_is_relu_sign_pattern():
    cfg = RNNConfig(width=5, input_dim=2)
    p = init_params(cfg, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 3, 2))
    h, g = forward(cfg, p, x)
    np.testing.assert_array_equal(rnn_ntk.model.pattern(cfg, p, x), g > 0)
    np.testing.assert_array_equal(h > 0, g > 0)


@pytest.mark.parametrize("field,value,fragment", [
    ("width", 0, "width: must be a positive integer, got 0"),
    ("width", 2.5, "width: must be an integer, got 2.5"),
    ("input_dim", -1, "input_dim: must be a positive integer, got -1"),
    ("output_dim", True, "output_dim: must be an integer, got True"),
    ("activation", "sigmoid", "activation: must be one of"),
    ("activation", "rleu", "(did you mean 'relu'?)"),
    ("readout", "first", "readout: must be one of ['last', 'all', 'mean'], got 'first'"),
    ("sigma_w", -1.0, "sigma_w: must be >= 0, got -1.0"),
    ("sigma_v", float("nan"), "sigma_v: must be finite, got nan"),
    ("sigma_u", float("inf"), "sigma_u: must be finite, got inf"),
    ("sigma_b", "big", "sigma_b: must be a number, got 'big'"),
    ("sigma_b", np.ones(2), "sigma_b: must be a number"),        # an array is not a static scale
    ("trainable", (), "trainable: must name at least one"),
    ("trainable", ("W", "A"), "unknown group(s) ['A']"),
    ("trainable", ("W", "W"), "trainable: repeated groups ['W', 'W']"),
    ("trainable", [1], "trainable: must be a list of strings"),
    ("recurrence", "sparse", "recurrence: must be one of"),
])
def test_bad_config_fields_give_one_line_errors(field, value, fragment):
    kw = dict(width=4, input_dim=2)
    kw[field] = value
    with pytest.raises(ConfigError) as err:
        RNNConfig(**kw)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg and field in msg


def test_trainable_is_canonical():
    assert RNNConfig(width=2, input_dim=1, trainable=("v", "W")).trainable == ("W", "v")
    assert RNNConfig(width=2, input_dim=1, trainable="Wv").trainable == ("W", "v")
    assert set(ACTIVATIONS) == {"relu", "erf", "tanh", "gelu", "softplus", "identity"}
