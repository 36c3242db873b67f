"""C1 (kernel complexity): the statistics against independent computations, and the experiment end
to end at scale 'ci'."""

import numpy as np
import pytest

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


@pytest.mark.slow   # ten targets = ten compiled training programs: ~80 s of CPU at scale 'ci'
def test_end_to_end_ci(tmp_path):
    c1.run(tmp_path / "res", "ci")
    c1.run(tmp_path / "res", "ci")                   # resumable: nothing left to do
    figs = c1.figures(tmp_path / "res", tmp_path / "fig")
    assert figs and all(p.exists() for p in figs)
    cl = c1.claims(tmp_path / "res")
    assert len(cl) == 6
    assert all(c.verdict in VERDICTS and c.experiment == c1.NAME for c in cl)
