"""Pure formulas of likelihood inference: information -> covariance, standard errors,
z statistics, p-values, Wald intervals, information criteria, delta method, sandwich.

Nothing here fits or evaluates a model: every function maps arrays to arrays and
works under jit and vmap. Covariances are reported on the natural scale: the
observed information H (negative Hessian of the log-likelihood, plus log-prior for
MAP) is computed in the unconstrained coordinates z and mapped with the Jacobian
J = d(natural)/dz: cov = J H^{-1} J'. At an interior optimum (zero gradient) this
equals the inverse information computed in natural coordinates, and it is also
defined for a simplex, whose natural coordinates are redundant (its covariance
block is singular, rows summing to zero).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri

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


def sandwich_cov(H, scores, J):
    """Sandwich (HC0) covariance J H^{-1} (S'S) H^{-1} J' from per-observation scores S (n, p)."""
    Hinv, _, _ = inverse_information(H)
    return J @ (Hinv @ (scores.T @ scores) @ Hinv) @ J.T


def delta_var(jac, cov):
    """Delta-method variance of a function with Jacobian ``jac`` (..., p) and covariance ``cov``."""
    return jnp.einsum("...i,ij,...j->...", jac, cov, jac)


def flat_stderr(cov):
    """Standard errors (last axis) from covariance matrices (last two axes)."""
    return jnp.sqrt(jnp.diagonal(cov, axis1=-2, axis2=-1))


def z_values(estimate, stderr):
    """Wald z statistics for H0: parameter = 0."""
    return estimate / stderr


def p_values(z):
    """Two-sided normal p-values for z statistics."""
    return 2.0 * ndtr(-jnp.abs(z))


def normal_quantile(level: float) -> float:
    """The two-sided critical value z_{(1+level)/2}."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(ndtri(0.5 + level / 2.0))


def wald_interval(estimate, stderr, level: float = 0.95):
    """Estimate +/- z * stderr, stacked on a new last axis (lower, upper)."""
    q = normal_quantile(level)
    return jnp.stack([estimate - q * stderr, estimate + q * stderr], axis=-1)


def information_criteria(loglik, k: int, n_obs):
    """(AIC, BIC, AICc) for log-likelihood ``loglik`` with k free parameters."""
    aic = 2.0 * k - 2.0 * loglik
    bic = k * jnp.log(n_obs) - 2.0 * loglik
    aicc = aic + 2.0 * k * (k + 1) / (n_obs - k - 1)
    aicc = jnp.where(n_obs - k - 1 > 0, aicc, np.inf)
    return aic, bic, aicc
