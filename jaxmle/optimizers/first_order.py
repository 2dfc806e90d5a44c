"""Adam and gradient ascent: thin adapters over optax transformations."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from ._base import Optimizer, OptState, count


class _OptaxFirstOrder(Optimizer):
    """Shared step for optax transformations that need only the gradient."""

    first_order = True
    default_max_iter = 20_000

    def default_gtol(self, dtype) -> float:
        return 1e-7 if jnp.finfo(dtype).bits == 64 else 1e-4

    def _tx(self) -> optax.GradientTransformation:  # pragma: no cover
        raise NotImplementedError

    def init_extra(self, z0, g):
        return self._tx().init(z0)

    def step(self, objective, state: OptState, data, active=True) -> OptState:
        def fn(z):
            return objective(z, data)

        updates, opt_state = self._tx().update(
            state.grad, state.extra, state.z, value=state.f, grad=state.grad, value_fn=fn
        )
        z = optax.apply_updates(state.z, updates)
        f, g = jax.value_and_grad(fn)(z)
        n_ls = self._linesearch_evals(opt_state)
        return OptState(z, f, g, jnp.zeros((), bool), opt_state, count(1 + n_ls, 1, 0, state.evals))

    def _linesearch_evals(self, opt_state):
        return 0


@dataclasses.dataclass(frozen=True)
class Adam(_OptaxFirstOrder):
    """Adam on the negative mean log-likelihood (optax.adam).

    The learning rate decays by ``decay`` whenever the objective has not improved
    for ``patience`` steps (optax.contrib.reduce_on_plateau), so deterministic
    fits settle at the optimum instead of circling it at a distance ~learning_rate.

    Args:
        learning_rate: initial step size on the unconstrained scale.
    """

    learning_rate: float = 0.05
    b1: float = 0.9
    b2: float = 0.999
    patience: int = 50
    decay: float = 0.5
    name = "adam"

    def _tx(self):
        return optax.chain(
            optax.adam(self.learning_rate, b1=self.b1, b2=self.b2),
            optax.contrib.reduce_on_plateau(
                factor=self.decay, patience=self.patience, rtol=1e-9, atol=0.0,
                cooldown=0, accumulation_size=1, min_scale=1e-4,
            ),
        )


@dataclasses.dataclass(frozen=True)
class GradientAscent(_OptaxFirstOrder):
    """Gradient ascent on the log-likelihood (descent on its negative mean).

    With ``learning_rate=None`` (default) the step comes from optax's backtracking
    (Armijo) line search, starting from the last accepted step grown by 1.5x;
    with a number, plain fixed-step ``optax.sgd``.
    """

    learning_rate: float | None = None
    max_backtracks: int = 40
    max_step: float = 1.0
    name = "gd"

    def _linesearch_evals(self, opt_state):
        if self.learning_rate is not None:
            return 0
        return optax.tree.get(opt_state, "num_linesearch_steps", 0)

    def _tx(self):
        if self.learning_rate is not None:
            return optax.sgd(self.learning_rate)
        return optax.chain(
            optax.sgd(1.0),
            # Far from the optimum raw gradients can be huge; cap the step length
            # on the unconstrained scale so one step cannot leap into a flat region.
            optax.clip_by_global_norm(self.max_step),
            optax.scale_by_backtracking_linesearch(
                max_backtracking_steps=self.max_backtracks,
                max_learning_rate=1.0,
                decrease_factor=0.5,
            ),
        )
