"""One adapter that drives an optax ``GradientTransformation`` as a jaxmle method."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from ._base import Optimizer, StepInfo, info


class OptaxState(NamedTuple):
    """The point, its objective and gradient, and the transformation's own state."""

    z: jax.Array
    f: jax.Array
    grad: jax.Array
    inner: Any


class OptaxMethod(Optimizer):
    """Base for methods that are an optax transformation (Adam, gradient ascent, L-BFGS).

    Subclasses define ``transformation()``. A transformation whose line search
    already evaluated the objective and gradient at the accepted point (optax's
    zoom line search) sets ``reuses_values`` so they are read from its state
    instead of recomputed. Line-search evaluations are read from the state's
    ``num_linesearch_steps`` where it has one.
    """

    reuses_values: ClassVar[bool] = False

    def transformation(self) -> optax.GradientTransformationExtraArgs:  # pragma: no cover
        raise NotImplementedError

    def init(self, objective, z0, data) -> tuple[OptaxState, StepInfo]:
        f, g = jax.value_and_grad(objective)(z0, data)
        return OptaxState(z0, f, g, self.transformation().init(z0)), info(1, 1, 0)

    def step(self, objective, state: OptaxState, data, active=True) -> tuple[OptaxState, StepInfo]:
        import optax  # here, not at import: a Newton fit never loads it
        def fn(z):
            return objective(z, data)

        updates, inner = self.transformation().update(
            state.grad, state.inner, state.z, value=state.f, grad=state.grad, value_fn=fn
        )
        z = optax.apply_updates(state.z, updates)
        n_ls = jnp.asarray(optax.tree.get(inner, "num_linesearch_steps", 0), jnp.int32)
        if self.reuses_values:
            f, g = optax.value_and_grad_from_state(fn)(z, state=inner)
            evals = info(n_ls, n_ls, 0)
        else:
            f, g = jax.value_and_grad(fn)(z)
            evals = info(1 + n_ls, 1, 0)
        return OptaxState(z, f, g, inner), evals
