"""The optimizer benchmark problem suite (``jm.bench.problems``).

Each problem builds a model, seeded data, a start and its optimum log-likelihood.
The optimum comes from outside jaxmle and is stored here as a constant
(``REFERENCES``): a closed form, or statsmodels / scikit-learn + scipy.optimize fits
at tight tolerance. ``benchmarks/bench_references.py`` computes them (run it after
changing a problem's data and paste its output), and
``tests/test_bench_cli.py::test_stored_reference_is_independent`` recomputes each one
and checks that jaxmle's fit reaches it. No jaxmle fit is used as a reference, so a
method's "loglik gap 0" is a fact about the method, not about how the table was made.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from jax.scipy import stats

from . import models
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


# Optimum log-likelihood of each problem and where it comes from (written by
# benchmarks/bench_references.py; every value is verified by the test suite).
REFERENCES: dict[str, tuple[float, str]] = {
    "normal": (-2088.564201584426, "closed form (mean, biased sd; scipy.stats)"),
    "poisson_glm": (-3736.0545051699937, "statsmodels Poisson, Newton, tol 1e-14"),
    "logistic_illcond": (-642.0633530101533, "statsmodels Logit, Newton, tol 1e-14"),
    "mixture": (-1891.9370849111551,
                "sklearn GaussianMixture (20 inits, tol 1e-12) + scipy BFGS polish (analytic gradient)"),
    "cox": (-1485.092033939884, "statsmodels PHReg (Breslow), Newton, gtol 1e-12"),
    "banana": (-15.215763953939948, "closed form (scipy.stats)"),
    "logistic_1000": (-1132.1571116675455, "statsmodels Logit, Newton, tol 1e-14"),
}


def _problem(name, description, model, data, init=None) -> Problem:
    ref, kind = REFERENCES[name]
    return Problem(name, description, model, data, init, ref, kind)


# -- seeded data, as NumPy (the reference script fits the same arrays) ---------------

def normal_data() -> np.ndarray:
    return np.random.default_rng(0).normal(3.0, 2.0, 1000)


def poisson_glm_data() -> dict:
    rng = np.random.default_rng(1)
    X = np.column_stack([np.ones(2000), rng.normal(size=(2000, 4)) * 0.5])
    y = rng.poisson(np.exp(X @ np.array([1.0, 0.3, -0.2, 0.1, 0.0])))
    return {"X": X, "y": y.astype(float)}


def logistic_illcond_data() -> dict:
    rng = np.random.default_rng(2)
    n, k = 1000, 6
    base = rng.normal(size=(n, 1))
    X = np.column_stack([np.ones(n), base + 0.05 * rng.normal(size=(n, k - 1))])   # correlation ~0.998
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X @ np.linspace(-0.5, 0.5, k))))).astype(float)
    return {"X": X, "y": y}


MIXTURE_INIT = {"weights": np.array([0.5, 0.5]), "means": np.array([-0.5, 0.5]), "scales": np.array([2.0, 2.0])}


def mixture_data() -> dict:
    rng = np.random.default_rng(3)
    return {"x": np.concatenate([rng.normal(-1.5, 0.8, 600), rng.normal(2.0, 1.0, 400)])}


def cox_data() -> dict:
    rng = np.random.default_rng(4)
    n = 500
    X = rng.normal(size=(n, 3))
    te = rng.exponential(1 / np.exp(X @ np.array([0.5, -0.5, 0.2])))
    tc = rng.exponential(1.5, n)
    return {"X": X, "time": np.minimum(te, tc), "event": (te <= tc).astype(float)}


def banana_data() -> dict:
    rng = np.random.default_rng(5)
    return {"u": rng.normal(1.0, 1.0, 50), "v": rng.normal(1.0, 0.1, 50)}


def logistic_1000_data() -> dict:
    rng = np.random.default_rng(6)
    n, k = 3000, 1000
    X = rng.normal(size=(n, k)) / np.sqrt(k)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X @ rng.normal(size=k))))).astype(float)
    return {"X": X, "y": y}


DATA: dict[str, Callable[[], Any]] = {
    "normal": normal_data, "poisson_glm": poisson_glm_data, "logistic_illcond": logistic_illcond_data,
    "mixture": mixture_data, "cox": cox_data, "banana": banana_data, "logistic_1000": logistic_1000_data,
}


def _jnp(tree):
    return {k: jnp.asarray(v) for k, v in tree.items()} if isinstance(tree, dict) else jnp.asarray(tree)


# -- the problems ------------------------------------------------------------------

def normal() -> Problem:
    m = Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]), {"mu": 0.0, "sigma": Positive(1.0)},
              name="normal")
    return _problem("normal", "well-conditioned normal, n=1000", m, _jnp(normal_data()))


def poisson_glm() -> Problem:
    return _problem("poisson_glm", "Poisson regression, n=2000, k=5", models.poisson(5), _jnp(poisson_glm_data()))


def logistic_illcond() -> Problem:
    return _problem("logistic_illcond", "logistic regression, highly correlated features", models.logistic(6),
                    _jnp(logistic_illcond_data()))


def mixture() -> Problem:
    return _problem("mixture", "2-component Gaussian mixture (multimodal)", models.gaussian_mixture(2),
                    _jnp(mixture_data()), {k: v.copy() for k, v in MIXTURE_INIT.items()})


def cox() -> Problem:
    return _problem("cox", "Cox partial likelihood, n=500, k=3", models.cox(3), _jnp(cox_data()))


def _banana_loglik(p, d):
    # v depends on t2 - t1^2: the likelihood surface is a curved (Rosenbrock-like) valley.
    return stats.norm.logpdf(d["u"], p["t1"], 1.0) + stats.norm.logpdf(d["v"], p["t2"] - p["t1"] ** 2, 0.1)


def banana() -> Problem:
    m = Model(_banana_loglik, {"t1": -1.5, "t2": 2.0}, name="banana")
    return _problem("banana", "banana-shaped (Rosenbrock-like) likelihood", m, _jnp(banana_data()))


def logistic_1000() -> Problem:
    return _problem("logistic_1000", "logistic regression with 1,000 parameters", models.logistic(1000),
                    _jnp(logistic_1000_data()))


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
# Building a problem (its data), seconds.
SETUP_SECONDS = {"logistic_1000": 2}


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
