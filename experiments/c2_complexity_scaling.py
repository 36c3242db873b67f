"""C2: the WSHC scaling laws of the scale-free kernel complexity (Wang, Shen, Hu & Cao 2021).

Claims of the paper (abstract and main theorems, as C1's docstring states them): for the papers'
Elman RNN trained in the NTK regime, (i) additive targets sum_l f(beta_l^T x_l) on tokens of unit
norm (no small-norm condition) are learnable with a number of samples that scales
*almost-polynomially* in the input length L; (ii) N-variable targets f(beta^T [x_{l_1}, ..,
x_{l_N}]) are learnable (bounded complexity, n ~ poly samples) when EITHER N OR the span l0 =
max l_j - min l_j is small; the generalisation bound is controlled by sqrt(y^T H^-1 y / n).

The measure is C1's scale-free complexity c(n) = sqrt(y^T (H + j I)^-1 y tr H) / n
(``c1_kernel_complexity.complexity``; invariant under H -> a H, which matters because the ReLU NTK
is homogeneous in the token norm and grows like L^2 with the length), H the infinite-width W-only
NTK of ``RNNConfig.paper`` (ReLU, s_w = sqrt 2, s_u = sqrt(2 d), s_b = 0), readout 'last', d = 3,
float64, nested subsets of n_max sequences per seed. Tokens are uniform on the unit sphere
(``tasks.sample_inputs`` of the wang kinds, key fold_in(fold_in(key(BASE_SEED), s), 0) for seed s).
Targets (link sin, Var y = 1): ``additive`` (the wang_additive target of ``rnn_ntk.tasks``; its
'all' target gives y_L for every prefix length L at once), lag-set targets of C1
(``c1.lag_target``: y = c sin(sum_j beta_j^T x_{L - l_j}), beta_j ~ N(0, I/N)), and iid N(0, 1)
labels on the same inputs (``random``, the unlearnable reference). No network is trained here: the
test error is that of infinite-width kernel regression (the t -> inf limit of GD on the linearised
network from f_0 = 0); C1 holds the trained-RNN arm.

Parts
-----
1. Length sweep: one input draw of length L_max per seed; for each L the kernel of the first L
   tokens (``infinite_kernels(lengths=L)``, one compiled program for every L), c at the scale's
   ``ns_length`` for ``additive``, ``N2_l01`` (lags {0, 1}), ``N2_far`` (lags {0, L-1}: N = 2 with
   the largest span) and ``random``.
2. (N, l0) phase diagram at L = 10 (C1's length): every cell N in ``n_vars``, l0 in ``spans`` with
   N <= l0 + 1, lags of the wang_nvar layout (offsets ``tasks.nvar_offsets``; N = 1: the single
   lag l0); c(n) for n in ``ns``; per cell c at n_max and the log-log slope of c vs n.
3. The bound at L = 10 for ``additive``: B(n) = sqrt(2) c(n) + 3 sqrt(ln(6/delta) / (2n)),
   delta = 0.05, against the measured test loss l(p, y) = min(|p - y|, 1) (1-Lipschitz, in
   [0, 1]) of kernel regression on n_test fresh sequences. Constants: the leading term
   sqrt(2 y^T H^-1 y / n) and the confidence term are those of the Arora et al. (2019, Thm 5.1)
   bound that this line of work follows, ASSUMED here (the paper's own statement carries
   width-, step- and L-dependent terms that vanish in the infinite-width limit and are set to 0);
   H normalised to unit mean diagonal (so the leading term is sqrt(2) c); the training loss term
   is 0 (kernel regression interpolates). The zero predictor's loss E min(|y|, 1) is reported
   for scale.

Agreement criteria (fixed before the default-scale run; 95% intervals from a seed bootstrap;
symmetric verdicts, ``stats``)
---------------------------------------------------------------------------------------------
C2.1 (claim) polynomial, not exponential, growth in L: for each of additive, N2_l01, N2_far the
     seed-mean ln c(n_max, L) is fitted against ln L (power law) and against L (exponential);
     statistic log10(SSE_power / SSE_exp): agrees if every target's interval lies below 0 (the
     power law fits better), disagrees if one lies wholly above.
C2.2 (claim) bounded in n when N or l0 is small: every phase cell with N <= 2 (any span up to
     max(spans)) or l0 <= 1 has a log-log slope of c vs n at most 0.1 (C1.3's bound; worst
     decides).
C2.3 (claim) the hard corner is "both large": c(N_max, l0_max) / max(c(2, l0_max),
     c(N_max, N_max - 1)) at n_max: agrees if above 1.
C2.4 (control) the bound holds: B(n_max) - test loss(n_max) at least 0.
C2.5 (extra; the paper does not evaluate its bound) non-vacuous: B(n_max) below 1 (the loss's
     range).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import plots, stats, tasks
from rnn_ntk.dynamics import kernel_regression
from rnn_ntk.experiments import c1_kernel_complexity as c1
from rnn_ntk.experiments.protocol import (fmt_fit, fmt_interval, is_done, load_piece, save_piece,
                                         settings)
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.reproduce import Claim, check_scale

__all__ = ["NAME", "TITLE", "Setting", "SETTINGS", "phase_cells", "wshc_bound", "ramp_loss",
           "model_comparison", "run", "figures", "claims"]

NAME = "c2_complexity_scaling"
TITLE = ("WSHC scaling laws of the scale-free kernel complexity (Wang, Shen, Hu & Cao 2021): "
         "growth in the length L, the (N, l0) phase diagram, the bound vs measured test error")

BASE_SEED = 2022
PHASE_LENGTH = 10
DELTA = 0.05
SLOPE_BOUND = 0.1                     # C1.3's "bounded in n"
LENGTH_TARGETS = ("additive", "N2_l01", "N2_far")


class Setting(NamedTuple):
    lengths: tuple[int, ...]          # the L sweep
    ns_length: tuple[int, ...]        # nested n of the L sweep
    ns: tuple[int, ...]               # nested n at L = 10 (phase diagram and bound)
    n_test: int
    seeds: int
    n_vars: tuple[int, ...]
    spans: tuple[int, ...]


SETTINGS = {
    "ci": Setting(lengths=(4, 8, 16), ns_length=(8, 16), ns=(8, 16), n_test=8, seeds=2,
                  n_vars=(1, 2, 4), spans=(0, 1, 3, 9)),
    # default: ~3 min CPU on 2 quiet cores (kernels n = 800 x L = 64 and n = 3200 x L = 10)
    "default": Setting(lengths=(4, 8, 16, 32, 64), ns_length=(100, 200, 400, 800),
                       ns=(100, 200, 400, 800, 1600, 3200), n_test=1000, seeds=4,
                       n_vars=(1, 2, 3, 4), spans=(0, 1, 2, 3, 5, 7, 9)),
    # large: one H200 for the kernels (seconds); the float64 Cholesky solves run on the host
    # (n = 12800: ~10 s each, 8 seeds x 6 sizes): ~15 min
    "large": Setting(lengths=(4, 8, 16, 32, 64, 128), ns_length=(200, 400, 800, 1600, 3200),
                     ns=(200, 400, 800, 1600, 3200, 6400, 12800), n_test=4000, seeds=8,
                     n_vars=(1, 2, 3, 4, 6), spans=(0, 1, 2, 3, 5, 7, 9)),
}


# ----------------------------------------------------------------------------------------------
# pieces (public: tested in tests/experiments/test_c2_complexity_scaling.py)

def phase_cells(st: Setting) -> list[tuple[int, int]]:
    """The (N, l0) cells of the phase diagram: N in n_vars, l0 in spans, N <= l0 + 1 (N distinct
    positions fit in a span l0), l0 < 10 (inside L = 10)."""
    return [(N, l0) for N in st.n_vars for l0 in st.spans if N <= l0 + 1 and l0 < PHASE_LENGTH]


def cell_lags(N: int, l0: int) -> tuple[int, ...]:
    """Lags of the N-variable target of span l0 in the wang_nvar layout (N = 1: the lag l0)."""
    if N == 1:
        return (l0,)
    tc = tasks.TaskConfig(kind="wang_nvar", n_train=1, n_test=1, length=PHASE_LENGTH,
                          input_dim=c1.INPUT_DIM, n_vars=N, span=l0)
    return tuple(sorted(l0 - o for o in tasks.nvar_offsets(tc)))


def wshc_bound(c, n, delta: float = DELTA):
    """The assumed form of the bound: sqrt(2) c + 3 sqrt(ln(6 / delta) / (2 n)) (see the module
    docstring for which constants are assumed). ``c`` the scale-free complexity at n samples."""
    n = np.asarray(n, np.float64)
    if np.any(n < 1) or not 0 < delta < 1:
        raise ValueError(f"need n >= 1 and 0 < delta < 1, got n={n}, delta={delta}")
    return math.sqrt(2.0) * np.asarray(c, np.float64) + 3.0 * np.sqrt(math.log(6 / delta) / (2 * n))


def ramp_loss(p, y) -> np.ndarray:
    """min(|p - y|, 1): a 1-Lipschitz loss with values in [0, 1]."""
    return np.minimum(np.abs(np.asarray(p, np.float64) - np.asarray(y, np.float64)), 1.0)


def model_comparison(x: np.ndarray, logc_SX: np.ndarray, n_boot: int = 1000, seed: int = 0
                     ) -> tuple[float, tuple[float, float]]:
    """log10(SSE of ln c vs ln x / SSE of ln c vs x) of the seed-mean curve, with a seed-bootstrap
    95% interval: below 0 when a power law in x fits better than an exponential.

    Args:
      x: (X,) positive abscissae (lengths L).
      logc_SX: (S, X) ln c per seed.
    """
    x = np.asarray(x, np.float64)

    def sse(u, v):
        A = np.stack([u, np.ones_like(u)], 1)
        r = v - A @ np.linalg.lstsq(A, v, rcond=None)[0]
        return float(r @ r)

    def stat(m):
        return math.log10(max(sse(np.log(x), m), 1e-300) / max(sse(x, m), 1e-300))

    return stats.bootstrap_seeds(stat, [np.asarray(logc_SX, np.float64)], n_boot=n_boot, seed=seed)


def _key(s: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(BASE_SEED), s), 0)


def _inputs_and_additive(L: int, n: int, s: int):
    """n sequences of length L (unit tokens) and the additive target y_t at every t (n, L)."""
    tc = tasks.TaskConfig(kind="wang_additive", n_train=n, n_test=1, length=L,
                          input_dim=c1.INPUT_DIM, target="all")
    x = tasks.sample_inputs(tc, _key(s), n, {"eps_x": 1.0}, dtype=jnp.float64)
    tp = tasks.target_params(tc, jax.random.fold_in(_key(s), 1), {"eps_x": 1.0},
                             dtype=jnp.float64)
    return np.asarray(x), np.asarray(tasks.target_values(tc, tp, x))[:, :, 0]


def _lag_y(x: np.ndarray, lags: tuple[int, ...], s: int) -> np.ndarray:
    rng = np.random.default_rng([BASE_SEED, s, x.shape[1], len(lags), *lags])
    beta, c = c1.draw_lag_target(rng, lags, c1.INPUT_DIM, 1.0)
    return c * c1.lag_target(x, lags, beta)


def _length_piece(st: Setting) -> dict[str, np.ndarray]:
    cfg = c1.model_config(8)
    n, Lmax = max(st.ns_length), max(st.lengths)
    names = LENGTH_TARGETS + ("random",)
    meas = np.zeros((len(names), st.seeds, len(st.lengths), len(st.ns_length)))
    with jax.enable_x64(True):
        for s in range(st.seeds):
            x, yall = _inputs_and_additive(Lmax, n, s)
            yr = np.random.default_rng([BASE_SEED, s, 99]).normal(size=n)
            for j, L in enumerate(st.lengths):
                _, H = infinite_kernels(cfg, x, lengths1=np.full(n, L))
                H = np.asarray(H)
                xl = x[:, :L]
                Y = np.stack([yall[:, L - 1], _lag_y(xl, (0, 1), s), _lag_y(xl, (0, L - 1), s),
                              yr], 1)
                for i, m in enumerate(st.ns_length):
                    meas[:, s, j, i] = c1.complexity(H[:m, :m], Y[:m])
    return {"measure": meas, "lengths": np.asarray(st.lengths), "ns": np.asarray(st.ns_length)}


def _phase_piece(st: Setting) -> dict[str, np.ndarray]:
    cfg = c1.model_config(8)
    n, L = max(st.ns), PHASE_LENGTH
    cells = phase_cells(st)
    meas = np.zeros((len(cells) + 1, st.seeds, len(st.ns)))     # cells, then random labels
    add = np.zeros((st.seeds, len(st.ns)))
    loss = np.zeros((st.seeds, len(st.ns)))
    zero_loss = np.zeros((st.seeds,))
    with jax.enable_x64(True):
        for s in range(st.seeds):
            x, yall = _inputs_and_additive(L, n + st.n_test, s)
            x, xt, y, yt = x[:n], x[n:], yall[:n, -1], yall[n:, -1]
            _, H = infinite_kernels(cfg, x)
            _, Ht = infinite_kernels(cfg, xt, x)
            H, Ht = np.asarray(H), np.asarray(Ht)
            Y = np.stack([_lag_y(x, cell_lags(N, l0), s) for N, l0 in cells]
                         + [np.random.default_rng([BASE_SEED, s, 98]).normal(size=n)], 1)
            zero_loss[s] = ramp_loss(0.0, yt).mean()
            for i, m in enumerate(st.ns):
                meas[:, s, i] = c1.complexity(H[:m, :m], Y[:m])
                add[s, i] = c1.complexity(H[:m, :m], y[:m])
                p = np.asarray(kernel_regression(H[:m, :m], y[:m, None], Ht[:, :m],
                                                 diag_reg=c1.JITTER))[:, 0]
                loss[s, i] = ramp_loss(p, yt).mean()
    return {"measure": meas, "cells": np.asarray(cells), "additive": add, "test_loss": loss,
            "zero_loss": zero_loss, "ns": np.asarray(st.ns)}


def run(results_dir, scale: str = "default") -> None:
    st = SETTINGS[check_scale(scale)]
    out = Path(results_dir) / NAME
    want = settings(scale, st)
    for name, fn in (("length", _length_piece), ("phase", _phase_piece)):
        p = out / f"{name}.npz"
        if not is_done(p, want):
            save_piece(p, want, **fn(st))


def _load(results_dir):
    out = Path(results_dir) / NAME
    want = load_piece(out / "length.npz")[1].get("settings")
    return load_piece(out / "length.npz", want)[0], load_piece(out / "phase.npz", want)[0]


# ----------------------------------------------------------------------------------------------
# figures and claims

def _cell(P, N, l0) -> int:
    return next(i for i, (a, b) in enumerate(P["cells"]) if a == N and b == l0)


def figures(results_dir, fig_dir) -> list[Path]:
    import matplotlib.ticker

    Lp, P = _load(results_dir)
    fig, ax = plots.new_figure(4, width=3.4, height=3.0)
    Ls, ns = Lp["lengths"], P["ns"]
    names = LENGTH_TARGETS + ("random",)
    for k, (name, col) in enumerate(zip(names, plots.width_colors(len(names)))):
        m, se = stats.mean_sem(Lp["measure"][k, :, :, -1])
        ax[0, 0].errorbar(Ls, m, yerr=se, marker="o", color=col, label=name)
    ax[0, 0].set_xscale("log")
    ax[0, 0].set_yscale("log")
    ax[0, 0].set_xticks(Ls, [str(int(v)) for v in Ls])
    ax[0, 0].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax[0, 0].set_xlabel("length L")
    ax[0, 0].set_ylabel(f"complexity at n = {int(Lp['ns'][-1])}")
    ax[0, 0].set_title("growth in L (unit tokens)")
    ax[0, 0].legend(fontsize=6)
    Nv = sorted({int(a) for a, _ in P["cells"]})
    sp = sorted({int(b) for _, b in P["cells"]})
    grid = np.full((len(Nv), len(sp)), np.nan)
    slope = np.full((len(Nv), len(sp)), np.nan)
    for i, (N, l0) in enumerate(P["cells"]):
        a, b = Nv.index(int(N)), sp.index(int(l0))
        grid[a, b] = P["measure"][i, :, -1].mean()
        slope[a, b] = stats.fit_power_law(ns, P["measure"][i], n_boot=50).slope
    for axx, g, title, cmap in ((ax[0, 1], grid, f"complexity at n = {int(ns[-1])}", "viridis"),
                                (ax[0, 2], slope, "log-log slope of c vs n", "coolwarm")):
        im = axx.imshow(g, origin="lower", cmap=cmap, aspect="auto")
        for a in range(len(Nv)):
            for b in range(len(sp)):
                if np.isfinite(g[a, b]):
                    axx.text(b, a, f"{g[a, b]:.2f}", ha="center", va="center", fontsize=6)
        axx.set_xticks(range(len(sp)), [str(v) for v in sp])
        axx.set_yticks(range(len(Nv)), [str(v) for v in Nv])
        axx.set_xlabel("span l0")
        axx.set_ylabel("variables N")
        axx.set_title(title + f" (L = {PHASE_LENGTH})")
        axx.grid(False)
        fig.colorbar(im, ax=axx, shrink=0.8)
    b = wshc_bound(P["additive"].mean(0), ns)
    ax[0, 3].plot(ns, b, "o-", label="bound sqrt2 c + 3 sqrt(ln(6/d)/2n)")
    m, se = stats.mean_sem(P["test_loss"])
    ax[0, 3].errorbar(ns, m, yerr=se, marker="s", label="kernel regression test loss")
    ax[0, 3].axhline(1.0, color="k", lw=0.8, ls=":", label="loss range (vacuous)")
    ax[0, 3].axhline(P["zero_loss"].mean(), color="gray", lw=0.8, ls="--", label="zero predictor")
    ax[0, 3].set_xscale("log")
    ax[0, 3].set_xticks(ns, [str(int(v)) for v in ns])
    ax[0, 3].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax[0, 3].set_xlabel("training samples n")
    ax[0, 3].set_ylabel("min(|f - y|, 1)")
    ax[0, 3].set_title(f"bound vs test loss (additive, L = {PHASE_LENGTH})")
    ax[0, 3].legend(fontsize=6)
    return plots.save(fig, Path(fig_dir) / NAME)


def claims(results_dir) -> list[Claim]:
    Lp, P = _load(results_dir)
    Ls, nL, ns = Lp["lengths"], int(Lp["ns"][-1]), P["ns"]
    out = []
    parts, verdicts = [], []
    for k, name in enumerate(LENGTH_TARGETS):
        c = Lp["measure"][k, :, :, -1]                              # (S, L)
        est, ci = model_comparison(Ls, np.log(c))
        p = stats.fit_power_law(Ls, c)
        verdicts.append(stats.verdict(est, ci, -math.inf, -1e-12))
        parts.append(f"{name} {fmt_interval(est, ci, 2, signed=True)} (c = "
                     f"{c.mean(0)[0]:.2f} .. {c.mean(0)[-1]:.2f}, L^{p.slope:.2f})")
    cr = Lp["measure"][-1, :, :, -1].mean(0)
    out.append(Claim(
        NAME, f"complexity grows polynomially, not exponentially, in L (unit tokens; L = "
        f"{', '.join(str(int(v)) for v in Ls)}; random labels' c = {cr[0]:.2f} .. {cr[-1]:.2f}: "
        f"where a target's c nears that level at n = {nL} it can no longer grow, so the top of the "
        f"L grid tests the shape weakly)",
        f"log10(SSE power law / SSE exponential) of ln c(L) at n={nL}", "; ".join(parts), "< 0 "
        "for each", stats.combine(verdicts)))
    cells = [tuple(int(v) for v in cl) for cl in P["cells"]]
    small = [i for i, (N, l0) in enumerate(cells) if N <= 2 or l0 <= 1]
    fits = {i: stats.fit_power_law(ns, P["measure"][i]) for i in small}
    worst = max(small, key=lambda i: fits[i].slope)
    out.append(Claim(
        NAME, f"bounded in n when N or l0 is small ({len(small)} cells with N <= 2 or l0 <= 1, "
        f"L = {PHASE_LENGTH}; worst cell N={cells[worst][0]}, l0={cells[worst][1]})",
        "log-log slope of complexity vs n (worst cell)",
        f"{fmt_fit(fits[worst], signed=True)} (random labels "
        f"{stats.fit_power_law(ns, P['measure'][-1]).slope:+.3f})", f"every slope <= {SLOPE_BOUND}",
        stats.combine([stats.at_most(f.slope, f.ci95, SLOPE_BOUND) for f in fits.values()])))
    Nm, lm = max(N for N, _ in cells), max(l0 for _, l0 in cells)
    a, b, d = (P["measure"][_cell(P, *c)][:, -1] for c in ((Nm, lm), (2, lm), (Nm, Nm - 1)))
    est, ci = stats.bootstrap_seeds(lambda u, v, w: u / max(v, w), [a, b, d])
    out.append(Claim(
        NAME, f"the hard corner is N and l0 both large (c(N={Nm}, l0={lm}) = {a.mean():.3f} vs "
        f"c(2, {lm}) = {b.mean():.3f}, c({Nm}, {Nm - 1}) = {d.mean():.3f}; one target function "
        f"per seed and cell, and ||beta|| fixed, so each variable's share of the argument falls "
        f"like 1/N)",
        f"c(N_max, l0_max) / max(c(2, l0_max), c(N_max, N_max - 1)) at n={int(ns[-1])}",
        fmt_interval(est, ci), "> 1", stats.verdict(est, ci, 1 + 1e-12, math.inf)))
    bd = lambda c: float(wshc_bound(c, ns[-1]))
    add, loss = P["additive"][:, -1], P["test_loss"][:, -1]
    est, ci = stats.bootstrap_seeds(lambda c, l: bd(c) - l, [add, loss])
    out.append(Claim(
        NAME, f"the bound holds against kernel regression (additive, L = {PHASE_LENGTH}; bound "
        f"{bd(add.mean()):.3f}, test loss {loss.mean():.3f}, zero predictor "
        f"{P['zero_loss'].mean():.3f})", f"bound - test loss min(|f - y|, 1) at n={int(ns[-1])}",
        fmt_interval(est, ci), ">= 0", stats.at_least(est, ci, 0.0), role="control"))
    est, ci = stats.bootstrap_seeds(bd, [add])
    below = [int(n) for n, v in zip(ns, wshc_bound(P["additive"].mean(0), ns)) if v < 1]
    out.append(Claim(
        NAME, "the generalisation bound is non-vacuous (constants assumed: sqrt(2 y^T H^-1 y / n) "
        "with H at unit mean diagonal + 3 sqrt(ln(6/delta)/(2n)), delta = 0.05; first n with "
        f"bound < 1: {below[0] if below else 'none'})",
        f"bound at n={int(ns[-1])} (additive, L = {PHASE_LENGTH})", fmt_interval(est, ci), "< 1",
        stats.verdict(est, ci, -math.inf, 1 - 1e-12), role="extra"))
    return out
