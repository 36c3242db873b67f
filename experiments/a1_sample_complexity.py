"""A1: sample complexity nearly independent of the width (Allen-Zhu & Li 2019).

Claim of the paper: an Elman RNN h_t = ReLU(W h_{t-1} + A x_t), y_t = B h_t (W, A ~ N(0, 2/m),
only W trained) learns the concept class y_{l+1} = sum_{i<=l} S_i(z_i) of smooth functions of the
tokens (fixed first token, tokens of small norm eps_x) by online SGD with step eta ~ 1/m from N
samples, where N depends on the complexity of the concept and only (poly)logarithmically on the
width m; larger m does not hurt. The NTK view: the RNN tracks infinite-width NTK kernel regression.

Setup (what this module measures)
---------------------------------
* Task: ``concept`` (tasks.py): x_1 = (e_1 + e_d)/sqrt 2 for all sequences, tokens z of norm
  eps_x = EPS_X in the first d-1 coordinates, p = 3 terms per position, target 'all',
  normalised so Var y_t = 1 for t >= 2 (y_1 = 0). d = 4, T = 6 (five predicted positions).
* Model: ``RNNConfig.paper`` (readout 'all', W only), loss 'sum_from_2' (the papers'
  (1/2) sum_{t>=2} ||r_t||^2), online SGD: batch 1, one pass over N fresh samples (steps = N).
  Step: eta_paper = 1 / (m lambda), lambda = the top eigenvalue of the infinite-width NTK block
  Theta(x, x)[2:, 2:] of one sequence averaged over a few sequences (so eta ~ 1/m), converted with
  ``paper_lr_to_ntk``: lr_ntk = 1 / (2 lambda), the same for every m.
* Runs: a training sweep per N, ``experiments/a1_sample_complexity.toml`` with the scale's widths,
  seeds and n_test, N and lr substituted (``rnn_spec``, via ``sweep.override_spec``), run by
  ``rnn_ntk.sweep.run_sweep`` into ``<results>/a1_sample_complexity/rnn/N<N>/`` (resumable; a
  changed spec is refused). Widths are packed into one program per N at the largest width, each
  run at its true width (``pack_widths = true``). A run's key is key(seed) (the sweep's rule, no
  key axes): the same initial parameters (nested over m) and data at every m and N. The
  per-position test errors are recomputed from the stored final W on the run's test set
  (``rnn_ntk.reproduce.store_position_errors``, shared with A2) into ``train_N<N>.npz``.
* Test error: mean over positions t >= 2 of the test MSE divided by Var(y_t) (= 1 by construction;
  we divide by the measured test variance).
* Infinite-width references (issue 15), computed on each RNN run's OWN data (the training and test
  sequences of the run (m_max, seed), ``_stream``: ``train.setup_run`` and the engine's sample
  order ``train.epoch_permutation``), with the infinite-width W-only NTK in float64:
  ``ksgd``  one pass of online SGD in function space on the linear model with that kernel
            (``kernel_sgd_predictions``), same samples, same order, same step, started from the
            widest run's own initial function f0 -- the RNN's linearisation with the limit kernel;
  ``ksgd0`` the same from f = 0;  ``kr`` kernel regression from f = 0 (ridge JITTER * mean diag;
            the t -> inf limit of full-batch training).
  Verified (tests): kernel SGD equals parameter-space SGD on explicit features, and with the
  empirical NTK of the run's initial parameters it reproduces the engine's linearised network
  (train.linearized) on the same run to 2e-4.

Why the references changed (issue 15, verified in /tmp before the change): the former A1.3
compared one-pass SGD from a random f0 with kernel regression from 0 (converged, another data
draw). f0 is not small here: its input-dependent variance is 0.2-0.7 Var y at T = 6, eps_x = 0.5
(measured at m = 256 and 2048), and kernel SGD from f0 vs from 0 differs by ~1.4x in error (ci).
One pass of SGD is also not kernel regression. A symmetric initialisation (f0 = 0) was considered
and rejected: ``train.symmetric_params`` copies rows of a full W, so paired units have identical
states and the back-propagated signal W^T D v cancels exactly at init -- the initial NTK loses all
terms through time and is not the Gaussian RNN's NTK. So the RNN keeps the Gaussian init and the
reference carries the same f0.

Seeds: 8 (the sweep engine's keys key(s); 3 seeds did not resolve the slopes).

Agreement criteria (issue 15 changes, decided before the runs; the bands are the former ones)
---------------------------------------------------------------------------------------------
Verdicts are symmetric in the 95% intervals (``stats.verdict``: agrees only when the whole interval
meets the criterion). For each N, s(N) = log-log slope of the seed-mean relative test error
against m (stats.fit_power_law, seed bootstrap).
A1.1  (role 'extra') curves coincide up to a log m shift: every N: s(N) in [-0.2, 0.2] (between
      m and 8 m a log-m factor log(8m)/log m is <= 1.5, a slope of ~0.2); combined over N
      (``stats.combine``). Two-sided coincidence is stronger than the paper: its theorem bounds
      the sample complexity from above with at most polylog(m) growth, so a finite-width error
      that FALLS with m (finite widths still approaching the limit) does not contradict it. The
      old reading (point estimate of the worst N inside the band) said 'agrees' although the
      N = 400 interval [-0.27, -0.10] left the band.
A1.2  (claim) larger m never hurts: every N: s(N) <= 0.05 (``stats.at_most``, one-sided: the
      theorem's form), combined over N.
A1.3  (claim) the RNN tracks the infinite-width NTK: geometric mean over N of err_RNN(m_max) /
      err_ksgd in [0.5, 2] (paired seed bootstrap, ``_ratio``).
A1.4  (claim) the RNN learns: log-log slope of err_RNN(m_max) against N at most 0 (the whole
      interval below 0 for 'agrees').
A1.5  (role 'extra') the former A1.3: err_RNN(m_max) / err_kr in [0.5, 2], now on the same data,
      with the f0 cost err_ksgd / err_ksgd0 next to it.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import model, plots, stats, sweep, tasks, train
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.experiments.protocol import (fmt_fit, fmt_interval, is_done, load_piece, save_piece,
                                         settings, stored_setting, sweep_store)
from rnn_ntk.reproduce import Claim, check_scale, relative_error, store_position_errors

NAME = "a1_sample_complexity"
TITLE = ("Sample complexity nearly independent of width (Allen-Zhu & Li 2019): online SGD on the "
         "concept class, test error vs N for several m, next to infinite-width kernel regression")

INPUT_DIM = 4
LENGTH = 6
EPS_X = 0.5
N_TERMS = 3
JITTER = 1e-8
BASE_SEED = 2019
SPEC_PATH = Path(__file__).with_suffix(".toml")


class Setting(NamedTuple):
    ns: tuple[int, ...]
    widths: tuple[int, ...]
    seeds: int
    n_test: int


SETTINGS = {
    # ci: the smallest grid that runs every path (two N, two widths, two seeds)
    "ci": Setting(ns=(4, 8), widths=(4, 8), seeds=2, n_test=8),
    "default": Setting(ns=(50, 100, 200, 400), widths=(64, 128, 256), seeds=8, n_test=200),
    # large: one H200; the sweeps are ~10^4 online steps per (m, seed) lane (minutes); the kernel
    # references (float64, N <= 2000 sequences of T = 6, a python loop of N kernel-SGD steps) a
    # few minutes per seed: ~30 min in all (an estimate, not measured)
    "large": Setting(ns=(50, 100, 200, 500, 1000, 2000), widths=(128, 256, 512, 1024), seeds=8,
                     n_test=1000),
}


def model_config(width: int) -> model.RNNConfig:
    return model.RNNConfig.paper(width=width, input_dim=INPUT_DIM, readout="all")


def task_config(n_train: int, n_test: int, length: int = LENGTH,
                n_terms: int = N_TERMS) -> tasks.TaskConfig:
    """The concept task of A1 (and, with its own length and n_terms, of A2)."""
    return tasks.TaskConfig(kind="concept", n_train=n_train, n_test=n_test, length=length,
                            input_dim=INPUT_DIM, target="all", n_terms=n_terms)


def kernel_regression_errors(H, Ht, y_NT, yt_NT, ns, jitter: float = JITTER) -> np.ndarray:
    """Relative test error per position of joint kernel regression over positions 2..T on the first
    n sequences, for each n in ns: (len(ns), T-1). H (n, T, n, T), Ht (n_test, T, n, T)."""
    H, Ht = np.asarray(H), np.asarray(Ht)
    n, T = H.shape[:2]
    nt = Ht.shape[0]
    out = []
    for k in ns:
        A = H[:k, 1:, :k, 1:].reshape(k * (T - 1), k * (T - 1))
        B = Ht[:, 1:, :k, 1:].reshape(nt * (T - 1), k * (T - 1))
        y = np.asarray(y_NT)[:k, 1:].reshape(-1)
        A = A + jitter * np.mean(np.diag(A)) * np.eye(A.shape[0])
        p = (B @ np.linalg.solve(A, y)).reshape(nt, T - 1)
        pred = np.concatenate([np.zeros((nt, 1)), p], axis=1)
        out.append(relative_error(pred, yt_NT))
    return np.asarray(out)


def kernel_sgd_predictions(K_tr, K_te, y_NT, f0_tr, f0_te, order, lr: float) -> np.ndarray:
    """Test predictions (n_test, T) of one pass of online SGD (batch 1, loss (1/2) sum_{t>=2} r_t^2)
    on the linear model whose tangent kernel is K, started from the function f0: the function-space
    form of SGD on a linearised network,
        f_k = f_{k-1} - lr K(., x_i) r_i,   r_i = f_{k-1}(x_i) - y_i at t >= 2 (0 at t = 1),
    visiting the training sequences in ``order`` (each index once per visit).

    Args:
      K_tr: (n, T, n, T) kernel between training sequences.
      K_te: (n_test, T, n, T) kernel between test and training sequences.
      y_NT: (n, T) training targets. f0_tr, f0_te: (n, T), (n_test, T) the initial function.
      order: (k,) training indices in the order SGD sees them. lr: the step.

    Returns:
      (n_test, T) predictions f0_te + sum_i K_te(., x_i) alpha_i (float64).
    """
    K_tr, K_te = np.asarray(K_tr, np.float64), np.asarray(K_te, np.float64)
    y, f0 = np.asarray(y_NT, np.float64), np.asarray(f0_tr, np.float64)
    if K_tr.shape != y.shape + y.shape or K_te.shape[1:] != K_tr.shape[1:] or f0.shape != y.shape:
        raise ValueError(f"kernel_sgd_predictions: shapes K_tr {K_tr.shape}, K_te {K_te.shape}, "
                         f"y {y.shape}, f0_tr {f0.shape} do not fit (n, T, n, T), "
                         f"(n_test, T, n, T)")
    alpha = np.zeros_like(y)                              # (n, T) coefficients of K(., x_i)
    for i in np.asarray(order, dtype=np.int64):
        r = f0[i] + np.einsum("tjs,js->t", K_tr[i], alpha) - y[i]
        r[0] = 0.0
        alpha[i] -= lr * r
    return np.asarray(f0_te, np.float64) + np.einsum("atjs,js->at", K_te, alpha)


def position_blocks(seed: int = 0, n: int = 8, length: int = LENGTH) -> np.ndarray:
    """(n, T-1, T-1): the infinite-width NTK block Theta(x, x)[2:, 2:] between the predicted
    positions t = 2..T of each of n concept-task sequences of ``length`` tokens (float64)."""
    with jax.enable_x64(True):
        tc = task_config(n, 1, length)
        x = tasks.sample_inputs(tc, jax.random.key(BASE_SEED + 7 + seed), n, {"eps_x": EPS_X},
                                dtype=jnp.float64)
        return np.stack([np.asarray(infinite_kernels(model_config(1), x[i:i + 1])[1])[0, 1:, 0, 1:]
                         for i in range(n)])


def ntk_lr(seed: int = 0, n: int = 8, length: int = LENGTH) -> float:
    """lr_ntk = 1 / (2 lambda): lambda the mean top eigenvalue of Theta(x, x)[2:, 2:] (float64)
    over n concept-task sequences of ``length`` tokens (T), :func:`position_blocks`."""
    lam = [np.linalg.eigvalsh(B)[-1] for B in position_blocks(seed, n, length)]
    return float(1.0 / (2.0 * np.mean(lam)))


def rnn_spec(st: Setting, N: int, lr: float) -> sweep.Spec:
    """The sweep of one piece: the TOML (experiments/a1_sample_complexity.toml) with the scale's
    widths, seeds and test size, N samples (N steps, logged at the start and end) and step lr."""
    return sweep.override_spec(sweep.load_spec(SPEC_PATH), {
        "model.width": list(st.widths), "task.n_train": N, "task.n_test": st.n_test,
        "train.steps": N, "train.log_every": N, "train.lr": float(lr), "sweep.seeds": st.seeds})


def _train_piece(N: int, st: Setting, lr: float, store_dir) -> dict[str, np.ndarray]:
    """Run (or resume) the piece's sweep into store_dir and return err (widths, seeds, T-1), the
    engine's final test loss and divergence flag per run (runs width-major, seed last)."""
    sweep_store(rnn_spec(st, N, lr), store_dir)
    res = store_position_errors(store_dir)
    want_w = np.repeat(np.asarray(st.widths), st.seeds)
    want_s = np.tile(np.arange(st.seeds), len(st.widths))
    if not (np.array_equal(res["width"], want_w) and np.array_equal(res["seed"], want_s)):
        raise RuntimeError(f"{store_dir}: runs are not (width, seed) = {list(zip(want_w, want_s))}")
    return {"err": res["err"].reshape(len(st.widths), st.seeds, LENGTH - 1),
            "diverged": res["diverged"], "test_loss": res["test_loss"]}


def _stream(spec: sweep.Spec, seed: int, width: int, lr: float):
    """What the sweep's run (width, seed) of ``spec`` starts from and sees: (train config, its
    ``train.RunSetup`` (initial parameters, data, scales), the order of the one SGD pass)."""
    run = next(r for r in sweep.expand_runs(spec) if r.width == width and r.seed == seed)
    cfg = sweep.build_config(spec, run.static, run.width)
    hp = {"lr": lr, "eps_x": EPS_X, "width": float(run.width)}
    setup = train.setup_run(cfg, train.run_key(run.seed, run.key_coords), hp)
    order = np.asarray(train.epoch_permutation(cfg, setup.shuffle_key, 0))[:cfg.task.n_train]
    return cfg, setup, order


def _kernel_piece(N: int, st: Setting, lr: float) -> dict[str, np.ndarray]:
    """The infinite-width references on the RNN runs' own data (float64 kernels), per seed and
    position (seeds, T-1): ``ksgd`` one pass of kernel SGD in the run's sample order, same step,
    started from the widest run's initial function f0; ``ksgd0`` the same from f = 0; ``kr``
    kernel regression (the t -> inf limit of full-batch training) from f = 0."""
    spec = rnn_spec(st, N, lr)
    m = max(st.widths)
    out: dict[str, list] = {"ksgd": [], "ksgd0": [], "kr": []}
    for s in range(st.seeds):
        cfg, setup, order = _stream(spec, s, m, lr)
        d = setup.data

        def f0(x):
            return np.asarray(model.apply(cfg.model, setup.params0, x, scales=setup.scales)[..., 0],
                              np.float64)

        y, yt = np.asarray(d.y_train, np.float64)[..., 0], np.asarray(d.y_test, np.float64)[..., 0]
        f0_tr, f0_te = f0(d.x_train), f0(d.x_test)
        with jax.enable_x64(True):
            x, xt = jnp.asarray(d.x_train, jnp.float64), jnp.asarray(d.x_test, jnp.float64)
            _, K = infinite_kernels(model_config(1), x)
            _, Kt = infinite_kernels(model_config(1), xt, x)
        K, Kt = np.asarray(K), np.asarray(Kt)
        out["ksgd"].append(relative_error(
            kernel_sgd_predictions(K, Kt, y, f0_tr, f0_te, order, lr), yt))
        out["ksgd0"].append(relative_error(
            kernel_sgd_predictions(K, Kt, y, 0 * f0_tr, 0 * f0_te, order, lr), yt))
        out["kr"].append(kernel_regression_errors(K, Kt, y, yt, [N])[0])
    return {k: np.asarray(v) for k, v in out.items()}


def run(results_dir, scale: str = "default") -> None:
    """Every piece (step; per N the training sweep and the kernel references on its data); a
    stored piece is reused only when it was made with this scale's settings
    (``protocol.is_done``)."""
    st = SETTINGS[check_scale(scale)]
    out = Path(results_dir) / NAME
    want = settings(scale, st)
    lp = out / "lr.npz"
    if not is_done(lp, want):
        save_piece(lp, want, lr_ntk=np.asarray(ntk_lr()))
    lr = float(load_piece(lp, want)[0]["lr_ntk"])
    for N in st.ns:
        p = out / f"train_N{N}.npz"
        if not is_done(p, want):
            save_piece(p, want, **_train_piece(N, st, lr, out / "rnn" / f"N{N}"))
        kp = out / f"kernel_N{N}.npz"
        if not is_done(kp, want):
            save_piece(kp, want, **_kernel_piece(N, st, lr))


REFERENCES = ("ksgd", "ksgd0", "kr")


def _load(results_dir):
    """(setting, RNN errors (widths, seeds, ns), {reference: errors (seeds, ns)}) of the last run,
    errors averaged over positions; every piece must have been made with the setting stored in
    lr.npz."""
    out = Path(results_dir) / NAME
    _, meta = load_piece(out / "lr.npz")
    st, want = stored_setting(meta, Setting), meta["settings"]
    E = np.stack([load_piece(out / f"train_N{N}.npz", want)[0]["err"].mean(-1)
                  for N in st.ns], axis=-1)              # (widths, seeds, ns)
    kp = [load_piece(out / f"kernel_N{N}.npz", want)[0] for N in st.ns]
    ref = {k: np.stack([p[k].mean(-1) for p in kp], axis=-1) for k in REFERENCES}  # (seeds, ns)
    return st, E, ref


def _ratio(E_SN, R_SN, n_boot: int = 1000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Geometric mean over N of mean_s E / mean_s R, with a 95% interval from a bootstrap that
    resamples seeds jointly (paired: seed s of both arms saw the same data). (seeds, ns) each."""
    def gm(e, r):
        return float(np.exp(np.mean(np.log(e.mean(0) / r.mean(0)))))

    rng = np.random.default_rng(seed)
    S = E_SN.shape[0]
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, S, S)
        boots.append(gm(E_SN[i], R_SN[i]))
    return gm(E_SN, R_SN), tuple(float(v) for v in np.percentile(boots, [2.5, 97.5]))


def figures(results_dir, fig_dir) -> list[Path]:
    st, E, ref = _load(results_dir)
    ns = np.asarray(st.ns)
    fig, ax = plots.new_figure(1, width=4.2, height=3.2)
    a = ax[0, 0]
    for c, (i, m) in zip(plots.width_colors(len(st.widths)), enumerate(st.widths)):
        mu, se = stats.mean_sem(E[i])
        sl = stats.fit_power_law(ns, E[i], n_boot=200).slope
        a.errorbar(ns, mu, yerr=se, color=c, marker="o", label=f"RNN m={m} (slope vs N {sl:+.2f})")
    m = max(st.widths)
    for k, ls, mk, lab in (("ksgd", "-", "D", f"NTK SGD, same stream, from f0 of m={m}"),
                           ("ksgd0", "--", "v", "NTK SGD, same stream, from 0"),
                           ("kr", ":", "s", "NTK regression from 0")):
        mu, se = stats.mean_sem(ref[k])
        a.errorbar(ns, mu, yerr=se, color="k", ls=ls, marker=mk, ms=3.5, label=lab)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xticks(ns, [str(int(n)) for n in ns], minor=False)
    a.xaxis.set_minor_locator(__import__("matplotlib").ticker.NullLocator())
    a.set_xlabel("training samples N (one SGD pass)")
    a.set_ylabel("test MSE / Var(y)")
    a.legend(fontsize=6)
    return plots.save(fig, Path(fig_dir) / NAME)


def claims(results_dir) -> list[Claim]:
    st, E, ref = _load(results_dir)
    ns, ws = np.asarray(st.ns), np.asarray(st.widths)
    out = []
    fits = [stats.fit_power_law(ws, E[:, :, j].T) for j in range(len(ns))]
    txt = "; ".join(f"N={n}: {fmt_fit(f, signed=True)}" for n, f in zip(ns, fits))
    # A1.1 (extra): two-sided band; verdict = the combination over N (each N's interval in the band)
    v11 = stats.combine([stats.verdict(f.slope, f.ci95, -0.2, 0.2) for f in fits])
    out.append(Claim(NAME, "test-error curves for different widths nearly coincide (stronger "
                     "than the paper's bound, which only limits growth with m)",
                     "log-log slope of test error vs m, per N", txt,
                     "every N: slope in [-0.2, 0.2]",
                     v11, role="extra"))
    wmax = max(fits, key=lambda f: f.ci95[1])
    out.append(Claim(NAME, "larger width never hurts (sample complexity at most polylog in m)",
                     "the slope vs m with the highest upper 95% bound over N",
                     f"N={int(ns[fits.index(wmax)])}: {fmt_fit(wmax, signed=True)}", "<= 0.05",
                     stats.combine([stats.at_most(f.slope, f.ci95, 0.05) for f in fits])))
    Em = E[-1]
    est, ci = _ratio(Em, ref["ksgd"])
    out.append(Claim(NAME, "the RNN tracks the infinite-width NTK (same samples, same order, same "
                     "step, same f0)",
                     f"geometric mean over N of err_RNN(m={int(ws[-1])}) / err_NTK-SGD",
                     fmt_interval(est, ci), "in [0.5, 2]", stats.verdict(est, ci, 0.5, 2.0)))
    f = stats.fit_power_law(ns, Em)
    out.append(Claim(NAME, "the RNN learns the concept class (error falls with N)",
                     f"log-log slope of err_RNN(m={int(ws[-1])}) vs N",
                     fmt_fit(f, signed=True), "< 0", stats.at_most(f.slope, f.ci95, 0.0)))
    est, ci = _ratio(Em, ref["kr"])
    e0, c0 = _ratio(ref["ksgd"], ref["ksgd0"])
    out.append(Claim(NAME, "one SGD pass from a random f0 vs kernel regression from 0 (the former "
                     "A1.3 comparison; unlike with unlike)",
                     f"geometric mean over N of err_RNN(m={int(ws[-1])}) / err_KR; the f0 cost "
                     "err_NTK-SGD(f0) / err_NTK-SGD(0)",
                     f"{fmt_interval(est, ci)}; f0 cost {fmt_interval(e0, c0)}", "in [0.5, 2]",
                     stats.verdict(est, ci, 0.5, 2.0), role="extra"))
    return out
