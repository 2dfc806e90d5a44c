"""Dense BFGS (inverse-Hessian form) with Armijo backtracking."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ._base import Optimizer, OptState, backtracking, count


@dataclasses.dataclass(frozen=True)
class BFGS(Optimizer):
    """Quasi-Newton BFGS keeping a dense inverse-Hessian approximation.

    The first step is scaled so no coordinate moves more than 1 (unconstrained
    scale); after it the approximation is rescaled by s'y / y'y (Nocedal & Wright
    6.20). Updates with s'y <= 0 are skipped; a failed line search restarts from
    steepest descent once before the fit is declared LINESEARCH_FAILED.
    """

    max_backtracks: int = 40
    name = "bfgs"
    default_max_iter = 500

    def init_extra(self, z0, g):
        scale = 1.0 / jnp.maximum(1.0, jnp.max(jnp.abs(g)))
        return (jnp.eye(z0.shape[0], dtype=z0.dtype) * scale, jnp.ones((), bool))

    def step(self, objective, state: OptState, data, active=True) -> OptState:
        Hinv, fresh = state.extra
        z0, g0 = state.z, state.grad
        d = -Hinv @ g0
        z, f, ok, n_ls = backtracking(objective, data, z0, state.f, g0, d, self.max_backtracks, active=active)
        g = jax.grad(objective)(z, data)
        s, y = z - z0, g - g0
        sy = jnp.vdot(s, y)
        good = ok & (sy > jnp.finfo(z.dtype).eps * jnp.vdot(y, y))
        # Rescale the identity-like start once real curvature is known.
        H0 = jnp.where(fresh, jnp.eye(z.shape[0], dtype=z.dtype) * sy / jnp.vdot(y, y), Hinv)
        rho = 1.0 / jnp.where(good, sy, 1.0)
        eye = jnp.eye(z.shape[0], dtype=z.dtype)
        updated = (eye - rho * jnp.outer(s, y)) @ H0 @ (eye - rho * jnp.outer(y, s)) + rho * jnp.outer(s, s)
        restart = jnp.eye(z.shape[0], dtype=z.dtype) / jnp.maximum(1.0, jnp.max(jnp.abs(g)))
        Hinv_new = jnp.where(good, updated, jnp.where(ok, Hinv, restart))
        failed = (~ok) & fresh
        return OptState(z, f, g, failed, (Hinv_new, ~ok), count(n_ls, 1, 0, state.evals))
