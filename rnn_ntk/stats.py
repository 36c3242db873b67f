"""Agreement statistics for the experiments: power-law and linear fits with uncertainties, verdicts.

Everything here is plain numpy (no JAX): it runs on stored results.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

__all__ = ["Fit", "fit_line", "fit_power_law", "mean_sem", "verdict", "at_most", "at_least", "spearman",
           "bootstrap_seeds", "fit_rate", "combine"]


@dataclasses.dataclass(frozen=True)
class Fit:
    """A least-squares line y = slope * x + intercept, with the slope's standard error and a 95%
    interval (from seeds when the fit had them, else from the residuals)."""

    slope: float
    intercept: float
    slope_se: float
    r2: float
    ci95: tuple[float, float]

    def __str__(self) -> str:
        return f"{self.slope:.3f} ± {self.slope_se:.3f}"


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"fit needs two 1-D arrays of equal length, got {x.shape} and {y.shape}")
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("fit needs at least two distinct x values")
    xm, ym = x.mean(), y.mean()
    sxx = np.sum((x - xm) ** 2)
    slope = float(np.sum((x - xm) * (y - ym)) / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (slope * x + intercept)
    dof = x.size - 2
    se = float(np.sqrt(np.sum(resid ** 2) / dof / sxx)) if dof > 0 else float("nan")
    sst = np.sum((y - ym) ** 2)
    r2 = float(1 - np.sum(resid ** 2) / sst) if sst > 0 else 1.0
    return slope, intercept, se, r2


def _ols_slopes(x: np.ndarray, y_BX: np.ndarray) -> np.ndarray:
    """The OLS slope of each row of ``y_BX`` (B, X) on ``x`` (X,): :func:`_ols`'s slope, row by
    row, with the same reductions (bit-identical; the seed bootstrap's B fits at once)."""
    xm, ym = x.mean(), y_BX.mean(axis=1, keepdims=True)
    sxx = np.sum((x - xm) ** 2)
    return np.sum((x - xm) * (y_BX - ym), axis=1) / sxx


def fit_line(x: Sequence[float], y: Sequence[float]) -> Fit:
    """Ordinary least squares of y on x; 95% interval slope ± 1.96 se (se from residuals)."""
    slope, intercept, se, r2 = _ols(np.asarray(x), np.asarray(y))
    return Fit(slope, intercept, se, r2, (slope - 1.96 * se, slope + 1.96 * se))


def fit_power_law(x: Sequence[float], y_SX: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> Fit:
    """Fit y ~ C x^slope on log-log axes.

    ``y_SX`` is (X,) for one curve, or (S, X) for S seeds: then the fit is to the mean over seeds,
    and the slope's uncertainty is a bootstrap over seeds (resampling whole seeds), so it reflects
    the seed-to-seed spread rather than the residuals. Non-positive values are an error.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y_SX, np.float64)
    if np.any(x <= 0) or np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("power-law fit needs positive, finite x and y")
    if y.ndim == 1:
        slope, intercept, se, r2 = _ols(np.log(x), np.log(y))
        return Fit(slope, intercept, se, r2, (slope - 1.96 * se, slope + 1.96 * se))
    lx = np.log(x)
    slope, intercept, _, r2 = _ols(lx, np.log(y.mean(axis=0)))
    rng = np.random.default_rng(seed)
    S = y.shape[0]
    idx = np.stack([rng.integers(0, S, S) for _ in range(n_boot)])     # (B, S): one draw per loop,
    boots = _ols_slopes(lx, np.log(y[idx].mean(axis=1)))               # as the RNG stream was used
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Fit(slope, intercept, float(boots.std(ddof=1)), r2, (float(lo), float(hi)))


def mean_sem(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean along ``axis`` (NaNs ignored)."""
    v = np.asarray(values, np.float64)
    n = np.sum(np.isfinite(v), axis=axis)
    mean = np.nanmean(v, axis=axis)
    sd = np.nanstd(v, axis=axis, ddof=1) if v.shape[axis] > 1 else np.zeros_like(mean)
    return mean, sd / np.sqrt(np.maximum(n, 1))


def verdict(estimate: float, interval: tuple[float, float], lo: float = -math.inf,
            hi: float = math.inf) -> str:
    """The verdict of a criterion ``lo <= statistic <= hi`` on a measured statistic, symmetric in
    its uncertainty: 'agrees' when the whole 95% interval (with the estimate) lies inside [lo, hi],
    'disagrees' when it lies wholly outside, 'inconclusive' when it straddles a bound or anything
    is not finite-or-infinite (NaN).

    One-sided criteria ("at most", "does not grow") take lo = -inf (:func:`at_most`), "at least"
    takes hi = inf (:func:`at_least`): an upper bound agrees only when the whole interval is below
    it and disagrees only when the whole interval is above it.

    Args:
      estimate: the point estimate.
      interval: its (low, high) 95% interval.
      lo, hi: the criterion's bounds (lo <= hi; either may be infinite).

    Returns:
      'agrees', 'disagrees' or 'inconclusive'.
    """
    if not lo <= hi:
        raise ValueError(f"criterion needs lo <= hi, got [{lo}, {hi}]")
    a, b = (float(v) for v in interval)
    est = float(estimate)
    if math.isnan(est) or math.isnan(a) or math.isnan(b):
        return "inconclusive"
    a, b = min(a, b, est), max(a, b, est)
    if lo <= a and b <= hi:
        return "agrees"
    if b < lo or a > hi:
        return "disagrees"
    return "inconclusive"


def at_most(estimate: float, interval: tuple[float, float], bound: float) -> str:
    """:func:`verdict` of the one-sided criterion ``statistic <= bound`` (an upper bound)."""
    return verdict(estimate, interval, -math.inf, bound)


def at_least(estimate: float, interval: tuple[float, float], bound: float) -> str:
    """:func:`verdict` of the one-sided criterion ``statistic >= bound`` (a lower bound)."""
    return verdict(estimate, interval, bound, math.inf)


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties): Pearson correlation of the ranks."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"spearman needs two 1-D arrays of equal length >= 2, got {a.shape}, {b.shape}")

    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(v.size)
        r[order] = np.arange(v.size, dtype=np.float64)
        for u in np.unique(v):                       # average ranks over ties
            idx = v == u
            r[idx] = r[idx].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den > 0 else float("nan")


def bootstrap_seeds(fn: Callable[..., float], arrays: Sequence[np.ndarray], n_boot: int = 1000,
                    seed: int = 0) -> tuple[float, tuple[float, float]]:
    """fn(*[a.mean(0) for a in arrays]) and its 95% percentile interval from ``n_boot`` draws that
    resample the leading (seed) axis of each array independently (non-finite draws are dropped;
    NaN interval if none is finite)."""
    est = fn(*[np.mean(a, axis=0) for a in arrays])
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        vals.append(fn(*[np.mean(a[rng.integers(0, a.shape[0], a.shape[0])], axis=0)
                         for a in arrays]))
    vals = np.asarray(vals)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return est, (float("nan"), float("nan"))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return est, (float(lo), float(hi))


def fit_rate(x: Sequence[float], y_SX: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> Fit:
    """Per-unit-x slope of ln(seed-mean y) against x: a growth (or decay) rate y ~ C e^(slope x).

    The same fit and seed bootstrap as :func:`fit_power_law` (a line in ln y vs x is a power law
    in e^x); ``y_SX`` is (X,) or (S, X) for S seeds, positive and finite."""
    return fit_power_law(np.exp(np.asarray(x, np.float64)), y_SX, n_boot=n_boot, seed=seed)


def combine(verdicts: Sequence[str]) -> str:
    """One verdict from several: 'agrees' when all agree, 'disagrees' when any disagrees,
    'inconclusive' otherwise (also for an empty list)."""
    verdicts = list(verdicts)
    if verdicts and all(v == "agrees" for v in verdicts):
        return "agrees"
    if any(v == "disagrees" for v in verdicts):
        return "disagrees"
    return "inconclusive"
