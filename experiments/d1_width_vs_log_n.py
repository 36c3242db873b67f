"""D1: the width needed grows like log n (Cayci & Eryilmaz 2024).

Claim of the paper: for a diagonal RNN in the kernel regime (fixed output signs, symmetric
initialisation so the initial output is 0, projected GD onto per-unit balls of radius rho/sqrt(m)
around the initialisation) and a target in the kernel's function class, the width needed for an
excess-risk guarantee after n samples grows only like log n (m = O(log n) up to the accuracy
terms): far slower than sqrt(n).

Setup (what this module measures)
---------------------------------
* Model: diagonal Elman RNN (``recurrence='diagonal'``), tanh, read-out 'last', d = 8, T = 5,
  s_w = 0.5 (below the Lipschitz cutoff), s_u = sqrt(d) (unit input drive), s_b = 0, s_v = 1;
  trainable {W, U} (the read-out v is fixed). ``init='symmetric'``: units come in pairs with the
  same incoming weights and opposite read-out rows, so the initial output is exactly 0.
  Output signs: the paper fixes c_i = +-1; the engine draws v_i ~ N(0, 1) and pairs them as
  (v, -v). With v frozen the W/U-NTK is (1/m) sum_i v_i^2 <d h_i, d h_i'>, which tends to the
  same infinite-width kernel as with c_i = +-1 (E v_i^2 = 1, v independent of W, U); only the
  per-unit weighting of the finite-width features differs. We take this as sufficient.
* Training: ``rnn_ntk.train.train_many``, full-batch GD ('sgd') on the mean squared error, step
  lr = 1, a fixed budget of ``steps`` steps, ``projection=True`` with proj_radius rho = 16 (each
  unit's (W_i, U_i) stays within rho / sqrt(m) of its initial value).
* Target: the task kind 'teacher' (a random tanh Elman RNN of width 64, teacher s_w = 0.5, output
  normalised to Var y_T ~ 1), label noise std 0.1 on the train labels. NOTE: the engine samples
  its data inside the compiled run from ``tasks.sample_task``, so a target built from the
  student's own NTK features cannot be passed in; the library's teacher has *full* recurrence,
  so it is a smooth fading-memory RNN target, not provably inside the diagonal-RNN kernel's
  RKHS. This is the closest honest version with the engine as it is.
* Excess risk: the test set is clean (noise only on train labels), so the engine's test_loss is
  the MSE against the noiseless target = (noisy test MSE - noise variance) in expectation. It is
  reported relative to the clean target's second moment, which is the test loss at step 0
  (initial output 0): rel_excess = test_loss(final) / test_loss(0).
* m*(n): for each n, the seed-mean rel_excess over the width ladder; m* is the first width at
  which it is <= THRESHOLD, interpolated linearly in (log m, log rel_excess) between the two
  bracketing widths; if the smallest width already meets it, m* = m_min (left-censored, an upper
  bound); if no width does, m* = inf (right-censored). Uncertainties: bootstrap over seeds
  (whole seeds resampled, m*(n) recomputed for every n, fits redone).

Agreement criteria (fixed before the default run; never tuned)
--------------------------------------------------------------
THRESHOLD = 0.1 (excess risk <= 10% of Var y, the brief's example, fixed before the runs).
Fits use the n with finite m*; with fewer than 3 such n both claims are inconclusive; if m* is
left-censored at every n (it does not move) both are inconclusive.
D1.1  m* linear in log n: slope b of the OLS fit m* = a + b ln n, with a 95% seed-bootstrap
      interval, and SSE ratio q = SSE(m* ~ ln n) / SSE(m* ~ sqrt n) (both two-parameter fits).
      agrees: b's interval > 0 and q < 1. disagrees: b's interval < 0 (m* falls with n), or
      b's interval > 0 and q > 1 (sqrt n fits better). inconclusive otherwise.
D1.2  growth clearly below sqrt(n): exponent p of the log-log OLS fit of m* on n (95% seed
      bootstrap). agrees: 0 < p_lo and p_hi < 0.5. disagrees: p_lo >= 0.5 (sqrt-n growth or
      faster) or p_hi < 0 (m* falls). inconclusive otherwise (m* does not move detectably).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rnn_ntk import model, plots, stats, tasks, train
from rnn_ntk.reproduce import Claim, check_scale, load_arrays, save_arrays

NAME = "d1_width_vs_log_n"
TITLE = ("Width needed vs n (Cayci & Eryilmaz 2024): smallest width m*(n) of a projected-GD "
         "diagonal tanh RNN reaching excess risk <= 0.1 Var y, fitted against log n and sqrt n")

INPUT_DIM = 8
LENGTH = 5
SIGMA_W = 0.5
TEACHER_WIDTH = 64
TEACHER_SIGMA_W = 0.5
LABEL_NOISE = 0.1
PROJ_RADIUS = 16.0
LR = 1.0
THRESHOLD = 0.1
BASE_SEED = 1
N_BOOT = 1000


class Setting(NamedTuple):
    """Sizes of one scale."""

    n_grid: tuple[int, ...]
    widths: tuple[int, ...]
    seeds: int
    n_test: int
    steps: int
    log_every: int


SETTINGS = {
    # two n only (one compiled program per n): the fits and verdicts are exercised by the
    # tests on synthetic stores; ci checks the pipeline
    "ci": Setting(n_grid=(16, 32), widths=(4, 8, 16), seeds=2, n_test=64, steps=10,
                  log_every=5),
    "default": Setting(n_grid=(100, 200, 400, 800), widths=(8, 16, 32, 64, 128, 256), seeds=2,
                       n_test=1000, steps=300, log_every=50),
    "large": Setting(n_grid=(100, 200, 400, 800, 1400, 2000),
                     widths=(8, 16, 32, 64, 128, 256, 512, 1024), seeds=8, n_test=4000,
                     steps=1000, log_every=100),
}


# ----------------------------------------------------------------------------------------------
# statistics (public: tested on synthetic data in tests/experiments/test_d1_width_vs_log_n.py)

def crossing_width(widths: np.ndarray, risk_M: np.ndarray, threshold: float) -> float:
    """Smallest width at which ``risk_M`` (one value per width, increasing widths) is <= threshold.

    Between the first width m_j meeting it and m_{j-1} the crossing is interpolated linearly in
    (log m, log risk). Returns widths[0] if the first width already meets it (left-censored) and
    inf if none does (right-censored). Non-finite risks count as not meeting it."""
    w = np.asarray(widths, np.float64)
    r = np.asarray(risk_M, np.float64)
    if w.ndim != 1 or r.shape != w.shape:
        raise ValueError(f"widths and risk must be 1-D of equal length, got {w.shape}, {r.shape}")
    if np.any(np.diff(w) <= 0) or np.any(w <= 0):
        raise ValueError("widths must be positive and increasing")
    ok = np.isfinite(r) & (r <= threshold)
    if not ok.any():
        return math.inf
    j = int(np.argmax(ok))
    if j == 0:
        return float(w[0])
    r0, r1 = r[j - 1], r[j]
    if not (np.isfinite(r0) and r0 > 0 and r1 > 0) or r0 <= r1:
        return float(w[j])
    f = (math.log(r0) - math.log(threshold)) / (math.log(r0) - math.log(r1))
    return float(math.exp(math.log(w[j - 1]) + f * (math.log(w[j]) - math.log(w[j - 1]))))


def m_star(widths: np.ndarray, risk_SNM: np.ndarray, threshold: float) -> np.ndarray:
    """m*(n) (N,) from the seed mean of rel. excess risks (S, N, M) (see :func:`crossing_width`)."""
    mean_NM = np.mean(np.asarray(risk_SNM, np.float64), axis=0)
    return np.array([crossing_width(widths, mean_NM[i], threshold)
                     for i in range(mean_NM.shape[0])])


class GrowthFits(NamedTuple):
    """Fits of m*(n) over the n with finite m*."""

    n_used: np.ndarray
    m_used: np.ndarray
    log_fit: stats.Fit        # m* = a + b ln n
    sqrt_fit: stats.Fit       # m* = a + b sqrt n
    sse_ratio: float          # SSE(log fit) / SSE(sqrt fit)
    power: stats.Fit          # ln m* = c + p ln n


def _sse(x: np.ndarray, y: np.ndarray, fit: stats.Fit) -> float:
    return float(np.sum((y - (fit.slope * x + fit.intercept)) ** 2))


def growth_fits(n: np.ndarray, mstar: np.ndarray) -> GrowthFits | None:
    """Fits of m* against ln n, sqrt n and (log-log) n, over the n with finite m*; None if
    fewer than 3 such n or m* is constant there."""
    n = np.asarray(n, np.float64)
    m = np.asarray(mstar, np.float64)
    keep = np.isfinite(m)
    if keep.sum() < 3 or np.ptp(m[keep]) == 0:
        return None
    n, m = n[keep], m[keep]
    lf = stats.fit_line(np.log(n), m)
    sf = stats.fit_line(np.sqrt(n), m)
    s_sqrt = _sse(np.sqrt(n), m, sf)
    ratio = _sse(np.log(n), m, lf) / s_sqrt if s_sqrt > 0 else math.inf
    return GrowthFits(n, m, lf, sf, ratio, stats.fit_power_law(n, m))


def bootstrap_growth(widths: np.ndarray, n_grid: np.ndarray, risk_SNM: np.ndarray,
                     threshold: float, n_boot: int = N_BOOT, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Seed bootstrap: (log-fit slopes b (B,), power exponents p (B,)); draws whose fits are
    undefined (< 3 finite m*, or constant m*) give NaN."""
    r = np.asarray(risk_SNM, np.float64)
    S = r.shape[0]
    rng = np.random.default_rng(seed)
    b, p = np.full(n_boot, np.nan), np.full(n_boot, np.nan)
    for k in range(n_boot):
        g = growth_fits(n_grid, m_star(widths, r[rng.integers(0, S, S)], threshold))
        if g is not None:
            b[k], p[k] = g.log_fit.slope, g.power.slope
    return b, p


def interval(draws: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of bootstrap draws over the defined (finite) ones; if more than
    2.5% of the draws are undefined (NaN) the interval is (-inf, inf)."""
    d = np.asarray(draws, np.float64)
    bad = np.mean(~np.isfinite(d))
    if d.size == 0 or bad > 0.025:
        return (-math.inf, math.inf)
    lo, hi = np.percentile(d[np.isfinite(d)], [2.5, 97.5])
    return float(lo), float(hi)


def log_verdict(slope_ci: tuple[float, float], sse_ratio: float) -> str:
    """D1.1: agrees if the ln-n slope interval is > 0 and the ln-n fit has the smaller SSE;
    disagrees if the slope interval is < 0, or > 0 with the sqrt-n fit better; else inconclusive."""
    lo, hi = slope_ci
    if hi < 0:
        return "disagrees"
    if lo > 0:
        return "agrees" if sse_ratio < 1 else "disagrees"
    return "inconclusive"


def power_verdict(p_ci: tuple[float, float]) -> str:
    """D1.2: agrees if 0 < p_lo and p_hi < 0.5; disagrees if p_lo >= 0.5 or p_hi < 0."""
    lo, hi = p_ci
    if lo >= 0.5 or hi < 0:
        return "disagrees"
    if lo > 0 and hi < 0.5:
        return "agrees"
    return "inconclusive"


# ----------------------------------------------------------------------------------------------
# runs

def train_config(st: Setting, n: int) -> train.TrainConfig:
    """The training program of one n: all widths packed at the largest (true width traced)."""
    mc = model.RNNConfig(width=max(st.widths), input_dim=INPUT_DIM, output_dim=1,
                         activation="tanh", readout="last", sigma_w=SIGMA_W,
                         sigma_u=math.sqrt(INPUT_DIM), sigma_b=0.0, sigma_v=1.0,
                         trainable=("W", "U"), recurrence="diagonal")
    tc = tasks.TaskConfig(kind="teacher", n_train=n, n_test=st.n_test, length=LENGTH,
                          input_dim=INPUT_DIM, teacher_width=TEACHER_WIDTH)
    return train.TrainConfig(model=mc, task=tc, steps=st.steps, log_every=st.log_every,
                             init="symmetric", projection=True)


def _meta(st: Setting, scale: str) -> dict[str, Any]:
    consts = dict(d=INPUT_DIM, T=LENGTH, sigma_w=SIGMA_W, teacher_width=TEACHER_WIDTH,
                  teacher_sigma_w=TEACHER_SIGMA_W, label_noise=LABEL_NOISE, rho=PROJ_RADIUS,
                  lr=LR, base_seed=BASE_SEED)
    return json.loads(json.dumps({"scale": scale, **st._asdict(), **consts}))


def _path(out: Path, n: int) -> Path:
    return out / f"n{n}.npz"


def _done(path: Path, meta: dict[str, Any]) -> bool:
    if not path.exists():
        return False
    try:
        _, m = load_arrays(path)
    except Exception:  # unreadable: recompute
        return False
    return m.get("settings") == meta


def _piece(st: Setting, n: int) -> dict[str, np.ndarray]:
    """All (seed, width) runs of one n. Keys depend on the seed only, so every width of a seed
    shares its data and (nested) initial weights, and so does every n (the train set of size n
    is a fresh draw of the same teacher)."""
    cfg = train_config(st, n)
    S, M = st.seeds, len(st.widths)
    keys = train.run_keys(BASE_SEED, np.asarray([[s] for s in range(S) for _ in range(M)]))
    hp = {"lr": LR, "proj_radius": PROJ_RADIUS, "label_noise": LABEL_NOISE,
          "teacher_sigma_w": TEACHER_SIGMA_W,
          "width": np.asarray([float(m) for _ in range(S) for m in st.widths])}
    rec = train.train_many(cfg, keys, hp)
    out = {k: np.asarray(rec[k]).reshape((S, M) + np.asarray(rec[k]).shape[1:])
           for k in ("train_loss", "test_loss", "dtheta_W", "dtheta_U", "diverged")}
    out["widths"] = np.asarray(st.widths)
    out["steps"] = np.arange(cfg.n_logs) * st.log_every
    return out


def run(results_dir: str | Path, scale: str = "default") -> None:
    """One piece per n (all widths and seeds); finished pieces are skipped."""
    st = SETTINGS[check_scale(scale)]
    out = Path(results_dir) / NAME
    meta = _meta(st, scale)
    for n in st.n_grid:
        path = _path(out, n)
        if not _done(path, meta):
            save_arrays(path, {"settings": meta, "n": n}, **_piece(st, n))


# ----------------------------------------------------------------------------------------------
# analysis

def _load(results_dir: str | Path) -> dict[str, Any] | None:
    """Stored pieces: n_grid (N,), widths (M,), rel (S, N, M) rel. excess risk, curves."""
    out = Path(results_dir) / NAME
    pieces = []
    for p in sorted(out.glob("n*.npz")):
        a, m = load_arrays(p)
        pieces.append((int(m["n"]), a, m["settings"]))
    if not pieces:
        return None
    pieces.sort(key=lambda t: t[0])
    settings = pieces[0][2]
    pieces = [t for t in pieces if t[2] == settings]
    widths = pieces[0][1]["widths"].astype(np.float64)
    rel = np.stack([a["test_loss"][:, :, -1] / a["test_loss"][:, :, 0] for _, a, _ in pieces],
                   axis=1)
    train_rel = np.stack([a["train_loss"][:, :, -1] / a["test_loss"][:, :, 0]
                          for _, a, _ in pieces], axis=1)
    diverged = np.stack([a["diverged"][:, :, -1] for _, a, _ in pieces], axis=1)
    return {"n_grid": np.asarray([n for n, _, _ in pieces], np.float64), "widths": widths,
            "rel": rel, "train_rel": train_rel, "diverged": diverged, "settings": settings,
            "budget": int(pieces[0][1]["steps"][-1])}


def _analysis(res: dict[str, Any]) -> dict[str, Any]:
    n, w, rel = res["n_grid"], res["widths"], res["rel"]
    ms = m_star(w, rel, THRESHOLD)
    g = growth_fits(n, ms)
    b, p = bootstrap_growth(w, n, rel, THRESHOLD)
    return {"mstar": ms, "fits": g, "b_ci": interval(b), "p_ci": interval(p),
            "left_censored": int(np.sum(ms == w[0])),
            "right_censored": int(np.sum(~np.isfinite(ms)))}


def figures(results_dir: str | Path, fig_dir: str | Path) -> list[Path]:
    res = _load(results_dir)
    if res is None:
        return []
    an = _analysis(res)
    n, w, rel = res["n_grid"], res["widths"], res["rel"]
    paths: list[Path] = []

    fig, axes = plots.new_figure(1, 1, width=6.0, height=3.3)
    ax = axes[0, 0]
    mean, sem = stats.mean_sem(rel, axis=0)
    for i, (c, nn) in enumerate(zip(plots.width_colors(len(n)), n)):
        ax.errorbar(w, mean[i], yerr=sem[i], color=c, marker="o", capsize=2,
                    label=f"n = {int(nn)}: m* " + (f"= {an['mstar'][i]:.3g}" if
                                                      np.isfinite(an['mstar'][i]) else
                                                      f"> {int(w[-1])}"))
    ax.axhline(THRESHOLD, color="k", ls="--", lw=1, label=f"threshold {THRESHOLD:g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width m")
    ax.set_ylabel("excess risk / Var y (clean test)")
    ax.set_title(f"Projected GD, {res['budget']} steps (mean ± sem over "
                 f"{rel.shape[0]} seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    paths += plots.save(fig, Path(fig_dir) / f"{NAME}_risk_vs_width")

    fig, axes = plots.new_figure(1, 1, width=4.4, height=3.3)
    ax = axes[0, 0]
    ms = an["mstar"]
    fin = np.isfinite(ms)
    ax.plot(n[fin], ms[fin], "o", color="k", label="m*(n) (seed-mean risk)")
    if (~fin).any():
        ax.plot(n[~fin], np.full((~fin).sum(), w[-1]), "^", color="C3", mfc="none",
                label=f"no width ≤ {int(w[-1])} meets it")
    g = an["fits"]
    if g is not None:
        nn = np.linspace(n.min(), n.max(), 100)
        lo, hi = an["b_ci"]
        ax.plot(nn, g.log_fit.intercept + g.log_fit.slope * np.log(nn), color="C1",
                label=f"a + b ln n: b = {g.log_fit.slope:.3g} [{lo:.3g}, {hi:.3g}]")
        ax.plot(nn, g.sqrt_fit.intercept + g.sqrt_fit.slope * np.sqrt(nn), color="C3", ls=":",
                label=f"a + b √n (SSE ratio ln/√ = {g.sse_ratio:.2g})")
    ax.axhline(w[0], color="0.6", lw=0.8, ls="--", label=f"smallest width {int(w[0])}")
    ax.set_xscale("log")
    ax.set_xlim(n.min() / 1.2, n.max() * 1.2)
    ax.set_xticks(n, [str(int(v)) for v in n])
    ax.minorticks_off()
    ax.set_xlabel("training set size n (sequences)")
    ax.set_ylabel(f"width m* (risk ≤ {THRESHOLD:g} Var y)")
    ax.set_title("Width needed vs n")
    ax.legend(fontsize=7)
    paths += plots.save(fig, Path(fig_dir) / f"{NAME}_mstar_vs_n")
    return paths


def claims(results_dir: str | Path) -> list[Claim]:
    res = _load(results_dir)
    if res is None:
        return []
    an = _analysis(res)
    n, w = res["n_grid"], res["widths"]
    ms = an["mstar"]
    g = an["fits"]
    ms_txt = ", ".join(f"n={int(a)}: {b:.3g}" for a, b in zip(n, ms))
    cens = (f"; {an['left_censored']} of {len(n)} n already at the smallest width {int(w[0])}, "
            f"{an['right_censored']} never reach it up to {int(w[-1])}")
    moved = g is not None and an["left_censored"] < len(n)
    out = []
    if moved:
        lo, hi = an["b_ci"]
        v1 = log_verdict(an["b_ci"], g.sse_ratio)
        val1 = (f"b = {g.log_fit.slope:.3g} [{lo:.3g}, {hi:.3g}], SSE ratio ln/sqrt = "
                f"{g.sse_ratio:.3g}")
        plo, phi = an["p_ci"]
        v2 = power_verdict(an["p_ci"])
        val2 = f"p = {g.power.slope:.3g} [{plo:.3g}, {phi:.3g}]"
    else:
        v1 = v2 = "inconclusive"
        val1 = val2 = "m* undefined or not moving over the n range"
    r_mean = np.mean(res["rel"], axis=0)
    seen = ", ".join(f"n={int(a)}: {b:.3f} / {c:.3f}"
                     for a, b, c in zip(n, r_mean[:, 0], r_mean[:, -1]))
    what = (f"measured m*(n): {ms_txt}{cens}; seed-mean excess risk / Var y at m={int(w[0])} / "
            f"m={int(w[-1])}: {seen}")
    out.append(Claim(NAME, "D1.1 width needed m*(n) grows linearly in log n (diagonal tanh RNN, "
                           "projected GD, symmetric init, teacher-RNN target + noise 0.1; "
                           + what + ")",
                     "slope b of m* = a + b ln n (95% seed bootstrap); "
                     "SSE(ln n fit)/SSE(sqrt n fit)",
                     val1, "b interval > 0 and SSE ratio < 1", v1))
    out.append(Claim(NAME, "D1.2 growth of m*(n) clearly below sqrt(n) (" + what + ")",
                     "exponent p of m* ~ n^p (log-log OLS, 95% seed bootstrap)", val2,
                     "0 < p interval < 0.5", v2))
    return out
