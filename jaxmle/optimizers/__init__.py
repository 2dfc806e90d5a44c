"""Optimizers: one file per method, all following the protocol in ``_base``."""

from ._base import FitData, Optimizer, OptState, backtracking
from .em import EM
from .bfgs import BFGS
from .first_order import Adam, GradientAscent
from .lbfgs import LBFGS
from .newton import Newton

METHODS = {
    "newton": Newton,
    "bfgs": BFGS,
    "lbfgs": LBFGS,
    "adam": Adam,
    "gd": GradientAscent,
}

# Above this many free parameters method="auto" switches from Newton to L-BFGS.
AUTO_NEWTON_MAX_PARAMS = 200


def resolve(method, n_free: int, model=None) -> Optimizer:
    """Turn a method name (or an optimizer instance) into an optimizer instance."""
    if isinstance(method, Optimizer):
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a name or an optimizer instance, got {type(method).__name__}"
        )
    if method == "em":
        if model is None or getattr(model, "em_step", None) is None:
            raise ValueError(
                "method='em' needs a model with an EM update (em_step), such as "
                "jm.models.gaussian_mixture; use 'newton', 'bfgs' or 'lbfgs' for this model"
            )
        return EM(model)
    if method == "auto":
        return Newton() if n_free <= AUTO_NEWTON_MAX_PARAMS else LBFGS()
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r}; choose one of {['auto', *METHODS, 'em']} "
            "or pass an optimizer instance such as jm.optimizers.Adam(learning_rate=0.01)"
        )
    return METHODS[method]()


__all__ = [
    "Optimizer", "OptState", "FitData", "EM", "backtracking", "Newton", "BFGS", "LBFGS", "Adam",
    "GradientAscent", "METHODS", "resolve",
]
