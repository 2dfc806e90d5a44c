"""L-BFGS on optax's ``lbfgs`` (zoom line search), driven by jaxmle's loop."""

from __future__ import annotations

import dataclasses

from ._optax import OptaxMethod


@dataclasses.dataclass(frozen=True)
class LBFGS(OptaxMethod):
    """Limited-memory BFGS: optax's ``lbfgs`` with its strong-Wolfe zoom line search.

    Args:
        memory_size: number of (s, y) pairs kept.
        max_linesearch_steps: zoom line-search evaluations per step.
    """

    memory_size: int = 10
    max_linesearch_steps: int = 30
    name = "lbfgs"
    default_max_iter = 1000
    # The zoom line search evaluates value and gradient together at its trial points.
    reuses_values = True

    def transformation(self):
        import optax  # here, not at import: a Newton fit never loads it
        return optax.lbfgs(
            memory_size=self.memory_size,
            linesearch=optax.scale_by_zoom_linesearch(
                max_linesearch_steps=self.max_linesearch_steps,
                # Quasi-Newton steps are scaled: try the unit step first (optax's
                # own lbfgs default); "keep" would degrade it to linear convergence.
                initial_guess_strategy="one",
            ),
        )
