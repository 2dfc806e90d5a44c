"""What a call costs before and besides its iterations (issue 15): per-dataset init=
checked in one array operation, data-driven start values from ``Model(start=...)``
and the ready models, and straggler buckets compiled only when they pay."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import jaxmle as jm
from jaxmle._batch import BatchFitter


def _normal_model(**kw):
    return jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]),
                    {"mu": 0.0, "sigma": jm.Positive(1.0)}, name="normal", **kw)


def _moments(d, mask):
    n = jnp.sum(mask)
    mu = jnp.sum(jnp.where(mask, d, 0.0)) / n
    return {"mu": mu, "sigma": jnp.sqrt(jnp.sum(jnp.where(mask, (d - mu) ** 2, 0.0)) / n)}


def test_per_dataset_init_is_checked_in_one_operation_and_names_the_bad_dataset(monkeypatch):
    B = 200_000
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, 3)))
    sigma = np.ones(B)
    sigma[123_457] = -1.0
    spec = _normal_model().spec
    with pytest.raises(ValueError, match=r"'sigma' for dataset 123457 \(-1.0\) must be finite and > 0"):
        spec.natural_leaves({"sigma": sigma}, batch=B)
    # The check of 200,000 values is array work, not a Python call per dataset (that
    # loop took ~2 s at 100,000): the per-value description is never asked for.
    sigma[123_457] = 1.0
    calls = []
    monkeypatch.setattr(jm.Positive, "violation", lambda self, x: calls.append(1))
    leaves = spec.natural_leaves({"sigma": sigma, "mu": np.zeros(B)}, batch=B)
    assert not calls and leaves[1].shape == (B,)
    w = np.tile([0.2, 0.3, 0.5], (5, 1))
    w[3, 0] += 0.1
    with pytest.raises(ValueError, match=r"dataset 3 .* must sum to 1 \(sums to 1.1; jm.Simplex"):
        jm.Model(lambda p, x: jnp.log(p["w"][x]), {"w": jm.Simplex(jnp.ones(3) / 3)}).spec.natural_leaves(
            {"w": w}, batch=5)


def _closed_form(rows):
    return np.array([r.mean() for r in rows]), np.array([r.std() for r in rows])


def test_data_start_ignores_padding_and_falls_back_where_it_is_invalid():
    rng = np.random.default_rng(2)
    rows = [rng.normal(50.0, 3.0, n) for n in (5, 30, 12, 4)]
    padded, mask = jm.pad(rows)

    def start(d, m):
        # Dataset 3 (4 observations) gets a start its constraint forbids: it must
        # start from the spec's values instead, and still reach its MLE.
        out = _moments(d, m)
        return {"mu": out["mu"], "sigma": jnp.where(jnp.sum(m) > 4, out["sigma"], -1.0)}

    batch = jm.fit_batch(_normal_model(start=start), padded, mask=mask)
    mu, sd = _closed_form(rows)
    assert np.all(np.asarray(batch.status) == jm.Status.CONVERGED)
    np.testing.assert_allclose(batch.params["mu"], mu, rtol=1e-10)
    np.testing.assert_allclose(batch.params["sigma"], sd, rtol=1e-8)
    # The moments are the normal's MLE despite the NaN padding: nothing left to do but
    # confirm it; the dataset that fell back to the spec's start needs real steps.
    it = np.asarray(batch.n_iter)
    assert np.all(it[:3] <= 1) and it[3] > 3


def test_data_start_for_one_fit_and_init_overrides_it():
    x = jnp.asarray(np.random.default_rng(1).normal(50.0, 3.0, 40))
    started = jm.fit(_normal_model(start=_moments), x)
    overridden = jm.fit(_normal_model(start=_moments), x, init={"mu": 0.0})
    assert int(started.n_iter) <= 1 < int(overridden.n_iter)
    np.testing.assert_allclose(started.params["mu"], overridden.params["mu"], rtol=1e-10)


def test_start_function_errors_are_clear():
    x = jnp.arange(5.0)
    with pytest.raises(ValueError, match="unknown parameter 'scale'"):
        jm.fit(_normal_model(start=lambda d, m: {"scale": 1.0}), x)
    with pytest.raises(ValueError, match=r"'mu' shape \(2,\); the spec's is \(\)"):
        jm.fit(_normal_model(start=lambda d, m: {"mu": jnp.zeros(2)}), x)
    with pytest.raises(TypeError, match="must return a dict"):
        jm.fit(_normal_model(start=lambda d, m: 1.0), x)
    with pytest.raises(TypeError, match="start must be a function"):
        _normal_model(start=3.0)


def _glm_data(rng, B, n, k, kind):
    X = rng.normal(size=(B, n, k))
    X[..., 0] = 1.0
    beta = rng.normal(0.0, 0.4, size=(B, k))
    eta = np.einsum("bnk,bk->bn", X, beta)
    if kind == "logistic":
        y = (rng.uniform(size=(B, n)) < 1 / (1 + np.exp(-eta))).astype(float)
        return {"X": jnp.asarray(X), "y": jnp.asarray(y)}
    offset = rng.uniform(0.0, 1.0, size=(B, n))
    y = rng.poisson(np.exp(eta + offset)).astype(float)
    return {"X": jnp.asarray(X), "y": jnp.asarray(y), "offset": jnp.asarray(offset)}


def test_glm_start_same_estimates_fewer_iterations():
    k = 3
    data = _glm_data(np.random.default_rng(3), 300, 80, k, "logistic")
    model = jm.models.logistic(k)
    bare = jm.Model(model.loglik, {"beta": jnp.zeros(k)}, validate=model.validate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = jm.fit_batch(model, data), jm.fit_batch(bare, data)
    ok = (np.asarray(a.status) == jm.Status.CONVERGED) & (np.asarray(b.status) == jm.Status.CONVERGED)
    assert ok.mean() > 0.95
    np.testing.assert_allclose(np.asarray(a.params["beta"])[ok], np.asarray(b.params["beta"])[ok], atol=1e-7)
    assert np.mean(a.n_iter) < np.mean(b.n_iter)


def test_poisson_start_is_one_irls_step_with_the_offset():
    d = jax.tree_util.tree_map(lambda a: a[0], _glm_data(np.random.default_rng(6), 1, 200, 3, "poisson"))
    (beta0,) = jm.models.poisson(3).start_leaves(d, None, False)
    # R's start: mu = y + 0.1, working response log(mu) - offset + (y - mu) / mu, weights mu.
    y, X, off = (np.asarray(d[key]) for key in ("y", "X", "offset"))
    mu = y + 0.1
    z, w = np.log(mu) - off + (y - mu) / mu, mu
    expected = np.linalg.solve(X.T @ (w[:, None] * X), X.T @ (w * z))
    np.testing.assert_allclose(beta0[0], expected, rtol=1e-10)
    res = jm.fit(jm.models.poisson(3), d)
    assert np.linalg.norm(beta0[0] - res.params["beta"]) < 0.5 * np.linalg.norm(res.params["beta"])


def test_linear_start_is_ols():
    rng = np.random.default_rng(4)
    X = np.column_stack([np.ones(50), rng.normal(size=(50, 2))])
    y = X @ [1.0, 2.0, -1.0] + rng.normal(size=50)
    res = jm.fit(jm.models.linear(3), {"X": jnp.asarray(X), "y": jnp.asarray(y)})
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    np.testing.assert_allclose(res.params["beta"], beta, rtol=1e-10)
    assert int(res.n_iter) <= 1


def _stragglers(B=512, n=40, seed=5):
    """Logistic datasets (k = 2) of which 1 in 20 is nearly separable: many more steps."""
    rng = np.random.default_rng(seed)
    X = np.stack([np.ones((B, n)), rng.normal(size=(B, n))], axis=-1)
    beta = rng.normal(0.0, 0.5, (B, 2))
    beta[:: 20] *= 10.0
    y = (rng.uniform(size=(B, n)) < 1 / (1 + np.exp(-np.einsum("bnk,bk->bn", X, beta)))).astype(float)
    return {"X": jnp.asarray(X), "y": jnp.asarray(y)}


def test_auto_compaction_compiles_a_bucket_only_once_stragglers_have_cost_as_much():
    # A model no other test builds: its loop program must be compiled here (and its
    # compile time measured), not loaded from a program another test saved.
    loglik = jm.models.logistic(2).loglik
    model = jm.Model(lambda p, d, _own="auto-compaction test": loglik(p, d), {"beta": jnp.zeros(2)})
    data = _stragglers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = jm.fit_batch(model, data, compact="auto")
        it = np.asarray(auto.n_iter)
        assert it.max() >= 2 * np.median(it)
        fitter = next(f for f in model._compiled.values() if isinstance(f, BatchFitter) and f.compact == "auto")
        assert fitter.compile_s > 0
        # Compiling is (made) dear: the stragglers finish in the full batch (as with
        # compact=False), nothing new compiles.
        fitter.compile_s, fitter.waste = 1e9, 0.0
        # Only the full batch's program counts as compiled (on a loaded machine the first
        # call's stragglers may already have paid for a smaller bucket: the quick first
        # compile is cheap), so the allowance, not an old bucket, decides.
        shapes = {max(fitter._shapes, key=lambda sh: sh[0][0])}
        fitter._shapes = set(shapes)
        plain = jm.fit_batch(model, data, compact="auto")
        assert fitter._shapes == shapes and fitter.waste > 0
        # Compiling is (made) free: the stragglers move to a smaller bucket at once.
        fitter.compile_s = 0.0
        cheap = jm.fit_batch(model, data, compact="auto")
        assert len(fitter._shapes) > len(shapes)
    # Every dataset runs the same steps; a value computed inside a smaller bucket's
    # program may differ by an ulp (XLA vectorises the reduction differently).
    for res in (auto, cheap):
        for field in ("status", "n_iter", "evals"):
            np.testing.assert_array_equal(np.asarray(getattr(res, field)), np.asarray(getattr(plain, field)))
        np.testing.assert_allclose(res.params["beta"], plain.params["beta"], rtol=1e-13)
        np.testing.assert_allclose(res.loglik, plain.loglik, rtol=1e-14)
    with pytest.raises(ValueError, match="compact must be True, False or 'auto'"):
        jm.fit_batch(model, data, compact="sometimes")
