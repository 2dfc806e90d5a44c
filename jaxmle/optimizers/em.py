"""Expectation-maximisation, for models that supply their own EM update."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._base import Optimizer, StepInfo, info


class EMState(NamedTuple):
    z: jax.Array
    f: jax.Array
    grad: jax.Array


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
    general = False

    @classmethod
    def create(cls, model=None) -> "EM":
        if model is None or getattr(model, "em_step", None) is None:
            raise ValueError(
                "method='em' needs a model with an EM update (em_step), such as "
                "jm.models.gaussian_mixture; use 'newton', 'bfgs' or 'lbfgs' for this model"
            )
        return cls(model)

    def default_gtol(self, dtype) -> float:
        return 1e-7 if jnp.finfo(dtype).bits == 64 else 1e-4

    def init(self, objective, z0, data) -> tuple[EMState, StepInfo]:
        f, g = jax.value_and_grad(objective)(z0, data)
        return EMState(z0, f, g), info(1, 1, 0)

    def step(self, objective, state: EMState, data, active=True) -> tuple[EMState, StepInfo]:
        spec = self.model.spec
        params = spec.to_params(state.z, data.fixed)
        new = self.model.em_step(params, data.data, data.mask)
        z = spec.to_z(spec.treedef.flatten_up_to(new), state.z.dtype)
        f, g = jax.value_and_grad(objective)(z, data)
        return EMState(z, f, g), info(1, 1, 0)
