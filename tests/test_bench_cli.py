"""Optimizer benchmarking (jm.bench) and the jaxmle command line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jax

import jaxmle as jm


def test_compare_rows_and_reference():
    prob = jm.bench.problems.get("normal")
    table = jm.bench.compare(prob.model, prob.data, repeats=1, reference=prob.reference)
    assert [r["method"] for r in table.rows] == jm.optimizers.general_methods()
    for row in table.rows:
        assert row["converged"] == 1.0
        assert row["iters (median)"] >= 1 and row["run s"] > 0 and row["fits/s"] > 0
        assert row["grad evals"] >= row["iters (median)"]
        assert row["loglik gap"] < 1e-6     # every method reaches the closed-form optimum
    newton = table.rows[0]
    # One (f, gradient, Hessian) pass per step, plus one per step that backtracked;
    # shortened trial steps cost objective evaluations only.
    assert newton["hess evals"] >= newton["iters (median)"] + 1
    assert newton["f evals"] >= newton["grad evals"] == newton["hess evals"]
    md = table.to_markdown()
    assert md.count("\n") == len(table.rows) + 1 and "| newton |" in md
    assert json.loads(table.to_json())["rows"][0]["method"] == "newton"
    assert "newton" in str(table)


@pytest.mark.parametrize("name", ["poisson_glm", "banana"])
def test_second_order_methods_reach_reference(name):
    prob = jm.bench.problems.get(name)
    table = jm.bench.compare(prob.model, prob.data, methods=("newton", "bfgs", "lbfgs"), repeats=1,
                             init=prob.init, reference=prob.reference)
    for row in table.rows:
        assert row["converged"] == 1.0 and row["loglik gap"] < 1e-8


def _slow(*names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in names else n for n in jm.bench.problems.PROBLEMS]


@pytest.mark.parametrize("name", _slow("logistic_1000"))
def test_stored_reference_is_independent(name):
    # Each stored optimum is recomputed by its independent recipe (closed form, or
    # statsmodels / scikit-learn + scipy at tight tolerance; benchmarks/bench_references.py).
    pytest.importorskip("statsmodels")
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_references

    stored, stored_kind = jm.bench.problems.REFERENCES[name]
    ll, kind = bench_references.compute(name)
    assert kind == stored_kind and "jaxmle" not in kind.lower()
    assert abs(ll - stored) <= bench_references.RTOL * abs(stored), (ll, stored)


# cox: its first compile takes ~20 s on a 2-core CPU (tests/test_models.py checks the
# model against statsmodels PHReg); logistic_1000: a 1,000-parameter Newton fit.
@pytest.mark.parametrize("name", _slow("cox", "logistic_1000"))
def test_newton_reaches_the_stored_reference(name):
    prob = jm.bench.problems.get(name)
    stored = jm.bench.problems.REFERENCES[name][0]
    assert prob.reference == stored
    res = jm.fit(prob.model, prob.data, method="newton", init=prob.init, warn=False)
    assert res.converged and res.n_iter > 0
    assert abs(float(res.logpost) - stored) <= 1e-13 * abs(stored), (float(res.logpost), stored)


def test_compare_gap_is_signed_against_the_reference_and_warns_when_beaten():
    prob = jm.bench.problems.get("normal")
    table = jm.bench.compare(prob.model, prob.data, methods=("newton",), repeats=1, reference=prob.reference)
    assert abs(table.rows[0]["loglik gap"]) < 1e-10
    with pytest.warns(RuntimeWarning, match="exceeds the reference"):
        low = jm.bench.compare(prob.model, prob.data, methods=("newton",), repeats=1, reference=prob.reference - 1.0)
    assert low.rows[0]["loglik gap"] == pytest.approx(-1.0, abs=1e-9)


def test_big_data_digits_are_against_the_reference_not_the_best_contender():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import big_data

    ref = {"loglik": -100.0, "beta": [1.0, -2.0], "se": [0.1, 0.2], "status": "CONVERGED"}
    rows = [{"method": "newton", "loglik": -100.0 + 1e-9, "beta": [1.0 + 1e-7, -2.0], "se": [0.1, 0.2],
             "fit_s": 1.0},
            {"method": "adam", "loglik": -100.5, "beta": [0.9, -2.0], "se": [0.1, 0.22], "fit_s": 2.0}]
    big_data.compare(rows, ref)
    # The best contender gets the digits it has against the reference (11), not 16.
    assert rows[0]["ll_digits"] == pytest.approx(11.0) and rows[0]["est_digits"] == pytest.approx(7 + np.log10(2))
    assert rows[1]["est_digits"] < 2 and rows[1]["mle_s"] is None and rows[1]["se_rel"] == pytest.approx(0.1)
    rows = [{"method": "newton", "loglik": -100.0, "beta": [1.0, -2.0], "se": None, "fit_s": 1.0}]
    big_data.compare(rows, None)
    assert "ll_digits" not in rows[0] and rows[0]["mle_s"] is None     # no reference: no digits


def test_batched_compare_reports_fits_per_second():
    import jax
    prob = jm.bench.problems.get("normal")
    xs = jax.numpy.stack([prob.data, prob.data + 1.0, prob.data * 2.0])
    table = jm.bench.compare(prob.model, xs, methods=("newton", "lbfgs"), batch=True, repeats=1)
    assert all(r["converged"] == 1.0 for r in table.rows)
    assert all(r["fits/s"] > 0 for r in table.rows)


def test_traces_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    prob = jm.bench.problems.get("normal")
    tr = jm.bench.traces(prob.model, prob.data, methods=("newton", "gd"), length=50)
    assert tr["newton"]["logpost"].shape == (tr["newton"]["n_iter"] + 1,)
    assert np.all(np.diff(tr["newton"]["logpost"]) >= -1e-9)      # Newton with line search ascends
    np.testing.assert_allclose(tr["newton"]["logpost"][-1], prob.reference, rtol=1e-12)
    path = jm.bench.plot(tr, str(tmp_path / "conv.png"), best=prob.reference)
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "jaxmle.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_fit_reaction_times(tmp_path):
    csv = tmp_path / "times.csv"
    csv.write_text("subject,ms\n1,240\n2,255\n3,261\n4,248\n5,271\n")
    out = _cli("fit", "normal", str(csv), "--column", "ms")
    assert out.returncode == 0, out.stderr
    assert "255" in out.stdout and "CONVERGED" in out.stdout
    js = json.loads(_cli("fit", "poisson", str(csv), "--column", "subject", "--json").stdout)
    assert js["params"]["rate"] == pytest.approx(3.0) and js["n_obs"] == 5


@pytest.mark.parametrize("args,message", [
    (("fit", "normal", "missing.csv", "--column", "ms"), "cannot read"),
    (("fit", "normal", "{csv}", "--column", "nope"), "no column 'nope'"),
    (("fit", "normal", "{bad}", "--column", "ms"), "is not a number"),
    (("fit", "gauss", "{csv}", "--column", "ms"), "unknown distribution"),
    (("fit", "poisson", "{neg}", "--column", "ms"), "non-negative integers"),
    (("bench", "--problem", "nope"), "unknown problem"),
    (("bench", "--problem", "normal", "--methods", "foo"), "unknown method"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, message):
    files = {"csv": tmp_path / "a.csv", "bad": tmp_path / "b.csv", "neg": tmp_path / "c.csv"}
    files["csv"].write_text("ms\n1\n2\n")
    files["bad"].write_text("ms\n1\nabc\n")
    files["neg"].write_text("ms\n1\n-2\n")
    out = _cli(*[a.format(**files) for a in args])
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_cli_version_help_and_small_bench(tmp_path):
    assert jm.__version__ in _cli("--version").stdout
    assert "bench" in _cli("--help").stdout
    js = tmp_path / "b.json"
    out = _cli("bench", "--problem", "normal", "--methods", "newton", "lbfgs", "--repeats", "1", "--json", str(js))
    assert out.returncode == 0, out.stderr
    written = json.loads(js.read_text())
    assert "newton" in out.stdout and written["tables"][0]["rows"][1]["method"] == "lbfgs"
    assert written["provenance"]["jax"] == jax.__version__ and written["provenance"]["jaxmle"]


def test_cli_demo_small():
    out = _cli("demo", "--stars", "200", "--compare", "5")
    assert out.returncode == 0, out.stderr
    assert "fits/s" in out.stdout and "CONVERGED" in out.stdout and "faster" in out.stdout


# -- jaxmle fit: missing cells, delimiters, profile intervals (in-process: faster) ----

def _main(capsys, *args):
    from jaxmle import cli
    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_blank_cells_are_missing_values(tmp_path, capsys):
    csv = tmp_path / "b.csv"
    csv.write_text("u,h\n1,100\n2,\n3,250\n4,NA\n5,180\n")
    rc, _, err = _main(capsys, "fit", "weibull", str(csv), "--column", "h")
    assert rc == 2 and "line 3, column 'h': blank cell" in err and "--dropna" in err
    csv.write_text("u,h\n1,100\n2,NA\n3,250\n")
    rc, _, err = _main(capsys, "fit", "weibull", str(csv), "--column", "h")
    assert rc == 2 and "line 3" in err and "'NA'" in err
    csv.write_text("u,h\n1,100\n2,\n3,250\n4,NA\n5,180\n")
    rc, out, err = _main(capsys, "fit", "weibull", str(csv), "--column", "h", "--dropna", "--json")
    assert rc == 0 and "dropped 2 rows" in err and "lines 3, 5" in err
    js = json.loads(out)
    assert js["n_obs"] == 3 and js["dropped_rows"] == 2


def test_cli_semicolon_file_and_profile_intervals(tmp_path, capsys):
    # Two observations: the Wald interval of the Weibull shape goes negative, the
    # profile interval stays positive. A semicolon file with decimal commas is read
    # like the comma file.
    comma, semi = tmp_path / "c.csv", tmp_path / "s.csv"
    comma.write_text("unit,hours\n1,100.5\n2,250\n")
    semi.write_text("unit;hours\n1;100,5\n2;250\n")
    rc, out, _ = _main(capsys, "fit", "weibull", str(comma), "--column", "hours", "--json")
    wald = json.loads(out)
    assert rc == 0 and wald["ci_method"] == "wald" and wald["conf_int"]["shape"][0] < 0
    rc, out, _ = _main(capsys, "fit", "weibull", str(semi), "--column", "hours", "--json", "--ci", "profile")
    prof = json.loads(out)
    assert rc == 0 and prof["ci_method"] == "profile"
    assert prof["params"]["shape"] == pytest.approx(wald["params"]["shape"], rel=1e-9)
    lo, hi = prof["conf_int"]["shape"]
    assert 0 < lo < prof["params"]["shape"] < hi
    rc, out, _ = _main(capsys, "fit", "weibull", str(semi), "--column", "hours", "--ci", "profile")
    assert rc == 0 and "profile-likelihood 0.95 intervals" in out and f"{lo:.5g}" in out
    tab = tmp_path / "t.tsv"
    tab.write_text("unit\thours\n1\t100.5\n2\t250\n")
    rc, out, _ = _main(capsys, "fit", "weibull", str(tab), "--column", "hours", "--json")
    assert rc == 0 and json.loads(out)["params"]["shape"] == pytest.approx(wald["params"]["shape"], rel=1e-9)


def test_cli_bench_default_is_the_quick_suite_and_long_runs_are_announced(monkeypatch, capsys):
    # `jaxmle bench` used to run every problem (14 minutes) without a word. The
    # problems and fits are stubbed here: this checks which problems run and the estimate.
    from jaxmle import _bench_problems, bench
    built = []

    def fake_get(name):
        built.append(name)
        return _bench_problems.Problem(name, "stub", None, np.zeros(1), None, 0.0, "stub")

    monkeypatch.setattr(_bench_problems, "get", fake_get)
    monkeypatch.setattr(bench, "compare", lambda *a, **k: bench.BenchTable([{"method": "newton"}]))
    rc, out, _ = _main(capsys, "bench")
    assert rc == 0 and built == list(_bench_problems.QUICK) == ["normal", "logistic_illcond", "banana"]
    quick = _bench_problems.estimate_seconds(_bench_problems.QUICK, jm.optimizers.general_methods())
    assert quick <= 75 and "estimated ~" in out and "--problem quick" not in out
    built.clear()
    rc, out, _ = _main(capsys, "bench", "--problem", "all")
    assert rc == 0 and built == list(_bench_problems.PROBLEMS)
    assert "7 problems x 5 methods: estimated ~" in out and "minutes" in out and "--problem quick" in out
    assert out.index("estimated") < out.index("stub")      # announced before the first problem runs
