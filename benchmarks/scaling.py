"""How jaxmle's batched fitting scales: fits/s against the batch size B, the
number of observations n and the number of parameters k.

* B = 10^2 ... 10^6 star light curves (64 exposures, 3 parameters, Newton); batches
  above ``--chunk`` run in chunks of that size (one compilation, bounded memory).
* n = 16 ... 1024 exposures per star at B = 10^4.
* k = 2 ... 32 coefficients of a logistic regression (n = 200) at B = 2,000.

Run time excludes compilation (each shape is called once first; compile time is a
column). The programs are compiled fully optimised at once (``JAXMLE_TIERS=0``, set
here unless given): with compile tiers a small shape's first calls run the quickly
compiled code and its promotion compiles during a timed call, which measured neither.
Prints tables, writes JSON and, with matplotlib installed, a PNG.

    python benchmarks/scaling.py [--max-batch 1000000] [--json out.json] [--png docs/scaling.png]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAXMLE_TIERS", "0")   # compiled speed: see the docstring

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxmle as jm  # noqa: E402
from jaxmle._demo import star_catalogue, star_model  # noqa: E402
from _common import print_table, write_json  # noqa: E402


def run(model, data, B, chunk=None):
    t0 = time.perf_counter()
    jax.block_until_ready(jm.fit_batch(model, data, method="newton", chunk_size=chunk, progress=False).params)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = jm.fit_batch(model, data, method="newton", chunk_size=chunk, progress=False)
    jax.block_until_ready(res.params)   # the statuses are host NumPy, final once it returns
    secs = time.perf_counter() - t0
    return {"fits/s": B / secs, "run s": secs, "compile s": max(first - secs, 0.0),
            "converged": float(np.asarray(res.converged).mean())}


def logistic_data(B, n, k, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, n, k)) / np.sqrt(k)
    X[..., 0] = 1.0
    beta = rng.normal(0.0, 0.5, size=(B, k))
    y = (rng.uniform(size=(B, n)) < 1 / (1 + np.exp(-np.einsum("bnk,bk->bn", X, beta)))).astype(float)
    return {"X": jnp.asarray(X), "y": jnp.asarray(y)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-batch", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--json", default="benchmarks/results/scaling.json")
    ap.add_argument("--png", default="docs/scaling.png")
    args = ap.parse_args()
    model = star_model()

    by_b = []
    B = 100
    while B <= args.max_batch:
        data, _ = star_catalogue(0, B, 64)
        chunk = args.chunk if B > args.chunk else None
        by_b.append({"B": B, "chunk": chunk, **run(model, data, B, chunk)})
        del data
        B *= 10
    by_n = []
    for n in (16, 64, 256, 1024):
        data, _ = star_catalogue(0, 10_000, n)
        by_n.append({"n": n, "B": 10_000, **run(model, data, 10_000)})
    by_k = []
    for k in (2, 4, 8, 16, 32):
        data = logistic_data(2_000, 200, k)
        lm = jm.models.logistic(k)
        by_k.append({"k": k, "B": 2_000, "n": 200, **run(lm, data, 2_000)})

    print(f"jaxmle fit_batch scaling, Newton, float64, {jax.devices()[0]}\n")
    print("fits/s against B (star light curves, n=64, k=3)")
    print_table(by_b, ["B", "chunk", "fits/s", "run s", "compile s", "converged"])
    print("\nfits/s against n (star light curves, B=10,000, k=3)")
    print_table(by_n, ["n", "fits/s", "run s", "compile s", "converged"])
    print("\nfits/s against k (logistic regression, B=2,000, n=200)")
    print_table(by_k, ["k", "fits/s", "run s", "compile s", "converged"])
    write_json(args.json, {"args": vars(args), "by_batch": by_b, "by_n": by_n, "by_k": by_k})

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install 'jaxmle[bench]')")
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, rows, key, label in [(axes[0], by_b, "B", "datasets B (n=64, k=3)"),
                                 (axes[1], by_n, "n", "observations n (B=10^4, k=3)"),
                                 (axes[2], by_k, "k", "parameters k (B=2000, n=200)")]:
        ax.loglog([r[key] for r in rows], [r["fits/s"] for r in rows], "o-")
        ax.set_xlabel(label)
        ax.set_ylabel("fits/s")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"jaxmle fit_batch throughput, Newton, float64, {jax.devices()[0].platform.upper()}")
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
