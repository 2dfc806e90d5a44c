"""Predictions, fitted values and residuals of ready models; curve-fitting covariance conventions.

A ready model (``jm.models.linear``, ``logistic``, ``probit``, ``poisson``, ``softmax``,
``nonlinear_regression``) carries ``mean_fn(params, data)``: the mean of the response
for the rows of ``data`` (probabilities for logistic/probit, the rate for Poisson,
class probabilities for softmax, ``f(params, x)`` for a nonlinear regression) and
``mean_key``, the data key holding the covariates ("X" or "x"). ``FitResult.predict``,
``fittedvalues`` and ``resid`` compute from it: one small jitted program per model
(the mean, or the mean and its Jacobian in the free parameters for delta-method
standard errors), the rest host NumPy.

Gaussian regressions (``linear``, ``nonlinear_regression``) also carry
``gn_residuals(params, data)`` (sqrt(w) (y - mean), not divided by sigma), the name of
their noise parameter ``sigma_name`` and ``cov_type``: "observed" (the default: the
inverse observed information at the MLE, sigma's MLE with divisor n) or
"gauss-newton" (the mean parameters' block is s^2 (J'J)^-1 with s^2 = RSS / (n - p),
p the number of free mean parameters, as ``scipy.optimize.curve_fit`` with
``absolute_sigma=False``, lmfit, R's ``nls`` and NIST's certified values; with a known
sigma, s = sigma, as curve_fit with ``absolute_sigma=True``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _stats
from ._compile import jit

COV_TYPES = ("observed", "gauss-newton")

_COV_TEXT = {
    "observed": "inverse observed information at the MLE (sigma: MLE, divisor n)",
    "gauss-newton": "Gauss-Newton s^2 (J'J)^-1, s^2 = RSS/(n-p)",
    "gauss-newton-known": "Gauss-Newton sigma^2 (J'J)^-1, sigma known",
}


def check_cov_type(cov: str) -> str:
    if cov not in COV_TYPES:
        raise ValueError(f"cov must be one of {list(COV_TYPES)}, got {cov!r}")
    return cov


class Prediction(NamedTuple):
    """``res.predict(new_data, se=True)``: unpacks as ``(mean, se)``.

    ``predicted_mean`` and ``se_mean`` are statsmodels' names for the same arrays
    (``get_prediction(...).predicted_mean`` / ``.se_mean``).
    """

    mean: np.ndarray
    se: np.ndarray

    @property
    def predicted_mean(self) -> np.ndarray:
        return self.mean

    @property
    def se_mean(self) -> np.ndarray:
        return self.se

    def conf_int(self, alpha: float = 0.05) -> np.ndarray:
        """Wald intervals mean +/- z se on the mean's scale, shape ``mean.shape + (2,)``."""
        return np.asarray(_stats.wald_interval(self.mean, self.se, 1.0 - alpha))


# -- helpers -------------------------------------------------------------------

def _ready(res, what: str):
    res._needs_model(what)
    model = res.model
    if getattr(model, "mean_fn", None) is None:
        raise TypeError(
            f"{what} needs a ready model (jm.models.linear, logistic, probit, poisson, softmax, "
            "nonlinear_regression) or a model with a mean function: set model.mean_fn = "
            "lambda params, data: ... (the mean response for the rows of data)"
        )
    if np.ndim(res.loglik) != 0:
        raise TypeError(f"{what} works on one fit: take batch[i] first")
    return model


def _as_data(model, new_data):
    """``new_data`` as the dict the mean function reads: a dict, or the covariates alone."""
    key = getattr(model, "mean_key", None)
    if isinstance(new_data, dict):
        if key is not None and key not in new_data:
            raise ValueError(f"new_data needs the key {key!r} (got {sorted(new_data)}); or pass the "
                             f"{key!r} array itself")
        data = dict(new_data)
    elif key is not None:
        data = {key: new_data}
    else:
        data = new_data
    return jax.tree_util.tree_map(lambda v: jnp.asarray(np.asarray(v) if not isinstance(v, jax.Array) else v),
                                  data)


def _program(model, with_jac: bool):
    spec = model.spec

    def mean(flat, leaves, data):
        return jnp.asarray(model.mean_fn(spec.unflatten(spec.replace_free(leaves, flat)), data))

    def both(flat, leaves, data):
        mu = mean(flat, leaves, data)
        return mu, jax.jacfwd(mean)(flat, leaves, data)

    return model.compiled(("predict", with_jac), lambda: jit(both if with_jac else mean))


def _mean(res, data, with_jac: bool):
    model = res.model
    flat = jnp.asarray(res.estimate_flat)
    leaves = [jnp.asarray(v) for v in jax.tree_util.tree_leaves(res.params)]
    out = _program(model, with_jac)(flat, leaves, data)
    return jax.tree_util.tree_map(np.asarray, out)


def _fitted_mask(res):
    mask = res._mask
    return None if mask is None else np.asarray(mask, bool)


# -- public entry points (FitResult delegates here) ------------------------------

def predict(res, new_data=None, se: bool = False):
    """The mean response at ``new_data`` (None: the fitted rows), optionally with
    delta-method standard errors sqrt(diag(G cov G')), G = d mean / d params."""
    model = _ready(res, "predict()")
    if new_data is None:
        if res._data is None:
            raise ValueError("this result has no data: pass new_data")
        data, mask = res._data, _fitted_mask(res)
    else:
        data, mask = _as_data(model, new_data), None
    if not se:
        mu = _mean(res, data, False)
        return mu if mask is None else mu[mask]
    res._needs_hessian("predict(se=True)")
    mu, jac = _mean(res, data, True)
    cov = np.asarray(res.cov)
    sd = np.sqrt(np.maximum(np.einsum("...i,ij,...j->...", jac, cov, jac), 0.0))
    if mask is not None:
        mu, sd = mu[mask], sd[mask]
    return Prediction(mu, sd)


def fittedvalues(res):
    """The mean response at the fitted rows (padding dropped): X beta (linear), probabilities
    (logistic/probit), rates (Poisson), class probabilities (softmax), f(x) (nonlinear)."""
    return predict(res, None)


def resid(res):
    """Response residuals y - fitted mean on the fitted rows (softmax: one_hot(y) - probabilities)."""
    _ready(res, "resid")
    if res._data is None or not isinstance(res._data, dict) or "y" not in res._data:
        raise ValueError("resid needs the fitted data with a response 'y'")
    mu = predict(res, None)
    y = np.asarray(res._data["y"])
    mask = _fitted_mask(res)
    if mask is not None:
        y = y[mask]
    if mu.ndim == y.ndim + 1:   # class probabilities: the response as one-hot rows
        y = (y[..., None] == np.arange(mu.shape[-1])).astype(mu.dtype)
    return y - mu


# -- Gaussian regressions: residual statistics and the Gauss-Newton covariance ------

def _gaussian(model) -> bool:
    return getattr(model, "gn_residuals", None) is not None and getattr(model, "sigma_name", None) is not None


def _residual_jacobian(res):
    """Host (r, J, mask, mean columns): residuals, their Jacobian in the free parameters (rows
    of padding zeroed), the mask (all True without one) and which free elements are mean parameters."""
    model = res.model
    spec = model.spec
    memo = res._memo
    if "gn_rj" in memo:
        return memo["gn_rj"]
    batched = np.ndim(res.loglik) == 1

    def one(flat, leaves, data):
        def r(t):
            return jnp.asarray(model.gn_residuals(spec.unflatten(spec.replace_free(leaves, t)), data))
        return r(flat), jax.jacfwd(r)(flat)

    fn = model.compiled(("gn_jacobian", batched), lambda: jit(jax.vmap(one) if batched else one))
    # device_put, not jnp.asarray (which compiles a program per shape outside a program).
    leaves = [jax.device_put(v) for v in jax.tree_util.tree_leaves(res.params)]
    r, J = (np.asarray(a) for a in fn(jax.device_put(res.estimate_flat), leaves, res._data))
    mask = res._mask
    mask = np.ones(r.shape, bool) if mask is None else np.asarray(mask, bool)
    r = np.where(mask, r, 0.0)
    J = np.where(mask[..., None], J, 0.0)
    names = list(res.param_names)
    sigma = model.sigma_name
    mean_cols = np.array([n != sigma for n in names])
    memo["gn_rj"] = (r, J, mask, mean_cols)
    return memo["gn_rj"]


def _known_sigma(res):
    """The fixed noise sd, or None when sigma is estimated."""
    model = res.model
    spec = model.spec
    for name, fixed, v in zip(spec.leaf_names, spec.is_fixed, jax.tree_util.tree_leaves(res.params)):
        if name == model.sigma_name:
            return float(np.ravel(np.asarray(v))[0]) if fixed else None
    return None


def regression_stats(res) -> dict | None:
    """{"ssr", "df_resid", "scale", "redchi", "cov_type"} for a Gaussian regression fit with its
    data (None otherwise). ``ssr`` is the (weighted) residual sum of squares, ``df_resid`` n - p,
    ``scale`` = ssr / df_resid (s^2: statsmodels' scale, R's residual standard error squared),
    ``redchi`` the reduced chi-square: ssr / (sigma^2 df_resid) with a known sigma, else ``scale``
    (lmfit's convention)."""
    model = res.model
    if not _gaussian(model) or res._data is None or np.ndim(res.loglik) != 0:
        return None
    if "regression_stats" in res._memo:
        return res._memo["regression_stats"]
    r, _, mask, mean_cols = _residual_jacobian(res)
    ssr = float(np.sum(r * r))
    df = float(np.sum(mask)) - int(np.sum(mean_cols))
    scale = ssr / df if df > 0 else float("nan")
    known = _known_sigma(res)
    redchi = scale if known is None else scale / known ** 2
    out = {"ssr": ssr, "df_resid": df, "scale": scale, "redchi": redchi, "cov_type": cov_type(res)}
    res._memo["regression_stats"] = out
    return out


def cov_type(res) -> str | None:
    """"observed" or "gauss-newton" for a Gaussian regression; None for other models."""
    model = res.model
    return getattr(model, "cov_type", None) if _gaussian(model) else None


def covariance(res):
    """``res.cov``: the stored covariance (inverse observed information), or, for a
    Gaussian regression built with ``cov="gauss-newton"``, the mean parameters' block
    replaced by s^2 (J'J)^-1 (cross terms with sigma zero; sigma's variance kept)."""
    raw = res._field("cov")
    model = res.model
    if (raw is None or getattr(model, "cov_type", None) != "gauss-newton" or not _gaussian(model)
            or res._data is None or isinstance(raw, jax.core.Tracer)):
        return raw
    if "cov_gn" in res._memo:
        return res._memo["cov_gn"]
    r, J, mask, mean_cols = _residual_jacobian(res)
    p = int(np.sum(mean_cols))
    Jm = J[..., mean_cols]
    ssr = np.sum(r * r, axis=-1)
    n = np.sum(mask, axis=-1)
    known = _known_sigma(res)
    s2 = np.where(n > p, ssr / np.maximum(n - p, 1), np.nan) if known is None else np.full(np.shape(ssr), known ** 2)
    jtj = np.einsum("...ni,...nj->...ij", Jm, Jm)
    try:
        inv = np.linalg.inv(jtj)
    except np.linalg.LinAlgError:
        inv = np.full(jtj.shape, np.nan)
    bad = ~np.all(np.isfinite(inv), axis=(-2, -1))
    inv = np.where(bad[..., None, None], np.nan, inv)
    out = np.array(np.asarray(raw), dtype=np.result_type(np.asarray(raw).dtype, np.float32), copy=True)
    idx = np.flatnonzero(mean_cols)
    other = np.flatnonzero(~mean_cols)
    out[..., idx[:, None], idx[None, :]] = s2[..., None, None] * inv
    out[..., idx[:, None], other[None, :]] = 0.0
    out[..., other[:, None], idx[None, :]] = 0.0
    res._memo["cov_gn"] = out
    return out


def summary_line(res) -> str | None:
    """One summary line for a Gaussian regression: residual standard error, its degrees of
    freedom, the reduced chi-square and the covariance convention; None for other models."""
    stats = regression_stats(res)
    if stats is None:
        return None
    kind = stats["cov_type"]
    if kind == "gauss-newton" and _known_sigma(res) is not None:
        kind = "gauss-newton-known"
    return (f"residual std err: {np.sqrt(stats['scale']):.6g} on {stats['df_resid']:g} df    "
            f"reduced chi-square: {stats['redchi']:.6g}    cov: {_COV_TEXT[kind]}")
