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

Any other activation ('tanh', 'gelu' (exact, erf-based), 'softplus', or any jax-differentiable
callable passed to :func:`quadrature_v`) uses a 2-D quadrature; phi' is jax's derivative of phi
(the same derivative the model's autodiff uses). With z1, z2 iid N(0, 1),

    u = sqrt(a) z1,    w = mu + s z2,    mu = sqrt(b) rho z1,    s = sqrt(b (1 - rho^2)),

V = E_z1[phi(u) E_z2[phi(w)]] (Vd alike). A fixed rule in z cannot do this at large variances:
phi(sqrt(a) z) changes on a width 1/sqrt(a) in z (tanh has poles at distance pi/(2 sqrt(a))), and
the former order-48 trapezoid rule (spacing 0.24) was off by 3.5 % in E[tanh'(u) tanh'(w)] at
(a, c, b) = (40, 20, 30). Here each 1-D rule is the trapezoid rule in t, mapped by

    z = zeta(t; beta),   zeta'(t) = beta cosh(t) L / (L + beta cosh(t))      (L = 1.25)

so the node spacing is beta h at the feature, grows geometrically away from it, and is capped at
L h in the tails (where an oscillating phi such as sin still needs resolving). beta is computed
per entry (traced; jittable and vmappable) from the width of the feature in z:
beta1 = min(1, 1/sqrt(a), max(1, s)/|sqrt(b) rho|) for z1 (phi(u) and the inner mean, both change
at z1 = 0), and beta2 = min(1, 1/s) for z2, whose rule is centred at phi(w)'s feature
z2 = -mu/s (clipped to |z2| <= 4). The static step h is the least one whose nodes reach
|z1| <= 9 (|z2 - centre| <= 13) at beta = 1/sqrt(1000); weights are zeta'(t) h exp(-z^2/2),
normalised to sum to 1 (so constants are exact). The integrand is analytic in a strip around
the real t axis, so the error falls exponentially in the order.

Accuracy contract (``DEFAULT_ORDER`` = 128 nodes per dimension, float64): for variances a, b in
[1e-3, 100] and every correlation, |error| <= 1e-8 sqrt(E[phi(u)^2] E[phi(w)^2]) for V and the
same with phi' for Vd, for tanh, gelu, softplus and sin (measured max over a, b in
{1e-3, 0.1, 1, 10, 100}, rho in {-0.99, -0.5, 0, 0.5, 0.99, 1} against nested adaptive
scipy.integrate.quad: tanh 2e-13, gelu 3e-11, softplus 4e-15, sin 3e-11, relative as above).
Activations that oscillate faster than sin (frequency f > 1) need variance <= 100 / f^2 for this
accuracy; the node set is laid out for variances up to 1000, beyond which the accuracy degrades.
tests/kernels/test_quadrature.py checks this against scipy. The cost is order^2 phi and exp
evaluations per entry (about 10x the former order-48 rule). Quadrature of relu (a kink, and phi'
a step: algebraic convergence) is far less accurate, which is why relu always uses the closed form.

arcsin / arccos are evaluated with an odd polynomial (vectorisable; XLA's CPU lowering of
jnp.arccos calls scalar libm, ~20 ns an element here): arcsin(y) = y + y^3 P(y^2) for
|y| <= 1/2, and arcsin(y) = pi/2 - 2 arcsin(sqrt((1 - y) / 2)) above, with P a least-squares
Chebyshev fit of the Taylor series of (arcsin(sqrt s)/sqrt s - 1)/s on s in [0, 1/4] (degree 12
for float64, absolute error <= 3e-16; degree 5 for float32, within float32 rounding).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk.model import ACTIVATIONS

__all__ = ["VFn", "DEFAULT_ORDER", "CLOSED_FORM", "arcsin", "arccos", "relu_v", "erf_v",
           "identity_v", "QUAD_SPAN", "QUAD_CENTRE_CLIP", "QUAD_TAIL_RATIO", "VAR_MAX", "BETA_MIN",
           "quadrature_step", "quadrature_v", "get_vtransform", "quadrature_cost"]

Array = jax.Array
VFn = Callable[[Array, Array, Array], tuple[Array, Array]]

DEFAULT_ORDER = 128
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
# The rule (see the module docstring): nodes t_i = h (i - (n-1)/2) of the trapezoid rule, mapped to
# z = zeta(t; beta) with zeta'(t) = beta cosh(t) L / (L + beta cosh(t)): spacing ~ beta h at z = 0,
# growing geometrically, capped at L h in the tails. beta (per element, traced) is the width in z
# of the integrand's feature at the origin; h (static) is the least step for which the map covers
# |z| <= span at the smallest beta, BETA_MIN = 1 / sqrt(VAR_MAX).
QUAD_SPAN = 9.0          # |z| covered by the outer rule: the N(0, 1) mass beyond is < 3e-19
QUAD_CENTRE_CLIP = 4.0   # the inner rule is centred at the feature of phi(w), clipped to |z2| <= this
QUAD_TAIL_RATIO = 1.25   # L: tail spacing / core spacing at beta = 1
VAR_MAX = 1e3            # largest (conditional) variance the node set is laid out for
BETA_MIN = 1.0 / math.sqrt(VAR_MAX)


def _zeta(t: Any, beta: Any, xp: Any = np) -> Any:
    """The node map z = zeta(t; beta) = L t - (2 L^2 / k) artanh(r tanh(t / 2)), k = sqrt(L^2 - beta^2),
    r = sqrt((L - beta) / (L + beta)) (the integral of zeta' above, zeta(0) = 0)."""
    L = QUAD_TAIL_RATIO
    k = xp.sqrt(L * L - beta * beta)
    r = xp.sqrt((L - beta) / (L + beta))
    return L * t - (2.0 * L * L / k) * xp.arctanh(r * xp.tanh(0.5 * t))


@functools.lru_cache(maxsize=None)
def quadrature_step(order: int, span: float) -> float:
    """The static step h in t: the least h (to 1e-12 relative, by bisection) whose ``order`` nodes
    reach |z| >= ``span`` for every beta >= BETA_MIN (zeta decreases as beta does)."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 8:
        raise ValueError(f"quadrature order must be an integer >= 8, got {order!r}")
    lo, hi = 1e-6, 50.0
    for _ in range(200):
        h = 0.5 * (lo + hi)
        if _zeta(0.5 * (order - 1) * h, BETA_MIN) >= span:
            hi = h
        else:
            lo = h
    return hi


def _mapped_nodes(order: int, span: float, beta: Array) -> tuple[Array, Array]:
    """Nodes z (..., order) of the mapped trapezoid rule for per-element feature widths beta (...,)
    and the unnormalised weights zeta'(t_i) h (multiply by exp(-z^2/2) and normalise)."""
    h = quadrature_step(order, span)
    t_np = h * (np.arange(order) - 0.5 * (order - 1))
    dtype = beta.dtype
    lead = (1,) * beta.ndim
    t = jnp.asarray(t_np, dtype).reshape(lead + (order,))
    cosh_t = jnp.asarray(np.cosh(t_np), dtype).reshape(lead + (order,))
    beta = jnp.clip(beta, BETA_MIN, 1.0)[..., None]
    z = _zeta(t, beta, jnp)
    bc = beta * cosh_t
    return z, (h * QUAD_TAIL_RATIO) * bc / (QUAD_TAIL_RATIO + bc)


def _phi_and_derivative(phi: Callable[[Array], Array]) -> Callable[[Array], tuple[Array, Array]]:
    def both(z: Array) -> tuple[Array, Array]:
        return jax.jvp(phi, (z,), (jnp.ones_like(z),))
    return both


def quadrature_v(phi: Callable[[Array], Array], a: Array, c: Array, b: Array,
                 order: int = DEFAULT_ORDER) -> tuple[Array, Array]:
    """V and Vd of any activation by the mapped 2-D trapezoid rule of the module docstring.

    Args:
        phi: the activation, a jax-differentiable elementwise function (phi' is its jvp).
        a, c, b: arrays of one shape (or broadcastable): the covariance [[a, c], [c, b]].
        order: nodes per dimension (order^2 phi evaluations per entry), an integer >= 8.

    Returns:
        (V, Vd), each of the broadcast shape, in the inputs' float dtype. A scan over the outer
        nodes keeps memory at (..., order).
    """
    dtype = jnp.result_type(a, c, b)
    a, c, b = (jnp.asarray(v, dtype) for v in jnp.broadcast_arrays(a, c, b))
    both = _phi_and_derivative(phi)
    rho, _ = _safe_rho(a, c, b)
    sa = jnp.sqrt(jnp.maximum(a, 0.0))
    sb = jnp.sqrt(jnp.maximum(b, 0.0))
    s = sb * jnp.sqrt(jnp.maximum((1.0 - rho) * (1.0 + rho), 0.0))   # sd of w given z1
    mu_z = sb * rho                                                 # mean of w given z1, per z1
    one = jnp.ones_like(a)

    def inv(v, num=one):                                            # num / v, 1 where v = 0
        pos = v > 0
        return jnp.where(pos, num / jnp.where(pos, v, 1.0), 1.0)
    # feature widths in z: phi(sqrt(a) z1) ~ 1 / sqrt(a); the inner mean E[phi(w) | z1] varies on
    # max(1, s) in mu = mu_z z1; phi(w) on 1 / s in z2
    beta1 = jnp.minimum(jnp.minimum(one, inv(sa)), inv(jnp.abs(mu_z), jnp.maximum(one, s)))
    beta2 = jnp.minimum(one, inv(s))
    z1, d1 = _mapped_nodes(order, QUAD_SPAN, beta1)                  # (..., n)
    w1 = d1 * jnp.exp(-0.5 * z1 * z1)
    w1 = w1 / jnp.sum(w1, axis=-1, keepdims=True)
    z2u, d2 = _mapped_nodes(order, QUAD_SPAN + QUAD_CENTRE_CLIP, beta2)
    s_ = s[..., None]
    inv_s = inv(s)

    def outer(acc, node):                     # one outer node z1: inner expectation over z2
        z1i, w1i = node
        f_u, df_u = both(sa * z1i)
        mu = mu_z * z1i
        centre = jnp.clip(jnp.where(s > 0, -mu * inv_s, 0.0), -QUAD_CENTRE_CLIP, QUAD_CENTRE_CLIP)
        z2 = centre[..., None] + z2u                                  # (..., n)
        w2 = d2 * jnp.exp(-0.5 * z2 * z2)
        f_w, df_w = both(mu[..., None] + s_ * z2)
        norm = jnp.sum(w2, axis=-1)
        V = acc[0] + w1i * f_u * (jnp.sum(w2 * f_w, axis=-1) / norm)
        Vd = acc[1] + w1i * df_u * (jnp.sum(w2 * df_w, axis=-1) / norm)
        return (V, Vd), None

    zero = jnp.zeros(a.shape, dtype)
    xs = (jnp.moveaxis(z1, -1, 0), jnp.moveaxis(w1, -1, 0))
    (V, Vd), _ = jax.lax.scan(outer, (zero, zero), xs)
    return V, Vd


def get_vtransform(activation: str, order: int | None = None) -> VFn:
    """The (V, Vd) function of a model activation name: closed form where one exists
    ('relu', 'erf', 'identity'), else :func:`quadrature_v` with ``order`` nodes per dimension
    (default ``DEFAULT_ORDER``). ``order`` is ignored for closed forms."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if activation == "relu":
        return relu_v
    if activation == "erf":
        return erf_v
    if activation == "identity":
        return identity_v
    n = DEFAULT_ORDER if order is None else order
    quadrature_step(n, QUAD_SPAN)  # validates the order
    return functools.partial(quadrature_v, ACTIVATIONS[activation], order=n)


def quadrature_cost(activation: str, order: int | None = None) -> int:
    """Memory per V-transform evaluation in units of one closed form: 1, or ``order`` for
    quadrature (the inner (..., order) arrays of :func:`quadrature_v`; its work is order^2)."""
    if activation in CLOSED_FORM:
        return 1
    return DEFAULT_ORDER if order is None else order
