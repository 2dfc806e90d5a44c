"""Naive Bayes (Gaussian, Bernoulli, multinomial): closed form vs scikit-learn and vs a Newton fit.

``model.fit`` is NumPy on the host (no XLA program); one generic ``jm.fit`` per kind
(small shapes) checks the closed form's log-likelihood, estimates, covariance and
condition number against the optimizer's observed information.
"""

import pickle
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm

nb = pytest.importorskip("sklearn.naive_bayes")

C, F, N = 3, 4, 240


def labels(seed, n=N, c=C):
    y = np.random.default_rng(seed).integers(0, c, n)
    y[:c] = np.arange(c)   # every class present
    return y


def gaussian_data(seed=0, n=N):
    rng = np.random.default_rng(seed)
    y = labels(seed, n)
    X = rng.normal(0.8 * y[:, None], 1.0 + 0.3 * y[:, None], (n, F))
    return {"X": X, "y": y}


def bernoulli_data(seed=1, n=N):
    rng = np.random.default_rng(seed)
    y = labels(seed, n)
    X = (rng.random((n, F)) < 0.2 + 0.2 * y[:, None]).astype(float)
    return {"X": X, "y": y}


def multinomial_data(seed=2, n=N):
    rng = np.random.default_rng(seed)
    y = labels(seed, n)
    X = rng.poisson(1.0 + y[:, None] * np.arange(1, F + 1), (n, F)).astype(float)
    return {"X": X, "y": y}


def test_gaussian_closed_form_equals_sklearn():
    d = gaussian_data()
    model = jm.models.gaussian_nb(F, C)
    res = model.fit(d)
    sk = nb.GaussianNB(var_smoothing=0.0).fit(d["X"], d["y"])
    np.testing.assert_allclose(res.params["priors"], sk.class_prior_, rtol=0, atol=1e-14)
    np.testing.assert_allclose(res.params["means"], sk.theta_, rtol=0, atol=1e-13)
    np.testing.assert_allclose(res.params["scales"] ** 2, sk.var_, rtol=1e-13)
    np.testing.assert_allclose(model.predict_proba(res.params, {"X": d["X"]}), sk.predict_proba(d["X"]),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.predict_log_proba(res.params, d), sk.predict_log_proba(d["X"]),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(model.predict(res.params, d), sk.predict(d["X"]))
    # The tutorial's row by hand: frequencies, class means, 1/n_c variances, and the loglik.
    X, y = d["X"], d["y"]
    n_c = np.bincount(y, minlength=C)
    for c in range(C):
        np.testing.assert_allclose(res.params["means"][c], X[y == c].mean(0), atol=1e-13)
        np.testing.assert_allclose(res.params["scales"][c], X[y == c].std(0), rtol=1e-13)
    s = res.params["scales"]
    ll = np.sum(n_c * np.log(n_c / N)) + np.sum(-0.5 * n_c[:, None] * (np.log(2 * np.pi * s ** 2) + 1))
    np.testing.assert_allclose(float(res.loglik), ll, rtol=1e-13)
    # Standard errors: scale / sqrt(n_c), scale / sqrt(2 n_c), multinomial for the priors.
    np.testing.assert_allclose(res.stderr["means"], s / np.sqrt(n_c)[:, None], rtol=1e-13)
    np.testing.assert_allclose(res.stderr["scales"], s / np.sqrt(2 * n_c)[:, None], rtol=1e-13)
    p = n_c / N
    np.testing.assert_allclose(res.stderr["priors"], np.sqrt(p * (1 - p) / N), rtol=1e-13)
    assert res.status == jm.Status.CONVERGED and res.converged and int(res.n_iter) == 0
    assert res.k == (C - 1) + 2 * C * F


def test_gaussian_var_smoothing_matches_sklearn_default():
    d = gaussian_data(3)
    model = jm.models.gaussian_nb(F, C, var_smoothing=1e-9)
    res = model.fit(d)
    sk = nb.GaussianNB().fit(d["X"], d["y"])   # var_smoothing=1e-9
    np.testing.assert_allclose(res.params["scales"] ** 2, sk.var_, rtol=1e-13)
    np.testing.assert_allclose(model.predict_proba(res.params, d), sk.predict_proba(d["X"]), atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_bernoulli_equals_sklearn(alpha):
    d = bernoulli_data()
    model = jm.models.bernoulli_nb(F, C, alpha=alpha)
    res = model.fit(d)
    # scikit-learn forbids alpha=0: compare the MLE with alpha=1e-10 (forced).
    sk = nb.BernoulliNB(alpha=alpha or 1e-10, force_alpha=True).fit(d["X"], d["y"])
    tol = 1e-12 if alpha == 0 else 1e-14
    np.testing.assert_allclose(res.params["probs"], np.exp(sk.feature_log_prob_), rtol=0, atol=tol)
    np.testing.assert_allclose(res.params["priors"], np.exp(sk.class_log_prior_), atol=1e-14)
    np.testing.assert_allclose(model.predict_proba(res.params, d), sk.predict_proba(d["X"]), atol=tol)
    np.testing.assert_array_equal(model.predict(res.params, d), sk.predict(d["X"]))
    if alpha == 0:
        X, y = d["X"], d["y"]
        n_c = np.bincount(y, minlength=C)
        p = np.stack([X[y == c].mean(0) for c in range(C)])
        np.testing.assert_allclose(res.params["probs"], p, atol=1e-15)
        np.testing.assert_allclose(res.stderr["probs"], np.sqrt(p * (1 - p) / n_c[:, None]), rtol=1e-13)
        ll = np.sum(n_c * np.log(n_c / N)) + np.sum(X * np.log(p[y]) + (1 - X) * np.log1p(-p[y]))
        np.testing.assert_allclose(float(res.loglik), ll, rtol=1e-13)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_multinomial_equals_sklearn(alpha):
    from scipy.special import gammaln

    d = multinomial_data()
    model = jm.models.multinomial_nb(F, C, alpha=alpha)
    res = model.fit(d)
    sk = nb.MultinomialNB(alpha=alpha or 1e-10, force_alpha=True).fit(d["X"], d["y"])
    probs = np.stack(res.params["probs"])
    tol = 1e-12 if alpha == 0 else 1e-14
    np.testing.assert_allclose(probs, np.exp(sk.feature_log_prob_), rtol=0, atol=tol)
    np.testing.assert_allclose(model.predict_proba(res.params, d), sk.predict_proba(d["X"]), atol=tol)
    np.testing.assert_array_equal(model.predict(res.params, d), sk.predict(d["X"]))
    if alpha == 0:
        X, y = d["X"], d["y"]
        counts = np.stack([X[y == c].sum(0) for c in range(C)])
        N_c = counts.sum(1)
        p = counts / N_c[:, None]
        np.testing.assert_allclose(probs, p, atol=1e-15)
        np.testing.assert_allclose(np.stack(res.stderr["probs"]), np.sqrt(p * (1 - p) / N_c[:, None]),
                                   rtol=1e-13)
        n_c = np.bincount(y, minlength=C)
        coef = gammaln(X.sum(1) + 1) - gammaln(X + 1).sum(1)
        ll = np.sum(n_c * np.log(n_c / N)) + np.sum(coef) + np.sum(X * np.log(p[y]))
        np.testing.assert_allclose(float(res.loglik), ll, rtol=1e-13)
        assert res.param_names[C:C + 2] == ["probs.0[0]", "probs.0[1]"]


@pytest.mark.parametrize("kind", ["gaussian", "bernoulli", "multinomial"])
def test_closed_form_equals_newton_fit(kind):
    """jm.fit (Newton from the model's start, the closed form) agrees with model.fit:
    the analytic covariance is the inverse observed information."""
    make = {"gaussian": gaussian_data, "bernoulli": bernoulli_data, "multinomial": multinomial_data}[kind]
    d = make(n=40)
    d = {"X": d["X"][:, :2], "y": np.minimum(d["y"], 1)}
    model = getattr(jm.models, f"{kind}_nb")(2, 2)
    cf = model.fit(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = jm.fit(model, d)
    assert res.status == jm.Status.CONVERGED
    np.testing.assert_allclose(float(res.loglik), float(cf.loglik), rtol=1e-12)
    np.testing.assert_allclose(res.estimate_flat, cf.estimate_flat, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.cov, cf.cov, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(float(res.cond), float(cf.cond), rtol=1e-8)


def test_fit_is_fast_and_reports():
    d = gaussian_data()
    model = jm.models.gaussian_nb(F, C)
    model.fit(d)
    t = time.perf_counter()
    res = model.fit(d)
    assert time.perf_counter() - t < 0.25   # milliseconds in practice; no XLA compile
    text = res.summary()
    assert "closed_form" in text and "means[2,3]" in text and "CONVERGED" in text
    ci = res.conf_int()
    assert ci["means"].shape == (C, F, 2) and ci["priors"].shape == (C, 2)
    assert np.all(ci["scales"][..., 0] < res.params["scales"])
    out = res.to_dict()
    assert out["method"] == "closed_form" and out["status"] == "CONVERGED"
    again = pickle.loads(pickle.dumps(res))
    np.testing.assert_allclose(again.stderr["means"], res.stderr["means"])
    for kind, make in [("bernoulli", bernoulli_data), ("multinomial", multinomial_data)]:
        r = getattr(jm.models, f"{kind}_nb")(F, C).fit(make())
        assert "probs" in r.summary() and np.all(np.isfinite(r.stderr_flat))


def test_mask_equals_subset():
    d = gaussian_data()
    keep = np.arange(N) % 3 != 0
    model = jm.models.gaussian_nb(F, C)
    a = model.fit(d, mask=keep)
    b = model.fit({"X": d["X"][keep], "y": d["y"][keep]})
    np.testing.assert_allclose(a.estimate_flat, b.estimate_flat, rtol=1e-14)
    np.testing.assert_allclose(float(a.loglik), float(b.loglik), rtol=1e-14)
    assert float(a.n_obs) == keep.sum()


def test_predict_inside_jit():
    d = gaussian_data()
    model = jm.models.gaussian_nb(F, C)
    res = model.fit(d)
    params = jax.tree_util.tree_map(jnp.asarray, dict(res.params))
    got = jax.jit(lambda p, X: model.predict_proba(p, {"X": X}))(params, jnp.asarray(d["X"][:10]))
    np.testing.assert_allclose(got, model.predict_proba(res.params, {"X": d["X"][:10]}), atol=1e-12)


def test_degenerate_cases():
    d = gaussian_data()
    model = jm.models.gaussian_nb(F, C + 1)
    with pytest.raises(ValueError, match="no observations"):
        model.fit(d)
    X = d["X"].copy()
    X[d["y"] == 1, 2] = 5.0
    with pytest.raises(ValueError, match="zero variance.*var_smoothing"):
        jm.models.gaussian_nb(F, C).fit({"X": X, "y": d["y"]})
    ok = jm.models.gaussian_nb(F, C, var_smoothing=1e-9).fit({"X": X, "y": d["y"]})
    assert np.all(np.isfinite(ok.stderr_flat))
    with pytest.raises(ValueError, match="labels outside"):
        jm.models.gaussian_nb(F, 2).fit(d)
    with pytest.raises(ValueError, match="0/1"):
        jm.models.bernoulli_nb(F, C).fit(gaussian_data())
    with pytest.raises(ValueError, match="non-negative"):
        jm.models.multinomial_nb(F, C).fit({"X": -np.ones((N, F)), "y": d["y"]})
    with pytest.raises(ValueError, match="shape"):
        jm.models.gaussian_nb(F + 1, C).fit(d)
    # A Bernoulli probability of exactly 0 (feature never present in a class): AT_BOUNDARY.
    b = bernoulli_data()
    Xb = b["X"].copy()
    Xb[b["y"] == 0, 1] = 0.0
    model = jm.models.bernoulli_nb(F, C)
    with pytest.warns(jm.ConvergenceWarning, match="AT_BOUNDARY"):
        res = model.fit({"X": Xb, "y": b["y"]})
    assert res.status == jm.Status.AT_BOUNDARY and res.boundary_params == ["probs[0,1]"]
    assert np.isnan(res.stderr["probs"][0, 1]) and np.isfinite(res.stderr["probs"][1, 1])
    assert np.isfinite(float(res.loglik))


def test_jm_fit_takes_the_closed_form_without_compiling():
    import jax
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 2)) + np.repeat(np.eye(2) * 3, 30, axis=0)
    y = np.repeat([0, 1], 30)
    model = jm.models.gaussian_nb(2, 2)
    events = []
    listener = lambda name, *a, **k: events.append(name) if "compile" in name else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        res = jm.fit(model, {"X": X, "y": y})
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert res.method == "closed_form" and res.status == jm.Status.CONVERGED
    assert not [e for e in events if "backend_compile" in e]
    np.testing.assert_allclose(np.asarray(res.params["means"]), [X[:30].mean(0), X[30:].mean(0)], rtol=1e-12)
