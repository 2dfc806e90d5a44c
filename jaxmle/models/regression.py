"""Regression models: linear, logistic, probit, Poisson and softmax (multinomial logit).

Each returns a plain ``jm.Model`` whose data is ``{"X": (n, k), "y": (n,)}`` (Poisson
may add ``"offset": (n,)``, e.g. log exposure). Include a column of ones in X for an
intercept. Per-observation log-likelihood terms are returned, so masks, sandwich
covariances and bootstrap all work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln, log_ndtr

from .._model import Model
from .._params import Positive


def _check_k(k, what="k"):
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"{what} must be a positive int (number of columns of X), got {k!r}")


def _validator(k, keys=("X", "y"), optional=()):
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

    return validate


def linear(k: int) -> Model:
    """Gaussian linear regression y ~ N(X beta, sigma^2); params {"beta": (k,), "sigma"}.

    The MLE of beta is OLS; sigma is the MLE sqrt(SSR / n) (divisor n, not n - k).
    """
    _check_k(k)

    def loglik(p, d):
        return jax.scipy.stats.norm.logpdf(d["y"], d["X"] @ p["beta"], p["sigma"])

    return Model(loglik, {"beta": jnp.zeros(k), "sigma": Positive(1.0)}, name="linear", validate=_validator(k))


def logistic(k: int) -> Model:
    """Logistic regression P(y=1) = sigmoid(X beta); params {"beta": (k,)}."""
    _check_k(k)

    def loglik(p, d):
        eta = d["X"] @ p["beta"]
        return d["y"] * eta - jnp.logaddexp(0.0, eta)

    return Model(loglik, {"beta": jnp.zeros(k)}, name="logistic", validate=_validator(k))


def probit(k: int) -> Model:
    """Probit regression P(y=1) = Phi(X beta); params {"beta": (k,)}."""
    _check_k(k)

    def loglik(p, d):
        eta = d["X"] @ p["beta"]
        return d["y"] * log_ndtr(eta) + (1 - d["y"]) * log_ndtr(-eta)

    return Model(loglik, {"beta": jnp.zeros(k)}, name="probit", validate=_validator(k))


def poisson(k: int) -> Model:
    """Poisson regression log E[y] = X beta + offset; params {"beta": (k,)}.

    Data may include ``"offset"`` (e.g. log exposure), added to the linear predictor.
    """
    _check_k(k)

    def loglik(p, d):
        eta = d["X"] @ p["beta"] + d.get("offset", 0.0)
        return d["y"] * eta - jnp.exp(eta) - gammaln(d["y"] + 1.0)

    return Model(loglik, {"beta": jnp.zeros(k)}, name="poisson",
                 validate=_validator(k, optional=("offset",)))


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

    return Model(loglik, {"beta": jnp.zeros((k, n_classes - 1))}, name="softmax", validate=_validator(k))
