"""Robustness on hard, published, certified problems: jaxmle's optimizers vs scipy, same starts.

Problems (``benchmarks/_robust_problems.py``; sources in its docstring):

* all 27 NIST StRD nonlinear regressions
  (https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml), both published starts,
  recast as Gaussian likelihoods ``norm.logpdf(y, f(b, x), sigma)`` with
  ``sigma = jm.Positive(s0)``, s0 the RMS residual at the start;
* 20 Moré-Garbow-Hillstrom (1981) test functions (ACM TOMS 7(1):17-41) as
  ``loglik = -0.5 * sum r_i(x)^2``, from x0 and 10*x0;
* statsmodels' badly scaled GLMs (star98 binomial, cpunish Poisson, scotland gamma);
* a zero-inflated Poisson on data with no inflation (the answer is AT_BOUNDARY);
* ``jm.fit_distribution("beta", x)`` on 32 observations.

Each (problem, start) is fitted by jaxmle's methods (``jm.fit(model, data, method=m,
init=start)``; every name in ``jaxmle.optimizers.METHODS`` that is asked for, others
skipped; ``method="lm"`` gets the same likelihood written with
``jm.models.nonlinear_regression``, least-squares problems only) and by scipy from the
same start: ``least_squares(method="lm")`` on the residuals (least-squares problems),
and ``minimize`` BFGS / trust-exact on the same negative log-likelihood in the same
unconstrained coordinates (log sigma), with exact JAX gradients and Hessians. All
defaults (tolerances, max_iter) on both sides.

Solved:
* NIST, GLM: every certified parameter to 6 significant digits, i.e. the log relative
  error LRE = -log10(|est - cert| / |cert|) >= 6 (NIST's convention; capped at 11, the
  certified digits). Where the mean function has exact symmetries (Lanczos' three
  interchangeable exponentials, Gauss's two peaks and the signs of their widths, ENSO's
  two cycles, MGH17's two exponentials, Eckerle4's sign of b1, b2) the certified values
  under any of them count too: the fitted curve is the same ("relabelled" in the JSON).
  GLM references are statsmodels' IRLS fits (tol 1e-13).
* MGH: F = sum r^2 within 1e-8 relative of the paper's global minimum (absolute 1e-10
  where it is 0), and the minimiser to 6 digits where it is unique and known. The paper
  prints minima to ~6 digits, so each nonzero minimum is taken to full precision by
  polishing the runs' end points with scipy's LM (tolerances 1e-15) and keeping the
  polished values that agree with the printed one; a run ending at another minimum the
  paper lists (a local one) is not solved, but its convergence claim is not false.
* ZIP: inflation < 1e-4 and log-rate to LRE 6 of log(mean y); jaxmle should say AT_BOUNDARY,
  and any claim of an interior optimum (CONVERGED, scipy's success) is false.
* beta: log-likelihood at least scipy.stats.beta.fit's, to 1e-8 relative.

Claimed: jaxmle's status is CONVERGED, or scipy's ``success``. A false claim is a claim on
a run that is not solved (except at a listed finite local minimum of an MGH function).

Per run the JSON (``benchmarks/results/robustness.json``) keeps the status, the claim,
iterations, the estimates, the LRE, the objective (NIST: residual sum of squares; MGH:
F = sum r^2; others: log-likelihood) and whether jaxmle's standard errors are finite.
Most of the time is XLA compilation (a few seconds per problem and method), so problems
run in ``--jobs`` worker processes and compiled programs go to a persistent cache
(``--cache``), which makes reruns several times faster.

    python benchmarks/robustness.py [--quick] [--detail] [--methods newton,bfgs,lbfgs,lm,auto]
                                    [--scipy lm,bfgs,trust-exact] [--only Misra,MGH] [--jobs 2]
                                    [--cache DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import tempfile
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import optimize  # noqa: E402

import jaxmle as jm  # noqa: E402
import _robust_problems as rp  # noqa: E402
from _common import machine, print_table  # noqa: E402

DEFAULT_METHODS = ["newton", "bfgs", "lbfgs", "lm", "auto"]
SCIPY_METHODS = ["lm", "bfgs", "trust-exact"]
RESIDUAL_METHODS = {"lm"}   # jaxmle methods that work on a model's residuals (jm.models.nonlinear_regression)
LRE_CAP = 11.0        # NIST certifies 11 significant digits
SOLVED_LRE = 6.0
MGH_REL = 1e-8
MGH_ZERO = 1e-10


def available_methods(requested: list[str]) -> list[str]:
    """The requested jaxmle methods that this jaxmle has ("auto" always; others from METHODS)."""
    have = set(getattr(jm.optimizers, "METHODS", {}))
    return [m for m in requested if m == "auto" or m in have]


# --------------------------------------------------------------------------- verification
def verify(problems: list[rp.Problem]) -> list[dict]:
    """Check every transcription against its published numbers before anything is timed.

    NIST: the RSS at the certified values equals the certified RSS to 1e-9 relative,
    plus the floor that rounding the certified values to 11 digits allows (only
    Lanczos1, certified RSS 1.4e-25, sits on that floor); the certified standard
    deviations, recomputed as sqrt(RSS/(n-p) diag((J'J)^-1)), agree to 1e-6; the data
    rows number the header's observations; each image of the certified values under
    an exact symmetry of the model has the same RSS. MGH: ||r(x0)|| equals the MINPACK test
    drivers' starting norms to 1e-12, and F is 0 at the minimisers the paper gives.
    ZIP: the simulated sample has fewer zeros than its Poisson fit predicts.
    """
    checks = []

    def check(prob, what, value, tol, ok=None):
        ok = bool(value <= tol) if ok is None else ok
        checks.append({"problem": prob.name, "check": what, "value": float(value), "tol": float(tol), "ok": ok})

    for p in problems:
        if p.family == "NIST":
            b = jnp.asarray(list(p.certified.values()))
            res = jax.jit(lambda bb, d, p=p: p.residuals(bb, d))
            r = np.asarray(res(b, p.data))
            J = np.asarray(jax.jit(jax.jacfwd(res))(b, p.data))
            rss = float(r @ r)
            floor = float(np.sum((np.abs(J) @ (np.abs(np.asarray(b)) * 5e-11)) ** 2))
            tol = 1e-9 * p.certified_rss + floor
            check(p, "RSS at certified values", abs(rss - p.certified_rss), tol)
            n, k = J.shape
            check(p, "rows vs header n", abs(n - p.reference["n_obs_header"]), 0)
            for eq in p.equivalents:
                r_eq = np.asarray(res(jnp.asarray(list(eq.values())), p.data))
                check(p, "symmetry image fits identically", abs(float(r_eq @ r_eq) - rss), 1e-12 * rss + floor)
            if floor < 1e-6 * p.certified_rss:
                se = np.sqrt(rss / (n - k) * np.diag(np.linalg.inv(J.T @ J)))
                cse = np.asarray(list(p.certified_se.values()))
                check(p, "certified SDs recomputed (max rel)", float(np.max(np.abs(se - cse) / cse)), 1e-6)
        elif p.family == "MGH":
            res = jax.jit(lambda bb, d, p=p: p.residuals(bb, d))
            for label, start in p.starts:
                if label in p.minpack_start_norm:
                    ref = p.minpack_start_norm[label]
                    nrm = float(np.linalg.norm(np.asarray(res(jnp.asarray(start["x"]), p.data))))
                    check(p, f"||r({label})|| vs MINPACK", abs(nrm - ref) / ref, 1e-12)
            for mm in p.minima:
                if mm.x is not None:
                    F = float(np.sum(np.asarray(res(jnp.asarray(mm.x, float), p.data)) ** 2))
                    check(p, f"F at published minimiser {mm.x}", F, 1e-20)
        elif p.family == "boundary":
            ref = p.reference
            check(p, "zeros below Poisson expectation", ref["n_zero"], ref["expected_zeros"],
                  ok=ref["n_zero"] < ref["expected_zeros"])
    return checks


# --------------------------------------------------------------------------- judging
def lre(est, cert, cap=LRE_CAP) -> float:
    """Minimum over components of -log10(|est - cert| / |cert|) (absolute error where cert = 0)."""
    est = np.atleast_1d(np.asarray(est, float))
    cert = np.atleast_1d(np.asarray(cert, float))
    if est.shape != cert.shape or not np.all(np.isfinite(est)):
        return 0.0
    err = np.abs(est - cert) / np.where(cert == 0, 1.0, np.abs(cert))
    with np.errstate(divide="ignore"):
        out = -np.log10(err)
    return float(np.clip(np.min(out), 0.0, cap))


def mgh_F(p: rp.Problem, x) -> float:
    r = np.asarray(p.residuals(jnp.asarray(np.asarray(x, float)), p.data))
    F = float(r @ r)
    return F if math.isfinite(F) else float("inf")


def judge(p: rp.Problem, params: dict | None, refs: dict) -> dict:
    """solved, the LRE / objective it rests on, and (MGH) which published minimum was reached."""
    if params is None:
        return {"solved": False, "lre": 0.0, "objective": None, "reached": None}
    if p.rule == "lre":
        # the certified values, or their image under an exact symmetry of the model (Lanczos'
        # interchangeable exponentials, a Gaussian peak's width sign): the same fitted curve
        scores = [min(lre(params[k], v) for k, v in c.items()) for c in [p.certified, *p.equivalents]]
        out = {"lre": max(scores), "relabelled": bool(np.argmax(scores) > 0)}
        if p.family == "NIST":
            r = np.asarray(p.residuals(jnp.asarray(p.b_of(params)), p.data))
            out["objective"] = float(r @ r)
        else:
            out["objective"] = -float(p.negll(jnp.asarray(p.to_z(params)), p.data))
        out["solved"] = out["lre"] >= SOLVED_LRE
        out["reached"] = None
        return out
    if p.rule == "mgh":
        F = mgh_F(p, params["x"])
        reached = None
        for mm, ref in zip(p.minima, refs["minima"]):
            if mm.f == 0:
                hit = F <= MGH_ZERO
            elif mm.at_infinity or ref is None:
                hit = abs(F - mm.f) <= mm.printed_tol
            else:
                hit = abs(F - ref) <= MGH_REL * ref
            if hit:
                reached = "global" if mm.is_global else ("local at inf" if mm.at_infinity else "local")
                break
        out = {"objective": F, "reached": reached,
               "lre": lre(params["x"], p.certified["x"], 15.0) if p.check_params else None}
        out["solved"] = reached == "global" and (not p.check_params or out["lre"] >= SOLVED_LRE)
        return out
    if p.rule == "boundary":
        pi = 1.0 / (1.0 + math.exp(-params["logit_pi"])) if params["logit_pi"] > -700 else 0.0
        value = lre(params["log_rate"], p.certified["log_rate"], 15.0)
        ll = -float(p.negll(jnp.asarray(p.to_z(params)), p.data))
        return {"solved": pi < 1e-4 and value >= SOLVED_LRE, "lre": value, "objective": ll,
                "reached": None, "inflation": pi}
    if p.rule == "loglik":
        ll = (p.accurate_loglik(params) if p.accurate_loglik is not None
              else -float(p.negll(jnp.asarray(p.to_z(params)), p.data)))
        ref = p.reference["loglik"]
        return {"solved": ll >= ref - 1e-8 * abs(ref), "objective": ll, "reached": None,
                "lre": min(lre(params[k], v, 15.0) for k, v in p.certified.items()),
                "loglik_minus_scipy_fit": ll - ref}
    raise ValueError(p.rule)


def false_claim(p: rp.Problem, row: dict) -> bool:
    """Claimed convergence, but not solved.

    Two exceptions: an MGH run that ends at a finite local minimum the paper lists
    (Freudenstein-Roth's 48.9842, Biggs' 5.65565e-3) is unsolved but its claim is
    true; on the ZIP every claim of an interior optimum is false, since there is none.
    """
    if not row["claimed"]:
        return False
    if p.rule == "boundary":
        return True
    if p.rule == "mgh" and row["reached"] == "local":
        return False
    return not row["solved"]


# --------------------------------------------------------------------------- runners
def _needs_residuals(err: Exception) -> bool:
    return isinstance(err, ValueError) and "residual" in str(err)


def run_jaxmle(p: rp.Problem, method: str, start: dict) -> dict | None:
    """One jaxmle fit; None where the method does not apply (a residual method off least squares).

    Methods that need a model's residual function (``method="lm"``) get the same
    likelihood written with ``jm.models.nonlinear_regression`` (``p.residual_model``).
    """
    if method in RESIDUAL_METHODS and p.residual_model is None:
        return None
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if p.fit is not None:
                res = p.fit(method, start)
            elif method in RESIDUAL_METHODS:
                model, data = p.residual_model()
                res = jm.fit(model, data, method=method, init=start, warn=False)
            else:
                try:
                    res = jm.fit(p.model, p.data, method=method, init=start, warn=False)
                except Exception as e:
                    if not _needs_residuals(e):
                        raise
                    if p.residual_model is None:
                        return None
                    model, data = p.residual_model()
                    res = jm.fit(model, data, method=method, init=start, warn=False)
            params = {k: (float(v) if np.ndim(v) == 0 else np.asarray(v, float)) for k, v in res.params.items()}
            status = jm.Status(int(res.status)).name
            # free parameters only: a Fixed one (sigma = 1 in the MGH residual models) has no SE
            se = [np.asarray(v) for k, v in res.stderr.items() if k in start]
            out = {"status": status, "claimed": status == "CONVERGED", "iters": int(res.n_iter),
                   "reported_loglik": float(res.loglik),
                   "se_finite": all(bool(np.all(np.isfinite(v))) for v in se), "params": params,
                   "stderr": {k: np.asarray(v, float) for k, v in res.stderr.items()}}
    except Exception as e:  # one failing fit must not lose the table
        out = {"status": f"ERROR({type(e).__name__})", "claimed": False, "iters": None,
               "se_finite": False, "params": None, "error": str(e).splitlines()[0][:200] if str(e) else ""}
    out["seconds"] = time.perf_counter() - t0
    return out


_MINIMIZE_STATUS = {0: "SUCCESS", 1: "MAXITER", 2: "PRECISION_LOSS", 3: "NAN"}
_LM_STATUS = {-1: "IMPROPER_INPUT", 0: "MAX_NFEV", 1: "GTOL", 2: "FTOL", 3: "XTOL", 4: "FTOL+XTOL"}


class ScipyFunctions:
    """JIT-compiled objective, gradient, Hessian and residual Jacobian for one problem."""

    def __init__(self, p: rp.Problem):
        self.vg = jax.jit(jax.value_and_grad(p.negll))
        self.hess = jax.jit(jax.hessian(p.negll))
        if p.residuals is not None:
            self.res = jax.jit(p.residuals)
            self.jac = jax.jit(jax.jacfwd(p.residuals))


def run_scipy(p: rp.Problem, fns: ScipyFunctions, method: str, start: dict) -> dict | None:
    """One scipy fit from the same start; None where the method does not apply (LM off least squares)."""
    if method == "lm" and p.residuals is None:
        return None
    d = p.data
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if method == "lm":
                r = optimize.least_squares(lambda b: np.asarray(fns.res(jnp.asarray(b), d)), p.b_of(start),
                                           jac=lambda b: np.asarray(fns.jac(jnp.asarray(b), d)), method="lm")
                params = p.with_b(r.x)
                status, iters = _LM_STATUS.get(r.status, str(r.status)), int(r.nfev)
            else:
                def fun(z):
                    v, g = fns.vg(jnp.asarray(z), d)
                    return float(v), np.asarray(g)

                kw = {"hess": lambda z: np.asarray(fns.hess(jnp.asarray(z), d))} if method == "trust-exact" else {}
                r = optimize.minimize(fun, p.to_z(start), jac=True,
                                      method={"bfgs": "BFGS"}.get(method, method), **kw)
                params = p.from_z(r.x)
                status, iters = _MINIMIZE_STATUS.get(r.status, f"STATUS_{r.status}"), int(r.nit)
            out = {"status": status, "claimed": bool(r.success), "iters": iters, "se_finite": None,
                   "params": params}
    except Exception as e:
        out = {"status": f"ERROR({type(e).__name__})", "claimed": False, "iters": None, "se_finite": None,
               "params": None, "error": str(e).splitlines()[0][:200] if str(e) else ""}
    out["seconds"] = time.perf_counter() - t0
    return out


def mgh_references(p: rp.Problem, runs: list[dict]) -> list[float | None]:
    """Full-precision values of the paper's nonzero minima, by polishing the runs' end points.

    Each end point with finite F is polished by scipy LM (xtol = ftol = gtol = 1e-15);
    a polished value within the printed precision of a listed minimum is a candidate,
    and the smallest candidate is the reference. None where no run got there (the
    printed value and its precision are used instead).
    """
    fn = jax.jit(p.residuals)
    jac = jax.jit(jax.jacfwd(p.residuals))
    polished = []
    points = [r["params"]["x"] for r in runs if r["params"] is not None and math.isfinite(mgh_F(p, r["params"]["x"]))]
    for x in points:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                s = optimize.least_squares(lambda b: np.asarray(fn(jnp.asarray(b), p.data)), x,
                                           jac=lambda b: np.asarray(jac(jnp.asarray(b), p.data)), method="lm",
                                           xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=2000)
            polished.append(float(2 * s.cost))
        except Exception:
            pass
    refs = []
    for mm in p.minima:
        if mm.f == 0 or mm.at_infinity:
            refs.append(None)
            continue
        cand = [F for F in polished if abs(F - mm.f) <= mm.printed_tol]
        refs.append(min(cand) if cand else None)
    return refs


# --------------------------------------------------------------------------- the benchmark
def run_problem(p: rp.Problem, methods: list[str], scipy_methods: list[str]) -> list[dict]:
    fns = ScipyFunctions(p)
    rows = []
    for label, start in p.starts:
        for m in methods:
            out = run_jaxmle(p, m, start)
            if out is not None:
                rows.append({"problem": p.name, "family": p.family, "start": label, "method": m,
                             "solver": "jaxmle", **out})
        for m in scipy_methods:
            out = run_scipy(p, fns, m, start)
            if out is not None:
                rows.append({"problem": p.name, "family": p.family, "start": label, "method": f"scipy-{m}",
                             "solver": "scipy", **out})
    refs = {"minima": mgh_references(p, rows) if p.rule == "mgh" else []}
    for row in rows:
        row.update(judge(p, row["params"], refs))
        row["false_claim"] = false_claim(p, row)
        if row["solver"] == "jaxmle" and p.family == "GLM" and row["solved"] and p.certified_se:
            se, ref = np.asarray(row["stderr"]["beta"]), p.certified_se["beta"]
            row["max_rel_se_diff"] = float(np.max(np.abs(se - ref) / ref)) if np.all(np.isfinite(se)) else None
        if row["solver"] == "jaxmle":
            row["status_expected"] = row["status"] == p.expected_status
    p.reference["mgh_minima_refs"] = refs["minima"]
    return rows



def _right_status(row) -> bool:
    """A solved run's status is right: CONVERGED, or the expected AT_BOUNDARY of a boundary problem."""
    if row["family"] == "boundary":
        return bool(row.get("status_expected"))
    return bool(row["claimed"])


def summarize(rows: list[dict], methods: list[str]) -> list[dict]:
    out = []
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        if not rs:
            continue
        solved = [r for r in rs if r["solved"]]
        fam = {f: [r for r in rs if r["family"] == f] for f in ("NIST", "MGH")}
        other = [r for r in rs if r["family"] not in fam]
        jax_side = rs[0]["solver"] == "jaxmle"
        out.append({
            "method": m,
            "solved": f"{len(solved)}/{len(rs)}",
            "NIST": f"{sum(r['solved'] for r in fam['NIST'])}/{len(fam['NIST'])}",
            "MGH": f"{sum(r['solved'] for r in fam['MGH'])}/{len(fam['MGH'])}",
            "GLM/other": f"{sum(r['solved'] for r in other)}/{len(other)}",
            "claimed conv": sum(r["claimed"] for r in rs),
            "false claims": sum(r["false_claim"] for r in rs),
            # A solved run says the right thing when it claims CONVERGED, or, for the ZIP
            # (whose answer is AT_BOUNDARY), when it says AT_BOUNDARY.
            "solved->right status": (sum(_right_status(r) for r in solved) / len(solved)) if solved else None,
            "solved->finite SE": ((sum(bool(r["se_finite"]) for r in solved) / len(solved)) if solved else None)
            if jax_side else None,
            "seconds": sum(r["seconds"] for r in rs),
        })
    return out


def describe_failure(r: dict) -> str:
    bits = [r["problem"], r["start"], r["status"]]
    if r.get("lre") is not None and r["family"] in ("NIST", "GLM"):
        bits.append(f"LRE {r['lre']:.1f}")
    elif r["family"] == "MGH":
        bits.append(f"F {r['objective']:.6g}" if r.get("objective") is not None else "F -")
        if r.get("reached"):
            bits.append(r["reached"] + " min")
        elif r.get("lre") is not None:
            bits.append(f"x LRE {r['lre']:.1f}")
    elif r["family"] == "boundary":
        bits.append(f"inflation {r.get('inflation', float('nan')):.2g}")
    if r["false_claim"]:
        bits.append("FALSE CLAIM")
    return " ".join(bits)


def use_compilation_cache(path: str | None) -> None:
    """JAX's persistent compilation cache: reruns skip most of the XLA compilation that dominates."""
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run_named(name: str, quick: bool, methods: list[str], scipy_methods: list[str], no_verify: bool,
              cache: str | None = None) -> dict:
    """Build one problem, verify its transcription, run every method from every start.

    A module-level function so that worker processes can run it.
    """
    use_compilation_cache(cache)
    t0 = time.perf_counter()
    p = rp.build(name, quick)
    if p.family == "GLM":
        rp.glm_references(p)
    checks = verify([p])
    rows = run_problem(p, methods, scipy_methods) if no_verify or all(c["ok"] for c in checks) else []
    for r in rows:
        r.pop("stderr", None)
        if r["params"] is not None:
            r["params"] = {k: np.asarray(v).tolist() for k, v in r["params"].items()}
        if p.accurate_loglik is not None and r.get("reported_loglik") is not None:
            r["reported_loglik_minus_accurate"] = r["reported_loglik"] - r["objective"]
    info = {"name": p.name, "family": p.family, "source": p.source, "difficulty": p.difficulty,
            "starts": [lab for lab, _ in p.starts], "expected_status": p.expected_status, "notes": p.notes,
            "seconds": time.perf_counter() - t0}
    if p.rule == "mgh":
        info["mgh_minima"] = [{"printed": mm.value, "global": mm.is_global, "at_infinity": mm.at_infinity,
                               "polished": ref} for mm, ref in zip(p.minima, p.reference["mgh_minima_refs"])]
    return {"name": name, "rows": rows, "checks": checks, "info": info}


def _run_star(args):
    """run_named in a worker; a problem that cannot be built or run is reported, not fatal."""
    try:
        return run_named(*args)
    except Exception as e:
        name = args[0]
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return {"name": name, "rows": [], "info": {"name": name, "error": msg},
                "checks": [{"problem": name, "check": f"build and run ({msg})", "value": 1.0, "tol": 0.0, "ok": False}]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help="jaxmle methods; names missing from jaxmle.optimizers.METHODS are skipped")
    ap.add_argument("--scipy", default=",".join(SCIPY_METHODS), help="scipy methods: lm, bfgs, trust-exact")
    ap.add_argument("--quick", action="store_true", help="a subset: 8 NIST, 7 MGH from x0, star98, ZIP, beta")
    ap.add_argument("--only", default="", help="comma-separated problem-name substrings")
    ap.add_argument("--detail", action="store_true", help="print every (problem, start, method) row")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="worker processes (problems are independent; XLA compilation dominates the time)")
    ap.add_argument("--no-verify", action="store_true", help="run a problem even if its transcription check fails")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "jaxmle-robustness-xla-cache"),
                    help="JAX persistent compilation cache directory ('' to disable); results do not depend on it")
    ap.add_argument("--json", default="benchmarks/results/robustness.json")
    args = ap.parse_args()

    requested = [m for m in args.methods.split(",") if m]
    methods = available_methods(requested)
    scipy_methods = [m for m in args.scipy.split(",") if m]
    skipped = [m for m in requested if m not in methods]
    names = rp.problem_names(quick=args.quick, only=[o for o in args.only.split(",") if o] or None)
    tasks = [(n, args.quick, methods, scipy_methods, args.no_verify, args.cache or None) for n in names]

    t0 = time.perf_counter()
    if args.jobs > 1:
        # spawn: fresh interpreters, no forked JAX runtime; the biggest problems go first
        order = sorted(tasks, key=lambda t: t[0] not in rp.NIST_NAMES)
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            done = {r["name"]: r for r in pool.imap_unordered(_run_star, order)}
        results = [done[n] for n in names]
    else:
        results = [_run_star(t) for t in tasks]
    total = time.perf_counter() - t0

    checks = [c for r in results for c in r["checks"]]
    bad = [c for c in checks if not c["ok"]]
    print(f"verify: {len(checks) - len(bad)}/{len(checks)} transcription checks pass")
    for c in bad:
        print(f"  FAILED {c['problem']}: {c['check']}: {c['value']:.3g} > {c['tol']:.3g}"
              + ("" if args.no_verify else " (problem not run)"))
    rows = [row for r in results for row in r["rows"]]

    all_methods = methods + [f"scipy-{m}" for m in scipy_methods]
    summary = summarize(rows, all_methods)
    n_runs = len({(r["problem"], r["start"]) for r in rows})
    print(f"\n{len(results)} problems, {n_runs} (problem, start) pairs; float64; {jax.devices()[0]}; "
          f"{total:.0f} s with {args.jobs} worker(s), mostly XLA compilation"
          + (f"; methods not in this jaxmle: {', '.join(skipped)}" if skipped else ""))
    print("solved: NIST/GLM every certified parameter to LRE >= 6; MGH the global minimum (F to 1e-8 rel, "
          "1e-10 abs at 0; x to 6 digits where unique);\nfalse claim: CONVERGED / scipy success but not solved "
          "(a listed local minimum excepted; ZIP: any interior-optimum claim)\n")
    print_table(summary, ["method", "solved", "NIST", "MGH", "GLM/other", "claimed conv", "false claims",
                          "solved->right status", "solved->finite SE", "seconds"])

    glm = [r for r in rows if r["family"] == "GLM" and r["solver"] == "jaxmle" and r["solved"]]
    if glm:
        print("\nGLM standard errors, max relative difference vs statsmodels (solved jaxmle fits):")
        for r in glm:
            d = r.get("max_rel_se_diff")
            print(f"  {r['problem']:>18} {r['method']:>8} {r['status']:>18}: "
                  + (f"{d:.2e}" if d is not None else "stderr not finite"))
    beta = [r for r in rows if r.get("reported_loglik_minus_accurate") is not None]
    if beta:
        worst = max(abs(r["reported_loglik_minus_accurate"]) for r in beta)
        print(f"\nbeta fit: jaxmle's reported loglik differs from scipy.stats' at the same estimate "
              f"by up to {worst:.1e}")

    print("\nNot solved (problem start status measure):")
    for m in all_methods:
        fails = [describe_failure(r) for r in rows if r["method"] == m and not r["solved"]]
        print(f"  {m} ({len(fails)}): " + ("; ".join(fails) if fails else "none"))
    wrong_status = [f"{r['problem']} {r['start']} {r['method']} {r['status']}" for r in rows
                    if r["solver"] == "jaxmle" and r["family"] == "boundary" and not r["status_expected"]]
    if wrong_status:
        print("  ZIP without AT_BOUNDARY: " + "; ".join(wrong_status))

    if args.detail and rows:
        print()
        detail = [{**{k: r.get(k) for k in ("problem", "start", "method", "status", "claimed", "solved", "lre")},
                   "objective": None if r.get("objective") is None else f"{r['objective']:.8g}",
                   **{k: r.get(k) for k in ("reached", "iters", "se_finite", "false_claim", "seconds")}}
                  for r in rows]
        print_table(detail, list(detail[0]))

    write_results(args.json, {"args": vars(args), "methods": all_methods, "methods_skipped": skipped,
                              "summary": summary, "verify": checks, "problems": [r["info"] for r in results],
                              "total_seconds": total}, rows)


def write_results(path: str, payload: dict, rows: list[dict]) -> None:
    """Like _common.write_json (machine info first), with one line per run row to keep the file small."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    head = json.dumps({"machine": machine(), **payload}, indent=2, default=float)
    body = ",\n".join("    " + json.dumps(r, default=float) for r in rows)
    with open(path, "w") as f:
        f.write(head[:-2] + ',\n  "rows": [\n' + body + "\n  ]\n}\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
