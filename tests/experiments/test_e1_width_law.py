"""E1 (width law): the statistics on synthetic data with known answers, the cell's kernel step
against an independent computation, and the experiment end to end at scale 'ci'."""
import math
import shutil

import numpy as np
import pytest

from rnn_ntk.reproduce import VERDICTS, load_experiment

e1 = load_experiment("e1_width_law")


def test_converged_uses_the_budget_and_eps():
    steps = np.arange(0, 101, 10, dtype=float)
    loss = np.exp(-steps / 10.0)                      # ratio 1e-2 at t = 10 ln 100 = 46.05
    assert e1.converged(steps, loss, 47.0) and not e1.converged(steps, loss, 45.0)
    assert not e1.converged(steps, np.full(steps.shape, np.nan), 1e9)    # diverged
    assert not e1.converged(steps, np.maximum(loss, 0.05), 1e9)          # a plateau


def test_width_threshold_interpolates_and_censors():
    w = np.array([4, 8, 16, 32])
    assert e1.width_threshold(w, [0.0, 0.25, 0.75, 1.0]) == pytest.approx(8 * math.sqrt(2))
    assert e1.width_threshold(w, [0.0, 0.0, 0.5, 1.0]) == pytest.approx(16)
    assert e1.width_threshold(w, [0.5, 1.0, 1.0, 1.0]) == 4             # left-censored
    assert e1.width_threshold(w, [0.0, 0.25, 0.25, 0.0]) == math.inf    # right-censored
    with pytest.raises(ValueError, match="increasing"):
        e1.width_threshold([8, 4], [0, 1])


def test_law_fit_tells_a_power_law_from_an_exponential():
    n = np.array([4.0, 8.0, 16.0, 32.0, 64.0])
    power = 3.0 * n ** 1.5
    f = e1.law_fit(n, power, lo=1.0)
    assert f.power.slope == pytest.approx(1.5) and f.dr2 > 0.05
    expo = 2.0 * np.exp(0.08 * n)
    g = e1.law_fit(n, expo, lo=1.0)
    assert g.expo.slope == pytest.approx(0.08) and g.dr2 < -0.05
    # censored cells are left out; fewer than three usable cells or a constant m*: no fit
    assert e1.law_fit(n, np.r_[power[:3], np.inf, np.inf], lo=1.0) is not None
    assert e1.law_fit(n, np.r_[power[:2], np.inf, np.inf, np.inf], lo=1.0) is None
    assert e1.law_fit(n, np.r_[1.0, power[1:3], np.inf, np.inf], lo=1.0) is None
    assert e1.law_fit(n, np.full(5, 7.0), lo=1.0) is None


def _synthetic_conv(x, widths, mstar_true, S, rng, slope=6.0):
    """Converged flags whose probability is a logistic in ln m centred on the true m*."""
    p = 1.0 / (1.0 + np.exp(-slope * (np.log(widths)[None, :] - np.log(mstar_true)[:, None])))
    return rng.random((len(x), len(widths), S)) < p[:, :, None]


@pytest.mark.parametrize("law,sign", [("power", 1), ("exp", -1)])
def test_bootstrap_law_gives_the_right_verdict(law, sign):
    rng = np.random.default_rng(0)
    x = np.array([4.0, 8.0, 16.0, 32.0, 64.0])
    widths = 2.0 ** np.arange(1, 16)
    m = 2.0 * x ** 2 if law == "power" else 4.0 * np.exp(0.15 * x)
    conv = _synthetic_conv(x, widths, m, 40, rng)
    f = e1.law_fit(x, e1.mstar_of(widths, conv), widths[0])
    d, p = e1.bootstrap_law(x, widths, conv, n_boot=200)
    lo, hi = np.percentile(d, [2.5, 97.5])
    assert np.isfinite(d).all()
    assert np.sign(f.dr2) == sign and (lo > 0 if sign > 0 else hi < 0)
    if law == "power":
        assert abs(f.power.slope - 2.0) < 0.15


def test_budget_and_batch():
    assert e1.batch_size(32) == 8 and e1.batch_size(3) == 1
    assert e1.budget(e1.Cell("gd", 16, 3), 100.0) == pytest.approx(e1.C_T * 100)
    assert e1.budget(e1.Cell("sgd", 16, 3), 100.0) == pytest.approx(4 * e1.C_T * 100)
    assert e1.budget(e1.Cell("sgd", 3, 3), 100.0) == pytest.approx(3 * e1.C_T * 100)


def test_cells_share_the_crossing_cell():
    st = e1.SETTINGS["default"]
    cs = e1.cells(st)
    assert len(cs) == 2 * (len(st.n_axis) + len(st.l_axis) - 1)
    assert e1.Cell("gd", st.n_fixed, st.l_fixed) in cs and e1.Cell("sgd", 32, 3) in cs


def test_cell_step_is_kernel_gd_reaching_eps():
    """lr and t_inf from the kernel: exact GD on K_inf from any start shrinks the loss by EPS
    within t_inf steps (checked on the slowest eigenvector, the worst start)."""
    st = e1.SETTINGS["ci"]
    spec = e1._base_spec(st, 3, 3)
    step = e1.cell_step(spec)
    lam_min, lr = step["lam_min"], step["lr"]
    assert 0 < lr * step["lam_max"] <= 1.0 + 1e-12
    t = math.ceil(step["t_inf"])
    assert (1 - lr * lam_min) ** (2 * t) <= e1.EPS * (1 + 1e-9)
    assert (1 - lr * lam_min) ** (2 * (t - 2)) > e1.EPS


def test_spec_for_cell_sets_the_cell():
    st = e1.SETTINGS["default"]
    step = {"lr": 0.01, "t_inf": 123.4}
    g = e1.spec_for_cell(st, e1.Cell("gd", 16, 3), step)
    s = e1.spec_for_cell(st, e1.Cell("sgd", 16, 3), step)
    assert g.fixed["task"]["n_train"] == 16 and g.fixed["train"]["lr"] == 0.01
    assert g.fixed["train"]["steps"] >= e1.C_T * 123.4 and g.fixed["train"]["batch_size"] is None
    assert s.fixed["train"]["batch_size"] == 4 and s.fixed["train"]["steps"] >= 4 * e1.C_T * 123.4
    assert g.fixed["train"]["steps"] % g.fixed["train"]["log_every"] == 0


def test_ci_end_to_end(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(e1.NAME)
    stored = rerun_changes_nothing(e1, res, "step_*.npz")
    assert len(stored) == 1
    paths = e1.figures(res, tmp_path / "figures")
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    cl = e1.claims(res)
    assert [c.claim[:4] for c in cl] == ["E1.1", "E1.2", "E1.3", "E1.4"]
    assert all(c.verdict in VERDICTS and c.experiment == e1.NAME and c.role == "claim" for c in cl)
    # an interrupted cell (a chunk missing, not consolidated) reads as "not finished"
    part = tmp_path / "partial"
    shutil.copytree(res / e1.NAME, part / e1.NAME)
    cell = sorted((part / e1.NAME).glob("gd_n*_L*"))[0]
    shutil.rmtree(cell / "results.zarr")
    shutil.rmtree(sorted((cell / "chunks").iterdir())[0])
    with pytest.raises(FileNotFoundError, match="runs stored; finish the experiment first"):
        e1.claims(part)


def test_claims_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the experiment first"):
        e1.claims(tmp_path)
