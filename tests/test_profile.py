"""Profile-likelihood intervals against independent root solves (scipy brentq) and closed forms."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats as jstats

import jaxmle as jm
from helpers import normal_model

stats = pytest.importorskip("scipy.stats")
optimize = pytest.importorskip("scipy.optimize")


def poisson_model():
    return jm.Model(lambda p, x: jstats.poisson.logpmf(x, p["lam"]), {"lam": jm.Positive(1.0)})


def test_poisson_rate_profile_equals_brentq():
    x = np.array([3, 5, 2, 8, 4, 6, 3, 5])
    res = jm.fit(poisson_model(), jnp.asarray(x))
    lo, hi = res.conf_int(0.95, method="profile")["lam"]
    ll = lambda lam: stats.poisson.logpmf(x, lam).sum()  # noqa: E731
    q = stats.chi2.ppf(0.95, 1)
    g = lambda lam: 2 * (ll(4.5) - ll(lam)) - q  # noqa: E731
    np.testing.assert_allclose(lo, optimize.brentq(g, 1e-6, 4.5, xtol=1e-13), rtol=1e-7)
    np.testing.assert_allclose(hi, optimize.brentq(g, 4.5, 50.0, xtol=1e-13), rtol=1e-7)
    assert lo < 4.5 - (4.5 - lo) * 0 and (hi - 4.5) > (4.5 - lo)   # asymmetric, longer upward


def test_normal_profiles_closed_form():
    x = np.array([240.0, 255.0, 261.0, 248.0, 271.0])
    res = jm.fit(normal_model(), jnp.asarray(x))
    ci = res.conf_int(0.95, method="profile")
    n, s2, q = 5, 113.2, stats.chi2.ppf(0.95, 1)
    half = np.sqrt(s2 * (np.exp(q / n) - 1))   # mu profiled: n log(s2(mu)/s2) = q
    np.testing.assert_allclose(ci["mu"], [255 - half, 255 + half], rtol=1e-8)

    def g(sig):                                 # sigma profiled over mu = mean
        return 2 * (n / 2 * (np.log(sig**2) - np.log(s2)) + n * s2 / (2 * sig**2) - n / 2) - q

    want = [optimize.brentq(g, 1.0, np.sqrt(s2), xtol=1e-13), optimize.brentq(g, np.sqrt(s2), 500.0, xtol=1e-13)]
    np.testing.assert_allclose(ci["sigma"], want, rtol=1e-7)


def test_profile_with_nuisance_parameters_logistic():
    # Profile intervals for a regression coefficient, checked by a brute-force
    # profile: refit with the coefficient fixed and solve the LR equation with brentq.
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(150), rng.normal(size=150)])
    y = (rng.uniform(size=150) < 1 / (1 + np.exp(-(0.3 + 0.8 * X[:, 1])))).astype(float)
    data = {"X": jnp.asarray(X), "y": jnp.asarray(y)}

    def loglik(p, d):
        eta = p["b0"] + p["b1"] * d["X"][:, 1]
        return d["y"] * eta - jnp.logaddexp(0.0, eta)

    res = jm.fit(jm.Model(loglik, {"b0": 0.0, "b1": 0.0}), data)
    lo, hi = res.conf_int(0.9, method="profile")["b1"]
    q = stats.chi2.ppf(0.9, 1)

    def g(b1):
        fixed = jm.fit(jm.Model(loglik, {"b0": 0.0, "b1": jm.Fixed(b1)}), data)
        return 2 * (float(res.loglik) - float(fixed.loglik)) - q

    b1 = float(res.params["b1"])
    np.testing.assert_allclose(lo, optimize.brentq(g, b1 - 3, b1, xtol=1e-10), rtol=1e-6)
    np.testing.assert_allclose(hi, optimize.brentq(g, b1, b1 + 3, xtol=1e-10), rtol=1e-6)


def test_profile_reports_constraint_edge():
    # All-zero counts: the MLE is lambda = 0 (at the edge); the lower bound is the edge
    # and the upper bound solves 2 n lambda = q.
    batch = jm.fit_batch(poisson_model(), jnp.array([[0.0, 0, 0, 0], [3, 5, 2, 8]]))
    with pytest.warns(UserWarning, match="constraint edge"):
        ci = batch.conf_int(0.95, method="profile")["lam"]
    q = stats.chi2.ppf(0.95, 1)
    np.testing.assert_allclose(ci[0], [0.0, q / 8], atol=1e-7)
    assert batch.profile_at_edge["lam"][0].tolist() == [True, False]
    assert not batch.profile_at_edge["lam"][1].any()


def test_batched_profile_equals_single():
    xs = jax.random.poisson(jax.random.key(0), 3.0, (4, 12)).astype(jnp.float64) + 1.0
    batch = jm.fit_batch(normal_model(), xs)
    got = batch.conf_int(0.95, method="profile")
    for i in [0, 3]:
        one = jm.fit(normal_model(), xs[i]).conf_int(0.95, method="profile")
        np.testing.assert_allclose(got["mu"][i], one["mu"], rtol=1e-9)
        np.testing.assert_allclose(got["sigma"][i], one["sigma"], rtol=1e-9)


def test_unknown_interval_method():
    res = jm.fit(poisson_model(), jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="'wald', 'profile'"):
        res.conf_int(method="bayes")
