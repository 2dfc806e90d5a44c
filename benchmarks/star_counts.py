"""The astronomer's catalogue: 100,000 stars x 64 exposures, Poisson light curves.

lambda(t) = exp(a + b sin(wt) + c cos(wt)) per star, fitted by Newton in one
``jm.fit_batch`` call, against what a user writes today: a loop of
``scipy.optimize.minimize(method="BFGS")`` on a numpy log-likelihood (finite-difference
gradients; timed on a subsample). A second scipy row passes the analytic gradient
(``jac=True``), the best a careful scipy user does. A hand-written batched Newton in
jax.numpy (explicit derivatives, no line search, GLM start) marks the speed limit. A float32 row shows the fast path's
speed and accuracy against float64. All in one process, on the same catalogue.

    python benchmarks/star_counts.py [--stars 100000] [--sample 300] [--json out.json]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxmle as jm  # noqa: E402
from jaxmle._demo import OMEGA, _scipy_loop as scipy_loop, star_catalogue, star_model  # noqa: E402
from _common import print_table, timed, write_json  # noqa: E402


GTOL = 1e-9   # jaxmle's float64 default for Newton


@jax.jit
def hand_newton(t, k):
    """Speed limit: batched Newton written directly in jax.numpy for this model.

    Explicit gradient X'(mu - k) and Hessian X' diag(mu) X with X = [1, sin wt, cos wt],
    Cholesky solves, no line search, the usual GLM start (a = log mean count, b = c = 0),
    and jaxmle's stopping rule; all stars step together until all meet it.
    """
    n = t.shape[1]
    X = jnp.stack([jnp.ones_like(t), jnp.sin(OMEGA * t), jnp.cos(OMEGA * t)], axis=-1)
    lk = jax.scipy.special.gammaln(k + 1.0).sum(axis=1)

    def stats(beta):
        eta = jnp.einsum("bnk,bk->bn", X, beta)
        mu = jnp.exp(eta)
        f = (jnp.sum(mu - k * eta, axis=1) + lk) / n
        g = jnp.einsum("bnk,bn->bk", X, mu - k) / n
        return f, g, mu

    def done(f, g):
        return jnp.max(jnp.abs(g), axis=1) <= GTOL * jnp.maximum(1.0, jnp.abs(f))

    def body(c):
        beta, f, g, mu, it = c
        H = jnp.einsum("bnk,bn,bnj->bkj", X, mu, X) / n
        L = jnp.linalg.cholesky(H)
        step = -jax.scipy.linalg.cho_solve((L, True), g[..., None])[..., 0]
        beta = jnp.where(done(f, g)[:, None], beta, beta + step)
        f, g, mu = stats(beta)
        return beta, f, g, mu, it + 1

    beta0 = jnp.zeros((t.shape[0], 3), t.dtype).at[:, 0].set(jnp.log(jnp.maximum(k.mean(axis=1), 0.5)))
    f, g, mu = stats(beta0)
    beta, *_, it = jax.lax.while_loop(lambda c: (~jnp.all(done(c[1], c[2]))) & (c[4] < 100), body,
                                      (beta0, f, g, mu, 0))
    return beta, it


def plain_loglik(p, d):
    eta = p["a"] + p["b"] * jnp.sin(OMEGA * d["t"]) + p["c"] * jnp.cos(OMEGA * d["t"])
    return d["counts"] * eta - jnp.exp(eta) - jax.scipy.special.gammaln(d["counts"] + 1.0)


def estimates(res):
    return np.stack([np.asarray(res.params[k], float) for k in ("a", "b", "c")], axis=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stars", type=int, default=100_000)
    ap.add_argument("--exposures", type=int, default=64)
    ap.add_argument("--sample", type=int, default=300, help="stars timed for the scipy loops")
    ap.add_argument("--json", default="benchmarks/results/star_counts.json")
    args = ap.parse_args()

    N = args.stars
    data, truth = star_catalogue(0, N, args.exposures)
    model = star_model()
    rows = []

    first, run, res = timed(lambda d: jm.fit_batch(model, d, method="newton"), data, repeats=2)
    ours = estimates(res)
    counts = res.status_counts()
    rows.append({"contender": "jaxmle fit_batch (newton, float64)", "fits/s": N / run, "run s": run,
                 "compile+first s": first, "max |diff| vs scipy": None,
                 "converged": f"{counts.get('CONVERGED', 0)}/{N}"})

    first_h, run_h, (beta_h, it_h) = timed(hand_newton, data["t"], data["counts"], repeats=2)
    rows.append({"contender": "hand-written batched Newton (jax.numpy, speed limit)", "fits/s": N / run_h,
                 "run s": run_h, "compile+first s": first_h, "max |diff| vs scipy": None,
                 "converged": f"iters {int(it_h)}"})
    diff_hand = float(np.max(np.abs(np.asarray(beta_h) - ours)))

    data32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), data)
    first32, run32, res32 = timed(lambda d: jm.fit_batch(model, d, method="newton"), data32, repeats=2)
    ours32 = estimates(res32)
    ok = np.asarray(res.converged)
    se = np.stack([np.asarray(res.stderr[k]) for k in ("a", "b", "c")], axis=1)
    err32 = float(np.max(np.abs(ours32 - ours)[ok] / se[ok]))
    c32 = res32.status_counts()
    rows.append({"contender": "jaxmle fit_batch (newton, float32)", "fits/s": N / run32, "run s": run32,
                 "compile+first s": first32, "max |diff| vs scipy": None,
                 "converged": f"{c32.get('CONVERGED', 0)}/{N}"})

    m = min(args.sample, N)
    sp_first = None
    for label, grad in [("scipy BFGS loop, numerical gradient", False), ("scipy BFGS loop, analytic gradient", True)]:
        sp, secs = scipy_loop(data, m, grad)
        sp_first = sp if sp_first is None else sp_first
        rows.append({"contender": f"{label} ({m} stars)", "fits/s": m / secs, "run s": secs * N / m,
                     "max |diff| vs scipy": float(np.max(np.abs(ours[:m] - sp)))})
    rows[0]["max |diff| vs scipy"] = rows[3]["max |diff| vs scipy"]

    # What a user writes first: sin/cos/log k! inside the log-density, no prepare, no start.
    plain = jm.Model(plain_loglik, {"a": 0.0, "b": 0.0, "c": 0.0}, name="star_plain")
    first_p, run_p, res_p = timed(lambda d: jm.fit_batch(plain, d, method="newton"), data, repeats=2)
    cp = res_p.status_counts()
    rows.append({"contender": "jaxmle fit_batch, plain user model (no prepare, no start)", "fits/s": N / run_p,
                 "run s": run_p, "compile+first s": first_p,
                 "max |diff| vs scipy": float(np.max(np.abs(estimates(res_p)[:m] - sp_first))),
                 "converged": f"{cp.get('CONVERGED', 0)}/{N}"})

    print(f"{N:,} stars x {args.exposures} exposures, Poisson light curves, Newton; {jax.devices()[0]}")
    print("(scipy rows: 'run s' extrapolated to the whole catalogue from the subsample;")
    print(" 'max |diff|' compares estimates with the scipy fit of the same stars)\n")
    print_table(rows, ["contender", "fits/s", "run s", "compile+first s", "max |diff| vs scipy", "converged"])
    ratios = {
        "speedup_vs_scipy_numerical_grad": rows[0]["fits/s"] / rows[3]["fits/s"],
        "speedup_vs_scipy_analytic_grad": rows[0]["fits/s"] / rows[4]["fits/s"],
        "hand_newton_speedup_vs_scipy_numerical_grad": rows[1]["fits/s"] / rows[3]["fits/s"],
        "runtime_ratio_vs_hand_newton": run / run_h,
        "plain_model_speedup_vs_scipy_numerical_grad": rows[5]["fits/s"] / rows[3]["fits/s"],
        "plain_model_runtime_ratio_vs_hand_newton": run_p / run_h,
        "max_abs_diff_vs_hand_newton": diff_hand,
        "float32_speedup_vs_float64": run / run32,
        "float32_max_diff_in_float64_stderrs": err32,
    }
    print()
    for k, v in ratios.items():
        print(f"{k:>38}: {v:.3g}")
    write_json(args.json, {"args": vars(args), "rows": rows, "ratios": ratios,
                           "status_float64": counts, "status_float32": c32})


if __name__ == "__main__":
    main()
