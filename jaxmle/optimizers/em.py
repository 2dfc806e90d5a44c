"""Expectation-maximisation, for models that supply their own EM update."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ._base import Optimizer, OptState, count


@dataclasses.dataclass(frozen=True)
class EM(Optimizer):
    """EM: each step replaces the parameters by ``model.em_step(params, data, mask)``.

    The step never decreases the likelihood; convergence is judged by the same
    gradient rule as every other method (first-order defaults), so EM and Newton
    results are comparable. Built by ``method="em"`` for models that have an
    ``em_step`` (``jm.models.gaussian_mixture``).
    """

    model: Any = None
    name = "em"
    default_max_iter = 5000
    first_order = True

    def default_gtol(self, dtype) -> float:
        return 1e-7 if jnp.finfo(dtype).bits == 64 else 1e-4

    def step(self, objective, state: OptState, data, active=True) -> OptState:
        spec = self.model.spec
        params = spec.to_params(state.z, data.fixed)
        new = self.model.em_step(params, data.data, data.mask)
        leaves = spec.treedef.flatten_up_to(new)
        z = spec.to_z(leaves, state.z.dtype)
        f, g = jax.value_and_grad(objective)(z, data)
        return OptState(z, f, g, jnp.zeros((), bool), (), count(1, 1, 0, state.evals))
