"""Nonlinear regression: a mean function plus Gaussian noise, fitted by Levenberg-Marquardt.

``nonlinear_regression(f, spec)`` builds a plain ``jm.Model`` whose log-likelihood
is Gaussian around ``f(params, x)``; the model also carries its residual function,
which lets ``method="lm"`` (``jm.optimizers.LevenbergMarquardt``) work on the
residual vector instead of the log-likelihood.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._model import Model
from .._params import Fixed, Positive
from .._predict import check_cov_type

SIGMA = "sigma"
_KEYS = ("x", "y")
_OPTIONAL = ("weights",)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _validator(data, batched: bool) -> None:
    if not isinstance(data, dict) or not set(_KEYS) <= set(data):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        missing = [k for k in _KEYS if not isinstance(data, dict) or k not in data]
        raise ValueError(
            f"nonlinear_regression needs data as a dict with keys {list(_KEYS)} (optional "
            f"{list(_OPTIONAL)}); missing {missing}, got {got}"
        )
    extra = set(data) - set(_KEYS) - set(_OPTIONAL)
    if extra:
        raise ValueError(f"unexpected data keys {sorted(extra)}; allowed: {list(_KEYS + _OPTIONAL)}")
    lead = 1 if batched else 0
    y = data["y"]
    if y.ndim != 1 + lead:
        want = "(B, n)" if batched else "(n,)"
        raise ValueError(f"y has shape {y.shape}; expected {want}: one response per observation")
    for path, leaf in jax.tree_util.tree_flatten_with_path(data["x"])[0]:
        name = "x" + jax.tree_util.keystr(path)
        if leaf.ndim < 1 + lead or leaf.shape[: 1 + lead] != y.shape:
            raise ValueError(
                f"{name} has shape {leaf.shape} but y has shape {y.shape}: x needs one row per "
                f"observation (leading axis {y.shape[lead]}{' after the batch axis' if batched else ''})"
            )
    if "weights" in data:
        w = data["weights"]
        if w.shape != y.shape:
            raise ValueError(f"weights has shape {w.shape}; expected {y.shape} (one per observation)")
        host = np.asarray(w)
        if not (np.all(np.isfinite(host)) and np.all(host > 0)):
            raise ValueError(
                "weights must be finite and > 0 (relative precisions, 1 / variance up to a "
                "common factor); drop observations with mask= instead of a zero weight"
            )


def nonlinear_regression(f: Callable[[Any, Any], jax.Array], spec: dict, sigma: Any = "estimate",
                         name: str | None = None, cov: str = "observed") -> Model:
    """A nonlinear regression y_i = f(params, x)_i + e_i, e_i ~ N(0, sigma^2 / w_i).

    Data: ``{"x": ..., "y": (n,)}`` with ``x`` an array (or pytree of arrays) whose
    leading axis has one entry per observation, plus optionally ``"weights": (n,)``,
    known relative precisions (residual r_i = sqrt(w_i) (y_i - f_i)). The model's
    parameters are those of ``spec`` plus ``"sigma"``, the noise standard deviation
    (its MLE sqrt(RSS / n), divisor n).

    Fit it with ``method="lm"`` (Levenberg-Marquardt on the residuals, sigma
    profiled out in closed form and started there), or any general method; those
    start sigma at 1 unless ``init={"sigma": ...}`` says otherwise.

    Args:
        f: ``f(params, x) -> mean`` of shape (n,) (or a scalar), pure JAX; ``params``
            is a dict shaped like ``spec`` with natural-scale values.
        spec: start values and constraint wrappers of the mean function's parameters,
            as for ``jm.Model``; the name "sigma" is reserved.
        sigma: "estimate" (default), or a known noise standard deviation (> 0),
            held fixed (``jm.Fixed``).
        name: a label for summaries.
        cov: the covariance convention of the fit's ``cov`` (and so of its standard
            errors, intervals and ``predict(..., se=True)``):

            - "observed" (default): the inverse observed information at the MLE,
              sigma its MLE sqrt(RSS / n) (divisor n). These standard errors are
              about sqrt((n - p) / n) times the curve-fitting ones below.
            - "gauss-newton": the mean parameters' block is s^2 (J'J)^-1 with
              s^2 = RSS / (n - p), J the Jacobian of the (weighted) residuals in the
              free mean parameters and p their number: what
              ``scipy.optimize.curve_fit`` (``absolute_sigma=False``), lmfit, R's
              ``nls`` and NIST's certified standard deviations report. With a known
              ``sigma`` it is sigma^2 (J'J)^-1 (curve_fit's ``absolute_sigma=True``).
              sigma keeps its MLE and its observed-information variance; its
              covariances with the mean parameters are 0. Computed from the data
              the fit saw when ``res.cov`` is first read; a pickled or loaded
              result keeps the stored (observed-information) covariance.

            The summary names the convention, with the residual standard error
            sqrt(RSS / (n - p)) and the reduced chi-square (``res.redchi``).

    Returns:
        A ``jm.Model`` with the extra attributes ``residuals(params, data) -> (n,)``
        (sqrt(w) (y - f), not divided by sigma), ``sigma_name`` ("sigma"), ``f``,
        ``mean_fn(params, data)`` (``f(params, data["x"])``, what ``res.predict``
        computes), ``mean_key`` ("x") and ``cov_type``.

    Example:
        >>> f = lambda p, x: p["b1"] * (1 - jnp.exp(-p["b2"] * x))
        >>> model = jm.models.nonlinear_regression(f, {"b1": 500.0, "b2": 1e-4})
        >>> res = jm.fit(model, {"x": x, "y": y}, method="lm")
        >>> res.predict(x_new)                   # f(params, x_new)
        >>> mean, se = res.predict(x_new, se=True)
    """
    if not callable(f):
        raise TypeError("f must be a mean function f(params, x)")
    if not isinstance(spec, dict) or not spec:
        raise TypeError("spec must be a non-empty dict of the mean function's parameters")
    check_cov_type(cov)
    if SIGMA in spec:
        raise ValueError(
            f"the parameter name {SIGMA!r} is reserved for the noise standard deviation; "
            "rename that parameter of the mean function"
        )
    if isinstance(sigma, str):
        if sigma != "estimate":
            raise ValueError(f"sigma must be 'estimate' or a known positive number, got {sigma!r}")
        noise = Positive(1.0)
    else:
        try:
            value = float(sigma)
        except (TypeError, ValueError):
            raise TypeError(f"sigma must be 'estimate' or a number, got {sigma!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"a known sigma must be finite and > 0, got {sigma!r}")
        noise = Fixed(value)
    keys = list(spec)

    def residuals(params, data):
        mean = jnp.asarray(f({k: params[k] for k in keys}, data["x"]))
        y = data["y"]
        if mean.shape not in ((), y.shape):
            raise ValueError(
                f"the mean function returned shape {mean.shape}; expected {y.shape} "
                "(one value per observation) or a scalar"
            )
        r = y - mean
        if "weights" in data:
            r = jnp.sqrt(data["weights"]) * r
        return r

    def loglik(params, data):
        s = params[SIGMA]
        z = residuals(params, data) / s
        terms = -_HALF_LOG_2PI - jnp.log(s) - 0.5 * z * z
        if "weights" in data:
            terms = terms + 0.5 * jnp.log(data["weights"])
        return terms

    label = name or f"nonlinear_regression({getattr(f, '__name__', 'f')})"
    model = Model(loglik, {**spec, SIGMA: noise}, name=label, validate=_validator)
    model.residuals = residuals
    model.sigma_name = SIGMA
    model.f = f
    model.gn_residuals = residuals
    model.cov_type = cov

    def mean_fn(params, data):
        mean = jnp.asarray(f({k: params[k] for k in keys}, data["x"]))
        n = jax.tree_util.tree_leaves(data["x"])[0].shape[0]
        return jnp.broadcast_to(mean, (n,)) if mean.ndim == 0 else mean

    model.mean_fn = mean_fn
    model.mean_key = "x"
    return model
