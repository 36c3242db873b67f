"""A2 (length dependence, trained RNN and kernel regression): the statistics on synthetic data with
known answers, the sweep spec against a1's setup, and the experiment end to end at scale 'ci'."""

import math

import jax
import numpy as np
import pytest

from rnn_ntk import sweep, tasks, train
from rnn_ntk.reproduce import VERDICTS, load_arrays, load_experiment


a2 = load_experiment("a2_length_dependence")
a1 = load_experiment("a1_sample_complexity")


def test_samples_needed_interpolates_on_the_grid_and_never_extrapolates():
    ns = np.array([10.0, 20.0, 40.0, 80.0])
    err = 4.0 * ns ** -0.5                           # 1.26, 0.89, 0.63, 0.45: crosses 0.5 at 64
    assert a2.samples_needed(ns, err, 0.5) == pytest.approx(64.0, rel=1e-9)
    assert a2.samples_needed(ns, 0.9 + 0 * ns, 0.5) == float("inf")          # right-censored
    assert a2.samples_needed(ns, 0.1 + 0 * ns, 0.5) == 10.0                  # left-censored
    # far below the grid's reach: a power law fitted to these points would give 6400; no
    assert a2.samples_needed(ns, 0.5 * (ns / 6400.0) ** -0.5, 0.4999) == float("inf")
    # the first crossing counts (a non-monotone curve)
    assert a2.samples_needed(ns, [0.6, 0.4, 0.6, 0.3], 0.5) < 20.0
    np.testing.assert_array_equal(a2.censored(ns, [10.0, 15.0, np.inf]), [True, False, True])


def test_positions_needed_and_nstar():
    ns = np.array([100.0, 200.0, 400.0, 800.0])
    C = np.array([1.0, 2.0, 4.0])
    err = C[None, :] * (ns[:, None] / 100.0) ** -1.0     # (N, P): reach 0.5 at 200, 400, 800
    np.testing.assert_allclose(a2.positions_needed(ns, err, 0.5), [200.0, 400.0, 800.0])
    two = np.stack([err * 0.9, err * 1.1])             # seeds, mean = err
    np.testing.assert_allclose(a2.nstar(ns, [two[:, :, :1], two]), [200.0, 800.0])


def _errors_for(nstar_L, ns, S=3, rng=None):
    """Per-length error curves (seeds, ns, 1) that cross 0.5 exactly at nstar_L (e = 0.5 n*/n),
    with multiplicative seed noise that keeps the seed mean exact."""
    noise = np.ones(S) if rng is None else 1 + 0.02 * rng.standard_normal(S)
    noise = noise / noise.mean()
    return [noise[:, None, None] * (0.5 * n / ns)[None, :, None] for n in nstar_L]


def test_growth_verdict_tells_power_laws_from_exponentials():
    L = np.array([4.0, 8.0, 16.0, 32.0])
    ns = np.exp(np.linspace(np.log(1.0), np.log(1e12), 60))
    poly, expo = 3.0 * L ** 2, 5.0 * 2.0 ** L
    fp, fe = a2.growth_fits(L, poly)
    assert fp.slope == pytest.approx(2.0) and fp.r2 == pytest.approx(1.0) and fe.r2 < 0.99
    fp, fe = a2.growth_fits(L, expo)
    assert fe.slope == pytest.approx(math.log(2.0)) and fe.r2 == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    est, ci, cen = a2.growth_stat(L, ns, _errors_for(poly, ns, rng=rng), n_boot=100)
    assert not cen and est > 0 and a2.growth_verdict(est, ci, cen) == "agrees"
    est, ci, cen = a2.growth_stat(L, ns, _errors_for(expo, ns, rng=rng), n_boot=100)
    assert not cen and est < 0 and a2.growth_verdict(est, ci, cen) == "disagrees"
    # an N* beyond the grid: censored, never extrapolated -> inconclusive
    est, ci, cen = a2.growth_stat(L, ns[:40], _errors_for(expo, ns[:40]), n_boot=10)
    assert cen and a2.growth_verdict(est, ci, cen) == "inconclusive"
    # symmetric: an interval straddling 0 is inconclusive whatever the estimate
    assert a2.growth_verdict(0.02, (-0.01, 0.05), False) == "inconclusive"
    assert a2.growth_verdict(-0.02, (-0.05, 0.01), False) == "inconclusive"


def test_uniformity_stat_and_verdict():
    e = np.array([[0.2, 0.4, 0.6], [0.4, 0.4, 0.6]])  # seed mean (0.3, 0.4, 0.6), mean 13/30
    assert a2.uniformity_ratio(e) == pytest.approx(0.6 / (1.3 / 3))
    r, ci = a2.uniformity_stat(e, n_boot=200)
    assert r == pytest.approx(0.6 / (1.3 / 3)) and ci[0] <= r <= ci[1]
    ok, hi, mid = (1.5, (1.4, 1.9)), (2.5, (2.1, 3.0)), (1.9, (1.7, 2.2))
    assert a2.uniformity_verdict([ok, ok], [0.3, 0.5]) == "agrees"
    assert a2.uniformity_verdict([ok, hi], [0.3, 0.5]) == "disagrees"
    assert a2.uniformity_verdict([ok, mid], [0.3, 0.5]) == "inconclusive"   # straddles 2
    # RNN arm: only lengths that learned count; an unlearned, trivially uniform length is ignored
    assert a2.uniformity_verdict([ok, hi, ok], [0.3, 0.5, 1.0], learned=0.9) == "disagrees"
    assert a2.uniformity_verdict([ok, ok, hi], [0.3, 0.5, 1.0], learned=0.9) == "agrees"
    assert a2.uniformity_verdict([ok, ok, ok], [0.3, 0.95, 1.0], learned=0.9) == "inconclusive"


def test_prefix_position_errors_match_the_full_kernel_blocks():
    # the prefix kernel of x_1..x_t (readout 'last') is the block Theta(t, t) of readout 'all':
    # per-position regression on the full kernel's diagonal blocks gives the same errors
    from rnn_ntk.kernels.infinite import infinite_kernels
    n, nt, L = 6, 4, 3
    tc = a2.task_config(n, nt, L)
    d = tasks.sample_task(tc, jax.random.key(5), {"eps_x": a1.EPS_X}, dtype=jax.numpy.float64)
    y, yt = np.asarray(d.y_train)[..., 0], np.asarray(d.y_test)[..., 0]
    got = a2.prefix_position_errors(d.x_train, y, d.x_test, yt, [4, 6], jitter=1e-10)
    _, H = infinite_kernels(a1.model_config(1), d.x_train)
    _, Ht = infinite_kernels(a1.model_config(1), d.x_test, d.x_train)
    H, Ht = np.asarray(H), np.asarray(Ht)
    for j, k in enumerate([4, 6]):
        for t in range(1, L + 1):
            A = H[:k, t, :k, t]
            p = Ht[:, t, :k, t] @ np.linalg.solve(A + 1e-10 * np.mean(np.diag(A)) * np.eye(k),
                                                  y[:k, t])
            want = np.mean((p - yt[:, t]) ** 2) / np.var(yt[:, t])
            assert got[j, t - 1] == pytest.approx(want, rel=1e-6)


def test_position_steps_equalise_the_per_position_step_and_are_stable():
    L = 3
    w, lr = a2.position_steps(L, n=4)
    B = a1.position_blocks(0, 4, L + 1)                         # (4, L, L)
    assert w.shape == (L + 1,) and w[0] == 0.0 and np.all(w[1:] > 0)
    c = np.array([np.mean([b[t, t] for b in B]) for t in range(L)])
    assert c[-1] > 1.5 * c[0]                                    # the kernel grows with t
    step = lr * w[1:] * c                                        # each position alone
    np.testing.assert_allclose(step, step[0], rtol=1e-12)
    # stability of the weighted loss: lr * mean top eigenvalue of diag(w) Theta (the same
    # spectrum as the symmetric D^1/2 Theta D^1/2), from the non-symmetric product
    lam = np.mean([np.max(np.linalg.eigvals(np.diag(w[1:]) @ b).real) for b in B])
    assert lr * lam == pytest.approx(0.5, rel=1e-10)


def test_spec_resolves_to_a1_setup():
    st = a2.SETTINGS["default"]
    w = np.linspace(0.0, 2.0, 17)
    spec = a2.rnn_spec(st, 16, 500, 0.0123, w)
    runs = sweep.expand_runs(spec)
    assert [r.seed for r in runs] == list(range(st.rnn_seeds))
    cfg = sweep.build_config(spec, runs[0].static, runs[0].width)
    want = train.TrainConfig(model=a1.model_config(st.width),
                             task=a2.task_config(500, st.rnn_n_test, 16), steps=500,
                             log_every=500, batch_size=1, loss="sum_from_2", init="gaussian",
                             save_params=True, position_weights=tuple(w), center=True)
    assert cfg == want
    assert spec.fixed["train"]["lr"] == 0.0123 and spec.fixed["task"]["eps_x"] == a1.EPS_X


def test_end_to_end_ci(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(a2.NAME)                        # a2.run(res, "ci"), shared with other tests
    rerun_changes_nothing(a2, res)
    figs = a2.figures(res, tmp_path / "fig")
    assert figs and all(p.exists() for p in figs)
    cl = a2.claims(res)
    assert len(cl) == 5 and all(c.verdict in VERDICTS for c in cl)
    assert cl[-1].role == "extra" and "m=2" in cl[-1].value      # the width check ran
    # the per-position errors recomputed from the stored W reproduce the engine's own test loss
    # (1/2) sum_i sum_{t>=2} r^2 (test data regenerated here from the run key, fold_in(key, 1))
    st = a2.SETTINGS["ci"]
    L, N = st.lengths[-1], st.rnn_ns[-1]
    piece = load_arrays(res / a2.NAME / f"rnn_L{L}_N{N}.npz")[0]
    assert piece["err"].shape == (st.rnn_seeds, L) and not piece["diverged"].any()
    # ... with the centred model's errors and the per-position weights of the run's spec
    tc = a2.task_config(N, st.rnn_n_test, L)
    w = load_arrays(res / a2.NAME / "lr.npz")[0][f"weights_L{L}"]
    for s in range(st.rnn_seeds):
        data = tasks.sample_task(tc, jax.random.fold_in(jax.random.key(s), 1), {"eps_x": a1.EPS_X})
        var = np.var(np.asarray(data.y_test, np.float64)[:, 1:, 0], axis=0)
        loss = 0.5 * st.rnn_n_test * np.sum(w[1:] * piece["err"][s] * var)
        assert loss == pytest.approx(float(piece["test_loss"][s]), rel=1e-4)
