"""Newton's method with an exact autodiff Hessian: trust region (default) or line search.

The trust-region variant (Nocedal & Wright ch. 4) measures steps in a scaled norm
||D p|| with D the running maximum of sqrt|diag H| (MINPACK's choice for
Levenberg-Marquardt), so it is unaffected by how the user scales a parameter. A
positive-definite Hessian gives the Newton step from its Cholesky factor, and
Powell's dogleg (towards steepest descent) when that step leaves the region; an
indefinite one solves the exact subproblem with an eigendecomposition (Moré &
Sorensen 1983: the secular equation for the multiplier, the hard case included).
Under vmap the eigendecomposition runs only in iterations where some fit needs it.

The line-search variant (``globalization="line-search"``) is the older damped
Newton: the eigenvalue fix for indefinite Hessians plus Armijo backtracking.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import _linalg
from ._base import (Optimizer, StepInfo, backtracking, descent_direction, failed_if, info, lane_while,
                    value_grad_hessian)


class NewtonState(NamedTuple):
    z: jax.Array
    f: jax.Array
    grad: jax.Array
    hess: jax.Array      # the objective's Hessian at z
    chol: jax.Array      # its Cholesky factor, NaN where it is not positive definite
    radius: jax.Array    # trust radius in the scaled norm ||D p||
    scale: jax.Array     # D: running max of sqrt|diag H|
    newton: jax.Array    # the Newton step -H^-1 g, NaN where H is not positive definite


def newton_state(z, f, g, H, chol, radius, D) -> NewtonState:
    """The state at z, with its Newton step solved once from the Cholesky factor.

    The trust-region step and the stopping rule (decrement, step size) both read the
    step from here: one solve per iteration, not one for each.
    """
    step, ok = cholesky_step(chol, g)
    return NewtonState(z, f, g, H, chol, radius, D, jnp.where(ok, step, jnp.nan))


def start_state(z0, f, g, H, chol, initial_radius) -> NewtonState:
    """The state at the start: the scaling D = sqrt|diag H| (1 where that is 0 or not
    finite) and the first trust radius, ``initial_radius`` ||D z0|| (``initial_radius``
    itself at z0 = 0) but at least the scaled Newton step where H is positive definite:
    a well-behaved fit loses no iterations to a small radius, which holds back the first
    steps from an indefinite start only. Shared by ``Newton.init``, the chunked fit and
    the trust-region step's fresh lanes (``_first_scaling``, ``_at_least_newton``)."""
    D, radius = _first_scaling(jnp.sqrt(jnp.abs(jnp.diagonal(H))), z0, initial_radius)
    return _at_least_newton(newton_state(z0, f, g, H, chol, radius, D))


def _first_scaling(diag, z0, initial_radius):
    """``start_state``'s scaling D from ``diag`` = sqrt|diag H| (1 where that is 0 or not
    finite) and its first radius, ``initial_radius`` ||D z0|| (``initial_radius`` at z0 = 0)."""
    D = jnp.where((diag > 0) & jnp.isfinite(diag), diag, 1.0)
    dz = jnp.linalg.norm(D * z0)
    return D, initial_radius * jnp.where(dz > 0, dz, 1.0)


def _at_least_newton(state: NewtonState, where=True) -> NewtonState:
    """``state`` with its radius at least its scaled Newton step, where that is finite
    (and ``where`` holds)."""
    pn = jnp.linalg.norm(state.scale * state.newton)
    return state._replace(radius=jnp.where(where & jnp.isfinite(pn), jnp.maximum(state.radius, pn), state.radius))


_cholesky = _linalg.cholesky


def newton_direction(H, g, d_chol):
    """Newton direction -H^-1 g, with the eigenvalue fix when H is not positive definite.

    ``d_chol`` is -H^-1 g from the Cholesky factor (``NewtonState.newton``: NaN where H
    is not positive definite), the fast path. Fits where it is NaN use the eigenvalue fix
    (``modified_newton_direction``), computed only when some fit needs it, so a
    batch of positive-definite Hessians costs its Cholesky factorisations alone.
    The eigendecomposition comes after the Cholesky solve, which keeps the LAPACK
    calls strictly sequential: with jax 0.10.2, LAPACK calls free to run
    concurrently in one vmapped program (e.g. a triangular solve beside an eigh)
    intermittently deadlocked XLA:CPU on repeated execution.
    """
    H = 0.5 * (H + H.T)
    eye = jnp.eye(H.shape[0], dtype=H.dtype)
    use_chol = jnp.all(jnp.isfinite(d_chol))

    def fix(c):
        return jnp.zeros((), bool), modified_newton_direction(jnp.where(c[0], H, eye), g)

    return lane_while(lambda c: c[0], fix, (~use_chol, d_chol))[1]


def modified_newton_direction(H, g, rel_floor=1e-10):
    """Newton direction with the Hessian made positive definite (the eigenvalue fix).

    Negative eigenvalues are flipped and tiny ones floored at ``rel_floor`` times
    the largest, so the direction is always a descent direction; for a
    positive-definite Hessian it is the plain Newton step.
    """
    H = 0.5 * (H + H.T)
    w, V = _linalg.eigh(H)
    top = jnp.maximum(jnp.max(jnp.abs(w)), jnp.finfo(H.dtype).tiny)
    w = jnp.maximum(jnp.abs(w), rel_floor * top)
    return -V @ ((V.T @ g) / w)


def boundary_step(H, g, radius, n_newton=40):
    """argmin g'p + p'Hp/2 subject to ||p|| = radius, for a symmetric H (any inertia).

    With H = V diag(w) V' and a = V'g, p(lam) = -V a / (w + lam); the multiplier
    lam >= max(0, -w_min) solves ||p(lam)|| = radius, found by Newton's method on
    1/||p(lam)|| - 1/radius, which is nearly linear in lam and converges
    monotonically from the left (Moré & Sorensen 1983). In the hard case (g
    orthogonal to the lowest eigenvector of an indefinite H) the step is completed
    along that eigenvector to the boundary.
    """
    w, V = _linalg.eigh(H)
    a = V.T @ g
    dtype = g.dtype
    eps = jnp.finfo(dtype).eps
    top = jnp.maximum(jnp.max(jnp.abs(w)), jnp.finfo(dtype).tiny)
    lo = jnp.maximum(0.0, -w[0]) + 10 * eps * top + jnp.finfo(dtype).tiny

    def norms(lam):
        d = w + lam
        q = a / d
        return jnp.sqrt(jnp.vdot(q, q)), jnp.vdot(q, q / d)

    def newton(_, lam):
        pn, s3 = norms(lam)
        # phi = 1/pn - 1/radius; phi' = s3 / pn^3.
        step = (1.0 / pn - 1.0 / radius) * pn ** 3 / jnp.maximum(s3, jnp.finfo(dtype).tiny)
        return jnp.maximum(lam - step, lo)

    lam = jax.lax.fori_loop(0, n_newton, newton, lo)
    p = -V @ (a / (w + lam))
    pn = jnp.linalg.norm(p)
    # Hard case: even at the smallest multiplier the step stays inside: go along v_min.
    # (Not for a step short by rounding alone: the square root would blow that up.)
    tau = jnp.sqrt(jnp.maximum(radius ** 2 - pn ** 2, 0.0))
    v = V[:, 0]
    v = jnp.where(jnp.vdot(g, v) > 0, -v, v)
    return jnp.where(pn < (1.0 - 1e3 * eps) * radius, p + tau * v, p)


def cholesky_step(chol, g):
    """(-H^-1 g from the Cholesky factor, whether it is usable)."""
    ok = jnp.all(jnp.isfinite(chol))
    eye = jnp.eye(g.shape[0], dtype=g.dtype)
    p = -_linalg.cho_solve(jnp.where(ok, chol, eye), g)
    return p, ok & jnp.all(jnp.isfinite(p))


def dogleg_step(H, g, p_newton, radius):
    """Powell's dogleg for a positive-definite H: the Newton step if it fits, else the
    point where the path steepest descent (to the Cauchy point) -> Newton step leaves
    the region. Matrix-vector products only."""
    gn = jnp.linalg.norm(g)
    curv = jnp.vdot(g, H @ g)
    p_cauchy = -(gn ** 2 / jnp.where(curv > 0, curv, 1.0)) * g
    pc = jnp.linalg.norm(p_cauchy)
    # Beyond the Cauchy point: p_c + tau (p_n - p_c) with ||.|| = radius, tau in [0, 1].
    d = p_newton - p_cauchy
    a, b, c = jnp.vdot(d, d), 2 * jnp.vdot(p_cauchy, d), pc ** 2 - radius ** 2
    tau = (-b + jnp.sqrt(jnp.maximum(b * b - 4 * a * c, 0.0))) / jnp.where(a > 0, 2 * a, 1.0)
    dog = p_cauchy + jnp.clip(tau, 0.0, 1.0) * d
    steepest = -(radius / jnp.where(gn > 0, gn, 1.0)) * g
    inside = jnp.linalg.norm(p_newton) <= radius
    return jnp.where(inside, p_newton, jnp.where(pc >= radius, steepest, dog))


def trust_region_step(H, g, p_newton, newton_ok, radius):
    """The trust-region step for gradient g, Hessian H (both already scaled) and radius.

    A positive-definite H (``newton_ok``) takes the dogleg path built from the Newton
    step ``p_newton`` (``scaled_problem``, from the state's step):
    no further factorisation, however often the radius shrinks. Otherwise the exact
    subproblem (``boundary_step``, an eigendecomposition) is solved, under vmap only
    in iterations where some fit has an indefinite Hessian. (Recomputing the Newton
    step here, inside the retry loop, would let XLA hoist that loop-invariant solve
    beside another batched LAPACK call, which can deadlock jax 0.10's CPU runtime.)
    """
    eye = jnp.eye(g.shape[0], dtype=g.dtype)
    dog = dogleg_step(H, g, jnp.where(newton_ok, p_newton, 0.0), radius)

    def solve(c):
        return jnp.zeros((), bool), boundary_step(jnp.where(c[0], H, eye), g, radius)

    return lane_while(lambda c: c[0], solve, (~newton_ok, dog))[1]


def judge_trial(f0, g0, H, p, pn, f_new, radius, slack):
    """The trust region's verdict on a trial step p (||D p|| = pn) with value f_new.

    Returns (accepted, hopeless, next radius): accepted on a sufficient actual
    decrease, hopeless when a rejected step's predicted decrease is already below
    rounding (``slack``), so no shorter step can rescue it.
    """
    pred = -(jnp.vdot(g0, p) + 0.5 * jnp.vdot(p, H @ p))
    actual = f0 - f_new
    finite = jnp.isfinite(f_new)
    # Near the optimum both reductions are rounding noise: judge by the slack.
    ratio = jnp.where(pred > slack, actual / jnp.where(pred > 0, pred, 1.0), 1.0)
    ok = finite & (actual >= 1e-4 * jnp.maximum(pred, 0.0) - slack) & (pred >= -slack)
    # Shrink to where a quadratic through f0, the slope g'p and f_new along the
    # step has its minimum (as MINPACK and backtracking do), within [0.1, 0.5].
    slope = jnp.vdot(g0, p)
    t = 0.5 * slope / jnp.where(slope - actual < 0, slope - actual, -1.0)
    shrink = jnp.where(finite & (actual < 0), jnp.clip(t, 0.1, 0.5), jnp.where(finite, 0.5, 0.1))
    grow = (ratio > 0.75) & (pn >= 0.99 * radius)
    radius = jnp.where(~finite | (ratio < 0.25), shrink * jnp.minimum(pn, radius),
                       jnp.where(grow, 2.0 * radius, radius))
    hopeless = ~ok & finite & (pred <= slack)
    return ok, hopeless, radius


def scaled_problem(state: NewtonState):
    """The trust region's problem in the scaled variables q = D p: (D^-1 H D^-1, g / D,
    its Newton step D (-H^-1 g), whether that step is usable)."""
    D = state.scale
    p_newton = D * state.newton
    return state.hess / jnp.outer(D, D), state.grad / D, p_newton, jnp.all(jnp.isfinite(p_newton))


@dataclasses.dataclass(frozen=True)
class Newton(Optimizer):
    """Newton's method with the exact Hessian.

    Args:
        globalization: "trust-region" (default: scaled trust region with the exact
            subproblem) or "line-search" (eigenvalue fix plus Armijo backtracking).
        max_trials: rejected trial steps (trust region) or halvings (line search)
            before a step counts as failed.
        initial_radius: the first trust radius is this times ||D z0|| (or this
            itself when z0 = 0), D the trust region's scaling; from a start where the
            Hessian is positive definite, at least the full Newton step. MINPACK's 100
            let the first steps from an indefinite start leap into a far-off basin (a
            degenerate point, a runaway): 0.1 solves 4 more of the 98 NIST StRD and
            MGH runs in benchmarks/robustness.py (Lanczos1-3 from Start 2, Gaussian
            from 10 x0) and loses none, the radius doubling while the model is good.
            Measured: 1 loses Roszman1 Start 1, faster growth (4x) Lanczos1-3 Start 1;
            batched logistic fits (a positive definite start) keep their iterations,
            the README's normal model from (0, 1) takes 24 instead of 14.
    """

    globalization: str = "trust-region"
    max_trials: int = 40
    initial_radius: float = 0.1
    name = "newton"
    default_max_iter = 1000

    def __post_init__(self):
        if self.globalization not in ("trust-region", "line-search"):
            raise ValueError(f"globalization must be 'trust-region' or 'line-search', got {self.globalization!r}")

    def init(self, objective, z0, data) -> tuple[NewtonState, StepInfo]:
        f, g, H = value_grad_hessian(objective, z0, data)
        return start_state(z0, f, g, H, _cholesky(H), self.initial_radius), info(1, 1, 1)

    def folds_start(self) -> bool:
        # Not for a subclass with its own init or step: it keeps the protocol it was written for.
        cls = type(self)
        return (self.globalization == "trust-region" and cls.init is Newton.init and cls.step is Newton.step
                and cls._trust_region_step is Newton._trust_region_step)

    def placeholder(self, z0):
        """The trust region's state at z0 before anything is evaluated there: zero
        gradient and Newton step (so the first trial step is zero, with no
        eigendecomposition), identity Hessian and scaling. ``step(..., fresh=...)``
        turns it into ``init``'s state."""
        if not self.folds_start():
            return None
        k, dtype = z0.shape[0], z0.dtype
        zero, eye = jnp.zeros((k,), dtype), jnp.eye(k, dtype=dtype)
        return NewtonState(z0, jnp.zeros((), dtype), zero, eye, eye, jnp.ones((), dtype),
                           jnp.ones((k,), dtype), zero)

    def newton_step(self, state: NewtonState):
        return -state.newton

    def hessian(self, state: NewtonState):
        return state.hess

    def step(self, objective, state: NewtonState, data, active=True, fresh=None) -> tuple[NewtonState, StepInfo]:
        if self.globalization == "line-search":
            return self._line_search_step(objective, state, data, active)
        return self._trust_region_step(objective, state, data, active, fresh)

    def _trust_region_step(self, objective, state, data, active, fresh=None):
        """One trust-region iteration; where ``fresh`` holds (``state`` is the
        ``placeholder`` at z0), the one evaluation at z0 and ``init``'s state from it."""
        z0, f0, g0, H = state.z, state.f, state.grad, state.hess
        D = state.scale
        Hs, gs, p_newton, newton_ok = scaled_problem(state)
        # Rounding noise in f scales with its terms, not with |f| (which can cancel to ~0).
        slack = 4 * jnp.finfo(f0.dtype).eps * jnp.maximum(1.0, jnp.abs(f0))

        def trial_step(radius):
            ps = trust_region_step(Hs, gs, p_newton, newton_ok, radius)
            return ps / D, jnp.linalg.norm(ps)

        # Trial steps until one is accepted, each with the full (f, gradient, Hessian)
        # pass the next step needs: an accepted first trial (the common case) costs
        # that one pass, and the pass appears once in the compiled program (a separate
        # value-only retry and a pass redone at the accepted point would each be
        # another copy of the objective's derivatives to trace and compile). A rejected
        # trial costs a pass instead of a value: one retry costs what value + redone
        # pass did.
        def pending(c):
            ok, hopeless, k = c[:3]
            go = (~ok) & (~hopeless) & (k < self.max_trials) & (active | (k == 0))
            # A fresh lane evaluates at z0 once, whatever max_trials allows a step.
            return go if fresh is None else go | (fresh & (k == 0))

        def attempt(c):
            _, _, k, radius = c[:4]
            p, pn = trial_step(radius)
            zt = z0 + p if fresh is None else jnp.where(fresh, z0, z0 + p)
            f_new, g_new, H_new = value_grad_hessian(objective, zt, data)
            ok, hopeless, radius = judge_trial(f0, g0, H, p, pn, f_new, radius, slack)
            if fresh is not None:
                ok = ok | fresh          # the evaluation at z0 is taken, whatever it is
            return ok, hopeless, k + 1, radius, p, f_new, g_new, H_new

        no = jnp.zeros((), bool)
        ok, _, k, radius, p, f, g, Hn = lane_while(
            pending, attempt, (no, no, jnp.zeros((), jnp.int32), state.radius, jnp.zeros_like(z0), f0, g0, H))
        z = jnp.where(ok, z0 + p, z0) if fresh is None else jnp.where(ok & ~fresh, z0 + p, z0)
        f, g, Hn = (jnp.where(ok, a, b) for a, b in ((f, f0), (g, g0), (Hn, H)))
        chol = jnp.where(ok, _cholesky(Hn), state.chol)
        diag = jnp.sqrt(jnp.abs(jnp.diagonal(Hn)))
        D = jnp.maximum(D, jnp.where(jnp.isfinite(diag), diag, 0.0))
        if fresh is None:
            return newton_state(z, f, g, Hn, chol, radius, D), info(k, k, k, failed_if(~ok))
        # A fresh lane: ``start_state``'s scaling and first radius, with the one solve.
        D0, radius0 = _first_scaling(diag, z0, self.initial_radius)
        new = newton_state(z, f, g, Hn, chol, jnp.where(fresh, radius0, radius), jnp.where(fresh, D0, D))
        return _at_least_newton(new, fresh), info(k, k, k, failed_if(~ok))

    def _line_search_step(self, objective, state, data, active):
        z0, g0 = state.z, state.grad
        d = descent_direction(g0, newton_direction(state.hess, g0, state.newton))
        # The full step is tried with the (f, gradient, Hessian) pass the next step
        # needs anyway, so an accepted full step (the common case) costs one pass
        # and no separate objective evaluation.
        f1, g1, H1 = value_grad_hessian(objective, z0 + d, data)
        z, _, ok, n_ls = backtracking(objective, data, z0, state.f, g0, d, self.max_trials, f1=f1,
                                     active=active)
        # After a backtrack the pass is redone at the accepted point; under vmap this
        # costs a pass only in iterations where some fit backtracked.
        redo = ok & (n_ls > 1) & active

        def again(c):
            # The point depends on the loop's flag, so XLA cannot hoist the pass out
            # of the loop (and run it every step).
            return (jnp.zeros((), bool), c[1]) + value_grad_hessian(objective, jnp.where(c[0], c[1], z0), data)

        _, _, f, g, H = lane_while(lambda c: c[0], again, (redo, z, f1, g1, H1))
        # A failed search keeps the old point and what is known about it.
        f, g, H = (jnp.where(ok, a, b) for a, b in ((f, state.f), (g, g0), (H, state.hess)))
        chol = jnp.where(ok, _cholesky(H), state.chol)
        extra = redo.astype(jnp.int32)
        new = newton_state(z, f, g, H, chol, state.radius, state.scale)
        return new, info(n_ls + extra, 1 + extra, 1 + extra, failed_if(~ok))
