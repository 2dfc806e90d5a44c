"""Logistic regression on data bigger than memory: chunked Newton (and chunked L-BFGS) vs
mini-batch Adam vs statsmodels Logit vs scikit-learn LogisticRegression(penalty=None), and
data in memory: jaxmle's in-memory Newton (``memory``, blocked sums above
``jaxmle._solve.BLOCK_MIN_ROWS`` rows) vs glum's IRLS (``glum``, optional: ``pip install glum``).

n rows x k = 20 columns (a column of ones plus standard normals), float64. The data
are written once to ``.npy`` files in a temporary folder; jaxmle reads X and y as
``np.memmap`` chunk by chunk, so its peak memory is not the whole data, while
statsmodels and scikit-learn load X into memory (they need it there). Each method
runs in a fresh subprocess, which reports its wall time and its peak resident
memory (``VmHWM`` of /proc/self/status: the high-water mark of the process's
RSS, shared libraries, the JAX runtime and its compiler included; ``base_MB`` is
the RSS after the imports, before any data). ``resource.getrusage``'s
``ru_maxrss`` is not used: Linux carries it over from the parent process across
fork and exec, and the parent has just written the data.

glum runs ``GeneralizedLinearRegressor(family="binomial", alpha=0, solver="irls-cd",
gradient_tol=1e-10, fit_intercept=False)`` on a Fortran-ordered X (its fast layout);
its standard errors come from ``covariance_matrix(X, y, dispersion=1, robust=False)``,
timed separately (``se_s``; glum scales the covariance by n / (n - k), 1 + 1e-5 at
n = 10^6). The closing lines give the ratios jaxmle in memory (warm, SEs included)
over glum with and without its SEs.

Columns: ``fit_s`` the fit call (compilation included for jaxmle), ``warm_s`` a
second fit of the same shape in the same process (jaxmle's compiled programs are
cached; statsmodels and scikit-learn have nothing to cache), ``load_s`` reading X
into memory (in-memory methods), ``ll_digits`` / ``est_digits`` the correct digits
of the log-likelihood and of the estimates, and ``se_rel`` the largest relative
difference of the standard errors, all against an independent reference fit: statsmodels
Logit, Newton to a step below 1e-14 with its score checked at the optimum, run in its
own process (``--reference none`` skips it; no digits are then reported, rather than
digits against the best contender, which would give that contender 16 by construction).
The statsmodels contender runs at statsmodels' default tolerance, so its digits measure
that default stopping rule. ``mle_s`` is the time to the MLE: ``fit_s + load_s`` when
the estimates have at least 6 correct digits, else "-".

    python benchmarks/big_data.py --n 1000000                  # all methods
    python benchmarks/big_data.py --n 1000000 --memory         # chunked Newton at n and 10 n
    python benchmarks/big_data.py --n 10000000 --methods newton adam statsmodels sklearn
    python benchmarks/big_data.py --quick                       # n=2,000, seconds: a smoke run
    python benchmarks/big_data.py --pass --n 1000000            # one Newton pass vs the matmul floor

``--pass`` times one Newton pass (value, gradient and Hessian of the log-likelihood) over
n x 21 in-memory rows, in this process, against this machine's float64 matrix-multiply
rate: ``floor_numpy`` / ``floor_xla`` is X'X by NumPy's BLAS / by XLA (2 n k^2 flops, the
work of X' diag(w) X; ``x_floor`` is relative to the faster), ``gram_jnp``
one jitted X' diag(w) X; ``autodiff`` is the unblocked forward-over-reverse pass (the
program of fits below ``jaxmle._solve.BLOCK_MIN_ROWS`` rows), ``blocked`` the same
autodiff block by block (a model that only says ``rowwise = True``), ``gram`` the
blocked weighted-Gram pass of a ready GLM (``LinearPredictor``). Minimum of
``--repeats`` runs after a warm-up; all passes agree to rounding (``max_rel_diff``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

K = 20
HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, sys, time
import numpy as np

method, folder, chunk, batch, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

def peak_mb():
    # VmHWM, the peak RSS of this program. getrusage's ru_maxrss would do on most systems, but
    # Linux carries it over from the parent across fork + exec (the parent wrote the data).
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024

out = {"method": method}
if method in ("newton", "lbfgs", "adam"):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jaxmle as jm
    out["base_MB"] = rss_mb()
    X = np.load(os.path.join(folder, "X.npy"), mmap_mode="r")
    y = np.load(os.path.join(folder, "y.npy"), mmap_mode="r")
    model = jm.models.logistic(X.shape[1])
    if method in ("newton", "lbfgs"):
        fit = lambda: jm.fit(model, {"X": X, "y": y}, method=method, chunk_size=chunk, progress=False)
    else:
        fit = lambda: jm.fit(model, {"X": X, "y": y}, method="adam", batch_size=batch, epochs=epochs,
                             chunk_size=chunk, key=jax.random.key(0), progress=False, warn=False)
    t0 = time.perf_counter(); res = fit(); out["fit_s"] = time.perf_counter() - t0
    out["peak_MB"] = peak_mb()
    t0 = time.perf_counter(); res = fit(); out["warm_s"] = time.perf_counter() - t0
    out.update(loglik=float(res.loglik), beta=np.asarray(res.params["beta"]).tolist(),
               se=np.asarray(res.stderr["beta"]).tolist(), status=jm.Status(int(res.status)).name,
               n_iter=int(res.n_iter), passes=int(np.asarray(res.evals)[0]))
elif method == "memory":
    import jax
    jax.config.update("jax_enable_x64", True)
    import jaxmle as jm
    out["base_MB"] = rss_mb()
    t0 = time.perf_counter()
    X = np.load(os.path.join(folder, "X.npy")); y = np.load(os.path.join(folder, "y.npy"))
    out["load_s"] = time.perf_counter() - t0
    model = jm.models.logistic(X.shape[1])
    fit = lambda: jm.fit(model, {"X": X, "y": y})
    t0 = time.perf_counter(); res = fit(); _ = res.stderr; out["fit_s"] = time.perf_counter() - t0
    out["peak_MB"] = peak_mb()
    t0 = time.perf_counter(); res = fit(); _ = res.stderr; out["warm_s"] = time.perf_counter() - t0
    out.update(loglik=float(res.loglik), beta=np.asarray(res.params["beta"]).tolist(),
               se=np.asarray(res.stderr["beta"]).tolist(), status=jm.Status(int(res.status)).name,
               n_iter=int(res.n_iter))
elif method == "glum":
    import glum
    out["base_MB"] = rss_mb()
    t0 = time.perf_counter()
    X = np.asfortranarray(np.load(os.path.join(folder, "X.npy"))); y = np.load(os.path.join(folder, "y.npy"))
    out["load_s"] = time.perf_counter() - t0

    def fit():
        m = glum.GeneralizedLinearRegressor(family="binomial", alpha=0, solver="irls-cd", gradient_tol=1e-10,
                                            fit_intercept=False)
        t0 = time.perf_counter(); m.fit(X, y); t1 = time.perf_counter()
        cov = m.covariance_matrix(X, y, dispersion=1.0, robust=False)
        return m, cov, t1 - t0, time.perf_counter() - t1

    m, cov, out["fit_s"], out["se_s"] = fit()
    out["peak_MB"] = peak_mb()
    m, cov, fit_s, se_s = fit()
    out["warm_s"], out["warm_fit_s"] = fit_s + se_s, fit_s
    beta = np.asarray(m.coef_, float)
    eta = X @ beta
    out.update(loglik=float(np.sum(y * eta - np.logaddexp(0.0, eta))), beta=beta.tolist(),
               se=np.sqrt(np.diag(cov)).tolist(), status="CONVERGED" if m.n_iter_ < 100 else "MAX_ITER",
               n_iter=int(m.n_iter_))
elif method == "statsmodels":
    import statsmodels.api as sm
    out["base_MB"] = rss_mb()
    t0 = time.perf_counter()
    X = np.load(os.path.join(folder, "X.npy")); y = np.load(os.path.join(folder, "y.npy"))
    out["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter(); res = sm.Logit(y, X).fit(method="newton", disp=0); out["fit_s"] = time.perf_counter() - t0
    out["peak_MB"] = peak_mb()
    out.update(loglik=float(res.llf), beta=res.params.tolist(), se=res.bse.tolist(),
               status="CONVERGED" if res.mle_retvals["converged"] else "MAX_ITER",
               n_iter=int(res.mle_retvals["iterations"]))
elif method == "reference":
    import statsmodels.api as sm
    X = np.load(os.path.join(folder, "X.npy")); y = np.load(os.path.join(folder, "y.npy"))
    m = sm.Logit(y, X)
    res = m.fit(method="newton", tol=1e-14, maxiter=100, disp=0)
    score = float(np.max(np.abs(m.score(res.params))))
    out.update(loglik=float(res.llf), beta=res.params.tolist(), se=res.bse.tolist(), score_max=score,
               status="CONVERGED" if res.mle_retvals["converged"] and score < 1e-6 * len(y) ** 0.5 else "MAX_ITER",
               n_iter=int(res.mle_retvals["iterations"]))
elif method == "sklearn":
    from sklearn.linear_model import LogisticRegression
    out["base_MB"] = rss_mb()
    t0 = time.perf_counter()
    X = np.load(os.path.join(folder, "X.npy")); y = np.load(os.path.join(folder, "y.npy"))
    out["load_s"] = time.perf_counter() - t0
    # A tight tolerance: the default (1e-4) stops well short of 6 correct digits.
    clf = LogisticRegression(penalty=None, fit_intercept=False, solver="lbfgs", tol=1e-10, max_iter=10_000)
    t0 = time.perf_counter(); clf.fit(X, y); out["fit_s"] = time.perf_counter() - t0
    out["peak_MB"] = peak_mb()
    beta = clf.coef_.ravel()
    eta = X @ beta
    out.update(loglik=float(np.sum(y * eta - np.logaddexp(0.0, eta))), beta=beta.tolist(), se=None,
               status="CONVERGED" if clf.n_iter_[0] < 10_000 else "MAX_ITER", n_iter=int(clf.n_iter_[0]))
print(json.dumps(out))
"""


def write_data(folder: str, n: int, seed: int = 0, block: int = 1_000_000) -> float:
    """X (n, K) and y (n,) as .npy files, written block by block; returns X's size in MB."""
    rng = np.random.default_rng(seed)
    beta = np.linspace(-1.0, 1.0, K) * 0.3
    beta[0] = 0.5
    X = np.lib.format.open_memmap(os.path.join(folder, "X.npy"), mode="w+", dtype=np.float64, shape=(n, K))
    y = np.empty(n)
    for a in range(0, n, block):
        b = min(a + block, n)
        x = rng.standard_normal((b - a, K))
        x[:, 0] = 1.0
        X[a:b] = x
        y[a:b] = rng.uniform(size=b - a) < 1.0 / (1.0 + np.exp(-x @ beta))
    X.flush()
    del X
    np.save(os.path.join(folder, "y.npy"), y)
    return n * K * 8 / 2**20


def run_child(method, folder, chunk, batch, epochs, timeout):
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, method, folder, str(chunk), str(batch), str(epochs)],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        return {"method": method, "error": out.stderr.strip().splitlines()[-1][:200]}
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["process_s"] = time.perf_counter() - t0
    return row


def digits(value, reference) -> float:
    """Correct significant digits of ``value`` (scalar or array: the worst element, relative
    to the largest reference element), capped at 16."""
    value, reference = np.asarray(value, float), np.asarray(reference, float)
    rel = np.max(np.abs(value - reference)) / np.max(np.abs(reference))
    return float(min(16.0, -np.log10(max(rel, 1e-16))))


def compare(rows, reference):
    """Digits of log-likelihood and estimates, and SE differences, against the independent
    ``reference`` row (a tight statsmodels fit); without one, no digits are reported."""
    ok = [r for r in rows if "loglik" in r]
    if reference is None or "loglik" not in reference or reference.get("status") != "CONVERGED":
        for r in ok:
            r["mle_s"] = None
        return
    ref_se = np.asarray(reference["se"])
    for r in ok:
        r["ll_digits"] = digits(r["loglik"], reference["loglik"])
        r["est_digits"] = digits(r["beta"], reference["beta"])
        if r.get("se") is not None:
            r["se_rel"] = float(np.max(np.abs(np.asarray(r["se"]) - ref_se) / ref_se))
        r["mle_s"] = r["fit_s"] + r.get("load_s", 0.0) if r["est_digits"] >= 6 else None


def newton_pass(n: int, k: int = 21, repeats: int = 5) -> list:
    """Seconds per Newton pass (value, gradient, Hessian) by each route; see ``--pass``."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxmle as jm
    from jaxmle import _solve
    from jaxmle.optimizers._base import value_grad_hessian

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, k))
    X[:, 0] = 1.0
    y = (rng.uniform(size=n) < 0.5).astype(float)
    data = {"X": jnp.asarray(X), "y": jnp.asarray(y)}
    z = jnp.asarray(np.linspace(-0.1, 0.1, k))

    def timed(fn, *args):
        jax.block_until_ready(fn(*args))
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best = min(best, time.perf_counter() - t0)
        return best

    def jaxmle_pass(model, blocked: bool):
        saved = _solve.BLOCK_MIN_ROWS
        _solve.BLOCK_MIN_ROWS = 1 if blocked else n + 1
        try:
            fixed = model.spec.fixed_values(model.spec.natural_leaves(None), jnp.float64)

            @jax.jit
            def run(z, data):
                obj = _solve.make_objective(model, z.dtype, fixed, data, None, n)
                return value_grad_hessian(obj.mean, z, obj.bundle)

            run.lower(z, data)          # traced now, while the threshold is set
            out = run(z, data)
        finally:
            _solve.BLOCK_MIN_ROWS = saved
        return run, out

    logistic = jm.models.logistic(k)
    plain = jm.Model(logistic.loglik, {"beta": jnp.zeros(k)})   # no LinearPredictor declared
    plain.rowwise = True
    rows, outs = [], {}
    rows.append({"route": "floor_numpy", "s": timed(lambda a: a.T @ a, X)})
    rows.append({"route": "floor_xla", "s": timed(jax.jit(lambda a: a.T @ a), data["X"])})

    @jax.jit
    def gram_jnp(X, w):
        return (X * w[:, None]).T @ X

    rows.append({"route": "gram_jnp", "s": timed(gram_jnp, data["X"], data["y"])})
    for route, model, blocked in (("autodiff", logistic, False), ("blocked", plain, True), ("gram", logistic, True)):
        run, outs[route] = jaxmle_pass(model, blocked)
        rows.append({"route": route, "s": timed(run, z, data)})
    ref = outs["autodiff"]
    floor = min(rows[0]["s"], rows[1]["s"])
    for r in rows:
        r["x_floor"] = r["s"] / floor
        if r["route"] in outs:
            r["max_rel_diff"] = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
                                    for a, b in zip(outs[r["route"]], ref))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=32_768, help="rows per chunk (jaxmle)")
    ap.add_argument("--batch", type=int, default=4096, help="mini-batch rows (Adam)")
    ap.add_argument("--epochs", type=int, default=3, help="Adam epochs")
    ap.add_argument("--methods", nargs="+",
                    default=["newton", "lbfgs", "adam", "memory", "glum", "statsmodels", "sklearn"])
    ap.add_argument("--memory", action="store_true", help="chunked Newton at n and 10 n: peak memory flat")
    ap.add_argument("--reference", choices=["statsmodels", "none"], default=None,
                    help="independent reference fit for the digits columns (statsmodels Logit, tol 1e-14); "
                         "default statsmodels, none with --memory (it would load 10 n rows into memory)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: n=2,000, chunk 500, newton + statsmodels, JSON to a temporary folder")
    ap.add_argument("--pass", dest="pass_", action="store_true",
                    help="time one in-memory Newton pass by each route against the matmul floor")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per route (--pass)")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.reference is None:
        args.reference = "none" if args.memory else "statsmodels"
    if args.quick:
        args.n, args.chunk, args.batch, args.epochs = 2000, 500, 256, 2
        if args.methods == ap.get_default("methods"):
            args.methods = ["newton", "statsmodels"]
        args.json = args.json or os.path.join(tempfile.gettempdir(), "big_data_quick.json")
    sys.path.insert(0, HERE)
    from _common import print_table, write_json

    if args.pass_:
        rows = newton_pass(args.n, 21, args.repeats)
        print(f"\none Newton pass (value, gradient, Hessian), logistic, n={args.n:,} x 21, float64\n")
        print_table(rows, ["route", "s", "x_floor", "max_rel_diff"])
        path = args.json or os.path.join(HERE, "results", f"newton_pass_n{args.n:.0e}.json".replace("+0", ""))
        write_json(path, {"args": vars(args), "rows": rows})
        return

    rows, references = [], []
    with tempfile.TemporaryDirectory(prefix="jaxmle_big_") as folder:
        sizes = [args.n, 10 * args.n] if args.memory else [args.n]
        methods = ["newton"] if args.memory else args.methods
        for n in sizes:
            t0 = time.perf_counter()
            x_mb = write_data(folder, n)
            print(f"n={n:,}: wrote X ({x_mb:,.0f} MB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            group = []
            for method in methods:
                if method in ("sklearn", "glum"):
                    try:
                        __import__(method)
                    except ImportError:
                        print(f"{method} is not installed: skipped", file=sys.stderr)
                        continue
                row = run_child(method, folder, args.chunk, args.batch, args.epochs, args.timeout)
                row.update(n=n, X_MB=x_mb)
                print(f"  {method}: {json.dumps({k: v for k, v in row.items() if k not in ('beta', 'se')})}",
                      file=sys.stderr)
                group.append(row)
            ref = None
            if args.reference == "statsmodels":
                ref = run_child("reference", folder, args.chunk, args.batch, args.epochs, args.timeout)
                ref.update(n=n)
                print(f"  reference: {json.dumps({k: v for k, v in ref.items() if k not in ('beta', 'se')})}",
                      file=sys.stderr)
                if ref.get("status") != "CONVERGED":
                    print("  the reference fit failed: no digits reported", file=sys.stderr)
                references.append(ref)
            compare(group, ref)
            rows += group
    cols = ["n", "method", "status", "n_iter", "fit_s", "se_s", "warm_s", "load_s", "mle_s", "peak_MB", "base_MB",
            "X_MB", "ll_digits", "est_digits", "se_rel"]
    print(f"\nlogistic regression, k={K}, float64; jaxmle chunk_size={args.chunk:,}"
          + ("" if args.memory else f", Adam batch_size={args.batch} x {args.epochs} epochs")
          + ("; digits and se_rel against statsmodels Logit (Newton, tol 1e-14)" if args.reference != "none"
             else "; no reference fit: no digits") + "\n")
    print_table(rows, cols)
    for n in sorted({r["n"] for r in rows}):
        by = {r["method"]: r for r in rows if r["n"] == n and "warm_s" in r}
        if "memory" in by and "glum" in by:
            g = by["glum"]
            ratios = {"with_se": by["memory"]["warm_s"] / g["warm_s"],
                      "without_se": by["memory"]["warm_s"] / g["warm_fit_s"]}
            by["memory"]["vs_glum"] = ratios
            print(f"n={n:,}: jaxmle in memory (warm, with SEs) / glum irls-cd: {ratios['with_se']:.2f}x glum's time "
                  f"with its SEs, {ratios['without_se']:.2f}x without")
    name = "big_data_memory" if args.memory else "big_data"
    path = args.json or os.path.join(HERE, "results", f"{name}_n{args.n:.0e}.json".replace("+0", ""))
    write_json(path, {"args": vars(args), "rows": rows, "reference": references})


if __name__ == "__main__":
    main()
