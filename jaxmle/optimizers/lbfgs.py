"""L-BFGS on optax's ``lbfgs`` (zoom line search), driven by jaxmle's loop."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from ._base import Optimizer, OptState, count


@dataclasses.dataclass(frozen=True)
class LBFGS(Optimizer):
    """Limited-memory BFGS: optax's ``lbfgs`` with its strong-Wolfe zoom line search.

    Args:
        memory_size: number of (s, y) pairs kept.
    """

    memory_size: int = 10
    max_linesearch_steps: int = 30
    name = "lbfgs"
    default_max_iter = 1000

    def _tx(self):
        return optax.lbfgs(
            memory_size=self.memory_size,
            linesearch=optax.scale_by_zoom_linesearch(
                max_linesearch_steps=self.max_linesearch_steps,
                # Quasi-Newton steps are scaled: try the unit step first (optax's
                # own lbfgs default); "keep" would degrade it to linear convergence.
                initial_guess_strategy="one",
            ),
        )

    def init_extra(self, z0, g):
        return self._tx().init(z0)

    def step(self, objective, state: OptState, data, active=True) -> OptState:
        def fn(z):
            return objective(z, data)

        updates, opt_state = self._tx().update(
            state.grad, state.extra, state.z, value=state.f, grad=state.grad, value_fn=fn
        )
        z = optax.apply_updates(state.z, updates)
        f, g = optax.value_and_grad_from_state(fn)(z, state=opt_state)
        # optax's zoom line search evaluates value and gradient together.
        n_ls = optax.tree.get(opt_state, "num_linesearch_steps", 0)
        return OptState(z, f, g, jnp.zeros((), bool), opt_state, count(n_ls, n_ls, 0, state.evals))
