"""Per-program XLA:CPU options (jaxmle._compile.CPU_OPTIONS) against XLA's defaults.

Each case runs in fresh processes (no persistent cache), alternating the two
settings (``JAXMLE_COMPILER_OPTIONS=0`` gives XLA's defaults): the first call
(trace + compile + run, what a user waits for) and the best of ``--repeats`` warm
calls (the compiled program's run time). The options are adopted only where the
warm time is equal within noise.

Second table: the quick tier's extra options (``QUICK_OPTIONS`` after its first entry,
the optimisation level, and ``LEAN_OPTIONS`` for programs of small arguments), with
compile tiers on as users get them, against the quick tier without them: the first call,
XLA's backend compile seconds in it (JAX's compile events), and whether the fitted
parameters are bit for bit the same.

    python benchmarks/compile_options.py [--rounds 2] [--repeats 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import print_table, write_json

from jaxmle import _compile

CASES = {
    "normal, 5 points (fit)": "normal",
    "logistic k=20, n=5,000 (fit)": "logistic_single",
    "logistic k=5, 10,000 datasets (fit_batch)": "logistic_batch",
    "demo stars, 10,000 (fit_batch)": "stars",
}

#: Builds ``call`` for the case named by argv[1] (shared with benchmarks/tiers.py).
SETUP = r"""
import json, sys, time, warnings
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
import jaxmle as jm
case, repeats = sys.argv[1], int(sys.argv[2])
warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
if case == "normal":
    m = jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"]), {"mu": 0.0, "sigma": jm.Positive(1.0)})
    data = np.array([240., 255., 261., 248., 271.])
    call = lambda: jm.fit(m, data)
elif case == "logistic_single":
    X = np.c_[np.ones(5000), rng.normal(size=(5000, 19))]
    y = (rng.random(5000) < 1 / (1 + np.exp(-X @ rng.normal(size=20) * 0.3))).astype(float)
    m = jm.Model(lambda p, d: d["y"] * (d["X"] @ p["b"]) - jnp.logaddexp(0., d["X"] @ p["b"]), {"b": jnp.zeros(20)})
    data = {"X": X, "y": y}
    call = lambda: jm.fit(m, data)
elif case == "logistic_batch":
    sys.path.insert(0, "benchmarks")
    from batch_logistic import logistic_loglik, make_data
    data = make_data(10_000, 200, 5)
    m = jm.Model(logistic_loglik, {"beta": jnp.zeros(5)})
    call = lambda: jm.fit_batch(m, data, compact=False)
else:
    from jaxmle._demo import star_catalogue, star_model
    data = star_catalogue(0, 10_000, 64)
    data = data[0] if isinstance(data, tuple) else data
    m = star_model()
    call = lambda: jm.fit_batch(m, data, compact=False)
"""

CHILD = SETUP + r"""
t = time.perf_counter(); jax.block_until_ready(call().params); first = time.perf_counter() - t
warm = []
for _ in range(repeats):
    t = time.perf_counter(); jax.block_until_ready(call().params); warm.append(time.perf_counter() - t)
print(json.dumps({"first": first, "warm": min(warm)}))
"""


CHILD_QUICK = r"""
import os, sys
from jaxmle import _compile
if os.environ.get("QUICK_EXTRAS") == "0":
    for name in list(_compile.QUICK_OPTIONS)[1:]:
        _compile.QUICK_OPTIONS.pop(name)
    _compile.LEAN_OPTIONS.clear()
from jax._src import monitoring
compile_s = []
monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: compile_s.append(duration) if event.endswith("backend_compile_duration") else None)
""" + SETUP + r"""
t = time.perf_counter(); res = call(); jax.block_until_ready(res.params); first = time.perf_counter() - t
params = np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree_util.tree_leaves(res.params)])
print(json.dumps({"first": first, "compile": sum(compile_s), "params": params.tobytes().hex()}))
"""


def run_child(child: str, case: str, count: int, **env_vars: str) -> dict:
    """Run ``child`` for ``case`` in a fresh process (no persistent cache, no XLA_FLAGS,
    ``env_vars`` set); its last stdout line, as JSON. Shared with benchmarks/tiers.py."""
    env = dict(os.environ, JAXMLE_CACHE_DIR="off", **env_vars)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.pop("XLA_FLAGS", None)
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", child, case, str(count)], env=env, cwd=os.path.dirname(here),
                         capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def alternating(rounds: int, measure) -> dict:
    """{True: [...], False: [...]}: ``measure(True)`` then ``measure(False)``, ``rounds``
    times, so machine load hits both settings alike. Shared with benchmarks/tiers.py."""
    got = {True: [], False: []}
    for _ in range(rounds):
        for flag in (True, False):
            got[flag].append(measure(flag))
    return got


def run(case: str, options: bool, repeats: int) -> dict:
    # Compile tiers off: this measures the per-program options alone (tiers: tiers.py).
    return run_child(CHILD, case, repeats, JAXMLE_COMPILER_OPTIONS="1" if options else "0", JAXMLE_TIERS="0")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cases", nargs="*", default=list(CASES.values()))
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "compile_options.json"))
    args = ap.parse_args()
    rows = []
    for label, case in CASES.items():
        if case not in args.cases:
            continue
        got = alternating(args.rounds, lambda options: run(case, options, args.repeats))
        best = {o: {k: min(r[k] for r in got[o]) for k in ("first", "warm")} for o in got}
        rows.append({"case": label,
                     "first s, options": best[True]["first"], "first s, defaults": best[False]["first"],
                     "first ratio": best[True]["first"] / best[False]["first"],
                     "warm s, options": best[True]["warm"], "warm s, defaults": best[False]["warm"],
                     "warm ratio": best[True]["warm"] / best[False]["warm"]})
        print(f"{label}: done", file=sys.stderr)
    cols = ["case", "first s, options", "first s, defaults", "first ratio", "warm s, options",
            "warm s, defaults", "warm ratio"]
    print_table(rows, cols)
    quick_rows = []
    for label, case in CASES.items():
        if case not in args.cases:
            continue
        got = alternating(args.rounds,
                          lambda extras: run_child(CHILD_QUICK, case, 0, QUICK_EXTRAS="1" if extras else "0"))
        best = {e: {k: min(r[k] for r in got[e]) for k in ("first", "compile")} for e in got}
        quick_rows.append({"case": label,
                           "first s, extras": best[True]["first"], "first s, without": best[False]["first"],
                           "first ratio": best[True]["first"] / best[False]["first"],
                           "compile s, extras": best[True]["compile"], "compile s, without": best[False]["compile"],
                           "compile ratio": best[True]["compile"] / best[False]["compile"],
                           "same params": len({r["params"] for r in got[True] + got[False]}) == 1})
        print(f"{label} (quick tier): done", file=sys.stderr)
    print("\nquick tier's extra options:", {k: v for k, v in list(_compile.QUICK_OPTIONS.items())[1:]},
          f"and for arguments up to {_compile.LEAN_MAX_BYTES} bytes", _compile.LEAN_OPTIONS)
    print_table(quick_rows, list(quick_rows[0]) if quick_rows else [])
    write_json(args.json, {"options": _compile.CPU_OPTIONS, "quick_options": _compile.QUICK_OPTIONS,
                           "lean_options": _compile.LEAN_OPTIONS, "lean_max_bytes": _compile.LEAN_MAX_BYTES,
                           "rounds": args.rounds, "repeats": args.repeats, "rows": rows,
                           "quick_rows": quick_rows})


if __name__ == "__main__":
    tempfile.tempdir = None
    main()
