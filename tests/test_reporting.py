"""Reporting is host NumPy (issue 21 item 4) and ``res.status`` is a ``jm.Status`` (issue 22 item 5).

After a fit, summaries, printing, Wald intervals, standard errors, z and p values,
AIC/BIC and the exports (dict, JSON, frame) compile and run no XLA program: they
read the result's arrays once with ``np.asarray`` and compute with NumPy (the normal
CDF by ``math.erfc``, its inverse by a refined rational approximation; scipy is not a
runtime dependency). Checked three ways: JAX's compile/trace events during reporting
(zero), JAX's host-to-device transfer guard (any jax.numpy call with a NumPy array or a
Python number would transfer), and a fresh process whose JAX caches are cleared after
the fits, where any XLA use at all would show as a compile.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats as jstats
from scipy import special, stats

import jaxmle as jm
from jaxmle import _stats
from jaxmle._result import FIELDS
from jaxmle.inference import information_criteria, normal_quantile, p_values, wald_interval, z_values


def _normal_model():
    return jm.Model(lambda p, x: jstats.norm.logpdf(x, p["mu"], p["sigma"]),
                    {"mu": 0.0, "sigma": jm.Positive(1.0), "nu": jm.Fixed(3.0)}, name="normal")


@pytest.fixture(scope="module")
def fits():
    rng = np.random.default_rng(0)
    model = _normal_model()
    res = jm.fit(model, jnp.asarray(rng.normal(3.0, 2.0, 57)))
    batch = jm.fit_batch(model, jnp.asarray(rng.normal(3.0, 2.0, (5, 23))))
    jax.block_until_ready((res.loglik, batch.loglik))
    return res, batch


@contextlib.contextmanager
def _no_xla():
    """Fail on any JAX tracing, lowering, compilation (cache hits too) or host-to-device transfer."""
    events = []

    def on_duration(name, secs, **kw):
        if "/jax/core/compile" in name or "compilation_cache" in name:
            events.append(name)

    def on_event(name, **kw):
        if "compilation_cache" in name:
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    try:
        with jax.transfer_guard_host_to_device("disallow"):
            yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
        jax.monitoring.unregister_event_listener(on_event)
    assert events == [], f"reporting used XLA: {sorted(set(events))}"


def _report(res):
    """Everything a user reads off a result after a fit, in the ways they read it."""
    out = io.StringIO()
    print(res, file=out)
    got = [repr(res), str(res), res.summary(), res.conf_int(), res.conf_int(0.9), res.stderr,
           res.stderr_flat, res.estimate_flat, res.zvalues, res.pvalues, res.aic, res.bic, res.aicc,
           res.status, res.converged, res.boundary_params, res.to_dict(), res.to_json(), res.to_frame()]
    if isinstance(res, jm.BatchFitResult):
        got += [res.status_counts(), len(res)]
        for i in range(len(res)):
            got += _report(res[i])
    return got


def test_reporting_compiles_nothing_and_runs_nothing(fits):
    res, batch = fits
    _report(res), _report(batch)  # warm anything host-side (pandas' import)
    with _no_xla():
        _report(res)
        _report(batch)
        res.summary(level=0.99), res.to_dict(level=0.8), batch.to_frame(level=0.9)


def test_stored_results_report_without_xla(fits, tmp_path):
    """Unpickled and loaded results hold NumPy arrays: any jax.numpy call would transfer them."""
    res, batch = fits
    res.save(tmp_path / "one.npz")
    batch.save(tmp_path / "many.npz")
    copies = [pickle.loads(pickle.dumps(res)), pickle.loads(pickle.dumps(batch)),
              jm.load(tmp_path / "one.npz"), jm.load(tmp_path / "many.npz")]
    with _no_xla():
        for r in copies:
            _report(r)
    assert copies[0].summary() == res.summary() == copies[2].summary()
    assert copies[1].summary() == batch.summary() == copies[3].summary()


_FRESH = textwrap.dedent("""
    import jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jaxmle as jm
    from jax.scipy import stats
    model = jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]), {"mu": 0.0, "sigma": jm.Positive(1.0)})
    rng = np.random.default_rng(1)
    res = jm.fit(model, jnp.asarray(rng.normal(3.0, 2.0, 40)))
    batch = jm.fit_batch(model, jnp.asarray(rng.normal(3.0, 2.0, (4, 30))))
    jax.block_until_ready((res.loglik, batch.loglik))
    import pandas  # noqa: F401  (imported before counting: its import is not reporting)
    jax.clear_caches()  # from here any XLA use (even of a program the fit ran) compiles again
    events = []
    jax.monitoring.register_event_duration_secs_listener(lambda name, secs, **kw: events.append(name))
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
    for r in (res, batch, batch[2]):
        r.summary(), repr(r), r.conf_int(), r.stderr, r.zvalues, r.pvalues, r.aic, r.bic, r.status
        r.converged, r.to_dict(), r.to_json(), r.to_frame()
    print("EVENTS", sorted(set(e for e in events if "compile" in e or "trace" in e)))
""")


def test_fresh_process_reports_without_any_xla_program():
    env = dict(os.environ, JAXMLE_CACHE_DIR="off")
    out = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "EVENTS []" in out.stdout, out.stdout[-2000:]


def test_summary_numbers_match_scipy(fits):
    res, batch = fits
    est = np.array([float(res.params["mu"]), float(res.params["sigma"])])
    se = np.sqrt(np.diag(np.asarray(res.cov)))
    z = est / se
    np.testing.assert_allclose(res.zvalues, z, rtol=1e-14)
    np.testing.assert_allclose(res.pvalues, 2 * stats.norm.sf(np.abs(z)), rtol=1e-13)
    for level in (0.5, 0.9, 0.95, 0.99, 0.999):
        q = stats.norm.ppf(0.5 + level / 2)
        ci = res.conf_int(level)
        np.testing.assert_allclose(ci["mu"], [est[0] - q * se[0], est[0] + q * se[0]], rtol=1e-13)
        np.testing.assert_allclose(ci["sigma"], [est[1] - q * se[1], est[1] + q * se[1]], rtol=1e-13)
        frame = res.to_frame(level)
        np.testing.assert_allclose(frame["lower"], est - q * se, rtol=1e-13)
        np.testing.assert_allclose(frame["upper"], est + q * se, rtol=1e-13)
    np.testing.assert_allclose(frame["p"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-13)
    n, ll = float(res.n_obs), float(res.loglik)
    np.testing.assert_allclose([res.aic, res.bic, res.aicc],
                               [4 - 2 * ll, 2 * np.log(n) - 2 * ll, 4 - 2 * ll + 12 / (n - 3)], rtol=1e-14)
    # The table shows the same numbers (5 significant digits).
    row = next(line for line in res.summary().splitlines() if line.split()[:1] == ["sigma"])
    shown = [float(v) for v in row.split()[1:]]
    np.testing.assert_allclose(shown, [est[1], se[1], z[1], 2 * stats.norm.sf(abs(z[1])),
                                       est[1] - 1.959963984540054 * se[1], est[1] + 1.959963984540054 * se[1]],
                               rtol=1e-3)
    # Batched: per dataset, as the frame's columns.
    bse = np.sqrt(np.diagonal(np.asarray(batch.cov), axis1=-2, axis2=-1))
    bz = np.asarray(batch.estimate_flat) / bse
    fb = batch.to_frame(0.9)
    np.testing.assert_allclose(fb["sigma_z"], bz[:, 1], rtol=1e-14)
    np.testing.assert_allclose(fb["mu_p"], 2 * stats.norm.sf(np.abs(bz[:, 0])), rtol=1e-13)
    np.testing.assert_allclose(fb["mu_upper"], np.asarray(batch.params["mu"]) + stats.norm.ppf(0.95) * bse[:, 0],
                               rtol=1e-13)


def test_host_normal_functions_match_scipy():
    p = np.concatenate([np.logspace(-300, -1, 1500), np.linspace(0.001, 0.999, 3001), 1 - np.logspace(-16, -1, 300),
                        [0.5, 0.25, 0.75, 0.5 + 1e-12, 0.5 - 1e-15]])
    got, ref = _stats.norm_ppf(p), special.ndtri(p)
    np.testing.assert_allclose(got, ref, rtol=2e-15, atol=0)
    np.testing.assert_array_equal(_stats.norm_ppf([0.0, 1.0, -0.1, 1.5, np.nan]),
                                  [-np.inf, np.inf, np.nan, np.nan, np.nan])
    # Far in the lower tail the rounding of x / sqrt(2) is amplified by x^2 in any erfc-based CDF.
    x = np.linspace(-8.0, 9.0, 3401)
    np.testing.assert_allclose(_stats.norm_cdf(x), special.ndtr(x), rtol=1e-14)
    x = np.linspace(-37.0, -8.0, 2901)
    np.testing.assert_allclose(_stats.norm_cdf(x), special.ndtr(x), rtol=2e-13)
    z = np.concatenate([np.linspace(-37.0, 37.0, 2001), [0.0, np.inf, -np.inf, np.nan]])
    np.testing.assert_allclose(p_values(z), 2 * stats.norm.sf(np.abs(z)), rtol=2e-13)
    np.testing.assert_allclose(p_values(z[np.abs(z) < 8]), 2 * stats.norm.sf(np.abs(z[np.abs(z) < 8])), rtol=1e-14)
    for level in (0.01, 0.5, 0.8, 0.9, 0.95, 0.975, 0.99, 0.999, 1 - 1e-9):
        # The quantile of the exact tail (1 - level) / 2; 0.5 + level / 2 rounds it away
        # for levels near 1 (by 3e-9 relative at 1 - 1e-9), so compare there at everyday levels.
        assert normal_quantile(level) == pytest.approx(-stats.norm.ppf((1 - level) / 2), rel=2e-15)
        if level <= 0.999:
            assert normal_quantile(level) == pytest.approx(stats.norm.ppf(0.5 + level / 2), rel=1e-14)
    with pytest.raises(ValueError, match="level must be in"):
        normal_quantile(1.0)


def test_formulas_follow_their_input_host_or_jax():
    """NumPy in, NumPy out (no XLA); JAX arrays and tracers keep the jax.numpy formulas."""
    est, se = np.array([1.0, -2.0, 0.5]), np.array([0.5, 0.7, 0.0])
    host = [z_values(est, se), p_values(z_values(est, se)), wald_interval(est, se, 0.9),
            *information_criteria(np.array(-10.0), 3, np.array(20.0))]
    assert all(isinstance(h, (np.ndarray, np.generic)) for h in host)
    dev = [z_values(jnp.asarray(est), jnp.asarray(se)), jax.jit(lambda z: p_values(z))(jnp.asarray(host[0])),
           jax.jit(lambda e, s: wald_interval(e, s, 0.9))(est, se),
           *jax.jit(lambda ll, n: information_criteria(ll, 3, n))(-10.0, 20.0)]
    assert all(isinstance(d, jax.Array) for d in dev)
    for h, d in zip(host, dev):
        np.testing.assert_allclose(h, d, rtol=1e-14)
    # float32 stays float32 on the host, as under jax.numpy.
    f32 = np.float32
    assert p_values(np.array([1.5], f32)).dtype == f32
    assert wald_interval(np.array([1.0], f32), np.array([0.1], f32)).dtype == f32


def test_status_is_a_jm_status_and_exports_carry_its_name(fits, tmp_path):
    res, batch = fits
    assert type(res.status) is jm.Status and res.status is jm.Status.CONVERGED
    assert int(res.status) == 0 and res.status == jm.Status.CONVERGED and res.converged is True
    assert str(res.status) == f"{res.status}" == "CONVERGED" and f"{res.status:d}" == "0"
    # Batches keep the int32 array of codes; one fit of a batch is a jm.Status again.
    assert np.shape(batch.status) == (5,) and np.asarray(batch.status).dtype == np.int32
    assert np.asarray(batch.converged).dtype == bool and np.asarray(batch.converged).all()
    assert type(batch[3].status) is jm.Status and batch[-1].converged is True
    assert res.to_dict()["status"] == "CONVERGED" and json.loads(res.to_json())["status"] == "CONVERGED"
    assert batch.to_dict()["status"] == ["CONVERGED"] * 5
    assert json.loads(batch.to_json())["status"] == ["CONVERGED"] * 5
    assert list(batch.to_frame()["status"]) == ["CONVERGED"] * 5 and res.to_frame().attrs["status"] == "CONVERGED"
    # The pytree keeps the stored int32 code (no Python enum leaf), so transforms see an array.
    leaves = jax.tree_util.tree_leaves(res)
    assert not any(isinstance(leaf, jm.Status) for leaf in leaves)
    same = jax.tree_util.tree_map(lambda a: a, res)
    assert type(same.status) is jm.Status and same.summary() == res.summary()
    traced = jax.jit(lambda r: (r.status, r.converged))(res)
    assert int(traced[0]) == 0 and bool(traced[1])
    np.testing.assert_array_equal(jax.vmap(lambda r: r.converged)(batch), np.ones(5, bool))
    # Round trips through pickle and .npz files keep a jm.Status.
    res.save(tmp_path / "r.npz")
    for back in (pickle.loads(pickle.dumps(res)), jm.load(tmp_path / "r.npz")):
        assert type(back.status) is jm.Status and back.status == res.status and back.converged is True
    # A result built by hand from a jm.Status (or a plain int) stores an int32 code.
    fields = {f: res._field(f) for f in FIELDS}
    for code in (jm.Status.MAX_ITER, 1):
        built = jm.FitResult(res.model, res.method, dict(fields, status=code))
        assert built.status is jm.Status.MAX_ITER and built.converged is False
        assert np.asarray(built._field("status")).dtype == np.int32
        assert "WARNING: not converged: max_iter" in built.summary()


def test_one_fit_of_a_batch_slices_its_data_when_a_refit_asks(fits):
    """``batch[i]`` reports from its fields; its data are sliced on first use (profile
    intervals, sandwich covariances: tests/test_inference.py refits from ``batch[i]``)."""
    _, batch = fits
    one = batch[1]
    assert type(one.__dict__["_data_src"]).__name__ == "_Take"
    np.testing.assert_array_equal(one._data, np.asarray(batch._data)[1])
    if batch._mask is not None:  # data padded to a shape bucket
        np.testing.assert_array_equal(one._mask, np.asarray(batch._mask)[1])
    assert one._data is one._data  # sliced once
    assert pickle.loads(pickle.dumps(one))._data is None
