"""jaxmle: maximum-likelihood estimation on JAX.

Write a log-density as a pure JAX function of a parameter dict and data; jaxmle
derives gradients and Hessians, runs compiled optimizers, reports estimates with
standard errors and intervals, and fits thousands of datasets in one call.
"""

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

__version__ = "0.1.0"

__all__ = [
    "Model",
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
