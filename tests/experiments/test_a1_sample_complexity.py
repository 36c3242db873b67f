"""A1 (sample complexity vs width): the pieces against independent computations, and the experiment
end to end at scale 'ci'."""

import dataclasses

import jax
import numpy as np
import pytest

from rnn_ntk import model, sweep, tasks, train
from rnn_ntk.dynamics import kernel_regression
from rnn_ntk.reproduce import VERDICTS, load_arrays, load_experiment


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


def test_kernel_sgd_is_sgd_on_explicit_features():
    # a linear model f(x)_t = <phi_t(x), w> + f0(x)_t has tangent kernel K = phi phi^T; one pass of
    # SGD on w (loss (1/2) sum_{t>=2} r_t^2) in parameter space gives the same test predictions
    rng = np.random.default_rng(1)
    n, nt, T, P = 9, 5, 4, 7
    F = rng.normal(size=(n + nt, T, P))
    y, f0 = rng.normal(size=(n, T)), rng.normal(size=(n + nt, T))
    order, lr = rng.permutation(n), 0.03
    w = np.zeros(P)
    for i in order:
        r = F[i] @ w + f0[i] - y[i]
        w -= lr * F[i, 1:].T @ r[1:]
    want = F[n:] @ w + f0[n:]
    K = np.einsum("atp,bsp->atbs", F, F)
    got = a1.kernel_sgd_predictions(K[:n, :, :n], K[n:, :, :n], y, f0[:n], f0[n:], order, lr)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="shapes"):
        a1.kernel_sgd_predictions(K[:n, :, :n], K[n:, :, :n], y[:, 1:], f0[:n], f0[n:], order, lr)


def test_kernel_sgd_on_the_runs_stream_is_the_engines_linearised_net():
    # _stream gives the run's initial function, data and sample order: kernel SGD with the
    # empirical NTK at the run's initial parameters reproduces the engine's own linearised
    # network (train.linearized) trained on the same run, at its final test loss
    from rnn_ntk.kernels.empirical import empirical_ntk
    st, N, lr, m, s = a1.SETTINGS["ci"], 8, 0.05, 8, 1
    cfg, setup, order = a1._stream(a1.rnn_spec(st, N, lr), s, m, lr)
    assert sorted(order.tolist()) == list(range(N))
    rec = train.train_many(dataclasses.replace(cfg, linearized=True), train.run_key(s, ())[None],
                           {"lr": lr, "eps_x": a1.EPS_X})
    d, sc = setup.data, setup.scales
    K = np.asarray(empirical_ntk(cfg.model, setup.params0, d.x_train, scales=sc), np.float64)
    Kt = np.asarray(empirical_ntk(cfg.model, setup.params0, d.x_test, d.x_train, scales=sc),
                    np.float64)

    def f0(x):
        return np.asarray(model.apply(cfg.model, setup.params0, x, scales=sc)[..., 0], np.float64)

    y, yt = np.asarray(d.y_train, np.float64)[..., 0], np.asarray(d.y_test, np.float64)[..., 0]
    p = a1.kernel_sgd_predictions(K, Kt, y, f0(d.x_train), f0(d.x_test), order, lr)
    loss = 0.5 * np.sum((p - yt)[:, 1:] ** 2)
    assert loss == pytest.approx(float(np.asarray(rec["lin_test_loss"])[0, -1]), rel=2e-4)
    # and differs from the net started at f = 0 (f0 matters at this width)
    p0 = a1.kernel_sgd_predictions(K, Kt, y, 0 * y, 0 * yt, order, lr)
    assert abs(0.5 * np.sum((p0 - yt)[:, 1:] ** 2) - loss) > 1e-2 * loss


def test_paired_ratio_bootstrap():
    E = np.array([[2.0, 4.0], [2.0, 4.0], [2.0, 4.0]])
    R = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    est, ci = a1._ratio(E, R, n_boot=50)
    assert est == pytest.approx(np.sqrt(2.0 * 4.0)) and ci == pytest.approx((est, est))
    # paired: seed-to-seed variation common to both arms cancels in the ratio
    scale = np.array([[0.5], [1.0], [3.0]])
    est, ci = a1._ratio(E * scale, R * scale, n_boot=200)
    assert ci[1] - ci[0] < 0.5 * est


def test_spec_resolves_to_a1_setup():
    st = a1.SETTINGS["default"]
    spec = a1.rnn_spec(st, 400, 0.0123)
    runs = sweep.expand_runs(spec)
    assert [(r.width, r.seed) for r in runs] == [(w, s) for w in st.widths for s in range(st.seeds)]
    assert all(r.key_coords == () for r in runs)        # key = key(seed): paired over m and N
    for r in runs:
        cfg = sweep.build_config(spec, r.static, r.width)
        want = train.TrainConfig(model=a1.model_config(r.width), task=a1.task_config(400, st.n_test),
                                 steps=400, log_every=400, batch_size=1, loss="sum_from_2",
                                 init="gaussian", save_params=True)
        assert cfg == want
    assert spec.fixed["train"]["lr"] == 0.0123 and spec.fixed["task"]["eps_x"] == a1.EPS_X
    # the template as committed is the default scale's first piece, with the computed step
    base, first = sweep.load_spec(a1.SPEC_PATH), a1.rnn_spec(st, st.ns[0], 0.057259105770178294)
    assert first.resolved == base.resolved


def test_sweep_piece_matches_direct_training(ci_results):
    # the errors read back from the sweep store equal those of the same runs trained directly with
    # train.train_many (widths zero-padded to the largest, key(seed), the run's test set from
    # fold_in(key, 1)) and evaluated with model.apply; they also reproduce the engine's own test
    # loss (1/2) sum_i sum_{t>=2} r^2. The sweep is the first piece of the session's 'ci' run
    # (read back, not retrained: its store is complete).
    res = ci_results(a1.NAME)
    st = a1.SETTINGS["ci"]
    N, W, S, nt = st.ns[0], len(st.widths), st.seeds, st.n_test
    lr = float(load_arrays(res / a1.NAME / "lr.npz")[0]["lr_ntk"])
    piece = a1._train_piece(N, st, lr, res / a1.NAME / "rnn" / f"N{N}")
    M = max(st.widths)
    tcfg = train.TrainConfig(model=a1.model_config(M), task=a1.task_config(N, nt), steps=N,
                             log_every=N, batch_size=1, loss="sum_from_2", init="gaussian",
                             array_width=M, save_params=True)
    ws = np.repeat(np.asarray(st.widths, np.float64), S)
    seeds = np.tile(np.arange(S), W)
    keys = jax.numpy.stack([jax.random.key(int(s)) for s in seeds])
    rec = train.train_many(tcfg, keys, {"lr": lr, "width": ws, "eps_x": a1.EPS_X})
    cfgM = a1.model_config(M)
    for r in range(W * S):
        data = tasks.sample_task(tcfg.task, jax.random.fold_in(keys[r], 1), {"eps_x": a1.EPS_X})
        params = jax.tree.map(lambda a: a[r], rec["final_params"])
        sc = model.Scales(cfgM.sigma_w, cfgM.sigma_u, cfgM.sigma_b, cfgM.sigma_v, float(ws[r]))
        pred = np.asarray(model.apply(cfgM, params, data.x_test, scales=sc)[..., 0], np.float64)
        y = np.asarray(data.y_test, np.float64)[..., 0]
        want = np.mean((pred[:, 1:] - y[:, 1:]) ** 2, axis=0) / np.var(y[:, 1:], axis=0)
        np.testing.assert_allclose(piece["err"][r // S, r % S], want, rtol=1e-4)
        loss = 0.5 * nt * np.sum(piece["err"][r // S, r % S] * np.var(y[:, 1:], axis=0))
        assert loss == pytest.approx(float(piece["test_loss"][r]), rel=1e-4)
        assert loss == pytest.approx(float(np.asarray(rec["test_loss"])[r, -1]), rel=1e-4)
    assert not piece["diverged"].any()


def test_end_to_end_ci(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(a1.NAME)                        # a1.run(res, "ci"), shared with other tests
    rerun_changes_nothing(a1, res)
    figs = a1.figures(res, tmp_path / "fig")
    assert figs and all(p.exists() for p in figs)
    cl = a1.claims(res)
    assert len(cl) == 5 and all(c.verdict in VERDICTS for c in cl)
    assert [c.role for c in cl] == ["extra", "claim", "claim", "claim", "extra"]
