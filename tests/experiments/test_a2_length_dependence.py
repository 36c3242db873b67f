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


def test_samples_needed_inverts_an_exact_power_law():
    ns = np.array([10.0, 20.0, 40.0, 80.0])
    err = 4.0 * ns ** -0.5                           # reaches 0.5 at n = (4 / 0.5)^2 = 64
    assert a2.samples_needed(ns, np.tile(err, (3, 1)), 0.5) == pytest.approx(64.0, rel=1e-9)
    assert a2.samples_needed(ns, np.tile(0.9 + 0 * ns, (2, 1)), 0.5) == float("inf")


def test_positions_needed_one_power_law_per_position():
    ns = np.array([100.0, 200.0, 400.0, 800.0])
    C, b = np.array([2.0, 5.0, 1.0]), np.array([0.5, 0.25, 0.0])
    err = C[None, None, :] * ns[None, :, None] ** -b[None, None, :]   # (1, N, P)
    err = np.concatenate([err * 0.9, err * 1.1])     # two seeds, mean = err
    got = a2.positions_needed(ns, err, 0.5)
    assert got[0] == pytest.approx((2.0 / 0.5) ** 2, rel=1e-9)        # 16
    assert got[1] == pytest.approx((5.0 / 0.5) ** 4, rel=1e-9)        # 10^4
    assert got[2] == float("inf")                                      # flat: never learns


def test_growth_verdict_tells_power_laws_from_exponentials():
    L = np.array([4.0, 8.0, 16.0, 32.0])
    poly, expo = 3.0 * L ** 2, 5.0 * 2.0 ** L
    fp, fe = a2.growth_fits(L, poly)
    assert fp.slope == pytest.approx(2.0) and fp.r2 == pytest.approx(1.0) and fe.r2 < 0.99
    fp, fe = a2.growth_fits(L, expo)
    assert fe.slope == pytest.approx(math.log(2.0)) and fe.r2 == pytest.approx(1.0)
    assert a2.growth_verdict(L, poly) == "agrees"
    assert a2.growth_verdict(L, expo) == "disagrees"
    assert a2.growth_verdict(L, [10.0, 20.0, np.inf, 80.0]) == "inconclusive"
    # the RNN arm's extrapolation rule: N* more than EXTRAP_MAX times the largest N trained
    assert a2.growth_verdict(L, poly, n_max=poly.max()) == "agrees"
    assert a2.growth_verdict(L, poly, n_max=poly.max() / (a2.EXTRAP_MAX * 1.01)) == "inconclusive"
    # two points: both fits are exact (R2 = 1), nothing to tell
    assert a2.growth_verdict(L[:2], poly[:2]) == "inconclusive"


def test_uniformity_ratio_and_verdict():
    e = np.array([[0.2, 0.4, 0.6], [0.4, 0.4, 0.6]])  # seed mean (0.3, 0.4, 0.6), mean 13/30
    assert a2.uniformity_ratio(e) == pytest.approx(0.6 / (1.3 / 3))
    assert a2.uniformity_verdict([1.5, 1.9], [0.3, 0.5]) == "agrees"
    assert a2.uniformity_verdict([1.5, 2.1], [0.3, 0.5]) == "disagrees"
    # RNN arm: only lengths that learned count; an unlearned, trivially uniform length is ignored
    assert a2.uniformity_verdict([1.5, 2.5, 1.0], [0.3, 0.5, 1.0], learned=0.9) == "disagrees"
    assert a2.uniformity_verdict([1.5, 1.2, 1.0], [0.3, 0.5, 1.0], learned=0.9) == "agrees"
    assert a2.uniformity_verdict([1.5, 1.0, 1.0], [0.3, 0.95, 1.0], learned=0.9) == "inconclusive"


def test_per_position_errors_match_a_direct_solve():
    rng = np.random.default_rng(0)
    n, nt, T = 7, 4, 3
    F = rng.normal(size=(n + nt, T, 30))
    K = np.einsum("atf,bsf->atbs", F, F)
    y, yt = rng.normal(size=(n, T)), rng.normal(size=(nt, T))
    got = a2.per_position_errors(K[:n, :, :n], K[n:, :, :n], y, yt, [5, 7], jitter=0.0)
    for j, k in enumerate([5, 7]):
        for t in range(1, T):
            Kt = np.array([[F[a, t] @ F[b, t] for b in range(k)] for a in range(k)])
            Kx = np.array([[F[n + a, t] @ F[b, t] for b in range(k)] for a in range(nt)])
            p = Kx @ np.linalg.inv(Kt) @ y[:k, t]
            want = np.mean((p - yt[:, t]) ** 2) / np.var(yt[:, t])
            assert got[j, t - 1] == pytest.approx(want, rel=1e-6)


def test_spec_resolves_to_a1_setup():
    st = a2.SETTINGS["default"]
    spec = a2.rnn_spec(st, 16, 500, 0.0123)
    runs = sweep.expand_runs(spec)
    assert [r.seed for r in runs] == list(range(st.rnn_seeds))
    cfg = sweep.build_config(spec, runs[0].static, runs[0].width)
    want = train.TrainConfig(model=a1.model_config(st.width),
                             task=a1.task_config(500, st.rnn_n_test, 17), steps=500,
                             log_every=500, batch_size=1, loss="sum_from_2", init="gaussian",
                             save_params=True)
    assert cfg == want
    assert spec.fixed["train"]["lr"] == 0.0123 and spec.fixed["task"]["eps_x"] == a1.EPS_X


def test_end_to_end_ci(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(a2.NAME)                        # a2.run(res, "ci"), shared with other tests
    rerun_changes_nothing(a2, res)
    figs = a2.figures(res, tmp_path / "fig")
    assert figs and all(p.exists() for p in figs)
    cl = a2.claims(res)
    assert len(cl) == 4 and all(c.verdict in VERDICTS for c in cl)
    # the per-position errors recomputed from the stored W reproduce the engine's own test loss
    # (1/2) sum_i sum_{t>=2} r^2 (test data regenerated here from the run key, fold_in(key, 1))
    st = a2.SETTINGS["ci"]
    L, N = st.lengths[-1], st.rnn_ns[-1]
    piece = load_arrays(res / a2.NAME / f"rnn_L{L}_N{N}.npz")[0]
    assert piece["err"].shape == (st.rnn_seeds, L) and not piece["diverged"].any()
    tc = a1.task_config(N, st.rnn_n_test, L + 1)
    for s in range(st.rnn_seeds):
        data = tasks.sample_task(tc, jax.random.fold_in(jax.random.key(s), 1), {"eps_x": a1.EPS_X})
        var = np.var(np.asarray(data.y_test, np.float64)[:, 1:, 0], axis=0)
        loss = 0.5 * st.rnn_n_test * np.sum(piece["err"][s] * var)
        assert loss == pytest.approx(float(piece["test_loss"][s]), rel=1e-4)
