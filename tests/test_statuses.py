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
