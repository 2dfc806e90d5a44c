"""Pure formulas of likelihood inference: information -> covariance, standard errors,
z statistics, p-values, Wald intervals, information criteria, delta method, sandwich.

Nothing here fits or evaluates a model: every function maps arrays to arrays.
Covariances are reported on the natural scale: the observed information H
(negative Hessian of the log-likelihood, plus log-prior for MAP) is computed in the
unconstrained coordinates z and mapped with the Jacobian J = d(natural)/dz:
cov = J H^{-1} J'. At an interior optimum (zero gradient) this equals the inverse
information computed in natural coordinates, and it is also defined for a simplex,
whose natural coordinates are redundant (its covariance block is singular, rows
summing to zero).

Two kinds of function live here. Those the compiled fit and post-fit programs call
(``inverse_information``, ``sandwich_cov``, ``delta_var``) are ``jax.numpy`` and work
under jit and vmap. The reporting formulas (``flat_stderr``, ``z_values``,
``p_values``, ``wald_interval``, ``information_criteria``) follow their input: given
NumPy arrays (what results report from) they compute on the host with NumPy, so a
summary compiles and runs no XLA program; given JAX arrays or tracers they use
``jax.numpy`` as before. ``normal_quantile``, ``norm_cdf`` and ``norm_ppf`` are host
NumPy (``math.erfc`` and a refined rational approximation; scipy is not needed).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from . import _linalg


def inverse_information(H):
    """(H^{-1}, positive definite?, scaled condition number) of an information matrix.

    ``H`` is symmetrised and equilibrated first, H = D S D with D = sqrt(diag H)
    and S unit-diagonal, so the verdict does not depend on the parameters' units:
    H counts as positive definite when its diagonal is positive and the smallest
    eigenvalue of S exceeds 100 eps times its largest (S not singular to working
    precision). The inverse is D^-1 S^-1 D^-1 from a Cholesky factorisation of S;
    where H is not positive definite it is NaN and the condition number inf. The
    condition number reported is that of S.
    """
    H = 0.5 * (H + H.T)
    dtype = H.dtype
    eye = jnp.eye(H.shape[0], dtype=dtype)
    diag = jnp.diagonal(H)
    positive = jnp.all(diag > 0) & jnp.all(jnp.isfinite(H))
    s = jnp.where(positive, 1.0 / jnp.sqrt(jnp.where(diag > 0, diag, 1.0)), 1.0)
    S = jnp.where(positive, H * jnp.outer(s, s), eye)
    eig = _linalg.eigvalsh(S)
    eps = jnp.finfo(dtype).eps
    pd = positive & (eig[0] > 100 * eps * eig[-1]) & jnp.all(jnp.isfinite(eig))
    L = _linalg.cholesky(jnp.where(pd, S, eye))
    Linv = _linalg.solve_lower(L, eye)
    Hinv = jnp.where(pd, (Linv.T @ Linv) * jnp.outer(s, s), jnp.nan)
    cond = jnp.where(pd, eig[-1] / eig[0], jnp.inf)
    return Hinv, pd, cond


def inverse_information_host(H):
    """``inverse_information`` in NumPy on the host, for a stack of matrices (..., k, k).

    The same equilibration, definiteness verdict, Cholesky inverse and condition
    number, computed after the fit's program has returned (so that program holds no
    eigendecomposition): LAPACK through NumPy, equal to the compiled version to rounding.
    """
    H = np.asarray(H)
    H = 0.5 * (H + np.swapaxes(H, -1, -2))
    dtype = H.dtype
    k = H.shape[-1]
    eye = np.broadcast_to(np.eye(k, dtype=dtype), H.shape)
    diag = np.diagonal(H, axis1=-2, axis2=-1)
    positive = np.all(diag > 0, axis=-1) & np.all(np.isfinite(H), axis=(-2, -1))
    with np.errstate(all="ignore"):
        s = np.where(positive[..., None], 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), 1.0).astype(dtype)
        outer = s[..., :, None] * s[..., None, :]
        S = np.where(positive[..., None, None], H * outer, eye)
        eig = np.linalg.eigvalsh(S)
        eps = np.finfo(dtype).eps
        pd = positive & (eig[..., 0] > 100 * eps * eig[..., -1]) & np.all(np.isfinite(eig), axis=-1)
        L = np.linalg.cholesky(np.where(pd[..., None, None], S, eye))
        Linv = np.linalg.inv(L)
        Hinv = np.where(pd[..., None, None], (np.swapaxes(Linv, -1, -2) @ Linv) * outer, np.nan).astype(dtype)
        cond = np.where(pd, eig[..., -1] / eig[..., 0], np.inf).astype(dtype)
    return Hinv, pd, cond


def sandwich_cov(H, scores, J):
    """Sandwich (HC0) covariance J H^{-1} (S'S) H^{-1} J' from per-observation scores S (n, p)."""
    Hinv, _, _ = inverse_information(H)
    return J @ (Hinv @ (scores.T @ scores) @ Hinv) @ J.T


def delta_var(jac, cov):
    """Delta-method variance of a function with Jacobian ``jac`` (..., p) and covariance ``cov``."""
    return jnp.einsum("...i,ij,...j->...", jac, cov, jac)


# -- reporting formulas: NumPy on host arrays, jax.numpy on JAX arrays ---------------

def _on_device(*xs) -> bool:
    """True when any input is a JAX array or tracer: compute with jax.numpy then."""
    return any(isinstance(x, jax.Array) for x in xs)


def _float_dtype(x):
    """The floating dtype a formula of ``x`` reports in: x's own if floating, else float64."""
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)


def flat_stderr(cov):
    """Standard errors (last axis) from covariance matrices (last two axes)."""
    if _on_device(cov):
        return jnp.sqrt(jnp.diagonal(cov, axis1=-2, axis2=-1))
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.diagonal(np.asarray(cov), axis1=-2, axis2=-1))


def z_values(estimate, stderr):
    """Wald z statistics for H0: parameter = 0."""
    if _on_device(estimate, stderr):
        return estimate / stderr
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(estimate) / np.asarray(stderr)


_SQRT1_2 = math.sqrt(0.5)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_erfc = np.frompyfunc(math.erfc, 1, 1)
_erf = np.frompyfunc(math.erf, 1, 1)


def _ufunc(f, x):
    """A float ufunc made by ``np.frompyfunc``, applied to a float64 array (float64 out)."""
    return np.asarray(f(np.asarray(x, np.float64)), np.float64)


def norm_cdf(x):
    """The standard normal CDF on the host (``math.erfc``, elementwise; float64).

    Accurate to a few ulp in both tails, like ``scipy.special.ndtr``.
    """
    x = np.asarray(x, np.float64)
    return 0.5 * _ufunc(_erfc, -x * _SQRT1_2)


def _chi2_sf_one(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-squared(df), df a positive integer, by the finite series
    (all terms positive, summed in log space): for even df = 2m,
    exp(-y) sum_{k<m} y^k / k!, and for odd df = 2m + 1, erfc(sqrt y) +
    exp(-y) sum_{k=1..m} y^(k-1/2) / Gamma(k + 1/2), with y = x / 2."""
    if math.isnan(x):
        return math.nan
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    y = 0.5 * x
    log_y = math.log(y)
    if df % 2 == 0:
        logs = [k * log_y - math.lgamma(k + 1.0) for k in range(df // 2)]
        head = 0.0
    else:
        logs = [(k - 0.5) * log_y - math.lgamma(k + 0.5) for k in range(1, df // 2 + 1)]
        head = math.erfc(math.sqrt(y))
    if not logs:
        return head
    top = max(logs)
    tail = math.exp(top - y + math.log(math.fsum(math.exp(v - top) for v in logs)))
    return head + tail


def chi2_sf(x, df: int):
    """The chi-squared(df) survival function on the host, elementwise (float64; ``df`` a
    positive integer): relative error ~1e-14 against ``scipy.stats.chi2.sf`` (test).
    On the host because ``jax.scipy.stats.chi2.sf`` outside a program compiles a
    program per operation (~0.4 s for one likelihood-ratio test)."""
    df = int(df)
    if df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    x = np.asarray(x, np.float64)
    return np.vectorize(lambda v: _chi2_sf_one(float(v), df), otypes=[np.float64])(x)


def p_values(z):
    """Two-sided normal p-values for z statistics: P(|Z| >= |z|) = erfc(|z| / sqrt 2)."""
    if _on_device(z):
        return 2.0 * ndtr(-jnp.abs(z))
    z = np.asarray(z)
    return _ufunc(_erfc, np.abs(z.astype(np.float64)) * _SQRT1_2).astype(_float_dtype(z))


# Acklam's rational approximation of the normal quantile (relative error < 1.2e-9),
# the start of the Halley refinement in ``_ppf``.
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
      4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def _poly(coef, x):
    out = 0.0
    for c in coef:
        out = out * x + c
    return out


def _acklam_lower(p: float) -> float:
    """Acklam's approximation of the quantile of 0 < p <= 0.5."""
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        return _poly(_C, q) / (_poly(_D, q) * q + 1.0)
    q = p - 0.5
    r = q * q
    return _poly(_A, r) * q / (_poly(_B, r) * r + 1.0)


def _ppf(p: float) -> float:
    """The standard normal quantile of one probability, to about 1 ulp.

    The upper half is mirrored onto the lower (1 - p is exact for p >= 0.5), and
    Acklam's start is refined by Halley steps on Phi(x) - p; near the centre that
    residual is formed as erf(x / sqrt 2) / 2 - (p - 1/2) (p - 1/2 exact for
    p >= 1/4), so it keeps its relative accuracy as x -> 0.
    """
    if math.isnan(p) or p < 0.0 or p > 1.0:
        return math.nan
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p > 0.5:
        return -_ppf(1.0 - p)
    x = _acklam_lower(p)
    for _ in range(2):
        if p >= 0.25:
            e = 0.5 * math.erf(x * _SQRT1_2) - (p - 0.5)
        else:
            e = 0.5 * math.erfc(-x * _SQRT1_2) - p
        if e == 0.0:
            break
        # u = e / phi(x), formed as (e / p) / (phi(x) / p) so that neither factor
        # overflows or underflows in the far tail.
        u = (e / p) / math.exp(-0.5 * x * x - _LOG_SQRT_2PI - math.log(p))
        x = x - u / (1.0 + 0.5 * x * u)
    return x


_ppf_ufunc = np.frompyfunc(_ppf, 1, 1)


def norm_ppf(p):
    """The standard normal quantile (inverse CDF) on the host, elementwise; float64.

    Matches ``scipy.special.ndtri`` to about 1e-15 relative; 0 and 1 give -inf and
    inf, values outside [0, 1] NaN.
    """
    return _ufunc(_ppf_ufunc, p)


def normal_quantile(level: float) -> float:
    """The two-sided critical value z_{(1+level)/2} (host arithmetic, no XLA)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    # Phi^-1((1 + level) / 2) = -Phi^-1((1 - level) / 2): the small tail is exact.
    return -_ppf((1.0 - float(level)) / 2.0)


def wald_interval(estimate, stderr, level: float = 0.95):
    """Estimate +/- z * stderr, stacked on a new last axis (lower, upper)."""
    q = normal_quantile(level)
    xp = jnp if _on_device(estimate, stderr) else np
    estimate, stderr = xp.asarray(estimate), xp.asarray(stderr)
    return xp.stack([estimate - q * stderr, estimate + q * stderr], axis=-1)


def information_criteria(loglik, k: int, n_obs):
    """(AIC, BIC, AICc) for log-likelihood ``loglik`` with k free parameters."""
    if _on_device(loglik, n_obs):
        aic = 2.0 * k - 2.0 * loglik
        bic = k * jnp.log(n_obs) - 2.0 * loglik
        aicc = aic + 2.0 * k * (k + 1) / (n_obs - k - 1)
        aicc = jnp.where(n_obs - k - 1 > 0, aicc, np.inf)
        return aic, bic, aicc
    loglik, n_obs = np.asarray(loglik), np.asarray(n_obs)
    with np.errstate(divide="ignore", invalid="ignore"):
        aic = 2.0 * k - 2.0 * loglik
        bic = k * np.log(n_obs) - 2.0 * loglik
        aicc = np.where(n_obs - k - 1 > 0, aic + 2.0 * k * (k + 1) / (n_obs - k - 1), np.inf)
    return aic, bic, aicc
