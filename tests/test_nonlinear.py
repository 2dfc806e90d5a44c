"""Nonlinear regression and Levenberg-Marquardt: NIST StRD certified values, scipy, batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares

import jaxmle as jm
from jaxmle.optimizers.lm import LevenbergMarquardt, _lm_parameter, _rank_tol

if "lm" not in jm.optimizers.METHODS:
    jm.optimizers.register("lm", LevenbergMarquardt)

# NIST StRD Misra1a (https://www.itl.nist.gov/div898/strd/nls/data/misra1a.shtml):
# y = b1 * (1 - exp(-b2 * x)), 14 observations, lower difficulty.
MISRA_Y = np.array([10.07, 14.73, 17.94, 23.93, 29.61, 35.18, 40.02, 44.82, 50.76, 55.05, 61.01,
                    66.40, 75.47, 81.78])
MISRA_X = np.array([77.6, 114.9, 141.1, 190.8, 239.9, 289.0, 332.8, 378.4, 434.8, 477.3, 536.8,
                    593.1, 689.1, 760.0])
MISRA_STARTS = [(500.0, 1e-4), (250.0, 5e-4)]
MISRA_CERT = np.array([2.3894212918E+02, 5.5015643181E-04])
MISRA_SD = np.array([2.7070075241E+00, 7.2668688436E-06])
MISRA_RSS = 1.2455138894E-01

# NIST StRD MGH09 (Kowalik-Osborne), higher difficulty: y = b1 (x^2 + x b2) / (x^2 + x b3 + b4).
MGH09_Y = np.array([1.957000E-01, 1.947000E-01, 1.735000E-01, 1.600000E-01, 8.440000E-02,
                    6.270000E-02, 4.560000E-02, 3.420000E-02, 3.230000E-02, 2.350000E-02,
                    2.460000E-02])
MGH09_X = np.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])
MGH09_START1 = np.array([25.0, 39.0, 41.5, 39.0])
MGH09_CERT = np.array([1.9280693458E-01, 1.9128232873E-01, 1.2305650693E-01, 1.3606233068E-01])
MGH09_RSS = 3.0750560385E-04


def exponential(p, x):
    return p["b1"] * (1 - jnp.exp(-p["b2"] * x))


def lre(estimate, certified):
    """Log relative error: the number of correct significant digits."""
    return -np.log10(np.abs(np.asarray(estimate) - certified) / np.abs(certified))


# One model object for the Misra1a-shaped fits: fits of the same shape share a compiled program.
EXP = jm.models.nonlinear_regression(exponential, {"b1": 500.0, "b2": 1e-4})


def test_misra1a_certified_values_from_both_starts():
    model = EXP
    data = {"x": MISRA_X, "y": MISRA_Y}
    n, p = len(MISRA_Y), 2
    for b1, b2 in MISRA_STARTS:
        res = jm.fit(model, data, method="lm", init={"b1": b1, "b2": b2}, warn=False)
        est = np.array([res.params["b1"], res.params["b2"]])
        assert np.all(lre(est, MISRA_CERT) >= 6), (b1, b2, est)
        assert res.method == "lm" and res.n_iter <= 30
        # sigma is its MLE sqrt(RSS / n): the profile the LM iterates on.
        np.testing.assert_allclose(float(res.params["sigma"]) ** 2 * n, MISRA_RSS, rtol=1e-8)
        # NIST's standard deviations are sqrt(diag(s^2 (J'J)^-1)) with s^2 = RSS / (n - p).
        resid = lambda b: model.residuals({"b1": b[0], "b2": b[1], "sigma": 1.0}, data)  # noqa: E731
        J = np.asarray(jax.jacfwd(resid)(jnp.asarray(est)))
        gn_sd = np.sqrt(np.diag(MISRA_RSS / (n - p) * np.linalg.inv(J.T @ J)))
        np.testing.assert_allclose(gn_sd, MISRA_SD, rtol=1e-6)
        # res.stderr inverts the observed information (the exact Hessian, with the
        # residual-curvature term J'J leaves out) and uses the MLE RSS / n: rescaled,
        # it agrees with NIST to the size of that term (1.4e-3 here).
        se = np.array([res.stderr["b1"], res.stderr["b2"]]) * np.sqrt(n / (n - p))
        np.testing.assert_allclose(se, MISRA_SD, rtol=3e-3)
        assert res.status == jm.Status.CONVERGED, jm.Status(int(res.status)).name


def test_mgh09_from_start_1():
    """MGH09 Start 1 is far off (More, Garbow & Hillstrom): Gauss-Newton alone fails."""
    f = lambda p, x: p["b"][0] * (x**2 + x * p["b"][1]) / (x**2 + x * p["b"][2] + p["b"][3])  # noqa: E731
    model = jm.models.nonlinear_regression(f, {"b": jnp.asarray(MGH09_START1)})
    res = jm.fit(model, {"x": MGH09_X, "y": MGH09_Y}, method="lm", warn=False)
    assert np.all(lre(res.params["b"], MGH09_CERT) >= 6), res.params["b"]
    np.testing.assert_allclose(float(res.params["sigma"]) ** 2 * len(MGH09_Y), MGH09_RSS, rtol=1e-8)
    assert res.status == jm.Status.CONVERGED, jm.Status(int(res.status)).name


def _decay(p, x):
    return p["amp"] * jnp.exp(-p["rate"] * x[:, 0]) + p["base"] + p["slope"] * x[:, 1]


def _decay_np(b, x):
    return b[0] * np.exp(-b[1] * x[:, 0]) + b[2] + b[3] * x[:, 1]


def _decay_jac_np(b, x):
    e = np.exp(-b[1] * x[:, 0])
    return np.column_stack([e, -b[0] * x[:, 0] * e, np.ones(len(x)), x[:, 1]])


def _scipy_exponential(x, y, start):
    """scipy's MINPACK LM with the exact Jacobian (finite differences cost it ~1e-8)."""
    jac = lambda b: -np.column_stack([1 - np.exp(-b[1] * x), b[0] * x * np.exp(-b[1] * x)])  # noqa: E731
    return least_squares(lambda b: y - b[0] * (1 - np.exp(-b[1] * x)), start, jac=jac,
                         method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)


def test_matches_scipy_least_squares_with_weights_and_constraints():
    rng = np.random.default_rng(3)
    n = 200
    x = np.column_stack([rng.uniform(0, 5, n), rng.normal(size=n)])
    w = rng.uniform(0.5, 2.0, n)
    truth = np.array([3.0, 0.8, 1.0, -0.5])
    y = _decay_np(truth, x) + rng.normal(size=n) * 0.3 / np.sqrt(w)
    spec = {"amp": 1.0, "rate": jm.Positive(2.0), "base": 0.0, "slope": 0.0}
    model = jm.models.nonlinear_regression(_decay, spec)
    res = jm.fit(model, {"x": x, "y": y, "weights": w}, method="lm")
    ref = least_squares(lambda b: np.sqrt(w) * (y - _decay_np(b, x)), [1.0, 2.0, 0.0, 0.0],
                        jac=lambda b: -np.sqrt(w)[:, None] * _decay_jac_np(b, x),
                        method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    est = np.array([res.params[k] for k in ("amp", "rate", "base", "slope")])
    np.testing.assert_allclose(est, ref.x, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(float(res.params["sigma"]), np.sqrt(2 * ref.cost / n), rtol=1e-8)
    # The maximised log-likelihood is the Gaussian one at the MLE sigma.
    sig = np.sqrt(2 * ref.cost / n)
    ll = np.sum(-0.5 * np.log(2 * np.pi) - np.log(sig) + 0.5 * np.log(w)) - n / 2
    np.testing.assert_allclose(float(res.loglik), ll, rtol=1e-10)
    assert res.converged


def test_fit_batch_with_padding_equals_single_fits():
    rng = np.random.default_rng(7)
    sizes = [14, 9, 14, 6]
    xs, ys = [], []
    for i, n in enumerate(sizes):
        x = np.sort(rng.uniform(50, 800, n))
        xs.append(x)
        ys.append(240 * (1 - np.exp(-5.5e-4 * (1 + 0.2 * i) * x)) + rng.normal(size=n))
    X, mask = jm.pad(xs)
    Y, _ = jm.pad(ys)
    start = {"b1": 250.0, "b2": 5e-4}
    batch = jm.fit_batch(EXP, {"x": X, "y": Y}, mask=mask, method="lm", init=start)
    assert np.all(np.asarray(batch.status) == jm.Status.CONVERGED), batch.status
    np.testing.assert_array_equal(np.asarray(batch.n_obs), sizes)
    for i, (x, y) in enumerate(zip(xs, ys)):
        one = batch[i]
        # Padded observations are ignored: the fit equals scipy's on the real ones.
        ref = _scipy_exponential(x, y, [250.0, 5e-4])
        est = np.array([one.params["b1"], one.params["b2"]])
        np.testing.assert_allclose(est, ref.x, rtol=1e-8)
        np.testing.assert_allclose(float(one.params["sigma"]), np.sqrt(2 * ref.cost / len(y)), rtol=1e-8)
        if sizes[i] == len(MISRA_Y):
            single = jm.fit(EXP, {"x": x, "y": y}, method="lm", init=start)
            for k in ("b1", "b2", "sigma"):
                np.testing.assert_allclose(single.params[k], one.params[k], rtol=1e-10)
                np.testing.assert_allclose(single.stderr[k], one.stderr[k], rtol=1e-8)
            np.testing.assert_allclose(single.loglik, one.loglik, rtol=1e-12)
            # The single and the vmapped program round differently; at the stopping
            # rule's threshold that can cost one more step.
            assert abs(int(single.n_iter) - int(one.n_iter)) <= 1


def test_known_sigma_is_fixed():
    model = jm.models.nonlinear_regression(exponential, {"b1": 250.0, "b2": 5e-4}, sigma=0.1)
    assert model.param_names == ["b1", "b2"]
    res = jm.fit(model, {"x": MISRA_X, "y": MISRA_Y}, method="lm", warn=False)
    assert np.all(lre([res.params["b1"], res.params["b2"]], MISRA_CERT) >= 6)
    assert float(res.params["sigma"]) == 0.1


def test_lm_parameter_solves_the_damped_system():
    """The SVD-based lmpar: ||D p|| within 10% of the radius, p solving (J'J + lam D^2) p = -J'r."""
    rng = np.random.default_rng(0)
    J = rng.normal(size=(30, 4)) * np.array([1e3, 1.0, 1e-3, 10.0])
    J[:, 3] = 0.0                                   # rank deficient: a parameter r ignores
    r = rng.normal(size=30)
    D = np.where(np.linalg.norm(J, axis=0) > 0, np.linalg.norm(J, axis=0), 1.0)
    U, s, Vt = np.linalg.svd(J / D, full_matrices=False)
    c = U.T @ r
    gn = np.linalg.norm(np.where(s > 1e-12, c / np.where(s > 1e-12, s, 1), 0))
    solve = jax.jit(_lm_parameter)
    for radius in (2 * gn, 0.5 * gn, 1e-3 * gn):
        lam, a = solve(jnp.asarray(s), jnp.asarray(c), radius, 0.0, _rank_tol(jnp.asarray(s), J.shape))
        q = -Vt.T @ np.asarray(a)
        p, lam = q / D, float(lam)
        if radius > gn:
            assert lam == 0.0                       # the Gauss-Newton step fits: no damping
            np.testing.assert_allclose(p, np.linalg.lstsq(J, -r, rcond=None)[0], rtol=1e-10, atol=1e-14)
        else:
            assert lam > 0 and abs(np.linalg.norm(q) / radius - 1) <= 0.1
            A = J.T @ J + lam * np.diag(D**2)
            np.testing.assert_allclose(A @ p, -J.T @ r, rtol=1e-9, atol=1e-9 * np.abs(J.T @ r).max())


def test_bad_inputs():
    model = jm.models.nonlinear_regression(exponential, {"b1": 250.0, "b2": 5e-4})
    with pytest.raises(ValueError, match=r"missing \['y'\]"):
        jm.fit(model, {"x": MISRA_X}, method="lm")
    with pytest.raises(ValueError, match="x has shape"):
        jm.fit(model, {"x": MISRA_X[:-1], "y": MISRA_Y}, method="lm")
    with pytest.raises(ValueError, match="y has shape"):
        jm.fit(model, {"x": MISRA_X, "y": MISRA_Y[:, None]}, method="lm")
    with pytest.raises(ValueError, match="weights must be finite and > 0"):
        jm.fit(model, {"x": MISRA_X, "y": MISRA_Y, "weights": np.zeros(14)}, method="lm")
    with pytest.raises(ValueError, match="unexpected data keys"):
        jm.fit(model, {"x": MISRA_X, "y": MISRA_Y, "w": MISRA_Y}, method="lm")
    with pytest.raises(ValueError, match="x has shape"):
        jm.fit_batch(model, {"x": np.ones((3, 13)), "y": np.ones((3, 14))}, method="lm")
    with pytest.raises(ValueError, match="mean function returned shape"):
        bad = jm.models.nonlinear_regression(lambda p, x: p["a"] * x[:, None], {"a": 1.0})
        jm.fit(bad, {"x": MISRA_X, "y": MISRA_Y}, method="lm")
    with pytest.raises(ValueError, match="reserved"):
        jm.models.nonlinear_regression(exponential, {"b1": 1.0, "sigma": 1.0})
    with pytest.raises(ValueError, match="known sigma must be finite and > 0"):
        jm.models.nonlinear_regression(exponential, {"b1": 1.0}, sigma=-1.0)
    with pytest.raises(ValueError, match="sigma must be 'estimate'"):
        jm.models.nonlinear_regression(exponential, {"b1": 1.0}, sigma="mle")
    # method="lm" needs residuals: a plain model is refused with a pointer.
    plain = jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], 1.0), {"mu": 0.0})
    with pytest.raises(ValueError, match="residual function"):
        jm.fit(plain, MISRA_Y, method="lm")
