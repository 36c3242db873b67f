"""Kernel convergence: finite-width NTK and NNGP approach the infinite-width kernels like m^-1/2.

    rnn-ntk reproduce kernel_convergence [--scale ci|default|large] [--results DIR] [--figures DIR]

What is measured
----------------
Fixed inputs x (n sequences of T tokens, d = 4, tokens iid N(0, I)); the network of
rnn-kernels.md section 1 (all groups trainable, s_w = 1, s_u = 1, s_b = 0.3, s_v = 1) for each
series (activation, readout) in SERIES. For each width m, S independent draws of the parameters
(keys fold_in(key(BASE_SEED), m) split S ways), float64 throughout. K_inf: the infinite-width
kernels (rnn_ntk.kernels.infinite). Relative Frobenius error e(K) = ||K - K_inf||_F / ||K_inf||_F.

* NTK, single draw: e(NTK_m(seed)) for every seed; the plotted curve is its mean over the S seeds,
  i.e. the expected single-draw error (its fluctuations are O(m^-1/2); the bias of the finite-
  width mean is O(1/m), negligible beside it at these widths).
* NNGP, single draw given the hidden layer: (s_v^2 / m) <hbar(x), hbar(x')> = E_v[f(x) f(x')]
  (the output covariance of one draw of W, U, b, averaged exactly over the Gaussian readout v;
  computed as the v-only empirical NTK of the same draw). Same statistics as the NTK.
* For contrast, the error of the mean over the S draws of the empirical NNGP f(x) f(x')^T / k
  (rnn_ntk.kernels.empirical.empirical_nngp): one draw of f f^T fluctuates by O(1) at any width
  (f is a Gaussian-process sample), so this error sits at a Monte-Carlo floor ~ S^-1/2 and does
  not fall with m. The error of the S-draw mean NTK is also stored (it falls like (S m)^-1/2).

Slopes: stats.fit_power_law of the per-seed errors (S x widths) against m on log-log axes; the
uncertainty is a bootstrap over seeds (whole seeds resampled), reported as ± one standard error
and a 95% interval.

Agreement criterion (fixed before the runs): for every series, the fitted slope of the
single-draw NTK error and of the single-draw conditional NNGP error lies in [-0.65, -0.35]
(two-sided: the m^-1/2 rate is a statement of equality; stats.verdict agrees only when the whole
95% interval lies in the band).

Role: every row is a *control* (RESULTS.md column "kind"). None of the papers reproduced here
states this rate as its claim; it checks the set-up every other experiment rests on (the empirical
kernels of rnn_ntk.kernels.empirical and the infinite-width recursions of rnn_ntk.kernels.infinite
describe the same network, and finite widths sit at the expected O(m^-1/2) distance from the
limit). The erf series is a control of the activation as well (the papers' network is ReLU).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import plots, stats
from rnn_ntk.kernels.empirical import empirical_nngp, empirical_ntk
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.model import RNNConfig, Scales, init_params
from rnn_ntk.experiments.protocol import is_done, not_finished, save_piece
from rnn_ntk.reproduce import Claim, check_scale, load_arrays

NAME = "kernel_convergence"
TITLE = "Empirical NTK and NNGP converge to the infinite-width kernels like width^-1/2"

BASE_SEED = 20240
INPUT_DIM = 4
SERIES = (("relu", "last"), ("erf", "last"), ("relu", "all"))
CRITERION = (-0.65, -0.35)


class Setting(NamedTuple):
    widths: tuple[int, ...]
    seeds: int
    seed_chunk: int       # draws held in memory at once
    n: int
    length: int
    pad: bool = False     # run every width zero-padded to the largest (one compilation per series)


SETTINGS = {
    "ci": Setting(widths=(16, 32, 64), seeds=4, seed_chunk=4, n=3, length=3, pad=True),
    "default": Setting(widths=(64, 128, 256, 512, 1024, 2048, 4096), seeds=24, seed_chunk=8, n=8,
                       length=5),
    "large": Setting(widths=(64, 128, 256, 512, 1024, 2048, 4096, 8192), seeds=64, seed_chunk=8,
                     n=16, length=10),
}


def model_config(activation: str, readout: str, width: int) -> RNNConfig:
    return RNNConfig(width=width, input_dim=INPUT_DIM, activation=activation, readout=readout,
                     sigma_w=1.0, sigma_u=1.0, sigma_b=0.3, sigma_v=1.0)


def inputs(st: Setting) -> jax.Array:
    return jax.random.normal(jax.random.fold_in(jax.random.key(BASE_SEED), 0),
                             (st.n, st.length, INPUT_DIM), jnp.float64)


def relative_errors(K_S: np.ndarray, K_inf: np.ndarray) -> np.ndarray:
    """||K_s - K_inf||_F / ||K_inf||_F for each leading index s."""
    diff = np.asarray(K_S, np.float64) - np.asarray(K_inf, np.float64)[None]
    return np.linalg.norm(diff.reshape(diff.shape[0], -1), axis=1) / np.linalg.norm(K_inf)


def measure(activation: str, readout: str, m: int, st: Setting) -> dict[str, np.ndarray]:
    """Errors at width m: per-seed NTK and conditional-NNGP errors, and the S-draw-mean errors."""
    M = max(st.widths) if st.pad else m          # array width (units >= m are exactly inert)
    cfg = model_config(activation, readout, M)
    sc = Scales(cfg.sigma_w, cfg.sigma_u, cfg.sigma_b, cfg.sigma_v, float(m))
    x = inputs(st)
    nngp_inf, ntk_inf = (np.asarray(a) for a in infinite_kernels(cfg, x))
    keys = jax.random.split(jax.random.fold_in(jax.random.key(BASE_SEED), m), st.seeds)
    ntk_S, nngp_v_S, ff_S = [], [], []
    for c in range(0, st.seeds, st.seed_chunk):
        params = jax.vmap(lambda k: init_params(cfg, k, jnp.float64, array_width=M, width=m))(
            keys[c:c + st.seed_chunk])
        ntk_S.append(np.asarray(empirical_ntk(cfg, params, x, scales=sc)))
        nngp_v_S.append(np.asarray(empirical_ntk(cfg.replace(trainable=("v",)), params, x,
                                                 scales=sc)))
        ff_S.append(np.asarray(empirical_nngp(cfg, params, x, scales=sc)))
        del params
    ntk_S, nngp_v_S, ff_S = (np.concatenate(a) for a in (ntk_S, nngp_v_S, ff_S))
    return {"err_ntk": relative_errors(ntk_S, ntk_inf),
            "err_nngp_v": relative_errors(nngp_v_S, nngp_inf),
            "err_ntk_mean": relative_errors(ntk_S.mean(axis=0, keepdims=True), ntk_inf),
            "err_ff_mean": relative_errors(ff_S.mean(axis=0, keepdims=True), nngp_inf)}


def _piece_path(out: Path, activation: str, readout: str, m: int) -> Path:
    return out / f"{activation}_{readout}_m{m}.npz"


def _settings_meta(st: Setting, scale: str) -> dict:
    return {"scale": scale, **{k: list(v) if isinstance(v, tuple) else v
                               for k, v in st._asdict().items()}}


def run(results_dir: str | Path, scale: str = "default") -> None:
    """Measure every (series, width); finished pieces with the same settings are skipped."""
    st = SETTINGS[check_scale(scale)]
    out = Path(results_dir) / NAME
    meta = _settings_meta(st, scale)
    with jax.enable_x64(True):
        for activation, readout in SERIES:
            for m in st.widths:
                path = _piece_path(out, activation, readout, m)
                if is_done(path, meta):
                    continue
                arrays = measure(activation, readout, m, st)
                save_piece(path, meta, {"activation": activation, "readout": readout, "width": m},
                           **arrays)


def _load(results_dir: str | Path) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """{(activation, readout): {'widths': (X,), 'err_ntk': (S, X), ...}} from stored pieces: those
    made with the settings of the last piece written (another scale's leftovers are ignored); every
    piece of that run must be stored (an interrupted run raises FileNotFoundError)."""
    out = Path(results_dir) / NAME
    paths = sorted(out.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)
    if not paths:
        raise FileNotFoundError(f"no stored results under {out}; run the experiment first")
    loaded = [load_arrays(p) for p in paths]
    st = loaded[-1][1]["settings"]
    pieces: dict[tuple[str, str], list] = {}
    for arrays, meta in loaded:
        if meta["settings"] == st:
            pieces.setdefault((meta["activation"], meta["readout"]), []).append(
                (meta["width"], arrays))
    missing = len(SERIES) * len(st["widths"]) - sum(len(rows) for rows in pieces.values())
    if missing > 0:
        raise not_finished(f"{missing} pieces", NAME, st["scale"], out)
    res = {}
    for key, rows in sorted(pieces.items(), key=lambda kv: SERIES.index(kv[0])
                            if kv[0] in SERIES else len(SERIES)):
        rows.sort(key=lambda r: r[0])
        res[key] = {"widths": np.array([w for w, _ in rows], np.float64)}
        for name in rows[0][1]:
            res[key][name] = np.stack([a[name] for _, a in rows], axis=1)   # (S or 1, X)
    return res


def fits(results_dir: str | Path) -> dict[tuple[str, str, str], stats.Fit]:
    """Power-law fits of the single-draw errors: {(activation, readout, 'ntk'|'nngp'): Fit}."""
    res = _load(results_dir)
    out = {}
    for (act, ro), r in res.items():
        out[(act, ro, "ntk")] = stats.fit_power_law(r["widths"], r["err_ntk"])
        out[(act, ro, "nngp")] = stats.fit_power_law(r["widths"], r["err_nngp_v"])
    return out


def figures(results_dir: str | Path, fig_dir: str | Path) -> list[Path]:
    res = _load(results_dir)
    fit = fits(results_dir)
    fig, axes = plots.new_figure(2, 1, width=4.2, height=3.4)
    colors = plots.width_colors(len(res))
    panels = (("ntk", "err_ntk", "err_ntk_mean", "NTK"), ("nngp", "err_nngp_v", "err_ff_mean", "NNGP"))
    for ax, (kind, single, mean_key, label) in zip(axes[0], panels):
        for col, ((act, ro), r) in zip(colors, res.items()):
            w = r["widths"]
            mean, sem = stats.mean_sem(r[single])
            f = fit[(act, ro, kind)]
            ax.errorbar(w, mean, yerr=sem, fmt="o", ms=3.5, color=col, capsize=2,
                        label=f"{act}, '{ro}': slope {f.slope:.3f} ± {f.slope_se:.3f}")
            ax.plot(w, np.exp(f.intercept) * w ** f.slope, "-", color=col, lw=1)
            S = r[single].shape[0]
            first = (act, ro) == next(iter(res))
            dotted = (f"dotted: error of the mean of {S} draws" if kind == "ntk" else
                      f"dotted: mean of {S} draws of f f$^T$ (Monte-Carlo floor)")
            ax.plot(w, r[mean_key][0], ":", marker="x", ms=3, color=col, lw=1,
                    label=dotted if first else None)
        w = next(iter(res.values()))["widths"]
        ref = next(iter(res.values()))[single].mean(axis=0)[0] * (w / w[0]) ** -0.5
        ax.plot(w, ref, "--", color="grey", lw=0.9, label=r"$\propto m^{-1/2}$")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width m")
        ax.set_ylabel(r"$\|K_m - K_\infty\|_F / \|K_\infty\|_F$")
        ax.set_title("NTK, one draw (mean ± sem over draws)" if kind == "ntk" else
                     r"NNGP, one draw given $h$: $(s_v^2/m)\langle\bar h,\bar h'\rangle$")
        ax.legend(fontsize=6)
    return plots.save(fig, Path(fig_dir) / NAME)


def claims(results_dir: str | Path) -> list[Claim]:
    out = []
    lo, hi = CRITERION
    for (act, ro, kind), f in fits(results_dir).items():
        what = ("empirical NTK (one draw)" if kind == "ntk"
                else "finite-width NNGP given the hidden layer (one draw)")
        out.append(Claim(
            experiment=NAME,
            claim=f"{what} -> infinite-width {kind.upper()} like m^-1/2 ({act}, readout '{ro}')",
            statistic="log-log slope of the relative Frobenius error vs width",
            value=f"{f.slope:.3f} ± {f.slope_se:.3f} (95% [{f.ci95[0]:.3f}, {f.ci95[1]:.3f}])",
            criterion=f"slope in [{lo}, {hi}]",
            verdict=stats.verdict(f.slope, f.ci95, lo, hi),
            role="control"))
    return out
