"""Peak memory of fit_batch with and without chunk_size, as the batch grows 10x.

Each configuration runs in its own subprocess: it builds the star catalogue
(B stars x 64 exposures), resets the kernel's peak-RSS counter (Linux
/proc/self/clear_refs), runs ``jm.fit_batch`` and reads the peak back. The table
reports the fit's peak (peak RSS during the fit minus RSS before it), the size of the
returned results (which grow with B by nature), the working memory (the difference),
the data's own size and the run time. With ``chunk_size`` the working memory should
stay flat as B grows; without it, it grows with B.

    python benchmarks/chunk_memory.py [--batches 20000 200000] [--chunk 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import jaxmle as jm
from jaxmle._demo import star_catalogue, star_model

B, chunk = int(sys.argv[1]), (None if sys.argv[2] == "none" else int(sys.argv[2]))

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out

data, _ = star_catalogue(0, B, 64)
# Touch the whole catalogue once: its first use can copy it into JAX's own buffers,
# which belongs to making the data, not to fitting it.
jax.block_until_ready(jax.tree_util.tree_map(lambda a: a.sum(), data))
data_bytes = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(data))
model = star_model()
# Compile on a small batch of the same chunk shape first, so compilation is not counted.
warm = chunk if chunk is not None else B
small = jax.tree_util.tree_map(lambda a: a[: min(warm, B)], data)
jax.block_until_ready(jm.fit_batch(model, small, chunk_size=chunk, progress=False).params)
del small
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status()["VmRSS"]
t0 = time.perf_counter()
res = jm.fit_batch(model, data, chunk_size=chunk, progress=False)
jax.block_until_ready(res.params)   # the statuses are host NumPy, final once it returns
secs = time.perf_counter() - t0
peak = status()["VmHWM"]
fields = {k: v for k, v in res.__dict__.items() if not k.startswith("_") and k != "model"}
leaves = [x for x in jax.tree_util.tree_leaves(fields) if hasattr(x, "nbytes")]
result_bytes = sum(int(x.nbytes) for x in leaves if np.ndim(x) and np.shape(x)[0] == B)
print(json.dumps({"B": B, "chunk_size": chunk, "data_MB": data_bytes / 2**20,
                  "fit_peak_MB": (peak - before) / 2**20, "results_MB": result_bytes / 2**20,
                  "working_MB": (peak - before - result_bytes) / 2**20, "run_s": secs,
                  "converged": int(np.asarray(res.converged).sum())}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--json", default="benchmarks/results/chunk_memory.json")
    args = ap.parse_args()
    sys.path.insert(0, "benchmarks")
    from _common import print_table, write_json

    rows = []
    for chunk in (None, args.chunk):
        for B in args.batches:
            out = subprocess.run([sys.executable, "-c", CHILD, str(B), "none" if chunk is None else str(chunk)],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["chunk_size"] = row["chunk_size"] or "none"
            rows.append(row)
            print(f"  B={B:,} chunk={row['chunk_size']}: fit peak {row['fit_peak_MB']:.0f} MB", file=sys.stderr)
    print("\nstar catalogue (64 exposures), float64; 'fit peak MB' = peak RSS during fit_batch minus RSS before it\n")
    print("'results MB' = the returned arrays (they grow with B by nature); 'working MB' = the rest\n")
    print_table(rows, ["B", "chunk_size", "data_MB", "fit_peak_MB", "results_MB", "working_MB", "run_s", "converged"])
    write_json(args.json, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
