"""Batched small linear solves on CPU: which way to solve H d = -g for B tiny systems.

jaxmle's own small-k algebra (``jaxmle._linalg``: vectorised Cholesky, triangular
solves for k <= _linalg.SMALL; eigendecompositions closed-form for k <= 2, else LAPACK in
chunks under vmap) runs
beside the LAPACK calls it replaces; compile time is reported separately.

Newton needs one k x k solve per dataset per iteration. Contenders, each vmapped over
B symmetric positive-definite systems in one jitted call: ``jnp.linalg.solve`` (LU),
``jnp.linalg.inv`` then a product, Cholesky + ``cho_solve`` (what jaxmle uses), and
an eigendecomposition (what the eigenvalue fix for indefinite Hessians costs). Prints
time per batch and the worst relative residual; writes JSON.

    python benchmarks/small_solves.py [--batch 10000] [--json out.json]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from _common import print_table, timed, write_json  # noqa: E402

from jaxmle import _linalg  # noqa: E402


def solvers():
    def chol(H, g):
        return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(H), True), g)

    def eig(H, g):
        w, V = jnp.linalg.eigh(H)
        return V @ ((V.T @ g) / w)

    def ours_eig(H, g):
        w, V = _linalg.eigh(H)
        return V @ ((V.T @ g) / w)

    return {
        "jaxmle _linalg cholesky + cho_solve": lambda H, g: _linalg.cho_solve(_linalg.cholesky(H), g),
        "jaxmle _linalg eigh (closed form k<=2, else chunked LAPACK)": ours_eig,
        "jnp.linalg.solve (LU)": lambda H, g: jnp.linalg.solve(H, g),
        "jnp.linalg.inv @ g": lambda H, g: jnp.linalg.inv(H) @ g,
        "cholesky + cho_solve": chol,
        "eigh (eigenvalue fix)": eig,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 3, 5, 8, 12, 16])
    ap.add_argument("--json", default="benchmarks/results/small_solves.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for k in args.ks:
        A = rng.normal(size=(args.batch, k, 2 * k))
        H = jnp.asarray(A @ A.transpose(0, 2, 1) / (2 * k) + 0.1 * np.eye(k))
        g = jnp.asarray(rng.normal(size=(args.batch, k)))
        for name, fn in solvers().items():
            f = jax.jit(jax.vmap(fn))
            first, run, d = timed(f, H, g, repeats=10)
            resid = jnp.linalg.norm(jnp.einsum("bij,bj->bi", H, d) - g, axis=1) / jnp.linalg.norm(g, axis=1)
            rows.append({"k": k, "solver": name, "ms per batch": run * 1e3,
                         "us per solve": run * 1e6 / args.batch,
                         "compile+first s": first, "max rel residual": float(resid.max())})
    print(f"B={args.batch} symmetric positive-definite systems per call, float64, {jax.devices()[0]}\n")
    print_table(rows, ["k", "solver", "ms per batch", "us per solve", "compile+first s", "max rel residual"])
    write_json(args.json, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
