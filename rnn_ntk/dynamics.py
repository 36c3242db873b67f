"""Closed-form training dynamics of a linearised model (kernel regime) under MSE loss.

A model linear in its parameters, f(theta) = f_0 + J (theta - theta_0), trained by gradient
descent on an MSE loss moves in function space with the tangent kernel K = J J^T only:

    loss     L(f) = c * sum_i (f_i - y_i)^2           (c fixed by ``loss``, see below)
    residual r = f_train - y_train,   rate a = 2 c * learning_rate

    gradient flow   (continuous):  d f_x / dt = -a K_{x, train} r(t)
    gradient descent (discrete):   f_x(t+1) = f_x(t) - a K_{x, train} r(t)

with t counted in steps of ``learning_rate`` in both (absolute flow time = learning_rate * t).
Writing K = V diag(lam) V^T (train kernel, eigendecomposition computed once):

    e(lam, t) = exp(-a lam t)            (flow)     or  (1 - a lam)^t         (descent)
    g(lam, t) = (e(lam, t) - 1) / lam    [limit -a t at lam = 0]

    f_train(t) = f_train(0) + V diag(e - 1) V^T r(0)
    f_test(t)  = f_test(0)  + K_{test, train} V diag(g) V^T r(0)

At t = infinity (gradient flow, or descent with 0 < a lam < 2 for every lam > 0) the train
outputs interpolate and the test outputs are kernel regression from f(0):
f_test = f_test(0) + K_{test,train} K^-1 (y - f_train(0)), computed by a linear solve for
``t=None``. Eigen-directions with lam = 0 never move (pseudo-inverse convention at t = inf).

Loss normalisations (``loss``), with N = y_train.size (all label entries, all output axes):

    'half_mean'  L = 1/(2N) sum r^2   a = lr / N    (neural-tangents' convention; the default)
    'mean'       L = 1/N    sum r^2   a = 2 lr / N
    'half_sum'   L = 1/2    sum r^2   a = lr
    'sum'        L =        sum r^2   a = 2 lr

The training engine (rnn_ntk.train, full batch, optimizer 'sgd'): its loss 'mean' (mean of r^2,
no 1/2) is ``loss='mean'``; its 'sum_from_2' (1/2 sum over positions t >= 2) is ``loss='half_sum'``
with the kernel restricted to positions >= 2 as the train set and position 1 of the training
sequences passed as test points (any masked loss works this way: the entries outside the loss
move like test points).

Kernel layout: ``k_train_train`` has shape S + S where S = y_train.shape[:p], p = ndim / 2
(e.g. (n, n) for y (n, k), or (n, T, n, T) for y (n, T, k) with the 'all' readout); the remaining
axes of y (outputs) are independent: the full kernel is K (x) I_k, as for kernels averaged over
outputs. ``k_test_train`` has shape S_test + S.

Regularisation, as neural-tangents: ``diag_reg`` adds ``diag_reg * mean(diag K)`` (or
``diag_reg`` itself with ``diag_reg_absolute_scale=True``) to the diagonal of the train kernel,
which then drives both the train dynamics and the solve; the test cross-kernel is unchanged.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from rnn_ntk.precision import highest_precision

__all__ = ["LOSSES", "PredictFn", "gradient_descent_mse", "gradient_descent", "kernel_regression",
           "nngp_posterior"]

Array = jax.Array

LOSSES = ("half_mean", "mean", "half_sum", "sum")


def _is_concrete_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_scalar(name: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if _is_concrete_number(value):
        if not math.isfinite(value) or (value <= 0 if positive else value < 0):
            raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value}")
    elif jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")


def _split_kernel(name: str, k: Any, y_train: Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sample shape S and output shape of y for a train kernel of shape S + S."""
    shape = jnp.shape(k)
    if len(shape) == 0 or len(shape) % 2:
        raise ValueError(f"{name} must have an even number of axes (S + S), got shape {shape}")
    p = len(shape) // 2
    if shape[:p] != shape[p:]:
        raise ValueError(f"{name} must be square (shape S + S), got shape {shape}")
    if jnp.ndim(y_train) < p or tuple(jnp.shape(y_train)[:p]) != shape[:p]:
        raise ValueError(f"y_train must start with the kernel's sample shape {shape[:p]}, "
                         f"got shape {jnp.shape(y_train)}")
    return shape[:p], tuple(jnp.shape(y_train)[p:])


def _rate(loss: str, learning_rate: Any, n_labels: int) -> Any:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    return {"half_mean": learning_rate / n_labels, "mean": 2.0 * learning_rate / n_labels,
            "half_sum": learning_rate, "sum": 2.0 * learning_rate}[loss]


def _regularise(k2: Array, diag_reg: Any, absolute: bool) -> Array:
    s = k2.shape[0]
    reg = diag_reg if absolute else diag_reg * jnp.trace(k2) / s
    return k2 + reg * jnp.eye(s, dtype=k2.dtype)


def _dtype(*arrays: Any) -> Any:
    return jnp.result_type(*[a for a in arrays if a is not None], jnp.float32)


class _Dynamics:
    """Shared machinery of the two predictors: validation, flattening, cached factorisations."""

    def __init__(self, k_train_train: Any, y_train: Any, rate_fn: Callable[[int], Any],
                 diag_reg: Any, diag_reg_absolute_scale: bool, discrete: bool) -> None:
        self.S, self.out_shape = _split_kernel("k_train_train", k_train_train, y_train)
        dtype = _dtype(k_train_train, y_train)
        self.y = jnp.asarray(y_train, dtype)
        self.n_s = math.prod(self.S)
        self.k2 = _regularise(jnp.asarray(k_train_train, dtype).reshape(self.n_s, self.n_s),
                              diag_reg, diag_reg_absolute_scale)
        self.a = rate_fn(int(self.y.size))
        self.discrete = discrete
        self.dtype = dtype
        self._eig: tuple[Array, Array] | None = None
        self._lu: tuple[Array, Array] | None = None

    # --- cached factorisations (once per predictor; evaluated eagerly when K is concrete) ---
    def eig(self) -> tuple[Array, Array]:
        if self._eig is None:
            with jax.ensure_compile_time_eval():
                lam, V = jnp.linalg.eigh(self.k2)
            self._eig = (lam, V)
        return self._eig

    def solve(self, rhs: Array) -> Array:
        if self._lu is None:
            with jax.ensure_compile_time_eval():
                self._lu = jax.scipy.linalg.lu_factor(self.k2)
        return jax.scipy.linalg.lu_solve(self._lu, rhs)

    # --- helpers ---
    def flat(self, f: Any, sample_shape: tuple[int, ...], name: str) -> Array:
        full = sample_shape + self.out_shape
        f = jnp.asarray(f, self.dtype)
        if f.ndim != 0 and f.shape != full:
            raise ValueError(f"{name} must be a scalar or have shape {full}, got {f.shape}")
        return jnp.broadcast_to(f, full).reshape(math.prod(sample_shape), -1)

    def test_shape(self, k_test_train: Any) -> tuple[int, ...]:
        shape = jnp.shape(k_test_train)
        p = len(self.S)
        if len(shape) < p or tuple(shape[len(shape) - p:]) != self.S:
            raise ValueError(f"k_test_train must have shape S_test + {self.S}, got {shape}")
        return tuple(shape[:len(shape) - p])

    def factors(self, lam: Array, t_flat: Array) -> tuple[Array, Array]:
        """(e - 1, g) on the grid (times, eigenvalues): shapes (n_t, n_s)."""
        lam = jnp.maximum(lam, 0.0)[None, :]          # K is PSD: clip round-off negatives
        t = t_flat[:, None]
        a = jnp.asarray(self.a, self.dtype)
        zero = lam == 0.0
        lam_safe = jnp.where(zero, 1.0, lam)
        t_inf = jnp.isinf(t)
        t_fin = jnp.where(t_inf, 0.0, t)
        if self.discrete:
            base = 1.0 - a * lam_safe
            pos = base > 0.0
            log_base = jnp.log1p(-a * jnp.where(pos, lam_safe, 0.0))
            em1_pos = jnp.expm1(t_fin * log_base)
            em1_neg = jnp.power(jnp.where(pos, -1.0, base), t_fin) - 1.0
            em1_fin = jnp.where(pos, em1_pos, em1_neg)
            # t = inf: converges to -1 when |1 - a lam| < 1, else diverges (left as inf / nan)
            conv = jnp.abs(base) < 1.0
            em1_inf = jnp.where(conv, -1.0, jnp.where(base == 1.0, 0.0, jnp.nan))
        else:
            em1_fin = jnp.expm1(-a * lam_safe * t_fin)
            em1_inf = jnp.full_like(lam_safe * t_fin, -1.0)
        em1 = jnp.where(t_inf, em1_inf, em1_fin)
        em1 = jnp.where(zero, 0.0, em1)
        g = jnp.where(zero, jnp.where(t_inf, 0.0, -a * t_fin), em1 / lam_safe)
        return em1, g

    @highest_precision
    def predict(self, t: Any, fx_train_0: Any, fx_test_0: Any, k_test_train: Any
                ) -> Array | tuple[Array, Array]:
        if fx_train_0 is None and fx_test_0 is None:
            raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("k_test_train is required for test predictions (fx_test_0 given)")
        S_test = self.test_shape(k_test_train) if fx_test_0 is not None else ()
        f0 = self.flat(0.0 if fx_train_0 is None else fx_train_0, self.S, "fx_train_0")
        y2 = self.y.reshape(self.n_s, -1)
        r0 = f0 - y2                                              # (n_s, k')
        if fx_test_0 is not None:
            ft0 = self.flat(fx_test_0, S_test, "fx_test_0")
            kx = jnp.asarray(k_test_train, self.dtype).reshape(math.prod(S_test), self.n_s)

        if t is None:
            train = jnp.broadcast_to(y2, r0.shape)
            lead: tuple[int, ...] = ()
            if fx_test_0 is not None:
                test = ft0 - kx @ self.solve(r0)
        else:
            t_arr = jnp.asarray(t, self.dtype)
            lead = t_arr.shape
            lam, V = self.eig()
            em1, g = self.factors(lam, t_arr.reshape(-1))
            coef = V.T @ r0                                       # (n_s, k')
            train = f0[None] + jnp.einsum("is,ts,sk->tik", V, em1, coef)
            if fx_test_0 is not None:
                test = ft0[None] + jnp.einsum("js,ts,sk->tjk", kx @ V, g, coef)

        out_train = train.reshape(lead + self.S + self.out_shape)
        if fx_test_0 is None:
            return out_train
        out_test = test.reshape(lead + S_test + self.out_shape)
        if fx_train_0 is None:
            return out_test
        return out_train, out_test


PredictFn = Callable[..., Any]


def gradient_descent_mse(k_train_train: Any, y_train: Any, learning_rate: Any = 1.0,
                         diag_reg: Any = 0.0, diag_reg_absolute_scale: bool = False, *,
                         loss: str = "half_mean") -> PredictFn:
    """Gradient flow on MSE in function space, in closed form (neural-tangents' semantics).

    Solves d f / dt = -a K (f_train - y) with a = learning_rate / y_train.size for the default
    ``loss='half_mean'`` (L = mean squared error / 2, as ``nt.predict.gradient_descent_mse``):

        f_train(t) = y + exp(-a K t) (f_train(0) - y)
        f_test(t)  = f_test(0) - K_{test,train} K^-1 (I - exp(-a K t)) (f_train(0) - y)

    Shapes: ``k_train_train`` S + S, ``y_train`` S + (outputs), e.g. (n, n) and (n, k); see the
    module docstring for layouts, ``loss`` and ``diag_reg``.

    Returns ``predict(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)``:
    ``t`` is a scalar or an array of any shape (leading axes of the result), in steps of
    ``learning_rate``; ``t=None`` means t = infinity by a linear solve (train outputs are y;
    ``t=inf`` inside an array uses the eigenbasis limit instead). The eigendecomposition of
    the train kernel is computed on the first finite-t call and reused. Returns ``fx_train_t``;
    ``(fx_train_t, fx_test_t)`` when ``fx_test_0`` is given (it needs ``k_test_train``, shape
    S_test + S); only ``fx_test_t`` when ``fx_train_0=None`` (then f_train(0) is taken as 0).
    """
    _check_scalar("learning_rate", learning_rate, positive=True)
    _check_scalar("diag_reg", diag_reg, positive=False)
    dyn = _Dynamics(k_train_train, y_train, lambda n: _rate(loss, learning_rate, n), diag_reg,
                    diag_reg_absolute_scale, discrete=False)

    def predict(t: Any = None, fx_train_0: Any = 0.0, fx_test_0: Any = None,
                k_test_train: Any = None) -> Array | tuple[Array, Array]:
        return dyn.predict(t, fx_train_0, fx_test_0, k_test_train)

    return predict


def gradient_descent(k_train_train: Any, y_train: Any, learning_rate: Any, *,
                     loss: str = "half_mean") -> PredictFn:
    """Exact discrete full-batch gradient descent of a linearised model, in closed form.

    One step theta <- theta - lr grad L of f = f_0 + J (theta - theta_0) with K = J J^T is
    f_x <- f_x - a K_{x,train} (f_train - y), a = 2 c lr for L = c sum (f - y)^2, so

        f_train(t) = y + (I - a K)^t (f_train(0) - y)
        f_test(t)  = f_test(0) - K_{test,train} K^-1 (I - (I - a K)^t) (f_train(0) - y)

    (K^-1 (I - (I - aK)^t) = a sum_{s<t} (I - aK)^s is evaluated in the eigenbasis, so singular
    K is fine). ``loss`` must match the trainer: 'half_mean' (a = lr / N, the default),
    'mean' (L = mean squared error, a = 2 lr / N), 'half_sum', 'sum'; N = y_train.size.

    Returns ``predict(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)`` with the
    conventions of :func:`gradient_descent_mse`; ``t`` counts steps (integers; an array gives
    leading axes; ``t=inf`` is the limit, finite only when 0 < a lam < 2 for all eigenvalues lam;
    ``t=None`` is that limit by a linear solve, valid only when descent converges).
    """
    _check_scalar("learning_rate", learning_rate, positive=True)
    dyn = _Dynamics(k_train_train, y_train, lambda n: _rate(loss, learning_rate, n), 0.0,
                    True, discrete=True)

    def predict(t: Any = None, fx_train_0: Any = 0.0, fx_test_0: Any = None,
                k_test_train: Any = None) -> Array | tuple[Array, Array]:
        return dyn.predict(t, fx_train_0, fx_test_0, k_test_train)

    return predict


def kernel_regression(k_train_train: Any, y_train: Any, k_test_train: Any, diag_reg: Any = 0.0,
                      diag_reg_absolute_scale: bool = False) -> Array:
    """Kernel (ridge) regression mean: K_{test,train} (K + r I)^-1 y, by a linear solve.

    Usable with the NNGP (posterior mean of the Gaussian process) or the NTK (the t -> inf
    limit of gradient flow from f(0) = 0). r = diag_reg * mean(diag K), or diag_reg itself
    with ``diag_reg_absolute_scale=True`` (neural-tangents' convention). Shapes: K S + S,
    y S + (outputs), k_test_train S_test + S; returns S_test + (outputs).
    """
    return nngp_posterior(k_train_train, y_train, k_test_train, None, diag_reg,
                          diag_reg_absolute_scale)


@highest_precision
def nngp_posterior(k_train_train: Any, y_train: Any, k_test_train: Any, k_test_test: Any = None,
                   diag_reg: Any = 0.0, diag_reg_absolute_scale: bool = False
                   ) -> Any:
    """Gaussian-process posterior with prior covariance K (e.g. the NNGP), noise variance r:

        mean = K_{*x} (K + r I)^-1 y,       cov = K_{**} - K_{*x} (K + r I)^-1 K_{x*}

    Returns ``mean`` (S_test + outputs) if ``k_test_test`` is None, else ``(mean, cov)`` with
    cov of shape S_test + S_test (the same for every output: the prior is K (x) I_k).
    """
    _check_scalar("diag_reg", diag_reg, positive=False)
    S, out_shape = _split_kernel("k_train_train", k_train_train, y_train)
    dtype = _dtype(k_train_train, y_train, k_test_train, k_test_test)
    n_s = math.prod(S)
    shape = jnp.shape(k_test_train)
    p = len(S)
    if len(shape) < p or tuple(shape[len(shape) - p:]) != S:
        raise ValueError(f"k_test_train must have shape S_test + {S}, got {shape}")
    S_test = tuple(shape[:len(shape) - p])
    n_t = math.prod(S_test)
    if k_test_test is not None and tuple(jnp.shape(k_test_test)) != S_test + S_test:
        raise ValueError(f"k_test_test must have shape {S_test + S_test}, got {jnp.shape(k_test_test)}")
    k2 = _regularise(jnp.asarray(k_train_train, dtype).reshape(n_s, n_s), diag_reg,
                     diag_reg_absolute_scale)
    kx = jnp.asarray(k_test_train, dtype).reshape(n_t, n_s)
    y2 = jnp.asarray(y_train, dtype).reshape(n_s, -1)
    mean = (kx @ jnp.linalg.solve(k2, y2)).reshape(S_test + out_shape)
    if k_test_test is None:
        return mean
    kss = jnp.asarray(k_test_test, dtype).reshape(n_t, n_t)
    cov = kss - kx @ jnp.linalg.solve(k2, kx.T)
    return mean, cov.reshape(S_test + S_test)
