"""Dense BFGS (inverse-Hessian form) with Armijo backtracking."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._base import Optimizer, StepInfo, backtracking, failed_if, info


class BFGSState(NamedTuple):
    z: jax.Array
    f: jax.Array
    grad: jax.Array
    hinv: jax.Array      # inverse-Hessian approximation
    fresh: jax.Array     # True while hinv is a scaled identity (start or restart)


def _scaled_identity(z, g):
    return jnp.eye(z.shape[0], dtype=z.dtype) / jnp.maximum(1.0, jnp.max(jnp.abs(g)))


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

    def init(self, objective, z0, data) -> tuple[BFGSState, StepInfo]:
        f, g = jax.value_and_grad(objective)(z0, data)
        return BFGSState(z0, f, g, _scaled_identity(z0, g), jnp.ones((), bool)), info(1, 1, 0)

    def step(self, objective, state: BFGSState, data, active=True) -> tuple[BFGSState, StepInfo]:
        z0, g0, Hinv = state.z, state.grad, state.hinv
        d = -Hinv @ g0
        z, f, ok, n_ls = backtracking(objective, data, z0, state.f, g0, d, self.max_backtracks, active=active)
        g = jax.grad(objective)(z, data)
        s, y = z - z0, g - g0
        sy = jnp.vdot(s, y)
        good = ok & (sy > jnp.finfo(z.dtype).eps * jnp.vdot(y, y))
        eye = jnp.eye(z.shape[0], dtype=z.dtype)
        # Rescale the identity-like start once real curvature is known.
        H0 = jnp.where(state.fresh, eye * sy / jnp.vdot(y, y), Hinv)
        rho = 1.0 / jnp.where(good, sy, 1.0)
        updated = (eye - rho * jnp.outer(s, y)) @ H0 @ (eye - rho * jnp.outer(y, s)) + rho * jnp.outer(s, s)
        Hinv_new = jnp.where(good, updated, jnp.where(ok, Hinv, _scaled_identity(z, g)))
        new = BFGSState(z, f, g, Hinv_new, ~ok)
        return new, info(n_ls, 1, 0, failed_if((~ok) & state.fresh))
