"""L1 (network vs linearised model): the pieces against independent computations, and the
experiment end to end at scale 'ci'."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_ntk import model, train
from rnn_ntk.reproduce import VERDICTS, load_experiment

# shares the ci runs of the session fixture ci_results with test_b3_lazy_training.py:
# one pytest-xdist worker runs both files
pytestmark = pytest.mark.xdist_group("l1_ci_runs")


l1 = load_experiment("l1_net_vs_linearized")


def test_loss_kernel_and_positions_match_direct_loops():
    rng = np.random.default_rng(0)
    n, T = 3, 4
    K = rng.normal(size=(n, T, n, T))
    a = rng.normal(size=(n, T))
    Kr, ar = l1.loss_kernel(K), l1.loss_positions(a)
    rows = [(i, t) for i in range(n) for t in range(1, T)]
    for p, (i, t) in enumerate(rows):
        assert ar[p] == a[i, t]
        for q, (j, s) in enumerate(rows):
            assert Kr[p, q] == K[i, t, j, s]


@pytest.mark.parametrize("c,converges", [(0.5, True), (0.95, True), (1.05, False)])
def test_stable_lr_is_the_edge_of_gd_stability(c, converges):
    rng = np.random.default_rng(1)
    A = rng.normal(size=(6, 6))
    K = A @ A.T + 0.1 * np.eye(6)
    y = rng.normal(size=6)
    lr = l1.stable_lr(K, c)
    f = np.zeros(6)
    for _ in range(3000):                      # plain GD on L = (1/2)||f - y||^2 in function space
        f = f - lr * K @ (f - y)
    err = np.linalg.norm(f - y)
    assert (err < 1e-6) if converges else (err > 1e3)


def test_closed_form_loss_matches_a_gd_loop():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(5, 5))
    K = A @ A.T
    y, f0 = rng.normal(size=5), rng.normal(size=5)
    lr = l1.stable_lr(K)
    steps = np.array([0, 1, 7, 30])
    got = l1.closed_form_loss(K, y, f0, lr, steps)
    f, want = f0.copy(), []
    for t in range(31):
        if t in steps:
            want.append(0.5 * np.sum((f - y) ** 2))
        f = f - lr * K @ (f - y)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_init_quantities_kernel_matches_brute_force_jacobian():
    cfg = l1.train_config(12, 3, 4, 1, 1, array_width=16, n_probe=1)
    key = jax.random.key(5)
    q = l1.init_quantities(cfg, key, 12)
    with jax.enable_x64(True):
        setup = train.setup_run(cfg, key, {"width": 12.0, "delta": l1.DELTA})
        p = {g: jnp.asarray(v, jnp.float64)[:12, :12] if g == "W" else jnp.asarray(v, jnp.float64)[:12]
             for g, v in setup.params0.items()}
        mcfg = model.RNNConfig.paper(width=12, input_dim=l1.INPUT_DIM)
        x = jnp.asarray(setup.data.x_train, jnp.float64)

        # the run's multipliers are float32 hyperparameters (sqrt 2 rounded): the same here
        sc = model.Scales(*(jnp.asarray(v, jnp.float64) for v in setup.scales))

        def f_of_W(W):
            return model.apply(mcfg, {**p, "W": W}, x, scales=sc)[:, 1:, 0].reshape(-1)

        J = jax.jacrev(f_of_W)(p["W"]).reshape(3 * 3, -1)
        f0 = f_of_W(p["W"])
    np.testing.assert_allclose(q["K0"], np.asarray(J @ J.T), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(q["f0"], np.asarray(f0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q["y"], np.asarray(setup.data.y_train)[:, 1:, 0].reshape(-1))
    assert q["Kinf"].shape == (9, 9)
    assert np.all(np.linalg.eigvalsh(q["Kinf"]) > 0)


def test_statistics_on_synthetic_records():
    a = np.array([[0.0, 2.0, 1.0], [0.5, np.nan, 3.0]])
    np.testing.assert_array_equal(l1.max_over_logs(a), [2.0, 3.0])
    b = np.array([[0.0, np.nan, 0.2, np.nan], [0.0, 0.4, np.nan, np.nan]])
    np.testing.assert_array_equal(l1.last_finite(b), [0.2, 0.4])
    loss = np.array([[4.0, 2.0, 1.0]])
    ref = np.array([[4.0, 1.0, 1.5]])
    np.testing.assert_allclose(l1.curve_distance(loss, ref), [0.25])


@pytest.fixture
def l1_results(ci_results):
    return ci_results(l1.NAME)                        # l1.run(res, "ci"), shared (B3 reuses it)


def test_ci_end_to_end(l1_results, tmp_path):
    files = sorted((l1_results / l1.NAME).glob("width_*.npz"))
    assert len(files) == len(l1.SETTINGS["ci"].widths)
    stamps = [os.stat(f).st_mtime_ns for f in files]
    l1.run(l1_results, "ci")                                     # resumable: nothing recomputed
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    paths = l1.figures(l1_results, tmp_path / "fig")
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
    cl = l1.claims(l1_results)
    assert [c.claim[:4] for c in cl] == ["L1.1", "L1.2", "L1.4"]      # L1.3 is B3.1's row
    assert all(c.role == "extra" for c in cl)
    assert all(c.verdict in VERDICTS and c.experiment == l1.NAME for c in cl)


def test_linearised_training_follows_the_kernel_closed_form(l1_results):
    """The engine's linearised model (linearize + optax GD, float32) against the eigenbasis closed
    form of GD on the empirical K_0 (structured kernel, float64): the same dynamics."""
    widths, a = l1.load(l1_results)
    lin, emp = a["lin_train_loss"], a["emp_loss"]
    assert lin.shape == emp.shape
    np.testing.assert_allclose(lin, emp, rtol=2e-3)
    assert np.all(lin[..., -1] < lin[..., 0])                     # it trained
    # the network itself starts where the linearised model starts
    np.testing.assert_allclose(a["train_loss"][..., 0], lin[..., 0], rtol=1e-6)
    # the step is half the stability edge of the run's own K_0
    np.testing.assert_allclose(a["lr"] * a["lam_max"], 2 * l1.C_STEP, rtol=1e-12)


def test_an_interrupted_run_reads_as_not_finished(l1_results, tmp_path):
    # l1.load serves L1, B1 and B3: a width of the stored scale's ladder missing is "not finished"
    part = tmp_path / "partial"
    shutil.copytree(l1_results / l1.NAME, part / l1.NAME)
    widest = max(l1.SETTINGS["ci"].widths)
    (part / l1.NAME / f"width_{widest}.npz").unlink()
    for f in (l1.load, l1.claims, lambda r: l1.figures(r, tmp_path / "fig")):
        with pytest.raises(FileNotFoundError, match=rf"widths \[{widest}\] of the ci run .* not "
                                                    "stored yet"):
            f(part)
