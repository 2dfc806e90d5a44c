"""Helpers shared by the benchmark scripts: timing, tables, JSON output."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time

import jax

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Code whose edits change the numbers; benchmarks/results holds outputs, not code.
_CODE_PATHS = ["jaxmle", "benchmarks", ":(exclude)benchmarks/results"]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", _REPO, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def provenance() -> dict:
    """Which code and software produced a result: the git commit of this checkout, whether
    files under jaxmle/ or benchmarks/ differed from it (and which), jax and jaxlib
    versions, the device kind and the date (UTC). Fields git cannot give are None."""
    import jaxlib

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--", *_CODE_PATHS)
    changed = [line[3:] for line in status.splitlines() if line.strip()] if status is not None else None
    return {
        "git_commit": commit.strip() if commit else None,
        "git_dirty": bool(changed) if changed is not None else None,
        "git_dirty_files": changed[:50] if changed else [],
        "jax": jax.__version__,
        "jaxlib": getattr(jaxlib, "__version__", None),
        "device_kind": jax.devices()[0].device_kind,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def machine() -> dict:
    """The machine and software, with the provenance of the code (every JSON carries it)."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "device_count": jax.device_count(),
        "provenance": provenance(),
    }


def timed(fn, *args, repeats=3):
    """(first_call_seconds, best_of_repeats_seconds, result); blocks on JAX outputs."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return first, best, out


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(f"{c:>{widths[c]}}" for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(f"{_cell(r.get(c)):>{widths[c]}}" for c in columns))


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine(), **payload}, f, indent=2, default=float)
    print(f"\nwrote {path}")
