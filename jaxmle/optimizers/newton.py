"""Damped Newton-Raphson with an exact autodiff Hessian."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ._base import Optimizer, OptState, backtracking, count, descent_direction, value_grad_hessian


def newton_direction(H, g):
    """Newton direction -H^-1 g, with the eigenvalue fix when H is not positive definite.

    The Cholesky solve is the fast path. Lanes where it fails use the eigenvalue fix
    (``modified_newton_direction``); the others feed the identity to the
    eigendecomposition, which LAPACK then finishes almost for free, so a batch of
    positive-definite Hessians costs little more than its Cholesky factorisations.
    The eigendecomposition's input depends on the Cholesky solve, which keeps the
    LAPACK calls strictly sequential: with jax 0.10.2, LAPACK calls free to run
    concurrently in one vmapped program (e.g. a triangular solve beside an eigh)
    intermittently deadlocked XLA:CPU on repeated execution.
    """
    H = 0.5 * (H + H.T)
    L = jnp.linalg.cholesky(H)
    ok = jnp.all(jnp.isfinite(L))
    eye = jnp.eye(H.shape[0], dtype=H.dtype)
    d_chol = -jax.scipy.linalg.cho_solve((jnp.where(ok, L, eye), True), g)
    # Feeding d_chol into the eigendecomposition's input orders the LAPACK calls.
    use_chol = ok & jnp.all(jnp.isfinite(d_chol))
    d_eig = modified_newton_direction(jnp.where(use_chol, eye, H), g)
    return jnp.where(use_chol, d_chol, d_eig)


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

    def init(self, objective, z0, data) -> OptState:
        f, g, H = value_grad_hessian(objective, z0, data)
        return OptState(z0, f, g, jnp.zeros((), bool), H, count(1, 1, 1))

    def step(self, objective, state: OptState, data) -> OptState:
        z0, f0, g0 = state.z, state.f, state.grad
        d = descent_direction(g0, newton_direction(state.extra, g0))
        slope = jnp.vdot(g0, d)
        slack = 4 * jnp.finfo(f0.dtype).eps * jnp.abs(f0)

        def accept(alpha, f):
            return jnp.isfinite(f) & (f <= f0 + 1e-4 * alpha * slope + slack)

        def trial(alpha):
            return value_grad_hessian(objective, z0 + alpha * d, data)

        def cond(c):
            return (~c[1]) & (c[2] < self.max_backtracks)

        def body(c):
            alpha = c[0] * 0.5
            f, g, H = trial(alpha)
            return alpha, accept(alpha, f), c[2] + 1, f, g, H

        one = jnp.ones((), f0.dtype)
        f1, g1, H1 = trial(one)
        alpha, ok, k, f, g, H = jax.lax.while_loop(cond, body, (one, accept(one, f1), 0, f1, g1, H1))
        z = jnp.where(ok, z0 + alpha * d, z0)
        f, g, H = (jnp.where(ok, a, b) for a, b in ((f, f0), (g, g0), (H, state.extra)))
        n = k + 1
        return OptState(z, f, g, ~ok, H, count(n, n, n, state.evals))

    def hessian(self, state: OptState):
        return state.extra
