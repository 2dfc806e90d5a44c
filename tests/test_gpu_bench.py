"""benchmarks/gpu.py --small runs on the CPU and writes the JSON it promises.

Timings are not checked (benchmarks are never timed assertions); the run must finish,
report every (problem, dtype) row with the expected fields, and converge on > 98% of fits
with standard errors that match the estimates' scatter about the truth (each parameter's
median |error| / stderr within 4 sampling sd of 0.674) and errors about the truth per
parameter within 1.5x of their measured size.

Two of the four problems keep this under a minute on a 2-core CPU (compilation dominates):
the star catalogue and the Poisson 2-D Gaussian (a custom model with ``prepare`` and
positivity constraints). Logistic (``jm.models.logistic``) and the least-squares 2-D
Gaussian (``jm.Fixed`` sigma) run in the full ``--small`` table.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.py"
PROBLEMS = ["star", "gauss2d_poisson"]
# float32 only: what a GPU runs; float64 is every other test file's dtype (halves this 50 s check).
DTYPES = ["float32"]
# median |est - truth| / median |truth| per parameter at --small (B = 1000, seed 0), measured
# on the CPU: the larger of float32 and float64.
MEDIAN_REL_ERR = {
    "star": {"a": 0.0162, "b": 0.2235, "c": 0.2336},
    "gauss2d_poisson": {"amplitude": 0.0197, "x0": 0.0070, "y0": 0.0073, "width": 0.0139, "offset": 0.2029},
}
ROW_KEYS = {
    "problem", "dtype", "B", "chunk_size", "compile_cached", "gen_s", "first_s", "second_s", "steady_s",
    "call_s", "fits_per_s", "converged_frac", "status_counts", "n_iter_median", "n_iter_max",
    "median_rel_err", "max_median_rel_err", "median_abs_z", "median_abs_z_all", "se_finite_frac", "peak_bytes", "memory_source",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_bench") / "gpu_cpu_small.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    # One CPU device, as on a plain machine.
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--out", str(out), "--problems", ",".join(PROBLEMS),
         "--dtypes", ",".join(DTYPES), "--calls", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| problem | dtype |" in proc.stdout          # the markdown table
    return json.loads(out.read_text())


def test_report_header(report):
    assert report["errors"] == []
    machine = report["machine"]
    for key in ("device_kind", "platform_name", "jax", "device_count"):
        assert key in machine
    assert machine["platform_name"] == "cpu"
    assert report["sizes"] == {p: [1000] for p in PROBLEMS}
    assert "Gpufit" in report["notes"]["gpufit_published"]


def test_every_problem_and_dtype_has_a_row(report):
    got = sorted((r["problem"], r["dtype"]) for r in report["rows"])
    assert got == sorted((p, d) for p in PROBLEMS for d in DTYPES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("problem", PROBLEMS)
def test_row(report, problem, dtype):
    (row,) = [r for r in report["rows"] if r["problem"] == problem and r["dtype"] == dtype]
    assert ROW_KEYS <= set(row)
    assert row["B"] == 1000 and not row.get("skipped")
    # Measured at --small: 100% (star), 99.6-100% (gauss2d_poisson; README's GPU table 98.7-99.7%).
    assert row["converged_frac"] > 0.98, row["status_counts"]
    assert row["se_finite_frac"] > 0.99
    assert row["first_s"] > 0 and 0 < row["steady_s"] <= row["second_s"] and row["fits_per_s"] > 0
    assert len(row["call_s"]) == 2
    assert row["peak_bytes"] > 0
    # The standard errors match the estimates' scatter about the truth, parameter by
    # parameter: median |error| / stderr is 0.674 for a standard normal, and over 1000 fits
    # its sampling sd is 1 / (2 * 2 phi(0.674) * sqrt(1000)) = 0.025; the band is +-4 sd.
    # (Measured at --small on the CPU: 0.62 to 0.72.)
    for name, z in row["median_abs_z"].items():
        assert 0.574 < z < 0.774, (name, z)
    assert 0.574 < row["median_abs_z_all"] < 0.774
    # The estimates' error about the truth, median |est - truth| / median |truth|, per
    # parameter, within 1.5x of what this seed gives (measured, float32 and float64 within
    # 10% of each other; the sampling sd of each is ~4%): a bias or a lost digit in any one
    # parameter shows, where the old bound (max < 1.0) let a 40x error in `a` pass.
    for name, rel in row["median_rel_err"].items():
        assert rel < 1.5 * MEDIAN_REL_ERR[problem][name], (name, rel)


def test_float32_gauss2d_converges_and_matches_scipy():
    """README ("Read with care", under the GPU table): the float32 2-D Gaussian of gpu.py
    converges on every fit since the positive-definiteness test became scale-free. Same
    problem (gpu.py's own model and data, B = 1000 as in --small), float32 data with 64-bit
    mode on, so nothing but the data's dtype selects float32."""
    import importlib.util
    import types

    import jax
    import jax.numpy as jnp
    import numpy as np
    from scipy.optimize import least_squares

    import jaxmle as jm

    assert jax.config.jax_enable_x64
    spec = importlib.util.spec_from_file_location("_gpu_bench", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    model, generate, names = gpu._problem("gauss2d", types.SimpleNamespace(gauss_init="nominal"), jax, jnp, np, jm)
    data, truth, _ = generate(jax.random.key(0), 1000, jnp.float32)
    # The first 10 datasets without noise: there the least-squares optimum is the truth itself.
    iy, ix = np.meshgrid(np.arange(gpu.GAUSS_SIZE), np.arange(gpu.GAUSS_SIZE), indexing="ij")
    gx, gy = ix.ravel().astype(float), iy.ravel().astype(float)

    def peak(q):
        a, x0, y0, w, off = q
        return a * np.exp(-0.5 * ((gx - x0) ** 2 + (gy - y0) ** 2) / w ** 2) + off

    z = np.array(data["z"])
    true = np.stack([np.asarray(truth[n], np.float64) for n in names], axis=1)
    for i in range(10):
        z[i] = peak(true[i])
    assert z.dtype == np.float32
    batch = jm.fit_batch(model, {"z": jnp.asarray(z)})
    assert batch.status_counts() == {"CONVERGED": 1000}
    est = np.stack([np.asarray(batch.params[n]) for n in names], axis=1)
    assert est.dtype == np.float32 and batch[0].z.dtype == jnp.float32   # the float32 path ran
    # Noise-free: the closed form (the truth) to float32 accuracy.
    # Measured: amplitude, x0, y0, width within 1.6e-6 relative; the offset (a constant under
    # a peak of ~550) within 3.4e-4, i.e. ~6 float32 ulps of the pixel values it sits in.
    np.testing.assert_allclose(est[:10, :4], true[:10, :4], rtol=5e-6)
    assert np.abs(est[:10, 4] - true[:10, 4]).max() < 16 * np.spacing(np.float32(600.0))
    # Noisy: scipy's MINPACK least squares in float64 on the same (float32) data, 50 of them.
    fits = [least_squares(lambda q, zz=z[i].astype(np.float64): zz - peak(q), [500, 2, 2, 1, 10],
                          method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15) for i in range(10, 60)]
    ref = np.stack([f.x for f in fits])
    se = np.stack([np.sqrt(np.diag(np.linalg.inv(f.jac.T @ f.jac))) * gpu.GAUSS_NOISE_SD for f in fits])
    dev = np.abs(est[10:60] - ref) / se
    # Measured: at most 8.6e-5 standard errors (the offset) from scipy's optimum; the
    # standard error from scipy's Jacobian, sigma^2 (J'J)^-1 with gpu.py's known sigma.
    assert dev.max() < 3e-4
