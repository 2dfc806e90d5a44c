"""Levenberg-Marquardt (MINPACK lmder style) for models that expose their residuals.

A nonlinear regression's negative mean log-likelihood is, up to constants,
log(sigma) + RSS(b) / (2 n sigma^2): minimising it over the mean parameters b is
least squares on the residual vector r(b), whatever sigma is, and sigma's MLE is
sqrt(RSS / n) in closed form. This method therefore runs a trust-region
Levenberg-Marquardt iteration on r (the coordinates of ``z`` other than sigma's)
and sets sigma's coordinate to its closed form after every accepted step, so the
point it reports is always on the profile likelihood. Only the state's ``f`` and
``grad`` (of the full objective, for the driver's stopping rule) see sigma.

The iteration follows More (1978) / MINPACK ``lmder``: column scaling D = running
maximum of the Jacobian's column norms, trust radius started at 100 ||D z||, the
Levenberg-Marquardt parameter found by safeguarded Newton on ||D p(lambda)|| =
radius (at most 10 iterations, 10% accuracy), radius shrunk below a ratio of
actual to predicted reduction of 0.25 and doubled above 0.75, steps accepted
above 1e-4. The damped system is solved through the SVD of the scaled n x k
Jacobian J D^-1 (never forming J'J, whose condition number is the square of J's);
one SVD per step serves every trial radius of that step.

At the floating-point floor the sum of squares can no longer tell a better point
from a worse one (its relative rounding noise exceeds the reduction any step
predicts) although the gradient still can. There, when the trust region has
collapsed, the Gauss-Newton step is taken if it at least halves the Gauss-Newton
decrement (a "polish" step, the analogue of Newton's line search accepting a step
that fails only by roundoff); the fit then stops at the point Newton's method would
reach, not a few digits short of it as MINPACK does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _linalg
from ._base import Optimizer, StepInfo, failed_if, info, lane_while


class LMState(NamedTuple):
    z: jax.Array
    f: jax.Array
    grad: jax.Array
    fnorm: jax.Array     # ||r||, the residual norm at z (masked observations contribute 0)
    sv: jax.Array        # singular values of the scaled Jacobian J D^-1 at z
    vt: jax.Array        # its right singular vectors (rows)
    proj: jax.Array      # U' r: the residuals in its left singular vectors
    diag: jax.Array      # (k,) MINPACK scaling D: running max of the Jacobian column norms
    radius: jax.Array    # trust radius on ||D p||
    par: jax.Array       # Levenberg-Marquardt parameter of the last trial (warm start)
    first: jax.Array     # True until the first step (MINPACK clamps the radius there)
    dec: jax.Array       # Gauss-Newton decrement of the objective at z


def _layout(model):
    """(indices of the mean parameters in z, index of sigma's coordinate or None)."""
    spec, sigma_name = model.spec, getattr(model, "sigma_name", None)
    mean_idx, sigma_idx, i = [], None, 0
    for name, size, fixed in zip(spec.leaf_names, spec.free_sizes, spec.is_fixed):
        if fixed:
            continue
        if name == sigma_name:
            if size != 1:
                raise ValueError(f"the noise parameter {name!r} must be a scalar")
            sigma_idx = i
        else:
            mean_idx.extend(range(i, i + size))
        i += size
    return np.asarray(mean_idx, dtype=np.int32), sigma_idx


def _lm_parameter(s, c, radius, par0, tol, n_iter=10):
    """MINPACK ``lmpar`` in SVD coordinates: lambda >= 0 with ||q(lambda)|| ~ radius.

    With J D^-1 = U diag(s) V' and c = U' r, the scaled step is
    q(lambda) = -V a(lambda), a_i = s_i c_i / (s_i^2 + lambda). lambda is 0 when
    the (minimum-norm) Gauss-Newton step lies within 1.1 x radius; otherwise a
    safeguarded Newton iteration on 1/||q|| - 1/radius finds it to 10%.

    Singular values at or below ``tol`` count as zero (rank-deficient J).

    Returns:
        (lambda, a): the parameter and the step's coefficients on V's columns.
    """
    dtype = s.dtype
    tiny = jnp.finfo(dtype).tiny
    keep = s > tol
    full_rank = jnp.all(keep)
    s_safe = jnp.where(keep, s, 1.0)

    def coef(lam):
        return jnp.where(keep, s * c / (s_safe * s_safe + lam), 0.0)

    def slope(a, lam):
        # sum a_i^2 / (s_i^2 + lambda): ||q||^2 times the squared norm MINPACK gets from R^-T.
        return jnp.sum(jnp.where(keep, a * a / (s_safe * s_safe + lam), 0.0))

    a0 = coef(jnp.zeros((), dtype))
    gn = jnp.linalg.norm(a0)
    fp0 = gn - radius
    gnorm = jnp.linalg.norm(s * c)                     # ||D^-1 J' r||
    parl = jnp.where(full_rank & (gn > 0), fp0 / radius * gn**2 / jnp.maximum(slope(a0, 0.0), tiny), 0.0)
    parl = jnp.maximum(parl, 0.0)
    paru = gnorm / radius
    paru = jnp.where(paru > 0, paru, tiny / jnp.minimum(radius, 0.1))
    par = jnp.clip(par0, parl, paru)
    par = jnp.where(par == 0, gnorm / jnp.maximum(gn, tiny), par)

    def body(_, carry):
        par, parl, paru, fp_prev, done = carry
        p = jnp.where(par == 0, jnp.maximum(tiny, 1e-3 * paru), par)
        a = coef(p)
        dx = jnp.linalg.norm(a)
        fp = dx - radius
        stop = (jnp.abs(fp) <= 0.1 * radius) | ((parl == 0) & (fp <= fp_prev) & (fp_prev < 0))
        parc = fp / radius * dx**2 / jnp.maximum(slope(a, p), tiny)
        parl_n = jnp.where(fp > 0, jnp.maximum(parl, p), parl)
        paru_n = jnp.where(fp < 0, jnp.minimum(paru, p), paru)
        p_next = jnp.maximum(parl_n, p + parc)
        upd = ~done & ~stop
        return (jnp.where(done, par, jnp.where(stop, p, p_next)), jnp.where(upd, parl_n, parl),
                jnp.where(upd, paru_n, paru), jnp.where(done, fp_prev, fp), done | stop)

    init = (par, parl, paru, jnp.asarray(jnp.inf, dtype), fp0 <= 0.1 * radius)
    par, *_ = jax.lax.fori_loop(0, n_iter, body, init)
    par = jnp.where(fp0 <= 0.1 * radius, 0.0, par)
    return par, coef(par)


@dataclasses.dataclass(frozen=True)
class LevenbergMarquardt(Optimizer):
    """Levenberg-Marquardt on the residuals of a nonlinear regression, sigma profiled.

    Built by ``method="lm"`` for models with a ``residuals(params, data)`` function
    and a ``sigma_name`` (``jm.models.nonlinear_regression``): the log-likelihood
    must be Gaussian in those residuals with standard deviation that parameter (or
    a fixed one), and every other free parameter must enter the residuals. One step
    is one MINPACK outer iteration: trial steps on shrinking trust radii until one
    reduces the residual sum of squares enough. A step that finds none before the
    radius collapses (to ``eps * ||D z||``, or after ``max_trials`` trials, or when
    the predicted and actual reductions are both below rounding), and whose
    Gauss-Newton polish step does not halve the decrement either, reports
    ``LINESEARCH_FAILED``; the driver's stall rule then decides whether the fit
    converged. ``decrement`` is the Gauss-Newton one. The Hessian for standard
    errors is the exact one of the full log-likelihood (observed information),
    computed by the driver at the end.

    Evaluation counts: each residual evaluation counts as an objective evaluation;
    each step's residual Jacobian and objective gradient as two gradients.

    Args:
        model: the model (set by ``create``).
        factor: initial trust radius as a multiple of ||D z|| (MINPACK's factor).
        max_trials: trial steps per iteration before the step gives up.

    Example:
        >>> model = jm.models.nonlinear_regression(f, {"b1": 500.0, "b2": 1e-4})
        >>> res = jm.fit(model, {"x": x, "y": y}, method="lm")
        >>> res = jm.fit(model, data, method=jm.optimizers.LevenbergMarquardt(model, factor=1.0))
    """

    model: Any = None
    factor: float = 100.0
    max_trials: int = 64
    name = "lm"
    default_max_iter = 500
    general = False

    @classmethod
    def create(cls, model=None) -> "LevenbergMarquardt":
        if model is None or getattr(model, "residuals", None) is None:
            raise ValueError(
                "method='lm' needs a model with a residual function (residuals), such as "
                "jm.models.nonlinear_regression; use 'newton', 'bfgs' or 'lbfgs' for this model"
            )
        if len(_layout(model)[0]) == 0:
            raise ValueError("method='lm' needs at least one free parameter of the mean function")
        return cls(model)

    # -- pieces --------------------------------------------------------------
    def _residual_fn(self, z, data):
        """r(zb): masked residuals as a function of the mean coordinates ``zb`` of z."""
        spec, mean_idx = self.model.spec, _layout(self.model)[0]

        def res(zb):
            r = self.model.residuals(spec.to_params(z.at[mean_idx].set(zb), data.fixed), data.data)
            r = jnp.ravel(r).astype(z.dtype)
            return r if data.mask is None else jnp.where(data.mask, r, 0.0)

        return res

    @staticmethod
    def _n_obs(r, data):
        n = r.shape[0] if data.mask is None else jnp.sum(data.mask)
        return jnp.maximum(jnp.asarray(n, r.dtype), 1.0)

    def _sigma2(self, z, data, default):
        """sigma^2 at z: from its coordinate, its fixed value, or ``default``."""
        spec, name = self.model.spec, getattr(self.model, "sigma_name", None)
        sigma_idx = _layout(self.model)[1]
        if sigma_idx is not None:
            return jnp.exp(2 * z[sigma_idx])
        j = 0
        for leaf, fixed in zip(spec.leaf_names, spec.is_fixed):
            if fixed:
                if leaf == name:
                    return jnp.asarray(data.fixed[j], z.dtype) ** 2
                j += 1
        return default

    def _linearise(self, objective, z, diag, data):
        """Everything a step needs at the point z (sigma's coordinate is set to its
        closed form here), with D = max(diag, column norms of the Jacobian).

        Returns:
            (z, f, grad, fnorm, sv, vt, proj, diag, dec): the ``LMState`` fields but
            the radius ones.
        """
        mean_idx, sigma_idx = _layout(self.model)
        res = self._residual_fn(z, data)

        def both(zb):
            r = res(zb)
            return r, r

        J, r = jax.jacfwd(both, has_aux=True)(z[mean_idx])
        n, rss = self._n_obs(r, data), jnp.vdot(r, r)
        if sigma_idx is not None:
            var = jnp.maximum(rss / n, jnp.finfo(z.dtype).tiny)
            z = z.at[sigma_idx].set(0.5 * jnp.log(var))
        f, g = jax.value_and_grad(objective)(z, data)
        cn = jnp.linalg.norm(J, axis=0)
        diag = jnp.maximum(diag, jnp.where(cn > 0, cn, 1.0))
        U, sv, vt = _linalg.svd(J / diag)
        proj = U.T @ r
        # Gauss-Newton decrement g' H^-1 g of the mean objective, H its Gauss-Newton
        # (expected-information) Hessian: ||P_J r||^2 / (n sigma^2) for the mean
        # parameters, plus g_s^2 / (2 RSS / (n sigma^2)) for sigma's log coordinate.
        sigma2 = self._sigma2(z, data, rss / n)
        keep = sv > _rank_tol(sv, J.shape)
        dec = jnp.sum(jnp.where(keep, proj**2, 0.0)) / (n * sigma2)
        if sigma_idx is not None:
            h_ss = 2 * rss / (n * sigma2)
            dec = dec + g[sigma_idx] ** 2 / jnp.where(h_ss > 0, h_ss, 1.0)
        return z, f, g, jnp.sqrt(rss), sv, vt, proj, diag, dec

    # -- protocol ------------------------------------------------------------
    def init(self, objective, z0, data) -> tuple[LMState, StepInfo]:
        mean_idx = _layout(self.model)[0]
        zeros = jnp.zeros(len(mean_idx), z0.dtype)
        z, f, g, fnorm, sv, vt, proj, diag, dec = self._linearise(objective, z0, zeros, data)
        xnorm = jnp.linalg.norm(diag * z[mean_idx])
        radius = jnp.where(xnorm > 0, self.factor * xnorm, self.factor)
        zero = jnp.zeros((), z.dtype)
        state = LMState(z, f, g, fnorm, sv, vt, proj, diag, radius, zero, jnp.ones((), bool), dec)
        return state, info(1, 2, 0)

    def step(self, objective, state: LMState, data, active=True) -> tuple[LMState, StepInfo]:
        mean_idx = _layout(self.model)[0]
        eps = jnp.finfo(state.z.dtype).eps
        zb, diag, fnorm = state.z[mean_idx], state.diag, state.fnorm
        s, vt, c = state.sv, state.vt, state.proj
        res = self._residual_fn(state.z, data)
        n_res = jax.eval_shape(res, zb).shape[0]
        tol = _rank_tol(s, (n_res, zb.shape[0]))
        fsafe = jnp.where(fnorm > 0, fnorm, 1.0)
        xnorm = jnp.linalg.norm(diag * zb)
        # The Gauss-Newton step and the relative reduction of ||r||^2 it predicts.
        keep = s > tol
        gn_step = -(vt.T @ jnp.where(keep, c / jnp.where(keep, s, 1.0), 0.0)) / diag
        gn_pred = jnp.sum(jnp.where(keep, c**2, 0.0)) / fsafe**2
        at_floor = gn_pred <= 4 * eps           # no step can show a reduction above rounding

        def trial(carry):
            radius, par, _, _, k, _ = carry
            par, a = _lm_parameter(s, c, radius, par, tol)
            q = -(vt.T @ a)                    # D p
            pnorm = jnp.linalg.norm(q)
            radius = jnp.where(state.first, jnp.minimum(radius, pnorm), radius)
            zt = zb + q / diag
            fnorm1 = jnp.linalg.norm(res(zt))
            fnorm1 = jnp.where(jnp.isfinite(fnorm1), fnorm1, jnp.inf)
            actred = jnp.where(0.1 * fnorm1 < fnorm, 1 - (fnorm1 / fsafe) ** 2, -1.0)
            t1 = jnp.linalg.norm(s * (vt @ q)) / fsafe          # ||J p|| / ||r||
            t2 = jnp.sqrt(par) * pnorm / fsafe
            prered = t1**2 + 2 * t2**2
            dirder = -(t1**2 + t2**2)
            ratio = jnp.where(prered != 0, actred / prered, 0.0)
            # Radius update (MINPACK lmder): shrink below 0.25, double above 0.75.
            shrink = jnp.where(actred >= 0, 0.5, 0.5 * dirder / (dirder + 0.5 * actred))
            shrink = jnp.where((0.1 * fnorm1 >= fnorm) | (shrink < 0.1), 0.1, shrink)
            grow = (par == 0) | (ratio >= 0.75)
            radius, par = (
                jnp.where(ratio <= 0.25, shrink * jnp.minimum(radius, 10 * pnorm),
                          jnp.where(grow, 2 * pnorm, radius)),
                jnp.where(ratio <= 0.25, par / shrink, jnp.where(grow, 0.5 * par, par)),
            )
            ok = ratio >= 1e-4
            # No acceptable step left: the radius has collapsed, or neither the actual
            # nor the predicted reduction is above rounding (MINPACK info 6 and 7).
            dead = (~ok) & ((radius <= eps * xnorm) | ((jnp.abs(actred) <= eps) & (prered <= eps))
                            | (k + 1 >= self.max_trials))
            return radius, par, ok, dead, k + 1, zt

        def pending(carry):
            _, _, ok, dead, _, _ = carry
            return ~ok & ~dead & active

        none = jnp.zeros((), bool)
        carry = (state.radius, state.par, none, (fnorm == 0) | at_floor, jnp.zeros((), jnp.int32), zb)
        radius, par, ok, _, n_trials, zt = lane_while(pending, trial, carry)
        # Without an acceptable trial, near the floor try the Gauss-Newton step (polish).
        polish = ~ok & (gn_pred <= jnp.sqrt(eps)) & (fnorm > 0) & active
        zt = jnp.where(ok, zt, jnp.where(polish, zb + gn_step, zb))
        fresh = self._linearise(objective, state.z.at[mean_idx].set(zt), diag, data)
        kept = (state.z, state.f, state.grad, fnorm, s, vt, c, diag, state.dec)
        polished = polish & jnp.isfinite(fresh[1]) & (fresh[-1] < 0.5 * state.dec)
        take = ok | polished
        z, f, g, fnorm, s, vt, c, diag, dec = (jnp.where(take, a, b) for a, b in zip(fresh, kept))
        new = LMState(z, f, g, fnorm, s, vt, c, diag, radius, par, jnp.zeros((), bool), dec)
        return new, info(n_trials + 1, 2, 0, failed_if(~take))

    def decrement(self, state: LMState, step=None):
        """The Gauss-Newton decrement g' H^-1 g (H: the objective's Gauss-Newton Hessian)."""
        return state.dec

    def newton_step(self, state: LMState):
        """The Gauss-Newton step in the mean coordinates (sigma sits at its closed form)."""
        mean_idx = _layout(self.model)[0]
        keep = state.sv > _rank_tol(state.sv, (state.proj.shape[0], mean_idx.size))
        gn = (state.vt.T @ jnp.where(keep, state.proj / jnp.where(keep, state.sv, 1.0), 0.0)) / state.diag
        return jnp.zeros_like(state.z).at[mean_idx].set(gn)


def _rank_tol(sv, shape):
    """Singular values at or below this count as zero (numpy's pinv/lstsq default)."""
    return jnp.finfo(sv.dtype).eps * max(shape) * jnp.max(sv, initial=0.0)
