"""D1 (width needed vs log n): the statistics on synthetic data with known answers, and the
experiment end to end at scale 'ci'."""
import math

import numpy as np
import pytest

from rnn_ntk import stats
from rnn_ntk.reproduce import VERDICTS, load_arrays, load_experiment, save_arrays


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


def _risk_gap(m_cross, base, widths=WIDTHS, delta=None, slope=-1.0):
    """Risk = base (the wide network's, e.g. estimation error) + a finite-width gap that is
    exactly power-law in m below the widest width and crosses delta at m_cross; 0 gap at the
    widest."""
    delta = d1.DELTA if delta is None else delta
    gap = delta * (widths / m_cross) ** slope
    gap[-1] = 0.0
    return base + gap


@pytest.mark.parametrize("m_cross", [11.0, 23.5, 100.0])
def test_m_star_is_relative_to_the_widest_width(m_cross):
    # the base risk (falling with n, like estimation error) does not move m*: an absolute
    # threshold would (the first design's flaw)
    for base in (0.2, 0.02, 0.0):
        risk = _risk_gap(m_cross, base)[None, None, :]                       # (S=1, N=1, M)
        assert d1.m_star(WIDTHS, risk, d1.DELTA)[0] == pytest.approx(m_cross, rel=1e-12)
    r1, r2 = _risk_gap(20.0, 0.1), _risk_gap(60.0, 0.05)
    risk = np.stack([np.stack([r1, r1]), np.stack([r2, r2])])               # (S=2, N=2, M)
    mean = (r1 + r2) / 2
    expect = d1.crossing_width(WIDTHS[:-1], mean[:-1] - mean[-1], d1.DELTA)
    np.testing.assert_allclose(d1.m_star(WIDTHS, risk, d1.DELTA), [expect, expect])
    assert d1.m_star(WIDTHS, _risk_gap(1e5, 0.1)[None, None], d1.DELTA)[0] == math.inf
    assert d1.m_star(WIDTHS, _risk_gap(2.0, 0.1)[None, None], d1.DELTA)[0] == WIDTHS[0]


def _synthetic(mstar_fn, n_grid, S=6, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    risk = np.empty((S, len(n_grid), len(WIDTHS)))
    for s in range(S):
        for i, n in enumerate(n_grid):
            risk[s, i] = _risk_gap(mstar_fn(n), 2.0 / n) * np.exp(noise * rng.standard_normal())
    return risk


N_GRID = np.array([100.0, 200.0, 400.0, 800.0, 1600.0])


def test_log_exponent_against_numpy():
    ln = np.log(N_GRID)
    want = np.polyfit(ln, np.log(ln), 1)[0]
    assert d1.log_exponent(N_GRID) == pytest.approx(want, rel=1e-12)
    assert d1.log_exponent(N_GRID) == pytest.approx(0.170, abs=0.001)        # the docstring's
    assert d1.log_bound(N_GRID) == pytest.approx(want + d1.LOG_TOL)


def _verdicts(fn, noise=0.02):
    risk = _synthetic(fn, N_GRID, noise=noise)
    g = d1.growth_fits(N_GRID, d1.m_star(WIDTHS, risk, d1.DELTA))
    b, p = d1.bootstrap_growth(WIDTHS, N_GRID, risk, d1.DELTA, n_boot=200)
    ci = d1.interval(p)
    return g, ci, d1.log_verdict(g.power.slope, ci, N_GRID), d1.power_verdict(g.power.slope, ci)


def test_log_growth_and_flat_and_falling_agree_and_sqrt_growth_does_not():
    g, ci, v1, v2 = _verdicts(lambda n: 8.0 * np.log(n))                     # exactly ~ ln n
    assert g.power.slope == pytest.approx(d1.log_exponent(N_GRID), abs=0.02)
    assert ci[0] < d1.log_exponent(N_GRID) < ci[1]
    assert (v1, v2) == ("agrees", "agrees")
    g, ci, v1, v2 = _verdicts(lambda n: 1000.0 / np.sqrt(n))                 # falls: sufficient
    assert g.power.slope == pytest.approx(-0.5, abs=0.02) and (v1, v2) == ("agrees", "agrees")
    g, ci, v1, v2 = _verdicts(lambda n: 4.0 * np.sqrt(n))                    # sqrt n
    assert g.power.slope == pytest.approx(0.5, abs=0.02)
    assert v1 == "disagrees" and v2 == "inconclusive"                        # p = 0.5 is the edge
    g, ci, v1, v2 = _verdicts(lambda n: 0.05 * n)                            # linear in n
    assert (v1, v2) == ("disagrees", "disagrees")
    # m* constant: no fit at all; only two finite values: no fit
    assert d1.growth_fits(N_GRID, np.full(5, 30.0)) is None
    assert d1.growth_fits(N_GRID, np.array([30, 40, math.inf, math.inf, math.inf])) is None


def test_verdict_rules_and_interval():
    hi = d1.log_bound(N_GRID)                                                # 0.27
    assert d1.log_verdict(0.1, (0.0, hi - 0.01), N_GRID) == "agrees"
    assert d1.log_verdict(0.5, (hi + 0.01, 0.9), N_GRID) == "disagrees"
    assert d1.log_verdict(0.2, (0.0, hi + 0.01), N_GRID) == "inconclusive"
    assert d1.log_verdict(0.2, (-math.inf, math.inf), N_GRID) == "inconclusive"
    assert d1.power_verdict(-0.3, (-0.9, 0.3)) == "agrees"
    assert d1.power_verdict(0.7, (0.6, 0.9)) == "disagrees"
    assert d1.power_verdict(0.4, (0.2, 0.7)) == "inconclusive"
    draws = np.random.default_rng(0).standard_normal(20000)
    lo, hi = d1.interval(draws)
    assert lo == pytest.approx(-1.96, abs=0.05) and hi == pytest.approx(1.96, abs=0.05)
    draws[:1000] = np.nan                                                   # 5% undefined
    assert d1.interval(draws) == (-math.inf, math.inf)


def test_kernel_deviation_against_loops_and_the_clt_rate():
    rng = np.random.default_rng(1)
    k = 1.0 + 0.5 * rng.standard_normal((50, 300)) ** 2                     # (n, units)
    widths, n_grid = (4, 16, 64), (5, 20, 50)
    D = d1.kernel_deviation(k, widths, n_grid)
    ref = [np.mean(k[i, 64:]) for i in range(50)]
    scale = np.mean(ref)
    for a, m in enumerate(widths):
        for j, n in enumerate(n_grid):
            want = max(abs(np.mean(k[i, :m]) - ref[i]) for i in range(n)) / scale
            assert D[a, j] == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="units"):
        d1.kernel_deviation(k, (4, 300), n_grid)
    # iid unit terms: D ~ m_eff^-1/2 (CLT), and A = median m_eff D^2 is flat in m
    k = 1.0 + rng.standard_normal((200, 20000))
    widths = (16, 64, 256, 1024)
    D = np.stack([d1.kernel_deviation(k[:, rng.permutation(20000)], widths, (200,))
                  for _ in range(8)])                                       # (S, M, N)
    m_eff = d1.effective_width(np.asarray(widths), 20000 - 1024)
    np.testing.assert_allclose(m_eff, 1 / (1 / np.asarray(widths) + 1 / 18976))
    f = stats.fit_power_law(m_eff, D[:, :, 0])
    assert f.slope == pytest.approx(-0.5, abs=0.08)
    # max of 200 standard normals: E max^2 ~ 2 ln 200 - ln ln 200 - ln 4 pi ~ 6.4 (sd ~ 1.4)
    A = d1.width_for_deviation(D, m_eff)
    assert A.shape == (8, 1) and 3.5 < float(A.mean()) < 10.0
    # A is exactly c when D = sqrt(c / m_eff)
    Dx = np.sqrt(np.array([2.0, 5.0])[None, None, :] / m_eff[None, :, None])
    np.testing.assert_allclose(d1.width_for_deviation(Dx, m_eff), [[2.0, 5.0]], rtol=1e-12)


def test_unit_kernel_diag_matches_a_direct_recursion():
    import jax
    import jax.numpy as jnp

    from rnn_ntk import model, sweep
    spec = d1.spec_for("ci")
    cfg = sweep.build_config(spec, [("task", "n_train", 16)], 6).model
    with jax.enable_x64(True):
        p = model.init_params(cfg, jax.random.key(3), jnp.float64)
        x = jax.random.normal(jax.random.key(1), (3, 5, cfg.input_dim), jnp.float64)
        k = np.asarray(d1.unit_kernel_diag(cfg, p, x, cfg.scales()))
    W, U, X = np.asarray(p["W"]), np.asarray(p["U"]), np.asarray(x)
    sw, su, d = cfg.sigma_w, cfg.sigma_u, cfg.input_dim
    for n in range(3):
        h, dw, du = np.zeros(6), np.zeros(6), np.zeros((6, d))
        for t in range(5):
            g = sw * W * h + su / math.sqrt(d) * U @ X[n, t]
            ph = 1 - np.tanh(g) ** 2
            dw = ph * (sw * h + sw * W * dw)
            du = ph[:, None] * (su / math.sqrt(d) * X[n, t][None, :] + (sw * W)[:, None] * du)
            h = np.tanh(g)
        np.testing.assert_allclose(k[n], dw ** 2 + np.sum(du ** 2, axis=1), rtol=1e-10)


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
    assert [c.claim[:4] for c in cl] == ["D1.1", "D1.2", "D1.3", "D1.4", "D1.5", "D1.6"]
    assert [c.role for c in cl] == ["claim", "claim", "claim", "control", "extra", "extra"]
    assert all(c.verdict in VERDICTS and c.experiment == d1.NAME for c in cl)
    assert "budget check" in cl[0].claim and "projection ball" in cl[0].claim
    k, _ = load_arrays(res / d1.NAME / "kernel.npz")
    ks = d1.KERNEL_SETTINGS["ci"]
    assert k["D"].shape == (ks.seeds, len(ks.widths), len(ks.n_grid))
    assert np.all(np.diff(k["D"], axis=-1) >= 0)                 # a max over nested inputs
    kb, _ = load_arrays(res / d1.NAME / "kernel_bounded.npz")
    assert kb["D"].shape == k["D"].shape and np.all(np.diff(kb["D"], axis=-1) >= 0)
    assert not np.allclose(kb["D"], k["D"])                       # another law of the units


def test_bounded_units_keep_u_and_bound_w():
    import jax
    cfg = d1.spec_for("ci")
    mcfg = sweep_model(cfg, 4096)
    key = jax.random.key(3)
    g, b = d1.unit_params(mcfg, key), d1.unit_params(mcfg, key, "bounded")
    np.testing.assert_array_equal(np.asarray(g["U"]), np.asarray(b["U"]))
    w = np.asarray(b["W"])
    assert w.shape == np.asarray(g["W"]).shape == (4096,)
    assert np.abs(w).max() <= math.sqrt(3) and np.abs(w).max() > 1.7
    assert np.var(w) == pytest.approx(1.0, abs=0.06)               # unit variance, like N(0, 1)
    assert np.mean(np.abs(np.asarray(g["W"])) * mcfg.sigma_w > 1) > 0.03   # the Gaussian tail
    assert np.all(np.abs(w) * mcfg.sigma_w < 1)
    with pytest.raises(ValueError, match="w_init must be one of"):
        d1.unit_params(mcfg, key, "uniform")


def sweep_model(spec, width):
    from rnn_ntk import sweep
    return sweep.build_config(spec, [("task", "n_train", spec.axis("n_train").values[0])],
                              width).model


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


def _fake_store(root, mstar_fn, n_grid, S=4, noise=0.02, A_fn=None):
    """A sweep store in the experiment's layout whose finite-width gap to the widest width
    crosses DELTA at mstar_fn(n), and a kernel piece whose width need is A_fn(n)."""
    from rnn_ntk import store
    risk = _synthetic(mstar_fn, n_grid, S=S, noise=noise)                   # (S, N, M)
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
    # kernel piece: D = sqrt(A(n) / m_eff) (m^-1/2 exactly) with 5% seed noise
    kw, kn, ref = np.array([4, 16, 64, 256]), np.array([100, 400, 1600, 6400]), 7936
    m_eff = d1.effective_width(kw, ref)
    A = (lambda n: 3.0 * np.log(n)) if A_fn is None else A_fn
    rng = np.random.default_rng(5)
    D = np.sqrt(A(kn)[None, None, :] / m_eff[None, :, None]
                * np.exp(0.05 * rng.standard_normal((S, 1, 1))))
    for name in ("kernel.npz", "kernel_bounded.npz"):
        save_arrays(root / d1.NAME / name, {}, D=D, widths=kw, n_grid=kn,
                    ref_units=np.asarray(ref), kernel_scale=np.ones(S))


@pytest.mark.parametrize("fn,A_fn,expect", [
    (lambda n: 8.0 * np.log(n), lambda n: 3.0 * np.log(n), "agrees"),
    (lambda n: 0.05 * n, lambda n: 0.3 * n, "disagrees")])
def test_claims_and_figures_from_a_synthetic_store(tmp_path, fn, A_fn, expect):
    _fake_store(tmp_path, fn, N_GRID, A_fn=A_fn)
    cl = d1.claims(tmp_path)
    assert [c.verdict for c in cl] == [expect, expect, expect, "agrees", expect, "agrees"]
    assert "n=100:" in cl[0].claim
    paths = d1.figures(tmp_path, tmp_path / "figs")
    assert len(paths) == 4 and all(p.stat().st_size > 0 for p in paths)


def test_claims_when_no_width_below_the_widest_meets_it(tmp_path):
    _fake_store(tmp_path, lambda n: 1e4, N_GRID[:3])                        # m* > every width
    cl = d1.claims(tmp_path)
    assert [c.verdict for c in cl[:2]] == ["inconclusive", "inconclusive"]
    assert "3 met only by the reference" in cl[0].claim
    assert len(d1.figures(tmp_path, tmp_path / "figs")) == 4
