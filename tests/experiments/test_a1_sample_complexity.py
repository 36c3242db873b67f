"""A1 (sample complexity vs width): the pieces against independent computations, and the experiment
end to end at scale 'ci'."""

import jax
import numpy as np
import pytest

from rnn_ntk import tasks
from rnn_ntk.dynamics import kernel_regression
from rnn_ntk.reproduce import VERDICTS, load_experiment


a1 = load_experiment("a1_sample_complexity")


def test_relative_error_closed_form():
    y = np.array([[0.0, 1.0, -1.0], [0.0, -1.0, 1.0]])          # Var of positions 2, 3 = 1
    pred = np.array([[5.0, 0.0, -1.0], [7.0, 0.0, 1.0]])        # position 1 is ignored
    np.testing.assert_allclose(a1.relative_error(pred, y), [1.0, 0.0])


def test_kernel_regression_errors_match_flat_regression():
    rng = np.random.default_rng(0)
    n, nt, T = 6, 5, 3
    F = rng.normal(size=(n + nt, T, 20))
    K = np.einsum("atf,bsf->atbs", F, F)
    H, Ht = K[:n, :, :n, :], K[n:, :, :n, :]
    y, yt = rng.normal(size=(n, T)), rng.normal(size=(nt, T))
    got = a1.kernel_regression_errors(H, Ht, y, yt, [4, 6], jitter=1e-9)
    for row, k in zip(got, [4, 6]):
        A = H[:k, 1:, :k, 1:].reshape(k * (T - 1), -1)
        B = Ht[:, 1:, :k, 1:].reshape(nt * (T - 1), -1)
        p = np.asarray(kernel_regression(A, y[:k, 1:].reshape(-1, 1), B, diag_reg=1e-9))
        p = p.reshape(nt, T - 1)
        want = np.mean((p - yt[:, 1:]) ** 2, axis=0) / np.var(yt[:, 1:], axis=0)
        np.testing.assert_allclose(row, want, rtol=1e-6)


def test_recomputed_errors_match_the_engines_test_loss():
    # the per-position errors recomputed from the saved (padded) parameters reproduce the training
    # engine's own test loss (1/2) sum_i sum_{t>=2} r^2 at every width
    st = a1.Setting(ns=(6,), widths=(4, 8), seeds=2, n_test=5)
    piece = a1._train_piece(6, st, lr=0.05)
    tc = a1.task_config(6, 5)
    for s in range(2):
        data = tasks.sample_task(tc, jax.random.fold_in(a1.run_key(s), 1), {"eps_x": a1.EPS_X})
        var = np.var(np.asarray(data.y_test, np.float64)[:, 1:, 0], axis=0)
        for i in range(2):
            loss = 0.5 * 5 * np.sum(piece["err"][i, s] * var)
            assert loss == pytest.approx(float(piece["test_loss"][i * 2 + s]), rel=1e-4)


def test_end_to_end_ci(tmp_path):
    a1.run(tmp_path / "res", "ci")
    a1.run(tmp_path / "res", "ci")
    figs = a1.figures(tmp_path / "res", tmp_path / "fig")
    assert figs and all(p.exists() for p in figs)
    cl = a1.claims(tmp_path / "res")
    assert len(cl) == 4 and all(c.verdict in VERDICTS for c in cl)
