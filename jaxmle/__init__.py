"""jaxmle: maximum-likelihood estimation on JAX.

Write a log-density as a pure JAX function of a parameter dict and data; jaxmle
derives gradients and Hessians, runs compiled optimizers, reports estimates with
standard errors and intervals, and fits thousands of datasets in one call.

The namespace is lazy (PEP 562): ``import jaxmle`` imports neither JAX nor the
library's modules, so the ``jaxmle`` command line answers ``--version`` and
``--help`` at once; the first access to a name (``jm.fit``, ``jm.Model``,
``from jaxmle import fit``, ``jm.models``) imports the module that defines it.
"""

import importlib
import importlib.util
from typing import TYPE_CHECKING

__version__ = "0.1.0"   # kept equal to pyproject.toml's [project] version

# Public name -> (module relative to this package, attribute; None for the module itself).
_LAZY = {
    "Model": ("._model", "Model"),
    "LinearPredictor": ("._model", "LinearPredictor"),
    "Positive": ("._params", "Positive"),
    "Interval": ("._params", "Interval"),
    "Simplex": ("._params", "Simplex"),
    "PositiveDefinite": ("._params", "PositiveDefinite"),
    "Fixed": ("._params", "Fixed"),
    "fit": ("._fit", "fit"),
    "fit_batch": ("._fit", "fit_batch"),
    "pad": ("._data", "pad"),
    "FitResult": ("._result", "FitResult"),
    "BatchFitResult": ("._result", "BatchFitResult"),
    "load": ("._result", "load"),
    "DetachedError": ("._io", "DetachedError"),
    "Status": ("._status", "Status"),
    "ConvergenceWarning": ("._status", "ConvergenceWarning"),
    "status_message": ("._status", "message"),
    "lr_test": (".inference", "lr_test"),
    "bootstrap": (".inference", "bootstrap"),
    "BootstrapResult": (".inference", "BootstrapResult"),
    "LRTResult": (".inference", "LRTResult"),
    "optimizers": (".optimizers", None),
    "distributions": (".distributions", None),
    "models": (".models", None),
    "priors": (".priors", None),
    "bench": (".bench", None),
    "inference": (".inference", None),
    "closed_form": (".distributions", "closed_form"),
    "fit_distribution": (".distributions", "fit_distribution"),
}

__all__ = [
    "Model",
    "LinearPredictor",
    "Positive",
    "Interval",
    "Simplex",
    "PositiveDefinite",
    "Fixed",
    "fit",
    "fit_batch",
    "pad",
    "FitResult",
    "BatchFitResult",
    "load",
    "DetachedError",
    "Status",
    "ConvergenceWarning",
    "status_message",
    "lr_test",
    "bootstrap",
    "BootstrapResult",
    "LRTResult",
    "optimizers",
    "distributions",
    "models",
    "priors",
    "bench",
    "closed_form",
    "fit_distribution",
    "inference",
    "__version__",
]


def __getattr__(name: str):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        # A submodule not imported yet (``jm._solve.DENSE_HESSIAN_MAX_PARAMS``): the eager
        # package had imported them all.
        try:
            spec = None if name.startswith("__") else importlib.util.find_spec(f"{__name__}.{name}")
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        module, attr = f".{name}", None
    mod = importlib.import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value   # later accesses are plain attribute lookups
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:   # what static tools and IDEs see: the eager imports
    from . import bench, distributions, inference, models, optimizers, priors
    from ._data import pad
    from ._fit import fit, fit_batch
    from ._io import DetachedError
    from ._model import Model
    from ._params import Fixed, Interval, Positive, PositiveDefinite, Simplex
    from ._result import BatchFitResult, FitResult, load
    from ._status import ConvergenceWarning, Status
    from ._status import message as status_message
    from .distributions import closed_form, fit_distribution
    from .inference import BootstrapResult, LRTResult, bootstrap, lr_test
