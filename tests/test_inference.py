"""Inference: robust covariance, delta method, likelihood-ratio tests, bootstrap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats as jstats

import jaxmle as jm
from helpers import logistic_data, logistic_model, normal_model


@pytest.fixture(scope="module")
def logit_case():
    data = logistic_data(jax.random.key(11), 400, 4)
    return data, jm.fit(logistic_model(4), data)


def test_robust_stderr_matches_statsmodels_hc0(logit_case):
    sm = pytest.importorskip("statsmodels.api")
    data, res = logit_case
    ref = sm.Logit(np.asarray(data["y"]), np.asarray(data["X"])).fit(disp=0, cov_type="HC0", tol=1e-12)
    np.testing.assert_allclose(res.stderr_robust["beta"], ref.bse, rtol=1e-6)
    np.testing.assert_allclose(res.cov_robust, ref.cov_params(), rtol=1e-6, atol=1e-12)


def test_robust_stderr_many_observations():
    """Scores by forward mode: reverse mode held n x n intermediates (29 GB here)."""
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(5)
    n = 60_000
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ np.array([0.2, 0.5, -0.4])))).astype(float)
    res = jm.fit(jm.models.logistic(3), {"X": X, "y": y})
    ref = sm.Logit(y, X).fit(disp=0, cov_type="HC0", tol=1e-12)
    np.testing.assert_allclose(res.stderr_robust["beta"], ref.bse, rtol=1e-6)


def test_robust_poisson_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(300), rng.normal(size=(300, 2))])
    y = rng.poisson(np.exp(X @ np.array([0.5, 0.3, -0.2])))
    model = jm.Model(lambda p, d: jstats.poisson.logpmf(d["y"], jnp.exp(d["X"] @ p["beta"])), {"beta": jnp.zeros(3)})
    res = jm.fit(model, {"X": jnp.asarray(X), "y": jnp.asarray(y, float)})
    ref = sm.Poisson(y, X).fit(disp=0, cov_type="HC0", tol=1e-12)
    ref_nonrobust = sm.Poisson(y, X).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose(res.params["beta"], ref.params, rtol=1e-6)
    np.testing.assert_allclose(res.stderr["beta"], ref_nonrobust.bse, rtol=1e-6)
    np.testing.assert_allclose(res.stderr_robust["beta"], ref.bse, rtol=1e-6)


def test_robust_needs_per_observation_terms():
    model = jm.Model(lambda p, x: jnp.sum(jstats.norm.logpdf(x, p["mu"], 1.0)), {"mu": 0.0})
    res = jm.fit(model, jnp.array([1.0, 2.0, 4.0]))
    with pytest.raises(ValueError, match="per-observation"):
        res.stderr_robust


def test_robust_equals_model_based_for_correct_normal_mean():
    # For the normal mean with sigma at its MLE, the sandwich equals sigma_hat / sqrt(n).
    x = jax.random.normal(jax.random.key(2), (200,)) * 2.0 + 1.0
    res = jm.fit(normal_model(), x)
    np.testing.assert_allclose(res.stderr_robust["mu"], res.stderr["mu"], rtol=1e-8)


def test_batched_robust_equals_single():
    data = logistic_data(jax.random.key(12), 150, 3, batch=6)
    model = logistic_model(3)          # one model: its single-fit program compiles once
    batch = jm.fit_batch(model, data)
    for i in [0, 5]:
        one = jm.fit(model, jax.tree_util.tree_map(lambda a: a[i], data))
        np.testing.assert_allclose(batch.stderr_robust["beta"][i], one.stderr_robust["beta"], rtol=1e-8)
        np.testing.assert_allclose(batch[i].stderr_robust["beta"], one.stderr_robust["beta"], rtol=1e-8)


def test_delta_method(logit_case):
    _, res = logit_case
    est, se = res.derived(lambda p: jnp.exp(p["beta"]))
    np.testing.assert_allclose(est, np.exp(res.params["beta"]), rtol=1e-12)
    np.testing.assert_allclose(se, np.exp(res.params["beta"]) * res.stderr["beta"], rtol=1e-10)
    est, se = res.derived(lambda p: p["beta"][1] - p["beta"][2])
    c = np.asarray(res.cov)
    np.testing.assert_allclose(se, np.sqrt(c[1, 1] + c[2, 2] - 2 * c[1, 2]), rtol=1e-10)


def test_delta_method_ratio_and_batch():
    xs = jax.random.normal(jax.random.key(3), (5, 40)) + 4.0
    batch = jm.fit_batch(normal_model(), xs)
    est, se = batch.derived(lambda p: p["sigma"] / p["mu"])
    assert est.shape == (5,) and se.shape == (5,)
    one = jm.fit(normal_model(), xs[2])
    e1, s1 = one.derived(lambda p: p["sigma"] / p["mu"])
    np.testing.assert_allclose([est[2], se[2]], [e1, s1], rtol=1e-9)
    mu, sig = float(one.params["mu"]), float(one.params["sigma"])
    var = (sig / mu**2) ** 2 * one.stderr["mu"] ** 2 + (1 / mu) ** 2 * one.stderr["sigma"] ** 2  # cov(mu, sigma) = 0
    np.testing.assert_allclose(s1, np.sqrt(var), rtol=1e-6)


def test_lr_test_matches_statsmodels_llf_difference():
    sm = pytest.importorskip("statsmodels.api")
    from scipy import stats
    data = logistic_data(jax.random.key(13), 300, 3)
    X, y = np.asarray(data["X"]), np.asarray(data["y"])
    full = jm.fit(logistic_model(3), data)

    def restricted_loglik(p, d):
        eta = d["X"] @ jnp.stack([p["b0"], p["b1"], p["b2"]])
        return d["y"] * eta - jnp.logaddexp(0.0, eta)

    restricted = jm.fit(jm.Model(restricted_loglik, {"b0": 0.0, "b1": 0.0, "b2": jm.Fixed(0.0)}), data)
    test = jm.lr_test(restricted, full)
    llf_full = sm.Logit(y, X).fit(disp=0).llf
    llf_restr = sm.Logit(y, X[:, :2]).fit(disp=0).llf
    np.testing.assert_allclose(test.stat, 2 * (llf_full - llf_restr), rtol=1e-7)
    assert test.df == 1
    np.testing.assert_allclose(test.pvalue, stats.chi2.sf(float(test.stat), 1), rtol=1e-8)
    with pytest.raises(ValueError, match="nested"):
        jm.lr_test(full, restricted)


def test_lr_test_batched():
    xs = jax.random.normal(jax.random.key(4), (8, 30)) + 0.3
    null = jm.Model(normal_model().loglik, {"mu": jm.Fixed(0.0), "sigma": jm.Positive(1.0)})
    full = jm.fit_batch(normal_model(), xs)
    restr = jm.fit_batch(null, xs)
    test = jm.lr_test(restr, full)
    assert test.stat.shape == (8,)
    # Closed form for the normal mean: n log(s0^2 / s1^2).
    s1 = xs.var(axis=1)
    s0 = (xs**2).mean(axis=1)
    np.testing.assert_allclose(test.stat, 30 * np.log(s0 / s1), rtol=1e-8)


def test_bootstrap_se_close_to_analytic():
    x = jax.random.normal(jax.random.key(5), (60,)) * 2.0 + 3.0
    boot = jm.bootstrap(normal_model(), x, n=2000, key=jax.random.key(6))
    assert boot.n_used == 2000
    analytic = jm.fit(normal_model(), x).stderr
    # SE of a bootstrap SE with 2000 replicates is ~1.6%; allow sampling error plus
    # the small-sample difference between bootstrap and asymptotic SEs.
    np.testing.assert_allclose(boot.stderr["mu"], analytic["mu"], rtol=0.1)
    lo, hi = boot.conf_int(0.9)["mu"]
    assert lo < float(jnp.mean(x)) < hi


def test_parametric_bootstrap():
    rate_true = 2.0
    x = jax.random.exponential(jax.random.key(7), (80,)) / rate_true
    model = jm.Model(lambda p, x: jstats.expon.logpdf(x, scale=1 / p["rate"]), {"rate": jm.Positive(1.0)})
    sim = lambda k, p: jax.random.exponential(k, (80,)) / p["rate"]  # noqa: E731
    boot = jm.bootstrap(model, x, n=2000, key=jax.random.key(8), simulate=sim)
    fit = jm.fit(model, x)
    np.testing.assert_allclose(boot.stderr["rate"], fit.stderr["rate"], rtol=0.12)


def test_bootstrap_needs_key():
    with pytest.raises(ValueError, match="key="):
        jm.bootstrap(normal_model(), jnp.ones(5) + jnp.arange(5.0), n=10)


def test_chi2_survival_on_the_host_matches_scipy():
    from scipy import stats

    from jaxmle._stats import chi2_sf

    for df in (1, 2, 3, 4, 7, 10, 51, 400):
        x = np.concatenate([np.linspace(0.0, 5.0 * df + 50.0, 200), [1e-12, 1e3, 5e3]])
        want = stats.chi2.sf(x, df)
        got = chi2_sf(x, df)
        ok = want > 1e-300
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-12)
        assert np.all(got[~ok] < 1e-290)
    assert chi2_sf(-1.0, 2) == 1.0 and chi2_sf(np.inf, 3) == 0.0 and np.isnan(chi2_sf(np.nan, 3))
