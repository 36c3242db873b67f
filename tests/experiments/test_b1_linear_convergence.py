"""B1 (linear convergence): the statistics on synthetic curves with known answers, and the
experiment end to end at scale 'ci'."""
import math

import numpy as np
import pytest

from rnn_ntk.reproduce import VERDICTS, load_experiment


b1 = load_experiment("b1_linear_convergence")


def test_steps_to_fraction_of_an_exponential_is_exact():
    rate = 0.037
    steps = np.arange(0, 1001, 10)
    loss = 3.0 * np.exp(-rate * steps)
    got = b1.steps_to_fraction(steps, loss, 1e-6)
    assert got == pytest.approx(math.log(1e6) / rate, rel=1e-10)   # log-linear interpolation
    assert math.isnan(b1.steps_to_fraction(steps, loss, 1e-30))
    assert b1.steps_to_fraction(steps, loss, 2.0) == 0.0


def test_late_phase_fit_recovers_the_slowest_rate_after_a_transient():
    steps = np.arange(0, 3001, 10).astype(float)
    fast, slow = 0.2, 0.011
    loss = 5.0 * np.exp(-fast * steps) + 1e-3 * np.exp(-slow * steps)
    f = b1.late_phase_fit(steps, loss)
    assert f.slope == pytest.approx(-slow, rel=1e-6)
    assert f.r2 > 0.999999
    # a curve that stalls above eps has no late phase
    assert b1.late_phase_fit(steps, 1.0 + np.exp(-steps)) is None


def test_kernel_rate_is_the_slowest_mode_of_gd_on_a_quadratic():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    K = A @ A.T + 0.05 * np.eye(6)
    lam = np.linalg.eigvalsh(K)
    lr = 1.0 / lam[-1]
    y = rng.normal(size=6)
    f = np.zeros(6)
    steps, loss = [], []
    for t in range(0, 20001):
        if t % 20 == 0:
            steps.append(t)
            loss.append(0.5 * np.sum((f - y) ** 2))
        f = f - lr * K @ (f - y)
    fit = b1.late_phase_fit(np.array(steps), np.array(loss))
    assert fit is not None
    assert fit.slope == pytest.approx(b1.kernel_rate(lr, lam[0]), rel=1e-3)


def test_infinite_width_steps_flags_unstable_closed_forms_and_counts_stable_ones():
    """Brute-force GD on a quadratic: the step count of a stable curve is the first step below
    eps (to the logging grid's interpolation), an unstable one (lr lambda_max > 2) is NaN."""
    rng = np.random.default_rng(1)
    A = rng.normal(size=(5, 5))
    K = A @ A.T + 0.2 * np.eye(5)
    lam_max = np.linalg.eigvalsh(K)[-1]
    y = rng.normal(size=5)
    steps = np.arange(0, 4001)
    curves = []
    for lr in (1.0 / lam_max, 2.2 / lam_max):
        f, loss = np.zeros(5), []
        for _ in steps:
            loss.append(0.5 * np.sum((f - y) ** 2))
            f = f - lr * K @ (f - y)
        curves.append(loss)
    curves = np.array(curves)
    t, stable = b1.infinite_width_steps(steps, curves)
    assert list(stable) == [True, False] and math.isnan(t[1])
    first = int(np.flatnonzero(curves[0] <= 1e-6 * curves[0, 0])[0])
    assert first - 1 < t[0] <= first
    t2, _ = b1.infinite_width_steps(steps[::10], curves[:, ::10][None])   # (W, S, L) shapes
    assert t2.shape == (1, 2) and abs(t2[0, 0] - t[0]) < 10


def test_ci_end_to_end(ci_results, tmp_path):
    res = ci_results(b1.NAME)                        # b1.run(res, "ci"), shared with other tests
    files = sorted((res / b1.NAME).glob("width_*.npz"))
    assert len(files) == len(b1.SETTINGS["ci"].widths)
    s = b1.summary(res)
    assert not s["diverged"]
    loss = s["arrays"]["train_loss"]
    assert np.all(loss[..., -1] < 1e-2 * loss[..., 0])                # GD at lr = 1/lambda_max fits
    np.testing.assert_allclose(s["arrays"]["lr"] * s["arrays"]["lam_max"], 1.0, rtol=1e-12)
    paths = b1.figures(res, tmp_path / "fig")
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
    cl = b1.claims(res)
    assert len(cl) == 4
    assert [c.role for c in cl] == ["claim", "claim", "extra", "claim"]
    np.testing.assert_allclose(s["ratio"], s["t_eps"] / s["t_inf"])
    assert all(c.verdict in VERDICTS and c.experiment == b1.NAME for c in cl)


def test_ratio_at_widest_is_the_seed_mean_over_comparable_seeds():
    ratio = np.array([[2.0, np.nan, 1.5], [1.1, np.nan, 1.3]])       # (widths, seeds)
    est, (lo, hi), n = b1.ratio_at_widest({"ratio": ratio})
    assert n == 2 and est == pytest.approx(1.2)
    assert 1.1 <= lo <= est <= hi <= 1.3                             # a bootstrap of two values
    est, ci, n = b1.ratio_at_widest({"ratio": np.array([[1.0, 1.0], [np.nan, 1.2]])})
    assert n == 1 and math.isnan(est)
