"""Intervals for derived quantities: delta method and profile likelihood (res.derived)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm
from helpers import normal_model
from jaxmle import _postfit

TIMES = jnp.array([240.0, 255.0, 261.0, 248.0, 271.0])
MODEL = normal_model()     # shared: a model caches its compiled fits


def test_delta_interval_is_estimate_plus_minus_z_stderr():
    res = jm.fit(MODEL, TIMES)
    est, se, (lo, hi) = _postfit.derived_interval(res, lambda p: p["sigma"] / p["mu"], level=0.9)
    e2, s2 = res.derived(lambda p: p["sigma"] / p["mu"])
    np.testing.assert_allclose([est, se], [e2, s2], rtol=1e-14)
    np.testing.assert_allclose([lo, hi], [est - 1.6448536269514722 * se, est + 1.6448536269514722 * se], rtol=1e-12)
    # Any output shape works with the delta method.
    est, se, (lo, hi) = _postfit.derived_interval(res, lambda p: jnp.stack([p["mu"], p["sigma"]]))
    assert est.shape == se.shape == lo.shape == hi.shape == (2,)


def _normal_profile_bounds(g, lo_hi_guess):
    """Brute-force profile interval of g(mu, sigma) for TIMES: the extremes of g where
    2 (l_hat - l) = q, with l maximised over sigma at each value of g = c (scipy)."""
    optimize = pytest.importorskip("scipy.optimize")
    x = np.asarray(TIMES)
    n, q = len(x), 3.841458820694124

    def ll(mu, sig):
        return -n * np.log(sig) - np.sum((x - mu) ** 2) / (2 * sig**2)

    l_hat = ll(x.mean(), x.std())

    def dev(c):   # sigma profiled, mu = g^-1(c, sigma)
        best = optimize.minimize_scalar(lambda ls: -ll(g(c, np.exp(ls)), np.exp(ls)), bracket=(1.0, 3.0), tol=1e-12)
        return 2 * (l_hat + best.fun) - q

    (a, m), (m2, b) = lo_hi_guess
    return optimize.brentq(dev, a, m, xtol=1e-12), optimize.brentq(dev, m2, b, xtol=1e-12)


def test_profile_interval_of_a_function_matches_brute_force():
    res = jm.fit(MODEL, TIMES)
    # mu + 2 sigma: for each value c, sigma is profiled with mu = c - 2 sigma.
    _, _, (lo, hi) = _postfit.derived_interval(res, lambda p: p["mu"] + 2 * p["sigma"], method="profile")
    want = _normal_profile_bounds(lambda c, sig: c - 2 * sig, ((240.0, 276.0), (276.0, 340.0)))
    np.testing.assert_allclose([lo, hi], want, rtol=1e-8)
    # sigma^2: profile intervals are invariant to monotone transformations (closed form
    # in sigma: n log(sigma^2 / s2) + n s2 / sigma^2 - n = q).
    optimize = pytest.importorskip("scipy.optimize")
    _, _, (lo, hi) = _postfit.derived_interval(res, lambda p: p["sigma"] ** 2, method="profile")
    n, s2, q = 5, 113.2, 3.841458820694124
    f = lambda v: n * np.log(v / s2) + n * s2 / v - n - q  # noqa: E731
    np.testing.assert_allclose([lo, hi], [optimize.brentq(f, 1.0, s2, xtol=1e-12),
                                          optimize.brentq(f, s2, 1e5, xtol=1e-12)], rtol=1e-8)
    # The Wald interval of sigma^2 is symmetric and reaches further down.
    _, _, (wlo, _) = _postfit.derived_interval(res, lambda p: p["sigma"] ** 2)
    assert wlo < lo


def test_profile_interval_of_a_function_batched_equals_single():
    xs = jnp.stack([TIMES, TIMES * 1.1 - 20.0])
    model = MODEL
    batch = jm.fit_batch(model, xs)
    fn = lambda p: p["sigma"] / p["mu"]  # noqa: E731
    est, se, (lo, hi) = _postfit.derived_interval(batch, fn, method="profile")
    assert lo.shape == hi.shape == (2,)
    _, _, one = _postfit.derived_interval(jm.fit(model, xs[1]), fn, method="profile")
    np.testing.assert_allclose([lo[1], hi[1]], one, rtol=1e-8)
    assert (lo < est).all() and (est < hi).all()
    with pytest.raises(ValueError, match="scalar function"):
        _postfit.derived_interval(batch, lambda p: jnp.stack([p["mu"], p["sigma"]]), method="profile")
    with pytest.raises(ValueError, match="'delta', 'profile'"):
        _postfit.derived_interval(batch, fn, method="bootstrap")


def test_derived_again_compiles_nothing():
    # A notebook user calls derived() again (or re-runs the cell with a new lambda of
    # the same code): the program is reused, for the delta method and the profile.
    from jax._src import monitoring
    x = np.array([1.2, 0.4, 2.2, 0.9, 1.7, 0.3])
    res = jm.fit(jm.Model(lambda p, d: jax.scipy.stats.expon.logpdf(d, scale=1.0 / p["rate"]),
                          {"rate": jm.Positive(1.0)}), x)
    first = res.derived(lambda p: 1.0 / p["rate"])
    prof = res.derived(lambda p: 1.0 / p["rate"], level=0.95, method="profile")
    compiles = []
    listen = lambda event, duration, **kw: compiles.append(event) if event.endswith("backend_compile_duration") else None  # noqa: E731
    monitoring.register_event_duration_secs_listener(listen)
    try:
        again = res.derived(lambda p: 1.0 / p["rate"])
        prof2 = res.derived(lambda p: 1.0 / p["rate"], level=0.95, method="profile")
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert compiles == []
    np.testing.assert_allclose(np.asarray(again[0]), x.mean(), rtol=1e-8)      # 1/rate_hat = mean
    np.testing.assert_allclose(np.asarray(again[1]), x.mean() / np.sqrt(6), rtol=1e-8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(prof[2]), np.asarray(prof2[2]))
