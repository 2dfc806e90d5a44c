"""The optimizer benchmark problem suite (``jm.bench.problems``).

Each problem builds a model, seeded data, a start and its optimum log-likelihood:
closed form where one exists, otherwise a reference fit (Newton, or L-BFGS for the
1,000-parameter problem) with a tolerance 100x tighter than the default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats

from . import models
from ._fit import fit
from ._model import Model
from ._params import Positive


@dataclasses.dataclass
class Problem:
    name: str
    description: str
    model: Model
    data: Any
    init: dict | None
    reference: float
    reference_kind: str


def _ref(model, data, init, method="newton"):
    res = fit(model, data, method=method, init=init, tol=1e-11 if method == "newton" else 1e-9,
              max_iter=5000, warn=False)
    return float(res.logpost)


def normal() -> Problem:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 1000)
    m = Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]), {"mu": 0.0, "sigma": Positive(1.0)}, name="normal")
    ref = float(np.sum(stats.norm.logpdf(x, x.mean(), x.std())))
    return Problem("normal", "well-conditioned normal, n=1000", m, jnp.asarray(x), None, ref, "closed form")


def poisson_glm() -> Problem:
    rng = np.random.default_rng(1)
    X = np.column_stack([np.ones(2000), rng.normal(size=(2000, 4)) * 0.5])
    y = rng.poisson(np.exp(X @ np.array([1.0, 0.3, -0.2, 0.1, 0.0])))
    d = {"X": jnp.asarray(X), "y": jnp.asarray(y, float)}
    m = models.poisson(5)
    return Problem("poisson_glm", "Poisson regression, n=2000, k=5", m, d, None, _ref(m, d, None), "Newton reference")


def logistic_illcond() -> Problem:
    rng = np.random.default_rng(2)
    n, k = 1000, 6
    base = rng.normal(size=(n, 1))
    X = np.column_stack([np.ones(n), base + 0.05 * rng.normal(size=(n, k - 1))])   # correlation ~0.998
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X @ np.linspace(-0.5, 0.5, k))))).astype(float)
    d = {"X": jnp.asarray(X), "y": jnp.asarray(y)}
    m = models.logistic(k)
    return Problem("logistic_illcond", "logistic regression, highly correlated features", m, d, None,
                   _ref(m, d, None), "Newton reference")


def mixture() -> Problem:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-1.5, 0.8, 600), rng.normal(2.0, 1.0, 400)])
    m = models.gaussian_mixture(2)
    init = {"weights": np.array([0.5, 0.5]), "means": np.array([-0.5, 0.5]), "scales": np.array([2.0, 2.0])}
    d = {"x": jnp.asarray(x)}
    return Problem("mixture", "2-component Gaussian mixture (multimodal)", m, d, init, _ref(m, d, init), "Newton reference")


def cox() -> Problem:
    rng = np.random.default_rng(4)
    n = 500
    X = rng.normal(size=(n, 3))
    te = rng.exponential(1 / np.exp(X @ np.array([0.5, -0.5, 0.2])))
    tc = rng.exponential(1.5, n)
    d = {"X": jnp.asarray(X), "time": jnp.asarray(np.minimum(te, tc)), "event": jnp.asarray(te <= tc, float)}
    m = models.cox(3)
    return Problem("cox", "Cox partial likelihood, n=500, k=3", m, d, None, _ref(m, d, None), "Newton reference")


def banana() -> Problem:
    rng = np.random.default_rng(5)
    u = rng.normal(1.0, 1.0, 50)
    v = rng.normal(1.0, 0.1, 50)

    def loglik(p, d):
        # v depends on t2 - t1^2: the likelihood surface is a curved (Rosenbrock-like) valley.
        return stats.norm.logpdf(d["u"], p["t1"], 1.0) + stats.norm.logpdf(d["v"], p["t2"] - p["t1"] ** 2, 0.1)

    m = Model(loglik, {"t1": -1.5, "t2": 2.0}, name="banana")
    d = {"u": jnp.asarray(u), "v": jnp.asarray(v)}
    t1 = u.mean()
    ref = float(np.sum(stats.norm.logpdf(u, t1, 1.0) + stats.norm.logpdf(v, v.mean(), 0.1)))
    return Problem("banana", "banana-shaped (Rosenbrock-like) likelihood", m, d, None, ref, "closed form")


def logistic_1000() -> Problem:
    rng = np.random.default_rng(6)
    n, k = 3000, 1000
    X = rng.normal(size=(n, k)) / np.sqrt(k)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X @ rng.normal(size=k))))).astype(float)
    d = {"X": jnp.asarray(X), "y": jnp.asarray(y)}
    m = models.logistic(k)
    return Problem("logistic_1000", "logistic regression with 1,000 parameters", m, d, None,
                   _ref(m, d, None, method="lbfgs"), "L-BFGS reference")


PROBLEMS: dict[str, Callable[[], Problem]] = {
    f.__name__: f for f in [normal, poisson_glm, logistic_illcond, mixture, cox, banana, logistic_1000]
}

# The default suite of ``jaxmle bench``: quick to compile, and between them the lessons
# of the full table (a well-conditioned fit, near-collinear features, a curved valley).
QUICK = ("normal", "logistic_illcond", "banana")

# Seconds per (problem, method) for ``jaxmle bench`` with 3 repeats, compilation
# included (most of it), on a shared 2-core x86-64 CPU; printed as an estimate before
# a run. Rough: a busy or faster machine differs by a factor of 2 either way.
SECONDS: dict[str, dict[str, float]] = {
    "normal": {"newton": 6, "bfgs": 4, "lbfgs": 6, "adam": 4, "gd": 3},
    "poisson_glm": {"newton": 6, "bfgs": 4, "lbfgs": 6, "adam": 4, "gd": 4},
    "logistic_illcond": {"newton": 5, "bfgs": 3, "lbfgs": 4, "adam": 3, "gd": 5},
    "mixture": {"newton": 9, "bfgs": 6, "lbfgs": 9, "adam": 6, "gd": 6},
    "cox": {"newton": 19, "bfgs": 18, "lbfgs": 24, "adam": 16, "gd": 16},
    "banana": {"newton": 4, "bfgs": 3, "lbfgs": 5, "adam": 3, "gd": 3},
    "logistic_1000": {"newton": 60, "bfgs": 50, "lbfgs": 40, "adam": 50, "gd": 300},
}
# Building a problem (data and its reference optimum), seconds.
SETUP_SECONDS = {"logistic_1000": 40}


def estimate_seconds(names, methods) -> float:
    """Rough wall time of ``jaxmle bench`` over ``names`` x ``methods`` (see ``SECONDS``)."""
    total = 0.0
    for n in names:
        per = SECONDS.get(n, {})
        typical = float(np.median(list(per.values()))) if per else 10.0
        total += SETUP_SECONDS.get(n, 1.0) + sum(per.get(m, typical) for m in methods)
    return total


def get(name: str) -> Problem:
    """Build a benchmark problem by name."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; known: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]()
