"""Regression models: linear, logistic, probit, Poisson and softmax (multinomial logit).

Each returns a plain ``jm.Model`` whose data is ``{"X": (n, k), "y": (n,)}`` (Poisson
may add ``"offset": (n,)``, e.g. log exposure). Include a column of ones in X for an
intercept. Per-observation log-likelihood terms are returned, so masks, sandwich
covariances and bootstrap all work.

Each model carries ``mean_fn(params, data)``, the mean response for the rows of
``data`` (X beta; P(y=1); the Poisson rate exp(X beta + offset); softmax class
probabilities (n, n_classes)), which ``res.predict(new_data)``, ``res.fittedvalues``
and ``res.resid`` compute (``jaxmle._predict``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, log_ndtr, ndtri

from .. import _linalg, _solve
from .._model import LinearPredictor, Model
from .._params import Positive
from .._predict import check_cov_type


def _check_k(k, what="k"):
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"{what} must be a positive int (number of columns of X), got {k!r}")


def _y_values(what: str, ok, hint: str = ""):
    """A check of ``y``'s values for ``_validator``: ``ok(values)`` marks the allowed ones.

    Non-finite entries are left to the NaN check (they may be a ragged batch's NaN
    padding, which the mask covers); an out-of-range label would otherwise give a fit
    that runs and reports nonsense (a logistic fit of 1/2 labels: log-likelihood > 0)."""
    def check(y, model_name):
        v = np.asarray(y)
        finite = np.isfinite(v) if v.dtype.kind in "fc" else np.ones(v.shape, bool)
        with np.errstate(invalid="ignore"):
            bad = finite & ~ok(v)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{model_name}: y must be {what}; got {v[where].item()!r} at index {where} ({int(bad.sum())} "
                f"such values).{hint} Padding of a ragged batch should be NaN (jm.pad's default) under its mask")
    return check


_PROBABILITY = _y_values("0 or 1 (or a proportion in [0, 1])", lambda v: (v >= 0) & (v <= 1),
                         " Recode y to 0/1 (e.g. y == 'yes', or y - 1 for 1/2 codes).")
_COUNT = _y_values("a count >= 0", lambda v: v >= 0)


def _labels(n_classes: int):
    return _y_values(f"an integer class label 0..{n_classes - 1}",
                     lambda v: (v >= 0) & (v < n_classes) & (v == np.floor(v)),
                     " Recode y to 0..n_classes-1 (e.g. y - 1 for labels counted from 1).")


def _validator(k, keys=("X", "y"), optional=(), y_check=None, model_name="this model"):
    def validate(data, batched):
        if not isinstance(data, dict) or not set(keys) <= set(data):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"this model needs data as a dict with keys {list(keys)}; got {got}")
        extra = set(data) - set(keys) - set(optional)
        if extra:
            raise ValueError(f"unexpected data keys {sorted(extra)}; allowed: {list(keys) + list(optional)}")
        lead = 1 if batched else 0
        X = data["X"]
        if X.ndim != 2 + lead or X.shape[-1] != k:
            want = ("(B, n, " if batched else "(n, ") + f"{k})"
            raise ValueError(f"X has shape {X.shape}; expected {want} for a model built with k={k}")
        for name in ("y",) + tuple(o for o in optional if o in data):
            v = data[name]
            if v.shape != X.shape[:-1]:
                raise ValueError(f"{name} has shape {v.shape}; expected {X.shape[:-1]} (one per row of X)")
        if y_check is not None:
            y_check(data["y"], model_name)

    return validate


def _wls(X, w, z):
    """Weighted least squares (X'WX)^-1 X'Wz: NaN when X'WX is singular (the fit then
    keeps the spec's start).

    From ``_solve.BLOCK_MIN_ROWS`` rows on, X'WX and X'Wz are summed over row blocks
    (``_solve.block_sum``), so no (n, k) temporary is formed beside X."""
    n = X.shape[0]
    if n >= _solve.BLOCK_MIN_ROWS:
        data = {"X": X, "w": w, "z": z}

        def block(b, valid):
            Xw = b["X"] * jnp.where(valid, b["w"], 0.0)[:, None]
            return Xw.T @ b["X"], Xw.T @ b["z"]

        k = X.shape[1]
        init = (jnp.zeros((k, k), X.dtype), jnp.zeros((k,), X.dtype))
        A, c = _solve.block_sum(block, data, None, n, _solve.rows_per_block(list(data.values()), n), init)
        return _linalg.cho_solve(_linalg.cholesky(A), c)
    Xw = X * w[:, None]
    return _linalg.cho_solve(_linalg.cholesky(Xw.T @ X), Xw.T @ z)


def _glm_start(mu0, link, dmu_deta, variance):
    """R's glm start: the first IRLS step from fitted means ``mu0`` (e.g. (y + 1/2) / 2).

    Returns ``start(data, mask) -> {"beta": ...}``; one weighted least-squares solve
    that lands where Newton from beta = 0 would need one or two steps to reach, and
    never far out when the data are nearly separable (``mu0`` stays inside (0, 1)).
    """

    def start(d, mask):
        y = d["y"]
        mu = mu0(y)
        eta = link(mu)
        gprime = dmu_deta(eta)
        # The working response of X beta alone: the offset (Poisson) is part of eta.
        z = eta - d.get("offset", 0.0) + (y - mu) / gprime
        w = jnp.where(mask, gprime ** 2 / variance(mu), 0.0)
        return {"beta": _wls(d["X"], w, z)}

    return start


def _ols_start(d, mask):
    """OLS: the linear model's MLE of beta, and sqrt(SSR / n) for sigma."""
    w = mask.astype(d["y"].dtype)
    beta = _wls(d["X"], w, d["y"])
    r = d["y"] - d["X"] @ beta
    return {"beta": beta, "sigma": jnp.sqrt(jnp.sum(w * r * r) / jnp.sum(w))}


def _ready(model, mean_fn, key="X", row=None):
    """Attach the mean function ``res.predict`` uses (see ``jaxmle._predict``) and, with
    ``row(eta, params, data)`` (the log-likelihood terms given eta = X beta), the
    declaration that the log-likelihood is a sum over rows of a function of X beta:
    big fits then form the Hessian as a weighted Gram matrix (``jaxmle._solve``)."""
    model.mean_fn = mean_fn
    model.mean_key = key
    if row is not None:
        model.linear_predictor = LinearPredictor("X", "beta", row)
    return model


def _linear_in_x(row):
    """``loglik(p, d)`` = ``row(X beta, p, d)``: the declared row function is the model's own."""

    def loglik(p, d):
        return row(d["X"] @ p["beta"], p, d)

    return loglik


def linear(k: int, cov: str = "observed") -> Model:
    """Gaussian linear regression y ~ N(X beta, sigma^2); params {"beta": (k,), "sigma"}.

    The MLE of beta is OLS; sigma is the MLE sqrt(SSR / n) (divisor n, not n - k).

    Args:
        k: number of columns of X.
        cov: "observed" (default: the inverse observed information, sigma_hat^2 (X'X)^-1
            with the MLE sigma_hat^2 = SSR / n) or "gauss-newton": s^2 (X'X)^-1 with
            s^2 = SSR / (n - k), statsmodels OLS's (and R ``lm``'s) covariance; sigma keeps
            its MLE and variance, its covariances with beta are 0 (see
            ``jm.models.nonlinear_regression``).
    """
    _check_k(k)
    check_cov_type(cov)

    def row(eta, p, d):
        return jax.scipy.stats.norm.logpdf(d["y"], eta, p["sigma"])

    model = Model(_linear_in_x(row), {"beta": np.zeros(k), "sigma": Positive(1.0)}, name="linear",
                  validate=_validator(k), start=_ols_start)
    # Not named ``residuals``: that would make method="auto" pick Levenberg-Marquardt.
    model.gn_residuals = lambda p, d: d["y"] - d["X"] @ p["beta"]
    model.sigma_name = "sigma"
    model.cov_type = cov
    return _ready(model, lambda p, d: d["X"] @ p["beta"], row=row)


def logistic(k: int) -> Model:
    """Logistic regression P(y=1) = sigmoid(X beta); params {"beta": (k,)}."""
    _check_k(k)

    def row(eta, p, d):
        return d["y"] * eta - jnp.logaddexp(0.0, eta)

    start = _glm_start(lambda y: (y + 0.5) / 2, jax.scipy.special.logit,
                       lambda eta: jax.nn.sigmoid(eta) * jax.nn.sigmoid(-eta), lambda mu: mu * (1 - mu))
    model = Model(_linear_in_x(row), {"beta": np.zeros(k)}, name="logistic",
                  validate=_validator(k, y_check=_PROBABILITY, model_name="logistic"), start=start)
    return _ready(model, lambda p, d: jax.nn.sigmoid(d["X"] @ p["beta"]), row=row)


def probit(k: int) -> Model:
    """Probit regression P(y=1) = Phi(X beta); params {"beta": (k,)}."""
    _check_k(k)

    def row(eta, p, d):
        return d["y"] * log_ndtr(eta) + (1 - d["y"]) * log_ndtr(-eta)

    start = _glm_start(lambda y: (y + 0.5) / 2, ndtri, jax.scipy.stats.norm.pdf, lambda mu: mu * (1 - mu))
    model = Model(_linear_in_x(row), {"beta": np.zeros(k)}, name="probit",
                  validate=_validator(k, y_check=_PROBABILITY, model_name="probit"), start=start)
    return _ready(model, lambda p, d: jax.scipy.special.ndtr(d["X"] @ p["beta"]), row=row)


def poisson(k: int) -> Model:
    """Poisson regression log E[y] = X beta + offset; params {"beta": (k,)}.

    Data may include ``"offset"`` (e.g. log exposure), added to the linear predictor.
    """
    _check_k(k)

    def row(xb, p, d):
        eta = xb + d.get("offset", 0.0)
        return d["y"] * eta - jnp.exp(eta) - gammaln(d["y"] + 1.0)

    start = _glm_start(lambda y: y + 0.1, jnp.log, jnp.exp, lambda mu: mu)
    model = Model(_linear_in_x(row), {"beta": np.zeros(k)}, name="poisson",
                  validate=_validator(k, optional=("offset",), y_check=_COUNT, model_name="poisson"), start=start)
    return _ready(model, lambda p, d: jnp.exp(d["X"] @ p["beta"] + d.get("offset", 0.0)), row=row)


def softmax(k: int, n_classes: int) -> Model:
    """Multinomial logit with class 0 as reference; params {"beta": (k, n_classes - 1)}.

    ``y`` holds integer class labels 0..n_classes-1 (statsmodels MNLogit's convention).
    """
    _check_k(k)
    if not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")

    def loglik(p, d):
        eta = d["X"] @ p["beta"]
        logits = jnp.concatenate([jnp.zeros(eta.shape[:-1] + (1,), eta.dtype), eta], axis=-1)
        logp = jax.nn.log_softmax(logits, axis=-1)
        onehot = jax.nn.one_hot(d["y"], n_classes, dtype=eta.dtype)
        return jnp.sum(onehot * logp, axis=-1)

    def mean_fn(p, d):
        eta = d["X"] @ p["beta"]
        logits = jnp.concatenate([jnp.zeros(eta.shape[:-1] + (1,), eta.dtype), eta], axis=-1)
        return jax.nn.softmax(logits, axis=-1)

    model = Model(loglik, {"beta": np.zeros((k, n_classes - 1))}, name="softmax",
                  validate=_validator(k, y_check=_labels(n_classes), model_name="softmax"))
    return _ready(model, mean_fn)
