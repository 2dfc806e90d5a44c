"""Check that the benchmark results README quotes exist, say where they came from, and are
not older than the code they measure.

For every ``benchmarks/results/*.json`` that README.md names (as a path, or as a bare
backticked file name), this reports:

* whether the file exists (a missing file is an error);
* its provenance: the commit that produced it and the jax version (written by
  ``benchmarks/_common.provenance()``, or a top-level ``"commit"`` /
  ``"measures_commit"`` for a hand-assembled file). A file without a commit is an
  error unless it is listed in ``TO_REGENERATE`` below, which is printed loudly;
* staleness: the commits since the file's commit that changed the jaxmle modules its
  benchmark exercises (``SCRIPTS`` maps each result file to its script and those
  paths; ``git log <commit>..HEAD -- <paths>``), and uncommitted changes to those
  modules recorded in its provenance (``git_dirty_files``). A file with a
  ``"measures_commit"`` key is pinned to that commit on purpose (a baseline) and is not
  checked for staleness.

Staleness is printed as a warning (the suite's test shows it in pytest's warning
summary) and is an error with ``--strict``, the switch to use before a release or
after regenerating figures. Without git, or without the history back to a file's
commit (a shallow clone), staleness is reported as "not checked", never as an error.

    python benchmarks/check_figures.py            # exit 1 on missing / unprovenanced files
    python benchmarks/check_figures.py --strict   # ... and on stale ones
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = "benchmarks/results"

# The fitting engine: every benchmark's numbers (timings, iterations, estimates) move
# when one of these changes.
ENGINE = ["jaxmle/_fit.py", "jaxmle/_solve.py", "jaxmle/_batch.py", "jaxmle/_compile.py", "jaxmle/_model.py",
          "jaxmle/_params.py", "jaxmle/_constraints.py", "jaxmle/_data.py", "jaxmle/_linalg.py",
          "jaxmle/_stats.py", "jaxmle/_status.py", "jaxmle/_result.py", "jaxmle/optimizers"]
STREAM = ["jaxmle/_stream.py", "jaxmle/_stream_solve.py", "jaxmle/_chunks.py", "jaxmle/_stochastic.py"]
DEMO = ["jaxmle/_demo.py"]
REGRESSION = ["jaxmle/models/regression.py"]
INFERENCE = ["jaxmle/_postfit.py", "jaxmle/_profile.py", "jaxmle/inference.py"]

# (result-file name pattern, the script that writes it, the code whose changes make it stale).
# The first matching pattern wins. A result file README quotes must match one.
SCRIPTS: list[tuple[str, str, list[str]]] = [
    (r"against_.*", "against_commit.py", ENGINE + DEMO + REGRESSION),
    (r"newton_trust_region_vs_.*", "batch_logistic.py + star_counts.py", ENGINE + DEMO + REGRESSION),
    (r"batch_logistic.*", "batch_logistic.py", ENGINE + REGRESSION),
    (r"batch_profile.*", "batch_profile.py", ENGINE + INFERENCE),
    (r"big_data.*", "big_data.py", ENGINE + STREAM + REGRESSION),
    (r"chunk_memory.*", "chunk_memory.py", ENGINE + DEMO),
    (r"compile_options.*", "compile_options.py", ENGINE + DEMO),
    (r"tiers.*", "tiers.py", ENGINE + DEMO),
    (r"coverage.*", "coverage.py", ENGINE + INFERENCE),
    (r"first_call.*", "first_call.py", ENGINE),
    (r"gpu.*", "gpu.py", ENGINE + DEMO + REGRESSION),
    (r"hmm_batch.*", "hmm_batch.py", ENGINE + ["jaxmle/models/hmm.py"]),
    (r"minibatch.*", "minibatch.py", ENGINE + STREAM + REGRESSION),
    (r"bench_optimizers.*", "bench_optimizers.py", ENGINE + ["jaxmle/bench.py", "jaxmle/_bench_problems.py"]),
    (r"latency.*", "latency.py", ENGINE + INFERENCE + ["jaxmle/distributions.py", "jaxmle/_summary.py"]),
    (r"robustness.*", "robustness.py", ENGINE + ["jaxmle/models/nonlinear.py", "jaxmle/distributions.py",
                                                 "jaxmle/_predict.py", "benchmarks/_robust_problems.py"]),
    (r"scaling.*", "scaling.py", ENGINE + DEMO + REGRESSION),
    (r"small_solves.*", "small_solves.py", ["jaxmle/_linalg.py"]),
    (r"star_counts.*", "star_counts.py", ENGINE + DEMO),
    (r"stragglers.*", "stragglers.py", ENGINE),
]

# Result files README quotes that carry no commit yet. Each is printed loudly on every
# run; take a file off this list when it is regenerated (a listed file that has gained
# a commit is an error, so the list cannot rot). Add nothing here without a reason.
TO_REGENERATE: dict[str, str] = {
    # Empty: every result README quotes says which commit it measures. A file measured
    # before provenance stamps would be listed here, with the script that regenerates it.
}

_PATH_REF = re.compile(r"benchmarks/results/([\w.+-]+\.json)")
_BARE_REF = re.compile(r"`([\w.+-]+\.json)`")


@dataclasses.dataclass
class Entry:
    name: str                       # file name under benchmarks/results
    script: str | None = None
    paths: list[str] = dataclasses.field(default_factory=list)
    exists: bool = False
    commit: str | None = None
    jax: str | None = None
    pinned: bool = False            # "measures_commit": a baseline on purpose
    dirty: list[str] = dataclasses.field(default_factory=list)
    changes: list[str] | None = None    # commits since, touching paths; None: not checked
    note: str = ""


@dataclasses.dataclass
class Report:
    entries: list[Entry]
    errors: list[str]
    warnings: list[str]
    loud: list[str]

    def text(self) -> str:
        out = []
        for e in self.entries:
            prov = (f"commit {e.commit[:9]}" + (f", jax {e.jax}" if e.jax else ", no jax version")
                    if e.commit else "NO COMMIT")
            if not e.exists:
                state = "MISSING"
            elif not e.commit:
                state = "TO REGENERATE" if e.note == "listed in TO_REGENERATE" else "ERROR: no commit"
            elif e.pinned:
                state = "pinned (measures_commit)"
            elif e.changes is None:
                state = f"staleness not checked ({e.note})" if e.note else "staleness not checked"
            elif e.changes or e.dirty:
                state = f"STALE: {len(e.changes)} later commit(s)" + (", dirty tree" if e.dirty else "")
            else:
                state = "current"
            out.append(f"{e.name:36s} {e.script or '?':24s} {prov:40s} {state}")
        if self.loud:
            bar = "!" * 78
            out += ["", bar, "!!! Result files README quotes that do not say which commit they measure", bar]
            out += [f"!!! {line}" for line in self.loud] + [bar]
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"ERROR: {e}" for e in self.errors]
        return "\n".join(out)


def _git(*args: str, repo: str = REPO) -> str | None:
    try:
        out = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def has_history(repo: str = REPO) -> bool:
    """Whether git works here and this is a repository with at least one commit."""
    return _git("rev-parse", "--verify", "HEAD", repo=repo) is not None


def changes_since(commit: str, paths: list[str], repo: str = REPO) -> list[str] | None:
    """Commits after ``commit`` up to HEAD touching ``paths`` ("<hash> <subject>"), or
    None when git or the commit is unavailable (no repository, a shallow clone)."""
    if _git("cat-file", "-e", f"{commit}^{{commit}}", repo=repo) is None:
        return None
    log = _git("log", "--format=%h %s", f"{commit}..HEAD", "--", *paths, repo=repo)
    if log is None:
        return None
    return [line for line in log.splitlines() if line.strip()]


def referenced(readme_text: str) -> list[str]:
    """Result file names the text quotes: ``benchmarks/results/X.json`` anywhere, or a
    bare backticked ``X.json`` whose name matches a benchmark in ``SCRIPTS``."""
    names = _PATH_REF.findall(readme_text)
    for bare in _BARE_REF.findall(readme_text):
        if _script_for(bare) is not None:
            names.append(bare)
    return list(dict.fromkeys(names))


def _script_for(name: str):
    for pattern, script, paths in SCRIPTS:
        if re.fullmatch(pattern, name[:-len(".json")] if name.endswith(".json") else name):
            return script, paths
    return None


def _provenance(payload) -> tuple[str | None, str | None, bool, list[str]]:
    """(commit, jax version, pinned, dirty files) from a result file's contents."""
    if not isinstance(payload, dict):
        return None, None, False, []
    machine = payload.get("machine") if isinstance(payload.get("machine"), dict) else {}
    prov = payload.get("provenance") or machine.get("provenance") or {}
    commit = payload.get("measures_commit") or prov.get("git_commit") or payload.get("commit")
    jax = prov.get("jax") or machine.get("jax") or payload.get("jax")
    dirty = list(prov.get("git_dirty_files") or []) if prov.get("git_dirty") else []
    return commit, jax, "measures_commit" in payload, dirty


def check(readmes=("README.md",), repo: str = REPO, strict: bool = False,
          to_regenerate: dict[str, str] | None = None) -> Report:
    """Build the report for the result files that ``readmes`` (paths relative to ``repo``) quote."""
    to_regenerate = TO_REGENERATE if to_regenerate is None else to_regenerate
    text = ""
    for r in readmes:
        with open(os.path.join(repo, r), encoding="utf-8") as f:
            text += f.read() + "\n"
    names = referenced(text)
    history = has_history(repo)
    entries, errors, warns, loud = [], [], [], []
    for name in names:
        e = Entry(name)
        entries.append(e)
        found = _script_for(name)
        if found is None:
            errors.append(f"{name}: no benchmark script known for it; add its pattern to SCRIPTS in "
                          "benchmarks/check_figures.py")
        else:
            e.script, e.paths = found[0], found[1]
        path = os.path.join(repo, RESULTS, name)
        e.exists = os.path.isfile(path)
        if not e.exists:
            errors.append(f"{name}: README quotes {RESULTS}/{name}, which does not exist")
            continue
        try:
            with open(path, encoding="utf-8") as f:
                payload = json.load(f)
        except (OSError, ValueError) as err:
            errors.append(f"{name}: cannot read it as JSON ({err})")
            continue
        e.commit, e.jax, e.pinned, dirty = _provenance(payload)
        if e.commit is None:
            e.note = "listed in TO_REGENERATE" if name in to_regenerate else "no commit"
            if name in to_regenerate:
                loud.append(f"{name}: TO BE REGENERATED ({to_regenerate[name]}); its figures in README are "
                            "not traceable to a commit")
            else:
                errors.append(f"{name}: carries no commit (machine.provenance.git_commit, or a top-level "
                              "'measures_commit'); regenerate it with its script, or list it in TO_REGENERATE "
                              "with a reason")
            continue
        if name in to_regenerate:
            errors.append(f"{name}: now carries commit {e.commit[:9]}; remove it from TO_REGENERATE")
        if e.jax is None:
            warns.append(f"{name}: records commit {e.commit[:9]} but no jax version")
        if e.pinned or not e.paths:
            continue
        e.dirty = [p for p in dirty if any(p == q or p.startswith(q.rstrip("/") + "/") for q in e.paths)]
        if not history:
            e.note = "no git history"
            continue
        e.changes = changes_since(e.commit, e.paths, repo)
        if e.changes is None:
            e.note = f"commit {e.commit[:9]} not in this clone's history"
            continue
        if e.changes or e.dirty:
            why = []
            if e.changes:
                shown = "; ".join(e.changes[:3]) + (f"; ... ({len(e.changes)} in all)" if len(e.changes) > 3 else "")
                why.append(f"{len(e.changes)} commit(s) since {e.commit[:9]} changed the code it measures ({shown})")
            if e.dirty:
                why.append(f"it was measured with uncommitted changes to {', '.join(e.dirty[:5])}")
            msg = f"{name} ({e.script}) may be stale: " + " and ".join(why) + "; rerun the script"
            (errors if strict else warns).append(msg)
    for name in to_regenerate:
        if name not in names:
            errors.append(f"TO_REGENERATE lists {name}, which README does not quote; remove it")
    return Report(entries, errors, warns, loud)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strict", action="store_true", help="stale result files are errors too")
    ap.add_argument("--readme", nargs="+", default=["README.md"], help="files to scan, relative to the repository")
    args = ap.parse_args(argv)
    report = check(args.readme, strict=args.strict)
    print(report.text())
    if not has_history():
        print("note: no git history here: provenance checked, staleness not")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
