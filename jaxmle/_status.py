"""Status codes of a fit, shared by single and batched fits."""

from __future__ import annotations

import enum

import numpy as np


class Status(enum.IntEnum):
    """Why a fit stopped. Inside JAX these are int32 values; compare with ``==``.

    ``FitResult.status`` is a member (``str`` gives its name); ``BatchFitResult.status``
    is the int32 array of codes.

    Example:
        >>> res = jm.fit(model, x)
        >>> res.status == jm.Status.CONVERGED
    """

    CONVERGED = 0
    MAX_ITER = 1
    NONFINITE = 2
    LINESEARCH_FAILED = 3
    HESSIAN_NOT_PD = 4
    AT_BOUNDARY = 5
    PRECISION_LIMIT = 6

    def __str__(self) -> str:
        # print(res.status) shows the name; int(), ==, %d and :d still give the code.
        return self.name


# Internal lane state while the loop runs; never reported to users.
RUNNING = -1

MESSAGES = {
    Status.CONVERGED: "converged: the stopping rule was met",
    Status.MAX_ITER: "not converged: max_iter reached; raise max_iter or try another method",
    Status.NONFINITE: "not converged: the log-likelihood or its gradient is NaN/inf "
    "(check the data and the start values)",
    Status.LINESEARCH_FAILED: "not converged: no improving step could be found from the last "
    "point (the trust region or the line search shrank to nothing: the objective is too flat or "
    "too rough there); try other start values (n_starts=), another method, or method='lm' for a "
    "regression",
    Status.HESSIAN_NOT_PD: "the gradient vanishes but the information matrix is not positive "
    "definite: standard errors are NaN. Either a parameter is unidentified at the maximum (a flat "
    "ridge), or the fit stopped at a degenerate point that need not be the maximum (e.g. two "
    "components of a mixture or a sum of exponentials merged); compare other start values "
    "(n_starts=)",
    Status.AT_BOUNDARY: "the maximum is on the edge of the parameter space: a parameter sits "
    "at its constraint's edge, or the likelihood keeps increasing towards infinity from here "
    "(e.g. complete separation; or a local asymptote, where other start values (n_starts=) or "
    "method='lm' for a regression may find a higher interior maximum); Wald standard errors "
    "are not valid there",
    Status.PRECISION_LIMIT: "not converged to tol: the fit stalled with the gradient at the "
    "rounding-noise level of its dtype (float32?); use float64 data with jax_enable_x64, "
    "or loosen tol",
}


# PRECISION_LIMIT in float64 is no dtype problem: the likelihood is flat to float64
# rounding where the fit stopped (a plateau, a nearly singular information matrix).
_PRECISION_LIMIT_64 = ("not converged: the fit stalled where the log-likelihood is flat to float64 "
                       "rounding (a plateau or a nearly singular information matrix), short of tol; "
                       "try other start values (n_starts=), method='lm' for a regression "
                       "(jm.models.nonlinear_regression), or a reparametrisation")


def message(code, dtype=None) -> str:
    """A one-line explanation of a status code (for the fit's dtype, when given)."""
    code = Status(int(np.asarray(code)))
    if code == Status.PRECISION_LIMIT and dtype is not None and np.finfo(dtype).bits >= 64:
        return _PRECISION_LIMIT_64
    return MESSAGES[code]


class ConvergenceWarning(UserWarning):
    """Warned by ``fit`` when a fit did not converge cleanly."""
