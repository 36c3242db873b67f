"""UCR / RNTK: the pieces against independent computations (sklearn's own linear SVM and 1-NN,
hand-made selections), and the experiment end to end at scale 'ci'."""
import importlib.util

import numpy as np
import pytest

from rnn_ntk.reproduce import VERDICTS, load_experiment

ucr = load_experiment("ucr_rntk")
needs_sktime = pytest.mark.skipif(importlib.util.find_spec("sktime") is None,
                                  reason="sktime (the 'ucr' extra) is not installed")


def _toy(seed=0, n=40, n_te=30, T=5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    yt = np.arange(n_te) % 2
    x = rng.normal(size=(n, T, 1)) + 0.8 * y[:, None, None]
    xt = rng.normal(size=(n_te, T, 1)) + 0.8 * yt[:, None, None]
    return x, y, xt, yt


def test_precomputed_svm_equals_sklearns_linear_svm():
    from sklearn.svm import SVC
    x, y, xt, yt = _toy()
    X, Xt = x[..., 0], xt[..., 0]
    splits = ucr.folds(y)
    cv, corr = ucr.svm_scores(X @ X.T, y, Xt @ X.T, yt, splits, Cs=(0.1, 10.0))
    for i, C in enumerate((0.1, 10.0)):
        for f, (a, b) in enumerate(splits):
            want = np.mean(SVC(C=C, kernel="linear").fit(X[a], y[a]).predict(X[b]) == y[b])
            assert cv[i, f] == pytest.approx(want)
        np.testing.assert_array_equal(corr[i], SVC(C=C, kernel="linear").fit(X, y).predict(Xt) == yt)


def test_folds_are_stratified_and_shrink_for_small_classes():
    y = np.array([0] * 12 + [1] * 6)
    sp = ucr.folds(y)
    assert len(sp) == 6                                    # the smallest class has 6 members
    val = np.concatenate([b for _, b in sp])
    assert sorted(val.tolist()) == list(range(18))          # every example validated once
    assert all(np.sum(y[b] == 1) == 1 for _, b in sp)
    with pytest.raises(ValueError, match="CV needs"):
        ucr.folds(np.array([0, 0, 0, 1]))


def test_baselines_match_sklearn_neighbours_and_rbf():
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    x, y, xt, yt = _toy(1)
    b = ucr.baseline_piece(x, y, xt, yt)
    X, Xt = x[..., 0], xt[..., 0]
    knn = KNeighborsClassifier(1).fit(X, y)
    np.testing.assert_array_equal(b["nn1_correct"], knn.predict(Xt) == yt)
    sp = ucr.folds(y)
    want = [np.mean(KNeighborsClassifier(1).fit(X[a], y[a]).predict(X[v]) == y[v]) for a, v in sp]
    np.testing.assert_allclose(b["nn1_cv"], want)
    g = b["gamma"][2]
    np.testing.assert_array_equal(b["rbf_correct"][2, 3],
                                  SVC(C=10.0, gamma=g).fit(X, y).predict(Xt) == yt)


def test_selection_takes_the_best_mean_and_the_first_on_ties():
    cv = np.zeros((3, 2, 4))
    cv[1, 0] = [1, 1, 0, 0]          # mean 0.5
    cv[2, 1] = [0.5, 0.5, 0.5, 0.5]  # mean 0.5, later in order
    cv[0, 1] = [0.25, 0.25, 0, 0]
    assert ucr.select(cv) == (1, 0)
    mask = np.ones((3, 2), bool)
    mask[1] = False
    assert ucr.select(cv, mask) == (2, 1)


def test_one_hot_targets_are_centred():
    t = ucr.one_hot_targets(np.array([2, 0, 1]), 3)
    np.testing.assert_allclose(t.sum(1), 0.0, atol=1e-15)
    assert list(np.argmax(t, 1)) == [2, 0, 1]


def test_paired_bootstrap_difference():
    a = np.array([1.0, 1, 0, 1, 0, 1, 1, 1])
    est, ci = ucr.diff_ci([a - a])
    assert est == 0.0 and ci == (0.0, 0.0)
    est, ci = ucr.diff_ci([a])
    assert est == pytest.approx(0.75) and ci[0] <= 0.75 <= ci[1] and ci[0] > 0.3
    # pooled over data sets: the mean of the per-set means; its interval is narrower than either
    # set's alone (independent resampling within each set; normal approximation as the reference)
    rng = np.random.default_rng(3)
    d1 = rng.choice([-1.0, 0.0, 1.0], 400, p=[0.2, 0.5, 0.3])
    d2 = rng.choice([-1.0, 0.0, 1.0], 300, p=[0.3, 0.5, 0.2])
    est, (lo, hi) = ucr.diff_ci([d1, d2])
    assert est == pytest.approx((d1.mean() + d2.mean()) / 2, abs=1e-12)
    se = 0.5 * np.sqrt(d1.var(ddof=1) / d1.size + d2.var(ddof=1) / d2.size)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_fold_interval_is_mean_plus_minus_two_standard_errors_clipped():
    f = np.array([0.8, 0.9, 1.0, 0.7])
    m, lo, hi = ucr._fold_ci(f)
    h = 1.96 * np.std(f, ddof=1) / 2
    assert (m, lo, hi) == pytest.approx((0.85, 0.85 - h, min(0.85 + h, 1.0)))
    assert ucr._fold_ci(np.array([1.0, 1.0, 0.9]))[2] == 1.0      # clipped at 1


@needs_sktime
def test_ci_end_to_end(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(ucr.NAME)
    paths = ucr.figures(res, tmp_path / "fig")
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    rows = ucr.claims(res)
    assert len(rows) >= 5 and all(r.verdict in VERDICTS for r in rows)
    table = ucr.summary_table(res)
    assert "NTK last" in table and "RBF-SVM" in table and "RNN m=" in table
    k, _ = ucr.load_piece(res / ucr.NAME / "kernel_ItalyPowerDemand_last.npz")
    P = len(ucr.SETTINGS["ci"].grids["last"]["ItalyPowerDemand"].points())
    assert k["ntk_cv"].shape[:2] == (P, len(ucr.C_VALUES))
    rerun_changes_nothing(ucr, res, "*.npz")         # resumable: a second run recomputes nothing


def test_selected_averages_over_cv_ties():
    cv = np.zeros((3, 2, 2))
    cv[0, 1] = [1.0, 0.5]                # mean 0.75
    cv[2, 0] = [0.5, 1.0]                # mean 0.75: a tie
    corr = np.zeros((3, 2, 4), bool)
    corr[0, 1] = [1, 1, 0, 0]
    corr[2, 0] = [1, 1, 1, 1]
    f, c, n = ucr.selected(cv, corr)
    assert n == 2
    np.testing.assert_allclose(f, [0.75, 0.75])
    np.testing.assert_allclose(c, [1, 1, 0.5, 0.5])
    mask = np.ones((3, 2), bool)
    mask[2] = False
    f, c, n = ucr.selected(cv, corr, mask)
    assert n == 1 and list(c) == [1, 1, 0, 0]
