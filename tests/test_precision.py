"""Matrix-product precision contract (rnn_ntk.precision, issue 14 part 1).

Kernels, linearize, dynamics and the kernel-drift metric trace every dot product at HIGHEST
whatever the user's global ``jax_default_matmul_precision``; training traces its products at
``TrainConfig.matmul_precision``; sweeps record the setting in the store's attributes.

The checks read the programs JAX builds: the lowered StableHLO text of a jitted call
(``jax.jit(f).lower(...).as_text()``), or, for functions that run eagerly (infinite kernels,
closed-form dynamics), every module compiled while they run (``jax_dump_ir_to``). A control
shows that the same reading reports the global setting where nothing overrides it, so each
check can fail. (On CPU the three settings compute the same float32 products; the numerical
effect is measured on a GPU by benchmarks/gpu_check.py.)
"""
import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_ntk
from rnn_ntk import dynamics, precision, sweep
from rnn_ntk.kernels import empirical_nngp, empirical_ntk, infinite_kernels
from rnn_ntk.model import ConfigError, RNNConfig
from rnn_ntk.tasks import TaskConfig
from rnn_ntk.train import TrainConfig, default_hparams, make_train

D = 4  # random_labels needs input_dim >= 3
# A dot_general op in StableHLO text and its precision attribute (absent = none recorded).
_DOT = re.compile(r"stablehlo\.dot_general[^\n]*")
_PREC = re.compile(r"precision = \[(\w+), (\w+)\]")
GLOBALS = ("bfloat16", "default")   # the user's global setting; the scoped one must win


def dot_precisions(text):
    """The precision pair of every dot_general in StableHLO text, e.g. [('HIGHEST', 'HIGHEST')];
    ('NONE', 'NONE') for a dot without the attribute."""
    out = []
    for line in _DOT.findall(text):
        m = _PREC.search(line)
        out.append(m.groups() if m else ("NONE", "NONE"))
    return out


def lowered_dots(f, *args):
    return dot_precisions(jax.jit(f).lower(*args).as_text())


@contextlib.contextmanager
def global_precision(name):
    """The user's global setting (jax.config.update), restored afterwards."""
    old = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", name)
    try:
        yield
    finally:
        jax.config.update("jax_default_matmul_precision", old)


def compiled_dots(thunk, tmp_path):
    """Run ``thunk`` with every jit cache cleared and IR dumping on; the precision pair of every
    dot_general in every module compiled meanwhile (eager operations included)."""
    old = jax.config.read("jax_dump_ir_to")
    jax.clear_caches()
    jax.config.update("jax_dump_ir_to", str(tmp_path))
    try:
        jax.block_until_ready(thunk())
    finally:
        jax.config.update("jax_dump_ir_to", old)
    texts = [p.read_text() for p in sorted(tmp_path.glob("*.mlir"))]
    assert texts, "no module was dumped"
    return [d for t in texts for d in dot_precisions(t)]


def assert_all(dots, token):
    assert dots, "no dot_general found: the check would be vacuous"
    bad = [d for d in dots if d != (token, token)]
    assert not bad, f"{len(bad)} of {len(dots)} dots not at {token}: {sorted(set(bad))}"


def _model(readout="last", activation="relu", width=8):
    return RNNConfig(width=width, input_dim=D, activation=activation, readout=readout,
                     trainable=("W", "U", "b", "v"))


def _x(n=5, T=4, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((n, T, D)), jnp.float32)


# ----------------------------------------------------------------------------------------------
# the helpers themselves


def test_check_and_decorators():
    assert precision.check_matmul_precision("tensorfloat32") == "tensorfloat32"
    with pytest.raises(ValueError, match=r"matmul_precision must be one of \['highest'"):
        precision.check_matmul_precision("tf32")
    with pytest.raises(ValueError):
        precision.with_matmul_precision("HIGHEST")
    assert set(precision.PRECISION_TOKENS) == set(precision.MATMUL_PRECISIONS)

    @precision.highest_precision
    def f(a, b):
        """doc"""
        return a @ b

    assert f.__name__ == "f" and f.__doc__ == "doc"
    a = jnp.ones((3, 3), jnp.float32)
    with global_precision("bfloat16"):
        assert_all(lowered_dots(f, a, a), "HIGHEST")
        assert_all(lowered_dots(lambda a, b: a @ b, a, a), "DEFAULT")   # control


@pytest.mark.parametrize("glob", GLOBALS)
def test_control_unscoped_model_follows_the_global_setting(glob):
    """The reading can fail: rnn_ntk.apply itself has no scope, so its dots carry the global."""
    cfg = _model()
    p = rnn_ntk.init_params(cfg, jax.random.key(0), jnp.float32)
    with global_precision(glob):
        assert_all(lowered_dots(lambda p, x: rnn_ntk.apply(cfg, p, x), p, _x()),
                   precision.PRECISION_TOKENS.get(glob, "DEFAULT"))


# ----------------------------------------------------------------------------------------------
# kernels, linearize, dynamics: always HIGHEST


@pytest.mark.parametrize("glob", GLOBALS)
@pytest.mark.parametrize("readout,method", [("last", "structured"), ("all", "structured"),
                                            ("mean", "jacobian")])
def test_empirical_kernels_are_highest(glob, readout, method):
    cfg = _model(readout)
    p = rnn_ntk.init_params(cfg, jax.random.key(1), jnp.float32)
    x1, x2 = _x(4, 3, 1), _x(3, 3, 2)
    with global_precision(glob):
        assert_all(lowered_dots(lambda p, a, b: empirical_ntk(cfg, p, a, b, method=method),
                                p, x1, x2), "HIGHEST")
        assert_all(lowered_dots(lambda p, a, b: empirical_nngp(cfg, p, a, b), p, x1, x2),
                   "HIGHEST")


@pytest.mark.parametrize("glob", GLOBALS)
@pytest.mark.parametrize("activation,readout", [("relu", "last"), ("erf", "all"),
                                                ("tanh", "mean")])
def test_infinite_kernels_are_highest(glob, activation, readout, tmp_path):
    cfg = _model(readout, activation)
    with global_precision(glob):
        dots = compiled_dots(lambda: infinite_kernels(cfg, np.asarray(_x(4, 3, 3)),
                                                      np.asarray(_x(3, 3, 4))), tmp_path)
    assert_all(dots, "HIGHEST")


@pytest.mark.parametrize("glob", GLOBALS)
def test_linearize_is_highest(glob):
    cfg = _model("all")
    p0 = rnn_ntk.init_params(cfg, jax.random.key(2), jnp.float32)
    p = jax.tree.map(lambda a: a + 0.1, p0)
    f_lin = rnn_ntk.linearize(cfg, p0)
    with global_precision(glob):
        assert_all(lowered_dots(f_lin, p, _x()), "HIGHEST")
        # and its gradient (what the linearised model trains with)
        g = lambda p, x: jax.grad(lambda q: jnp.sum(f_lin(q, x) ** 2))(p)
        assert_all(lowered_dots(g, p, _x()), "HIGHEST")


def _kernel_problem(seed=0, n=6, n_test=4):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n + n_test, 3 * (n + n_test)))
    k = (a @ a.T / a.shape[1]).astype(np.float32)
    return k[:n, :n], rng.standard_normal((n, 2)).astype(np.float32), k[n:, :n], k[n:, n:]


@pytest.mark.parametrize("glob", GLOBALS)
def test_dynamics_are_highest(glob, tmp_path):
    ktt, y, kxt, kxx = _kernel_problem()

    def run():
        out = []
        for make in (dynamics.gradient_descent_mse, dynamics.gradient_descent):
            predict = make(ktt, y, 0.5)
            out += list(predict(jnp.asarray([0.0, 3.0, 10.0], jnp.float32), 0.0,
                                jnp.zeros((4, 2), jnp.float32), kxt))
            out += list(predict(None, 0.0, jnp.zeros((4, 2), jnp.float32), kxt))
        out += list(dynamics.nngp_posterior(ktt, y, kxt, kxx, diag_reg=1e-3))
        out.append(dynamics.kernel_regression(ktt, y, kxt))
        return out

    with global_precision(glob):
        dots = compiled_dots(run, tmp_path)
    assert_all(dots, "HIGHEST")


@pytest.mark.parametrize("glob", GLOBALS)
def test_dynamics_inside_a_user_jit_are_highest(glob):
    """The predictor called inside the user's own jit: the scope applies at trace time."""
    ktt, y, kxt, _ = _kernel_problem(1)
    predict = dynamics.gradient_descent_mse(jnp.asarray(ktt), jnp.asarray(y), 1.0)
    with global_precision(glob):
        dots = lowered_dots(lambda t, k: predict(t, 0.0, jnp.zeros((4, 2), jnp.float32), k),
                            jnp.asarray([1.0, 2.0], jnp.float32), jnp.asarray(kxt))
    assert_all(dots, "HIGHEST")


# ----------------------------------------------------------------------------------------------
# training: TrainConfig.matmul_precision


def _train_cfg(**kw):
    mcfg = RNNConfig(width=8, input_dim=D, activation="relu", readout="last",
                     trainable=("W", "U", "b", "v"))
    tcfg = TaskConfig("random_labels", n_train=6, n_test=5, length=3, input_dim=D)
    kw = {"steps": 4, "log_every": 2, "dtype": "float32", **kw}
    return TrainConfig(mcfg, tcfg, **kw)


def _train_dots(cfg):
    train = make_train(cfg)
    return lowered_dots(train, jax.random.key(0), default_hparams(cfg))


def test_train_config_checks_matmul_precision():
    assert _train_cfg().matmul_precision == "highest"
    with pytest.raises(ConfigError, match=r"^matmul_precision: must be one of .*got 'fast'$"):
        _train_cfg(matmul_precision="fast")
    assert "matmul_precision" in sweep.CATALOGUE["train"]


@pytest.mark.parametrize("requested", precision.MATMUL_PRECISIONS)
@pytest.mark.parametrize("glob", ["bfloat16", "highest"])
def test_training_step_at_requested_precision(requested, glob):
    """Every dot of the compiled run (steps, gradients, evaluation) at the requested precision,
    whatever the global setting (the global 'highest' must not win over a requested 'default')."""
    with global_precision(glob):
        dots = _train_dots(_train_cfg(matmul_precision=requested, batch_size=3,
                                      optimizer="momentum"))
    assert_all(dots, precision.PRECISION_TOKENS[requested])


@pytest.mark.parametrize("extra", [{"kernel_stride": 1, "n_probe": 3}, {"linearized": True}])
def test_drift_metric_and_linearised_model_stay_highest(extra):
    """With a fast training precision the kernel-drift metric (empirical NTK) and the linearised
    model stay HIGHEST while the network keeps the requested one. The drift metric only adds
    kernel work to the run, so the program's DEFAULT dots are exactly those of the same run
    without it; the linearised model also changes the network's evaluation bookkeeping, so
    there only both precisions must be present (f_lin alone: test_linearize_is_highest)."""
    with global_precision("bfloat16"):
        base = _train_dots(_train_cfg(matmul_precision="default"))
        full = _train_dots(_train_cfg(matmul_precision="default", **extra))
    assert set(base) == {("DEFAULT", "DEFAULT")}
    assert set(full) == {("DEFAULT", "DEFAULT"), ("HIGHEST", "HIGHEST")}
    if "kernel_stride" in extra:
        assert full.count(("DEFAULT", "DEFAULT")) == len(base)


def test_sweep_records_matmul_precision(tmp_path):
    """A sweep's [train] matmul_precision reaches the programs and the store's attributes."""
    text = f"""
[model]
width = 4
[task]
kind = "random_labels"
n_train = 4
n_test = 4
length = 3
input_dim = {D}
[train]
steps = 2
log_every = 1
matmul_precision = "tensorfloat32"
[sweep]
seed = 0
"""
    spec = sweep.parse_spec(text, "<test>")
    plan = sweep.make_plan(spec)
    assert {p.cfg.matmul_precision for p in plan.programs} == {"tensorfloat32"}
    sweep.run_sweep(spec, tmp_path / "out")
    ds = rnn_ntk.load_results(tmp_path / "out")
    assert ds.attrs["matmul_precision"] == "tensorfloat32"
    bad = text.replace('"tensorfloat32"', '"tf32"')
    with pytest.raises(sweep.SpecError, match="matmul_precision"):
        sweep.make_plan(sweep.parse_spec(bad, "<test>"))


@pytest.mark.parametrize("requested", ["highest", "tensorfloat32"])
def test_setup_run_at_the_training_precision(requested):
    """setup_run reproduces train's data, so it traces the task's products (here a teacher
    network's) at the same precision."""
    from rnn_ntk.train import setup_run
    mcfg = RNNConfig(width=8, input_dim=D, readout="last")
    cfg = TrainConfig(mcfg, TaskConfig("teacher", n_train=6, n_test=5, length=3, input_dim=D),
                      steps=2, dtype="float32", matmul_precision=requested)
    with global_precision("bfloat16"):
        dots = lowered_dots(lambda k: setup_run(cfg, k, {}), jax.random.key(0))
    assert_all(dots, precision.PRECISION_TOKENS[requested])
