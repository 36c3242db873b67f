"""The single-run program (rnn_ntk.train): trajectories against direct loops, padding, projection,
symmetric init, the linearised model, the kernel-change record, config and hparam validation, the
named run state and the per-log hook."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_ntk import model
from rnn_ntk.kernels.empirical import empirical_ntk
from rnn_ntk.linearize import linearize
from rnn_ntk.model import ConfigError
from rnn_ntk.train import (ModelState, RunState, TrainConfig, batch_indices, default_hparams,
                           make_train, record_names, setup_run)
from train_helpers import (CFG_ADAM, CFG_F32, CFG_LIN, CFG_MB, CFG_MEM, CFG_POS, CFG_SYM,
                           _assert_records_close, _assert_records_equal, _cfg, _jit_train, _np,
                           _ref_loss, _ref_trajectory)


# ----------------------------------------------------------------------------------------------
# trajectories against direct loops


def test_full_batch_adam_matches_direct_loop():
    cfg = CFG_ADAM
    key, hp = jax.random.key(3), {"lr": 0.01, "momentum": 0.8}
    out = _jit_train(cfg)(key, hp)
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
    _assert_records_close(p0, setup.params0, rtol=1e-14)
    _assert_records_close(p0, out["init_params"], rtol=1e-14)
    sc, d = setup.scales, setup.data
    np.testing.assert_allclose(out["test_loss"][-1], _ref_loss(cfg, p_ref, d.x_test, d.y_test, sc),
                               rtol=1e-10)
    g0 = jax.grad(lambda p: _ref_loss(cfg, p, d.x_train, d.y_train, sc))(p0)
    np.testing.assert_allclose(out["grad_norm"][0],
                               math.sqrt(sum(float(jnp.sum(a ** 2)) for a in g0.values())), rtol=1e-10)
    pat0 = np.asarray(model.pattern(cfg.model, p0, d.x_train, scales=sc))
    pat = np.asarray(model.pattern(cfg.model, p_ref, d.x_train, scales=sc))
    assert out["sign_flip"][0] == 0
    np.testing.assert_allclose(out["sign_flip"][-1], np.mean(pat != pat0), rtol=1e-12)


def test_minibatch_sgd_epochs_and_sum_from_2_loss():
    cfg = CFG_MB
    key = jax.random.fold_in(jax.random.key(0), 2)
    epochs = []
    for e in range(3):
        seen = []
        for j in range(3):   # ceil(10 / 4) batches per epoch, the last one half empty
            idx, w = batch_indices(cfg, key, 3 * e + j)
            seen += [int(i) for i, wi in zip(idx, w) if wi == 1]
            assert float(np.sum(w)) == (4 if j < 2 else 2)
        assert sorted(seen) == list(range(10))
        epochs.append(seen)
    assert epochs[0] != epochs[1]   # reshuffled each epoch
    # the engine's SGD trajectory is the one with these batches
    k, hp = jax.random.key(4), {"lr": 0.05}
    out = _jit_train(cfg)(k, hp)
    losses, _, setup = _ref_trajectory(cfg, k, hp)
    np.testing.assert_allclose(out["train_loss"], losses[::3], rtol=1e-11)
    assert losses[-1] < 0.9 * losses[0]
    # the loss itself, by hand in numpy
    d = setup.data
    pred = np.asarray(model.apply(cfg.model, setup.params0, d.x_train, scales=setup.scales))
    y = np.asarray(d.y_train)
    by_hand = sum(0.5 * np.sum((pred[i, t] - y[i, t]) ** 2)
                  for i in range(y.shape[0]) for t in range(1, y.shape[1]))
    np.testing.assert_allclose(out["train_loss"][0], by_hand, rtol=1e-12)
    # the net is linear in v: its linearisation, trained on the same batches, is the same model
    assert np.max(out["gap_train"]) < 1e-12 and np.max(out["gap_probe_rel"]) < 1e-12
    np.testing.assert_allclose(out["lin_train_loss"], out["train_loss"], rtol=1e-12)
    np.testing.assert_allclose(out["lin_dtheta_v"], out["dtheta_v"], rtol=1e-12)
    assert out["dtheta_v"][-1] > 0.01


def test_position_weights_and_centred_model():
    """Per-position loss weights and the centred model f - f_0 against the direct loop, a loss
    written out by hand, and the linearised model's own centred loss."""
    cfg = CFG_POS
    k, hp = jax.random.key(6), {"lr": 0.05}
    out = _jit_train(cfg)(k, hp)
    losses, p_ref, setup = _ref_trajectory(cfg, k, hp)
    np.testing.assert_allclose(out["train_loss"], losses[::3], rtol=1e-11)
    for g in model.GROUPS:
        np.testing.assert_allclose(out["final_params"][g], p_ref[g], rtol=1e-10, atol=1e-12)
    assert losses[-1] < 0.95 * losses[0]
    d, sc, p0 = setup.data, setup.scales, setup.params0
    w = cfg.position_weights
    y = np.asarray(d.y_train)
    # step 0: the centred model is 0, so the loss is the weighted targets' alone
    np.testing.assert_allclose(out["train_loss"][0], sum(
        0.5 * w[t] * np.sum(y[i, t] ** 2) for i in range(y.shape[0]) for t in range(1, y.shape[1])),
        rtol=1e-12)
    # the end, by hand: the trained net minus the initial one, weighted per position
    yt = np.asarray(d.y_test)
    f = np.asarray(model.apply(cfg.model, p_ref, d.x_test, scales=sc))
    f0 = np.asarray(model.apply(cfg.model, p0, d.x_test, scales=sc))
    assert np.abs(f0).max() > 0.1                     # f_0 is not small: centring matters
    by_hand = sum(0.5 * w[t] * np.sum((f[i, t] - f0[i, t] - yt[i, t]) ** 2)
                  for i in range(yt.shape[0]) for t in range(1, yt.shape[1]))
    np.testing.assert_allclose(out["test_loss"][-1], by_hand, rtol=1e-10)
    # the linearised model fits the same centred targets: at step 0 its loss equals the net's;
    # the gap records compare raw outputs (f_net - f_lin, unchanged by centring)
    np.testing.assert_allclose(out["lin_train_loss"][0], out["train_loss"][0], rtol=1e-13)
    f_lin = linearize(cfg.model, p0, scales=sc)
    gap = np.linalg.norm(np.asarray(model.apply(cfg.model, p_ref, d.x_train, scales=sc))
                         - np.asarray(f_lin(out["lin_final_params"], d.x_train)))
    np.testing.assert_allclose(out["gap_train"][-1], gap, rtol=1e-9)
    np.testing.assert_allclose(out["gap_train_rel"][-1], gap / np.linalg.norm(y), rtol=1e-9)


@pytest.mark.parametrize("base, changes, match", [
    (CFG_MB, dict(position_weights=(1.0, 2.0)), r"one weight per position \(3\), got 2"),
    (CFG_ADAM, dict(position_weights=(1.0, 1.0, 1.0)), "needs task target 'all'"),
    (CFG_MB, dict(position_weights=(1.0, -1.0, 1.0)), "position_weights: must be finite weights >= 0"),
    (CFG_MB, dict(position_weights=(0.0, 0.0, 0.0)), "not all 0"),
    (CFG_MB, dict(position_weights="abc"), "position_weights: must be a list"),
    (CFG_MB, dict(center=1), "center: must be true or false"),
])
def test_position_weights_and_center_checks(base, changes, match):
    with pytest.raises(ConfigError, match=match):
        base.replace(**changes)


def test_gd_memorises_random_labels_training_only_W():
    key = jax.random.key(0)
    out = _jit_train(CFG_MEM)(key, {"lr": 1.0})
    assert out["train_loss"][-1] < 1e-3 * out["train_loss"][0]
    assert not out["diverged"][-1]
    # only W moved; the frozen groups are bit-identical to their initial values
    p0 = out["init_params"]
    np.testing.assert_allclose(p0["W"], model.init_params(CFG_MEM.model, jax.random.fold_in(key, 0),
                                                          jnp.float32)["W"], rtol=1e-5, atol=1e-6)
    for g in ("U", "b", "v"):
        np.testing.assert_array_equal(out["final_params"][g], p0[g])
        assert np.all(out[f"dtheta_{g}"] == 0)
    assert out["dtheta_W"][-1] > 0


@pytest.mark.parametrize("cfg,hp", [(CFG_LIN, {"lr": 0.5}),                       # relu
                                    (CFG_SYM, {"lr": 0.3}),                       # tanh
                                    (CFG_ADAM, {"lr": 0.05, "proj_radius": 0.3})])  # softplus
def test_padded_width_equals_own_width(cfg, hp):
    key = jax.random.key(5)
    m = cfg.model.width
    ref = _np(_jit_train(cfg)(key, hp))
    out = _np(_jit_train(cfg.replace(array_width=m + 4))(key, hp))
    for which in ("init_params", "final_params", "lin_final_params"):
        if which not in out:
            continue
        fp = out.pop(which)
        for g in model.GROUPS:
            np.testing.assert_allclose(model.unpad_params(fp, m)[g], ref[which][g], rtol=1e-12,
                                       atol=1e-14)
        assert all(np.all(fp[g][m:] == 0) for g in model.GROUPS)
        assert np.all(fp["W"][:, m:] == 0)
    _assert_records_close(out, {k: v for k, v in ref.items() if "params" not in k}, rtol=1e-12,
                          atol=1e-14)
    assert ref["train_loss"][-1] < ref["train_loss"][0]


def test_symmetric_init_zero_output():
    cfg = CFG_SYM
    key = jax.random.key(5)
    s = setup_run(cfg, key, {})
    p, data = s.params0, s.data
    # built from the Gaussian draw: unit j copies unit 2 floor(j / 2), v flips sign
    g = model.init_params(cfg.model, jax.random.fold_in(key, 0), jnp.float64)
    src = [0, 0, 2, 2, 4, 4]
    for k in ("W", "U", "b"):
        np.testing.assert_allclose(p[k], np.asarray(g[k])[src], rtol=1e-14)
        np.testing.assert_array_equal(p[k][0::2], p[k][1::2])
    np.testing.assert_allclose(p["v"], np.asarray(g["v"])[src] * np.array([1, -1] * 3)[:, None],
                               rtol=1e-14)
    np.testing.assert_array_equal(p["v"][0::2], -p["v"][1::2])
    for x in (data.x_train, data.x_test):
        h = np.asarray(model.hidden_states(cfg.model, p, x))
        np.testing.assert_array_equal(h[..., 0::2], h[..., 1::2])   # paired units agree exactly
        # so the output cancels; XLA's fused multiply-adds leave rounding residue only
        f = np.asarray(model.apply(cfg.model, p, x))
        scale = np.sum(np.abs(h[:, -1] * np.asarray(p["v"])[None, :, 0]), axis=1) / math.sqrt(6)
        assert np.all(np.abs(f[:, 0]) <= 1e-15 * scale)
        assert np.any(np.abs(h[:, -1]) > 0.1)
    out = _jit_train(cfg)(key, {"lr": 0.3})
    np.testing.assert_allclose(out["train_loss"][0], np.mean(np.asarray(data.y_train) ** 2),
                               rtol=1e-13)
    with pytest.raises(ConfigError, match="init"):
        _cfg(width=7, init="symmetric")


def test_projection_keeps_weights_in_balls():
    cfg = CFG_ADAM
    key = jax.random.key(1)
    hp = {"lr": 0.05, "proj_radius": 0.1}
    out = _jit_train(cfg)(key, hp)
    free = _jit_train(cfg)(key, {"lr": 0.05})          # radius inf: no projection
    p0 = out["init_params"]

    def unit_norms(p):   # each unit's incoming weights (W row, U row, b) jointly
        return np.sqrt(np.sum((np.asarray(p["W"]) - np.asarray(p0["W"])) ** 2, axis=1)
                       + np.sum((np.asarray(p["U"]) - np.asarray(p0["U"])) ** 2, axis=1)
                       + (np.asarray(p["b"]) - np.asarray(p0["b"])) ** 2)

    r = 0.1 / math.sqrt(8)
    assert np.max(unit_norms(free["final_params"])) > 2 * r          # the ball binds
    n_proj = unit_norms(out["final_params"])
    assert np.all(n_proj <= r * (1 + 1e-12)) and np.max(n_proj) > 0.99 * r
    assert not np.allclose(out["final_params"]["v"], free["final_params"]["v"])


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


def test_default_hparams():
    hp = default_hparams(CFG_ADAM)
    assert hp["sigma_b"] == 0.5 and hp["width"] == 8.0 and hp["proj_radius"] == math.inf
    assert {"lr", "momentum", "sigma_w", "sigma_u", "sigma_v", "label_noise", "delta"} <= set(hp)
    assert all(isinstance(v, float) for v in hp.values())


def test_bad_hparams():
    cfg = _cfg()
    with pytest.raises(ValueError, match="lrr"):
        make_train(cfg)(jax.random.key(0), {"lrr": 0.1})
    with pytest.raises(TypeError, match="on_log"):
        make_train(cfg, on_log=3)


# ----------------------------------------------------------------------------------------------
# the linearised model and the kernel record


def test_linearized_side_by_side_and_kernel_change():
    cfg = CFG_LIN
    key, hp = jax.random.key(1), {"lr": 0.5}
    out = _jit_train(cfg)(key, hp)
    losses, p_net, s = _ref_trajectory(cfg, key, hp)        # the net: heavy ball by hand
    np.testing.assert_allclose(out["train_loss"], losses, rtol=1e-11)
    d = s.data
    # f_lin(theta_0) = f(theta_0) (up to the rounding of two differently fused programs)
    assert out["gap_train_rel"][0] < 1e-14 and out["gap_probe_rel"][0] < 1e-14
    np.testing.assert_allclose(out["lin_train_loss"][0], out["train_loss"][0], rtol=1e-13)
    assert out["gap_train"][-1] > 1e-6          # a small relu net is not linear
    # frozen groups do not move, in either model
    for prefix in ("", "lin_"):
        np.testing.assert_array_equal(out[f"{prefix}final_params"]["U"], out["init_params"]["U"])
        assert np.all(out[f"{prefix}dtheta_U"] == 0) and out[f"{prefix}dtheta_W"][-1] > 0
    # the lin run is heavy-ball GD on f_lin, by hand
    f_lin = linearize(cfg.model, s.params0, scales=s.scales)

    def loss(theta):
        return jnp.mean((f_lin({**s.params0, **theta}, d.x_train) - d.y_train) ** 2)

    grad = jax.jit(jax.grad(loss))
    theta = {g: s.params0[g] for g in cfg.model.trainable}
    buf = {g: 0.0 for g in theta}
    for _ in range(cfg.steps):
        g = grad(theta)
        for k in theta:
            buf[k] = 0.9 * buf[k] + g[k]
            theta[k] = theta[k] - 0.5 * buf[k]
    p = {**s.params0, **theta}
    np.testing.assert_allclose(out["lin_train_loss"][-1], loss(theta), rtol=1e-11)
    for k in model.GROUPS:
        np.testing.assert_allclose(out["lin_final_params"][k], p[k], rtol=1e-10, atol=1e-12)
    net_pred = model.apply(cfg.model, out["final_params"], d.x_test, scales=s.scales)
    gap = np.linalg.norm(np.asarray(net_pred - f_lin(p, d.x_test)))
    np.testing.assert_allclose(out["gap_probe"][-1], gap, rtol=1e-9)
    np.testing.assert_allclose(out["gap_probe_rel"][-1], gap / np.linalg.norm(d.y_test), rtol=1e-9)
    # ntk_change every kernel_stride logs, NaN elsewhere; against the Jacobian-method kernel
    assert set(out) == set(record_names(cfg)) | {"init_params", "final_params", "lin_final_params"}
    assert all(np.shape(out[k]) == (cfg.n_logs,) for k in record_names(cfg))
    ch = np.asarray(out["ntk_change"])
    assert ch[0] == 0 and np.all(np.isnan(ch[1::2])) and np.all(np.isfinite(ch[0::2]))
    xp = d.x_test[:3]
    K0 = empirical_ntk(cfg.model, s.params0, xp, method="jacobian")
    K = empirical_ntk(cfg.model, out["final_params"], xp, method="jacobian")
    np.testing.assert_allclose(ch[-1], np.linalg.norm(K - K0) / np.linalg.norm(K0), rtol=1e-8)
    assert ch[-1] > 1e-4


# ----------------------------------------------------------------------------------------------
# the named run state and the per-log hook

def test_default_program_has_no_hook():
    """No hook: the program has no host callback, and a hook that does nothing leaves the traced
    program exactly as it is (the hook is the only thing on_log adds)."""
    cfg = CFG_F32
    args = (jax.random.key(0), default_hparams(cfg))
    plain = str(jax.make_jaxpr(make_train(cfg))(*args))
    assert "callback" not in plain
    assert str(jax.make_jaxpr(make_train(cfg, on_log=lambda k, state, tag: None))(*args)) == plain
    hooked = str(jax.make_jaxpr(make_train(
        cfg, on_log=lambda k, state, tag: jax.debug.callback(lambda *a: None, k)))(*args))
    assert "callback" in hooked


def test_log_hook_sees_the_state_after_each_log():
    cfg = CFG_MB                      # minibatch, linearized: every field of RunState is in use
    key, hp = jax.random.key(2), {**default_hparams(cfg), "lr": 0.05}
    seen, traced = [], []

    def host(k, tag, v, lin_v, perm):
        seen.append((int(k), int(tag), np.asarray(v), np.asarray(lin_v), np.asarray(perm)))

    def on_log(k, state, tag):
        traced.append(state)
        jax.debug.callback(host, k, tag, state.net.theta["v"], state.lin.theta["v"], state.perm)

    out = _np(jax.jit(make_train(cfg, on_log=on_log))(key, hp, 5))
    jax.effects_barrier()
    state = traced[0]
    assert isinstance(state, RunState) and isinstance(state.net, ModelState)
    assert isinstance(state.lin, ModelState) and set(state.net.theta) == {"v"}
    assert sorted(k for k, *_ in seen) == [1, 2, 3] and all(tag == 5 for _, tag, *_ in seen)
    v0 = np.asarray(out["init_params"]["v"])
    for k, _, v, lin_v, perm in seen:       # the state after log k's steps, as the records see it
        np.testing.assert_allclose(np.linalg.norm(v - v0), out["dtheta_v"][k], rtol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(lin_v - v0), out["lin_dtheta_v"][k], rtol=1e-12)
        assert sorted(perm[perm > 0].tolist() + [0]) == list(range(10))   # the epoch's order
    last_v = next(v for k, _, v, *_ in seen if k == 3)
    np.testing.assert_array_equal(last_v, out["final_params"]["v"])
    _assert_records_equal(out, _np(_jit_train(cfg)(key, {"lr": 0.05})))   # the hook changes nothing
    # full-batch GD without the linearised model carries neither lin nor perm
    gd = _cfg(steps=2, log_every=1)
    jax.make_jaxpr(make_train(gd, on_log=lambda k, s, tag: traced.append(s)))(
        jax.random.key(0), default_hparams(gd))
    assert traced[-1].lin is None and traced[-1].perm is None
