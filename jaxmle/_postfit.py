"""Inference that re-evaluates the model at a finished fit's estimate, without refitting:
the delta method and profile intervals for derived quantities, and the sandwich
covariance.

All run as compiled programs, vmapped over the datasets of a batched result.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import warnings

from . import _stats
from ._compile import fingerprint, jit
from ._linalg import lapack_ready
from ._model import Model
from ._profile import _setup, missing_data_message
from ._solve import make_objective, ready_data


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
    batched = np.ndim(result.loglik) == 1

    def build():
        core = lambda t, c, ls: _derived_single(result.model, fn, t, c, ls)  # noqa: E731
        return jit(jax.vmap(core) if batched else core)

    return _cached(result.model, ("derived", batched), fn, build)(result.estimate_flat, result.cov, leaves)


def _cached(model, key, fn, build):
    """The model's program for ``fn`` under ``key``: compiled once per function that
    computes the same thing (``jaxmle._compile.fingerprint``), so calling ``derived``
    again, or with a re-defined lambda of the same code, compiles nothing. A function
    without a fingerprint (it reads an object jaxmle cannot key) compiles every call."""
    fp = fingerprint(fn)
    if fp is None or not isinstance(model, Model):     # a detached (unpickled) result's model
        return build()
    return model.compiled(key + (fp,), build)


def derived_interval(result, fn, level: float = 0.95, method: str = "delta"):
    """Estimate, standard error and confidence interval of ``fn(params)``.

    Args:
        result: a FitResult or BatchFitResult.
        fn: function of the natural-scale params dict; a scalar for ``method="profile"``.
        level: coverage of the interval.
        method: "delta" (estimate +/- z * delta-method stderr; any output shape) or
            "profile" (likelihood-ratio interval: the extremes of ``fn`` over the
            parameters whose log-likelihood is within q/2 of the maximum, q the
            chi-squared(1) quantile; respects constraints and is invariant to
            reparametrisation, as profile intervals are).

    Returns:
        (estimate, stderr, (lower, upper)), each shaped like ``fn``'s output (plus the
        batch axis). A profile bound whose search fails (e.g. the interval is
        unbounded) is NaN, with a warning.

    Example:
        >>> est, se, (lo, hi) = res.derived(lambda p: p["sigma"] / p["mu"], method="profile")
    """
    est, se = derived(result, fn)
    q = _stats.normal_quantile(level)
    if method == "delta":
        return est, se, (est - q * se, est + q * se)
    if method != "profile":
        raise ValueError(f"unknown derived interval method {method!r}; available: 'delta', 'profile'")
    if np.shape(est) != np.shape(result.loglik):
        raise ValueError(f"method='profile' needs a scalar function of the parameters; fn returns shape "
                         f"{np.shape(est)[np.ndim(result.loglik):]}")
    lo, hi = _derived_profile(result, fn, q * q)
    if not (np.isfinite(lo) & np.isfinite(hi) | ~np.isfinite(np.asarray(est))).all():
        warnings.warn("the profile interval search for the derived quantity failed for some bounds "
                      "(reported as NaN): the interval may be unbounded", stacklevel=3)
    return est, se, (lo, hi)


_KKT_ITERS = 100


def _derived_end(obj, g, q, z_hat, f_hat, side):
    """Maximise side * g(z) subject to neg_total(z) = f_hat + q/2 (one end of the interval).

    Newton's method on the Lagrange conditions side * grad g = mu * grad F, F = f_hat + q/2
    (mu > 0: the outward normal), from the Wald end of a quadratic log-likelihood,
    with backtracking on the residual.
    """
    F = obj.neg_total
    Sigma = _stats.inverse_information(jax.hessian(F)(z_hat))[0]
    a = jax.grad(g)(z_hat)
    v = a @ Sigma @ a
    rq = jnp.sqrt(q)
    z0 = z_hat + side * rq * (Sigma @ a) / jnp.sqrt(v)
    mu0 = jnp.sqrt(v) / rq
    p = z_hat.shape[0]

    def residual(z, mu):
        r1 = side * jax.grad(g)(z) - mu * jax.grad(F)(z)
        r2 = F(z) - f_hat - 0.5 * q
        return r1, r2

    def merit(z, mu):
        r1, r2 = residual(z, mu)
        m = (r1 @ Sigma @ r1) / (mu * mu * q) + (r2 / q) ** 2
        return jnp.where(jnp.isfinite(m) & (mu > 0), m, jnp.inf)

    def body(c):
        z, mu, m, n, _ = c
        r1, r2 = residual(z, mu)
        A = side * jax.hessian(g)(z) - mu * jax.hessian(F)(z)
        gF = jax.grad(F)(z)
        K = jnp.block([[A, -gF[:, None]], [gF[None, :], jnp.zeros((1, 1), z.dtype)]])
        lapack_ready()
        d = jnp.linalg.solve(K, -jnp.concatenate([r1, r2[None]]))
        dz, dmu = d[:p], d[p]

        def shrink(s):
            alpha, _ = s
            return alpha * 0.5, merit(z + 0.5 * alpha * dz, mu + 0.5 * alpha * dmu)

        def worse(s):
            alpha, m_new = s
            return (m_new > (1.0 - 1e-4 * alpha) * m) & (alpha > 1e-9)

        alpha, m_new = jax.lax.while_loop(worse, shrink, (jnp.ones((), z.dtype), merit(z + dz, mu + dmu)))
        ok = m_new < m
        z = jnp.where(ok, z + alpha * dz, z)
        mu = jnp.where(ok, mu + alpha * dmu, mu)
        return z, mu, jnp.where(ok, m_new, m), n + 1, ~ok

    def running(c):
        return (c[2] > 1e-18) & (c[3] < _KKT_ITERS) & ~c[4] & jnp.isfinite(c[2])

    z, mu, m, _, _ = jax.lax.while_loop(running, body, (z0, mu0, merit(z0, mu0), 0, jnp.zeros((), bool)))
    return jnp.where(m <= 1e-16, g(z), jnp.nan)


def _derived_profile(result, fn, q):
    """(lower, upper) profile bounds of a scalar ``fn(params)``, batched like the result."""
    if result._data is None:
        raise ValueError(missing_data_message("a profile interval"))
    model, spec = result.model, result.model.spec
    batched, n_static, _, _ = _setup(result)
    mask = result._mask

    def one(z_hat, fixed, f_hat, data, mk):
        obj = make_objective(model, z_hat.dtype, fixed, ready_data(model, data, mk), mk, n_static)

        def g(z):
            return jnp.asarray(fn(spec.to_params(z, fixed)), z.dtype)

        sides = jnp.asarray([-1.0, 1.0], z_hat.dtype)
        ends = jax.vmap(lambda s: _derived_end(obj, g, q, z_hat, f_hat, s))(sides)
        return ends[0], ends[1]

    def build():
        if batched:
            return jit(jax.vmap(one, in_axes=(0, 0, 0, 0, 0 if mask is not None else None)))
        return jit(one)

    key = ("derived_profile", batched, mask is not None, n_static, float(q))
    f_hat = -np.asarray(result.logpost)      # on the host: a negation outside a program compiles one
    lo, hi = _cached(model, key, fn, build)(result.z, result.fixed, f_hat, result._data, mask)
    return np.asarray(lo), np.asarray(hi)


def _robust_single(model, z, fixed, data, mask):
    spec = model.spec
    data = ready_data(model, data, mask)

    def terms(zz):
        t = model.loglik(spec.to_params(zz, fixed), data)
        return t if mask is None else jnp.where(mask, t, 0)

    def neg_total(zz):
        return -model.logpost(spec.to_params(zz, fixed), data, mask)

    # (n, p) per-observation scores. Reverse mode pulls back one cotangent per
    # observation, each through the whole data (n x n intermediates: 720 GB for
    # 300,000 rows); forward mode pushes one tangent per parameter (n x p).
    n_terms = jax.eval_shape(terms, z).shape[0]
    S = (jax.jacfwd if n_terms >= z.shape[0] else jax.jacrev)(terms)(z)
    H = jax.hessian(neg_total)(z)
    J = jax.jacfwd(lambda zz: spec.natural_flat(zz, fixed))(z)
    return _stats.sandwich_cov(H, S, J)


def robust_cov(result):
    """Sandwich covariance H^-1 (sum_i s_i s_i') H^-1 on the natural scale (HC0).

    Needs the data the fit saw and a log-density returning per-observation terms.
    """
    data, mask = result._data, result._mask
    if data is None:
        raise ValueError(missing_data_message("the robust (sandwich) covariance"))
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
        return jit(core)

    fn = model.compiled(("robust", batched, mask is not None), build)
    cov = np.asarray(fn(result.z, result.fixed, data, mask))
    # On the host, as the fit's own covariance (jax.numpy here compiled a program per operation).
    ref = np.asarray(result.cov)
    bad = ~np.isfinite(ref[..., 0, 0]) if ref.size else False
    return np.where(np.reshape(bad, np.shape(bad) + (1, 1)), np.nan, cov)
