"""Adam and gradient ascent: thin adapters over optax transformations."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from ._optax import OptaxMethod


# Adam's step size in full-data fits when none is given.
DEFAULT_RATE = 0.05


class _FirstOrder(OptaxMethod):
    """First-order defaults: many cheap iterations, a looser gradient tolerance."""

    default_max_iter = 20_000

    def default_gtol(self, dtype) -> float:
        return 1e-7 if jnp.finfo(dtype).bits == 64 else 1e-4


@dataclasses.dataclass(frozen=True)
class Adam(_FirstOrder):
    """Adam on the negative mean log-likelihood (optax.adam).

    The learning rate decays by ``decay`` whenever the objective has not improved
    for ``patience`` steps (optax.contrib.reduce_on_plateau), so deterministic
    fits settle at the optimum instead of circling it at a distance ~learning_rate.

    Args:
        learning_rate: initial step size on the unconstrained scale. None (default)
            means 0.05 in full-data fits; mini-batch fits (``batch_size=``) then take
            the default rule of ``jaxmle._stochastic`` instead: steps in coordinates
            whitened by one batch's Hessian, of 0.5 / sqrt(batch_size) there, without
            momentum (``b1`` is not used), and the iterates averaged after a burn-in.
    """

    learning_rate: float | None = None
    b1: float = 0.9
    b2: float = 0.999
    patience: int = 50
    decay: float = 0.5
    name = "adam"

    def transformation(self):
        import optax  # here, not at import: a Newton fit never loads it
        return optax.chain(
            optax.adam(DEFAULT_RATE if self.learning_rate is None else self.learning_rate, b1=self.b1, b2=self.b2),
            optax.contrib.reduce_on_plateau(
                factor=self.decay, patience=self.patience, rtol=1e-9, atol=0.0,
                cooldown=0, accumulation_size=1, min_scale=1e-4,
            ),
        )


@dataclasses.dataclass(frozen=True)
class GradientAscent(_FirstOrder):
    """Gradient ascent on the log-likelihood (descent on its negative mean).

    With ``learning_rate=None`` (default) the step comes from optax's backtracking
    (Armijo) line search, starting from the last accepted step grown by 1.5x;
    with a number, plain fixed-step ``optax.sgd``. In mini-batch fits (``batch_size=``,
    ``method="sgd"``) None takes the whitened default rule of ``jaxmle._stochastic``.
    """

    learning_rate: float | None = None
    max_backtracks: int = 40
    max_step: float = 1.0
    name = "gd"

    def transformation(self):
        import optax  # here, not at import: a Newton fit never loads it
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
