"""Inference that re-evaluates the model at a finished fit's estimate, without refitting:
the delta method for derived quantities and the sandwich covariance.

Both run as compiled programs cached on the model (``Model.compiled``), vmapped
over the datasets of a batched result.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _stats
from ._solve import ready_data


def _derived_single(model, fn, theta, cov, leaves):
    spec = model.spec

    def g(t):
        return jnp.asarray(fn(spec.unflatten(spec.replace_free(leaves, t))))

    est = g(theta)
    J = jax.jacfwd(g)(theta).reshape(est.shape + (theta.shape[0],))
    return est, jnp.sqrt(_stats.delta_var(J, cov))


def derived(result, fn):
    """Estimate and delta-method standard error of ``fn(params)``.

    Args:
        result: a FitResult or BatchFitResult.
        fn: function of the natural-scale params dict returning a scalar or an array.

    Returns:
        (estimate, stderr), each shaped like ``fn``'s output (plus the batch axis).
    """
    leaves = jax.tree_util.tree_leaves(result.params)
    core = lambda t, c, ls: _derived_single(result.model, fn, t, c, ls)  # noqa: E731
    if np.ndim(result.loglik) == 1:
        core = jax.vmap(core)
    return jax.jit(core)(result.estimate_flat, result.cov, leaves)


def _robust_single(model, z, fixed, data, mask):
    spec = model.spec
    data = ready_data(model, data, mask)

    def terms(zz):
        t = model.loglik(spec.to_params(zz, fixed), data)
        return t if mask is None else jnp.where(mask, t, 0)

    def neg_total(zz):
        return -model.logpost(spec.to_params(zz, fixed), data, mask)

    S = jax.jacrev(terms)(z)                      # (n, p) per-observation scores
    H = jax.hessian(neg_total)(z)
    J = jax.jacfwd(lambda zz: spec.natural_flat(zz, fixed))(z)
    return _stats.sandwich_cov(H, S, J)


def robust_cov(result):
    """Sandwich covariance H^-1 (sum_i s_i s_i') H^-1 on the natural scale (HC0).

    Needs the data the fit saw and a log-density returning per-observation terms.
    """
    data, mask = result._data, result._mask
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
    batched = np.ndim(result.loglik) == 1

    def build():
        core = lambda z, fx, d, m: _robust_single(model, z, fx, d, m)  # noqa: E731
        if batched:
            core = jax.vmap(core, in_axes=(0, 0, 0, 0 if mask is not None else None))
        return jax.jit(core)

    fn = model.compiled(("robust", batched, mask is not None), build)
    cov = fn(result.z, result.fixed, data, mask)
    bad = ~jnp.isfinite(result.cov[..., 0, 0]) if result.cov.size else False
    return jnp.where(jnp.reshape(bad, np.shape(bad) + (1, 1)), jnp.nan, cov)
