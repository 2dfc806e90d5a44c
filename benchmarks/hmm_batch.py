"""HMM batches against hmmlearn: does every fit reach the optimum, or say that it did not?

Issue 22 item 3. B series of length T are drawn (fixed seed) from a 2-state Gaussian
HMM and fitted in one ``jm.fit_batch`` of ``jm.models.hmm(2)`` with Newton and the
default ``start="estimate"``. Each series is also fitted by hmmlearn's
``GaussianHMM`` (diagonal covariances = jaxmle's per-state scales, no priors,
``min_covar`` 1e-10, tol 1e-10) from ``--inits`` k-means initialisations; the best
of those is the reference optimum. The table counts the statuses, how many fits
reach the reference to 1e-6 in log-likelihood, and the worst gap; a fit below the
reference with status CONVERGED would be a false claim (counted separately).
hmmlearn's ``score`` at jaxmle's estimates checks that the two compute the same
likelihood.

    python benchmarks/hmm_batch.py [--batch 500] [--length 1000] [--inits 3] [--json PATH]

Writes ``benchmarks/results/hmm_batch.json`` (stamped with ``_common.provenance()``).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from hmmlearn import hmm as H  # noqa: E402

import jaxmle as jm  # noqa: E402
from _common import print_table, provenance, write_json  # noqa: E402

SEED = 20261207
TRUE = {"start": np.array([0.5, 0.5]), "trans": np.array([[0.95, 0.05], [0.1, 0.9]]),
        "means": np.array([-1.0, 1.0]), "scales": np.array([1.0, 1.0])}
MATCH = 1e-6


def truth() -> H.GaussianHMM:
    ref = H.GaussianHMM(2, covariance_type="diag")
    ref.startprob_, ref.transmat_ = TRUE["start"], TRUE["trans"]
    ref.means_, ref.covars_ = TRUE["means"][:, None], TRUE["scales"][:, None] ** 2
    return ref


def simulate(B: int, T: int, seed: int = SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ref = truth()
    return np.stack([ref.sample(T, random_state=int(rng.integers(2**31)))[0][:, 0] for _ in range(B)])


def hmmlearn_best(x: np.ndarray, inits: int, n_iter: int) -> float:
    """Best log-likelihood of hmmlearn's EM from ``inits`` k-means initialisations."""
    X = x[:, None]
    best = -np.inf
    for seed in range(inits):
        ref = H.GaussianHMM(2, covariance_type="diag", n_iter=n_iter, tol=1e-10, min_covar=1e-10,
                            covars_prior=0.0, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref.fit(X)
        best = max(best, ref.score(X))
    return best


def hmmlearn_score_at(params, i: int, x: np.ndarray) -> float:
    ref = H.GaussianHMM(2, covariance_type="diag")
    ref.startprob_ = np.asarray(params["start"][i])
    ref.transmat_ = np.stack([np.asarray(params["trans"]["0"][i]), np.asarray(params["trans"]["1"][i])])
    ref.means_ = np.asarray(params["means"][i])[:, None]
    ref.covars_ = np.asarray(params["scales"][i])[:, None] ** 2
    return ref.score(x[:, None])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--length", type=int, default=1000)
    ap.add_argument("--inits", type=int, default=3, help="hmmlearn k-means initialisations per series")
    ap.add_argument("--n-iter", type=int, default=1000, help="hmmlearn EM iterations at most")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "hmm_batch.json"))
    args = ap.parse_args()

    xs = simulate(args.batch, args.length)
    model = jm.models.hmm(2, "normal")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # the table below says what the warning would
        res = jm.fit_batch(model, {"x": jnp.asarray(xs)}, method="newton")
    fit_s = time.perf_counter() - t0
    status = np.asarray(res.status)
    ll = np.asarray(res.loglik)
    params = jax.tree_util.tree_map(np.asarray, res.params)

    t0 = time.perf_counter()
    ref = np.array([hmmlearn_best(x, args.inits, args.n_iter) for x in xs])
    ref_s = time.perf_counter() - t0
    same = np.array([hmmlearn_score_at(params, i, x) for i, x in enumerate(xs)])

    gap = ref - ll                                    # > 0: jaxmle below hmmlearn's best
    matched = gap <= MATCH
    names = [jm.Status(int(s)).name for s in status]
    rows = []
    for name in sorted(set(names), key=lambda n: jm.Status[n].value):
        sel = np.array([n == name for n in names])
        rows.append({"status": name, "fits": int(sel.sum()), "at hmmlearn optimum": int(matched[sel].sum()),
                     "worst gap": float(gap[sel].max())})
    rows.append({"status": "all", "fits": len(names), "at hmmlearn optimum": int(matched.sum()),
                 "worst gap": float(gap.max())})
    print(f"{args.batch} series of length {args.length}, 2-state Gaussian HMM, Newton, start='estimate'")
    print_table(rows, ["status", "fits", "at hmmlearn optimum", "worst gap"])
    false_converged = int(np.sum((status == jm.Status.CONVERGED) & ~matched))
    boundary = sorted({n for i in np.flatnonzero(status == jm.Status.AT_BOUNDARY) for n in res[int(i)].boundary_params})
    score_diff = float(np.max(np.abs(same - ll)))
    print(f"\nfalse CONVERGED (below hmmlearn's best by > {MATCH:g}): {false_converged}")
    print(f"parameters named by AT_BOUNDARY fits: {boundary or 'none'}")
    print(f"max |jaxmle loglik - hmmlearn score at jaxmle's estimate|: {score_diff:.2e}")
    print(f"fit_batch {fit_s:.1f} s; hmmlearn ({args.inits} inits per series) {ref_s:.1f} s")
    not_matched = [{"series": int(i), "status": names[i], "gap": float(gap[i])} for i in np.flatnonzero(~matched)]
    write_json(args.json, {
        "provenance": provenance(),
        "config": {"batch": args.batch, "length": args.length, "seed": SEED,
                   "true": {k: v.tolist() for k, v in TRUE.items()}, "method": "newton", "start": "estimate",
                   "hmmlearn": {"inits": args.inits, "n_iter": args.n_iter, "tol": 1e-10, "min_covar": 1e-10,
                                "covariance_type": "diag"},
                   "match_tol": MATCH},
        "table": rows,
        "false_converged": false_converged,
        "boundary_params": boundary,
        "max_abs_score_diff": score_diff,
        "not_matched": not_matched,
        "seconds": {"fit_batch": fit_s, "hmmlearn": ref_s},
    })


if __name__ == "__main__":
    main()
