"""Inference tools above the fit layer: likelihood-ratio tests and the bootstrap
(which refits), re-exporting the formulas and post-fit tools results use.

Covariances are reported on the natural scale (see ``jaxmle._stats``): the
observed information is computed by autodiff in the unconstrained coordinates z
at the optimum and mapped with the Jacobian J = d(natural)/dz: cov = J H_z^{-1} J'.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._data import as_arrays, n_data
from ._fit import fit, fit_batch
from ._postfit import derived, robust_cov
from ._stats import (chi2_sf, flat_stderr, information_criteria, normal_quantile, p_values,
                     wald_interval, z_values)


# -- tests between nested models ---------------------------------------------------

class LRTResult(NamedTuple):
    """Likelihood-ratio test: statistic 2(l_full - l_restricted), degrees of freedom, p-value."""

    stat: np.ndarray
    df: int
    pvalue: np.ndarray


def lr_test(restricted, full) -> LRTResult:
    """Likelihood-ratio test of a restricted model against the full model it is nested in.

    Express the restriction with ``jm.Fixed`` in the restricted model's spec. Works
    elementwise on batched results.

    Args:
        restricted: fit of the restricted model (fewer free parameters).
        full: fit of the full model on the same data.

    Returns:
        ``LRTResult(stat, df, pvalue)`` with the chi-squared(df) p-value.

    Example:
        >>> jm.lr_test(jm.fit(model_beta1_fixed_at_0, data), jm.fit(model, data))
    """
    df = int(full.k - restricted.k)
    if df <= 0:
        raise ValueError(
            f"the restricted model has {restricted.k} free parameters and the full one "
            f"{full.k}: pass (restricted, full) with the restricted model nested in the full one"
        )
    if np.shape(restricted.loglik) != np.shape(full.loglik):
        raise ValueError("restricted and full results must have the same batch shape")
    n_r, n_f = np.asarray(restricted.n_obs), np.asarray(full.n_obs)
    if not np.array_equal(n_r, n_f, equal_nan=True):
        raise ValueError("restricted and full fits used different numbers of observations")
    # A restricted optimum cannot beat the full one; tiny negatives are roundoff. Host
    # NumPy (reporting): jax.numpy here compiled a program per operation (~0.4 s).
    diff = np.asarray(full.loglik) - np.asarray(restricted.loglik)
    stat = np.maximum(2.0 * diff, 0.0)
    # [()] : a NumPy scalar for one test, as the statistic is, an array for a batch.
    return LRTResult(stat, df, chi2_sf(stat, df).astype(np.result_type(stat))[()])


# -- bootstrap ------------------------------------------------------------------------

class BootstrapResult:
    """Bootstrap replicates of a fit: ``samples`` has a leading axis of length n.

    Attributes:
        estimate: the original fit (a FitResult).
        samples: params dict of the replicate estimates (leading axis n).
        status: per-replicate ``jm.Status`` codes; only converged replicates are used.
    """

    def __init__(self, estimate, batch):
        self.estimate = estimate
        self.batch = batch
        self.samples = batch.params
        self.status = batch.status

    @property
    def n_used(self) -> int:
        return int(np.sum(np.asarray(self.batch.converged)))

    def _ok(self):
        ok = np.asarray(self.batch.converged)
        if not ok.any():
            raise ValueError("no bootstrap replicate converged; see .status")
        return ok

    @property
    def stderr(self):
        """Standard deviation of the converged replicates, shaped like params."""
        ok = self._ok()
        return jax.tree_util.tree_map(lambda a: np.std(np.asarray(a)[ok], axis=0, ddof=1), self.samples)

    def conf_int(self, level: float = 0.95) -> dict:
        """Percentile intervals {name: array(param.shape + (2,))} of the free parameters."""
        normal_quantile(level)  # validates level
        ok = self._ok()
        spec = self.estimate.model.spec
        q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
        leaves = jax.tree_util.tree_leaves(self.samples)
        return {
            name: np.moveaxis(np.percentile(np.asarray(v)[ok], q, axis=0), 0, -1)
            for name, v, fixed in zip(spec.leaf_names, leaves, spec.is_fixed)
            if not fixed
        }

    def __repr__(self):
        se = jax.tree_util.tree_map(lambda a: np.round(a, 6).tolist(), self.stderr)
        return f"BootstrapResult(n={len(self.batch)}, converged={self.n_used}, stderr={se})"


def bootstrap(model, data, n: int = 1000, key=None, simulate=None, method="auto", **fit_kwargs):
    """Bootstrap a fit: all ``n`` refits run in one ``fit_batch`` call.

    Nonparametric by default: observations (the common leading axis of every data
    leaf) are resampled with replacement. With ``simulate(key, params) -> data`` it
    is parametric: each replicate is simulated from the fitted parameters.

    Args:
        model: a ``jm.Model``.
        data: the observed data.
        n: number of replicates.
        key: a ``jax.random.key``.
        simulate: optional simulator for the parametric bootstrap.
        method: optimizer for the original fit and the refits.

    Returns:
        A ``BootstrapResult`` with ``.stderr`` and ``.conf_int(level)``.

    Example:
        >>> boot = jm.bootstrap(model, x, n=1000, key=jax.random.key(0))
        >>> boot.stderr["mu"], boot.conf_int(0.95)["mu"]
    """
    if key is None:
        raise ValueError("bootstrap needs key=jax.random.key(seed) for reproducible resampling")
    if int(n) < 2:
        raise ValueError(f"bootstrap needs n >= 2 replicates, got {n}")
    data = as_arrays(data)
    base = fit(model, data, method=method, **fit_kwargs)
    if simulate is None:
        n_obs = n_data(data)
        if n_obs is None:
            raise ValueError(
                "nonparametric bootstrap resamples the leading axis of every data leaf, but "
                "the leaves' leading axes differ; pass simulate= for a parametric bootstrap"
            )
        idx = jax.random.randint(key, (int(n), n_obs), 0, n_obs)
        reps = jax.tree_util.tree_map(lambda x: x[idx], data)
    else:
        keys = jax.random.split(key, int(n))
        reps = jax.vmap(simulate, in_axes=(0, None))(keys, base.params)
    start = jax.tree_util.tree_map(np.asarray, base.params)
    batch = fit_batch(model, reps, method=method, init=start, nan_policy="status", **fit_kwargs)
    return BootstrapResult(base, batch)


__all__ = [
    "LRTResult", "lr_test", "BootstrapResult", "bootstrap", "derived", "robust_cov", "flat_stderr",
    "z_values", "p_values", "normal_quantile", "wald_interval", "information_criteria",
]
