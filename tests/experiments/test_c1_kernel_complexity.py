"""C1 (kernel complexity): the statistics against independent computations, and the experiment end
to end at scale 'ci'."""

import numpy as np
import pytest

from rnn_ntk import sweep
from rnn_ntk.reproduce import VERDICTS, load_experiment


c1 = load_experiment("c1_kernel_complexity")


def test_complexity_matches_explicit_inverse():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 30))
    H = A @ A.T + 0.5 * np.eye(30)
    y = rng.normal(size=30)
    j = 1e-3 * np.mean(np.diag(H))
    want = np.sqrt(y @ np.linalg.inv(H + j * np.eye(30)) @ y / 30)
    assert c1.complexity(H, y, jitter=1e-3) == pytest.approx(want, rel=1e-10)


def test_complexity_known_closed_form_for_identity_kernel():
    # H = I: y^T y / n, the mean square label (jitter 0)
    y = np.array([1.0, -2.0, 3.0, 0.5])
    assert c1.complexity(np.eye(4), y, jitter=0.0) == pytest.approx(np.sqrt(np.mean(y ** 2)))
    with pytest.raises(ValueError, match="H must be"):
        c1.complexity(np.eye(3), y)


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


# ten targets = ten compiled training sweeps: ~42 s at scale 'ci' (the issue asks every experiment
# to run end to end in the default test run)
def test_end_to_end_ci(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(c1.NAME)                        # c1.run(res, "ci"), shared with other tests
    rerun_changes_nothing(c1, res)
    figs = c1.figures(res, tmp_path / "fig")
    assert figs and all(p.exists() for p in figs)
    cl = c1.claims(res)
    assert len(cl) == 6
    assert all(c.verdict in VERDICTS and c.experiment == c1.NAME for c in cl)
