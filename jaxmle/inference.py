"""Inference from a fit: standard errors, z statistics, p-values, Wald intervals.

Covariances are reported on the natural scale. jaxmle computes the observed
information (negative Hessian of the log-likelihood, plus log-prior for MAP) by
autodiff in the unconstrained coordinates z at the optimum, and maps it with the
Jacobian J = d(natural)/dz: cov = J H_z^{-1} J'. At an interior optimum (zero
gradient) this equals the inverse information computed directly in natural
coordinates, and it is also defined for a simplex, whose natural coordinates are
redundant (its covariance block is singular, rows summing to zero).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri


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
