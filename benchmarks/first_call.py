"""What a batched fit costs outside its Newton steps: straggler buckets and the stages.

1. ``fit_batch(compact=True | "auto" | False)`` on 10,000 logistic regressions (n=200,
   k=5) of which 2% are nearly separable, four calls in a row, each mode in a fresh
   process (so the first call includes its compilations, as a user's does).
2. The batch fitter's stages timed one by one on the same data without the hard
   datasets (compiled, best of 3): ready, start, the loop, finish. (Since 35dcce0
   Newton's start pass is the loop's first iteration: "start" makes a placeholder.)

    python benchmarks/first_call.py [--batch 10000] [--calls 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxmle as jm  # noqa: E402
from _common import print_table, write_json  # noqa: E402
from batch_logistic import logistic_loglik, make_data  # noqa: E402
from jaxmle._batch import BatchFitter  # noqa: E402

_MODES = {"True": True, "auto": "auto", "False": False}


def calls(mode: str, B: int, n_calls: int) -> list[float]:
    """Wall seconds of ``n_calls`` successive fit_batch calls with ``compact=mode``."""
    data = make_data(B, 200, 5, hard=0.02)
    model = jm.Model(logistic_loglik, {"beta": jnp.zeros(5)})
    out = []
    for _ in range(n_calls):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = jm.fit_batch(model, data, compact=_MODES[mode])
        jax.block_until_ready(res.params)
        out.append(time.perf_counter() - t0)
    return out


def stages(B: int) -> dict:
    """Best-of-3 seconds of each compiled stage of one batched fit (no hard datasets)."""
    data = make_data(B, 200, 5)
    model = jm.Model(logistic_loglik, {"beta": jnp.zeros(5)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jm.fit_batch(model, data, compact=False)
    f = next(v for v in model._compiled.values() if isinstance(v, BatchFitter))
    z0, fixed = jnp.zeros((B, 5)), []

    def best(fn):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = jax.block_until_ready(fn())
            times.append(time.perf_counter() - t0)
        return min(times), out

    t_ready, ready = best(lambda: f.ready(data, None))
    t_start, carry = best(lambda: f.start(z0, fixed, ready, None))
    t_loop, (done, _, _) = best(lambda: f.advance(carry, z0, fixed, ready, None, jnp.int32(0), jnp.int32(2**31 - 1),
                                                  jnp.int32(0)))
    t_finish, _ = best(lambda: f.finish(done, z0, fixed, ready, None))
    return {"ready s": t_ready, "start pass s": t_start, "loop s": t_loop, "finish s": t_finish,
            "max iterations": int(np.max(np.asarray(done.n_iter)))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--json", default="benchmarks/results/first_call.json")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)   # child process: one mode
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(calls(args.one, args.batch, args.calls)))
        return

    rows = []
    for mode in _MODES:
        out = subprocess.run([sys.executable, __file__, "--one", mode, "--batch", str(args.batch),
                              "--calls", str(args.calls)], capture_output=True, text=True, check=True)
        times = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"compact": mode, **{f"call {i + 1} s": t for i, t in enumerate(times)},
                     "total s": sum(times)})
    print(f"{args.batch:,} logistic fits (n=200, k=5), 2% nearly separable, {args.calls} calls, "
          f"each mode in a fresh process; {jax.devices()[0]}, float64\n")
    print_table(rows, ["compact"] + [f"call {i + 1} s" for i in range(args.calls)] + ["total s"])
    st = stages(args.batch)
    print(f"\nstages of one compiled batched fit ({args.batch:,} fits, best of 3):\n")
    print_table([st], list(st))
    write_json(args.json, {"args": vars(args), "compaction": rows, "stages": st})


if __name__ == "__main__":
    main()
