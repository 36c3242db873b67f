"""B3 (lazy training): the censored fit on synthetic censored data of known slope, the K_0 step
budget, and the experiment end to end at scale 'ci', reusing L1's stored runs without retraining."""
import math
import os

import numpy as np
import pytest

from rnn_ntk import model
from rnn_ntk.reproduce import VERDICTS, load_experiment

# shares the ci runs of the session fixture ci_results with test_l1_net_vs_linearized.py:
# one pytest-xdist worker runs both files
pytestmark = pytest.mark.xdist_group("l1_ci_runs")


b3 = load_experiment("b3_lazy_training")


def _censored_sample(slope, seeds, rng, sigma=0.4, a=2.0):
    """t = e^a delta^slope e^(sigma z) on 4 deltas; the budget at each delta censors none of the
    runs at the two largest deltas, about half at delta = 0.1 and about 80% at delta = 0.05."""
    deltas = np.array([0.4, 0.2, 0.1, 0.05])
    t = np.exp(a + slope * np.log(deltas)[None] + sigma * rng.normal(size=(seeds, 4)))
    budget = np.exp(a + slope * np.log(deltas) + sigma * np.array([5.0, 5.0, 0.0, -0.85]))
    observed = np.where(t <= budget[None], t, np.nan)
    return deltas, t, observed, budget


def test_censored_line_without_censoring_is_least_squares():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = 1.0 - 0.7 * x + 0.1 * rng.normal(size=30)
    b, a, _ = b3.censored_line(x, y, np.zeros(30, bool))
    want_b, want_a = np.polyfit(x, y, 1)
    assert (b, a) == pytest.approx((want_b, want_a), abs=1e-12)
    assert math.isnan(b3.censored_line(x, y, x < 10)[0])          # everything censored


def test_censored_line_maximises_the_censored_normal_likelihood():
    """Against a derivative-free maximisation of the Tobit likelihood written out here (density
    for observed points, normal tail probability for censored ones)."""
    from scipy import optimize
    from scipy.stats import norm
    rng = np.random.default_rng(5)
    x = np.repeat(np.log([0.4, 0.2, 0.1, 0.05]), 10)
    y = 2 - 1.3 * x + 0.4 * rng.normal(size=x.size)
    cap = np.where(x < -2, 2 - 1.3 * x, 99.0)
    c = y > cap
    y = np.where(c, cap, y)
    assert 3 <= c.sum() <= 15

    def nll(p):
        mu, sig = p[0] + p[1] * x, math.exp(p[2])
        return -(norm.logpdf(y[~c], mu[~c], sig).sum() + norm.logsf(y[c], mu[c], sig).sum())

    ref = optimize.minimize(nll, [2.0, -1.0, 0.0], method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).x
    b, a, sig = b3.censored_line(x, y, c)
    assert (b, a, sig) == pytest.approx((ref[1], ref[0], math.exp(ref[2])), abs=1e-6)


def test_censored_power_law_recovers_a_known_slope_where_dropping_censored_runs_is_biased():
    rng = np.random.default_rng(7)
    deltas, t, observed, budget = _censored_sample(-1.5, 60, rng)
    cens = ~np.isfinite(observed)
    assert 0.5 < cens[:, 2:].mean() < 0.75 and not cens[:, :2].any()
    f = b3.censored_power_law(deltas, observed, budget, n_boot=40)
    assert f.slope == pytest.approx(-1.5, abs=0.05)
    assert f.ci95[0] < -1.5 < f.ci95[1]
    # what the fit guards against: the fastest runs alone (censored ones dropped), or the budget
    # taken as the count, flatten the slope well beyond the fit's error
    keep = ~cens
    naive = np.polyfit(np.log(np.broadcast_to(deltas, t.shape)[keep]), np.log(observed[keep]), 1)[0]
    clipped = np.polyfit(np.log(np.broadcast_to(deltas, t.shape)).ravel(),
                         np.log(np.minimum(t, budget)).ravel(), 1)[0]
    assert naive > -1.5 + 0.12 and clipped > -1.5 + 0.12
    # scale-free in the unit of t: multiplying every count and budget by c moves the intercept only
    f2 = b3.censored_power_law(deltas, 10 * observed, 10 * budget, n_boot=5)
    assert f2.slope == pytest.approx(f.slope, abs=1e-5)
    assert f2.intercept == pytest.approx(f.intercept + math.log(10), abs=1e-4)


def test_censored_power_law_needs_two_deltas_with_a_finished_run():
    t = np.full((3, 4), np.nan)
    t[:, 0] = 10.0
    assert b3.censored_power_law([0.4, 0.2, 0.1, 0.05], t, [20, 20, 20, 20]) is None


def test_linearised_steps_bound_gd_on_a_quadratic():
    """t_lin = ln(1/eps) / (-2 ln(1 - lr lambda_min)) bounds the steps GD on the kernel needs to
    reach eps of its initial loss (brute force), and is reached when only the slowest mode is
    excited."""
    rng = np.random.default_rng(2)
    A = rng.normal(size=(6, 6))
    K = A @ A.T + 0.3 * np.eye(6)
    lam, vec = np.linalg.eigh(K)
    lr = 1.0 / lam[-1]
    t_lin = float(b3.linearised_steps(lr, lam[0], 1e-6))
    for r0 in (rng.normal(size=6), vec[:, 0]):
        r, t = r0.copy(), 0
        while 0.5 * r @ r > 1e-6 * 0.5 * r0 @ r0:
            r = r - lr * K @ r
            t += 1
        assert t <= math.ceil(t_lin)
    assert t == math.ceil(t_lin)                                   # the slowest mode alone
    st = b3.DELTA_SETTINGS["default"]
    assert b3.step_budget(np.array([100.0, 1234.0]), st) == 3720     # 3 x 1234 up to the grid
    assert b3.step_budget(np.array([1e9]), st) == st.steps           # capped


def test_ci_end_to_end_reuses_l1_runs(ci_results, tmp_path):
    res = ci_results(b3.NAME)     # b3.run(res, "ci"): trains L1's ci runs unless stored already
    files = sorted((res / b3.l1.NAME).glob("width_*.npz"))
    assert len(files) == len(b3.l1.SETTINGS["ci"].widths)
    # B3's own store holds only its separation sweep; the lazy-training statistics are L1's runs
    assert sorted(p.name for p in (res / b3.NAME).iterdir()) == ["delta.npz"]
    files.append(res / b3.NAME / "delta.npz")
    stamps = [os.stat(f).st_mtime_ns for f in files]
    b3.run(res, "ci")                                   # stored: nothing is trained again
    b3.l1.run(res, "ci")
    assert [os.stat(f).st_mtime_ns for f in files] == stamps

    d = b3.delta_summary(res)
    assert d["t_eps"].shape == (len(b3.DELTAS), b3.DELTA_SETTINGS["ci"].seeds)
    np.testing.assert_allclose(d["arrays"]["deltas"], b3.DELTAS)
    budget = d["arrays"]["budget"]
    assert np.all(budget <= b3.DELTA_SETTINGS["ci"].steps)
    assert np.all(d["t_eps"][np.isfinite(d["t_eps"])] <= np.broadcast_to(
        budget[:, None], d["t_eps"].shape)[np.isfinite(d["t_eps"])])
    np.testing.assert_allclose(d["arrays"]["t_lin"], b3.linearised_steps(
        d["arrays"]["lr"], d["arrays"]["lam_min"]))

    s = b3.l1.summary(res)
    a = s["arrays"]
    # the movement statistic is s_w * ||dW|| (NTK parameterisation) = sqrt(m) ||dW_paper||
    sw = model.RNNConfig.paper(width=1, input_dim=b3.l1.INPUT_DIM).sigma_w
    np.testing.assert_allclose(s["stats"]["movement"], np.sqrt(2.0) * a["dtheta_W"][..., -1])
    assert sw == np.sqrt(2.0)
    assert np.all((s["stats"]["sign_flip"] >= 0) & (s["stats"]["sign_flip"] <= 1))
    assert np.all(a["sign_flip"][..., 0] == 0)          # no flips at initialisation

    paths = b3.figures(res, tmp_path / "fig")
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
    cl = b3.claims(res)
    assert [c.claim[:4] for c in cl] == ["B3.1", "B3.2", "B3.5"]    # B3.3/B3.4 are L1.2/L1.1
    assert all(c.verdict in VERDICTS and c.experiment == b3.NAME and c.role == "claim"
               for c in cl)
