"""Tests of rnn_ntk.tasks: shapes, the papers' input geometry, target formulas against direct numpy
loops, normalisation (Monte-Carlo), determinism, label noise, jit/vmap and config errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_ntk import model
from rnn_ntk import tasks as T
from rnn_ntk.model import ConfigError

KINDS = T.TASK_KINDS
KEY = jax.random.key(7)


def make_cfg(kind, target="last", n_train=8, n_test=6, length=5, input_dim=4, output_dim=2, **kw):
    if kind != "random_labels":
        kw.setdefault("n_ref", 512)
    return T.TaskConfig(kind=kind, n_train=n_train, n_test=n_test, length=length,
                        input_dim=input_dim, output_dim=output_dim, target=target, **kw)


def np_link(name):
    return {"sin": np.sin, "tanh": np.tanh, "linear": lambda s: s}[name]


def np_sphere(rng, shape, dim):
    g = rng.standard_normal(shape + (dim,))
    return g / np.linalg.norm(g, axis=-1, keepdims=True)


def min_pair_distance(x):
    x = np.asarray(x, np.float64)
    D = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    D[np.arange(len(x)), np.arange(len(x))] = np.inf
    return D.min()


# ---------------------------------------------------------------------------------------------
# shapes, dtypes, determinism

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", ["last", "all"])
def test_shapes_and_dtypes(kind, target):
    c = make_cfg(kind, target)
    for dtype in ((jnp.float32, jnp.float64) if target == "all" else (jnp.float32,)):
        d = T.sample_task(c, KEY, T.default_task_hparams(c), dtype=dtype)
        y_shape = (c.n_train, c.output_dim) if target == "last" else (c.n_train, c.length, c.output_dim)
        assert d.x_train.shape == (8, 5, 4) and d.x_test.shape == (6, 5, 4)
        assert d.y_train.shape == y_shape
        assert d.y_test.shape == (6,) + y_shape[1:]
        for a in d:
            assert a.dtype == dtype
            assert np.all(np.isfinite(np.asarray(a)))
    d = T.sample_task(c, KEY)  # thp optional, float32 default
    assert d.x_train.dtype == jnp.float32 and d.y_train.dtype == jnp.float32


@pytest.mark.parametrize("kind", KINDS)
def test_same_key_same_data_and_different_keys_differ(kind):
    c = make_cfg(kind, "all")
    a = T.sample_task(c, KEY)
    b = T.sample_task(c, KEY)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    other = T.sample_task(c, jax.random.key(8))
    assert not np.allclose(np.asarray(a.x_train), np.asarray(other.x_train))
    assert not np.allclose(np.asarray(a.y_train), np.asarray(other.y_train))
    # train and test are different draws
    assert not np.allclose(np.asarray(a.x_train[:6]), np.asarray(a.x_test))
    if kind != "concept":  # concept first tokens are shared by design; later tokens differ
        assert not np.allclose(np.asarray(a.x_train[:6, 0]), np.asarray(a.x_test[:, 0]))


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "random_labels"])
def test_train_and_test_share_the_target_function(kind):
    c = make_cfg(kind, "all")
    for dtype in (jnp.float32, jnp.float64):
        d = T.sample_task(c, KEY, dtype=dtype)
        tp = T.target_params(c, KEY, dtype=dtype)
        rtol = 1e-5 if dtype == jnp.float32 else 1e-12
        np.testing.assert_allclose(np.asarray(T.target_values(c, tp, d.x_train)),
                                   np.asarray(d.y_train), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(np.asarray(T.target_values(c, tp, d.x_test)),
                                   np.asarray(d.y_test), rtol=rtol, atol=rtol)
    # the target function does not depend on the data keys: a different key changes it
    tp2 = T.target_params(c, jax.random.key(8))
    x = T.sample_task(c, KEY).x_test
    assert not np.allclose(np.asarray(T.target_values(c, tp2, x)), np.asarray(T.sample_task(c, KEY).y_test))


# ---------------------------------------------------------------------------------------------
# random labels (Allen-Zhu, Li & Song)

def test_random_labels_geometry_and_separation():
    c = make_cfg("random_labels", "all", n_train=150, n_test=120, length=4, input_dim=10)
    delta = 0.05
    d = T.sample_task(c, KEY, {"delta": delta, "eps_x": 0.6})
    for x in (d.x_train, d.x_test):
        x = np.asarray(x, np.float64)
        norms = np.linalg.norm(x, axis=-1)
        np.testing.assert_allclose(norms[:, 0], 1.0, atol=1e-6)
        np.testing.assert_allclose(x[:, 0, -1], 1 / math.sqrt(2), atol=1e-7)
        np.testing.assert_allclose(norms[:, 1:], 0.6, atol=1e-6)
        assert norms.max() <= 1 + 1e-6
        # the knob promises min pairwise first-token separation == delta (when achievable)
        np.testing.assert_allclose(min_pair_distance(x[:, 0, :]), delta, rtol=1e-4)
    st = T.task_stats(c, d)
    np.testing.assert_allclose(st["delta_train"], min_pair_distance(d.x_train[:, 0, :]), rtol=1e-6)
    np.testing.assert_allclose(st["delta_test"], min_pair_distance(d.x_test[:, 0, :]), rtol=1e-6)
    np.testing.assert_allclose(st["token_norm_max"], 0.6, atol=1e-6)
    np.testing.assert_allclose(st["first_token_norm_min"], 1.0, atol=1e-6)
    np.testing.assert_allclose(st["first_token_last_coord_max"], 1 / math.sqrt(2), atol=1e-7)
    # larger delta -> larger separation, same directions
    d2 = T.sample_task(c, KEY, {"delta": 2 * delta, "eps_x": 0.6})
    np.testing.assert_allclose(min_pair_distance(d2.x_train[:, 0, :]), 2 * delta, rtol=1e-4)


def test_random_labels_delta_extremes():
    c = make_cfg("random_labels", n_train=60, input_dim=6)
    # delta = 0: all first tokens coincide
    x0 = np.asarray(T.sample_task(c, KEY, {"delta": 0.0}).x_train)
    np.testing.assert_allclose(x0[:, 0, :], np.broadcast_to(x0[:1, 0, :], x0[:, 0, :].shape), atol=1e-7)
    # delta beyond what the random directions allow: capped (first coordinate 0), still unit norm
    x = np.asarray(T.sample_task(c, KEY, {"delta": 1.4}).x_train, np.float64)
    sep = min_pair_distance(x[:, 0, :])
    assert 0 < sep < 1.4
    np.testing.assert_allclose(x[:, 0, 0], 0.0, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(x[:, 0, :], axis=-1), 1.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# normalisation: label mean ~ 0 and variance ~ 1 (Monte-Carlo over a large test set)

@pytest.mark.parametrize("kind", KINDS)
def test_label_mean_and_variance(kind):
    kw = {} if kind == "random_labels" else {"n_ref": 4096}
    c = T.TaskConfig(kind=kind, n_train=2, n_test=6000, length=4, input_dim=4, output_dim=2,
                     target="all", **kw)
    y = np.asarray(T.sample_task(c, KEY).y_test, np.float64)       # (n, T, k)
    # positions where the target is standardised to variance 1
    pos = {"random_labels": [0, 1, 2, 3], "concept": [1, 2, 3], "wang_additive": [0, 1, 2, 3],
           "wang_nvar": [3], "lag": [3], "state_space": [3], "teacher": [3]}[kind]
    for t in pos:
        for k in range(2):
            assert abs(y[:, t, k].mean()) < 0.08, (t, k, y[:, t, k].mean())
            assert abs(y[:, t, k].var() - 1.0) < 0.15, (t, k, y[:, t, k].var())
    if kind == "concept":
        np.testing.assert_array_equal(y[:, 0, :], 0.0)
    if kind == "lag":  # default lag 2: y_1 = y_2 = 0
        np.testing.assert_array_equal(y[:, :2, :], 0.0)


# ---------------------------------------------------------------------------------------------
# concept class (Allen-Zhu & Li)

PHIS_NP = (np.square, np.sin, np.cos, np.exp)


@pytest.mark.parametrize("target", ["last", "all"])
def test_concept_formula_against_numpy_loop(target):
    p, eps = 5, 0.7   # p = 5 wraps around the 4 phis
    c = make_cfg("concept", target, n_train=3, n_test=2, length=5, input_dim=4, n_terms=p)
    thp = {"eps_x": eps}
    d = T.sample_task(c, KEY, thp, dtype=jnp.float64)
    tp = {k: np.asarray(v) for k, v in T.target_params(c, KEY, thp, dtype=jnp.float64).items()}
    a, w, mu, sd = tp["a"], tp["w"], tp["mu"], tp["sd"]
    x = np.asarray(d.x_test)
    n, Tn, dim = x.shape
    # geometry: fixed first token; later tokens of norm eps with last coordinate 0
    first = np.zeros(dim)
    first[0] = first[-1] = 1 / math.sqrt(2)
    np.testing.assert_allclose(x[:, 0, :], np.broadcast_to(first, (n, dim)), atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(x[:, 1:, :], axis=-1), eps, atol=1e-12)
    np.testing.assert_array_equal(x[:, 1:, -1], 0.0)
    y = np.zeros((n, Tn, 2))
    for s in range(n):
        for t in range(1, Tn):          # 0-indexed position t uses z_1..z_l, l = t
            l = t
            for kk in range(2):
                tot = 0.0
                for i in range(l):
                    S = 0.0
                    for j in range(p):
                        S += a[i, j, kk] * PHIS_NP[j % 4](np.dot(w[i, j], x[s, i + 1]))
                    tot += (S - mu[i, kk]) / sd[i, kk]
                y[s, t, kk] = tot / math.sqrt(l)
    want = y[:, -1, :] if target == "last" else y
    np.testing.assert_allclose(np.asarray(d.y_test), want, rtol=1e-11, atol=1e-12)


def test_concept_standardisation_constants_match_independent_monte_carlo():
    p, eps = 3, 0.9
    c = make_cfg("concept", length=4, input_dim=5, output_dim=1, n_terms=p, n_ref=20000)
    tp = {k: np.asarray(v) for k, v in T.target_params(c, KEY, {"eps_x": eps}, jnp.float64).items()}
    rng = np.random.default_rng(0)
    z = np.concatenate([eps * np_sphere(rng, (200000,), 4), np.zeros((200000, 1))], axis=1)
    for i in range(3):
        S = sum(tp["a"][i, j, 0] * PHIS_NP[j](z @ tp["w"][i, j]) for j in range(p))
        np.testing.assert_allclose(tp["mu"][i, 0], S.mean(), atol=0.03 * S.std())
        np.testing.assert_allclose(tp["sd"][i, 0], S.std(), rtol=0.04)


# ---------------------------------------------------------------------------------------------
# Wang et al.

def test_nvar_offsets():
    assert T.nvar_offsets(make_cfg("wang_nvar", length=8, n_vars=3, span=5)) == (0, 3, 5)
    assert T.nvar_offsets(make_cfg("wang_nvar", length=8, n_vars=4, span=3)) == (0, 1, 2, 3)
    assert T.nvar_offsets(make_cfg("wang_nvar", length=8, n_vars=1, span=0)) == (0,)


@pytest.mark.parametrize("link", ["sin", "tanh"])
def test_wang_nvar_last_depends_only_on_its_positions(link):
    c = make_cfg("wang_nvar", "last", n_test=4, length=8, input_dim=3, n_vars=3, span=5, link=link)
    d = T.sample_task(c, KEY, dtype=jnp.float64)
    tp = T.target_params(c, KEY, dtype=jnp.float64)
    x = np.asarray(d.x_test)
    y = np.asarray(d.y_test)
    positions = [2, 5, 7]           # T - 1 - span + offsets (0, 3, 5), ending at the last step
    beta, cc = np.asarray(tp["beta"]), np.asarray(tp["c"])
    s = sum(x[:, pp, :] @ beta[j] for j, pp in enumerate(positions))
    np.testing.assert_allclose(y, cc[None, :] * np_link(link)(s), rtol=1e-12, atol=1e-13)
    rng = np.random.default_rng(1)
    for pos in range(8):
        xp = x.copy()
        xp[:, pos, :] = np_sphere(rng, (4,), 3)
        yp = np.asarray(T.target_values(c, tp, jnp.asarray(xp)))
        if pos in positions:
            assert np.all(np.abs(yp - y) > 1e-8)
        else:
            np.testing.assert_array_equal(yp, y)


def test_wang_nvar_all_window_ends_at_each_step():
    c = make_cfg("wang_nvar", "all", n_test=3, length=7, input_dim=3, n_vars=2, span=3)
    tp = T.target_params(c, KEY, dtype=jnp.float64)
    x = np.asarray(T.sample_task(c, KEY, dtype=jnp.float64).x_test)
    y = np.asarray(T.target_values(c, tp, jnp.asarray(x)))
    beta, cc = np.asarray(tp["beta"]), np.asarray(tp["c"])
    want = np.zeros_like(y)
    for t in range(7):                       # positions t - 3 and t, zero tokens before the start
        s = sum(x[:, t - 3 + o, :] @ beta[j] for j, o in enumerate((0, 3)) if t - 3 + o >= 0)
        want[:, t, :] = cc[None, :] * np.sin(s)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-13)
    rng = np.random.default_rng(2)
    for pos in range(7):
        xp = x.copy()
        xp[:, pos, :] = np_sphere(rng, (3,), 3)
        changed = np.any(np.abs(np.asarray(T.target_values(c, tp, jnp.asarray(xp))) - y) > 0, axis=(0, 2))
        expect = np.zeros(7, bool)
        expect[[t for t in (pos, pos + 3) if t < 7]] = True
        np.testing.assert_array_equal(changed, expect)


@pytest.mark.parametrize("target", ["last", "all"])
def test_wang_additive_formula(target):
    c = make_cfg("wang_additive", target, n_test=4, length=5, input_dim=3, link="tanh")
    d = T.sample_task(c, KEY, {"eps_x": 0.5}, dtype=jnp.float64)
    tp = T.target_params(c, KEY, {"eps_x": 0.5}, dtype=jnp.float64)
    x = np.asarray(d.x_test)
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 0.5, atol=1e-12)
    beta, var = np.asarray(tp["beta"]), np.asarray(tp["var"])
    want = np.zeros((4, 5, 2))
    for t in range(5):
        for k in range(2):
            want[:, t, k] = sum(np.tanh(x[:, l, :] @ beta[l, :, k]) for l in range(t + 1)) \
                / math.sqrt(sum(var[l, k] for l in range(t + 1)))
    want = want[:, -1, :] if target == "last" else want
    np.testing.assert_allclose(np.asarray(d.y_test), want, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# dynamical systems (Cayci & Eryilmaz)

@pytest.mark.parametrize("target", ["last", "all"])
def test_lag_target_is_exactly_g_of_lagged_token_and_lag_is_traced(target):
    c = make_cfg("lag", target, n_test=5, length=6, input_dim=3)
    traces = []

    def f(key, thp):
        traces.append(1)
        return T.sample_task(c, key, thp, dtype=jnp.float64), T.target_params(c, key, thp, jnp.float64)

    jf = jax.jit(f)
    for lag in (0.0, 1.0, 3.0, 5.0):
        d, tp = jf(KEY, {"lag": lag, "eps_x": 1.0, "label_noise": 0.0})
        x = np.asarray(d.x_test)
        beta, cc = np.asarray(tp["beta"]), np.asarray(tp["c"])
        want = np.zeros((5, 6, 2))
        k = int(lag)
        for t in range(6):
            if t - k >= 0:
                want[:, t, :] = cc[None, :] * np.sin(x[:, t - k, :] @ beta)
        want = want[:, -1, :] if target == "last" else want
        np.testing.assert_allclose(np.asarray(d.y_test), want, rtol=1e-12, atol=1e-14)
    assert len(traces) == 1


def np_state_space(tp, x):
    A, B, C, rho = (np.asarray(tp[k]) for k in ("A", "B", "C", "rho"))
    n, Tn, _ = x.shape
    s = np.zeros((n, A.shape[0]))
    S = np.zeros((n, Tn, A.shape[0]))
    for t in range(Tn):
        for i in range(n):
            s[i] = rho * s[i] + (1 - rho) * np.tanh(A @ s[i] + B @ x[i, t])
        S[:, t] = s
    return S


def test_state_space_formula_bounded_and_fading_memory():
    c = make_cfg("state_space", "all", n_test=4, length=300, input_dim=3, state_dim=5)
    thp = {"rho": 0.99}
    d = T.sample_task(c, KEY, thp, dtype=jnp.float64)
    tp = T.target_params(c, KEY, thp, dtype=jnp.float64)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(tp["A"]), 2), 0.5, rtol=1e-10)
    x = np.asarray(d.x_test)
    S = np_state_space(tp, x)
    np.testing.assert_allclose(np.asarray(T.state_space_states(tp, d.x_test)), S, rtol=1e-10, atol=1e-12)
    cc, C = np.asarray(tp["c"]), np.asarray(tp["C"])
    np.testing.assert_allclose(np.asarray(d.y_test), cc[None, None, :] * np.einsum("ntr,kr->ntk", S, C),
                               rtol=1e-10, atol=1e-12)
    # bounded for rho < 1: |s_t|_inf <= 1, hence |y_t,k| <= c_k sum_r |C_kr|
    assert np.abs(S).max() <= 1.0
    assert np.all(np.abs(np.asarray(d.y_test)) <= (cc * np.abs(C).sum(1))[None, None, :] + 1e-12)
    # fading memory: the map is a contraction with rate q = rho + (1 - rho) / 2 (2-norm)
    rho = 0.5
    q = rho + (1 - rho) / 2
    tp5 = dict(tp, rho=jnp.asarray(rho))
    x2 = x[:, :40].copy()
    x2b = x2.copy()
    x2b[:, 0, :] = -x2b[:, 0, :]
    sa = np.asarray(T.state_space_states(tp5, jnp.asarray(x2)))
    sb = np.asarray(T.state_space_states(tp5, jnp.asarray(x2b)))
    gap0 = np.linalg.norm(sa[:, 0] - sb[:, 0], axis=-1)
    gapT = np.linalg.norm(sa[:, -1] - sb[:, -1], axis=-1)
    assert np.all(gap0 > 0)
    assert np.all(gapT <= q ** 39 * gap0 + 1e-15)


@pytest.mark.parametrize("target", ["last", "all"])
def test_teacher_targets_equal_rnn_apply(target):
    c = make_cfg("teacher", target, n_test=5, length=6, input_dim=3, teacher_width=16,
                 teacher_activation="tanh")
    thp = {"teacher_sigma_w": 0.8, "eps_x": 0.9}
    d = T.sample_task(c, KEY, thp)
    tp = T.target_params(c, KEY, thp)
    cfg = model.RNNConfig(width=16, input_dim=3, output_dim=2, activation="tanh", readout=target,
                          sigma_w=0.8, sigma_u=math.sqrt(3), sigma_b=0.0, sigma_v=1.0)
    params = model.init_params(cfg, jax.random.fold_in(jax.random.fold_in(KEY, 2), 0), jnp.float32)
    for g in params:
        np.testing.assert_array_equal(np.asarray(tp["params"][g]), np.asarray(params[g]))
    cv = float(tp["scales"].sigma_v)
    assert 0 < cv < np.inf
    want = cv * np.asarray(model.apply(cfg, params, d.x_test))
    np.testing.assert_allclose(np.asarray(d.y_test), want, rtol=2e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# label noise, jit / vmap

@pytest.mark.parametrize("kind", KINDS)
def test_label_noise_only_on_train_labels_with_right_std(kind):
    c = make_cfg(kind, "all", n_train=800, n_test=5, length=4)
    clean = T.sample_task(c, KEY, {"label_noise": 0.0})
    noisy = T.sample_task(c, KEY, {"label_noise": 0.3})
    for a, b in ((clean.x_train, noisy.x_train), (clean.x_test, noisy.x_test),
                 (clean.y_test, noisy.y_test)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    diff = np.asarray(noisy.y_train, np.float64) - np.asarray(clean.y_train, np.float64)
    assert diff.size == 800 * 4 * 2
    assert abs(diff.mean()) < 0.02
    assert abs(diff.std() - 0.3) < 0.015


def _batched_thp(kind):
    hp = {"label_noise": jnp.asarray([0.0, 0.1, 0.2]), "eps_x": jnp.asarray([0.5, 0.8, 1.0])}
    hp.update({"random_labels": {"delta": jnp.asarray([0.01, 0.05, 0.1])},
               "lag": {"lag": jnp.asarray([0.0, 1.0, 3.0])},
               "state_space": {"rho": jnp.asarray([0.0, 0.5, 0.95])},
               "teacher": {"teacher_sigma_w": jnp.asarray([0.5, 1.0, 1.5])}}.get(kind, {}))
    return hp


@pytest.mark.parametrize("kind", KINDS)
def test_jit_and_vmap_over_keys_and_params_match_eager(kind):
    c = make_cfg(kind, "all", input_dim=5)
    keys = jax.random.split(jax.random.key(3), 3)
    hp = _batched_thp(kind)
    batched = jax.jit(jax.vmap(lambda k, h: T.sample_task(c, k, h)))(keys, hp)
    jitted = jax.jit(lambda k, h: T.sample_task(c, k, h))
    for i in range(3):
        hp_i = {name: float(v[i]) for name, v in hp.items()}
        with jax.disable_jit():          # op by op, scans as python loops
            eager = T.sample_task(c, keys[i], hp_i)
        one = jitted(keys[i], hp_i)
        for e, j, b in zip(eager, one, batched):
            np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=2e-5, atol=2e-6)
            np.testing.assert_allclose(np.asarray(b[i]), np.asarray(e), rtol=2e-5, atol=2e-6)
    # the knobs actually act: different values give different data
    assert not np.allclose(np.asarray(batched.x_train[0]), np.asarray(batched.x_train[1]))


def test_sweep_over_traced_params_compiles_once():
    c = make_cfg("state_space", "last")
    traces = []

    def f(key, thp):
        traces.append(1)
        return T.sample_task(c, key, thp)

    jf = jax.jit(f)
    outs = [jf(KEY, {"rho": r, "eps_x": e, "label_noise": s})
            for r, e, s in ((0.1, 1.0, 0.0), (0.5, 0.7, 0.1), (0.9, 0.3, 0.2))]
    assert len(traces) == 1
    assert not np.allclose(np.asarray(outs[0].y_test), np.asarray(outs[1].y_test))


# ---------------------------------------------------------------------------------------------
# errors

BAD_FIELDS = [
    ("kind", dict(kind="nope")),
    ("n_train", dict(n_train=0)),
    ("n_test", dict(n_test=2.5)),
    ("length", dict(length=-1)),
    ("input_dim", dict(input_dim=True)),
    ("output_dim", dict(output_dim=0)),
    ("target", dict(target="mean")),
    ("n_terms", dict(kind="concept", n_terms=0)),
    ("n_vars", dict(kind="wang_nvar", n_vars=0)),
    ("span", dict(kind="wang_nvar", n_vars=3, span=1)),
    ("span", dict(kind="wang_nvar", span=5, length=5)),
    ("span", dict(kind="wang_nvar", span=-1)),
    ("link", dict(kind="lag", link="relu")),
    ("state_dim", dict(kind="state_space", state_dim=0)),
    ("teacher_width", dict(kind="teacher", teacher_width=0)),
    ("teacher_activation", dict(kind="teacher", teacher_activation="swish")),
    ("n_ref", dict(kind="lag", n_ref=1)),
    ("input_dim", dict(kind="random_labels", input_dim=2)),
    ("input_dim", dict(kind="concept", input_dim=1)),
    ("length", dict(kind="concept", length=1)),
    # options of other kinds must stay at their defaults
    ("n_terms", dict(kind="lag", n_terms=4)),
    ("teacher_width", dict(kind="concept", teacher_width=8)),
    ("n_ref", dict(kind="random_labels", n_ref=100)),
    ("link", dict(kind="teacher", link="tanh")),
]


@pytest.mark.parametrize("field,changes", BAD_FIELDS)
def test_bad_config_field_one_line_error(field, changes):
    kw = dict(kind="lag", n_train=4, n_test=4, length=5, input_dim=3)
    kw.update(changes)
    with pytest.raises(ValueError) as e:
        T.TaskConfig(**kw)
    assert isinstance(e.value, ConfigError)
    msg = str(e.value)
    assert field in msg and "\n" not in msg


BAD_HPARAMS = [
    ("random_labels", "label_noise", -0.1),
    ("random_labels", "delta", -0.01),
    ("random_labels", "delta", 1.5),
    ("random_labels", "eps_x", 1.2),
    ("concept", "eps_x", 1.01),
    ("wang_additive", "eps_x", -1.0),
    ("state_space", "rho", 1.0),
    ("state_space", "rho", -0.2),
    ("lag", "lag", 1.5),
    ("lag", "lag", 5.0),     # target 'last' with T = 5 needs lag <= 4
    ("lag", "lag", float("nan")),
    ("teacher", "teacher_sigma_w", -1.0),
    ("teacher", "label_noise", np.array([0.1, -0.1])),   # arrays (a run axis) are checked too
]


@pytest.mark.parametrize("kind,name,value", BAD_HPARAMS)
def test_bad_task_hparam_one_line_error(kind, name, value):
    c = make_cfg(kind)
    with pytest.raises(ValueError) as e:
        T.sample_task(c, KEY, {name: value})
    msg = str(e.value)
    assert repr(name) in msg and "\n" not in msg


def test_misc_errors_and_defaults():
    c = make_cfg("random_labels")
    with pytest.raises(ConfigError, match="random_labels"):
        T.target_params(c, KEY)
    with pytest.raises(ConfigError, match="thp"):
        T.sample_task(c, KEY, [0.1])
    for kind in KINDS:
        hp = T.default_task_hparams(make_cfg(kind))
        assert hp["label_noise"] == 0.0 and all(isinstance(v, float) for v in hp.values())
    # extra keys (a trainer's whole hparams dict) are ignored
    d1 = T.sample_task(c, KEY, {"lr": 0.1, "delta": 0.1})
    d2 = T.sample_task(c, KEY, {"delta": 0.1})
    np.testing.assert_array_equal(np.asarray(d1.x_train), np.asarray(d2.x_train))
