"""sigma_h: the random initial state h_0 ~ N(0, sigma_h^2 I) per sequence (Alemohammad et al.,
"The Recurrent Neural Tangent Kernel", ICLR 2021), in the model, both kernels and training.

Independent checks:
- the network: a numpy recursion started from the model's h_0 (model.initial_state) against
  model.apply; the law of h_0 (Kolmogorov-Smirnov against N(0, sigma_h^2), decorrelation across
  sequences); its identity semantics (equal sequences in any padded batch share h_0);
- the infinite-width kernels: a plain numpy recursion over the whole time grid, written from the
  spec (ReLU closed forms), and Monte-Carlo output covariances of networks written in this file
  with iid Gaussian h_0 per sequence;
- the empirical NTK: the structured contraction against per-example Jacobians, and its mean over
  networks (parameters and h0_seed) approaching the infinite-width NTK as the width grows;
- training: the engine's first recorded loss equals the loss of model.apply on its own data.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from rnn_ntk import train as train_mod
from rnn_ntk.kernels import empirical_ntk, infinite_kernels
from rnn_ntk.kernels.infinite import sequence_ids
from rnn_ntk.model import (ConfigError, RNNConfig, apply, init_params, initial_state,
                           sequence_hash)

SH = 0.8


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("kw", [dict(sigma_h=-0.1), dict(sigma_h=float("nan")),
                                dict(sigma_h="1"), dict(h0_seed=-1), dict(h0_seed=1.5),
                                dict(h0_seed=True), dict(h0_seed=2 ** 31)])
def test_bad_sigma_h_fields_raise_one_line_errors(kw):
    with pytest.raises(ConfigError) as e:
        RNNConfig(width=4, input_dim=1, **kw)
    assert "\n" not in str(e.value) and next(iter(kw)) in str(e.value)


def test_default_is_a_zero_initial_state():
    cfg = RNNConfig(width=6, input_dim=2)
    assert cfg.sigma_h == 0.0
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 2)))
    assert np.all(np.asarray(initial_state(cfg, x, None, 6, jnp.float64)) == 0.0)


# --------------------------------------------------------------------------- h_0 itself
def test_h0_identity_follows_values_and_lengths_not_padding():
    rng = np.random.default_rng(1)
    cfg = RNNConfig(width=16, input_dim=2, sigma_h=SH, h0_seed=3)
    a = rng.normal(size=(4, 2))
    a[1, 0] = 0.0
    x5 = np.zeros((3, 5, 2))
    x5[0, :4] = a                                  # length 4, padded to 5 with zeros
    x5[1, :4] = a
    x5[1, 4] = 7.0                                 # same first 4 steps but length 5
    x5[2, :4] = a
    x5[2, 4] = np.nan                              # padding content is never read
    x4 = a[None].copy()
    x4[0, 1, 0] = -0.0                             # -0.0 is the same value as 0.0
    h5 = np.asarray(initial_state(cfg, jnp.asarray(x5), jnp.asarray([4, 5, 4]), 16, jnp.float64))
    h4 = np.asarray(initial_state(cfg, jnp.asarray(x4), None, 16, jnp.float64))
    np.testing.assert_array_equal(h5[0], h4[0])
    np.testing.assert_array_equal(h5[2], h4[0])
    assert np.all(h5[1] != h5[0])
    # another seed or a changed value gives another draw; the width-8 draw is a prefix
    h4b = np.asarray(initial_state(cfg.replace(h0_seed=4), jnp.asarray(x4), None, 16, jnp.float64))
    x4c = x4.copy()
    x4c[0, 3, 1] = np.nextafter(x4c[0, 3, 1], np.inf)
    h4c = np.asarray(initial_state(cfg, jnp.asarray(x4c), None, 16, jnp.float64))
    assert np.all(h4b != h4) and np.all(h4c != h4)
    h8 = np.asarray(initial_state(cfg, jnp.asarray(x4), None, 16, jnp.float64, width=8))
    np.testing.assert_array_equal(h8[:, :8], h4[:, :8])
    assert np.all(h8[:, 8:] == 0.0)
    ids = sequence_ids((x5, np.array([4, 5, 4])), (x4, np.array([4])))
    assert list(ids[0]) == [0, 1, 0] and list(ids[1]) == [0]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_h0_is_iid_gaussian_across_units_and_sequences(dtype):
    rng = np.random.default_rng(2)
    n, m = 300, 64
    cfg = RNNConfig(width=m, input_dim=1, sigma_h=SH)
    x = jnp.asarray(rng.normal(size=(n, 3, 1)), dtype)   # distinct sequences
    z = np.asarray(initial_state(cfg, x, None, m, dtype), np.float64) / SH
    assert sps.kstest(z.ravel(), "norm").pvalue > 1e-3
    hashes = np.asarray(sequence_hash(x))
    assert len(set(hashes.tolist())) == n
    C = z @ z.T / m                                        # ~ 1 on the diagonal, ~ N(0, 1/m) off
    off = C[~np.eye(n, dtype=bool)]
    assert abs(off.mean()) < 4 / math.sqrt(m * off.size / 2)
    assert abs(off.std() * math.sqrt(m) - 1.0) < 0.1
    assert abs(np.diag(C).mean() - 1.0) < 4 * math.sqrt(2 / (m * n))


# --------------------------------------------------------------------------- the network
def _np_forward(cfg, p, x, h0, lengths):
    """Plain numpy Elman recursion from h_0; returns the readout (n,) of output 0."""
    p = {g: np.asarray(a, np.float64) for g, a in p.items()}
    n, T, d = x.shape
    m = cfg.width
    phi = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}[cfg.activation]
    out = np.zeros(n)
    for i in range(n):
        h = h0[i].copy()
        fs = []
        for t in range(lengths[i]):
            rec = (cfg.sigma_w * p["W"] * h if cfg.recurrence == "diagonal"
                   else cfg.sigma_w / math.sqrt(m) * p["W"] @ h)
            h = phi(rec + cfg.sigma_u / math.sqrt(d) * p["U"] @ x[i, t] + cfg.sigma_b * p["b"])
            fs.append(cfg.sigma_v / math.sqrt(m) * p["v"][:, 0] @ h)
        out[i] = fs[-1] if cfg.readout == "last" else np.mean(fs)
    return out


@pytest.mark.parametrize("recurrence,readout", [("full", "last"), ("diagonal", "mean")])
def test_forward_starts_from_h0(recurrence, readout):
    rng = np.random.default_rng(3)
    cfg = RNNConfig(width=12, input_dim=2, activation="tanh", readout=readout, sigma_w=1.3,
                    sigma_b=0.2, sigma_h=SH, recurrence=recurrence)
    x = rng.normal(size=(4, 5, 2))
    lens = np.array([5, 2, 3, 1])
    p = init_params(cfg, jax.random.key(0))
    h0 = np.asarray(initial_state(cfg, jnp.asarray(x), jnp.asarray(lens), 12, jnp.float64))
    got = np.asarray(apply(cfg, p, jnp.asarray(x), jnp.asarray(lens)))[:, 0]
    np.testing.assert_allclose(got, _np_forward(cfg, p, x, h0, lens), rtol=1e-10, atol=1e-12)
    ref0 = _np_forward(cfg, p, x, np.zeros_like(h0), lens)
    assert np.all(np.abs(got - ref0) > 1e-6)          # h_0 changes every output


# --------------------------------------------------------------------------- infinite width
def _relu_V(a, c, b):
    if a * b == 0:
        return 0.0, 0.0            # relu'(0) = 0 in jax; V = 0 at zero variance
    r = min(1.0, max(-1.0, c / math.sqrt(a * b)))
    th = math.acos(r)
    return (math.sqrt(a * b) * (math.sin(th) + (math.pi - th) * math.cos(th)) / (2 * math.pi),
            (math.pi - th) / (2 * math.pi))


def _reference(cfg, x, lx, y, ly):
    """NNGP, NTK (T1, T2) grids of one pair by the spec's recursion, start-aligned, in numpy."""
    sw2, su2d, sb2, sv2, sh2 = (cfg.sigma_w ** 2, cfg.sigma_u ** 2 / cfg.input_dim,
                                cfg.sigma_b ** 2, cfg.sigma_v ** 2, cfg.sigma_h ** 2)
    tW, tU, tb, tv = (float(g in cfg.trainable) for g in "WUbv")
    same = lx == ly and np.array_equal(x[:lx], y[:ly])

    def q_of(z, l):
        q = []
        for t in range(l):
            prev = sh2 if t == 0 else _relu_V(q[-1], q[-1], q[-1])[0]
            q.append(sw2 * prev + su2d * z[t] @ z[t] + sb2)
        return q

    qx, qy = q_of(x, lx), q_of(y, ly)
    S = np.zeros((lx, ly))
    Th = np.zeros((lx, ly))
    K = np.zeros((lx, ly))
    N = np.zeros((lx, ly))
    for t in range(lx):
        for s in range(ly):
            if t == 0 or s == 0:
                P, VdTh = (sh2 * same if t == s == 0 else 0.0), 0.0
            else:
                P, Vd = _relu_V(qx[t - 1], S[t - 1, s - 1], qy[s - 1])
                VdTh = Vd * Th[t - 1, s - 1]
            G = su2d * x[t] @ y[s]
            S[t, s] = sw2 * P + G + sb2
            Th[t, s] = tW * sw2 * P + tU * G + tb * sb2 + sw2 * VdTh
            V, Vd = _relu_V(qx[t], S[t, s], qy[s])
            K[t, s] = sv2 * V
            N[t, s] = sv2 * (tv * V + Vd * Th[t, s])
    return K, N


def _reference_kernels(cfg, x1, l1, x2, l2):
    n1, T1 = x1.shape[:2]
    n2, T2 = x2.shape[:2]
    shape = (n1, T1, n2, T2) if cfg.readout == "all" else (n1, n2)
    K, N = np.zeros(shape), np.zeros(shape)
    for a in range(n1):
        for b in range(n2):
            k, nt = _reference(cfg, x1[a], l1[a], x2[b], l2[b])
            if cfg.readout == "last":
                K[a, b], N[a, b] = k[-1, -1], nt[-1, -1]
            elif cfg.readout == "mean":
                K[a, b], N[a, b] = k.mean(), nt.mean()
            else:
                K[a, :l1[a], b, :l2[b]], N[a, :l1[a], b, :l2[b]] = k, nt
    return K, N


def _pairs_with_duplicates(rng, d=2):
    """x1 (4, 4, d) lengths [4, 3, 4, 2]; x2 (3, 5, d) lengths [4, 5, 3]: x2[0] = x1[0]
    (same sequence, other padding), x2[2] = x1[1]; x1[3] shares x1[2]'s first two steps
    (a different, shorter sequence)."""
    x1 = rng.normal(size=(4, 4, d))
    l1 = np.array([4, 3, 4, 2])
    x2 = rng.normal(size=(3, 5, d))
    l2 = np.array([4, 5, 3])
    x2[0, :4] = x1[0]
    x2[2, :3] = x1[1, :3]
    x1[3, :2] = x1[2, :2]
    return x1, l1, x2, l2


@pytest.mark.parametrize("readout,trainable", [("last", ("W", "U", "b", "v")), ("mean", ("W",)),
                                               ("all", ("U", "b", "v"))])
def test_infinite_kernels_match_a_numpy_recursion(readout, trainable):
    rng = np.random.default_rng(4)
    cfg = RNNConfig(width=1, input_dim=2, readout=readout, sigma_w=1.4, sigma_u=0.9,
                    sigma_b=0.3, sigma_v=1.1, sigma_h=SH, trainable=trainable)
    x1, l1, x2, l2 = _pairs_with_duplicates(rng)
    K, N = infinite_kernels(cfg, x1, x2, lengths1=l1, lengths2=l2)
    Kr, Nr = _reference_kernels(cfg, x1, l1, x2, l2)
    np.testing.assert_allclose(np.asarray(K), Kr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(N), Nr, rtol=1e-10, atol=1e-12)
    # and the h_0 term is really there: sigma_h = 0 differs on the duplicates
    K0, _ = infinite_kernels(cfg.replace(sigma_h=0.0), x1, x2, lengths1=l1, lengths2=l2)
    K0r, _ = _reference_kernels(cfg.replace(sigma_h=0.0), x1, l1, x2, l2)
    np.testing.assert_allclose(np.asarray(K0), K0r, rtol=1e-10, atol=1e-12)
    if readout != "all":
        assert abs(K[0, 0] - K0[0, 0]) > 1e-3


def test_same_sequence_term_is_white_noise_on_the_gram_diagonal():
    rng = np.random.default_rng(5)
    cfg = RNNConfig(width=1, input_dim=1, sigma_w=1.4, sigma_b=0.5, sigma_h=1.0)
    x = rng.normal(size=(5, 6, 1))
    K, N = infinite_kernels(cfg, x)                       # symmetric path
    Kc, Nc = infinite_kernels(cfg, x, x.copy())           # x2 = a copy: the same sequences
    np.testing.assert_allclose(np.asarray(Kc), np.asarray(K), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(Nc), np.asarray(N), rtol=1e-12)
    xp = x + 1e-12                                        # not the same sequences any more
    Kp, _ = infinite_kernels(cfg, x, xp)
    K0, _ = infinite_kernels(cfg.replace(sigma_h=0.0), x, xp)
    off = ~np.eye(5, dtype=bool)
    np.testing.assert_allclose(np.asarray(Kp)[off], np.asarray(K)[off], rtol=1e-8)
    assert np.all(np.diag(np.asarray(K)) > np.diag(np.asarray(Kp)) + 1e-3)
    # off the diagonal of the perturbed pair, the only difference from sigma_h = 0 is through q
    # (the variances); with sigma_h = 0 and no duplicates the kernels equal today's code's
    assert np.all(np.asarray(K0) != np.asarray(Kp))


def _np_net_outputs(cfg, params, h0, x):
    """Outputs (nets, n) of a jnp Elman net written here, iid h_0 given per (net, sequence)."""
    m, d = params["b"].shape[-1], x.shape[-1]

    def one(p, h0_NM):
        def step(h, x_t):
            h = jax.nn.relu(cfg.sigma_w / math.sqrt(m) * h @ p["W"].T
                            + cfg.sigma_u / math.sqrt(d) * x_t @ p["U"].T
                            + cfg.sigma_b * p["b"][None, :])
            return h, h @ p["v"][:, 0] * (cfg.sigma_v / math.sqrt(m))
        _, f_TN = jax.lax.scan(step, h0_NM, jnp.swapaxes(x, 0, 1))
        return f_TN[-1] if cfg.readout == "last" else f_TN.mean(0)

    return jax.jit(jax.vmap(one))(params, h0)


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_nngp_matches_monte_carlo_with_iid_gaussian_h0(readout):
    rng = np.random.default_rng(6)
    n_nets, m = 800, 64
    cfg = RNNConfig(width=m, input_dim=2, readout=readout, sigma_w=1.3, sigma_b=0.4,
                    sigma_v=1.1, sigma_h=1.0)
    x = rng.normal(size=(4, 3, 2))
    x[3] = x[0]                                            # a duplicate: shares h_0
    keys = jax.random.split(jax.random.key(7), n_nets)
    params = jax.vmap(lambda k: init_params(cfg, k))(keys)
    z = rng.normal(size=(n_nets, 3, m))                    # one h_0 per distinct sequence
    h0 = cfg.sigma_h * z[:, [0, 1, 2, 0]]
    f = np.asarray(_np_net_outputs(cfg, params, jnp.asarray(h0), jnp.asarray(x)))
    prods = f[:, :, None] * f[:, None, :]
    emp, se = prods.mean(0), prods.std(0) / math.sqrt(n_nets)
    K, _ = infinite_kernels(cfg, x)
    K = np.asarray(K)
    zsc = np.abs(emp - K) / se
    assert zsc.max() < 4.5, zsc.max()
    # the h_0 term matters here: sigma_h = 0 is far outside the noise on the diagonal
    K0, _ = infinite_kernels(cfg.replace(sigma_h=0.0), x)
    assert np.max(np.abs(emp - np.asarray(K0)) / se) > 6


# --------------------------------------------------------------------------- empirical NTK
@pytest.mark.parametrize("readout,recurrence,trainable", [
    ("last", "full", ("W", "U", "b", "v")), ("mean", "full", ("W",)),
    ("all", "full", ("W", "v")), ("last", "diagonal", ("W", "U"))])
def test_structured_empirical_ntk_equals_jacobians(readout, recurrence, trainable):
    rng = np.random.default_rng(8)
    cfg = RNNConfig(width=10, input_dim=2, output_dim=2, readout=readout, sigma_w=1.2,
                    sigma_b=0.3, sigma_h=SH, trainable=trainable, recurrence=recurrence)
    x1, l1, x2, l2 = _pairs_with_duplicates(rng)
    p = init_params(cfg, jax.random.key(1))
    kw = dict(lengths1=jnp.asarray(l1), lengths2=jnp.asarray(l2))
    K = empirical_ntk(cfg, p, jnp.asarray(x1), jnp.asarray(x2), **kw)
    J = empirical_ntk(cfg, p, jnp.asarray(x1), jnp.asarray(x2), method="jacobian", **kw)
    np.testing.assert_allclose(np.asarray(K), np.asarray(J), rtol=1e-9, atol=1e-11)
    if "W" in trainable:                 # h_0 reaches the W part: sigma_h = 0 differs
        K0 = empirical_ntk(cfg.replace(sigma_h=0.0), p, jnp.asarray(x1), jnp.asarray(x2), **kw)
        assert np.abs(np.asarray(K0) - np.asarray(K)).max() > 1e-3


def test_empirical_ntk_mean_approaches_infinite_ntk_with_width():
    rng = np.random.default_rng(9)
    widths, h0_seeds, p_seeds = (32, 512), 4, 4
    M = max(widths)
    cfg = RNNConfig(width=M, input_dim=2, readout="last", sigma_w=1.3, sigma_b=0.3,
                    sigma_h=1.0, trainable=("W", "U"))
    x = rng.normal(size=(4, 3, 2))
    x[3] = x[0]
    _, N = infinite_kernels(cfg, x)
    N = np.asarray(N)
    means = []
    for m in widths:
        Ks = []
        for s in range(h0_seeds):
            c = cfg.replace(h0_seed=s)
            keys = jax.random.split(jax.random.fold_in(jax.random.key(10), s), p_seeds)
            params = jax.vmap(lambda k: init_params(c, k, width=m))(keys)   # padded to M
            Ks.append(np.asarray(empirical_ntk(c, params, jnp.asarray(x),
                                               scales=c.scales()._replace(width=float(m)))))
        means.append(np.concatenate(Ks).mean(0))
    errs = [np.abs(E - N).max() / np.abs(N).max() for E in means]
    assert errs[1] < 0.5 * errs[0], errs               # 16x the width: error falls (~4x)
    assert errs[1] < 0.1, errs
    _, N0 = infinite_kernels(cfg.replace(sigma_h=0.0), x)
    assert np.abs(means[1] - np.asarray(N0)).max() / np.abs(N).max() > 3 * errs[1]


# --------------------------------------------------------------------------- training
def test_training_uses_the_same_h0_as_the_model():
    from rnn_ntk import tasks
    mcfg = RNNConfig(width=16, input_dim=3, sigma_w=1.2, sigma_h=SH, h0_seed=5)
    tcfg = tasks.TaskConfig(kind="wang_additive", n_train=8, n_test=8, length=4, input_dim=3)
    cfg = train_mod.TrainConfig(model=mcfg, task=tcfg, steps=2, log_every=1, dtype="float64")
    key = jax.random.key(0)
    hp = train_mod.default_hparams(cfg)
    setup = train_mod.setup_run(cfg, key, hp)
    # the run's own data, fixed: h_0 hashes x's bits, and a data draw compiled into another program
    # may round x 1 ulp apart (then another h_0 is drawn, as for any other input)
    rec = jax.jit(train_mod.make_train(cfg, data=setup.data))(key, hp)
    for h0_cfg, match in ((mcfg, True), (mcfg.replace(sigma_h=0.0), False)):
        pred = apply(h0_cfg, setup.params0, setup.data.x_train)
        loss = float(train_mod.loss_value(cfg, pred, setup.data.y_train))
        assert np.isclose(float(rec["train_loss"][0]), loss, rtol=1e-10) == match
