"""Statuses that never mislead, and the warnings that go with them (issue 22)."""

import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

import jaxmle as jm


def _ridge_model():
    # Only a + b is identified: the information matrix is singular at every optimum.
    return jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["a"] + p["b"], 1.0), {"a": 0.0, "b": 0.0})


def test_fit_batch_warns_about_hessian_not_pd_fits():
    xs = np.random.default_rng(0).normal(3.0, 1.0, (4, 20))
    with pytest.warns(jm.ConvergenceWarning, match="4 of 4 fits ended HESSIAN_NOT_PD"):
        batch = jm.fit_batch(_ridge_model(), xs)
    assert (np.asarray(batch.status) == jm.Status.HESSIAN_NOT_PD).all()
    # The identified combination is right all the same.
    np.testing.assert_allclose(np.asarray(batch.params["a"] + batch.params["b"]), xs.mean(axis=1), rtol=1e-8)


def test_single_fit_status_is_a_status_and_warns_the_same():
    with pytest.warns(jm.ConvergenceWarning, match="HESSIAN_NOT_PD"):
        res = jm.fit(_ridge_model(), np.random.default_rng(1).normal(size=20))
    assert isinstance(res.status, jm.Status) and res.status == jm.Status.HESSIAN_NOT_PD


_X64_OFF = """
import warnings, jax, numpy as np, jaxmle as jm
m = jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"]), {"mu": 0.0, "sigma": jm.Positive(1.0)})
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    jm.fit(m, np.array([240., 255., 261., 248., 271.]))
print([str(x.message) for x in w if "jax_enable_x64" in str(x.message)])
"""


def test_forgetting_x64_warns_at_fit_time():
    out = subprocess.run([sys.executable, "-c", _X64_OFF], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "JAX_ENABLE_X64": "0", "JAXMLE_CACHE_DIR": "off"})
    assert out.returncode == 0, out.stderr
    assert "jax.config.update('jax_enable_x64', True)" in out.stdout


def test_complete_separation_in_a_hand_written_logistic_model_is_at_boundary():
    # The likelihood climbs to within ~2e-15 of its supremum 0 as b[1] runs off: the fit
    # stalls (no step improves beyond rounding), and the status says why.
    import jax.numpy as jnp

    Xs = np.c_[np.ones(20), np.linspace(-1, 1, 20)]
    ys = (Xs[:, 1] > 0).astype(float)
    m = jm.Model(lambda p, d: d["y"] * (d["X"] @ p["b"]) - jnp.logaddexp(0.0, d["X"] @ p["b"]), {"b": jnp.zeros(2)})
    with pytest.warns(jm.ConvergenceWarning, match="AT_BOUNDARY") as got:
        res = jm.fit(m, {"X": Xs, "y": ys})
    assert res.status == jm.Status.AT_BOUNDARY
    assert res.boundary_params == ["b[0]", "b[1]"]
    assert float(res.loglik) > -1e-6
    assert not any("line search" in str(w.message) for w in got)
    # The ready model agrees.
    with pytest.warns(jm.ConvergenceWarning):
        ready = jm.fit(jm.models.logistic(2), {"X": Xs, "y": ys})
    assert ready.status == jm.Status.AT_BOUNDARY


def test_a_float64_fit_stalled_on_a_plateau_gets_no_dtype_advice():
    # A 4-parameter dose-response curve from all-ones starts runs onto the plateau where
    # the curve is flat (bottom and logec50 huge); LM from the same start finds the optimum.
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    dose = np.repeat(np.logspace(-2, 2, 12), 3)

    def f(p, x):
        return p["bottom"] + (p["top"] - p["bottom"]) / (1 + jnp.exp(p["hill"] * (jnp.log(x) - p["logec50"])))

    truth = {"bottom": 5.0, "top": 100.0, "logec50": 0.3, "hill": 1.5}
    y = np.asarray(f(truth, dose)) + rng.normal(0, 4, dose.size)
    start = {"bottom": 1.0, "top": 1.0, "logec50": 1.0, "hill": 1.0}
    best = jm.fit(jm.models.nonlinear_regression(f, start), {"x": dose, "y": y})
    assert best.status == jm.Status.CONVERGED
    m = jm.Model(lambda p, d: jax.scipy.stats.norm.logpdf(d["y"], f(p, d["x"]), p["sigma"]),
                 dict(start, sigma=jm.Positive(1.0)))
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        res = jm.fit(m, {"x": dose, "y": y})
    if res.status == jm.Status.CONVERGED:
        np.testing.assert_allclose(float(res.loglik), float(best.loglik), rtol=1e-8)
    else:
        text = " ".join(str(w.message) for w in got)
        assert "float32" not in text and "float64 data" not in text
        assert "n_starts" in text and "lm" in text
        assert float(res.loglik) < float(best.loglik) - 1.0


def test_precision_limit_message_depends_on_the_dtype():
    assert "float32" in jm.status_message(jm.Status.PRECISION_LIMIT)
    text = jm._status.message(jm.Status.PRECISION_LIMIT, np.float64)
    assert "float32" not in text and "n_starts" in text and "method='lm'" in text


def test_a_nan_cell_in_long_data_is_named_by_group_and_row():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"star": np.repeat(["a", "b", "c"], 6), "flux": rng.normal(10, 1, 18)},
                      index=np.arange(100, 118))
    df.loc[109, "flux"] = np.nan
    model = jm.Model(lambda p, d: jax.scipy.stats.norm.logpdf(d["flux"], p["mu"], p["sigma"]),
                     {"mu": 0.0, "sigma": jm.Positive(1.0)})
    with pytest.raises(ValueError, match=r"column 'flux': 1 rows, first in group 'b' at index 109"):
        jm.fit_batch(model, df, by="star")
    batch = jm.fit_batch(model, df, by="star", nan_policy="status")
    assert list(np.asarray(batch.status) == jm.Status.NONFINITE) == [False, True, False]


# -- every status code, produced by a real case (issue 24) ------------------------------
# Each test builds a small case that genuinely ends with the code (single fit and, where
# cheap, one lane of a fit_batch) and checks what the status message claims against an
# independent reference: a closed form, or a direct evaluation of the log-density.

import jax.numpy as jnp  # noqa: E402
from jax.scipy import stats  # noqa: E402


def _normal():
    return jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]), {"mu": 0.0, "sigma": jm.Positive(1.0)})


def _warned(code, fn):
    with pytest.warns(jm.ConvergenceWarning, match=code.name):
        return fn()


def test_every_status_code_has_a_test_below():
    import pathlib

    text = pathlib.Path(__file__).read_text()
    for code in jm.Status:
        assert f"def test_status_{code.name.lower()}" in text, code.name


def test_status_converged():
    # Closed form: mu = mean, sigma = sd (ddof 0), se(mu) = sigma/sqrt(n), se(sigma) = sigma/sqrt(2n).
    xs = np.random.default_rng(3).normal([[1.0], [-4.0]], [[2.0], [0.5]], (2, 40))
    with warnings.catch_warnings():
        warnings.simplefilter("error", jm.ConvergenceWarning)
        res = jm.fit(_normal(), xs[0])
    batch = jm.fit_batch(_normal(), xs)
    assert res.status == jm.Status.CONVERGED and res.converged
    assert list(np.asarray(batch.status)) == [jm.Status.CONVERGED] * 2
    mu, sd = xs.mean(axis=1), xs.std(axis=1)
    np.testing.assert_allclose([float(res.params["mu"]), float(res.params["sigma"])], [mu[0], sd[0]], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(batch.params["mu"]), mu, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(batch.params["sigma"]), sd, rtol=1e-9)
    np.testing.assert_allclose([float(res.stderr["mu"]), float(res.stderr["sigma"])],
                               [sd[0] / np.sqrt(40), sd[0] / np.sqrt(80)], rtol=1e-6)


def test_status_max_iter():
    x = np.random.default_rng(4).normal(50.0, 2.0, 40)
    res = _warned(jm.Status.MAX_ITER, lambda: jm.fit(_normal(), x, method="bfgs", max_iter=2))
    assert res.status == jm.Status.MAX_ITER and int(res.n_iter) == 2
    # "not converged": the last iterate is far from the closed-form optimum ...
    assert abs(float(res.params["mu"]) - x.mean()) > 1.0
    # ... and "raise max_iter" is the fix: the default cap reaches it.
    again = jm.fit(_normal(), x, method="bfgs")
    assert again.status == jm.Status.CONVERGED
    np.testing.assert_allclose(float(again.params["mu"]), x.mean(), rtol=1e-9)
    # In a batch the cap is per lane: a lane started at its optimum converges, the other does not.
    xs = np.stack([x, x - 50.0])
    init = {"mu": np.array([0.0, x.mean() - 50.0]), "sigma": np.array([1.0, x.std()])}
    batch = jm.fit_batch(_normal(), xs, init=init, method="bfgs", max_iter=2)
    assert list(np.asarray(batch.status)) == [jm.Status.MAX_ITER, jm.Status.CONVERGED]
    np.testing.assert_allclose(float(batch.params["mu"][1]), x.mean() - 50.0, rtol=1e-9)


def _sqrt_mean_model():
    # The JAX "NaN gradient through jnp.where" trap: for a <= 0 the value is finite (the
    # second branch) but the untaken sqrt(a) has gradient NaN, and 0 * NaN = NaN.
    return jm.Model(lambda p, x: stats.norm.logpdf(x, jnp.where(p["a"] > 0, jnp.sqrt(p["a"]), 0.0), 1.0),
                    {"a": 1.0})


def test_status_nonfinite():
    rng = np.random.default_rng(5)
    neg, pos = rng.normal(-1.0, 1.0, 30), rng.normal(2.0, 1.0, 30)
    model = _sqrt_mean_model()
    # Data with a negative mean pull a below 0, where the gradient is NaN.
    res = _warned(jm.Status.NONFINITE, lambda: jm.fit(model, neg, method="newton"))
    assert res.status == jm.Status.NONFINITE
    # The message is true: at the start the value and gradient are finite and the gradient
    # points towards a < 0 ...
    grad = jax.grad(lambda a: model.loglik({"a": a}, neg).sum())
    assert np.isfinite(float(grad(1.0))) and float(grad(1.0)) < 0
    # ... where the log-density's gradient is NaN although its value is finite.
    assert np.isnan(float(grad(-0.5))) and np.isfinite(float(model.loglik({"a": -0.5}, neg).sum()))
    # The non-finite step is not taken: the fit keeps its last finite point.
    assert np.isfinite(float(res.params["a"]))
    # In a batch that lane alone is NONFINITE; the other reaches the closed form a = mean^2.
    batch = jm.fit_batch(model, np.stack([pos, neg]))
    assert list(np.asarray(batch.status)) == [jm.Status.CONVERGED, jm.Status.NONFINITE]
    np.testing.assert_allclose(float(batch.params["a"][0]), pos.mean() ** 2, rtol=1e-8)
    # And the documented batch case: NaN in one dataset's data under nan_policy="status".
    bad = pos.copy()
    bad[3] = np.nan
    batch = jm.fit_batch(_normal(), np.stack([pos, bad]), nan_policy="status")
    assert list(np.asarray(batch.status)) == [jm.Status.CONVERGED, jm.Status.NONFINITE]
    assert np.isnan(np.asarray(batch.stderr["mu"])[1])


def _laplace_location():
    # Laplace location with unit scale: the log-likelihood -sum|x - mu| has kinks at the data
    # and its maximum is at the sample median, on a kink.
    return jm.Model(lambda p, x: -jnp.abs(x - p["mu"]), {"mu": 0.0})


def test_status_linesearch_failed_on_a_kinked_objective():
    xs = np.random.default_rng(0).laplace(2.0, 1.0, (3, 25))     # n odd: a unique median
    res = _warned(jm.Status.LINESEARCH_FAILED, lambda: jm.fit(_laplace_location(), xs[0], method="bfgs"))
    assert res.status == jm.Status.LINESEARCH_FAILED
    mu = float(res.params["mu"])
    # The message is true for this case. "No improving step from the last point": the fit
    # stopped at the sample median (the closed-form maximum, on a kink), where every step
    # either way lowers the log-likelihood (evaluated here with NumPy) ...
    np.testing.assert_allclose(mu, np.median(xs[0]), rtol=1e-12)
    ll = lambda m: -np.abs(xs[0] - m).sum()   # noqa: E731
    assert all(ll(mu + h) < ll(mu) for h in (-1e-3, -1e-7, 1e-7, 1e-3))
    # ... "while the gradient is still well above the noise level": the one-sided slope
    # of the mean objective is 1/n there (a kink: "too rough"), not ~sqrt(eps).
    g = float(jax.grad(lambda m: jnp.mean(jnp.abs(xs[0] - m)))(mu))
    np.testing.assert_allclose(abs(g), 1 / 25, rtol=1e-12)
    assert "too flat or too rough" in jm.status_message(res.status)
    # Every lane of a batch stops the same way, each at its own median.
    batch = jm.fit_batch(_laplace_location(), xs, method="bfgs")
    assert list(np.asarray(batch.status)) == [jm.Status.LINESEARCH_FAILED] * 3
    np.testing.assert_allclose(np.asarray(batch.params["mu"]), np.median(xs, axis=1), rtol=1e-12)


def test_status_linesearch_failed_when_the_gradient_contradicts_the_value():
    # A hand-written derivative that is wrong (biased): BFGS's search direction is then
    # not a descent direction of the value, and the line search finds no decrease.
    @jax.custom_jvp
    def logpdf(mu, x):
        return stats.norm.logpdf(x, mu, 1.0)

    @logpdf.defjvp
    def _jvp(primals, tangents):
        mu, x = primals
        return logpdf(mu, x), 0.5 * (x - mu + 1.0) * tangents[0]   # true slope: (x - mu)

    x = np.random.default_rng(0).laplace(2.0, 1.0, 25)
    res = _warned(jm.Status.LINESEARCH_FAILED,
                  lambda: jm.fit(jm.Model(lambda p, d: logpdf(p["mu"], d), {"mu": 0.0}), x, method="bfgs"))
    assert res.status == jm.Status.LINESEARCH_FAILED
    mu = float(res.params["mu"])
    # The claimed ascent direction (the wrong slope's sign) lowers the true log-likelihood
    # for every step size, so no improving step exists along it; the true optimum (the
    # mean) is elsewhere and the wrong gradient is far from zero.
    ll = lambda m: -0.5 * ((x - m) ** 2).sum()   # noqa: E731
    wrong = 0.5 * (x - mu + 1.0).mean()
    assert all(ll(mu + np.sign(wrong) * h) < ll(mu) for h in (1e-8, 1e-4, 1e-2, 1.0))
    assert abs(wrong) > 1e-3 and abs(mu - x.mean()) > 1e-2


def test_status_hessian_not_pd():
    from scipy import stats as scipy_stats

    # Only a + b is identified: the information matrix is [[n, n], [n, n]], singular.
    x = np.random.default_rng(6).normal(3.0, 1.0, 30)
    res = _warned(jm.Status.HESSIAN_NOT_PD, lambda: jm.fit(_ridge_model(), x))
    assert res.status == jm.Status.HESSIAN_NOT_PD
    # The message is true for this case. "The gradient vanishes": d/da = d/db = sum(x - a - b),
    # zero where a + b is the mean (the closed form) ...
    a_hat, b_hat = float(res.params["a"]), float(res.params["b"])
    np.testing.assert_allclose(a_hat + b_hat, x.mean(), rtol=1e-9)
    # ... "a parameter is unidentified at the maximum (a flat ridge)": moving along a + b =
    # const leaves the log-likelihood (evaluated with scipy) at its maximum ...
    ll = lambda a, b: scipy_stats.norm.logpdf(x, a + b).sum()   # noqa: E731
    assert all(abs(ll(a_hat + t, b_hat - t) - ll(a_hat, b_hat)) < 1e-9 for t in (-10.0, 1.0, 100.0))
    assert ll(a_hat + 0.1, b_hat) < ll(a_hat, b_hat)
    # ... "standard errors are NaN".
    assert np.isnan(float(res.stderr["a"])) and np.isnan(float(res.stderr["b"]))
    # The information matrix (from the closed form: every entry is n) is singular: its
    # determinant is zero, so no positive-definiteness test could pass.
    info = np.full((2, 2), float(x.size))
    assert np.linalg.matrix_rank(info) == 1
    # The fit's own verdict agrees: a scaled condition number above the documented ~4.5e13.
    assert float(res.cond) > 4.5e13


def test_status_at_boundary():
    # Bernoulli with all successes: the MLE k/n = 1 is the edge of Interval(0, 1).
    model = jm.Model(lambda p, x: stats.bernoulli.logpmf(x, p["p"]), {"p": jm.Interval(0.0, 1.0)})
    ones, mixed = np.ones(10), np.r_[np.ones(7), np.zeros(3)]
    res = _warned(jm.Status.AT_BOUNDARY, lambda: jm.fit(model, ones))
    assert res.status == jm.Status.AT_BOUNDARY and res.boundary_params == ["p"]
    assert 1.0 - float(res.params["p"]) < 1e-6          # at the edge (closed form 10/10)
    # In a batch: that lane is AT_BOUNDARY, the other the interior closed form 7/10.
    batch = jm.fit_batch(model, np.stack([ones, mixed]))
    assert list(np.asarray(batch.status)) == [jm.Status.AT_BOUNDARY, jm.Status.CONVERGED]
    np.testing.assert_allclose(float(batch.params["p"][1]), 0.7, rtol=1e-9)


def test_status_precision_limit():
    # float32, L-BFGS and tol=1e-8: the raw gradient cannot be pushed below tol in float32.
    x32 = np.random.default_rng(0).normal(1000.0, 3.0, 500).astype(np.float32)
    res = _warned(jm.Status.PRECISION_LIMIT, lambda: jm.fit(_normal(), jnp.asarray(x32), tol=1e-8, method="lbfgs"))
    assert res.status == jm.Status.PRECISION_LIMIT and res.z.dtype == jnp.float32
    # The message is true: "stalled with the gradient at the rounding-noise level of its
    # dtype", "not converged to tol". In float64, at the float32 estimate, the gradient of
    # the mean objective -mean(logpdf) in mu is above tol * max(1, |f|) but below
    # sqrt(eps32) * max(1, |f|), the level a float32 line search can resolve.
    x = x32.astype(np.float64)
    mu, sigma = float(res.params["mu"]), float(res.params["sigma"])
    f = -np.mean(-0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi))
    g_mu = abs(np.mean(x - mu)) / sigma ** 2
    assert 1e-8 * max(1.0, f) < g_mu < np.sqrt(np.finfo(np.float32).eps) * max(1.0, f)
    # The estimate is as good as float32 allows: within a few float32 ulps of the mean.
    assert abs(mu - x.mean()) <= 4 * np.spacing(np.float32(x.mean()))
    assert "float32" in jm.status_message(res.status)
    batch = jm.fit_batch(_normal(), jnp.asarray(np.stack([x32, x32[::-1]])), tol=1e-8, method="lbfgs")
    assert list(np.asarray(batch.status)) == [jm.Status.PRECISION_LIMIT] * 2


# -- method="auto" says which method ran --------------------------------------------------

def test_auto_method_picks_lm_for_nonlinear_regression_and_matches_curve_fit():
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(7)
    x = np.linspace(0.2, 6, 40)
    ys = 3.0 * (1 - np.exp(-0.7 * x)) + rng.normal(0, 0.1, (2, 40))
    model = jm.models.nonlinear_regression(lambda p, x: p["a"] * (1 - jnp.exp(-p["b"] * x)), {"a": 1.0, "b": 1.0})
    res = jm.fit(model, {"x": x, "y": ys[0]})                 # method="auto", the default
    assert res.method == "lm" and res.status == jm.Status.CONVERGED
    assert "method: lm" in res.summary()

    def curve(x, a, b):
        return a * (1 - np.exp(-b * x))

    def jac(x, a, b):
        return np.column_stack([1 - np.exp(-b * x), a * x * np.exp(-b * x)])

    popt, _ = curve_fit(curve, x, ys[0], p0=[1.0, 1.0], jac=jac, xtol=1e-15, ftol=1e-15, gtol=1e-15)
    np.testing.assert_allclose([float(res.params["a"]), float(res.params["b"])], popt, rtol=1e-8)
    r = ys[0] - curve(x, *popt)
    sigma2 = np.mean(r ** 2)                                   # the Gaussian MLE of sigma^2
    np.testing.assert_allclose(float(res.params["sigma"]) ** 2, sigma2, rtol=1e-8)
    # Standard errors from the observed information at the MLE, by hand:
    # (J'J - sum r_i Hess f_i) / sigma^2 (curve_fit's pcov is Gauss-Newton J'J with SSR/(n-p)).
    a, b = popt
    e = np.exp(-b * x)
    J = jac(x, a, b)
    second = np.array([[0.0, np.sum(r * x * e)], [np.sum(r * x * e), -np.sum(r * a * x ** 2 * e)]])
    se = np.sqrt(np.diag(np.linalg.inv((J.T @ J - second) / sigma2)))
    np.testing.assert_allclose([float(res.stderr["a"]), float(res.stderr["b"])], se, rtol=1e-6)
    # fit_batch's automatic choice is the same, lane by lane.
    batch = jm.fit_batch(model, {"x": np.stack([x, x]), "y": ys})
    assert batch.method == "lm" and list(np.asarray(batch.status)) == [jm.Status.CONVERGED] * 2
    popt1, _ = curve_fit(curve, x, ys[1], p0=[1.0, 1.0], jac=jac, xtol=1e-15, ftol=1e-15, gtol=1e-15)
    np.testing.assert_allclose([float(batch.params["a"][1]), float(batch.params["b"][1])], popt1, rtol=1e-8)
