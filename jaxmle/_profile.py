"""Profile-likelihood confidence intervals, batched over parameters, sides and datasets.

For each free parameter theta_j the interval is {t : 2 (l_hat - l_p(t)) <= q} with
q the chi-squared(1) quantile and l_p(t) the log-likelihood maximised over the other
parameters with theta_j = t. The bijectors are elementwise and monotone, so fixing
theta_j is fixing its unconstrained coordinate z_j; each end of each interval is a
1-D root search in z_j (bracket by doubling, then Illinois regula falsi), every
evaluation re-optimising the other coordinates with Newton, warm-started from the
previous evaluation. All (parameter, side) searches, and all datasets of a batch,
run as lanes of one vmapped, compiled call.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import _stats
from ._data import n_data
from ._solve import make_objective, minimize, ready_data
from .optimizers import Newton

_MAX_DOUBLINGS = 12      # bracket up to 2^12 * 2 Wald SEs (in z) from the optimum
_MAX_EVALS = 60


def _z_index(spec):
    """For each free natural element, its z coordinate (or -1 for simplex elements)."""
    out, zi = [], 0
    for con, shape, size, fixed in zip(spec.constraints, spec.shapes, spec.free_sizes, spec.is_fixed):
        if fixed:
            continue
        n_el = int(np.prod(shape, dtype=int))
        if not con.elementwise:
            out += [-1] * n_el
        else:
            out += list(range(zi, zi + n_el))
        zi += size
    return np.asarray(out)


def _profile_single(model, q, gtol, ftol, n_static, z_hat, fixed, loglik_hat, data, mask, j, jz, side):
    """One end (side = -1 lower, +1 upper) of the interval of natural element j (z index jz)."""
    spec = model.spec
    dtype = z_hat.dtype
    obj = make_objective(model, dtype, fixed, ready_data(model, data, mask), mask, n_static)
    neg_total, scale = obj.neg_total, obj.scale
    p = z_hat.shape[0]
    valid = jz >= 0
    jz = jnp.maximum(jz, 0)
    e = jnp.arange(p) == jz
    Hinv, _, _ = _stats.inverse_information(jax.hessian(neg_total)(z_hat))
    s = jnp.sqrt(Hinv[jz, jz])
    opt = Newton()

    def profile_at(t, z_warm):
        value = z_hat[jz] + side * t * s

        def obj(z, _):
            # z_j is pinned by a decoupled quadratic: its Newton step lands on `value`.
            return neg_total(jnp.where(e, value, z)) / scale + 0.5 * (z[jz] - value) ** 2

        carry = minimize(opt, obj, jnp.where(e, value, z_warm), None, 50, gtol, ftol)
        z = jnp.where(e, value, carry.state.z)
        ll = -neg_total(z)
        D = 2.0 * (loglik_hat - ll) - q
        return D, z, carry.status

    # Phase 0 brackets the root by doubling t; phase 1 refines it; 2 = done; 3 = no root.
    t0 = jnp.asarray(2.0, dtype) * jnp.sqrt(jnp.asarray(q, dtype))
    D0, z0, _ = profile_at(t0, z_hat)
    D0 = jnp.where(jnp.isfinite(D0), D0, jnp.inf)
    init = dict(phase=jnp.where(D0 > 0, 1, 0), t_lo=jnp.zeros((), dtype), D_lo=-jnp.asarray(q, dtype),
                t_hi=t0, D_hi=D0, z=z0, n=jnp.ones((), jnp.int32), doublings=jnp.zeros((), jnp.int32),
                side_kept=jnp.zeros((), jnp.int32))

    def cond(c):
        return (c["phase"] < 2) & (c["n"] < _MAX_EVALS)

    def body(c):
        bracketing = c["phase"] == 0
        denom = c["D_hi"] - c["D_lo"]
        t_rf = c["t_lo"] - c["D_lo"] * (c["t_hi"] - c["t_lo"]) / jnp.where(denom == 0, 1.0, denom)
        t_rf = jnp.clip(t_rf, c["t_lo"], c["t_hi"])
        # Safeguard (as in Dekker/Brent): bisect when the upper end is infinite (the
        # objective overflowed there) or the secant point hugs an end of the bracket,
        # which happens when D is far from linear (e.g. near a boundary MLE).
        width = c["t_hi"] - c["t_lo"]
        frac = (t_rf - c["t_lo"]) / jnp.where(width > 0, width, 1.0)
        secant_ok = jnp.isfinite(c["D_hi"]) & (frac > 0.01) & (frac < 0.99)
        t_rf = jnp.where(secant_ok, t_rf, 0.5 * (c["t_lo"] + c["t_hi"]))
        t = jnp.where(bracketing, 2.0 * c["t_hi"], t_rf)
        D, z, _ = profile_at(t, c["z"])
        finite = jnp.isfinite(D)
        # Non-finite means "too far out": it bounds the root from above.
        D = jnp.where(finite, D, jnp.inf)
        new = dict(c)
        new["n"] = c["n"] + 1
        new["z"] = jnp.where(finite, z, c["z"])
        # Bracketing: move the bracket out; a sign change (or NaN) ends it.
        grow_lo = bracketing & (D <= 0)
        dbl = c["doublings"] + bracketing.astype(jnp.int32)
        # Refining (Illinois): replace the end with the same sign, halve the other's D
        # when the same end is kept twice in a row.
        refine = ~bracketing
        upper = D > 0
        keep = jnp.where(upper, 1, -1)
        illinois = refine & (keep == c["side_kept"])
        new["t_lo"] = jnp.where(grow_lo, c["t_hi"], jnp.where(refine & ~upper, t, c["t_lo"]))
        new["D_lo"] = jnp.where(grow_lo, c["D_hi"], jnp.where(refine & ~upper, D,
                                jnp.where(illinois & upper, 0.5 * c["D_lo"], c["D_lo"])))
        new["t_hi"] = jnp.where(bracketing, t, jnp.where(refine & upper, t, c["t_hi"]))
        new["D_hi"] = jnp.where(bracketing, D, jnp.where(refine & upper, D,
                                jnp.where(illinois & ~upper, 0.5 * c["D_hi"], c["D_hi"])))
        new["side_kept"] = jnp.where(refine, keep, c["side_kept"])
        new["doublings"] = dbl
        # Stop on the LR equation itself, or when the bracket is ~1e-10 wide in z.
        z_width = (new["t_hi"] - new["t_lo"]) * s
        done = refine & ((jnp.abs(D) <= 1e-9 * q) | (z_width <= 1e-10 * jnp.maximum(1.0, jnp.abs(z_hat[jz]))))
        phase = jnp.where(bracketing & (D > 0), 1, c["phase"])
        phase = jnp.where(bracketing & (dbl >= _MAX_DOUBLINGS) & (phase == 0), 3, phase)
        new["phase"] = jnp.where(done, 2, phase)
        return new

    c = jax.lax.while_loop(cond, body, init)
    denom = c["D_hi"] - c["D_lo"]
    t_root = c["t_lo"] - c["D_lo"] * (c["t_hi"] - c["t_lo"]) / jnp.where(denom == 0, 1.0, denom)
    t_root = jnp.where(c["phase"] == 3, jnp.inf, t_root)
    found = c["phase"] == 2
    z_end = z_hat.at[jz].set(z_hat[jz] + side * t_root * s)
    bound = spec.natural_flat(z_end, fixed)[j]
    bound = jnp.where(valid & jnp.isfinite(s) & ((c["phase"] >= 2) | (c["n"] >= _MAX_EVALS)), bound, jnp.nan)
    return bound, ~found & (c["phase"] == 3)


def profile_intervals(result, level: float = 0.95):
    """Profile-likelihood intervals and flags for a FitResult or BatchFitResult.

    Returns:
        (intervals, at_edge): flat arrays ``(..., m, 2)`` ordered as ``param_names``;
        ``at_edge`` is True where the profile never crossed the threshold before the
        constraint edge (or +/- infinity): the reported bound is that edge.
    """
    data, mask = result._data, result._mask
    if data is None:
        raise ValueError("profile intervals need the data: use the result returned by jm.fit / jm.fit_batch")
    model = result.model
    spec = model.spec
    batched = np.ndim(result.loglik) == 1
    q = _stats.normal_quantile(level) ** 2
    dtype = result.z.dtype
    gtol = Newton().default_gtol(dtype)
    ftol = 4 * float(jnp.finfo(dtype).eps)
    if result._n_terms is not None:
        n_static = result._n_terms
    else:
        one = jax.tree_util.tree_map(lambda a: a[0], data) if batched else data
        n_static = n_data(one)
    jz_all = _z_index(spec)
    m = len(jz_all)
    js = np.repeat(np.arange(m), 2)
    jzs = np.repeat(jz_all, 2)
    sides = np.tile(np.array([-1.0, 1.0]), m)

    def build():
        def lanes(z_hat, fixed, ll, d, mk, j, jz, side):
            f = lambda j_, jz_, s_: _profile_single(model, q, gtol, ftol, n_static, z_hat, fixed, ll, d, mk, j_, jz_, s_)  # noqa: E731
            return jax.vmap(f)(j, jz, side)

        core = lanes
        if batched:
            core = jax.vmap(lanes, in_axes=(0, 0, 0, 0, 0 if mask is not None else None, None, None, None))
        return jax.jit(core)

    fn = model.compiled(("profile", batched, mask is not None, q, n_static), build)
    bounds, edge = fn(result.z, result.fixed, result.logpost, data, mask,
                      jnp.asarray(js), jnp.asarray(jzs), jnp.asarray(sides, dtype))
    lead = bounds.shape[:-1]
    bounds = np.asarray(bounds).reshape(lead + (m, 2))
    edge = np.asarray(edge).reshape(lead + (m, 2))
    if (jz_all < 0).any():
        warnings.warn("profile intervals need an elementwise constraint (not jm.Simplex or "
                      "jm.PositiveDefinite elements): those are reported as NaN", stacklevel=3)
    return bounds, edge
