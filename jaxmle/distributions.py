"""Named distributions: log-densities, closed-form MLEs, and ``fit_distribution``.

Log-densities are thin wrappers over ``jax.scipy.stats``; lognormal and Weibull,
which it lacks, are written out. Parameter names (natural scale):

=================  ==========================  ================================
name               parameters                  support of x
=================  ==========================  ================================
bernoulli          p                           {0, 1}
binomial           n (fixed), p                {0, ..., n}
poisson            rate                        {0, 1, 2, ...}
normal             mu, sigma                   reals
exponential        rate                        x >= 0
uniform            low, high                   reals (MLE: min and max)
geometric          p                           {1, 2, ...} (trials to 1st success)
beta               a, b                        0 < x < 1
gamma              shape, rate                 x > 0
lognormal          mu, sigma (of log x)        x > 0
weibull            shape, scale                x > 0
student_t          df, mu, sigma               reals
negative_binomial  n, p (scipy's nbinom)       {0, 1, 2, ...}
categorical        probs (simplex)             {0, ..., K-1}
multivariate_normal  mean, cov                 rows of R^d (x of shape (n, d))
=================  ==========================  ================================
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats

from ._fit import fit, fit_batch
from ._model import Model
from ._params import Constraint, Fixed, Interval, Positive, PositiveDefinite, Simplex
from ._result import BatchFitResult, FitResult
from ._special import betaln, log1m
from ._status import Status


def _moments(x):
    x = np.asarray(x, float)
    return float(np.mean(x)), float(np.var(x))


def _is_int(x):
    return np.isfinite(x) & (x == np.round(x))


# -- log-densities (per observation) ---------------------------------------------

def _lognormal(p, x):
    # Not in jax.scipy.stats: density of log x, with the Jacobian 1/x.
    return stats.norm.logpdf(jnp.log(x), p["mu"], p["sigma"]) - jnp.log(x)


def _weibull(p, x):
    # Not in jax.scipy.stats: log(k/lam) + (k-1) log(x/lam) - (x/lam)^k.
    k, lam = p["shape"], p["scale"]
    return jnp.log(k / lam) + (k - 1) * jnp.log(x / lam) - (x / lam) ** k


def _beta(p, x):
    # jax.scipy.stats.beta loses up to ~5e-7 per observation through its betaln
    # (see jaxmle._special); the support check keeps x strictly inside (0, 1).
    a, b = p["a"], p["b"]
    return (a - 1) * jnp.log(x) + (b - 1) * log1m(x) - betaln(a, b)


def _guard_positive(fn: Callable, names: tuple) -> Callable:
    """The log-density, NaN wherever a parameter in ``names`` is <= 0.

    jax.scipy.stats accepts a negative scale (norm.logpdf gives |sigma|'s density), so
    a model built on these log-densities with an unconstrained scale would "converge"
    to a negative one; NaN makes such a fit end NONFINITE instead.
    """
    def logpdf(p, x):
        ok = jnp.all(jnp.stack([jnp.all(jnp.asarray(p[n]) > 0) for n in names]))
        return jnp.where(ok, fn(p, x), jnp.nan)

    return logpdf


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A named distribution: per-observation log-density, start values and support.

    ``positive`` names the parameters that must be > 0 (scales, rates, shapes); the
    stored ``logpdf`` is NaN when one is not.
    """

    name: str
    logpdf: Callable
    start: Callable              # x -> spec dict (constraint wrappers with data-based starts)
    support: Callable            # x -> boolean array, True where x is possible
    support_text: str
    closed_form: Callable | None = None   # x, fixed -> params dict
    positive: tuple = ()

    def __post_init__(self):
        if self.positive:
            object.__setattr__(self, "logpdf", _guard_positive(self.logpdf, self.positive))

    def _jaxmle_fingerprint(self):
        # Its functions are jaxmle's own code: the name says what they compute (and
        # saved programs are keyed by jaxmle's source as well), so a refit in a new
        # session or from a re-run cell shares the compiled programs.
        return ("distribution", self.name, self.positive)


def _cf_normal(x, fixed):
    return {"mu": np.mean(x), "sigma": np.sqrt(np.var(x))}


def _beta_start(x):
    m, v = _moments(x)
    common = max(m * (1 - m) / max(v, 1e-12) - 1, 0.5)
    return {"a": Positive(max(m * common, 0.1)), "b": Positive(max((1 - m) * common, 0.1))}


def _gamma_start(x):
    m, v = _moments(x)
    v = max(v, 1e-12 * m * m)
    return {"shape": Positive(m * m / v), "rate": Positive(m / v)}


def _weibull_start(x):
    lx = np.log(np.asarray(x, float))
    k = np.pi / (np.sqrt(6) * max(np.std(lx), 1e-6))
    return {"shape": Positive(k), "scale": Positive(float(np.exp(np.mean(lx) + 0.5772 / k)))}


def _nbinom_start(x):
    m, v = _moments(x)
    if v > m:
        return {"n": Positive(m * m / (v - m)), "p": Interval(0.0, 1.0, init=min(m / v, 0.999))}
    return {"n": Positive(max(m, 0.1) * 99.0), "p": Interval(0.0, 1.0, init=0.99)}


def _clip01(p):
    return float(np.clip(p, 1e-6, 1 - 1e-6))


DISTRIBUTIONS: dict[str, Distribution] = {
    d.name: d
    for d in [
        Distribution(
            "bernoulli", lambda p, x: stats.bernoulli.logpmf(x, p["p"]),
            lambda x: {"p": Interval(0.0, 1.0, init=_clip01(np.mean(x)))},
            lambda x: (x == 0) | (x == 1), "0 or 1",
            lambda x, f: {"p": np.mean(x)},
        ),
        Distribution(
            "binomial", lambda p, x: stats.binom.logpmf(x, p["n"], p["p"]),
            None, None, "integers in 0..n",
            lambda x, f: {"n": f["n"], "p": np.mean(x) / f["n"]},
        ),
        Distribution(
            "poisson", lambda p, x: stats.poisson.logpmf(x, p["rate"]),
            lambda x: {"rate": Positive(max(np.mean(x), 1e-3))},
            lambda x: _is_int(x) & (x >= 0), "non-negative integers",
            lambda x, f: {"rate": np.mean(x)}, positive=("rate",),
        ),
        Distribution(
            "normal", lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]),
            lambda x: {"mu": float(np.mean(x)), "sigma": Positive(max(float(np.std(x)), 1e-12))},
            np.isfinite, "finite reals", _cf_normal, positive=("sigma",),
        ),
        Distribution(
            "exponential", lambda p, x: stats.expon.logpdf(x, scale=1.0 / p["rate"]),
            lambda x: {"rate": Positive(1.0 / max(np.mean(x), 1e-12))},
            lambda x: np.isfinite(x) & (x >= 0), "non-negative reals",
            lambda x, f: {"rate": 1.0 / np.mean(x)}, positive=("rate",),
        ),
        Distribution(
            "uniform", lambda p, x: stats.uniform.logpdf(x, p["low"], p["high"] - p["low"]),
            None, np.isfinite, "finite reals",
            lambda x, f: {"low": np.min(x), "high": np.max(x)},
        ),
        Distribution(
            "geometric", lambda p, x: stats.geom.logpmf(x, p["p"]),
            lambda x: {"p": Interval(0.0, 1.0, init=_clip01(1.0 / np.mean(x)))},
            lambda x: _is_int(x) & (x >= 1), "integers >= 1 (trials up to the first success)",
            lambda x, f: {"p": 1.0 / np.mean(x)},
        ),
        Distribution(
            "beta", _beta,
            _beta_start, lambda x: (x > 0) & (x < 1), "reals strictly between 0 and 1",
            positive=("a", "b"),
        ),
        Distribution(
            "gamma", lambda p, x: stats.gamma.logpdf(x, p["shape"], scale=1.0 / p["rate"]),
            _gamma_start, lambda x: np.isfinite(x) & (x > 0), "positive reals",
            positive=("shape", "rate"),
        ),
        Distribution(
            "lognormal", _lognormal,
            lambda x: {"mu": float(np.mean(np.log(x))), "sigma": Positive(max(float(np.std(np.log(x))), 1e-12))},
            lambda x: np.isfinite(x) & (x > 0), "positive reals",
            lambda x, f: {"mu": np.mean(np.log(x)), "sigma": np.std(np.log(x))}, positive=("sigma",),
        ),
        Distribution(
            "weibull", _weibull, _weibull_start,
            lambda x: np.isfinite(x) & (x > 0), "positive reals", positive=("shape", "scale"),
        ),
        Distribution(
            "student_t", lambda p, x: stats.t.logpdf(x, p["df"], p["mu"], p["sigma"]),
            lambda x: {"df": Positive(5.0), "mu": float(np.median(x)),
                       "sigma": Positive(max(float(np.std(x)), 1e-12))},
            np.isfinite, "finite reals", positive=("df", "sigma"),
        ),
        Distribution(
            "negative_binomial", lambda p, x: stats.nbinom.logpmf(x, p["n"], p["p"]),
            _nbinom_start, lambda x: _is_int(x) & (x >= 0), "non-negative integers", positive=("n",),
        ),
        Distribution(
            "categorical", lambda p, x: jnp.log(p["probs"])[x.astype(jnp.int32)],
            None, None, "integers in 0..K-1",
            lambda x, f: {"probs": np.bincount(np.asarray(x, int), minlength=f["n_categories"]) / len(x)},
        ),
        Distribution(
            "multivariate_normal",
            lambda p, x: stats.multivariate_normal.logpdf(x, p["mean"], p["cov"]),
            None, lambda x: np.isfinite(x).all(axis=-1), "rows of finite reals",
            lambda x, f: {"mean": np.mean(x, axis=0), "cov": np.cov(np.asarray(x, float).T, bias=True)},
        ),
    ]
}


def get(name: str) -> Distribution:
    """Look up a distribution by its snake_case name."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {name!r}; known: {', '.join(sorted(DISTRIBUTIONS))}")
    return DISTRIBUTIONS[name]


def logpdf(name: str, params: dict, x):
    """Per-observation log-density (log-pmf) of a named distribution."""
    return get(name).logpdf(params, jnp.asarray(x))


def _fixed_defaults(name, x, fixed):
    fixed = dict(fixed or {})
    if name == "binomial" and "n" not in fixed:
        raise ValueError("binomial needs the number of trials: fixed={'n': N}")
    if name == "categorical":
        k = int(np.max(x)) + 1 if np.size(x) and np.all(_is_int(x)) else 0
        fixed.setdefault("n_categories", k)
    return fixed


def check_support(name: str, x, fixed=None) -> None:
    """Raise ValueError naming how many values fall outside the support, and where."""
    d = get(name)
    x = np.asarray(x, float)
    if x.size == 0:
        raise ValueError(f"{name}: no data to fit")
    fixed = _fixed_defaults(name, x, fixed)
    if name == "multivariate_normal" and (x.ndim < 2 or x.shape[-2] <= x.shape[-1]):
        raise ValueError(
            f"multivariate_normal needs data of shape (n, d) with n > d observations, got {x.shape}"
        )
    if name == "binomial":
        ok = _is_int(x) & (x >= 0) & (x <= fixed["n"])
    elif name == "categorical":
        ok = _is_int(x) & (x >= 0) & (x < fixed["n_categories"])
    else:
        ok = d.support(x)
    if not np.all(ok):
        bad = np.argwhere(~np.asarray(ok))
        first = [tuple(int(i) for i in b) if len(b) > 1 else int(b[0]) for b in bad[:5]]
        vals = [float(x[tuple(b)]) if x.ndim == np.ndim(ok) else "row" for b in bad[:5]]
        raise ValueError(
            f"{name} data must be {d.support_text}: {len(bad)} value(s) are not "
            f"(first at positions {first}: {vals})"
        )


def closed_form(name: str, x, fixed: dict | None = None) -> dict:
    """The closed-form MLE of a named distribution, where one exists.

    Normal gives the biased (divisor n) variance; the uniform gives (min, max).

    Example:
        >>> jm.closed_form("normal", [240., 255., 261., 248., 271.])
        {'mu': 255.0, 'sigma': 10.639...}
    """
    d = get(name)
    if d.closed_form is None:
        raise ValueError(
            f"{name} has no closed-form MLE; use jm.fit_distribution({name!r}, x), which "
            "maximises the likelihood numerically"
        )
    x = np.asarray(x, float)
    check_support(name, x, fixed)
    fixed = _fixed_defaults(name, x, fixed)
    return {k: np.asarray(v) for k, v in d.closed_form(x, fixed).items()}


# -- fitting ------------------------------------------------------------------------

_MODELS: dict = {}


def _model_for(name: str, fixed_names: tuple, template: dict):
    """One Model per (distribution, fixed parameters): refits reuse the compiled fitter."""
    key = (name, fixed_names, tuple((k, np.shape(getattr(v, "init", v))) for k, v in template.items()))
    if key not in _MODELS:
        _MODELS[key] = Model(get(name).logpdf, template, name=name)
    return _MODELS[key]


def _spec_for(name, x, fixed):
    d = get(name)
    if name == "binomial":
        spec = {"n": Fixed(float(fixed["n"])), "p": Interval(0.0, 1.0, init=_clip01(np.mean(x) / fixed["n"]))}
    elif name == "multivariate_normal":
        cf = d.closed_form(x, fixed)
        d_ = x.shape[-1]
        cov = cf["cov"] + 1e-9 * np.trace(cf["cov"]) / d_ * np.eye(d_)   # strictly inside
        spec = {"mean": cf["mean"], "cov": PositiveDefinite(cov)}
    elif name == "categorical":
        k = fixed["n_categories"]
        counts = np.bincount(np.asarray(x, int), minlength=k) + 0.5  # start strictly inside
        spec = {"probs": Simplex(counts / counts.sum())}
    else:
        spec = d.start(x)
    for k, v in fixed.items():
        if k in ("n_categories",) or (name == "binomial" and k == "n"):
            continue
        if k not in spec:
            raise ValueError(f"fixed names unknown parameter {k!r}; {name} has {sorted(spec)}")
        bad = spec[k].violation(np.asarray(float(v))) if isinstance(spec[k], Constraint) else None
        if bad:
            raise ValueError(f"fixed {k}={v} is not allowed: {name}'s {k} {bad}")
        spec[k] = Fixed(float(v))
    return spec


def _closed_form_result(name, x, batched):
    """Uniform: the likelihood is maximised on the boundary of its support constraint,
    so the closed form (min, max) is the answer; Wald inference does not apply."""
    model = _model_for(name, (), {"low": 0.0, "high": 1.0})
    low, high = np.min(x, axis=-1), np.max(x, axis=-1)
    n = np.asarray(x.shape[-1], float) + 0 * low
    degenerate = ~(high > low)
    if not batched and degenerate:
        raise ValueError("uniform needs at least two distinct values: with all values equal the "
                         "likelihood has no maximum (it grows without bound as low -> high)")
    with np.errstate(divide="ignore"):
        ll = -n * np.log(high - low)
    cls = BatchFitResult if batched else FitResult
    return cls.closed_form(
        model, "closed_form", params={"low": jax.device_put(low), "high": jax.device_put(high)},
        z=jax.device_put(np.stack([low, high], axis=-1)), loglik=jax.device_put(ll), n_obs=jax.device_put(n),
        # A sample of identical values has no maximum: NONFINITE for that dataset.
        status=jax.device_put(np.where(degenerate, Status.NONFINITE, Status.AT_BOUNDARY).astype(np.int32)),
    )


def fit_distribution(name: str, x, method="auto", fixed: dict | None = None, batch: bool = False,
                     init: dict | None = None, **fit_kwargs):
    """Fit a named distribution by maximum likelihood (a scipy.stats ``fit``-like front end).

    Returns a full ``FitResult`` (standard errors, intervals, AIC/BIC). Starts from
    the closed form or the method of moments; the uniform, whose likelihood peaks on
    the boundary (min, max), returns its closed form with status ``AT_BOUNDARY`` and
    no Wald inference.

    Args:
        name: snake_case distribution name (see the module table).
        x: 1-D data, or 2-D ``(B, n)`` with ``batch=True`` for B samples at once.
        method: optimizer, as for ``jm.fit``.
        fixed: parameters held fixed, e.g. ``{"n": 10}`` (binomial trials, required)
            or ``{"mu": 0.0}``; categorical accepts ``{"n_categories": K}``.
        batch: fit each row of ``x`` separately, in one ``fit_batch`` call.
        init: start values for some or all parameters (natural scale), replacing the
            closed-form / moment starts, e.g. ``{"shape": 5.0}``; with ``batch=True``
            a value may carry a leading axis of B (one start per row).

    Returns:
        ``FitResult`` (or ``BatchFitResult`` with ``batch=True``).

    Example:
        >>> res = jm.fit_distribution("gamma", x)
        >>> res.params["shape"], res.stderr["shape"]
    """
    d = get(name)
    x = np.asarray(x)
    row_ndim = 2 if name == "multivariate_normal" else 1
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{name}: data must be numeric, got dtype {x.dtype}")
    if batch and x.ndim != row_ndim + 1:
        raise ValueError(f"batch=True needs {row_ndim + 1}-D data (B, n{', d' if row_ndim == 2 else ''}), got shape {x.shape}")
    if not batch and x.ndim != row_ndim:
        shape = "(n, d)" if row_ndim == 2 else "1-D"
        raise ValueError(f"{name}: expected {shape} data, got shape {x.shape}; pass batch=True for a stack of samples")
    check_support(name, x, fixed)
    fixed = _fixed_defaults(name, x, fixed)
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64) if not np.issubdtype(x.dtype, np.floating) else x.dtype
    if name == "uniform":
        return _closed_form_result(name, x.astype(float), batch)
    rows = list(x) if batch else [x]
    specs = [_spec_for(name, r, fixed) for r in rows]
    template = specs[0]
    model = _model_for(name, tuple(sorted(fixed)), template)
    starts = [
        {k: np.asarray(getattr(v, "init", v), float) for k, v in s.items()} for s in specs
    ]
    if init is not None:
        unknown = sorted(set(init) - set(starts[0]))
        if unknown:
            raise ValueError(f"{name}: init names unknown parameters {unknown}; its free parameters are "
                             f"{sorted(starts[0])}")
        for i, s in enumerate(starts):
            for k, v in init.items():
                v = np.asarray(v, float)
                s[k] = v[i] if batch and v.ndim > s[k].ndim else np.broadcast_to(v, s[k].shape).copy()
    data = jnp.asarray(x, dtype)
    if batch:
        init = {k: np.stack([s[k] for s in starts]) for k in starts[0]}
        return fit_batch(model, data, method=method, init=init, **fit_kwargs)
    return fit(model, data, method=method, init=starts[0], **fit_kwargs)
