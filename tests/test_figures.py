"""README's benchmark figures: the result files it quotes exist, name their commit, and
a result older than a change to the code it measures is reported (benchmarks/check_figures.py)."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import check_figures  # noqa: E402


def test_readme_results_exist_and_name_their_commit():
    report = check_figures.check()
    print(report.text())
    assert report.entries, "README quotes no benchmarks/results/*.json: the scan is broken"
    assert not report.errors, "\n".join(report.errors)
    # Not errors today, but never silent: stale figures and files awaiting regeneration
    # show in pytest's warning summary (python benchmarks/check_figures.py --strict fails on them).
    for line in report.loud + report.warnings:
        warnings.warn(line, UserWarning)


def _write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_missing_and_unstamped_results_are_errors_without_git(tmp_path):
    _write(tmp_path, "README.md", "See `benchmarks/results/nope.json`, `coverage.json`, `scaling.json` "
                                  "and `--out gpu.json` (a command, not a result).\n")
    _write(tmp_path, "benchmarks/results/coverage.json", json.dumps({"rows": []}))
    _write(tmp_path, "benchmarks/results/scaling.json",
           json.dumps({"machine": {"provenance": {"git_commit": "0" * 40, "jax": "0.4"}}}))
    report = check_figures.check(repo=str(tmp_path), to_regenerate={})
    assert [e.name for e in report.entries] == ["nope.json", "coverage.json", "scaling.json"]
    assert any("nope.json" in e and "does not exist" in e for e in report.errors)
    assert any("coverage.json: carries no commit" in e for e in report.errors)
    scaling = report.entries[2]
    assert scaling.commit == "0" * 40 and scaling.changes is None      # no git here: not checked, no error
    assert not any("scaling" in e for e in report.errors)
    # An explicit, commented allow-list turns "no commit" into a loud notice ...
    listed = check_figures.check(repo=str(tmp_path), to_regenerate={"coverage.json": "old run"})
    assert not any("coverage" in e for e in listed.errors)
    assert any("coverage.json: TO BE REGENERATED (old run)" in line for line in listed.loud)
    assert "!!!" in listed.text()
    # ... and the list cannot rot: a listed file that gained a commit, or that README no longer quotes, is an error.
    rotten = check_figures.check(repo=str(tmp_path), to_regenerate={"scaling.json": "x", "first_call.json": "y"})
    assert any("remove it from TO_REGENERATE" in e for e in rotten.errors)
    assert any("first_call.json, which README does not quote" in e for e in rotten.errors)


def test_every_allow_listed_and_quoted_result_has_a_script():
    for name in check_figures.TO_REGENERATE:
        assert check_figures._script_for(name) is not None, name
    for f in (ROOT / "benchmarks" / "results").glob("*.json"):
        assert check_figures._script_for(f.name) is not None, f"{f.name}: add it to SCRIPTS"
    for _, script, paths in check_figures.SCRIPTS:
        for s in script.split(" + "):
            assert (ROOT / "benchmarks" / s).is_file(), s
        for p in paths:
            assert (ROOT / p).exists(), p


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_result_older_than_its_code_is_stale(tmp_path):
    def git(*args):
        cfg = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
        return subprocess.run(["git", "-C", str(tmp_path), *cfg, *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    _write(tmp_path, "README.md", "Table from `small_solves.json` and `benchmarks/results/stragglers.json`.\n")
    _write(tmp_path, "jaxmle/_linalg.py", "x = 1\n")
    _write(tmp_path, "jaxmle/_fit.py", "y = 1\n")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    first = git("rev-parse", "HEAD")
    for name in ("small_solves.json", "stragglers.json"):
        _write(tmp_path, f"benchmarks/results/{name}",
               json.dumps({"machine": {"provenance": {"git_commit": first, "jax": "0.4", "git_dirty": False}}}))
    _write(tmp_path, "jaxmle/_fit.py", "y = 2\n")                # the engine changes; _linalg does not
    git("add", "-A")
    git("commit", "-q", "-m", "engine change")
    report = check_figures.check(repo=str(tmp_path), to_regenerate={})
    by = {e.name: e for e in report.entries}
    assert by["small_solves.json"].changes == []                 # measures _linalg only: current
    assert len(by["stragglers.json"].changes) == 1 and "engine change" in by["stragglers.json"].changes[0]
    assert not report.errors and any("stragglers.json (stragglers.py) may be stale" in w for w in report.warnings)
    strict = check_figures.check(repo=str(tmp_path), strict=True, to_regenerate={})
    assert any("stragglers.json" in e for e in strict.errors) and not any("small_solves" in e for e in strict.errors)
    # A commit this clone lacks (a shallow CI checkout) is "not checked", not an error.
    _write(tmp_path, "benchmarks/results/small_solves.json",
           json.dumps({"machine": {"provenance": {"git_commit": "f" * 40, "jax": "0.4"}}}))
    shallow = check_figures.check(repo=str(tmp_path), strict=True, to_regenerate={})
    entry = next(e for e in shallow.entries if e.name == "small_solves.json")
    assert entry.changes is None and "not in this clone's history" in entry.note
    assert not any("small_solves" in e for e in shallow.errors)
