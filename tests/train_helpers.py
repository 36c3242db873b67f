"""Shared by the training-engine tests (test_train.py, test_lanes.py, test_progress.py): small
configs, record comparisons, a compile counter, and a from-scratch optimiser loop (_ref_trajectory)
that the engine's trajectories are compared against."""
import contextlib
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import model
from rnn_ntk.model import RNNConfig
from rnn_ntk.tasks import TaskConfig
from rnn_ntk.train import TrainConfig, batch_indices, default_hparams, make_train, setup_run

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
    """A list that collects one entry per program built while the block runs: an XLA backend
    compile, or a load from the session's persistent compilation cache (tests/conftest.py), which
    stands in for a compile there."""
    compiles = []

    def on_duration(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    def on_event(event, **kw):
        if event == "/jax/compilation_cache/cache_hits":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
        jax.monitoring.unregister_event_listener(on_event)


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


# XLA's default CPU optimisation computes the records of two different programs that do the same
# arithmetic (e.g. a run with and without progress callbacks) bit for bit alike; at the suite's
# fast-compile level (tests/conftest.py) their fusions may round a value 1 ulp apart.
EXACT_ACROSS_PROGRAMS = "--xla_backend_optimization_level=0" not in os.environ.get("XLA_FLAGS", "")


def xla_default_env(env: dict) -> dict:
    """``env`` for a subprocess that compiles at XLA's default optimisation (a test that compares
    two different programs bit for bit runs both in such subprocesses)."""
    out = dict(env)
    added = os.environ.get("RNN_NTK_TEST_ADDED_XLA_FLAGS", "")
    if added:
        out["XLA_FLAGS"] = out.get("XLA_FLAGS", "").replace(added, "").strip()
    out["RNN_NTK_TEST_FAST_COMPILE"] = "0"
    return out


def _assert_records_same_arithmetic(a, b):
    """Records of two programs that do the same arithmetic: bit-identical at XLA's default
    optimisation, else equal to 8 ulps of their dtype (relative, and absolute for records that
    are rounding noise around 0, such as a linear net's gap to its linearisation)."""
    if EXACT_ACROSS_PROGRAMS:
        return _assert_records_equal(a, b)
    for k in a:
        if isinstance(a[k], dict):
            _assert_records_same_arithmetic(a[k], b[k])
        elif np.issubdtype(np.asarray(a[k]).dtype, np.floating):
            eps = np.finfo(np.asarray(a[k]).dtype).eps
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=8 * eps, atol=8 * eps,
                                       err_msg=k)
        else:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


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


def _ref_loss(cfg, params, x, y, scales, w=None, params0=None):
    """Independent loss: mean of squared residuals, or 1/2 sum over positions >= 2; each
    position's squared residuals times cfg.position_weights; with cfg.center the prediction is
    f(params) - f(params0)."""
    pred = model.apply(cfg.model, params, x, scales=scales)
    if cfg.center:
        pred = pred - model.apply(cfg.model, params0, x, scales=scales)
    r2 = (pred - y) ** 2
    if cfg.position_weights is not None:
        r2 = r2 * jnp.asarray(cfg.position_weights).reshape(1, -1, 1)
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
        return _ref_loss(cfg, {**p0, **theta}, xb, yb, sc, w, params0=p0)

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
# the A2 setting: online-style minibatch SGD on the papers' loss with per-position weights, the
# centred model f - f_0 and its linearisation (tanh, W and v trained)
CFG_POS = _cfg(T=4, n=7, batch_size=2, steps=6, log_every=3, target="all", loss="sum_from_2",
               activation="tanh", sigma_b=0.4, trainable=("W", "v"), position_weights=(0.0, 2.0, 0.5, 1.5),
               center=True, linearized=True, save_params=True)
# a wide net, only W trained
CFG_MEM = _cfg(width=256, T=4, n=8, steps=400, log_every=400, trainable=("W",), dtype="float32",
               save_params=True)
# relu net and its linearisation side by side (heavy ball), kernel-change record, U frozen
CFG_LIN = _cfg(linearized=True, steps=6, log_every=1, sigma_b=0.3, save_params=True,
               optimizer="momentum", trainable=("W", "b", "v"), kernel_stride=2, n_probe=3)
# tanh, symmetric init
CFG_SYM = _cfg(width=6, activation="tanh", sigma_b=0.5, init="symmetric", save_params=True, steps=4)
