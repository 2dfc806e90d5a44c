"""Batched fits: equal to single fits and closed forms, ragged data, bad lanes, no retrace."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import jaxmle as jm
from jaxmle._batch import BatchFitter
from helpers import counting_logistic_model, logistic_data, logistic_model, normal_model


def poisson_model():
    return jm.Model(lambda p, x: stats.poisson.logpmf(x, p["lam"]), {"lam": jm.Positive(1.0)})


def test_issue_example_normal_10k():
    xs = jax.random.normal(jax.random.key(0), (10_000, 100)) * 3 + 1
    batch = jm.fit_batch(normal_model(), xs)
    assert batch.params["mu"].shape == (10_000,)
    assert (batch.status == jm.Status.CONVERGED).all()
    # mu is near 0 while its scale is sigma = 3: compare on that scale.
    np.testing.assert_allclose(batch.params["mu"], xs.mean(axis=1), rtol=0, atol=3e-8)
    np.testing.assert_allclose(batch.params["sigma"], xs.std(axis=1), rtol=1e-8)
    np.testing.assert_allclose(batch.stderr["mu"], xs.std(axis=1) / 10, rtol=1e-6)


@pytest.mark.parametrize("method", ["newton", "bfgs", "lbfgs"])
def test_batch_equals_single_fits_and_closed_form(method):
    counts = jax.random.poisson(jax.random.key(3), 3.0, (1000, 20)).astype(jnp.float64)
    counts = counts.at[:, 0].add(1.0)  # no all-zero dataset (its MLE is on the boundary)
    model = poisson_model()
    batch = jm.fit_batch(model, counts, method=method)
    assert (batch.status == jm.Status.CONVERGED).all()
    np.testing.assert_allclose(batch.params["lam"], counts.mean(axis=1), rtol=1e-8)
    np.testing.assert_allclose(batch.stderr["lam"], np.sqrt(counts.mean(axis=1) / 20), rtol=1e-6)
    for i in [0, 17, 999]:
        single = jm.fit(model, counts[i], method=method)
        one = batch[i]
        assert int(one.n_iter) == int(single.n_iter)
        np.testing.assert_allclose(one.params["lam"], single.params["lam"], rtol=1e-12)
        np.testing.assert_allclose(one.cov, single.cov, rtol=1e-10)
        np.testing.assert_allclose(one.loglik, single.loglik, rtol=1e-12)


def test_batched_logistic_matches_single():
    data = logistic_data(jax.random.key(4), 200, 3, batch=50)
    model = logistic_model(3)
    batch = jm.fit_batch(model, data)
    assert batch.converged.all()
    for i in [0, 49]:
        one = jm.fit(model, jax.tree_util.tree_map(lambda a: a[i], data))
        np.testing.assert_allclose(batch[i].params["beta"], one.params["beta"], rtol=1e-9)
        np.testing.assert_allclose(batch[i].stderr["beta"], one.stderr["beta"], rtol=1e-8)
    assert batch.conf_int()["beta"].shape == (50, 3, 2)


def test_ragged_batch_with_pad_and_mask():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(5.0, 2.0, size=n) for n in (3, 10, 7, 25)]
    padded, mask = jm.pad(arrays)
    assert padded.shape == (4, 25) and mask.sum(axis=1).tolist() == [3, 10, 7, 25]
    batch = jm.fit_batch(normal_model(), padded, mask=mask)
    assert batch.converged.all()
    for i, a in enumerate(arrays):
        np.testing.assert_allclose(batch.params["mu"][i], a.mean(), rtol=1e-9)
        np.testing.assert_allclose(batch.params["sigma"][i], a.std(), rtol=1e-8)
        assert int(batch.n_obs[i]) == len(a)
        single = jm.fit(normal_model(), jnp.asarray(a))
        np.testing.assert_allclose(batch[i].stderr["mu"], single.stderr["mu"], rtol=1e-8)
        np.testing.assert_allclose(batch[i].bic, single.bic, rtol=1e-10)


def test_masked_nan_does_not_leak():
    x = jnp.array([[1.0, 2.0, jnp.nan], [4.0, 5.0, 9.0]])
    mask = jnp.array([[True, True, False], [True, True, True]])
    batch = jm.fit_batch(normal_model(), x, mask=mask)
    assert batch.converged.all()
    np.testing.assert_allclose(batch.params["mu"], [1.5, 6.0], rtol=1e-9)


def test_poisoned_lanes_get_their_own_status():
    rng = np.random.default_rng(1)
    clean = jnp.asarray(rng.poisson(4.0, size=(6, 30)).astype(float))
    poisoned = clean.at[2, 5].set(jnp.nan).at[4].set(0.0)   # a NaN lane and an all-zero lane
    ref = jm.fit_batch(poisson_model(), clean)
    with pytest.raises(ValueError, match="nan_policy"):
        jm.fit_batch(poisson_model(), poisoned)
    got = jm.fit_batch(poisson_model(), poisoned, nan_policy="status")
    assert got.status[2] == jm.Status.NONFINITE
    assert got.status[4] == jm.Status.AT_BOUNDARY
    for i in [0, 1, 3, 5]:
        assert got.status[i] == jm.Status.CONVERGED
        assert got.params["lam"][i] == ref.params["lam"][i]     # bit-for-bit untouched
        assert got.n_iter[i] == ref.n_iter[i]


def test_finished_lanes_are_frozen_at_their_optimum():
    # Lane 0 converges in a few steps, lane 1 needs many: lane 0 must not move afterwards.
    x = jnp.array([[1.0, 2.0, 3.0, 4.0], [1e3, 1e3 + 1, 1e3 + 3, 1e3 + 7]])
    batch = jm.fit_batch(normal_model(), x, method="bfgs")
    single = jm.fit(normal_model(), x[0], method="bfgs")
    assert int(batch.n_iter[0]) < int(batch.n_iter[1])
    assert batch.params["mu"][0] == single.params["mu"]
    assert batch.n_iter[0] == single.n_iter


def test_per_dataset_init():
    xs = jnp.array([[240.0, 255.0, 261.0], [-5.0, -3.0, -4.0]])
    init = {"mu": jnp.array([250.0, -4.0]), "sigma": jnp.array([5.0, 1.0])}
    batch = jm.fit_batch(normal_model(), xs, init=init, method="adam", max_iter=20_000)
    assert batch.converged.all()
    np.testing.assert_allclose(batch.params["mu"], xs.mean(axis=1), rtol=1e-4)
    with pytest.raises(ValueError, match="one per dataset"):
        jm.fit_batch(normal_model(), xs, init={"mu": jnp.zeros(3)})


def test_float32_batch():
    xs = (jax.random.normal(jax.random.key(5), (500, 50)) * 3 + 1).astype(jnp.float32)
    batch = jm.fit_batch(normal_model(), xs)
    assert batch.params["mu"].dtype == jnp.float32
    assert batch.converged.all()
    np.testing.assert_allclose(batch.params["mu"], np.asarray(xs, np.float64).mean(axis=1), atol=1e-4)


def test_no_retrace_for_new_data_of_same_shape():
    traces = []

    def loglik(p, x):
        traces.append(1)
        return stats.norm.logpdf(x, p["mu"], p["sigma"])

    model = jm.Model(loglik, {"mu": 0.0, "sigma": jm.Positive(1.0)})
    key = jax.random.key(6)
    jm.fit_batch(model, jax.random.normal(key, (100, 20)))
    jm.fit(model, jax.random.normal(key, (20,)))
    after_first = len(traces)
    for i in range(3):
        xs = jax.random.normal(jax.random.fold_in(key, i), (100, 20)) + i
        jm.fit_batch(model, xs)
        jm.fit(model, xs[0])
    assert len(traces) == after_first
    assert after_first < 60   # a bounded number of traces per compiled fitter


def test_batch_summary_and_indexing():
    xs = jax.random.normal(jax.random.key(7), (20, 30))
    batch = jm.fit_batch(normal_model(), xs)
    text = batch.summary()
    assert "CONVERGED: 20" in text and "mu" in text
    assert isinstance(batch[3], jm.FitResult) and len(batch) == 20
    with pytest.raises(IndexError):
        batch[20]


def test_pad_errors():
    with pytest.raises(ValueError, match="empty"):
        jm.pad([np.ones(3), np.ones(0)])
    with pytest.raises(ValueError, match="first axis"):
        jm.pad([np.ones((3, 2)), np.ones((3, 3))])


def _heavy_tailed_logistic(B=1024, n=60, k=3, seed=3):
    """Logistic datasets, a few of them nearly separable (many more Newton steps)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, n, k))
    X[..., 0] = 1.0
    beta = rng.normal(0.0, 0.5, (B, k))
    beta[rng.choice(B, B // 30, replace=False)] *= 8.0
    y = (rng.uniform(size=(B, n)) < 1 / (1 + np.exp(-np.einsum("bnk,bk->bn", X, beta)))).astype(float)
    lengths = rng.integers(n // 2, n + 1, B)
    mask = np.arange(n)[None, :] < lengths[:, None]
    return {"X": jnp.asarray(X), "y": jnp.asarray(y)}, jnp.asarray(mask)


def _assert_identical(a, b):
    for field in ("params", "cov", "loglik", "status", "n_iter", "evals", "grad_norm", "trace"):
        for u, v in zip(jax.tree_util.tree_leaves(getattr(a, field)), jax.tree_util.tree_leaves(getattr(b, field))):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=field)


def test_straggler_compaction_is_identical_to_plain_vmap():
    data, mask = _heavy_tailed_logistic()
    model = logistic_model(3)
    plain = jm.fit_batch(model, data, mask=mask, compact=False, trace=6)
    packed = jm.fit_batch(model, data, mask=mask, compact=True, trace=6)
    it = np.asarray(plain.n_iter)
    assert it.max() >= 2 * np.median(it)          # the batch really is heavy-tailed
    _assert_identical(plain, packed)
    fn = next(f for f in model._compiled.values() if isinstance(f, BatchFitter) and f.compact)
    assert fn.advance._cache_size() >= 2          # stragglers moved to a smaller bucket
    # Chunked and compacted: the same steps. Chunks change the batch shape of every
    # program, and XLA may then round a reduction differently (a few ulps).
    chunked = jm.fit_batch(model, data, mask=mask, compact=True, trace=6, chunk_size=512)
    for field in ("status", "n_iter", "evals"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(chunked, field))
    np.testing.assert_allclose(chunked.params["beta"], plain.params["beta"], rtol=1e-12)
    np.testing.assert_allclose(chunked.loglik, plain.loglik, rtol=1e-14)


def test_compaction_does_not_retrace():
    model, traces = counting_logistic_model(3)
    data, mask = _heavy_tailed_logistic()
    jm.fit_batch(model, data, mask=mask, compact=True)
    after_first = len(traces)
    # New data of the same shape, and as many stragglers (the same bucket sizes).
    other, _ = _heavy_tailed_logistic(seed=4)
    jm.fit_batch(model, other, mask=mask, compact=True)
    assert len(traces) == after_first


def test_big_batches_invert_in_their_program_small_ones_on_the_host(monkeypatch):
    # Both finish programs give the same covariances and statuses (one of the datasets
    # is constant: its sigma MLE is 0, a boundary).
    xs = np.asarray(jax.random.normal(jax.random.key(5), (40, 12))) * 2 + 1
    xs[3] = 1.0
    model = normal_model()
    host = jm.fit_batch(model, xs)
    monkeypatch.setattr("jaxmle._batch.HOST_INVERT_MAX", 8)
    prog = jm.fit_batch(model, xs)
    np.testing.assert_array_equal(host.status, prog.status)
    ok = np.asarray(host.status) == jm.Status.CONVERGED
    assert ok.sum() == 39
    np.testing.assert_allclose(np.asarray(host.cov)[ok], np.asarray(prog.cov)[ok], rtol=1e-12)
    np.testing.assert_allclose(host.stderr["mu"][ok], xs[ok].std(axis=1) / np.sqrt(12), rtol=1e-8)
