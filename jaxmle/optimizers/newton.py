"""Damped Newton-Raphson with an exact autodiff Hessian."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from typing import NamedTuple

from ._base import (Optimizer, StepInfo, backtracking, descent_direction, failed_if, info, lane_while,
                    value_grad_hessian)


class NewtonState(NamedTuple):
    z: jax.Array
    f: jax.Array
    grad: jax.Array
    hess: jax.Array      # the objective's Hessian at z


def newton_direction(H, g):
    """Newton direction -H^-1 g, with the eigenvalue fix when H is not positive definite.

    The Cholesky solve is the fast path. Fits where it fails use the eigenvalue fix
    (``modified_newton_direction``), computed only when some fit needs it, so a
    batch of positive-definite Hessians costs its Cholesky factorisations alone.
    The eigendecomposition comes after the Cholesky solve, which keeps the LAPACK
    calls strictly sequential: with jax 0.10.2, LAPACK calls free to run
    concurrently in one vmapped program (e.g. a triangular solve beside an eigh)
    intermittently deadlocked XLA:CPU on repeated execution.
    """
    H = 0.5 * (H + H.T)
    L = jnp.linalg.cholesky(H)
    ok = jnp.all(jnp.isfinite(L))
    eye = jnp.eye(H.shape[0], dtype=H.dtype)
    d_chol = -jax.scipy.linalg.cho_solve((jnp.where(ok, L, eye), True), g)
    # The eigendecomposition runs only while some fit needs it (under vmap: in
    # iterations where any fit's Hessian is not positive definite). Its input
    # depends on the Cholesky solve, which orders the LAPACK calls.
    use_chol = ok & jnp.all(jnp.isfinite(d_chol))

    def fix(c):
        return jnp.zeros((), bool), modified_newton_direction(jnp.where(c[0], H, eye), g)

    return lane_while(lambda c: c[0], fix, (~use_chol, d_chol))[1]


def modified_newton_direction(H, g, rel_floor=1e-10):
    """Newton direction with the Hessian made positive definite.

    Negative eigenvalues are flipped and tiny ones floored at ``rel_floor`` times
    the largest, so the direction is always a descent direction (the "eigenvalue
    fix"); for a positive-definite Hessian it is the plain Newton step.
    """
    H = 0.5 * (H + H.T)
    w, V = jnp.linalg.eigh(H)
    top = jnp.maximum(jnp.max(jnp.abs(w)), jnp.finfo(H.dtype).tiny)
    w = jnp.maximum(jnp.abs(w), rel_floor * top)
    return -V @ ((V.T @ g) / w)


@dataclasses.dataclass(frozen=True)
class Newton(Optimizer):
    """Newton's method: exact Hessian, eigenvalue fix, Armijo backtracking.

    Converges from poor starts (the line search guarantees descent) and
    quadratically near the optimum.

    Args:
        max_backtracks: halvings of the step length before the line search fails.
    """

    max_backtracks: int = 40
    name = "newton"
    default_max_iter = 100

    def init(self, objective, z0, data) -> tuple[NewtonState, StepInfo]:
        f, g, H = value_grad_hessian(objective, z0, data)
        return NewtonState(z0, f, g, H), info(1, 1, 1)

    def step(self, objective, state: NewtonState, data, active=True) -> tuple[NewtonState, StepInfo]:
        z0, g0 = state.z, state.grad
        d = descent_direction(g0, newton_direction(state.hess, g0))
        # The full step is tried with the (f, gradient, Hessian) pass the next step
        # needs anyway, so an accepted full step (the common case) costs one pass
        # and no separate objective evaluation.
        f1, g1, H1 = value_grad_hessian(objective, z0 + d, data)
        z, _, ok, n_ls = backtracking(objective, data, z0, state.f, g0, d, self.max_backtracks, f1=f1,
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
        extra = redo.astype(jnp.int32)
        return NewtonState(z, f, g, H), info(n_ls + extra, 1 + extra, 1 + extra, failed_if(~ok))

    def hessian(self, state: NewtonState):
        return state.hess
