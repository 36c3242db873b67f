"""V-transforms of the activations (spec: shared/spec/rnn-kernels.md, section 2).

For a centred Gaussian pair (u, w) with covariance [[a, c], [c, b]]:

    V(a, c, b)  = E[phi(u) phi(w)]          Vd(a, c, b) = E[phi'(u) phi'(w)]

Every function here maps arrays (a, c, b) of one shape, elementwise, to the pair (V, Vd).
The correlation is rho = c / sqrt(ab), clipped to [-1, 1]; where a variance is 0 (rho = 0/0)
rho is taken as 0, which gives the exact degenerate values V = phi(0) E[phi(w)] and
Vd = phi'(0) E[phi'(w)] (with jax's convention relu'(0) = 0, as in the model's autodiff).
rho within 4 ulps of +-1 is taken as +-1 (see ``_safe_rho``: arccos is infinitely steep there).

Closed forms (theta = arccos rho):

- relu:      V = sqrt(ab) (sin theta + (pi - theta) cos theta) / (2 pi),  Vd = (pi - theta) / (2 pi)
             (both 0 when ab = 0)
- erf:       V = (2/pi) arcsin(2c / sqrt((1 + 2a)(1 + 2b))),
             Vd = (4/pi) / sqrt((1 + 2a)(1 + 2b) - 4c^2)
- identity:  V = c,  Vd = 1

Any other activation ('tanh', 'gelu' (exact, erf-based), 'softplus') uses a 2-D tensor-product
quadrature with n x n nodes: with z1, z2 iid N(0, 1), u = sqrt(a) z1 and
w = sqrt(b) (rho z1 + sqrt(1 - rho^2) z2), and phi' is jax's derivative of ``RNNConfig.phi``
(the same derivative the model's autodiff uses). The default rule is the truncated trapezoid
rule for the Gaussian weight (n equispaced nodes on [-L, L], L = 0.8 sqrt(n), weights
proportional to exp(-z^2/2)); Gauss-Hermite (rule='hermite') is available but converges slowly
here: tanh(s z) has poles at distance pi/(2s) from the real axis, and at order 24 Gauss-Hermite
is off by 4e-3 where the trapezoid rule at order 48 is off by 1e-6.

Accuracy of the default order (``DEFAULT_ORDER`` = 48, 2304 nodes), max abs error of V and Vd
over a, b in [0, 4], rho in [-1, 1], against a 601-node trapezoid reference on [-12, 12]
(float64): tanh 1e-6, erf 3e-8 (against its closed form too), gelu 1e-6, softplus 1e-6.
tests/kernels/test_infinite.py checks these against an independent fine-grid numpy integration.
Quadrature of relu (a kink, and phi' a step: slow algebraic convergence) agrees with the closed
form only to about 3e-3 (V) and 2e-2 (Vd), which is why relu always uses the closed form.

arcsin / arccos are evaluated with an odd polynomial (vectorisable; XLA's CPU lowering of
jnp.arccos calls scalar libm, ~20 ns an element here): arcsin(y) = y + y^3 P(y^2) for
|y| <= 1/2, and arcsin(y) = pi/2 - 2 arcsin(sqrt((1 - y) / 2)) above, with P a least-squares
Chebyshev fit of the Taylor series of (arcsin(sqrt s)/sqrt s - 1)/s on s in [0, 1/4] (degree 12
for float64, absolute error <= 3e-16; degree 5 for float32, within float32 rounding).
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk.model import ACTIVATIONS

Array = jax.Array
VFn = Callable[[Array, Array, Array], tuple[Array, Array]]

DEFAULT_ORDER = 48
CLOSED_FORM = ("relu", "erf", "identity")


# --------------------------------------------------------------------------- arcsin / arccos
@functools.lru_cache(maxsize=None)
def _asin_coefficients(degree: int) -> tuple[float, ...]:
    """Power-basis coefficients (in s = y^2) of P with arcsin(y) = y + y^3 P(y^2), |y| <= 1/2."""
    taylor = [math.comb(2 * k, k) / (4.0 ** k * (2 * k + 1)) for k in range(1, 90)]
    s = np.linspace(0.0, 0.25, 4001)
    p = np.zeros_like(s)
    for ck in reversed(taylor):
        p = p * s + ck
    cheb = np.polynomial.chebyshev.Chebyshev.fit(s, p, degree, domain=[0.0, 0.25])
    power = cheb.convert(kind=np.polynomial.Polynomial, domain=[-1.0, 1.0], window=[-1.0, 1.0])
    return tuple(float(c) for c in power.coef)


def _asin_small(y: Array) -> Array:
    """arcsin(y) for |y| <= 1/2 (polynomial)."""
    degree = 12 if y.dtype == jnp.float64 else 5
    coef = _asin_coefficients(degree)
    s = y * y
    p = jnp.full_like(s, coef[-1])
    for c in reversed(coef[:-1]):
        p = p * s + c
    return y + y * s * p


def arcsin(x: Array) -> Array:
    """arcsin on [-1, 1] with vectorisable arithmetic only (inputs are clipped to [-1, 1])."""
    x = jnp.clip(x, -1.0, 1.0)
    ax = jnp.abs(x)
    big = ax > 0.5
    y = jnp.where(big, jnp.sqrt(jnp.maximum((1.0 - ax) * 0.5, 0.0)), ax)
    r = _asin_small(y)
    r = jnp.where(big, 0.5 * jnp.pi - 2.0 * r, r)
    return jnp.where(x < 0, -r, r)


def arccos(x: Array) -> Array:
    """arccos on [-1, 1] with vectorisable arithmetic only; accurate near x = +-1."""
    x = jnp.clip(x, -1.0, 1.0)
    ax = jnp.abs(x)
    big = ax > 0.5
    y = jnp.where(big, jnp.sqrt(jnp.maximum((1.0 - ax) * 0.5, 0.0)), ax)
    r = _asin_small(y)
    # |x| > 1/2: arccos|x| = 2 arcsin(sqrt((1 - |x|)/2));  |x| <= 1/2: arccos|x| = pi/2 - arcsin|x|
    acos_abs = jnp.where(big, 2.0 * r, 0.5 * jnp.pi - r)
    return jnp.where(x < 0, jnp.pi - acos_abs, acos_abs)


# --------------------------------------------------------------------------- helpers
def _safe_rho(a: Array, c: Array, b: Array) -> tuple[Array, Array]:
    """(rho, sqrt(ab)) with rho = c / sqrt(ab) clipped to [-1, 1], and rho = 0 where ab = 0.

    rho within 4 ulps of +-1 is set to +-1: c and ab are rounded separately (e.g. S_tt and
    q_t of one sequence), and arccos has an infinite slope there (theta ~ sqrt(2(1 - rho))), so a
    one-ulp difference would otherwise move relu's Vd by ~sqrt(eps) (2e-4 in float32) instead of
    ~eps; such rho are within rounding of +-1 anyway.
    """
    ab = a * b
    pos = ab > 0
    sab = jnp.sqrt(jnp.where(pos, ab, 1.0))
    rho = jnp.clip(jnp.where(pos, c / sab, 0.0), -1.0, 1.0)
    snap = 1.0 - 4.0 * jnp.finfo(rho.dtype).eps
    rho = jnp.where(jnp.abs(rho) > snap, jnp.sign(rho), rho)
    return rho, jnp.where(pos, sab, 0.0)


# --------------------------------------------------------------------------- closed forms
def relu_v(a: Array, c: Array, b: Array) -> tuple[Array, Array]:
    """ReLU arc-cosine kernels; V = Vd = 0 where a variance is 0 (relu(0) = relu'(0) = 0)."""
    rho, sab = _safe_rho(a, c, b)
    theta = arccos(rho)
    sin_t = jnp.sqrt(jnp.maximum((1.0 - rho) * (1.0 + rho), 0.0))
    pi_t = jnp.pi - theta
    inv2pi = 1.0 / (2.0 * math.pi)
    V = sab * (sin_t + pi_t * rho) * inv2pi
    Vd = jnp.where(sab > 0, pi_t * inv2pi, 0.0)
    return V, Vd


def erf_v(a: Array, c: Array, b: Array) -> tuple[Array, Array]:
    """erf: V = (2/pi) arcsin(2c / sqrt((1+2a)(1+2b))), Vd = (4/pi) / sqrt((1+2a)(1+2b) - 4c^2)."""
    rho, sab = _safe_rho(a, c, b)
    c = rho * sab  # clipped covariance (|c| <= sqrt(ab))
    prod = (1.0 + 2.0 * a) * (1.0 + 2.0 * b)
    V = (2.0 / math.pi) * arcsin(2.0 * c / jnp.sqrt(prod))
    # prod - 4c^2 = 1 + 2a + 2b + 4(ab - c^2) >= 1
    Vd = (4.0 / math.pi) / jnp.sqrt(1.0 + 2.0 * a + 2.0 * b + 4.0 * (sab * sab - c * c))
    return V, Vd


def identity_v(a: Array, c: Array, b: Array) -> tuple[Array, Array]:
    """identity: V = c, Vd = 1."""
    return c + 0.0 * (a + b), jnp.ones_like(c + a + b)


# --------------------------------------------------------------------------- quadrature
QUADRATURE_RULES = ("trapezoid", "hermite")


@functools.lru_cache(maxsize=None)
def quadrature_rule(order: int, rule: str = "trapezoid") -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and weights w (float64, order of each) with sum_i w_i f(z_i) ~= E f(z), z ~ N(0, 1).

    'trapezoid': equispaced nodes on [-L, L], L = 0.8 sqrt(order), weights proportional to
    exp(-z^2/2) and summing to 1. 'hermite': Gauss-Hermite (probabilists').
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 2:
        raise ValueError(f"quadrature order must be an integer >= 2, got {order!r}")
    if rule == "hermite":
        z, w = np.polynomial.hermite_e.hermegauss(order)
        return z, w / math.sqrt(2.0 * math.pi)
    if rule == "trapezoid":
        half = 0.8 * math.sqrt(order)
        z = np.linspace(-half, half, order)
        w = np.exp(-0.5 * z * z)
        return z, w / w.sum()
    raise ValueError(f"quadrature rule must be one of {list(QUADRATURE_RULES)}, got {rule!r}")


def _phi_and_derivative(phi: Callable[[Array], Array]) -> Callable[[Array], tuple[Array, Array]]:
    def both(z: Array) -> tuple[Array, Array]:
        return jax.jvp(phi, (z,), (jnp.ones_like(z),))
    return both


def quadrature_v(phi: Callable[[Array], Array], a: Array, c: Array, b: Array,
                 order: int = DEFAULT_ORDER, rule: str = "trapezoid") -> tuple[Array, Array]:
    """V and Vd by an order x order tensor-product rule (:func:`quadrature_rule`); phi' is jax's
    derivative of phi (jvp). A scan over the z1 nodes keeps memory at (..., order)."""
    z_np, w_np = quadrature_rule(order, rule)
    dtype = jnp.result_type(a, c, b)
    z = jnp.asarray(z_np, dtype)
    wq = jnp.asarray(w_np, dtype)
    both = _phi_and_derivative(phi)
    a, c, b = jnp.broadcast_arrays(a, c, b)
    zj = z.reshape((1,) * a.ndim + (order,))           # nodes of z2 on a trailing axis
    wj = wq.reshape((1,) * a.ndim + (order,))
    rho, _ = _safe_rho(a, c, b)
    sa = jnp.sqrt(jnp.maximum(a, 0.0))
    sb = jnp.sqrt(jnp.maximum(b, 0.0))
    rc = jnp.sqrt(jnp.maximum((1.0 - rho) * (1.0 + rho), 0.0))
    b_rho, b_rc = (sb * rho)[..., None], (sb * rc)[..., None]

    def outer(acc, node):                     # one node z1 = z_i: inner expectation over z2
        zi, wi = node
        f_u, df_u = both(sa * zi)
        f_w, df_w = both(b_rho * zi + b_rc * zj)                  # (..., n)
        V = acc[0] + wi * f_u * jnp.sum(f_w * wj, axis=-1)
        Vd = acc[1] + wi * df_u * jnp.sum(df_w * wj, axis=-1)
        return (V, Vd), None

    zero = jnp.zeros(a.shape, dtype)
    (V, Vd), _ = jax.lax.scan(outer, (zero, zero), (z, wq))
    return V, Vd


def get_vtransform(activation: str, order: int | None = None) -> VFn:
    """The (V, Vd) function of a model activation name: closed form where one exists
    ('relu', 'erf', 'identity'), else Gauss-Hermite quadrature of ``order`` (default
    ``DEFAULT_ORDER``). ``order`` is ignored for closed forms."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if activation == "relu":
        return relu_v
    if activation == "erf":
        return erf_v
    if activation == "identity":
        return identity_v
    n = DEFAULT_ORDER if order is None else order
    quadrature_rule(n)  # validates the order
    return functools.partial(quadrature_v, ACTIVATIONS[activation], order=n)


def quadrature_cost(activation: str, order: int | None = None) -> int:
    """Memory per V-transform evaluation in units of one closed form: 1, or ``order`` for
    quadrature (the inner (..., order) arrays of :func:`quadrature_v`; its work is order^2)."""
    if activation in CLOSED_FORM:
        return 1
    return DEFAULT_ORDER if order is None else order
