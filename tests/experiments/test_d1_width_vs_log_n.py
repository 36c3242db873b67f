"""D1 (width needed vs log n): the statistics on synthetic data with known answers, and the
experiment end to end at scale 'ci'."""
import math

import numpy as np
import pytest

from rnn_ntk.reproduce import VERDICTS, load_arrays, load_experiment


d1 = load_experiment("d1_width_vs_log_n")
WIDTHS = np.array([8.0, 16.0, 32.0, 64.0, 128.0, 256.0])


def _risk_power(m_cross, widths=WIDTHS, thr=0.1, slope=-1.0):
    """Risk exactly power-law in m, crossing thr at m_cross: r = thr (m / m_cross)^slope."""
    return thr * (widths / m_cross) ** slope


@pytest.mark.parametrize("m_cross", [11.0, 23.5, 100.0, 200.0])
def test_crossing_width_recovers_a_power_law_crossing(m_cross):
    # a power law is a straight line in (log m, log r): interpolation is exact
    assert d1.crossing_width(WIDTHS, _risk_power(m_cross), 0.1) == pytest.approx(m_cross, rel=1e-12)


def test_crossing_width_censoring_and_first_crossing():
    assert d1.crossing_width(WIDTHS, np.full(6, 0.05), 0.1) == 8.0          # left-censored
    assert d1.crossing_width(WIDTHS, np.full(6, 0.5), 0.1) == math.inf      # right-censored
    r = np.array([0.5, 0.2, np.nan, 0.05, 0.3, 0.01])                       # NaN never meets it
    # first crossing at 64 (index 3); its left neighbour is NaN -> no interpolation
    assert d1.crossing_width(WIDTHS, r, 0.1) == 64.0
    r = np.array([0.4, 0.2, 0.05, 0.3, 0.3, 0.3])                           # first crossing counts
    expect = math.exp(math.log(16) + (math.log(0.2) - math.log(0.1)) /
                      (math.log(0.2) - math.log(0.05)) * math.log(2))
    assert d1.crossing_width(WIDTHS, r, 0.1) == pytest.approx(expect, rel=1e-12)
    with pytest.raises(ValueError, match="increasing"):
        d1.crossing_width(WIDTHS[::-1], r, 0.1)


def test_m_star_uses_the_seed_mean():
    r1, r2 = _risk_power(20.0), _risk_power(60.0)
    risk = np.stack([np.stack([r1, r1]), np.stack([r2, r2])])               # (S=2, N=2, M)
    mean = (r1 + r2) / 2
    expect = d1.crossing_width(WIDTHS, mean, 0.1)
    np.testing.assert_allclose(d1.m_star(WIDTHS, risk, 0.1), [expect, expect])


def _synthetic(mstar_fn, n_grid, S=6, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    risk = np.empty((S, len(n_grid), len(WIDTHS)))
    for s in range(S):
        for i, n in enumerate(n_grid):
            risk[s, i] = _risk_power(mstar_fn(n)) * np.exp(noise * rng.standard_normal())
    return risk


N_GRID = np.array([100.0, 200.0, 400.0, 800.0, 1600.0])


def test_log_growth_is_recognised_and_sqrt_growth_is_not():
    log_m = lambda n: 10.0 * np.log(n) - 30.0                               # noqa: E731
    g = d1.growth_fits(N_GRID, np.array([log_m(n) for n in N_GRID]))
    assert g.log_fit.slope == pytest.approx(10.0, rel=1e-10)
    assert g.sse_ratio < 1e-10
    risk = _synthetic(log_m, N_GRID, noise=0.02)
    b, p = d1.bootstrap_growth(WIDTHS, N_GRID, risk, 0.1, n_boot=200)
    ci = d1.interval(b)
    assert ci[0] < 10.0 < ci[1] and ci[0] > 0
    assert d1.log_verdict(ci, d1.growth_fits(N_GRID, d1.m_star(WIDTHS, risk, 0.1)).sse_ratio) \
        == "agrees"
    assert d1.power_verdict(d1.interval(p)) == "agrees"
    # sqrt growth: the sqrt fit wins and the exponent is 0.5
    sq = lambda n: 4.0 * np.sqrt(n)                                          # noqa: E731
    g = d1.growth_fits(N_GRID, np.array([sq(n) for n in N_GRID]))
    assert g.sse_ratio > 1 and g.power.slope == pytest.approx(0.5, rel=1e-10)
    risk = _synthetic(sq, N_GRID, noise=0.02)
    b, p = d1.bootstrap_growth(WIDTHS, N_GRID, risk, 0.1, n_boot=200)
    assert d1.log_verdict(d1.interval(b), g.sse_ratio) == "disagrees"
    assert d1.power_verdict(d1.interval(p)) != "agrees"


def test_falling_and_flat_m_star():
    fall = lambda n: 2000.0 / np.sqrt(n)                                     # noqa: E731
    risk = _synthetic(fall, N_GRID, noise=0.02)
    b, p = d1.bootstrap_growth(WIDTHS, N_GRID, risk, 0.1, n_boot=200)
    assert d1.log_verdict(d1.interval(b), 1.0) == "disagrees"
    assert d1.power_verdict(d1.interval(p)) == "disagrees"
    # m* constant: no fit at all
    assert d1.growth_fits(N_GRID, np.full(5, 30.0)) is None
    # only two finite values: no fit
    assert d1.growth_fits(N_GRID, np.array([30, 40, math.inf, math.inf, math.inf])) is None


def test_verdict_rules_and_interval():
    assert d1.log_verdict((0.5, 2.0), 0.5) == "agrees"
    assert d1.log_verdict((0.5, 2.0), 1.5) == "disagrees"
    assert d1.log_verdict((-2.0, -0.5), 0.5) == "disagrees"
    assert d1.log_verdict((-0.5, 2.0), 0.5) == "inconclusive"
    assert d1.power_verdict((0.1, 0.3)) == "agrees"
    assert d1.power_verdict((0.6, 0.9)) == "disagrees"
    assert d1.power_verdict((-0.9, -0.1)) == "disagrees"
    assert d1.power_verdict((-0.1, 0.3)) == "inconclusive"
    assert d1.power_verdict((0.2, 0.7)) == "inconclusive"
    draws = np.random.default_rng(0).standard_normal(20000)
    lo, hi = d1.interval(draws)
    assert lo == pytest.approx(-1.96, abs=0.05) and hi == pytest.approx(1.96, abs=0.05)
    draws[:1000] = np.nan                                                   # 5% undefined
    assert d1.interval(draws) == (-math.inf, math.inf)


def test_ci_end_to_end(ci_results, rerun_changes_nothing, tmp_path):
    import jax

    from rnn_ntk import load_results, sweep, tasks, train
    res, figs = ci_results(d1.NAME), tmp_path / "figures"   # d1.run(res, "ci"), shared
    spec = d1.spec_for("ci")
    ds = load_results(res / d1.NAME / "sweep")
    S, N, M = len(spec.axis("seed").values), len(spec.axis("n_train").values), \
        len(spec.axis("width").values)
    steps, log_every = spec.fixed["train"]["steps"], spec.fixed["train"]["log_every"]
    tl = ds["test_loss"].transpose("seed", "n_train", "width", "step").values
    assert tl.shape == (S, N, M, steps // log_every + 1)
    assert bool(ds["ran"].all()) and np.all(np.isfinite(tl))
    # symmetric init: the initial output is 0, so the step-0 test loss is the clean targets'
    # second moment, the same for every width of a seed ...
    np.testing.assert_allclose(tl[..., 0], tl[:, :, :1, 0] * np.ones((1, 1, M)), rtol=1e-6)
    assert np.all(ds["train_loss"].isel(step=-1).values < ds["train_loss"].isel(step=0).values)
    # ... and the projection holds: ||dU||^2 + ||dW||^2 <= m (rho / sqrt m)^2 = rho^2
    rho = spec.fixed["train"]["proj_radius"]
    tot = ds["dtheta_U"].isel(step=-1).values ** 2 + ds["dtheta_W"].isel(step=-1).values ** 2
    assert np.all(tot <= rho ** 2 * (1 + 1e-4))
    # the teacher of seed s is the engine's: data of train.setup_run at run_key(s, ()) are the
    # ntk_teacher of teacher.npz's key path, and teacher.npz holds its transport bound
    tb, _ = load_arrays(res / d1.NAME / "teacher.npz")
    cfg = sweep.build_config(spec, [("task", "n_train", spec.axis("n_train").values[0])],
                             spec.axis("width").values[0])
    thp = {"teacher_sigma_w": spec.fixed["task"]["teacher_sigma_w"]}
    for i, s in enumerate(spec.axis("seed").values):
        key = train.run_key(s, ())
        data = train.setup_run(cfg, key, thp).data
        tp = tasks.target_params(cfg.task, jax.random.fold_in(key, 1), thp)
        np.testing.assert_allclose(np.asarray(tasks.target_values(cfg.task, tp, data.x_test)),
                                   np.asarray(data.y_test), rtol=1e-5, atol=1e-6)
        assert tb["B"][i] == pytest.approx(float(tp["transport_bound"][0]), rel=1e-6)
    rerun_changes_nothing(d1, res)                                          # resumable: skipped
    paths = d1.figures(res, figs)
    assert len(paths) == 4 and all(p.exists() and p.stat().st_size > 0 for p in paths)
    cl = d1.claims(res)
    assert len(cl) == 2
    assert all(c.verdict in VERDICTS and c.experiment == d1.NAME for c in cl)
    assert "budget check" in cl[0].claim and "projection ball" in cl[0].claim


def test_scales_override_only_sizes():
    base, ci, large = d1.spec_for("default"), d1.spec_for("ci"), d1.spec_for("large")
    for sp in (ci, large):
        for sec in ("model", "task", "train"):
            for k in ("sigma_w", "teacher_sigma_w", "label_noise", "lr", "proj_radius", "kind",
                      "recurrence", "init", "projection"):
                if k in base.fixed[sec]:
                    assert sp.fixed[sec][k] == base.fixed[sec][k], k
    assert base.fixed["task"]["teacher_sigma_w"] == base.fixed["model"]["sigma_w"]
    assert base.fixed["task"]["teacher_activation"] == base.fixed["model"]["activation"]
    assert large.axis("width").values[-1] == 1024 and large.axis("n_train").values[-1] == 2000


def _fake_store(root, mstar_fn, n_grid, S=4, noise=0.02):
    """A sweep store in the experiment's layout whose relative excess risk crosses the
    experiment's threshold at mstar_fn(n)."""
    from rnn_ntk import store
    risk = _synthetic(mstar_fn, n_grid, S=S, noise=noise) * (d1.THRESHOLD / 0.1)  # (S, N, M)
    out = root / d1.NAME / "sweep"
    widths = [int(w) for w in WIDTHS]
    ns = [int(n) for n in n_grid]
    store.open_store(out, {"spec": {"fake": True, "train": {"proj_radius": 20.0}},
                           "axes": {"width": widths, "n_train": ns, "seed": list(range(S))}},
                     resume=False)
    y2 = 1.3                                                                 # clean E y^2
    coords, test = [], []
    for j, w in enumerate(widths):
        for i, n in enumerate(ns):
            for s in range(S):
                coords.append((w, n, s))
                # 4 logs: flat over the last quarter (a converged budget)
                test.append([y2, y2 * 2 * risk[s, i, j], y2 * risk[s, i, j], y2 * risk[s, i, j]])
    test = np.asarray(test)
    store.write_chunk(out, "fake", coords, {"test_loss": test, "train_loss": 0.9 * test,
                                            "diverged": np.zeros(test.shape, bool)},
                      {"test_loss": ("step",), "train_loss": ("step",), "diverged": ("step",)},
                      [0, 100, 200, 300])


@pytest.mark.parametrize("fn,expect", [(lambda n: 12.0 * np.log(n) - 40.0, "agrees"),
                                       (lambda n: 1500.0 / np.sqrt(n), "disagrees")])
def test_claims_and_figures_from_a_synthetic_store(tmp_path, fn, expect):
    _fake_store(tmp_path, fn, N_GRID)
    cl = d1.claims(tmp_path)
    assert [c.verdict for c in cl] == [expect, expect]
    assert "n=100:" in cl[0].claim
    paths = d1.figures(tmp_path, tmp_path / "figs")
    assert len(paths) == 4 and all(p.stat().st_size > 0 for p in paths)


def test_claims_when_nothing_reaches_the_threshold(tmp_path):
    _fake_store(tmp_path, lambda n: 1e4, N_GRID[:3])                        # m* > every width
    cl = d1.claims(tmp_path)
    assert [c.verdict for c in cl] == ["inconclusive", "inconclusive"]
    assert "3 never reach it" in cl[0].claim
    assert len(d1.figures(tmp_path, tmp_path / "figs")) == 4
