"""Kernel solvers on Gram matrices in memory or in a store (:func:`rnn_ntk.kernels.gram`), float64.

Every solver needs (K + r I)^-1 applied to some right-hand sides, K the train Gram (n, n) and
r the ridge (``diag_reg * mean(diag K)``, or ``diag_reg`` itself with
``diag_reg_absolute_scale=True``: :mod:`rnn_ntk.dynamics`' convention). Two ways:

- ``solver='direct'``: K is read into memory as float64 and the in-memory functions of
  :mod:`rnn_ntk.dynamics` (``kernel_regression``, ``nngp_posterior``, ``gradient_descent_mse``)
  do the work, under float64: one code path for arrays and stores, and the only one that
  handles 'all'-readout Grams (S + S shapes) and finite training times t. The bare linear solve
  :func:`gram_solve` (which dynamics does not expose) is a Cholesky factorisation (scipy).
- ``solver='cg'``: preconditioned conjugate gradients whose products K V stream the store block
  by block (one block in memory at a time, read straight from its chunk file, cast to float64),
  2-D Grams only. The preconditioner
  is a randomized Nystrom approximation of rank ``rank`` (Frangella, Tropp & Udell, "Randomized
  Nystrom preconditioning", SIAM J. Matrix Anal. Appl. 2023): P = U (L + r I) U^T + (l_min + r)
  (I - U U^T), built from one streamed product K Omega.
- ``solver='auto'`` (default): 'direct' when ``DIRECT_COPIES`` float64 copies of K fit in the
  host memory budget (:func:`rnn_ntk.kernels.empirical.memory_budget`, 40% of available memory),
  i.e. n <= sqrt(budget / (8 * DIRECT_COPIES)); 'cg' otherwise. The crossover is memory, not
  speed: below it the direct solve is also the faster one on this machine for the ridges tried
  (numbers in the README, benchmarks/gram.py).

Gradient flow at a finite time t: direct through dynamics' eigendecomposition; out of core by
Lanczos (full reorthogonalisation) on K + r I, which gives e^{-a K t} r0 and
(e^{-a K t} - I) K^-1 r0 from one Krylov basis per output column (each step one streamed product);
t = infinity (``t=None``) is a solve.

Classification: :func:`svc` fits scikit-learn's ``SVC(kernel='precomputed')`` (in memory).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import jax
import numpy as np

from rnn_ntk import dynamics
from rnn_ntk.kernels.empirical import memory_budget
from rnn_ntk.kernels.gram import StoredGram

__all__ = ["SOLVERS", "DIRECT_COPIES", "direct_max_n", "choose_solver", "matmul", "ridge",
           "gram_solve", "kernel_ridge", "gp_posterior", "gd_mse", "svc", "CGInfo"]

SOLVERS = ("auto", "direct", "cg")
DIRECT_COPIES = 3          # K, its regularised copy and the factorisation, float64


class CGInfo(dict):
    """Diagnostics of a CG solve: ``iterations``, ``residual`` (max relative residual over the
    right-hand sides), ``converged``, ``rank`` (of the preconditioner)."""


def direct_max_n(budget: int | None = None) -> int:
    """The largest n whose Gram is solved directly (DIRECT_COPIES float64 n x n copies fit)."""
    b = memory_budget() if budget is None else budget
    return math.isqrt(max(b, 0) // (8 * DIRECT_COPIES))


def _ndim(k: Any) -> int:
    return k.ndim if isinstance(k, StoredGram) else np.ndim(k)


def _n_of(k: Any) -> int:
    return int(np.shape(k)[0]) if not isinstance(k, StoredGram) else k.shape[0]


def choose_solver(k: Any, solver: str = "auto", budget: int | None = None) -> str:
    """'direct' or 'cg' for train Gram k (see the module docstring)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    if solver != "auto":
        if solver == "cg" and _ndim(k) != 2:
            raise ValueError("solver='cg' needs a 2-D Gram (readout 'last' or 'mean')")
        return solver
    n = math.prod(k.shape[: k.ndim // 2]) if isinstance(k, StoredGram) else \
        math.prod(np.shape(k)[: np.ndim(k) // 2])
    if n <= direct_max_n(budget):
        return "direct"
    if _ndim(k) != 2:
        raise ValueError(f"an 'all'-readout Gram of {n} rows does not fit in memory for a direct "
                         "solve, and CG handles 2-D Grams only")
    return "cg"


def _dense(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def matmul(k: Any, v: Any) -> np.ndarray:
    """k @ v in float64 for a 2-D Gram k (array or :class:`StoredGram`, streamed by blocks) and
    v of shape (n2,) or (n2, c)."""
    v = _dense(v)
    if not isinstance(k, StoredGram):
        return _dense(k) @ v
    if k.ndim != 2:
        raise ValueError("streamed products need a 2-D Gram (readout 'last' or 'mean')")
    if v.shape[0] != k.shape[1]:
        raise ValueError(f"cannot multiply a Gram of shape {k.shape} by shape {v.shape}")
    out = np.zeros((k.shape[0],) + v.shape[1:], np.float64)
    for r, c, blk in k.iter_blocks():
        out[r] += blk.astype(np.float64) @ v[c]
    return out


def _diag(k: Any) -> np.ndarray:
    if not isinstance(k, StoredGram):
        a = _dense(k)
        n = math.prod(a.shape[: a.ndim // 2])
        return np.diagonal(a.reshape(n, n)).copy()
    out = []
    for i in range(-(-k.shape[0] // k.block)):
        blk = k.read_block(i, i)
        side = blk.shape[0] * (blk.shape[1] if k.ndim == 4 else 1)
        out.append(np.diagonal(blk.reshape(side, side)))
    return np.concatenate(out).astype(np.float64)


def ridge(k: Any, diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False) -> float:
    """The ridge r added to the diagonal: diag_reg * mean(diag K), or diag_reg if absolute."""
    if isinstance(diag_reg, bool) or not isinstance(diag_reg, (int, float)) or \
            not math.isfinite(diag_reg) or diag_reg < 0:
        raise ValueError(f"diag_reg must be a finite number >= 0, got {diag_reg!r}")
    return float(diag_reg) if diag_reg_absolute_scale else float(diag_reg) * float(_diag(k).mean())


def _check_square(name: str, k: Any) -> int:
    shape = k.shape if isinstance(k, StoredGram) else np.shape(k)
    p = len(shape) // 2
    if len(shape) not in (2, 4) or tuple(shape[:p]) != tuple(shape[p:]):
        raise ValueError(f"{name} must be square, shape S + S, got {tuple(shape)}")
    return math.prod(shape[:p])


def _nystrom(k: Any, n: int, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Randomized Nystrom approximation K ~ U diag(lam) U^T (one streamed product K Omega)."""
    rng = np.random.default_rng(seed)
    omega, _ = np.linalg.qr(rng.standard_normal((n, rank)))
    y = matmul(k, omega)
    nu = math.sqrt(n) * np.finfo(np.float64).eps * np.linalg.norm(y, 2)
    y_nu = y + nu * omega
    c = np.linalg.cholesky(omega.T @ y_nu)                    # lower: omega^T y_nu = c c^T
    b = np.linalg.solve(c, y_nu.T).T                          # y_nu c^-T
    u, s, _ = np.linalg.svd(b, full_matrices=False)
    return u, np.maximum(s * s - nu, 0.0)


def _cg(k: Any, b: np.ndarray, r: float, *, tol: float, maxiter: int, rank: int, seed: int
        ) -> tuple[np.ndarray, CGInfo]:
    """(K + r I)^-1 b by Nystrom-preconditioned CG, every column at once (b: (n, c))."""
    n = b.shape[0]
    rank = min(rank, n)
    if rank > 0:
        u, lam = _nystrom(k, n, rank, seed)
        scale = (lam[-1] + r) / (lam + r) if (lam[-1] + r) > 0 else np.ones_like(lam)

        def precond(v):
            uv = u.T @ v
            return u @ (scale[:, None] * uv) + v - u @ uv
    else:
        def precond(v):
            return v
    x = np.zeros_like(b)
    res = b.copy()
    z = precond(res)
    p = z.copy()
    rz = np.sum(res * z, axis=0)
    bnorm = np.linalg.norm(b, axis=0)
    bnorm = np.where(bnorm == 0, 1.0, bnorm)
    it, relres = 0, np.linalg.norm(res, axis=0) / bnorm
    while it < maxiter and relres.max() > tol:
        kp = matmul(k, p) + r * p
        pkp = np.sum(p * kp, axis=0)
        alpha = np.where(pkp > 0, rz / np.where(pkp > 0, pkp, 1.0), 0.0)
        x += alpha * p
        res -= alpha * kp
        z = precond(res)
        rz_new = np.sum(res * z, axis=0)
        beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta * p
        rz = rz_new
        it += 1
        relres = np.linalg.norm(res, axis=0) / bnorm
    info = CGInfo(iterations=it, residual=float(relres.max()), converged=bool(relres.max() <= tol),
                  rank=rank)
    if not info["converged"]:
        warnings.warn(f"CG stopped after {it} iterations at relative residual "
                      f"{info['residual']:.2e} > tol {tol:.1e}; raise maxiter, rank or diag_reg",
                      RuntimeWarning, stacklevel=3)
    return x, info


def gram_solve(k_train_train: Any, b: Any, diag_reg: float = 0.0,
          diag_reg_absolute_scale: bool = False, *, solver: str = "auto", tol: float = 1e-10,
          maxiter: int = 2000, rank: int = 100, seed: int = 0, return_info: bool = False) -> Any:
    """(K + r I)^-1 b in float64 for a 2-D train Gram K (array or StoredGram); b (n,) or (n, c).

    ``solver``: 'auto', 'direct' (Cholesky, scipy, dynamics' ridge convention) or 'cg' (streamed,
    Nystrom-preconditioned; ``tol`` relative residual per column, ``maxiter``, ``rank`` of the
    preconditioner, ``seed`` of its sketch). Returns x, or (x, info) with ``return_info``
    (info: CGInfo for 'cg', {} for 'direct').
    """
    n = _check_square("k_train_train", k_train_train)
    if _ndim(k_train_train) != 2:
        raise ValueError("solve needs a 2-D Gram (readout 'last' or 'mean')")
    b = _dense(b)
    if b.shape[0] != n or b.ndim not in (1, 2):
        raise ValueError(f"b must have shape ({n},) or ({n}, c), got {b.shape}")
    r = ridge(k_train_train, diag_reg, diag_reg_absolute_scale)
    which = choose_solver(k_train_train, solver)
    b2 = b.reshape(n, -1)
    if which == "direct":
        import scipy.linalg
        a = np.array(k_train_train, dtype=np.float64)        # a float64 copy, factored in place
        a[np.diag_indices(n)] += r
        try:
            x = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a, lower=True, overwrite_a=True,
                                                               check_finite=False), b2)
        except np.linalg.LinAlgError:
            raise ValueError("K + r I is not positive definite (to working precision): use a "
                             "larger diag_reg") from None
        info: dict = {}
    else:
        x, info = _cg(k_train_train, b2, r, tol=tol, maxiter=maxiter, rank=rank, seed=seed)
    x = x.reshape(b.shape)
    return (x, info) if return_info else x


def _x64(fn, *args, **kw):
    with jax.enable_x64(True):
        out = fn(*args, **kw)
        return jax.tree.map(lambda a: np.asarray(a, np.float64), out)


def kernel_ridge(k_train_train: Any, y_train: Any, k_test_train: Any, diag_reg: float = 0.0,
                 diag_reg_absolute_scale: bool = False, *, solver: str = "auto",
                 **cg_options: Any) -> np.ndarray:
    """Kernel ridge regression K_{test,train} (K + r I)^-1 y in float64.

    Args:
      k_train_train: (n, n) (or S + S) array or StoredGram.
      y_train: (n,) or (n, k) targets (S + outputs).
      k_test_train: (n_test, n) array or StoredGram (S_test + S).
      diag_reg, diag_reg_absolute_scale: the ridge (see :func:`ridge`).
      solver: 'auto', 'direct' or 'cg'; cg_options: ``tol``, ``maxiter``, ``rank``, ``seed``.

    Returns:
      predictions (n_test,) or (n_test, k), float64.
    """
    which = choose_solver(k_train_train, solver)
    if which == "direct":
        return _x64(dynamics.kernel_regression, _dense(k_train_train), _dense(y_train),
                    _dense(k_test_train), diag_reg, diag_reg_absolute_scale)
    alpha = gram_solve(k_train_train, y_train, diag_reg, diag_reg_absolute_scale, solver="cg",
                  **cg_options)
    return matmul(k_test_train, alpha)


def gp_posterior(k_train_train: Any, y_train: Any, k_test_train: Any, k_test_test: Any = None,
                 diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False, *,
                 solver: str = "auto", **cg_options: Any) -> Any:
    """Gaussian-process posterior (prior covariance K, e.g. the NNGP; noise variance r) in float64.

    Args:
      k_train_train, y_train, k_test_train, diag_reg, diag_reg_absolute_scale, solver,
        cg_options: as :func:`kernel_ridge`.
      k_test_test: None, the prior variances of the test points (n_test,), or their full
        covariance (n_test, n_test).

    Returns:
      mean (n_test[, k]) if ``k_test_test`` is None, else (mean, var) with var the posterior
      variances (n_test,) (the same for every output), K_** - K_*x (K + r I)^-1 K_x*.
    """
    which = choose_solver(k_train_train, solver)
    if k_test_test is None:
        return kernel_ridge(k_train_train, y_train, k_test_train, diag_reg,
                            diag_reg_absolute_scale, solver=which, **cg_options)
    kss = _dense(k_test_test)
    n_t = _n_of(k_test_train)
    if kss.shape not in ((n_t,), (n_t, n_t)):
        raise ValueError(f"k_test_test must have shape ({n_t},) or ({n_t}, {n_t}), got {kss.shape}")
    prior = kss if kss.ndim == 1 else np.diagonal(kss)
    if which == "direct":
        mean, cov = _x64(dynamics.nngp_posterior, _dense(k_train_train), _dense(y_train),
                         _dense(k_test_train), np.diag(prior), diag_reg, diag_reg_absolute_scale)
        return mean, np.diagonal(cov).copy()
    kx = _dense(k_test_train)                              # (n_test, n): the right-hand sides
    y = _dense(y_train)
    rhs = np.concatenate([y.reshape(y.shape[0], -1), kx.T], axis=1)
    sol = gram_solve(k_train_train, rhs, diag_reg, diag_reg_absolute_scale, solver="cg",
                     **cg_options)
    k_out = rhs.shape[1] - kx.shape[0]
    mean = (kx @ sol[:, :k_out]).reshape((n_t,) + y.shape[1:])
    var = prior - np.sum(kx * sol[:, k_out:].T, axis=1)
    return mean, var


def gd_mse(k_train_train: Any, y_train: Any, k_test_train: Any = None, t: Any = None, *,
           learning_rate: float = 1.0, diag_reg: float = 0.0,
           diag_reg_absolute_scale: bool = False, loss: str = "half_mean",
           fx_train_0: Any = 0.0, fx_test_0: Any = 0.0, solver: str = "auto",
           **cg_options: Any) -> Any:
    """Outputs of a linearised model trained by gradient flow on MSE with the NTK K, in float64.

    Semantics of :func:`rnn_ntk.dynamics.gradient_descent_mse` (``t`` in steps of
    ``learning_rate``, ``loss`` normalisation, ``diag_reg``). ``t=None`` is t = infinity:
    f_train = y, f_test = f_test(0) - K_{test,train} (K + r I)^-1 (f_train(0) - y), which the
    'cg' solver computes out of core; a finite ``t`` (scalar or array: leading axes) is direct
    (eigendecomposition) or, with 'cg', Lanczos on streamed products (``tol``, ``maxiter``
    steps).

    Returns:
      f_train(t), or (f_train(t), f_test(t)) when ``k_test_train`` is given.
    """
    which = choose_solver(k_train_train, solver)
    if which == "direct":
        pred = dynamics.gradient_descent_mse
        kx = None if k_test_train is None else _dense(k_test_train)

        def run():
            p = pred(_dense(k_train_train), _dense(y_train), learning_rate, diag_reg,
                     diag_reg_absolute_scale, loss=loss)
            return p(t, _dense(fx_train_0), None if kx is None else _dense(fx_test_0), kx)
        return _x64(run)
    y = _dense(y_train)
    if t is not None:
        return _gd_mse_lanczos(k_train_train, y, k_test_train, t, learning_rate, diag_reg,
                               diag_reg_absolute_scale, loss, fx_train_0, fx_test_0,
                               tol=cg_options.get("tol", 1e-10),
                               maxiter=cg_options.get("maxiter", 300))
    f0 = np.broadcast_to(_dense(fx_train_0), y.shape)
    f_train = y.copy()
    if k_test_train is None:
        return f_train
    r0 = f0 - y
    n_t = _n_of(k_test_train)
    ft0 = np.broadcast_to(_dense(fx_test_0), (n_t,) + y.shape[1:])
    corr = matmul(k_test_train, gram_solve(k_train_train, r0, diag_reg, diag_reg_absolute_scale,
                                      solver="cg", **cg_options))
    return f_train, ft0 - corr


def _lanczos(k: Any, r: float, b: np.ndarray, fns: list, *, tol: float, maxiter: int
             ) -> list[np.ndarray]:
    """[f(K + r I) b for f in fns] by Lanczos with full reorthogonalisation: ||b|| V f(T) e_1,
    V the Krylov basis, T the tridiagonal projection; stops when every f's approximation moves
    by less than tol (relative) over 4 steps, or the Krylov space is exhausted."""
    n = b.shape[0]
    beta0 = float(np.linalg.norm(b))
    if beta0 == 0.0:
        return [np.zeros(n) for _ in fns]
    V = np.zeros((n, min(maxiter, n) + 1))
    V[:, 0] = b / beta0
    alphas: list[float] = []
    betas: list[float] = []
    prev = cur = None
    for j in range(min(maxiter, n)):
        w = matmul(k, V[:, j]) + r * V[:, j]
        alphas.append(float(V[:, j] @ w))
        w -= V[:, : j + 1] @ (V[:, : j + 1].T @ w)                 # full reorthogonalisation
        w -= V[:, : j + 1] @ (V[:, : j + 1].T @ w)
        beta = float(np.linalg.norm(w))
        done = beta <= 1e-12 * max(abs(a) for a in alphas) or j + 1 == min(maxiter, n)
        if done or j % 4 == 3:
            T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
            lam, S = np.linalg.eigh(T)
            lam = np.maximum(lam, 0.0)                               # K + r I is PSD
            cur = [beta0 * (V[:, : j + 1] @ (S @ (f(lam) * S[0]))) for f in fns]
            if prev is not None and all(
                    np.linalg.norm(c - p) <= tol * max(np.linalg.norm(c), 1e-300)
                    for c, p in zip(cur, prev)):
                return cur
            prev = cur
            if done:
                if beta > 1e-12 * max(abs(a) for a in alphas):
                    warnings.warn(f"Lanczos stopped after {j + 1} steps before converging; "
                                  "raise maxiter", RuntimeWarning, stacklevel=4)
                return cur
        betas.append(beta)
        V[:, j + 1] = w / beta
    return cur


def _gd_mse_lanczos(k, y, k_test_train, t, learning_rate, diag_reg, absolute, loss, fx_train_0,
                    fx_test_0, *, tol, maxiter):
    """Gradient flow at finite t out of core: f_train(t) = f0 + (e^{-a K t} - I) r0 and
    f_test(t) = ft0 + K_x (e^{-a K t} - I) K^-1 r0, both from one Lanczos basis per output."""
    if _ndim(k) != 2:
        raise ValueError("out-of-core gradient flow needs a 2-D Gram (readout 'last' or 'mean')")
    n = _n_of(k)
    r = ridge(k, diag_reg, absolute)
    a = dynamics._rate(loss, learning_rate, int(y.size))          # the loss normalisation
    t_arr = np.asarray(t, np.float64)
    ts = t_arr.reshape(-1)
    if not np.all(np.isfinite(ts)) or np.any(ts < 0):
        raise ValueError("t must be finite and >= 0 out of core (t=None is infinity)")

    def em1(tt):
        return lambda lam: np.expm1(-a * lam * tt)

    def g(tt):
        return lambda lam: np.where(lam > 0, np.expm1(-a * lam * tt) / np.where(lam > 0, lam, 1.0),
                                    -a * tt)

    y2 = y.reshape(n, -1)
    f0 = np.broadcast_to(_dense(fx_train_0), y.shape).reshape(n, -1)
    r0 = f0 - y2
    fns = [em1(tt) for tt in ts] + ([g(tt) for tt in ts] if k_test_train is not None else [])
    cols = [_lanczos(k, r, r0[:, c], fns, tol=tol, maxiter=maxiter) for c in range(r0.shape[1])]
    nt = len(ts)
    train = np.stack([np.stack([cols[c][i] for c in range(r0.shape[1])], -1) for i in range(nt)])
    f_train = (f0[None] + train).reshape(t_arr.shape + y.shape)
    if k_test_train is None:
        return f_train
    n_t = _n_of(k_test_train)
    ft0 = np.broadcast_to(_dense(fx_test_0), (n_t,) + y.shape[1:]).reshape(n_t, -1)
    test = [matmul(k_test_train, np.stack([cols[c][nt + i] for c in range(r0.shape[1])], -1))
            for i in range(nt)]
    f_test = (ft0[None] + np.stack(test)).reshape(t_arr.shape + (n_t,) + y.shape[1:])
    return f_train, f_test


def svc(k_train_train: Any, labels: Any, k_test_train: Any, C: float = 1.0,
        **svc_options: Any) -> np.ndarray:
    """Support-vector classification with a precomputed kernel (scikit-learn's SVC).

    Args:
      k_train_train: (n, n) Gram (array or StoredGram; read into memory).
      labels: (n,) class labels.  k_test_train: (n_test, n).  C, svc_options: passed to SVC.

    Returns:
      predicted labels (n_test,).
    """
    try:
        from sklearn.svm import SVC
    except ImportError:  # pragma: no cover
        raise ImportError("svc needs scikit-learn: pip install scikit-learn (or the 'test' "
                          "extra)") from None
    n = _check_square("k_train_train", k_train_train)
    if n > direct_max_n():
        raise ValueError(f"svc needs the {n} x {n} train Gram in memory; it does not fit the "
                         "memory budget")
    model = SVC(kernel="precomputed", C=C, **svc_options)
    model.fit(_dense(k_train_train), np.asarray(labels))
    return model.predict(_dense(k_test_train))
