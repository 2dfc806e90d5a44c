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
    # Against the closed form (mean, sd with ddof 0, of the data as float64), at what each
    # method achieves here with a margin of 2-5x (measured, relative error in mu / sigma):
    #   float64: newton 2.9e-11 / 8.5e-12, bfgs 4.0e-10 / 1.4e-10, gd 9.8e-7 / 1.3e-10;
    #   float32: newton 6.9e-6 / 1.9e-6, bfgs 2.0e-5 / 4.8e-6, gd 3.0e-3 / 1.5e-5.
    # Gradient ascent stops on max|grad| <= gtol * max(1, |f|) (gtol 1e-7 / 1e-4), which
    # leaves mu off by up to gtol * |f| * sigma^2 (~9e-7 in float64 here), or 10x that when
    # it stops at the rounding floor (README, "Methods and the stopping rule").
    xf = np.asarray(x, np.float64)
    rtol = {("gd", jnp.float64): (3e-6, 1e-9), ("gd", jnp.float32): (6e-3, 5e-5),
            ("bfgs", jnp.float64): (2e-9, 1e-9), ("newton", jnp.float64): (2e-9, 1e-9)}.get(
        (method, dtype), (1e-4, 2e-5))
    np.testing.assert_allclose(float(res.params["mu"]), xf.mean(), rtol=rtol[0])
    np.testing.assert_allclose(float(res.params["sigma"]), xf.std(), rtol=rtol[1])


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
