"""Sharding over devices and chunking: results identical to one device, one chunk."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

import jaxmle as jm
from helpers import normal_model

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    import jaxmle as jm
    assert jax.local_device_count() == 4, jax.devices()
    m = jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"]),
                 {"mu": 0.0, "sigma": jm.Positive(1.0)})
    xs = jax.random.normal(jax.random.key(0), (10, 30)) * 2 + 1     # B=10: padded to 12
    sharded = jm.fit_batch(m, xs)
    assert len(sharded.params["mu"].sharding.device_set) == 4
    one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    ref = jm.fit_batch(m, xs, mesh=one)
    chunked = jm.fit_batch(m, xs, chunk_size=3)                      # chunks of 4 on 4 devices
    for res in (sharded, chunked):
        assert len(res) == 10
        # Same iterations and status; values equal up to roundoff (XLA may vectorise a
        # 3-lane per-device program differently from a 12-lane one).
        np.testing.assert_array_equal(np.asarray(res.status), np.asarray(ref.status))
        np.testing.assert_array_equal(np.asarray(res.n_iter), np.asarray(ref.n_iter))
        # (grad_norm is roundoff itself at the optimum, so it is not compared.)
        for field in ("loglik", "cov", "n_obs", "cond"):
            np.testing.assert_allclose(np.asarray(getattr(res, field)), np.asarray(getattr(ref, field)), rtol=1e-12, atol=1e-12)
        for name in ("mu", "sigma"):
            np.testing.assert_allclose(np.asarray(res.params[name]), np.asarray(ref.params[name]), rtol=1e-12)
    print("SHARDED-OK")
""")


def test_sharded_over_four_host_devices_equals_one_device():
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDED-OK" in out.stdout


def test_chunked_equals_single_call():
    xs = jax.random.normal(jax.random.key(1), (1003, 40))
    whole = jm.fit_batch(normal_model(), xs)
    chunked = jm.fit_batch(normal_model(), xs, chunk_size=256, progress=False)
    assert len(chunked) == 1003
    # Counts and statuses exactly; values to rounding (XLA compiles a 256-lane program
    # apart from a 1,003-lane one and need not round alike in both; the gradient norm at
    # the optimum is rounding itself, hence the absolute tolerance).
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(chunked)):
        a, b = np.asarray(a), np.asarray(b)
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        else:
            np.testing.assert_array_equal(a, b)


def test_chunk_size_validation():
    import pytest
    with pytest.raises(ValueError, match="chunk_size"):
        jm.fit_batch(normal_model(), jax.numpy.ones((4, 3)) + jax.numpy.arange(3.0), chunk_size=0)
