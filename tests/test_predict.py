"""Predictions, fitted values, residuals and the Gauss-Newton covariance convention,
against scipy's curve_fit, NIST's certified values and statsmodels on the same data."""

import jax.numpy as jnp
import numpy as np
import pytest
import statsmodels.api as sm
from scipy.optimize import curve_fit

import jaxmle as jm
from jaxmle import _predict

# NIST StRD Misra1a (https://www.itl.nist.gov/div898/strd/nls/data/misra1a.shtml): 14 rows,
# so a single fit pads them to a shape bucket (the mask drops the padding again).
MISRA_Y = np.array([10.07, 14.73, 17.94, 23.93, 29.61, 35.18, 40.02, 44.82, 50.76, 55.05, 61.01,
                    66.40, 75.47, 81.78])
MISRA_X = np.array([77.6, 114.9, 141.1, 190.8, 239.9, 289.0, 332.8, 378.4, 434.8, 477.3, 536.8,
                    593.1, 689.1, 760.0])
MISRA_CERT = np.array([2.3894212918E+02, 5.5015643181E-04])
MISRA_SD = np.array([2.7070075241E+00, 7.2668688436E-06])
MISRA_RSS = 1.2455138894E-01
X_NEW = np.array([50.0, 300.0, 1000.0])


def exponential(p, x):
    return p["b1"] * (1 - jnp.exp(-p["b2"] * x))


def exponential_np(x, b1, b2):
    return b1 * (1 - np.exp(-b2 * x))


def grad_np(x, b1, b2):
    """d f / d (b1, b2), (n, 2)."""
    return np.stack([1 - np.exp(-b2 * x), b1 * x * np.exp(-b2 * x)], axis=-1)


TIGHT = dict(ftol=1e-14, xtol=1e-14, maxfev=10_000, jac=lambda x, b1, b2: grad_np(x, b1, b2))
GN = jm.models.nonlinear_regression(exponential, {"b1": 250.0, "b2": 5e-4}, cov="gauss-newton")


@pytest.fixture(scope="module")
def misra():
    res = jm.fit(GN, {"x": MISRA_X, "y": MISRA_Y}, method="lm")
    popt, pcov = curve_fit(exponential_np, MISRA_X, MISRA_Y, p0=[250.0, 5e-4], **TIGHT)
    return res, popt, pcov


def test_gauss_newton_cov_matches_curve_fit_and_nist(misra):
    res, popt, pcov = misra
    assert res.converged and res.cov_type == "gauss-newton"
    est = np.array([res.params["b1"], res.params["b2"]])
    np.testing.assert_allclose(est, popt, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(res.cov)[:2, :2], pcov, rtol=1e-6)
    se = np.array([res.stderr["b1"], res.stderr["b2"]])
    np.testing.assert_allclose(se, MISRA_SD, rtol=1e-6)
    # sigma keeps its MLE and observed-information variance, uncorrelated with the mean parameters.
    n, p = len(MISRA_Y), 2
    np.testing.assert_allclose(float(res.params["sigma"]) ** 2 * n, MISRA_RSS, rtol=1e-8)
    np.testing.assert_array_equal(np.asarray(res.cov)[2, :2], 0.0)
    np.testing.assert_allclose(res.ssr, MISRA_RSS, rtol=1e-8)
    assert res.df_resid == n - p
    np.testing.assert_allclose(res.scale, MISRA_RSS / (n - p), rtol=1e-8)
    np.testing.assert_allclose(res.redchi, MISRA_RSS / (n - p), rtol=1e-8)
    line = _predict.summary_line(res)
    assert "Gauss-Newton" in line and "reduced chi-square" in line and "12 df" in line


def test_default_convention_unchanged_and_labelled(misra):
    gn, _, pcov = misra
    model = jm.models.nonlinear_regression(exponential, {"b1": 250.0, "b2": 5e-4})
    res = jm.fit(model, {"x": MISRA_X, "y": MISRA_Y}, method="lm")
    assert res.cov_type == "observed"
    # The observed information at the MLE: smaller than curve_fit's by about sqrt((n - p) / n).
    ratio = np.sqrt(np.diag(np.asarray(res.cov))[:2] / np.diag(pcov))
    np.testing.assert_allclose(ratio, np.sqrt(12 / 14), rtol=0.02)
    assert np.all(ratio < 1)
    np.testing.assert_allclose(res.redchi, gn.redchi, rtol=1e-8)
    assert "inverse observed information" in _predict.summary_line(res)


def test_nonlinear_predict_fitted_resid(misra):
    res, popt, pcov = misra
    n = len(MISRA_Y)
    fitted = res.fittedvalues
    assert fitted.shape == (n,)            # padding dropped
    np.testing.assert_allclose(fitted, exponential_np(MISRA_X, *popt), rtol=1e-8)
    np.testing.assert_allclose(res.resid, MISRA_Y - exponential_np(MISRA_X, *popt), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(res.predict(X_NEW), exponential_np(X_NEW, *popt), rtol=1e-8)
    np.testing.assert_allclose(res.predict({"x": X_NEW}), exponential_np(X_NEW, *popt), rtol=1e-8)
    mean, se = res.predict(X_NEW, se=True)
    g = grad_np(X_NEW, *popt)
    want = np.sqrt(np.einsum("ni,ij,nj->n", g, pcov, g))
    np.testing.assert_allclose(mean, exponential_np(X_NEW, *popt), rtol=1e-8)
    np.testing.assert_allclose(se, want, rtol=1e-6)
    pred = res.predict(X_NEW, se=True)
    assert pred.se_mean is pred.se and pred.conf_int().shape == (3, 2)


def test_weighted_and_known_sigma_match_curve_fit():
    w = np.linspace(0.5, 2.0, len(MISRA_Y))
    data = {"x": MISRA_X, "y": MISRA_Y, "weights": w}
    res = jm.fit(GN, data, method="lm")
    popt, pcov = curve_fit(exponential_np, MISRA_X, MISRA_Y, p0=[250.0, 5e-4], sigma=1 / np.sqrt(w),
                           absolute_sigma=False, **TIGHT)
    np.testing.assert_allclose([res.params["b1"], res.params["b2"]], popt, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(res.cov)[:2, :2], pcov, rtol=1e-6)
    np.testing.assert_allclose(res.resid, MISRA_Y - exponential_np(MISRA_X, *popt), rtol=1e-5, atol=1e-9)
    # A known sigma: sigma^2 (J'J)^-1, curve_fit's absolute_sigma=True.
    known = jm.models.nonlinear_regression(exponential, {"b1": 250.0, "b2": 5e-4}, sigma=0.1, cov="gauss-newton")
    res = jm.fit(known, data, method="lm")
    popt, pcov = curve_fit(exponential_np, MISRA_X, MISRA_Y, p0=[250.0, 5e-4], sigma=0.1 / np.sqrt(w),
                           absolute_sigma=True, **TIGHT)
    np.testing.assert_allclose(np.asarray(res.cov), pcov, rtol=1e-6)
    np.testing.assert_allclose(res.redchi, res.ssr / (0.1 ** 2 * res.df_resid), rtol=1e-12)
    assert "sigma known" in _predict.summary_line(res)


def test_batch_gauss_newton_cov_matches_single_fits():
    y2 = MISRA_Y * 1.01 + 0.05 * np.sin(MISRA_X)
    batch = jm.fit_batch(GN, {"x": np.stack([MISRA_X, MISRA_X]), "y": np.stack([MISRA_Y, y2])}, method="lm")
    for i, y in enumerate([MISRA_Y, y2]):
        _, pcov = curve_fit(exponential_np, MISRA_X, y, p0=[250.0, 5e-4], **TIGHT)
        np.testing.assert_allclose(np.asarray(batch.cov)[i, :2, :2], pcov, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(batch[i].cov)[:2, :2], pcov, rtol=1e-6)


def test_bad_cov_name():
    with pytest.raises(ValueError, match="gauss-newton"):
        jm.models.nonlinear_regression(exponential, {"b1": 1.0}, cov="curve_fit")
    with pytest.raises(ValueError, match="gauss-newton"):
        jm.models.linear(2, cov="hc0")


# -- statsmodels ------------------------------------------------------------------

RNG = np.random.default_rng(20261207)
N = 60
X = sm.add_constant(RNG.normal(size=(N, 2)))
X_OUT = sm.add_constant(RNG.normal(size=(7, 2)), has_constant="add")


def test_linear_matches_ols():
    y = X @ np.array([1.0, 2.0, -1.0]) + RNG.normal(size=N)
    ols = sm.OLS(y, X).fit()
    gp = ols.get_prediction(X_OUT)
    res = jm.fit(jm.models.linear(3, cov="gauss-newton"), {"X": X, "y": y})
    assert res.method != "lm"              # a linear model keeps its default optimizer
    np.testing.assert_allclose(res.stderr["beta"], ols.bse, rtol=1e-6)
    mean, se = res.predict(X_OUT, se=True)
    np.testing.assert_allclose(mean, gp.predicted_mean, rtol=1e-6)
    np.testing.assert_allclose(se, gp.se_mean, rtol=1e-6)
    np.testing.assert_allclose(res.fittedvalues, ols.fittedvalues, rtol=1e-6)
    np.testing.assert_allclose(res.resid, ols.resid, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.ssr, ols.ssr, rtol=1e-8)
    assert res.df_resid == ols.df_resid
    np.testing.assert_allclose(res.scale, ols.scale, rtol=1e-8)
    # The default (observed information, divisor n): the same up to sqrt(n / (n - k)).
    obs = jm.fit(jm.models.linear(3), {"X": X, "y": y})
    _, se_obs = obs.predict({"X": X_OUT}, se=True)
    np.testing.assert_allclose(se_obs * np.sqrt(N / (N - 3)), gp.se_mean, rtol=1e-6)


def test_logistic_and_probit_match_statsmodels():
    eta = X @ np.array([0.3, 1.0, -0.8])
    y = (RNG.uniform(size=N) < 1 / (1 + np.exp(-eta))).astype(float)
    for model, sm_cls in [(jm.models.logistic(3), sm.Logit), (jm.models.probit(3), sm.Probit)]:
        ref = sm_cls(y, X).fit(disp=0, tol=1e-12, maxiter=100)
        res = jm.fit(model, {"X": X, "y": y})
        gp = ref.get_prediction(X_OUT)
        mean, se = res.predict(X_OUT, se=True)
        np.testing.assert_allclose(mean, gp.predicted, rtol=1e-6)
        np.testing.assert_allclose(se, gp.se, rtol=1e-6)
        np.testing.assert_allclose(res.fittedvalues, ref.predict(), rtol=1e-6)
        np.testing.assert_allclose(res.resid, y - ref.predict(), rtol=1e-6, atol=1e-9)
        assert res.ssr is None and res.cov_type is None
        assert _predict.summary_line(res) is None


def test_poisson_with_offset_matches_statsmodels():
    offset = np.log(RNG.uniform(0.5, 2.0, size=N))
    y = RNG.poisson(np.exp(X @ np.array([0.5, 0.4, -0.3]) + offset)).astype(float)
    ref = sm.Poisson(y, X, offset=offset).fit(disp=0, tol=1e-12, maxiter=100)
    res = jm.fit(jm.models.poisson(3), {"X": X, "y": y, "offset": offset})
    off_new = np.log(np.linspace(0.5, 2.0, len(X_OUT)))
    gp = ref.get_prediction(X_OUT, offset=off_new)
    mean, se = res.predict({"X": X_OUT, "offset": off_new}, se=True)
    np.testing.assert_allclose(mean, gp.predicted, rtol=1e-6)
    np.testing.assert_allclose(se, gp.se, rtol=1e-6)
    np.testing.assert_allclose(res.fittedvalues, ref.predict(), rtol=1e-6)
    np.testing.assert_allclose(res.resid, y - ref.predict(), rtol=1e-6, atol=1e-9)
    # No offset in new data: the rate at offset 0.
    np.testing.assert_allclose(res.predict(X_OUT), ref.predict(X_OUT, offset=np.zeros(len(X_OUT))), rtol=1e-6)


def test_softmax_matches_mnlogit():
    eta = X @ np.array([[0.2, -0.3], [0.8, -0.5], [-0.4, 0.9]])
    logits = np.concatenate([np.zeros((N, 1)), eta], axis=1)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([RNG.choice(3, p=p) for p in prob])
    ref = sm.MNLogit(y, X).fit(disp=0, tol=1e-12, maxiter=100)
    res = jm.fit(jm.models.softmax(3, 3), {"X": X, "y": y})
    np.testing.assert_allclose(res.predict(X_OUT), ref.predict(X_OUT), rtol=1e-6)
    np.testing.assert_allclose(res.fittedvalues, ref.predict(), rtol=1e-6)
    np.testing.assert_allclose(res.resid, np.eye(3)[y] - ref.predict(), rtol=1e-6, atol=1e-9)
    mean, se = res.predict(X_OUT, se=True)
    assert mean.shape == se.shape == (len(X_OUT), 3)
    assert np.all(np.isfinite(se)) and np.all(se > 0)
    # Class probabilities sum to one, so their delta-method variances do too (summed row-wise
    # with the covariances); check one class against the delta method by hand.
    b = np.asarray(res.params["beta"])
    cov = np.asarray(res.cov)
    i, x0 = 1, X_OUT[0]
    p0 = mean[0]
    # d p_1 / d beta[:, j] = p_1 (1[j+1 == 1] - p_{j+1}) x; beta flattened row-major (k, C-1).
    g = np.zeros((3, 2))
    for j in range(2):
        g[:, j] = p0[i] * ((j + 1 == i) - p0[j + 1]) * x0
    np.testing.assert_allclose(se[0, i], np.sqrt(g.ravel() @ cov @ g.ravel()), rtol=1e-8)
    assert b.shape == (3, 2)


def test_custom_model_without_mean_fn_raises():
    model = jm.Model(lambda p, x: -0.5 * (x - p["mu"]) ** 2, {"mu": 0.0})
    res = jm.fit(model, np.array([0.5, 1.0, 1.5]))
    with pytest.raises(TypeError, match="ready model"):
        res.predict(np.array([1.0]))
    with pytest.raises(TypeError, match="mean function"):
        res.fittedvalues  # noqa: B018
    assert res.ssr is None and res.cov_type is None


def test_pickled_gauss_newton_result_keeps_its_covariance(misra):
    import pickle

    res, _, pcov = misra
    back = pickle.loads(pickle.dumps(res))
    np.testing.assert_allclose(np.asarray(back.cov)[:2, :2], pcov, rtol=1e-6)
    np.testing.assert_allclose(back.stderr["b1"], res.stderr["b1"], rtol=1e-12)
