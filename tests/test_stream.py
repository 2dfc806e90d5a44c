"""Chunked (exact) and mini-batch (stochastic) fits of one dataset streamed from the host."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import jaxmle as jm
from helpers import counting_logistic_model

RTOL = 1e-10


def _logistic_data(n=1100, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, k - 1))])
    beta = np.linspace(0.5, -0.8, k)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ beta))).astype(float)
    return {"X": X, "y": y}


def _poisson_data(n=900, k=3, seed=1):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, k - 1))])
    offset = np.log(rng.uniform(0.5, 2.0, size=n))
    y = rng.poisson(np.exp(X @ np.array([0.3, 0.5, -0.2]) + offset)).astype(float)
    return {"X": X, "y": y, "offset": offset}


def _normal_model():
    return jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]),
                    {"mu": 0.0, "sigma": jm.Positive(1.0)}, name="normal")


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a, float), np.asarray(b, float)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=0)


def _same_fit(res, ref, rtol=RTOL):
    assert int(res.status) == int(ref.status) == jm.Status.CONVERGED
    _close(res.estimate_flat, ref.estimate_flat, rtol)
    _close(res.stderr_flat, ref.stderr_flat, rtol)
    _close(res.loglik, ref.loglik, rtol)
    assert float(res.n_obs) == float(ref.n_obs)


@pytest.fixture(scope="module")
def logistic():
    """One model, data, start and in-memory reference shared by the tests (compiled once).

    The reference fit uses an all-True mask: the same compiled program serves the
    masked comparison, and the mask changes nothing numerically.
    """
    model, data = jm.models.logistic(3), _logistic_data()
    init = {"beta": np.zeros(3)}
    return model, data, init, jm.fit(model, data, init=init, mask=np.ones(1100, bool))


def test_chunked_logistic_equals_in_memory_with_partial_chunk(logistic):
    model, data, init, ref = logistic
    res = jm.fit(model, data, chunk_size=256, init=init)      # 1100 = 4 x 256 + 76
    _same_fit(res, ref)
    assert res.method == "newton"
    assert "CONVERGED" in res.summary()
    assert res.to_dict()["converged"]


def test_chunked_from_memmap(logistic, tmp_path):
    model, data, init, ref = logistic
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64, shape=data["X"].shape)
    X[:] = data["X"]
    X.flush()
    del X
    X = np.load(tmp_path / "X.npy", mmap_mode="r")
    res = jm.fit(model, {"X": X, "y": data["y"]}, chunk_size=300, init=init)
    _same_fit(res, ref)


def test_chunked_from_callable_regroups_uneven_chunks(logistic):
    model, data, init, ref = logistic
    calls = []

    def read():
        calls.append(1)
        for a in range(0, 1100, 170):           # chunks of 170 rows regrouped into 256
            yield {"X": data["X"][a:a + 170], "y": data["y"][a:a + 170]}

    res = jm.fit(model, read, chunk_size=256, init=init)
    _same_fit(res, ref)
    assert len(calls) >= 3                       # one pass per evaluation


def test_chunked_with_mask(logistic):
    model, data, init, _ = logistic
    mask = np.arange(1100) % 7 != 3
    ref = jm.fit(model, data, mask=mask, init=init)
    res = jm.fit(model, data, chunk_size=256, mask=mask, init=init)
    _same_fit(res, ref)
    assert float(res.n_obs) == mask.sum()


def test_chunked_lbfgs_reaches_the_mle(logistic):
    model, data, init, ref = logistic
    res = jm.fit(model, data, chunk_size=256, method="lbfgs", init=init)
    assert res.converged and res.method == "lbfgs"
    _close(res.estimate_flat, ref.estimate_flat, 1e-6)
    _close(res.stderr_flat, ref.stderr_flat, 1e-6)


def test_chunked_line_search_newton_reaches_the_mle(logistic):
    model, data, init, ref = logistic
    opt = jm.optimizers.Newton(globalization="line-search")
    res = jm.fit(model, data, chunk_size=256, method=opt, init={"beta": np.full(3, 2.0)})
    assert res.converged
    _close(res.estimate_flat, ref.estimate_flat, 1e-7)


def test_chunked_poisson_with_offset_equals_in_memory():
    model, data = jm.models.poisson(3), _poisson_data()
    init = {"beta": np.zeros(3)}
    ref = jm.fit(model, data, init=init)
    _same_fit(jm.fit(model, data, chunk_size=200, init=init), ref)


def test_chunked_normal_with_positive_sigma_equals_in_memory():
    model = _normal_model()
    x = np.random.default_rng(2).normal(3.0, 2.0, size=777)
    ref = jm.fit(model, x)
    res = jm.fit(model, x, chunk_size=100)
    _same_fit(res, ref)
    assert float(res.params["sigma"]) > 0


def test_streamed_result_says_profile_and_sandwich_need_the_data_in_memory():
    res = jm.fit(_normal_model(), jnp.asarray(np.random.default_rng(8).normal(3.0, 2.0, 300)), chunk_size=100)
    for call in (lambda: res.conf_int(method="profile"), lambda: res.cov_robust,
                 lambda: res.derived(lambda p: p["mu"], method="profile")):
        with pytest.raises(ValueError, match=r"streamed fit \(chunk_size= or batch_size=\) keeps none"):
            call()


def test_chunked_map_fit_adds_the_prior_once():
    model = jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]),
                     {"mu": 0.0, "sigma": jm.Positive(1.0)},
                     log_prior=lambda p: stats.norm.logpdf(p["mu"], 0.0, 0.1))
    x = np.random.default_rng(3).normal(1.0, 1.0, size=150)
    res = jm.fit(model, x, chunk_size=64)
    assert res.converged and res.is_map
    mu, sigma = float(res.params["mu"]), float(res.params["sigma"])
    # Stationarity of the log-posterior: mu is the precision-weighted mean, sigma the MLE given mu.
    assert mu == pytest.approx(x.sum() / sigma ** 2 / (x.size / sigma ** 2 + 1 / 0.1 ** 2), rel=1e-9)
    assert sigma == pytest.approx(np.sqrt(np.mean((x - mu) ** 2)), rel=1e-9)
    assert float(res.logpost) - float(res.loglik) == pytest.approx(float(stats.norm.logpdf(mu, 0.0, 0.1)))


def test_no_retrace_for_a_second_dataset_of_the_same_shape():
    model, traces = counting_logistic_model(3)
    first = jm.fit(model, _logistic_data(seed=4), chunk_size=256)
    n_traces = len(traces)
    second = jm.fit(model, _logistic_data(seed=5), chunk_size=256)
    assert first.converged and second.converged
    assert len(traces) == n_traces


def test_float32_chunked_fit_converges():
    x = np.random.default_rng(6).normal(3.0, 2.0, size=500).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = jm.fit(_normal_model(), x, chunk_size=128)
    assert res.dtype == np.float32 and res.converged
    assert float(res.params["mu"]) == pytest.approx(float(x.astype(np.float64).mean()), rel=1e-5)


# -- stochastic fits ---------------------------------------------------------------------

def test_adam_lands_within_its_tolerance_of_the_mle(logistic):
    model, data, _, ref = logistic
    tol = 5e-3
    res = jm.fit(model, data, method=jm.optimizers.Adam(learning_rate=0.05), batch_size=128, epochs=40,
                 key=jax.random.key(0), tol=tol)
    assert res.converged, res.summary()
    assert res.method.startswith("adam")
    # Converged means a full-data Newton decrement below tol * sqrt(max(1, |f|)): the
    # distance to the exact MLE in the metric of the mean information.
    d = np.asarray(res.estimate_flat - ref.estimate_flat)
    info = np.linalg.inv(np.asarray(ref.cov)) / float(ref.n_obs)
    f = max(1.0, abs(float(ref.loglik)) / float(ref.n_obs))
    assert np.sqrt(d @ info @ d) <= 1.5 * tol * np.sqrt(f)
    # The standard errors come from the full-data information, as for an exact fit.
    _close(res.stderr_flat, ref.stderr_flat, 0.05)


def test_adam_with_too_few_steps_says_max_iter_and_how_to_polish(logistic):
    model, data, _, _ = logistic
    with pytest.warns(jm.ConvergenceWarning, match="not converged to tol.*chunk_size"):
        res = jm.fit(model, data, method="adam", batch_size=64, max_steps=5, key=jax.random.key(1))
    assert int(res.status) == jm.Status.MAX_ITER
    assert int(res.n_iter) == 5
    assert np.all(np.isfinite(np.asarray(res.stderr_flat)))


def test_sgd_from_host_chunks_with_a_schedule(logistic):
    model, data, _, ref = logistic
    opt = jm.optimizers.GradientAscent(learning_rate=jax.tree_util.Partial(lambda k: 0.5 / (1 + k / 200)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jm.ConvergenceWarning)
        res = jm.fit(model, data, method=opt, batch_size=100, epochs=5, chunk_size=300, key=jax.random.key(2))
    d = np.asarray((res.estimate_flat - ref.estimate_flat) / ref.stderr_flat)
    assert np.all(np.abs(d) < 1.0)


# -- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"chunk_size": 0}, "chunk_size must be a positive int"),
    ({"chunk_size": 2.5}, "chunk_size must be a positive int"),
    ({"batch_size": 32, "method": "newton"}, "cannot use batch_size"),
    ({"batch_size": 32, "method": "bfgs"}, "cannot use batch_size"),
    ({"chunk_size": 64, "method": "adam"}, "stochastic fit: pass batch_size"),
    ({"epochs": 3}, "pass batch_size"),
    ({"chunk_size": 64, "max_steps": 3}, "pass batch_size"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jm.fit(jm.models.logistic(3), _logistic_data(n=100), **kwargs)


def test_leaves_with_different_row_counts_are_rejected():
    data = _logistic_data(n=100)
    data["y"] = data["y"][:90]
    with pytest.raises(ValueError, match="same number of rows"):
        jm.fit(jm.models.logistic(3), data, chunk_size=32)


def test_an_iterator_is_rejected_for_a_callable():
    data = _logistic_data(n=100)
    with pytest.raises(TypeError, match="callable returning a fresh iterator"):
        jm.fit(jm.models.logistic(3), iter([data]), chunk_size=32)


def test_nan_in_a_later_chunk_names_its_rows(logistic):
    model, data, init, _ = logistic
    data = {"X": data["X"].copy(), "y": data["y"]}
    data["X"][700, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in the chunk of rows 512..767"):
        jm.fit(model, data, chunk_size=256)
    mask = np.ones(1100, bool)
    mask[700] = False
    assert jm.fit(model, data, chunk_size=256, mask=mask, init=init).converged


def test_a_scalar_log_density_is_rejected():
    model = jm.Model(lambda p, x: jnp.sum(stats.norm.logpdf(x, p["mu"], 1.0)), {"mu": 0.0})
    with pytest.raises(ValueError, match="per-observation"):
        jm.fit(model, np.ones(10), chunk_size=4)


@pytest.mark.parametrize("mask", [np.array([None] * 1100, dtype=object), np.array(["1"] * 1100),
                                  np.full(1100, 0.5), np.ones((1100, 2), bool)])
def test_a_callables_bad_mask_gets_the_documented_message(logistic, mask):
    model, data, init, _ = logistic

    def read():
        yield {"X": data["X"], "y": data["y"]}

    with pytest.raises(ValueError, match=r"mask must be boolean \(or 0/1\)"):
        jm.fit(model, read, chunk_size=256, init=init, mask=mask)
