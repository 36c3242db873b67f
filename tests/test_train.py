"""Training engine: trajectories against direct loops, lanes against single runs, padding, freezing,
divergence, projection, symmetric init, the linearised model, the kernel-change record."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_ntk import model
from rnn_ntk.kernels.empirical import empirical_ntk
from rnn_ntk.linearize import linearize
from rnn_ntk.model import ConfigError, RNNConfig
from rnn_ntk.tasks import TaskConfig
from rnn_ntk.train import (Layout, TrainConfig, batch_indices, choose_layout, default_hparams,
                           make_train, record_names, run_key, run_keys, setup_run, train_many)

D = 4  # random_labels needs input_dim >= 3


def _cfg(width=8, T=3, n=6, n_test=5, steps=4, log_every=2, target="last", trainable=("W", "U", "b", "v"),
         activation="relu", sigma_b=0.0, dtype="float64", **kw):
    readout = "all" if target == "all" else "last"
    mcfg = RNNConfig(width=width, input_dim=D, activation=activation, readout=readout,
                     sigma_b=sigma_b, trainable=trainable)
    tcfg = TaskConfig("random_labels", n_train=n, n_test=n_test, length=T, input_dim=D, target=target)
    return TrainConfig(mcfg, tcfg, steps=steps, log_every=log_every, dtype=dtype, **kw)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def _assert_records_close(a, b, rtol, atol=0.0):
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], dict):
            _assert_records_close(a[k], b[k], rtol, atol)
        else:
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=rtol, atol=atol,
                                       err_msg=k)


def _assert_records_equal(a, b):
    for k in a:
        if isinstance(a[k], dict):
            _assert_records_equal(a[k], b[k])
        else:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def _ref_loss(cfg, params, x, y, scales, w=None):
    """Independent loss: mean of squared residuals, or 1/2 sum over positions >= 2."""
    pred = model.apply(cfg.model, params, x, scales=scales)
    r2 = (pred - y) ** 2
    if cfg.loss == "sum_from_2":
        per = 0.5 * jnp.sum(r2[:, 1:], axis=(1, 2))
        return jnp.sum(per if w is None else w * per)
    per = jnp.mean(r2.reshape(r2.shape[0], -1), axis=1)
    return jnp.mean(per) if w is None else jnp.sum(w * per) / jnp.sum(w)


def _ref_trajectory(cfg, key, hp, pred_params=None):
    """Direct Python loop of the optimiser (hand-written updates) over jax.grad of _ref_loss.
    Returns per-step train losses (steps + 1,) and the final params."""
    setup = setup_run(cfg, key, hp)
    hp_full = {**default_hparams(cfg), **hp}
    sc = setup.scales
    x, y = setup.data.x_train, setup.data.y_train
    p0 = setup.params0
    tr = cfg.model.trainable
    lr, mom = hp_full["lr"], hp_full["momentum"]

    def loss_of(theta, xb, yb, w):
        return _ref_loss(cfg, {**p0, **theta}, xb, yb, sc, w)

    theta = {g: p0[g] for g in tr}
    buf = {g: jnp.zeros_like(a) for g, a in theta.items()}
    sec = {g: jnp.zeros_like(a) for g, a in theta.items()}
    losses = [loss_of(theta, x, y, None)]
    for i in range(cfg.steps):
        if cfg.batch_size is None:
            xb, yb, w = x, y, None
        else:
            idx, w = batch_indices(cfg, setup.shuffle_key, i)
            xb, yb = x[idx], y[idx]
        g = jax.grad(loss_of)(theta, xb, yb, w)
        for k in tr:
            if cfg.optimizer == "sgd":
                theta[k] = theta[k] - lr * g[k]
            elif cfg.optimizer == "momentum":
                buf[k] = mom * buf[k] + g[k]
                theta[k] = theta[k] - lr * buf[k]
            else:
                t = i + 1
                buf[k] = mom * buf[k] + (1 - mom) * g[k]
                sec[k] = 0.999 * sec[k] + 0.001 * g[k] ** 2
                mhat, vhat = buf[k] / (1 - mom ** t), sec[k] / (1 - 0.999 ** t)
                theta[k] = theta[k] - lr * mhat / (jnp.sqrt(vhat) + 1e-8)
        losses.append(loss_of(theta, x, y, None))
    return np.asarray(losses), {**p0, **theta}, setup


# ----------------------------------------------------------------------------------------------
# trajectories against direct loops

@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.5), ("momentum", 0.2), ("adam", 0.01)])
def test_trajectory_matches_direct_loop(optimizer, lr):
    cfg = _cfg(steps=6, log_every=1, optimizer=optimizer, sigma_b=0.5, save_params=True)
    key, hp = jax.random.key(3), {"lr": lr, "momentum": 0.8}
    out = jax.jit(make_train(cfg))(key, hp)
    losses, p_ref, setup = _ref_trajectory(cfg, key, hp)
    np.testing.assert_allclose(out["train_loss"], losses, rtol=1e-11)
    assert losses[-1] < losses[0]
    for g in model.GROUPS:
        np.testing.assert_allclose(out["final_params"][g], p_ref[g], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out[f"dtheta_{g}"][-1],
                                   np.linalg.norm(np.asarray(p_ref[g] - setup.params0[g])),
                                   rtol=1e-9, atol=1e-12)
    # init is init_params(fold_in(key, 0)); records match independent evaluations
    p0 = model.init_params(cfg.model, jax.random.fold_in(key, 0), jnp.float64)
    _assert_records_equal(p0, setup.params0)
    sc = setup.scales
    d = setup.data
    np.testing.assert_allclose(out["test_loss"][-1], _ref_loss(cfg, p_ref, d.x_test, d.y_test, sc),
                               rtol=1e-10)
    g0 = jax.grad(lambda p: _ref_loss(cfg, p, d.x_train, d.y_train, sc))(p0)
    np.testing.assert_allclose(out["grad_norm"][0],
                               math.sqrt(sum(float(jnp.sum(a ** 2)) for a in g0.values())), rtol=1e-10)
    pat0 = np.asarray(model.pattern(cfg.model, p0, d.x_train, scales=sc))
    pat = np.asarray(model.pattern(cfg.model, p_ref, d.x_train, scales=sc))
    assert out["sign_flip"][0] == 0
    np.testing.assert_allclose(out["sign_flip"][-1], np.mean(pat != pat0), rtol=1e-12)


def test_sum_from_2_loss_and_all_target():
    cfg = _cfg(target="all", loss="sum_from_2", steps=3, log_every=1)
    key, hp = jax.random.key(0), {"lr": 0.05}
    out = jax.jit(make_train(cfg))(key, hp)
    losses, _, setup = _ref_trajectory(cfg, key, hp)
    np.testing.assert_allclose(out["train_loss"], losses, rtol=1e-11)
    # the loss itself, by hand in numpy
    d = setup.data
    pred = np.asarray(model.apply(cfg.model, setup.params0, d.x_train, scales=setup.scales))
    y = np.asarray(d.y_train)
    by_hand = sum(0.5 * np.sum((pred[i, t] - y[i, t]) ** 2)
                  for i in range(y.shape[0]) for t in range(1, y.shape[1]))
    np.testing.assert_allclose(out["train_loss"][0], by_hand, rtol=1e-12)


def test_gd_memorises_random_labels_training_only_W():
    cfg = _cfg(width=256, T=4, n=8, steps=400, log_every=400, trainable=("W",), dtype="float32")
    out = jax.jit(make_train(cfg))(jax.random.key(0), {"lr": 1.0})
    assert out["train_loss"][-1] < 1e-3 * out["train_loss"][0]
    assert out["dtheta_U"][-1] == 0 and out["dtheta_v"][-1] == 0 and out["dtheta_W"][-1] > 0
    assert not out["diverged"][-1]


# ----------------------------------------------------------------------------------------------
# lanes

@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_train_many_equals_single_runs(dtype, rtol):
    cfg = _cfg(dtype=dtype, sigma_b=0.3, batch_size=4, optimizer="momentum")
    R = 3
    keys = run_keys(7, np.arange(R)[:, None])
    hp = {"lr": np.array([0.1, 0.3, 0.2]), "sigma_w": np.array([1.0, 1.4, 0.7]),
          "delta": np.array([0.1, 0.2, 0.3])}
    single = jax.jit(make_train(cfg))
    ref = [_np(single(keys[i], {k: v[i] for k, v in hp.items()})) for i in range(R)]
    for layout in [None, Layout(2, "map", 1), Layout(1, "map", 2), Layout(2, "vmap", 2),
                   Layout(1, "vmap", 1)]:
        out = _np(train_many(cfg, keys, hp, layout=layout))
        assert out["train_loss"].shape == (R, cfg.n_logs)
        for i in range(R):
            _assert_records_close(jax.tree.map(lambda a: a[i], out), ref[i], rtol=rtol, atol=1e-30)
    # the single runs really differ from each other (so the comparison can fail)
    assert abs(ref[0]["train_loss"][-1] - ref[1]["train_loss"][-1]) > 1e-3


def test_train_many_repeatable_and_more_seeds_keep_runs():
    cfg = _cfg(dtype="float32", steps=4)
    keys4 = run_keys(1, np.stack([np.arange(4), np.full(4, 2)], axis=1))
    keys3 = run_keys(1, np.stack([np.arange(3), np.full(3, 2)], axis=1))
    a = _np(train_many(cfg, keys3, {"lr": 0.3}))
    b = _np(train_many(cfg, keys3, {"lr": 0.3}))
    c = _np(train_many(cfg, keys4, {"lr": 0.3}))
    _assert_records_equal(a, b)
    _assert_records_equal(a, jax.tree.map(lambda x: x[:3], c))
    assert len(set(np.round(c["train_loss"][:, 0], 6))) == 4   # different seeds, different runs
    # run_keys is the stacked run_key fold_in chain
    for i in range(4):
        np.testing.assert_array_equal(jax.random.key_data(keys4[i]),
                                      jax.random.key_data(run_key(1, (i, 2))))
    np.testing.assert_array_equal(
        jax.random.key_data(run_key(1, (3, 2))),
        jax.random.key_data(jax.random.fold_in(jax.random.fold_in(jax.random.key(1), 3), 2)))


@pytest.mark.parametrize("activation,sigma_b", [("relu", 0.0), ("tanh", 0.5), ("softplus", 0.5)])
def test_padded_width_equals_own_width(activation, sigma_b):
    kw = dict(activation=activation, sigma_b=sigma_b, save_params=True, linearized=True, steps=4)
    own = _cfg(width=6, **kw)
    padded = _cfg(width=6, array_width=10, **kw)
    ladder = _cfg(width=10, **kw)         # widths 6 and 10 packed at the model's width 10
    key = jax.random.key(5)
    hp = {"lr": 0.3}
    ref = _np(jax.jit(make_train(own))(key, hp))
    pad = _np(jax.jit(make_train(padded))(key, hp))
    lad = _np(train_many(ladder, jnp.stack([key, key]), {"lr": 0.3, "width": np.array([6.0, 10.0])}))
    ref10 = _np(jax.jit(make_train(ladder))(key, hp))
    for out in (pad, jax.tree.map(lambda a: a[0], lad)):
        for which in ("final_params", "lin_final_params"):
            fp = out.pop(which)
            for g in model.GROUPS:
                np.testing.assert_allclose(model.unpad_params(fp, 6)[g], ref[which][g], rtol=1e-12,
                                           atol=1e-14)
            assert all(np.all(fp[g][6:] == 0) for g in model.GROUPS)
            assert np.all(fp["W"][:, 6:] == 0)
        _assert_records_close(out, {k: v for k, v in ref.items() if "final" not in k}, rtol=1e-12,
                              atol=1e-14)
    _assert_records_close(jax.tree.map(lambda a: a[1], lad), ref10, rtol=1e-12, atol=1e-14)
    assert ref["sign_flip"][-1] > 0 or activation != "relu"


def test_frozen_groups_do_not_move():
    cfg = _cfg(trainable=("W", "b"), sigma_b=0.5, save_params=True, optimizer="adam", linearized=True)
    key = jax.random.key(2)
    out = jax.jit(make_train(cfg))(key, {"lr": 0.05})
    p0 = setup_run(cfg, key, {}).params0
    for prefix in ("", "lin_"):
        fp = out[f"{prefix}final_params"]
        for g in ("U", "v"):
            np.testing.assert_array_equal(fp[g], p0[g])
            assert np.all(out[f"{prefix}dtheta_{g}"] == 0)
        for g in ("W", "b"):
            assert np.max(np.abs(fp[g] - p0[g])) > 1e-3
            assert out[f"{prefix}dtheta_{g}"][-1] > 0


def test_divergence_is_flagged_and_isolated():
    cfg = _cfg(dtype="float32", steps=12, log_every=2, save_params=True)
    keys = run_keys(0, np.arange(3)[:, None])
    out = _np(train_many(cfg, keys, {"lr": np.array([0.1, 1e9, 0.2])}))
    assert out["diverged"][1, -1] and not out["diverged"][1, 0]
    assert not out["diverged"][0].any() and not out["diverged"][2].any()
    first = int(np.argmax(out["diverged"][1]))
    # frozen: every record after the divergence repeats the value at the frozen parameters
    for k in ("train_loss", "dtheta_W", "grad_norm", "sign_flip"):
        np.testing.assert_array_equal(out[k][1, first:], np.full(cfg.n_logs - first, out[k][1, first]))
    assert all(np.all(np.isfinite(a)) for a in out["final_params"].values())
    good = _np(train_many(cfg, keys[jnp.array([0, 2])], {"lr": np.array([0.1, 0.2])}))
    _assert_records_equal(jax.tree.map(lambda a: a[jnp.array([0, 2])], out), good)


def test_new_hparam_values_do_not_recompile():
    cfg = _cfg(dtype="float32", width=10)
    keys = run_keys(0, np.arange(2)[:, None])
    compiles = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        train_many(cfg, keys, {"lr": 0.1})["train_loss"].block_until_ready()
        assert compiles, "the listener must see the first compile"
        single = jax.jit(make_train(cfg))
        single(keys[0], {"lr": 0.1, "sigma_w": 1.0, "width": 10.0})["train_loss"].block_until_ready()
        compiles.clear()
        for lr, sw, w in [(0.2, 1.3, 8.0), (0.05, 0.5, 6.0)]:
            hp = {"lr": np.array([lr, 2 * lr]), "sigma_w": np.array([sw, sw]),
                  "sigma_v": np.array([0.5, 2.0]), "width": np.array([w, 10.0])}
            train_many(cfg, run_keys(int(lr > 0.1), np.arange(2)[:, None]), hp)["train_loss"].block_until_ready()
            single(keys[1], {"lr": lr, "sigma_w": sw, "width": w})["train_loss"].block_until_ready()
        assert compiles == []
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_choose_layout_rule():
    small = _cfg(width=32, T=10, n=32)
    big = _cfg(width=1024, T=10, n=32)
    assert choose_layout(small, 256, backend="cpu", devices=[0, 1]) == Layout(2, "map", 4)
    assert choose_layout(big, 4, backend="cpu", devices=[0, 1]) == Layout(2, "map", 1)
    assert choose_layout(big, 1, backend="cpu", devices=[0, 1]) == Layout(1, "map", 1)
    assert choose_layout(small, 256, backend="gpu", devices=jax.devices()[:1]).strategy == "vmap"


# ----------------------------------------------------------------------------------------------
# config validation

@pytest.mark.parametrize("field,value", [
    ("steps", -1), ("steps", 5), ("steps", 2.0), ("log_every", 0), ("batch_size", 0),
    ("batch_size", 100), ("optimizer", "rmsprop"), ("loss", "sum_from_2"), ("loss", "l1"),
    ("dtype", "float16"), ("array_width", 4), ("array_width", 9.0), ("save_params", 1),
    ("init", "orthogonal"), ("projection", "yes"), ("linearized", None), ("kernel_stride", -1),
    ("n_probe", 0), ("model", "rnn"), ("task", None)])
def test_bad_config_field_one_line_error(field, value):
    good = _cfg()
    kw = {"model": good.model, "task": good.task, "steps": good.steps, "log_every": good.log_every}
    kw[field] = value
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kw)
    msg = str(e.value)
    assert field in msg and "\n" not in msg


@pytest.mark.parametrize("change,field", [
    (dict(target="all"), "task"), (dict(init="symmetric", width=7), "init"),
    (dict(projection=True, trainable=("v",)), "projection"),
    (dict(kernel_stride=1, n_probe=50), "n_probe")])
def test_inconsistent_configs(change, field):
    with pytest.raises(ConfigError, match=field):
        if "target" in change:  # readout 'last' with target 'all'
            TrainConfig(_cfg().model, _cfg(target="all").task, steps=2)
        else:
            _cfg(**change)


def test_bad_hparams():
    cfg = _cfg()
    with pytest.raises(ValueError, match="lrr"):
        make_train(cfg)(jax.random.key(0), {"lrr": 0.1})
    with pytest.raises(ValueError, match="sigma_w"):
        train_many(cfg, run_keys(0, np.zeros((3, 1), int)), {"sigma_w": np.ones(2)})


# ----------------------------------------------------------------------------------------------
# minibatches, projection, symmetric init

def test_minibatch_epochs_visit_each_example_once():
    cfg = _cfg(n=10, batch_size=4, steps=9, log_every=3)
    key = jax.random.fold_in(jax.random.key(0), 2)
    epochs = []
    for e in range(3):
        seen = []
        for j in range(3):   # ceil(10 / 4) batches per epoch
            idx, w = batch_indices(cfg, key, 3 * e + j)
            seen += [int(i) for i, wi in zip(idx, w) if wi == 1]
            assert float(np.sum(w)) == (4 if j < 2 else 2)
        assert sorted(seen) == list(range(10))
        epochs.append(seen)
    assert epochs[0] != epochs[1]   # reshuffled each epoch
    # and the engine's SGD trajectory is the one with these batches
    k, hp = jax.random.key(4), {"lr": 0.3}
    out = jax.jit(make_train(cfg))(k, hp)
    losses, _, _ = _ref_trajectory(cfg, k, hp)
    np.testing.assert_allclose(out["train_loss"], losses[::3], rtol=1e-11)


def test_projection_keeps_weights_in_balls():
    kw = dict(width=8, steps=10, log_every=5, save_params=True, sigma_b=0.5, trainable=("W", "b", "v"))
    key, hp = jax.random.key(1), {"lr": 2.0, "proj_radius": 0.5}
    out = jax.jit(make_train(_cfg(projection=True, **kw)))(key, hp)
    free = jax.jit(make_train(_cfg(**kw)))(key, hp)
    p0 = setup_run(_cfg(**kw), key, {}).params0

    def unit_norms(p):
        return np.sqrt(np.sum((np.asarray(p["W"]) - np.asarray(p0["W"])) ** 2, axis=1)
                       + (np.asarray(p["b"]) - np.asarray(p0["b"])) ** 2)

    r = 0.5 / math.sqrt(8)
    assert np.max(unit_norms(free["final_params"])) > r          # the ball binds
    n_proj = unit_norms(out["final_params"])
    assert np.all(n_proj <= r * (1 + 1e-12)) and np.max(n_proj) > 0.99 * r
    # an infinite radius is no projection
    inf = jax.jit(make_train(_cfg(projection=True, **kw)))(key, {"lr": 2.0})
    _assert_records_close(inf, free, rtol=1e-13, atol=1e-15)


def test_symmetric_init_zero_output():
    cfg = _cfg(width=8, init="symmetric", steps=0, save_params=True, sigma_b=0.5)
    key = jax.random.key(0)
    out = jax.jit(make_train(cfg))(key, {})
    p, data = out["final_params"], setup_run(cfg, key, {}).data
    for x in (data.x_train, data.x_test):
        assert np.all(np.asarray(model.apply(cfg.model, p, x)) == 0.0)
    np.testing.assert_array_equal(p["W"][0::2], p["W"][1::2])
    np.testing.assert_array_equal(p["U"][0::2], p["U"][1::2])
    np.testing.assert_array_equal(p["v"][0::2], -p["v"][1::2])
    assert np.all(p["v"] != 0)
    np.testing.assert_allclose(out["train_loss"][0], np.mean(np.asarray(data.y_train) ** 2), rtol=1e-14)
    # padded symmetric init is the same net
    pad = jax.jit(make_train(cfg.replace(array_width=12)))(key, {})
    _assert_records_equal(model.unpad_params(pad["final_params"], 8), p)


# ----------------------------------------------------------------------------------------------
# the linearised model

def test_linearized_identical_batches_on_a_linear_model():
    # identity activation, only v trained: the net is linear in its parameters, so f_lin == f
    cfg = _cfg(activation="identity", trainable=("v",), linearized=True, batch_size=2, n=5,
               steps=8, log_every=2)
    out = jax.jit(make_train(cfg))(jax.random.key(0), {"lr": 0.4})
    assert np.max(out["gap_train"]) < 1e-13 and np.max(out["gap_probe_rel"]) < 1e-13
    np.testing.assert_allclose(out["lin_train_loss"], out["train_loss"], rtol=1e-12)
    np.testing.assert_allclose(out["lin_dtheta_v"], out["dtheta_v"], rtol=1e-12)
    assert out["dtheta_v"][-1] > 0.01


def test_linearized_side_by_side():
    cfg = _cfg(linearized=True, steps=6, log_every=2, sigma_b=0.3, save_params=True,
               optimizer="momentum")
    key, hp = jax.random.key(1), {"lr": 0.5}
    out = jax.jit(make_train(cfg))(key, hp)
    assert out["gap_train"][0] == 0 and out["gap_probe"][0] == 0
    assert out["lin_train_loss"][0] == out["train_loss"][0]
    assert out["gap_train"][-1] > 1e-6          # a small relu net is not linear
    # the lin run is momentum GD on f_lin, by hand
    s = setup_run(cfg, key, hp)
    f_lin = linearize(cfg.model, s.params0, scales=s.scales)
    d = s.data

    def loss(p):
        return jnp.mean((f_lin(p, d.x_train) - d.y_train) ** 2)

    p, buf = dict(s.params0), {g: 0.0 for g in model.GROUPS}
    for _ in range(6):
        g = jax.grad(loss)(p)
        for k in model.GROUPS:
            buf[k] = 0.9 * buf[k] + g[k]
            p[k] = p[k] - 0.5 * buf[k]
    np.testing.assert_allclose(out["lin_train_loss"][-1], loss(p), rtol=1e-11)
    for k in model.GROUPS:
        np.testing.assert_allclose(out["lin_final_params"][k], p[k], rtol=1e-10, atol=1e-12)
    net_pred = model.apply(cfg.model, out["final_params"], d.x_test, scales=s.scales)
    gap = np.linalg.norm(np.asarray(net_pred - f_lin(p, d.x_test)))
    np.testing.assert_allclose(out["gap_probe"][-1], gap, rtol=1e-9)
    np.testing.assert_allclose(out["gap_probe_rel"][-1], gap / np.linalg.norm(d.y_test), rtol=1e-9)


def test_kernel_change_record():
    cfg = _cfg(kernel_stride=2, n_probe=3, steps=6, log_every=1, save_params=True)
    key = jax.random.key(0)
    out = jax.jit(make_train(cfg))(key, {"lr": 0.5})
    assert "ntk_change" in record_names(cfg)
    ch = np.asarray(out["ntk_change"])
    assert ch[0] == 0 and np.all(np.isnan(ch[1::2])) and np.all(np.isfinite(ch[0::2]))
    s = setup_run(cfg, key, {})
    xp = s.data.x_test[:3]
    K0 = empirical_ntk(cfg.model, s.params0, xp, method="jacobian")
    K = empirical_ntk(cfg.model, out["final_params"], xp, method="jacobian")
    np.testing.assert_allclose(ch[-1], np.linalg.norm(K - K0) / np.linalg.norm(K0), rtol=1e-8)
    assert ch[-1] > 1e-4
