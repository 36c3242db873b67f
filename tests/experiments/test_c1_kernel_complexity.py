"""C1 (kernel complexity): the statistics against independent computations, and the experiment end
to end at scale 'ci'."""

import numpy as np
import pytest

from rnn_ntk import sweep
from rnn_ntk.reproduce import VERDICTS, load_experiment


c1 = load_experiment("c1_kernel_complexity")


def test_complexity_matches_explicit_inverse():
    # sqrt(y^T (H + j I)^-1 y tr H) / n with j = jitter * mean(diag H), by an explicit inverse
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 30))
    H = A @ A.T + 0.5 * np.eye(30)
    y = rng.normal(size=30)
    j = 1e-3 * np.trace(H) / 30
    want = np.sqrt(y @ np.linalg.inv(H + j * np.eye(30)) @ y * np.trace(H)) / 30
    assert c1.complexity(H, y, jitter=1e-3) == pytest.approx(want, rel=1e-10)


def test_complexity_known_closed_form_for_identity_kernel():
    # H = I: sqrt(y^T y n) / n, the root mean square label (jitter 0)
    y = np.array([1.0, -2.0, 3.0, 0.5])
    assert c1.complexity(np.eye(4), y, jitter=0.0) == pytest.approx(np.sqrt(np.mean(y ** 2)))
    with pytest.raises(ValueError, match="H must be"):
        c1.complexity(np.eye(3), y)
    Y = np.stack([y, 2 * y, -y], axis=1)                # columns share one factorisation
    np.testing.assert_allclose(c1.complexity(np.eye(4), Y, jitter=0.0),
                               np.sqrt(np.mean(y ** 2)) * np.array([1, 2, 1]), rtol=1e-12)
    with pytest.raises(ValueError, match="positive trace"):
        c1.complexity(np.zeros((4, 4)), y)


@pytest.mark.parametrize("a", [1e-4, 0.01, 7.5, 1e3])
def test_complexity_is_invariant_under_kernel_scaling(a):
    # H -> a H leaves the scale-free measure unchanged, while sqrt(y^T H^-1 y / n) (the paper's
    # unnormalised form) changes by 1/sqrt(a)
    rng = np.random.default_rng(1)
    A = rng.normal(size=(20, 25))
    H = A @ A.T / 25
    y = rng.normal(size=20)
    assert c1.complexity(a * H, y) == pytest.approx(c1.complexity(H, y), rel=1e-9)
    raw = lambda K: np.sqrt(y @ np.linalg.solve(K, y) / 20)
    assert raw(a * H) == pytest.approx(raw(H) / np.sqrt(a), rel=1e-9)


def test_complexity_is_invariant_under_token_scaling():
    # the papers' ReLU RNN (zero bias, h0 = 0) has a degree-2 homogeneous NTK: H(a x) = a^2 H(x);
    # so the scale-free complexity of the same labels does not depend on the token norm
    import jax
    from rnn_ntk.kernels.infinite import infinite_kernels

    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 5, c1.INPUT_DIM))
    y = rng.normal(size=12)
    cfg = c1.model_config(8)
    with jax.enable_x64(True):
        H1 = np.asarray(infinite_kernels(cfg, x)[1])
        H01 = np.asarray(infinite_kernels(cfg, 0.1 * x)[1])
    np.testing.assert_allclose(H01, 0.01 * H1, rtol=1e-10, atol=0)
    assert c1.complexity(H01, y) == pytest.approx(c1.complexity(H1, y), rel=1e-8)


@pytest.mark.parametrize("n_vars,span", [(1, 3), (3, 3)])
def test_lag_target_is_the_wang_nvar_target(n_vars, span):
    # with the task's own beta and normalisation, lag_target at the lags span - o_j is the
    # wang_nvar target of rnn_ntk.tasks (an independent implementation of the same formula)
    import jax
    import jax.numpy as jnp
    from rnn_ntk import tasks

    t = c1.Target("t", "wang_nvar", n_vars, span)
    tc = c1.task_config(t, 16, 4)
    with jax.enable_x64(True):
        tp = tasks.target_params(tc, jax.random.key(3), dtype=jnp.float64)
        x = tasks.sample_inputs(tc, jax.random.key(4), 16, dtype=jnp.float64)
        want = np.asarray(tasks.target_values(tc, tp, x))[:, 0]
    lags = [span - o for o in tasks.nvar_offsets(tc)]
    got = float(tp["c"][0]) * c1.lag_target(np.asarray(x), tuple(lags),
                                            np.asarray(tp["beta"])[:, :, 0])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert c1.target_lags(t) == [tuple(sorted(lags))]


def test_lag_sets_of_the_n_series_use_every_lag_equally_often():
    # C1.1's design: for every N, all C(4, N) lag sets of {0..3}; each lag in N/4 of them
    from math import comb
    for N in (1, 2, 3, 4):
        sets = c1.target_lags(c1.Target("S", "lagset", N, 3))
        assert len(sets) == comb(4, N) and len(set(sets)) == len(sets)
        counts = np.bincount([l for s in sets for l in s], minlength=4)
        assert np.all(counts == comb(4, N) * N // 4)
    with pytest.raises(ValueError, match="lag sets"):
        c1.target_lags(c1.TARGETS[0])


def test_lag_target_is_normalised_and_checks_its_input():
    # Var y = 1 up to the reference sample's Monte-Carlo error, for every N (fresh tokens)
    rng = np.random.default_rng(5)
    for lags in [(0,), (0, 3), (0, 1, 2, 3)]:
        beta, c = c1.draw_lag_target(rng, lags, 3, 1.0)
        x = rng.normal(size=(20000, 4, 3))
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        y = c * c1.lag_target(x, lags, beta)
        assert np.var(y) == pytest.approx(1.0, abs=0.06)
        assert abs(np.mean(y)) < 0.03
    with pytest.raises(ValueError, match="distinct"):
        c1.lag_target(np.zeros((2, 4, 3)), (1, 1), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="beta must be"):
        c1.lag_target(np.zeros((2, 4, 3)), (0, 1), np.zeros((3, 3)))


@pytest.mark.parametrize("scale", ["ci", "default"])
def test_train_spec_resolves_to_the_module_configs(scale):
    # every target's sweep: the model and task the kernel arm uses (built without the TOML), the
    # scale's sizes, full-batch GD on the mean loss from a symmetric init, the given step and eps_x
    st = c1.SETTINGS[scale]
    for t in c1.TARGETS:
        spec = c1.train_spec(t, st, 0.25)
        runs = sweep.expand_runs(spec)
        assert [r.seed for r in runs] == list(range(st.train_seeds))
        assert all(r.static == () and r.lanes == () for r in runs)
        cfg = sweep.build_config(spec, runs[0].static, runs[0].width)
        assert cfg.model == c1.model_config(st.width)
        assert cfg.task == c1.task_config(t, max(st.ns), st.n_test)
        assert (cfg.steps, cfg.log_every, cfg.batch_size, cfg.optimizer, cfg.loss, cfg.dtype,
                cfg.init) == (st.steps, st.steps, None, "sgd", "mean", "float32", "symmetric")
        assert spec.fixed["train"]["lr"] == 0.25
        assert spec.fixed["task"]["eps_x"] == t.eps


def test_train_spec_template_is_the_default_n2_sweep():
    # the TOML as written (what `rnn-ntk run` would do with it) is target N2 at the default scale
    template = sweep.load_spec(c1.SPEC_PATH)
    n2 = next(t for t in c1.TARGETS if t.name == "N2")
    filled = c1.train_spec(n2, c1.SETTINGS["default"], template.fixed["train"]["lr"])
    assert filled.resolved == template.resolved


# scale 'ci': fourteen kernel targets at n <= 16 and two trained targets sharing one compiled
# program (the issue asks every experiment to run end to end in the default test run)
def test_end_to_end_ci(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(c1.NAME)                        # c1.run(res, "ci"), shared with other tests
    rerun_changes_nothing(c1, res)
    figs = c1.figures(res, tmp_path / "fig")
    assert figs and all(p.exists() for p in figs)
    cl = c1.claims(res)
    assert len(cl) == 6
    assert all(c.verdict in VERDICTS and c.experiment == c1.NAME for c in cl)
    assert [c.role for c in cl] == ["claim", "claim", "claim", "control", "extra", "claim"]
    K, R = c1._load(res)
    assert sorted(R) == sorted(c1.SETTINGS["ci"].train_targets)
    assert set(K) == {t.name for t in c1.ALL_TARGETS}
