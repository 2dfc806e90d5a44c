"""B logistic regressions (n=200, k=5) fitted four ways, side by side in one process.

Contenders: jm.fit_batch (Newton), a hand-vectorised IRLS in jax.numpy (batched einsums,
explicit X'WX, the same stopping rule: the practical speed limit), a loop of statsmodels
Logit(...).fit() and a loop of scipy.optimize.minimize(BFGS) (both timed on a subsample).

    python benchmarks/batch_logistic.py [--batch 10000] [--sample 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxmle as jm  # noqa: E402
from _common import print_table, timed, write_json  # noqa: E402

GTOL = 1e-9   # jaxmle's float64 default for Newton


def make_data(B, n, k, seed=0, hard=0.0):
    """B logistic datasets; a fraction ``hard`` gets coefficients x8 (nearly separable)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, n, k))
    X[..., 0] = 1.0
    beta = rng.normal(0.0, 0.5, size=(B, k))
    if hard:
        beta[rng.choice(B, int(round(hard * B)), replace=False)] *= 8.0
    y = (rng.uniform(size=(B, n)) < 1 / (1 + np.exp(-np.einsum("bnk,bk->bn", X, beta)))).astype(float)
    return {"X": jnp.asarray(X), "y": jnp.asarray(y)}


def logistic_loglik(p, d):
    eta = d["X"] @ p["beta"]
    return d["y"] * eta - jnp.logaddexp(0.0, eta)


@jax.jit
def irls(X, y):
    """Hand-written batched IRLS: all lanes step together until every lane meets the rule."""
    B, n, k = X.shape

    def stats(beta):
        eta = jnp.einsum("bnk,bk->bn", X, beta)
        f = -jnp.sum(y * eta - jnp.logaddexp(0.0, eta), axis=1) / n
        p = jax.nn.sigmoid(eta)
        g = -jnp.einsum("bnk,bn->bk", X, y - p) / n
        return f, g, p

    def done(f, g):
        return jnp.max(jnp.abs(g), axis=1) <= GTOL * jnp.maximum(1.0, jnp.abs(f))

    def cond(c):
        beta, f, g, p, it = c
        return (~jnp.all(done(f, g))) & (it < 100)

    def body(c):
        beta, f, g, p, it = c
        W = p * (1 - p)
        H = jnp.einsum("bnk,bn,bnj->bkj", X, W, X) / n
        step = jnp.linalg.solve(H, -g[..., None])[..., 0]
        beta = jnp.where(done(f, g)[:, None], beta, beta + step)
        f, g, p = stats(beta)
        return beta, f, g, p, it + 1

    beta0 = jnp.zeros((B, k), X.dtype)
    f, g, p = stats(beta0)
    beta, f, g, p, it = jax.lax.while_loop(cond, body, (beta0, f, g, p, 0))
    return beta, it


def statsmodels_loop(data, m):
    import statsmodels.api as sm

    X, y = np.asarray(data["X"][:m]), np.asarray(data["y"][:m])
    t0 = time.perf_counter()
    out = [sm.Logit(y[i], X[i]).fit(disp=0).params for i in range(m)]
    return np.array(out), time.perf_counter() - t0


def scipy_loop(data, m):
    from scipy import optimize

    X, y = np.asarray(data["X"][:m]), np.asarray(data["y"][:m])
    t0 = time.perf_counter()
    out = []
    for i in range(m):
        def nll(b, X=X[i], y=y[i]):
            eta = X @ b
            return np.sum(np.logaddexp(0.0, eta) - y * eta)
        out.append(optimize.minimize(nll, np.zeros(X.shape[2]), method="BFGS").x)
    return np.array(out), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--sample", type=int, default=200, help="fits timed for the Python loops")
    ap.add_argument("--json", default="benchmarks/results/batch_logistic.json")
    args = ap.parse_args()

    data = make_data(args.batch, args.n, args.k)
    model = jm.Model(logistic_loglik, {"beta": jnp.zeros(args.k)}, name="logistic")
    B = args.batch
    rows = []

    first, run, res = timed(lambda d: jm.fit_batch(model, d, method="newton"), data)
    ours = np.asarray(res.params["beta"])
    rows.append({"contender": "jaxmle fit_batch (newton)", "fits/s": B / run, "run s": run,
                 "compile+first s": first, "converged": f"{int(np.asarray(res.converged).sum())}/{B}"})

    first_i, run_i, (beta_i, it_i) = timed(irls, data["X"], data["y"])
    rows.append({"contender": "hand-written IRLS (jax.numpy)", "fits/s": B / run_i, "run s": run_i,
                 "compile+first s": first_i, "converged": f"iters {int(it_i)}"})
    diff_irls = float(np.max(np.abs(ours - np.asarray(beta_i))))

    m = min(args.sample, B)
    sm_beta, sm_s = statsmodels_loop(data, m)
    rows.append({"contender": f"statsmodels Logit loop ({m} fits)", "fits/s": m / sm_s, "run s": sm_s * B / m})
    sp_beta, sp_s = scipy_loop(data, m)
    rows.append({"contender": f"scipy BFGS loop ({m} fits)", "fits/s": m / sp_s, "run s": sp_s * B / m})

    # The ready model: the same likelihood with R's glm start (one weighted LS step).
    ready = jm.models.logistic(args.k)
    first_r, run_r, res_r = timed(lambda d: jm.fit_batch(ready, d, method="newton"), data)
    rows.append({"contender": "jaxmle fit_batch, jm.models.logistic (GLM start)", "fits/s": B / run_r,
                 "run s": run_r, "compile+first s": first_r,
                 "converged": f"{int(np.asarray(res_r.converged).sum())}/{B}"})
    diff_ready = float(np.max(np.abs(np.asarray(res_r.params["beta"]) - ours)))

    print(f"B={B} logistic regressions, n={args.n}, k={args.k}, float64, {jax.devices()[0]}")
    print("(loop rows: 'run s' extrapolated to B from the subsample)\n")
    print_table(rows, ["contender", "fits/s", "run s", "compile+first s", "converged"])
    ratios = {
        "speedup_vs_statsmodels": rows[0]["fits/s"] / rows[2]["fits/s"],
        "speedup_vs_scipy": rows[0]["fits/s"] / rows[3]["fits/s"],
        "runtime_ratio_vs_irls": run / run_i,
        "ready_model_speedup_vs_statsmodels": rows[4]["fits/s"] / rows[2]["fits/s"],
        "ready_model_runtime_ratio_vs_irls": run_r / run_i,
        "max_abs_diff_ready_vs_plain": diff_ready,
        "max_abs_diff_vs_irls": diff_irls,
        "max_abs_diff_vs_statsmodels": float(np.max(np.abs(ours[:m] - sm_beta))),
    }
    print()
    for k, v in ratios.items():
        print(f"{k:>30}: {v:.3g}")
    write_json(args.json, {"args": vars(args), "rows": rows, "ratios": ratios})


if __name__ == "__main__":
    main()
