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

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri
from jax.scipy.stats import chi2


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


# -- tests between nested models ---------------------------------------------------

class LRTResult(NamedTuple):
    """Likelihood-ratio test: statistic 2(l_full - l_restricted), degrees of freedom, p-value."""

    stat: jax.Array
    df: int
    pvalue: jax.Array


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
    # A restricted optimum cannot beat the full one; tiny negatives are roundoff.
    stat = jnp.maximum(2.0 * (full.loglik - restricted.loglik), 0.0)
    return LRTResult(stat, df, chi2.sf(stat, df))


# -- delta method -----------------------------------------------------------------

def _derived_single(model, fn, theta, cov, leaves):
    spec = model.spec

    def g(t):
        return jnp.asarray(fn(spec.unflatten(spec.replace_free(leaves, t))))

    est = g(theta)
    J = jax.jacfwd(g)(theta).reshape(est.shape + (theta.shape[0],))
    var = jnp.einsum("...i,ij,...j->...", J, cov, J)
    return est, jnp.sqrt(var)


def derived(result, fn):
    """Estimate and delta-method standard error of ``fn(params)``.

    Args:
        result: a FitResult or BatchFitResult.
        fn: function of the natural-scale params dict returning a scalar or an array.

    Returns:
        (estimate, stderr), each shaped like ``fn``'s output (plus the batch axis).
    """
    leaves = jax.tree_util.tree_leaves(result.params)
    batched = np.ndim(result.loglik) == 1
    core = jax.jit(lambda t, c, ls: _derived_single(result.model, fn, t, c, ls))
    if batched:
        core = jax.jit(jax.vmap(lambda t, c, ls: _derived_single(result.model, fn, t, c, ls)))
    return core(result.estimate_flat, result.cov, leaves)


# -- sandwich covariance ------------------------------------------------------------

def _robust_single(model, z, fixed, data, mask):
    spec = model.spec
    data = model.prepared(data)

    def terms(zz):
        t = model.loglik(spec.to_params(zz, fixed), data)
        return t if mask is None else jnp.where(mask, t, 0)

    def neg_total(zz):
        return -model.logpost(spec.to_params(zz, fixed), data, mask)

    S = jax.jacrev(terms)(z)                      # (n, p) per-observation scores
    H = jax.hessian(neg_total)(z)
    Hinv = jnp.linalg.inv(0.5 * (H + H.T))
    cov_z = Hinv @ (S.T @ S) @ Hinv
    J = jax.jacfwd(lambda zz: spec.natural_flat(zz, fixed))(z)
    return J @ cov_z @ J.T


def robust_cov(result):
    """Sandwich covariance H^-1 (sum_i s_i s_i') H^-1 on the natural scale (HC0).

    Needs the data the fit saw and a log-density returning per-observation terms.
    """
    data, mask = getattr(result, "_data", None), getattr(result, "_mask", None)
    if data is None:
        raise ValueError(
            "this result does not carry its data (it was rebuilt by a JAX transform); "
            "use the FitResult returned by jm.fit / jm.fit_batch"
        )
    if result._n_terms is None:
        raise ValueError(
            "robust (sandwich) covariance needs per-observation log-likelihood terms, but the "
            "log-density returns a scalar: return the vector of terms instead of their sum"
        )
    model = result.model
    key = ("robust", np.ndim(result.loglik) == 1, mask is not None)
    fn = model._compiled.get(key)
    if fn is None:
        core = lambda z, fx, d, m: _robust_single(model, z, fx, d, m)  # noqa: E731
        if key[1]:
            core = jax.vmap(core, in_axes=(0, 0, 0, 0 if mask is not None else None))
        fn = model._compiled[key] = jax.jit(core)
    cov = fn(result.z, result.fixed, data, mask)
    bad = ~jnp.isfinite(result.cov[..., 0, 0]) if result.cov.size else False
    return jnp.where(jnp.reshape(bad, np.shape(bad) + (1, 1)), jnp.nan, cov)


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
    from ._fit import _as_arrays, fit, fit_batch
    from ._model import n_data

    if key is None:
        raise ValueError("bootstrap needs key=jax.random.key(seed) for reproducible resampling")
    if int(n) < 2:
        raise ValueError(f"bootstrap needs n >= 2 replicates, got {n}")
    data = _as_arrays(data)
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
