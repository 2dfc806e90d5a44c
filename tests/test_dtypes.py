"""jaxmle's own code needs no implicit dtype promotion.

A global ``jax_numpy_dtype_promotion="strict"`` in conftest is not possible: users pass
integer data (counts, coin flips) to ``jax.scipy.stats`` log-densities, which then refuse
to promote int and float themselves. So the fitting machinery is run here under strict
promotion with float data and log-densities written without mixed types: every method,
a batch, a masked batch, a profile interval, the sandwich and the delta method, in float64
and float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import jaxmle as jm


def _model():
    return jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]),
                    {"mu": 0.0, "sigma": jm.Positive(1.0)})


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
# L-BFGS and Adam are left out: optax's own lbfgs adds an int32 to an int64 counter,
# and its adam a Python float to an int32 step count (optax 0.2.8).
@pytest.mark.parametrize("method", ["newton", "bfgs", "gd"])
def test_fits_under_strict_promotion(method, dtype):
    x = (jax.random.normal(jax.random.key(0), (40,)) * 2.0 + 1.0).astype(dtype)
    with jax.numpy_dtype_promotion("strict"):
        res = jm.fit(_model(), x, method=method, warn=False)
    assert res.z.dtype == dtype
    assert int(res.status) in (jm.Status.CONVERGED, jm.Status.PRECISION_LIMIT)
    # Gradient ascent stops at a float32 gradient tolerance of 1e-4 (mean units).
    np.testing.assert_allclose(res.params["mu"], np.mean(np.asarray(x, float)), rtol=1e-2 if method == "gd" else (1e-4 if dtype == jnp.float32 else 1e-7))


def test_batch_profile_and_inference_under_strict_promotion():
    xs = jax.random.normal(jax.random.key(1), (6, 30)) * 3.0 + 2.0
    padded, mask = jm.pad([np.asarray(r[: 10 + 3 * i]) for i, r in enumerate(xs)])
    model = _model()
    with jax.numpy_dtype_promotion("strict"):
        batch = jm.fit_batch(model, padded, mask=mask)
        one = jm.fit(model, xs[0])
        prof = one.conf_int(method="profile")
        robust = one.stderr_robust
        est, se = one.derived(lambda p: p["sigma"] / p["mu"])
    assert batch.status_counts() == {"CONVERGED": 6}
    assert prof["mu"][0] < float(one.params["mu"]) < prof["mu"][1]
    assert np.isfinite(robust["sigma"]) and np.isfinite(se)
