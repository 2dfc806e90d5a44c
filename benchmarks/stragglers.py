"""Stragglers: a batch whose iteration counts are heavy-tailed, fitted with and without compaction.

Under vmap a while_loop runs until its slowest lane converges, so a few hard
datasets make every step cost the whole batch. ``fit_batch(compact=True)`` moves
the unfinished datasets into smaller power-of-two buckets as the others finish.
Both paths run in this process on the same data; the script checks the results are
identical (bit for bit) and reports compile and run times separately.

The batch: B logistic regressions (n=200, k=5). Most have moderate true
coefficients (Newton converges in 4-6 iterations); a fraction ``--hard`` is nearly
separable (coefficients x8) and needs 10-30 iterations.

    python benchmarks/stragglers.py [--batch 10000] [--hard 0.02] [--json out.json]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxmle as jm  # noqa: E402
from _common import print_table, timed, write_json  # noqa: E402
from batch_logistic import logistic_loglik, make_data  # noqa: E402


def identical(a, b) -> bool:
    fields = ("params", "cov", "loglik", "status", "n_iter", "evals", "grad_norm")
    return all(
        np.array_equal(np.asarray(u), np.asarray(v), equal_nan=True)
        for f in fields
        for u, v in zip(jax.tree_util.tree_leaves(getattr(a, f)), jax.tree_util.tree_leaves(getattr(b, f)))
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--hard", type=float, default=0.02, help="fraction of nearly separable datasets")
    ap.add_argument("--json", default="benchmarks/results/stragglers.json")
    args = ap.parse_args()

    data = make_data(args.batch, args.n, args.k, hard=args.hard)
    model = jm.Model(logistic_loglik, {"beta": jnp.zeros(args.k)}, name="logistic")
    B = args.batch
    rows, results = [], {}
    for label, compact in [("plain vmap", False), ("compacted", True)]:
        first, run, res = timed(lambda d: jm.fit_batch(model, d, method="newton", compact=compact), data)
        results[label] = res
        it = np.asarray(res.n_iter)
        rows.append({"path": label, "fits/s": B / run, "run s": run, "compile+first s": first,
                     "lane-steps": None, "converged": f"{int(np.asarray(res.converged).sum())}/{B}"})
    it = np.asarray(results["plain vmap"].n_iter)
    # Work the plain path does: every lane steps until the slowest is done.
    rows[0]["lane-steps"] = int(B * it.max())
    rows[1]["lane-steps"] = int(it.sum())   # lower bound: compaction pads buckets to powers of two
    same = identical(results["plain vmap"], results["compacted"])
    print(f"B={B} logistic regressions (n={args.n}, k={args.k}), {args.hard:.0%} nearly separable; "
          f"float64, {jax.devices()[0]}")
    q = np.percentile(it, [50, 90, 99, 100])
    print(f"Newton iterations per fit: median {q[0]:g}, 90% {q[1]:g}, 99% {q[2]:g}, max {q[3]:g}\n")
    print_table(rows, ["path", "fits/s", "run s", "compile+first s", "lane-steps", "converged"])
    speedup = rows[0]["run s"] / rows[1]["run s"]
    print(f"\ncompaction speed-up (run time): {speedup:.2f}x;  results identical bit for bit: {same}")
    write_json(args.json, {"args": vars(args), "rows": rows, "iterations_percentiles": q.tolist(),
                           "speedup": speedup, "identical": same})


if __name__ == "__main__":
    main()
