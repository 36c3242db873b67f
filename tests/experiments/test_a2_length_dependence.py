"""A2 (length dependence, kernel-regression version): the statistics on synthetic data with known
answers, and the experiment end to end at scale 'ci'."""

import numpy as np
import pytest

from rnn_ntk.reproduce import VERDICTS, load_experiment


a2 = load_experiment("a2_length_dependence")


def test_samples_needed_inverts_an_exact_power_law():
    ns = np.array([10.0, 20.0, 40.0, 80.0])
    err = 4.0 * ns ** -0.5                           # reaches 0.5 at n = (4 / 0.5)^2 = 64
    assert a2.samples_needed(ns, np.tile(err, (3, 1)), 0.5) == pytest.approx(64.0, rel=1e-9)
    assert a2.samples_needed(ns, np.tile(0.9 + 0 * ns, (2, 1)), 0.5) == float("inf")


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


def test_end_to_end_ci(tmp_path):
    a2.run(tmp_path / "res", "ci")
    a2.run(tmp_path / "res", "ci")
    figs = a2.figures(tmp_path / "res", tmp_path / "fig")
    assert figs and all(p.exists() for p in figs)
    cl = a2.claims(tmp_path / "res")
    assert len(cl) == 2 and all(c.verdict in VERDICTS for c in cl)
