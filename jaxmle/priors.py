"""Ready log-priors for MAP estimation: ``jm.Model(loglik, spec, log_prior=...)``.

A Gaussian prior N(0, scale^2) is L2 (ridge) regularisation with penalty
lambda * ||theta||^2, lambda = 1 / (2 scale^2); a Laplace prior with scale b is L1
(lasso) with penalty ||theta||_1 / b. The L1 kink at zero is not smooth: use it for
shrinkage, and expect non-convergence for coefficients the penalty would set to 0.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.scipy import stats


def _select(params, names):
    if names is None:
        return jax.tree_util.tree_leaves(params)
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"prior names unknown parameters {missing}; parameters: {sorted(params)}")
    return [params[n] for n in names]


def gaussian(scale: float = 1.0, loc: float = 0.0, params: Sequence[str] | None = None):
    """Independent N(loc, scale^2) prior on the named parameters (all if None): ridge.

    Example:
        >>> model = jm.Model(loglik, {"beta": jnp.zeros(3)}, log_prior=jm.priors.gaussian(2.0))
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")

    def log_prior(p):
        return sum(jnp.sum(stats.norm.logpdf(v, loc, scale)) for v in _select(p, params))

    return log_prior


def laplace(scale: float = 1.0, loc: float = 0.0, params: Sequence[str] | None = None):
    """Independent Laplace(loc, scale) prior on the named parameters (all if None): lasso."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")

    def log_prior(p):
        return sum(jnp.sum(stats.laplace.logpdf(v, loc, scale)) for v in _select(p, params))

    return log_prior
