"""benchmarks/gpu.py --small runs on the CPU and writes the JSON it promises.

Timings are not checked (benchmarks are never timed assertions); the run must finish,
report every (problem, dtype) row with the expected fields, and converge on > 90% of fits
with standard errors that match the estimates' scatter about the truth.

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
DTYPES = ["float32", "float64"]
ROW_KEYS = {
    "problem", "dtype", "B", "chunk_size", "compile_cached", "gen_s", "first_s", "second_s", "steady_s",
    "call_s", "fits_per_s", "converged_frac", "status_counts", "n_iter_median", "n_iter_max",
    "median_rel_err", "max_median_rel_err", "median_abs_z", "median_abs_z_all", "se_finite_frac", "peak_bytes", "memory_source",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_bench") / "gpu_cpu_small.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    # One CPU device, as on a plain machine (conftest's compile-time options kept).
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--out", str(out), "--problems", ",".join(PROBLEMS),
         "--dtypes", ",".join(DTYPES)],
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
    assert row["converged_frac"] > 0.9, row["status_counts"]
    assert row["se_finite_frac"] > 0.99
    assert row["first_s"] > 0 and 0 < row["steady_s"] <= row["second_s"] and row["fits_per_s"] > 0
    assert len(row["call_s"]) == 3
    assert row["peak_bytes"] > 0
    # Estimates are near the truth and the standard errors are about right:
    # median |error| / stderr is 0.674 for a standard normal.
    assert 0.5 < row["median_abs_z_all"] < 0.85
    assert row["max_median_rel_err"] < 1.0
