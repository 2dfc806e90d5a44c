"""Distribution fitting against scipy.stats and closed forms; support errors."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm

stats = pytest.importorskip("scipy.stats")
RNG = np.random.default_rng(42)


def away(spec: dict) -> dict:
    """Start values well away from the data-based start of ``spec`` (closed form or
    method of moments): positive parameters x2.5, unit-interval ones moved halfway
    to the far end, real ones shifted by 1 + 50% of their size."""
    out = {}
    for k, c in spec.items():
        v = np.asarray(getattr(c, "init", c), float)
        if isinstance(c, jm.Positive):
            out[k] = 2.5 * v
        elif isinstance(c, jm.Interval):
            out[k] = np.where(v > 0.5, v / 2, (1 + v) / 2)
        else:
            out[k] = v + 1.0 + 0.5 * np.abs(v)
    return out


_AWAY_MODELS: dict = {}


def fit_from_away(name, x, **kw):
    """Fit ``name``'s own log-density (the one fit_distribution maximises) from ``away``."""
    spec = jm.distributions.get(name).start(np.asarray(x, float))
    if name not in _AWAY_MODELS:        # one Model per distribution: reuse its compiled fitter
        _AWAY_MODELS[name] = jm.Model(jm.distributions.get(name).logpdf, spec, name=name)
    return jm.fit(_AWAY_MODELS[name], jnp.asarray(x, float), init=away(spec), **kw)

# name, sample, scipy fit (returns the log-likelihood at scipy's MLE)
CONTINUOUS = [
    ("normal", RNG.normal(3, 2, 200), lambda x: stats.norm.logpdf(x, *stats.norm.fit(x)).sum()),
    ("exponential", RNG.exponential(2.0, 150), lambda x: stats.expon.logpdf(x, *stats.expon.fit(x, floc=0)).sum()),
    ("gamma", RNG.gamma(2.5, 0.6, 200), lambda x: stats.gamma.logpdf(x, *stats.gamma.fit(x, floc=0)).sum()),
    ("beta", RNG.beta(2, 5, 200), lambda x: stats.beta.logpdf(x, *stats.beta.fit(x, floc=0, fscale=1)).sum()),
    ("lognormal", RNG.lognormal(0.5, 0.8, 200), lambda x: stats.lognorm.logpdf(x, *stats.lognorm.fit(x, floc=0)).sum()),
    ("weibull", RNG.weibull(1.5, 200) * 2, lambda x: stats.weibull_min.logpdf(x, *stats.weibull_min.fit(x, floc=0)).sum()),
    ("student_t", RNG.standard_t(4, 300) * 1.5 + 1, lambda x: stats.t.logpdf(x, *stats.t.fit(x)).sum()),
]


@pytest.mark.parametrize("name,x,scipy_ll", CONTINUOUS, ids=[c[0] for c in CONTINUOUS])
def test_loglik_at_least_scipys(name, x, scipy_ll):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = scipy_ll(x)
    res = jm.fit_distribution(name, x)
    assert res.converged
    assert float(res.loglik) >= ref - 1e-8 * abs(ref)
    assert np.all(np.isfinite(res.stderr_flat))


# Distributions without a closed form: fit_distribution starts at the method of
# moments, so Newton must iterate. The reference is scipy.stats' own log-density
# maximised by scipy.optimize at tight tolerance from scipy's ``fit`` (positive
# parameters on the log scale): independent of jaxmle's optimizer and log-densities.
SCIPY_POLISH = {
    "gamma": (lambda x: stats.gamma.fit(x, floc=0), lambda a, x: stats.gamma.logpdf(x, a[0], scale=a[1]),
              lambda a: {"shape": a[0], "rate": 1 / a[1]}, (0, 2)),
    "beta": (lambda x: stats.beta.fit(x, floc=0, fscale=1), lambda a, x: stats.beta.logpdf(x, a[0], a[1]),
             lambda a: {"a": a[0], "b": a[1]}, (0, 1)),
    "weibull": (lambda x: stats.weibull_min.fit(x, floc=0),
                lambda a, x: stats.weibull_min.logpdf(x, a[0], scale=a[1]),
                lambda a: {"shape": a[0], "scale": a[1]}, (0, 2)),
    "student_t": (lambda x: stats.t.fit(x), lambda a, x: stats.t.logpdf(x, a[0], a[1], a[2]),
                  lambda a: {"df": a[0], "mu": a[1], "sigma": a[2]}, (0, 1, 2)),
}


@pytest.mark.parametrize("name", list(SCIPY_POLISH))
def test_numerical_fit_equals_polished_scipy_optimum(name):
    optimize = pytest.importorskip("scipy.optimize")
    x = next(c[1] for c in CONTINUOUS if c[0] == name)
    scipy_fit, logpdf, to_ours, keep = SCIPY_POLISH[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a0 = np.asarray(scipy_fit(x), float)[list(keep)]
    pos = np.array([name != "student_t" or i != 1 for i in range(len(a0))])   # student_t's mu is real

    def nll(t):
        return -np.sum(logpdf(np.where(pos, np.exp(t), t), x))

    t = optimize.minimize(nll, np.where(pos, np.log(np.abs(a0)), a0), method="BFGS", options={"gtol": 1e-10}).x
    ref_params, ref_ll = to_ours(np.where(pos, np.exp(t), t)), -nll(t)
    res = jm.fit_distribution(name, x)
    assert res.converged and int(res.n_iter) > 0
    np.testing.assert_allclose(float(res.loglik), ref_ll, rtol=1e-12)
    for k, v in ref_params.items():
        np.testing.assert_allclose(res.params[k], v, rtol=1e-5)


def test_negative_binomial_vs_scipy_stats_fit():
    x = RNG.negative_binomial(3, 0.4, 300)
    res = jm.fit_distribution("negative_binomial", x)
    ref = stats.fit(stats.nbinom, x, bounds={"n": (0.1, 50), "p": (0.01, 0.99)})
    ref_ll = stats.nbinom.logpmf(x, ref.params.n, ref.params.p).sum()
    assert float(res.loglik) >= ref_ll - 1e-8 * abs(ref_ll)


@pytest.mark.parametrize("name,x", [
    ("bernoulli", RNG.binomial(1, 0.3, 100)),
    ("poisson", RNG.poisson(3.0, 100)),
    ("exponential", RNG.exponential(2.0, 100)),
    ("geometric", RNG.geometric(0.3, 100)),
    ("normal", np.array([240.0, 255.0, 261.0, 248.0, 271.0])),
    ("lognormal", RNG.lognormal(0.0, 1.0, 80)),
])
def test_numerical_fit_equals_closed_form(name, x):
    # fit_distribution starts at the closed form (0 iterations); starting the same
    # log-density away from it exercises the optimizer against the closed form.
    res = fit_from_away(name, x)
    assert res.converged and int(res.n_iter) >= 2
    for k, v in jm.closed_form(name, x).items():
        np.testing.assert_allclose(res.params[k], v, rtol=1e-9)
    cf = jm.closed_form(name, x)
    np.testing.assert_allclose(float(res.loglik), float(jnp.sum(jm.distributions.logpdf(name, cf, x))), rtol=1e-13)
    at_cf = jm.fit_distribution(name, x)
    np.testing.assert_allclose(at_cf.loglik, res.loglik, rtol=1e-13)


def test_tutorial_closed_forms():
    np.testing.assert_allclose(jm.closed_form("normal", [240, 255, 261, 248, 271])["sigma"] ** 2, 113.2)
    np.testing.assert_allclose(jm.closed_form("poisson", [3, 5, 2, 8, 4, 6, 3, 5])["rate"], 4.5)
    np.testing.assert_allclose(jm.closed_form("bernoulli", [1, 1, 0, 1, 1, 0, 1, 1, 1, 0])["p"], 0.7)
    np.testing.assert_allclose(jm.closed_form("binomial", [7], fixed={"n": 10})["p"], 0.7)
    cf = jm.closed_form("uniform", [2.0, 0.5, 3.5])
    assert float(cf["low"]) == 0.5 and float(cf["high"]) == 3.5
    mv = jm.closed_form("multivariate_normal", np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 2.0]]))
    np.testing.assert_allclose(mv["cov"], np.cov(np.array([[0, 2, 4], [1, 3, 2.0]]), bias=True))


def test_uniform_returns_boundary_closed_form():
    x = RNG.uniform(1, 4, 50)
    res = jm.fit_distribution("uniform", x)
    assert res.status == jm.Status.AT_BOUNDARY
    assert float(res.params["low"]) == x.min() and float(res.params["high"]) == x.max()
    np.testing.assert_allclose(res.loglik, stats.uniform.logpdf(x, x.min(), x.max() - x.min()).sum())


def test_binomial_and_categorical():
    res = jm.fit_distribution("binomial", np.array([7, 5, 8]), fixed={"n": 10})
    np.testing.assert_allclose(res.params["p"], 20 / 30, rtol=1e-9)
    np.testing.assert_allclose(res.stderr["p"], np.sqrt((2 / 3) * (1 / 3) / 30), rtol=1e-6)
    cat = jm.fit_distribution("categorical", np.array([0, 1, 1, 2, 2, 2]))
    np.testing.assert_allclose(cat.params["probs"], [1 / 6, 2 / 6, 3 / 6], rtol=1e-8)
    with pytest.raises(ValueError, match="fixed=\\{'n': N\\}"):
        jm.fit_distribution("binomial", np.array([1, 2]))


def test_fixed_parameter():
    x = RNG.normal(1.0, 2.0, 100)
    res = jm.fit_distribution("normal", x, fixed={"mu": 0.0})
    np.testing.assert_allclose(res.params["sigma"], np.sqrt(np.mean(x**2)), rtol=1e-8)
    assert res.param_names == ["sigma"]


def test_batched_fit_distribution_equals_single():
    xs = RNG.gamma(2.0, 1.0, (20, 40))
    batch = jm.fit_distribution("gamma", xs, batch=True)
    assert batch.converged.all()
    one = jm.fit_distribution("gamma", xs[7])
    np.testing.assert_allclose(batch.params["shape"][7], one.params["shape"], rtol=1e-7)
    np.testing.assert_allclose(batch.stderr["rate"][7], one.stderr["rate"], rtol=1e-6)


def test_support_errors_name_count_and_positions():
    with pytest.raises(ValueError, match=r"non-negative integers: 2 value\(s\).*positions \[1, 3\]"):
        jm.fit_distribution("poisson", np.array([1, -2, 3, 2.5]))
    with pytest.raises(ValueError, match="strictly between 0 and 1: 1 value"):
        jm.fit_distribution("beta", np.array([0.2, 1.0, 0.5]))
    with pytest.raises(ValueError, match="integers in 0..K-1"):
        jm.fit_distribution("categorical", np.array([0, 1.5, 2]))
    with pytest.raises(ValueError, match="unknown distribution 'gauss'; known: bernoulli"):
        jm.fit_distribution("gauss", np.array([1.0]))
    with pytest.raises(ValueError, match="no data"):
        jm.fit_distribution("normal", np.array([]))


def test_logpdf_helper_matches_scipy():
    x = jnp.array([0.5, 1.5, 2.5])
    np.testing.assert_allclose(jm.distributions.logpdf("weibull", {"shape": 1.5, "scale": 2.0}, x),
                               stats.weibull_min.logpdf(np.asarray(x), 1.5, scale=2.0), rtol=1e-12)
    np.testing.assert_allclose(jm.distributions.logpdf("lognormal", {"mu": 0.3, "sigma": 0.7}, x),
                               stats.lognorm.logpdf(np.asarray(x), 0.7, scale=np.exp(0.3)), rtol=1e-12)


def test_fit_distribution_init_replaces_the_closed_form_start():
    x = stats.gamma(3.0, scale=2.0).rvs(200, random_state=1)
    ref = jm.fit_distribution("gamma", x)
    far = jm.fit_distribution("gamma", x, init={"shape": 10.0})
    assert int(far.n_iter) > int(ref.n_iter)
    np.testing.assert_allclose(float(far.loglik), float(ref.loglik), rtol=1e-13)
    np.testing.assert_allclose(float(far.params["shape"]), float(ref.params["shape"]), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown parameters"):
        jm.fit_distribution("gamma", x, init={"shap": 1.0})
