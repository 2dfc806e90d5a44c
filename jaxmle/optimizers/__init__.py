"""Optimizers: one file per method, all following the protocol in ``_base``.

The registry ``METHODS`` maps a method name to its class; ``fit``, the CLI and
``jm.bench`` all read it. A new method is one file here plus one line below (or
``register(name, cls)`` at run time).
"""

from __future__ import annotations

from ._base import NO_FAILURE, FitData, Optimizer, StepInfo, backtracking, info
from ._optax import OptaxMethod, OptaxState
from .bfgs import BFGS, BFGSState
from .em import EM, EMState
from .first_order import Adam, GradientAscent
from .lbfgs import LBFGS
from .lm import LevenbergMarquardt, LMState
from .newton import Newton, NewtonState

METHODS: dict[str, type[Optimizer]] = {
    "newton": Newton,
    "bfgs": BFGS,
    "lbfgs": LBFGS,
    "adam": Adam,
    "gd": GradientAscent,
    "em": EM,
    "lm": LevenbergMarquardt,
}

# Above this many free parameters method="auto" switches from Newton to L-BFGS: a
# Newton step costs k Hessian-vector products and an O(k^3) factorisation, an
# L-BFGS step one or two gradients and O(k) memory (10 pairs of k-vectors), so
# L-BFGS stays usable from hundreds to millions of parameters (neural networks).
AUTO_NEWTON_MAX_PARAMS = 200


def register(name: str, cls: type[Optimizer]) -> None:
    """Add a method to the registry so ``method=name`` works in ``fit``, the CLI and ``bench``."""
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise TypeError(f"register needs a jm.optimizers.Optimizer subclass, got {cls!r}")
    if name == "auto":
        raise ValueError("'auto' is reserved for the automatic choice")
    METHODS[name] = cls


def general_methods() -> list[str]:
    """Registered methods that work on any model (what the CLI and ``bench`` offer)."""
    return [name for name, cls in METHODS.items() if cls.general]


def resolve(method, n_free: int, model=None) -> Optimizer:
    """Turn a method name (or an optimizer instance) into an optimizer instance.

    ``"auto"`` picks Levenberg-Marquardt for a nonlinear regression
    (``jm.models.nonlinear_regression``), Newton up to ``AUTO_NEWTON_MAX_PARAMS``
    (200) free parameters and L-BFGS above, however many: on a full-data,
    deterministic objective L-BFGS reaches a tight optimum in far fewer gradient
    evaluations than Adam. Adam is the better choice for mini-batch fits
    (``jm.fit(..., batch_size=...)``, where the stochastic path chooses it), for
    objectives whose line search keeps failing (non-smooth activations such as
    ReLU, or noisy terms), and when an approximate optimum after a fixed budget
    of steps is all that is wanted (``method="adam", max_iter=...``). Above
    ``jaxmle._solve.DENSE_HESSIAN_MAX_PARAMS`` free parameters no fit forms a
    Hessian: standard errors are NaN (see ``FitResult.stderr_note``).

    Args:
        method: a registry name, "auto", or an ``Optimizer`` instance (returned as is).
        n_free: the model's number of free (unconstrained) parameters.
        model: the ``jm.Model``, for methods and choices that depend on it.

    Returns:
        An optimizer instance.
    """
    if isinstance(method, Optimizer):
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a name or an optimizer instance, got {type(method).__name__}"
        )
    if method == "auto":
        if getattr(model, "residuals", None) is not None:
            method = "lm"          # a nonlinear regression: Levenberg-Marquardt on its residuals
        else:
            method = "newton" if n_free <= AUTO_NEWTON_MAX_PARAMS else "lbfgs"
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r}; choose one of {['auto', *METHODS]} "
            "or pass an optimizer instance such as jm.optimizers.Adam(learning_rate=0.01)"
        )
    return METHODS[method].create(model)


__all__ = [
    "Optimizer", "StepInfo", "FitData", "NO_FAILURE", "info", "backtracking", "OptaxMethod",
    "OptaxState", "Newton", "NewtonState", "BFGS", "BFGSState", "LBFGS", "Adam", "GradientAscent",
    "EM", "EMState", "LevenbergMarquardt", "LMState", "METHODS", "register", "general_methods", "resolve",
]
