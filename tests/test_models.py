"""Ready regression models against statsmodels on its bundled datasets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm

sm = pytest.importorskip("statsmodels.api")


def _data(X, y, **extra):
    d = {"X": jnp.asarray(np.asarray(X, float)), "y": jnp.asarray(np.asarray(y, float))}
    d.update({k: jnp.asarray(np.asarray(v, float)) for k, v in extra.items()})
    return d


@pytest.fixture(scope="module")
def spector():
    ds = sm.datasets.spector.load_pandas()
    return sm.add_constant(ds.exog, prepend=True).to_numpy(), ds.endog.to_numpy()


@pytest.mark.parametrize("name,ref_cls", [("logistic", "Logit"), ("probit", "Probit")])
def test_binary_models_vs_statsmodels_spector(spector, name, ref_cls):
    X, y = spector
    res = jm.fit(getattr(jm.models, name)(X.shape[1]), _data(X, y))
    ref = getattr(sm, ref_cls)(y, X).fit(disp=0, tol=1e-12)
    assert res.converged
    np.testing.assert_allclose(res.params["beta"], ref.params, rtol=1e-6)
    np.testing.assert_allclose(res.stderr["beta"], ref.bse, rtol=1e-5)
    np.testing.assert_allclose(res.loglik, ref.llf, rtol=1e-10)


def test_poisson_vs_statsmodels_randhie():
    ds = sm.datasets.randhie.load_pandas()
    X = sm.add_constant(ds.exog, prepend=True).to_numpy()
    y = ds.endog.to_numpy()
    res = jm.fit(jm.models.poisson(X.shape[1]), _data(X, y))
    ref = sm.Poisson(y, X).fit(disp=0, tol=1e-12)
    assert res.converged
    np.testing.assert_allclose(res.params["beta"], ref.params, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.stderr["beta"], ref.bse, rtol=1e-5)
    np.testing.assert_allclose(res.loglik, ref.llf, rtol=1e-10)


def test_poisson_offset_vs_statsmodels():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(400), rng.normal(size=400)])
    exposure = rng.uniform(0.5, 3.0, 400)
    y = rng.poisson(exposure * np.exp(0.2 + 0.5 * X[:, 1]))
    res = jm.fit(jm.models.poisson(2), _data(X, y, offset=np.log(exposure)))
    ref = sm.Poisson(y, X, offset=np.log(exposure)).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose(res.params["beta"], ref.params, rtol=1e-7)
    np.testing.assert_allclose(res.stderr["beta"], ref.bse, rtol=1e-5)


def test_softmax_vs_statsmodels_mnlogit_anes96():
    ds = sm.datasets.anes96.load_pandas()
    X = sm.add_constant(ds.exog, prepend=True).to_numpy()
    y = ds.endog.to_numpy().astype(int)
    C = int(y.max()) + 1
    res = jm.fit(jm.models.softmax(X.shape[1], C), {"X": jnp.asarray(X), "y": jnp.asarray(y)})
    ref = sm.MNLogit(y, X).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
    assert res.converged
    np.testing.assert_allclose(res.params["beta"], ref.params, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(res.stderr["beta"], ref.bse, rtol=1e-4)
    np.testing.assert_allclose(res.loglik, ref.llf, rtol=1e-10)


def test_linear_is_ols_with_mle_variance():
    rng = np.random.default_rng(1)
    X = np.column_stack([np.ones(120), rng.normal(size=(120, 2))])
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(0, 1.5, 120)
    res = jm.fit(jm.models.linear(3), _data(X, y))
    ols = sm.OLS(y, X).fit()
    n, k = X.shape
    np.testing.assert_allclose(res.params["beta"], ols.params, rtol=1e-9)
    np.testing.assert_allclose(res.params["sigma"] ** 2, ols.ssr / n, rtol=1e-9)
    # MLE standard errors use the divisor n where OLS uses n - k.
    np.testing.assert_allclose(res.stderr["beta"], ols.bse * np.sqrt((n - k) / n), rtol=1e-6)
    np.testing.assert_allclose(res.loglik, ols.llf, rtol=1e-10)


def test_models_batch_and_inference():
    rng = np.random.default_rng(2)
    X = np.concatenate([np.ones((10, 80, 1)), rng.normal(size=(10, 80, 1))], axis=2)
    y = (rng.uniform(size=(10, 80)) < 1 / (1 + np.exp(-X @ np.array([0.2, 1.0])))).astype(float)
    model = jm.models.logistic(2)
    batch = jm.fit_batch(model, _data(X, y))
    assert batch.converged.all()
    one = jm.fit(model, _data(X[4], y[4]))
    np.testing.assert_allclose(batch.params["beta"][4], one.params["beta"], rtol=1e-9)
    np.testing.assert_allclose(batch.stderr_robust["beta"][4], one.stderr_robust["beta"], rtol=1e-8)


def test_model_data_errors():
    model = jm.models.logistic(3)
    with pytest.raises(ValueError, match=r"keys \['X', 'y'\]"):
        jm.fit(model, {"X": jnp.ones((5, 3))})
    with pytest.raises(ValueError, match="X has shape .* k=3"):
        jm.fit(model, {"X": jnp.ones((5, 2)), "y": jnp.ones(5)})
    with pytest.raises(ValueError, match="y has shape"):
        jm.fit(model, {"X": jnp.ones((5, 3)), "y": jnp.ones(4)})
    with pytest.raises(ValueError, match="positive int"):
        jm.models.linear(0)


def test_gaussian_prior_equals_explicit_l2_penalty():
    # The tutorial's claim: a N(0, tau^2) prior is L2 regularisation with lambda = 1/(2 tau^2).
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(30), rng.normal(size=(30, 3))])
    y = (rng.uniform(size=30) < 1 / (1 + np.exp(-X @ np.array([0.5, 2.0, -1.0, 0.0])))).astype(float)
    data = _data(X, y)
    tau = 0.7
    base = jm.models.logistic(4)
    map_model = jm.Model(base.loglik, {"beta": jnp.zeros(4)}, log_prior=jm.priors.gaussian(tau))
    lam = 1 / (2 * tau**2)

    def penalised(p, d):
        return jnp.sum(base.loglik(p, d)) - lam * jnp.sum(p["beta"] ** 2)

    got = jm.fit(map_model, data)
    want = jm.fit(jm.Model(penalised, {"beta": jnp.zeros(4)}), data)
    assert got.is_map and "MAP" in got.summary()
    np.testing.assert_allclose(got.params["beta"], want.params["beta"], rtol=1e-9)
    mle = jm.fit(base, data)
    assert np.linalg.norm(got.params["beta"]) < np.linalg.norm(mle.params["beta"])   # shrinkage


def test_laplace_prior_matches_statsmodels_l1_when_no_coefficient_is_zeroed(spector):
    X, y = spector
    b = 20.0   # weak prior: every coefficient stays away from the kink at 0
    model = jm.Model(jm.models.logistic(4).loglik, {"beta": jnp.zeros(4)},
                     log_prior=jm.priors.laplace(b, params=["beta"]))
    got = jm.fit(model, _data(X, y))
    ref = sm.Logit(y, X).fit_regularized(method="l1", alpha=1 / b, disp=0, acc=1e-12, trim_mode="off")
    np.testing.assert_allclose(got.params["beta"], ref.params, rtol=1e-5)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_vs_statsmodels_phreg(ties):
    rng = np.random.default_rng(4)
    n = 300
    X = rng.normal(size=(n, 3))
    t_event = rng.exponential(1.0 / np.exp(X @ np.array([0.5, -0.8, 0.3])))
    t_cens = rng.exponential(1.5, n)
    time = np.round(np.minimum(t_event, t_cens), 1) + 0.1   # rounding makes many ties
    event = (t_event <= t_cens).astype(float)
    data = {"X": jnp.asarray(X), "time": jnp.asarray(time), "event": jnp.asarray(event)}
    res = jm.fit(jm.models.cox(3, ties=ties), data)
    ref = sm.PHReg(time, X, status=event, ties=ties).fit()
    assert res.converged
    assert len(np.unique(time[event == 1])) < event.sum()   # the data do have tied events
    np.testing.assert_allclose(res.params["beta"], ref.params, rtol=1e-6)
    np.testing.assert_allclose(res.stderr["beta"], ref.bse, rtol=1e-5)
    np.testing.assert_allclose(res.loglik, ref.llf, rtol=1e-10)


def test_ready_models_refuse_out_of_range_y():
    # An out-of-range label gave a fit that ran and reported nonsense (a logistic fit of
    # 1/2 codes: log-likelihood +5167, LINESEARCH_FAILED); now a ValueError names it.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    y01 = (rng.random(60) < 0.5).astype(float)
    cases = [
        (jm.models.logistic(2), y01 + 1.0, r"logistic: y must be 0 or 1"),
        (jm.models.probit(2), y01 - 0.5, r"probit: y must be 0 or 1"),
        (jm.models.poisson(2), -y01, r"poisson: y must be a count >= 0"),
        (jm.models.softmax(2, 3), rng.integers(1, 4, 60), r"softmax: y must be an integer class label 0\.\.2"),
        (jm.models.softmax(2, 3), rng.integers(0, 3, 60) + 0.5, r"softmax: y must be an integer class label"),
    ]
    for model, y, message in cases:
        with pytest.raises(ValueError, match=message):
            jm.fit(model, {"X": X, "y": y})
    # Proportions are allowed for logistic regression, and NaN padding under a mask.
    assert jm.fit(jm.models.logistic(2), {"X": X, "y": np.clip(y01, 0.2, 0.8)}).converged
    data, mask = jm.pad([{"X": X[:20], "y": y01[:20]}, {"X": X[:45], "y": y01[:45]}])
    assert jm.fit_batch(jm.models.logistic(2), data, mask=mask).status_counts() == {"CONVERGED": 2}
