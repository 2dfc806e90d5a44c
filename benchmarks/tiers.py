"""Compile tiers (``jaxmle._compile._Quick``) against compiling fully optimised at once.

A program's first compile skips LLVM's optimisation (``QUICK_OPTIONS``, about half the
compile); once its calls have taken ``PROMOTE_AFTER`` times that compile it is compiled
again fully optimised. Each case runs in fresh processes (no persistent cache),
alternating tiers on and off (``JAXMLE_TIERS=0``), and times ``--calls`` calls of the
same fit: the first (trace + compile + run, what a one-off user waits for), the total
of all calls (what a loop pays, promotion included), the best of the last three (the
program's speed after promotion), and the calls during which a program was compiled
after the first (a promotion shows there).

    python benchmarks/tiers.py [--rounds 2] [--calls 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from _common import print_table, write_json
from compile_options import SETUP, alternating, run_child

CASES = {
    "normal, 5 points (fit)": "normal",
    "logistic k=20, n=5,000 (fit)": "logistic_single",
    "demo stars, 10,000 (fit_batch)": "stars",
    "logistic k=5, 10,000 datasets (fit_batch, 80 MB: full at once)": "logistic_batch",
}

CHILD = SETUP + r"""
from jax._src import monitoring
compiles = []
monitoring.register_event_duration_secs_listener(
    lambda name, d, **kw: compiles.append(d) if name == "/jax/core/compile/backend_compile_duration" else None)
times, compiled_in = [], []
for i in range(repeats):
    before = len(compiles)
    t = time.perf_counter(); jax.block_until_ready(call().params); times.append(time.perf_counter() - t)
    if i and len(compiles) > before and sum(compiles[before:]) > 0.05:
        compiled_in.append(i + 1)
print(json.dumps({"times": times, "compiled_in": compiled_in}))
"""


def run(case: str, tiers: bool, calls: int) -> dict:
    return run_child(CHILD, case, calls, JAXMLE_TIERS="1" if tiers else "0")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--cases", nargs="*", default=list(CASES.values()))
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "tiers.json"))
    args = ap.parse_args()
    rows = []
    for label, case in CASES.items():
        if case not in args.cases:
            continue
        got = alternating(args.rounds, lambda tiers: run(case, tiers, args.calls))

        def best(tiers, what):
            return min(what(r["times"]) for r in got[tiers])

        first = {t: best(t, lambda x: x[0]) for t in got}
        total = {t: best(t, sum) for t in got}
        warm = {t: best(t, lambda x: min(x[-3:])) for t in got}
        rows.append({"case": label,
                     "first s, tiers": first[True], "first s, full": first[False],
                     "first ratio": first[True] / first[False],
                     f"{args.calls} calls ratio": total[True] / total[False],
                     "warm s, tiers": warm[True], "warm s, full": warm[False],
                     "warm ratio": warm[True] / warm[False],
                     "recompiled in call (tiers)": sorted({c for r in got[True] for c in r["compiled_in"]}),
                     "runs": got})
        print(f"{label}: done", file=sys.stderr)
    cols = ["case", "first s, tiers", "first s, full", "first ratio", f"{args.calls} calls ratio",
            "warm s, tiers", "warm s, full", "warm ratio", "recompiled in call (tiers)"]
    print_table(rows, cols)
    from jaxmle import _compile
    write_json(args.json, {"quick_options": _compile.QUICK_OPTIONS, "promote_after": _compile.PROMOTE_AFTER,
                           "quick_max_bytes": _compile.QUICK_MAX_BYTES, "rounds": args.rounds,
                           "calls": args.calls, "rows": rows})


if __name__ == "__main__":
    tempfile.tempdir = None
    main()
