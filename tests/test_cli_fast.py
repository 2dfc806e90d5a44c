"""The command line starts at once: ``import jaxmle`` and the parser import no JAX.

``jaxmle --version`` took 2.5 s when the package imported JAX and every module up
front; the namespace is lazy now (PEP 562) and the CLI imports JAX inside its commands.
No timings are asserted here: what is checked is that JAX is never imported.
"""

import json
import subprocess
import sys

import pytest

import jaxmle as jm

# Runs in a fresh interpreter: builds the parser, answers --version and every --help,
# then checks what got imported, and finally prints the registry's general methods.
_PROBE = r"""
import contextlib, io, json, sys
import jaxmle, jaxmle.cli as cli
cli.build_parser()
outputs = {}
for argv in (["--version"], ["--help"], ["fit", "--help"], ["demo", "--help"], ["bench", "--help"]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            cli.main(argv)
        except SystemExit as e:
            assert e.code == 0, (argv, e.code)
    outputs[" ".join(argv)] = buf.getvalue()
# Bad input to ``jaxmle fit`` is answered before JAX is imported.
errors = {}
for argv in (["fit", "normal", "missing.csv", "--column", "ms"], ["fit", "gauss", "missing.csv", "--column", "ms"]):
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        errors[" ".join(argv)] = [cli.main(argv), buf.getvalue()]
loaded = sorted(m for m in sys.modules if m == "jax" or m.startswith(("jax.", "jaxlib")))
ours = sorted(m for m in sys.modules if m.startswith("jaxmle.") and m != "jaxmle.cli")
import jaxmle.optimizers
print(json.dumps({"jax": loaded, "ours": ours, "outputs": outputs, "errors": errors,
                  "general_methods": jaxmle.optimizers.general_methods()}))
"""


@pytest.fixture(scope="module")
def probe():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_version_and_help_import_no_jax(probe):
    assert probe["jax"] == [], "the parser, --version or --help imported JAX"
    assert probe["ours"] == [], "the parser imported jaxmle modules besides the CLI"
    assert probe["outputs"]["--version"].strip() == f"jaxmle {jm.__version__}"
    assert "fit" in probe["outputs"]["--help"] and "demo" in probe["outputs"]["--help"]
    assert "--column" in probe["outputs"]["fit --help"]
    assert "lbfgs" in probe["outputs"]["demo --help"]       # the method choices are listed


def test_fit_input_errors_import_no_jax(probe):
    (code, err), (code2, err2) = probe["errors"].values()
    assert code == code2 == 2
    assert "cannot read missing.csv" in err and "unknown distribution 'gauss'" in err2


def test_static_distribution_list_matches_the_registry():
    from jaxmle import cli, distributions

    assert sorted(cli.DISTRIBUTION_NAMES) == sorted(distributions.DISTRIBUTIONS)


def test_static_method_list_matches_the_registry(probe):
    from jaxmle import cli

    # In a fresh process (this one may have registered test methods).
    assert list(cli.GENERAL_METHODS) == probe["general_methods"]


def test_console_entry_point_version():
    out = subprocess.run([sys.executable, "-m", "jaxmle.cli", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"jaxmle {jm.__version__}"


def test_version_is_the_installed_distributions():
    # __version__ is a literal (no import at startup); it must follow pyproject.toml.
    from importlib.metadata import version

    assert jm.__version__ == version("jaxmle")


def test_lazy_namespace_exports_every_name():
    import importlib

    for name in jm.__all__:
        assert getattr(jm, name) is not None, name
        assert name in dir(jm)
    from jaxmle import Status, fit, status_message  # noqa: F401

    assert fit is importlib.import_module("jaxmle._fit").fit
    assert status_message is importlib.import_module("jaxmle._status").message
    assert jm.models.logistic is importlib.import_module("jaxmle.models").logistic
    assert jm.Status.CONVERGED == 0 and jm.optimizers.general_methods()
    assert jm._solve.DENSE_HESSIAN_MAX_PARAMS > 0      # private submodules still resolve
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        jm.not_a_name


def test_fit_json_carries_status_names(tmp_path, capsys):
    from jaxmle import cli

    csv = tmp_path / "times.csv"
    csv.write_text("ms\n240\n255\n261\n248\n271\n")
    rc = cli.main(["fit", "normal", str(csv), "--column", "ms", "--json"])
    js = json.loads(capsys.readouterr().out)
    assert rc == 0 and js["status"] == "CONVERGED"
    assert js["params"]["mu"] == pytest.approx(255.0)
