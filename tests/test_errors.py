"""Bad input gets a clear ValueError/TypeError naming the problem and the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import jaxmle as jm
from helpers import normal_model

X = jnp.array([1.0, 2.0, 3.0, 4.0])


def test_loglik_returning_a_matrix():
    model = jm.Model(lambda p, x: jnp.outer(x, x) * p["a"], {"a": 0.0})
    with pytest.raises(ValueError, match="scalar or one term per observation"):
        jm.fit(model, X)


def test_loglik_returning_wrong_length():
    model = jm.Model(lambda p, x: stats.norm.logpdf(x[:-1], p["mu"], 1.0), {"mu": 0.0})
    with pytest.raises(ValueError, match="3 terms but the data has 4 observations"):
        jm.fit(model, X)


def test_loglik_returning_integers():
    model = jm.Model(lambda p, x: jnp.sum(x > 0).astype(jnp.int32), {"mu": 0.0})
    with pytest.raises(TypeError, match="floating-point"):
        jm.fit(model, X)


def test_python_control_flow_is_explained():
    def loglik(p, x):
        if p["mu"] > 0:
            return stats.norm.logpdf(x, p["mu"], 1.0)
        return stats.norm.logpdf(x, -p["mu"], 1.0)

    with pytest.raises(TypeError, match="jnp.where"):
        jm.fit(jm.Model(loglik, {"mu": 0.0}), X)


def test_mismatched_batch_axes():
    data = {"X": jnp.ones((10, 5, 2)), "y": jnp.ones((9, 5))}
    model = jm.Model(lambda p, d: d["y"] * jnp.sum(d["X"], -1) * p["a"], {"a": 0.0})
    with pytest.raises(ValueError, match="mismatched batch axes"):
        jm.fit_batch(model, data)


def test_start_value_outside_constraint():
    with pytest.raises(ValueError, match="'sigma'.*> 0"):
        jm.Model(lambda p, x: x, {"sigma": jm.Positive(-1.0)})
    with pytest.raises(ValueError, match="start value of 'sigma'"):
        jm.fit(normal_model(), X, init={"sigma": 0.0})
    with pytest.raises(ValueError, match=r"inside \(0.0, 1.0\)"):
        jm.Model(lambda p, x: x, {"p": jm.Interval(0.0, 1.0, init=1.5)})
    with pytest.raises(ValueError, match="sum to 1"):
        jm.Simplex(jnp.array([0.5, 0.6])) and jm.Model(lambda p, x: x, {"w": jm.Simplex(jnp.array([0.5, 0.6]))})


def test_interval_bounds_order():
    with pytest.raises(ValueError, match="lo must be strictly less than hi"):
        jm.Interval(1.0, 1.0)
    with pytest.raises(ValueError, match="lo must be strictly less than hi"):
        jm.Interval(2.0, 1.0)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'nelder-mead'.*newton"):
        jm.fit(normal_model(), X, method="nelder-mead")


def test_not_finite_at_start_names_parameters():
    model = jm.Model(lambda p, x: stats.norm.logpdf(x, jnp.log(p["s"] - 1.0), 1.0), {"s": 0.5})
    with pytest.raises(ValueError, match=r"not finite at the start values \{'s': 0.5\}"):
        jm.fit(model, X)


def test_nan_in_data_for_fit():
    with pytest.raises(ValueError, match="NaN or inf.*1 values"):
        jm.fit(normal_model(), X.at[2].set(jnp.nan))


def test_mask_of_wrong_shape():
    with pytest.raises(ValueError, match="mask has shape"):
        jm.fit_batch(normal_model(), jnp.ones((3, 4)), mask=jnp.ones((3, 5), bool))
    with pytest.raises(ValueError, match="mask needs per-observation terms"):
        jm.fit(jm.Model(lambda p, x: jnp.sum(x) * p["a"] - p["a"] ** 2, {"a": 0.0}), X, mask=jnp.ones(4, bool))


def test_empty_data_and_bad_spec():
    with pytest.raises(ValueError, match="empty"):
        jm.fit(normal_model(), jnp.array([]))
    with pytest.raises(TypeError, match="non-empty dict"):
        jm.Model(lambda p, x: x, [0.0, 1.0])
    with pytest.raises(TypeError, match="not numeric"):
        jm.Model(lambda p, x: x, {"a": "one"})
    with pytest.raises(TypeError, match="jm.Model"):
        jm.fit(lambda p, x: x, X)


def test_init_unknown_name_and_scalar_batch_leaf():
    with pytest.raises(ValueError, match="unknown parameter 'nu'"):
        jm.fit(normal_model(), X, init={"nu": 1.0})
    with pytest.raises(ValueError, match="leading batch axis"):
        jm.fit_batch(jm.Model(lambda p, d: d["x"] * p["a"], {"a": 0.0}), {"x": jnp.ones((3, 2)), "n": jnp.array(2.0)})


def test_float32_fit_that_cannot_reach_tol_says_so():
    x = np.random.default_rng(0).normal(1000.0, 3.0, 500).astype(np.float32)
    # L-BFGS judges convergence by the raw gradient, which float32 cannot push below
    # tol=1e-8 here: it stalls and says so.
    with pytest.warns(jm.ConvergenceWarning, match="PRECISION_LIMIT.*float64"):
        res = jm.fit(normal_model(), jnp.asarray(x), tol=1e-8, method="lbfgs")
    assert res.status == jm.Status.PRECISION_LIMIT
    # The estimate is still as good as float32 allows.
    np.testing.assert_allclose(res.params["mu"], x.astype(float).mean(), rtol=1e-6)
    # Newton sees (by its decrement) that no step can improve f beyond its float32
    # rounding: the optimum to working precision, which is convergence.
    res = jm.fit(normal_model(), jnp.asarray(x), tol=1e-8)
    assert res.status == jm.Status.CONVERGED
    np.testing.assert_allclose(res.params["mu"], x.astype(float).mean(), rtol=1e-6)
    # The default float32 tolerance is reachable.
    assert jm.fit(normal_model(), jnp.asarray(x), method="lbfgs").status == jm.Status.CONVERGED


def test_narrow_integer_counts_are_widened():
    poisson = jm.Model(lambda p, k: stats.poisson.logpmf(k, p["lam"]), {"lam": jm.Positive(1.0)})
    k = np.array([255, 250, 3], np.uint8)      # in uint8, 255 + 1 == 0 and log(256!) would be inf
    res = jm.fit(poisson, k)
    assert res.status == jm.Status.CONVERGED
    np.testing.assert_allclose(res.params["lam"], k.astype(float).mean(), rtol=1e-9)
    np.testing.assert_allclose(res.loglik, np.sum(__import__("scipy").stats.poisson.logpmf(k.astype(int), k.mean())), rtol=1e-12)


def test_int64_data_too_large_for_int32_is_an_error():
    poisson = jm.Model(lambda p, k: stats.poisson.logpmf(k, p["lam"]), {"lam": jm.Positive(1.0)})
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="exceed the int32 range.*jax_enable_x64"):
            jm.fit(poisson, np.array([2**40, 3], np.int64))
    finally:
        jax.config.update("jax_enable_x64", True)


def test_complex_data_is_rejected():
    with pytest.raises(TypeError, match="complex"):
        jm.fit(normal_model(), X + 1j)


@pytest.mark.parametrize("globalization", ["trust-region", "line-search"])
def test_overflowing_objective_makes_newton_back_off(globalization):
    # From log-rate -30 the first Newton step lands near +5e13, where exp overflows to
    # inf; the step must be shortened (trust radius or line search) instead of
    # returning NaN.
    x = jnp.array([4.0, 7.0, 5.0, 3.0, 6.0])
    model = jm.Model(lambda p, k: k * p["eta"] - jnp.exp(p["eta"]), {"eta": -30.0})
    res = jm.fit(model, x, method=jm.optimizers.Newton(globalization=globalization))
    assert res.status == jm.Status.CONVERGED
    np.testing.assert_allclose(res.params["eta"], np.log(5.0), rtol=1e-10)
    assert int(res.evals[0]) > int(res.n_iter) + 5      # shortened trial steps


def test_uniform_with_identical_values():
    with pytest.raises(ValueError, match="two distinct values"):
        jm.fit_distribution("uniform", np.ones(4))
    batch = jm.fit_distribution("uniform", np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]), batch=True)
    assert batch.status.tolist() == [jm.Status.NONFINITE, jm.Status.AT_BOUNDARY]


def test_string_data_gets_the_documented_error():
    # jnp.asarray parses strings: [","] raised a SyntaxError from deep inside JAX (found by
    # the fuzz harness).
    model = jm.Model(lambda p, x: -(x - p["m"]) ** 2, {"m": 0.0})
    for bad in ([","], ["1.5", "2"], {"x": ["a", "b"]}):
        with pytest.raises(TypeError, match="data has non-numeric dtype"):
            jm.fit(model, bad)


@pytest.mark.parametrize("bad", [
    np.array([1, 0, 1, 1], dtype=object),          # reached JAX's "Error interpreting argument to stage"
    [True, None, True, True],                        # None among the flags: an object array
    np.array(["1", "0", "1", "1"]),
    np.array([1, 0, 1, 1 + 0j]),                    # complex: its imaginary part would be dropped
    np.array([1.0, 0.5, 1.0, 1.0]),
], ids=["object", "none", "str", "complex", "fraction"])
def test_mask_that_is_not_boolean_gets_the_documented_error(bad):
    # docs/errors.md: "mask must be boolean (or 0/1)"; raised by jaxmle, for fit and fit_batch.
    with pytest.raises(ValueError, match=r"mask must be boolean \(or 0/1\)") as got:
        jm.fit(normal_model(), X, mask=bad)
    assert "jaxmle" in got.traceback[-1].path.parts
    batch_mask = np.array([bad, bad], dtype=np.asarray(bad).dtype) if not isinstance(bad, list) else [bad, bad]
    with pytest.raises(ValueError, match=r"mask must be boolean \(or 0/1\)"):
        jm.fit_batch(normal_model(), jnp.ones((2, 4)), mask=batch_mask)


def test_zero_one_masks_of_any_real_dtype_still_work():
    ref = jm.fit(normal_model(), X, mask=np.array([True, False, True, True]))
    for mask in (np.array([1, 0, 1, 1], np.int8), np.array([1.0, 0.0, 1.0, 1.0]), [1, 0, 1, 1]):
        res = jm.fit(normal_model(), X, mask=mask)
        np.testing.assert_allclose(float(res.params["mu"]), float(ref.params["mu"]), rtol=1e-12)
    # The closed form over the kept observations.
    np.testing.assert_allclose(float(ref.params["mu"]), np.mean([1.0, 3.0, 4.0]), rtol=1e-8)


def test_non_numeric_start_values_name_the_parameter():
    # In the spec and in init= alike (the fuzz harness found init={"mu": ""} reaching
    # NumPy's "could not convert string to float").
    with pytest.raises(TypeError, match="parameter 'mu': the initial value 'a' is not numeric"):
        jm.Model(lambda p, x: -(x - p["mu"]) ** 2, {"mu": "a"})
    m = jm.Model(lambda p, x: -(x - p["mu"]) ** 2, {"mu": 0.0})
    for bad in ("", "x", np.array(1j)):
        with pytest.raises(TypeError, match="parameter 'mu': the initial value .* is not numeric"):
            jm.fit(m, np.array([1.0, 2.0]), init={"mu": bad})


def test_an_empty_dataset_in_a_batch_mask_is_named():
    model = jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], 1.0), {"mu": 0.0})
    mask = np.ones((4, 5), bool)
    mask[2] = mask[3] = False
    with pytest.raises(ValueError, match=r"no observations \(all False\) \(dataset 2 and 1 more\)"):
        jm.fit_batch(model, np.zeros((4, 5)), mask=mask)
