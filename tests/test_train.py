"""Training engine: trajectories against direct loops, lanes against single runs, padding, freezing,
divergence, projection, symmetric init, the linearised model, the kernel-change record."""
import collections
import contextlib
import functools
import math
import threading
import time

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
                           make_train, progress_listener, record_names, run_key, run_keys,
                           setup_run, train_many)

D = 4  # random_labels needs input_dim >= 3


def _cfg(width=8, T=3, n=6, n_test=5, steps=4, log_every=2, target="last", trainable=("W", "U", "b", "v"),
         activation="relu", sigma_b=0.0, dtype="float64", **kw):
    readout = "all" if target == "all" else "last"
    mcfg = RNNConfig(width=width, input_dim=D, activation=activation, readout=readout,
                     sigma_b=sigma_b, trainable=trainable)
    tcfg = TaskConfig("random_labels", n_train=n, n_test=n_test, length=T, input_dim=D, target=target)
    return TrainConfig(mcfg, tcfg, steps=steps, log_every=log_every, dtype=dtype, **kw)


@contextlib.contextmanager
def _count_compiles():
    """A list that collects one entry per XLA backend compile while the block runs."""
    compiles = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


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


@functools.lru_cache(maxsize=None)
def _jit_train_cached(cfg):
    return jax.jit(make_train(cfg))


def _jit_train(cfg):
    """One compiled single-run program per config for the whole module (compiles dominate): the
    hparams are completed with their defaults, as python floats, so every call has one signature."""
    f = _jit_train_cached(cfg)
    return lambda key, hp: f(key, {**default_hparams(cfg), **{k: float(v) for k, v in hp.items()}})


def _ref_loss(cfg, params, x, y, scales, w=None):
    """Independent loss: mean of squared residuals, or 1/2 sum over positions >= 2."""
    pred = model.apply(cfg.model, params, x, scales=scales)
    r2 = (pred - y) ** 2
    if cfg.loss == "sum_from_2":
        per = 0.5 * jnp.sum(r2[:, 1:], axis=(1, 2))
        return jnp.sum(per if w is None else w * per)
    per = jnp.mean(r2.reshape(r2.shape[0], -1), axis=1)
    return jnp.mean(per) if w is None else jnp.sum(w * per) / jnp.sum(w)


def _ref_trajectory(cfg, key, hp):
    """Direct Python loop of the optimiser (hand-written updates) over jax.grad of _ref_loss.
    Returns per-step train losses (steps + 1,), the final params and the run's setup."""
    setup = setup_run(cfg, key, hp)
    hp_full = {**default_hparams(cfg), **hp}
    sc = setup.scales
    x, y = setup.data.x_train, setup.data.y_train
    p0 = setup.params0
    tr = cfg.model.trainable
    lr, mom = hp_full["lr"], hp_full["momentum"]

    @jax.jit
    def loss_of(theta, xb, yb, w):
        return _ref_loss(cfg, {**p0, **theta}, xb, yb, sc, w)

    grad = jax.jit(jax.grad(loss_of))
    theta = {g: p0[g] for g in tr}
    buf = {g: jnp.zeros_like(a) for g, a in theta.items()}
    sec = {g: jnp.zeros_like(a) for g, a in theta.items()}
    ones = jnp.ones((x.shape[0],), x.dtype)
    losses = [loss_of(theta, x, y, ones)]
    for i in range(cfg.steps):
        if cfg.batch_size is None:
            xb, yb, w = x, y, ones
        else:
            idx, w = batch_indices(cfg, setup.shuffle_key, i)
            xb, yb = x[idx], y[idx]
        g = grad(theta, xb, yb, w)
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
        losses.append(loss_of(theta, x, y, ones))
    return np.asarray(losses), {**p0, **theta}, setup


# The module's configs: each is one compiled program shared by several tests (compiles dominate).
# full-batch adam, float64, softplus with s_b > 0 (phi(0) != 0), projection on (radius inf unless
# the hparams say otherwise)
CFG_ADAM = _cfg(steps=6, log_every=1, optimizer="adam", activation="softplus", sigma_b=0.5,
                save_params=True, projection=True)
# minibatch heavy ball, float32: the lanes tests
CFG_F32 = _cfg(dtype="float32", sigma_b=0.3, batch_size=4, optimizer="momentum", steps=4)
# minibatch SGD (n not a multiple of b), target 'all', the papers' loss; identity activation with
# only v trained, so the net is linear in its parameters and equals its linearisation
CFG_MB = _cfg(n=10, batch_size=4, steps=9, log_every=3, target="all", loss="sum_from_2",
              activation="identity", trainable=("v",), linearized=True, save_params=True)
# a wide net, only W trained
CFG_MEM = _cfg(width=256, T=4, n=8, steps=400, log_every=400, trainable=("W",), dtype="float32",
               save_params=True)
# relu net and its linearisation side by side (heavy ball), kernel-change record, U frozen
CFG_LIN = _cfg(linearized=True, steps=6, log_every=1, sigma_b=0.3, save_params=True,
               optimizer="momentum", trainable=("W", "b", "v"), kernel_stride=2, n_probe=3)
# tanh, symmetric init
CFG_SYM = _cfg(width=6, activation="tanh", sigma_b=0.5, init="symmetric", save_params=True, steps=4)


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


# ----------------------------------------------------------------------------------------------
# lanes

@pytest.mark.parametrize("cfg,rtol,layouts", [(CFG_F32, 1e-5, (None, Layout(2, "vmap", 1))),
                                              (CFG_ADAM, 1e-12, (Layout(1, "map", 2),))])
def test_train_many_equals_single_runs(cfg, rtol, layouts):
    R = 3
    keys = run_keys(7, np.arange(R)[:, None])
    hp = {"lr": np.array([0.01, 0.03, 0.02]), "sigma_w": np.array([1.0, 1.4, 0.7]),
          "delta": np.array([0.1, 0.2, 0.3])}
    ref = [_np(_jit_train(cfg)(keys[i], {k: v[i] for k, v in hp.items()})) for i in range(R)]
    for lay in layouts:
        out = _np(train_many(cfg, keys, hp, layout=lay))
        assert out["train_loss"].shape == (R, cfg.n_logs)
        for i in range(R):
            _assert_records_close(jax.tree.map(lambda a: a[i], out), ref[i], rtol=rtol, atol=1e-30)
    # the single runs really differ from each other (so the comparison can fail)
    assert abs(ref[0]["train_loss"][-1] - ref[1]["train_loss"][-1]) > 1e-4


def test_train_many_repeatable_and_more_seeds_keep_runs():
    cfg = CFG_F32
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


def test_divergence_is_flagged_and_isolated():
    cfg = CFG_F32
    keys = run_keys(0, np.arange(3)[:, None])
    out = _np(train_many(cfg, keys, {"lr": np.array([0.1, 1e9, 0.2])}))
    assert out["diverged"][1, -1] and not out["diverged"][1, 0]
    assert not out["diverged"][0].any() and not out["diverged"][2].any()
    first = int(np.argmax(out["diverged"][1]))
    # frozen: every record after the divergence repeats the value at the frozen parameters
    for k in ("train_loss", "dtheta_W", "grad_norm", "sign_flip"):
        np.testing.assert_array_equal(out[k][1, first:], np.full(cfg.n_logs - first, out[k][1, first]))
    # the other lanes are exactly what they are next to a healthy run
    calm = _np(train_many(cfg, keys, {"lr": np.array([0.1, 0.15, 0.2])}))
    for i in (0, 2):
        _assert_records_equal(jax.tree.map(lambda a: a[i], out), jax.tree.map(lambda a: a[i], calm))


def test_new_hparam_values_do_not_recompile():
    cfg = CFG_F32
    keys = run_keys(0, np.arange(3)[:, None])
    with _count_compiles() as compiles:
        train_many(cfg, keys, {"lr": 0.1})["train_loss"].block_until_ready()
        single = _jit_train(cfg)
        single(keys[0], {"lr": 0.1, "sigma_w": 1.0, "width": 8.0})["train_loss"].block_until_ready()
        jax.jit(lambda x: x * 1.2345)(1.0).block_until_ready()
        assert compiles, "the listener must see a compile"
        compiles.clear()
        for lr, sw, w in [(0.2, 1.3, 7.0), (0.05, 0.5, 6.0)]:
            hp = {"lr": np.array([lr, 2 * lr, lr]), "sigma_w": np.array([sw, sw, 1.0]),
                  "sigma_v": np.array([0.5, 2.0, 1.0]), "width": np.array([w, 8.0, 4.0]),
                  "delta": np.array([0.2, 0.3, 0.4])}
            train_many(cfg, run_keys(int(lr > 0.1), np.arange(3)[:, None]), hp)[
                "train_loss"].block_until_ready()
            single(keys[1], {"lr": lr, "sigma_w": sw, "width": w})["train_loss"].block_until_ready()
        assert compiles == []


@pytest.mark.parametrize("layout,every", [(Layout(1, "map", 1), 1), (Layout(2, "map", 1), 2),
                                          (Layout(2, "vmap", 1), 1)],
                         ids=["1xmap", "2xmap-every2", "2xvmap"])
def test_progress_reports_count_every_step_and_change_nothing(layout, every):
    cfg = CFG_F32                      # 4 steps, a log every 2
    R = 3                              # odd: on 2 devices, one padding run (never reported)
    keys = run_keys(4, np.arange(R)[:, None])
    hp = {"lr": np.array([0.1, 0.3, 0.2])}
    calls, overlaps, busy = [], [], threading.Lock()

    def on_progress(lanes, steps):
        if not busy.acquire(blocking=False):   # the engine must never call two at once
            overlaps.append(1)
            return
        try:
            calls.append((lanes.tolist(), steps))
            time.sleep(0.002)                  # widen the window a concurrent call would hit
        finally:
            busy.release()

    out = _np(train_many(cfg, keys, hp, layout=layout, progress=on_progress, progress_every=every))
    ref = _np(train_many(cfg, keys, hp, layout=layout))
    _assert_records_equal(out, ref)            # bit-identical with and without progress
    assert not overlaps
    done = collections.Counter()
    for lanes, steps in calls:
        assert steps == every * cfg.log_every
        done.update({lane: steps for lane in lanes})
    assert done == {i: cfg.steps for i in range(R)}     # sums to R x steps
    n_reports = cfg.steps // cfg.log_every // every
    if layout.strategy == "map":               # one call per report per run
        assert len(calls) == R * n_reports
    else:                                      # one call per report per device batch
        assert len(calls) == layout.n_devices * n_reports
        assert sorted(len(lanes) for lanes, _ in calls) == [1] * n_reports + [2] * n_reports

    # the progress program is cached: new values do not recompile it
    with _count_compiles() as compiles:
        calls.clear()
        train_many(cfg, run_keys(5, np.arange(R)[:, None]), {"lr": np.array([0.2, 0.1, 0.05])},
                   layout=layout, progress=on_progress, progress_every=every)[
            "train_loss"].block_until_ready()
        assert compiles == [] and sum(len(lanes) * n for lanes, n in calls) == R * cfg.steps


def test_progress_every_k_logs_reports_the_remainder_at_the_end():
    cfg = CFG_MB                               # 9 steps, a log every 3: logs 1, 2, 3
    key = jax.random.key(8)
    hp = {**default_hparams(cfg), "lr": 0.02}
    calls = []
    with progress_listener(lambda lanes, steps: calls.append((lanes.tolist(), steps))):
        out = _np(jax.jit(make_train(cfg, progress=2))(key, hp, 7))
    assert calls == [([7], 6), ([7], 3)]       # after log 2 (logs 1-2), after log 3 (the rest)
    _assert_records_equal(out, _np(_jit_train(cfg)(key, {"lr": 0.02})))
    with pytest.raises(ConfigError, match="progress"):
        make_train(cfg, progress=-1)


def test_one_progress_listener_at_a_time():
    with progress_listener(lambda lanes, steps: None):
        with pytest.raises(RuntimeError, match="already installed"):
            with progress_listener(lambda lanes, steps: None):
                pass
    with progress_listener(lambda lanes, steps: None):   # released on exit
        pass


def test_choose_layout_rule():
    small = _cfg(width=32, T=10, n=32)
    big = _cfg(width=1024, T=10, n=32)
    assert choose_layout(small, 256, backend="cpu", devices=[0, 1]) == Layout(2, "map", 1)
    assert choose_layout(big, 4, backend="cpu", devices=[0, 1]) == Layout(2, "map", 1)
    assert choose_layout(big, 1, backend="cpu", devices=[0, 1]) == Layout(1, "map", 1)
    assert choose_layout(small, 256, backend="gpu", devices=jax.devices()[:1]).strategy == "vmap"


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
    with pytest.raises(ValueError, match="sigma_w"):
        train_many(cfg, run_keys(0, np.zeros((3, 1), int)), {"sigma_w": np.ones(2)})


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


def test_release_compiled_frees_memory_maps_and_only_past_the_threshold(monkeypatch):
    """XLA's CPU backend holds ~3 memory maps per compiled kernel while a program is cached (a test
    session or a long sweep would otherwise reach vm.max_map_count and abort inside LLVM)."""
    from rnn_ntk import train
    cfg, R = _cfg(width=7), 2
    keys = run_keys(0, np.arange(R)[:, None])
    train.release_compiled(force=True)
    before = train._map_counts()
    assert before is not None, "this test needs Linux's /proc (the limit it guards is Linux's)"
    ref = _np(train_many(cfg, keys, {}))
    held = train._map_counts()[0]
    assert held > before[0] + 50              # one small program holds hundreds of maps
    with _count_compiles() as compiles:       # far below the threshold: nothing is dropped
        assert not train.release_compiled()
        train_many(cfg, keys, {})["train_loss"].block_until_ready()
    assert compiles == []
    assert train.release_compiled(force=True)
    assert train._map_counts()[0] < held - 50  # the program's maps are gone
    train_many(cfg, keys, {})["train_loss"].block_until_ready()        # cached again
    monkeypatch.setattr(train, "MAP_COUNT_FRACTION", 0.0)   # "over the threshold" from now on
    with _count_compiles() as compiles:       # reusing a cached program never checks or drops
        train_many(cfg, keys, {})["train_loss"].block_until_ready()
    assert compiles == []
    # a new program over the threshold drops every cached one first, so cfg's recompiles
    train_many(_cfg(width=6), keys, {})["train_loss"].block_until_ready()
    monkeypatch.setattr(train, "MAP_COUNT_FRACTION", 1.0)
    with _count_compiles() as compiles:
        out = _np(train_many(cfg, keys, {}))
    assert len(compiles) >= 1
    _assert_records_equal(out, ref)
