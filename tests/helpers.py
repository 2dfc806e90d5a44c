"""Shared problems with closed-form MLEs (the tutorial's worked numbers)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats

import jaxmle as jm


@dataclasses.dataclass
class Problem:
    name: str
    model: jm.Model
    data: object
    expected: dict          # closed-form MLE, natural scale
    near: dict              # a start close to the optimum (for first-order methods)
    stderr: dict | None = None   # closed-form standard errors


def coin():
    # Arjun's coin: H,H,T,H,H,T,H,H,H,T -> 7 heads in 10 flips.
    x = jnp.array([1, 1, 0, 1, 1, 0, 1, 1, 1, 0])
    m = jm.Model(lambda p, x: stats.bernoulli.logpmf(x, p["p"]), {"p": jm.Interval(0.0, 1.0)}, name="coin")
    return Problem("coin", m, x, {"p": 0.7}, {"p": 0.6}, {"p": np.sqrt(0.7 * 0.3 / 10)})


def binomial():
    # The same coin as one binomial count: 7 successes in 10 trials (scalar log-likelihood).
    m = jm.Model(lambda p, k: stats.binom.logpmf(k, 10, p["p"]), {"p": jm.Interval(0.0, 1.0)}, name="binomial")
    return Problem("binomial", m, jnp.array(7.0), {"p": 0.7}, {"p": 0.6}, {"p": np.sqrt(0.7 * 0.3 / 10)})


def reaction_times():
    x = jnp.array([240.0, 255.0, 261.0, 248.0, 271.0])
    m = jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]),
                 {"mu": 0.0, "sigma": jm.Positive(1.0)}, name="reaction_times")
    s = np.sqrt(113.2)
    return Problem("reaction", m, x, {"mu": 255.0, "sigma": s}, {"mu": 250.0, "sigma": 12.0},
                   {"mu": s / np.sqrt(5), "sigma": s / np.sqrt(10)})


def call_centre():
    x = jnp.array([3, 5, 2, 8, 4, 6, 3, 5])   # 36 calls in 8 hours
    m = jm.Model(lambda p, x: stats.poisson.logpmf(x, p["lam"]), {"lam": jm.Positive(1.0)}, name="call_centre")
    return Problem("call_centre", m, x, {"lam": 4.5}, {"lam": 4.0}, {"lam": np.sqrt(4.5 / 8)})


def exponential():
    x = jnp.array([0.5, 1.2, 3.1, 0.7, 2.2, 0.9, 1.6])
    m = jm.Model(lambda p, x: stats.expon.logpdf(x, scale=1.0 / p["rate"]), {"rate": jm.Positive(1.0)},
                 name="exponential")
    rate = 1.0 / float(np.mean(np.asarray(x)))
    return Problem("exponential", m, x, {"rate": rate}, {"rate": 0.5}, {"rate": rate / np.sqrt(7)})


def geometric():
    x = jnp.array([1, 3, 2, 1, 5, 2, 1, 4])   # trials until the first success
    m = jm.Model(lambda p, x: stats.geom.logpmf(x, p["p"]), {"p": jm.Interval(0.0, 1.0)}, name="geometric")
    p = 1.0 / float(np.mean(np.asarray(x)))
    # Fisher information of n geometric draws: n / (p^2 (1 - p)).
    return Problem("geometric", m, x, {"p": p}, {"p": 0.3}, {"p": np.sqrt(p * p * (1 - p) / 8)})


PROBLEMS = [coin, binomial, reaction_times, call_centre, exponential, geometric]


def normal_model():
    return jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]),
                    {"mu": 0.0, "sigma": jm.Positive(1.0)}, name="normal")


def logistic_model(k):
    def loglik(p, d):
        eta = d["X"] @ p["beta"]
        return d["y"] * eta - jnp.logaddexp(0.0, eta)
    return jm.Model(loglik, {"beta": jnp.zeros(k)}, name="logistic")


def logistic_data(key, n, k, batch=None):
    shape = (n, k) if batch is None else (batch, n, k)
    kx, ky, kb = jax.random.split(key, 3)
    X = jax.random.normal(kx, shape).at[..., 0].set(1.0)
    beta = jnp.linspace(-1.0, 1.0, k)
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(X @ beta)).astype(X.dtype)
    return {"X": X, "y": y}


def counting_logistic_model(k=3):
    """(model, traces): logistic regression whose log-density appends to ``traces`` each time
    it is traced, for tests that a compiled program is reused."""
    traces = []

    def loglik(p, d):
        traces.append(1)
        eta = d["X"] @ p["beta"]
        return d["y"] * eta - jnp.logaddexp(0.0, eta)

    return jm.Model(loglik, {"beta": jnp.zeros(k)}), traces
