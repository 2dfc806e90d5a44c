"""The astronomer's star catalogue: the showcase behind ``jaxmle demo``.

Every star has a Poisson light curve lambda(t) = exp(a + b sin(w t) + c cos(w t))
sampled at its own exposure times; jaxmle fits all stars in one batched call.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ._fit import fit_batch
from ._model import Model
from ._status import Status

OMEGA = 2.0 * np.pi   # one cycle per unit of time, known to the astronomer


#: Calls after the first, timed: the fastest is the compiled fit's time.
WARM_CALLS = 5


def star_model() -> Model:
    """Poisson light-curve model with parameters a (log mean rate), b, c (modulation).

    The features sin(wt), cos(wt) and log(k!) depend on the data alone, so the
    model's ``prepare`` step computes them once per star, before the optimizer loop
    (as the scipy loop below does too), instead of at every evaluation.
    """

    def prepare(d):
        phase = OMEGA * d["t"]
        return {"sin": jnp.sin(phase), "cos": jnp.cos(phase), "counts": d["counts"],
                "log_k_factorial": jax.scipy.special.gammaln(d["counts"] + 1.0)}

    def loglik(p, d):
        # log Poisson(k | exp(eta)) = k eta - exp(eta) - log k!
        eta = p["a"] + p["b"] * d["sin"] + p["c"] * d["cos"]
        return d["counts"] * eta - jnp.exp(eta) - d["log_k_factorial"]

    def start(d, mask):
        # The usual GLM start: a = log of the star's mean count (a star with no counts
        # gives -inf and keeps the spec's 0), no modulation.
        return {"a": jnp.log(jnp.sum(jnp.where(mask, d["counts"], 0.0)) / jnp.sum(mask))}

    return Model(loglik, {"a": 0.0, "b": 0.0, "c": 0.0}, name="star_light_curve", prepare=prepare,
                 start=start)


def star_catalogue(seed: int = 0, n_stars: int = 10_000, n_exposures: int = 64, dtype=None):
    """A seeded synthetic catalogue: (data, truth) with data leaves of shape (n_stars, n_exposures)."""
    rng = np.random.default_rng(seed)
    truth = {
        "a": rng.uniform(1.0, 3.0, n_stars),
        "b": rng.normal(0.0, 0.3, n_stars),
        "c": rng.normal(0.0, 0.3, n_stars),
    }
    t = np.sort(rng.uniform(0.0, 3.0, (n_stars, n_exposures)), axis=1)
    eta = truth["a"][:, None] + truth["b"][:, None] * np.sin(OMEGA * t) + truth["c"][:, None] * np.cos(OMEGA * t)
    counts = rng.poisson(np.exp(eta)).astype(float)
    dtype = dtype or jax.dtypes.canonicalize_dtype(jnp.float64)
    data = {"t": jnp.asarray(t, dtype), "counts": jnp.asarray(counts, dtype)}
    return data, truth


def _scipy_loop(data, n: int, analytic_grad: bool = False):
    """What a user writes today: numpy log-likelihood + scipy BFGS, one star at a time.

    With ``analytic_grad`` the loop passes the gradient too (``jac=True``), the best a
    careful scipy user does; otherwise scipy uses finite differences.
    """
    from scipy import optimize
    from scipy.special import gammaln

    t = np.asarray(data["t"][:n], float)
    k = np.asarray(data["counts"][:n], float)
    out = np.empty((n, 3))
    start = time.perf_counter()
    for i in range(n):
        s, c, ki = np.sin(OMEGA * t[i]), np.cos(OMEGA * t[i]), k[i]
        const = gammaln(ki + 1).sum()

        def nll(th, s=s, c=c, ki=ki, const=const):
            eta = th[0] + th[1] * s + th[2] * c
            value = np.sum(np.exp(eta) - ki * eta) + const
            if not analytic_grad:
                return value
            r = np.exp(eta) - ki
            return value, np.array([r.sum(), r @ s, r @ c])

        out[i] = optimize.minimize(nll, np.zeros(3), jac=analytic_grad, method="BFGS").x
    return out, time.perf_counter() - start


def run_demo(n_stars=10_000, n_exposures=64, seed=0, compare=200, method="newton", out=print, progress=None):
    """Fit the catalogue, print status counts, accuracy, fits/s and the scipy comparison."""
    data, truth = star_catalogue(seed, n_stars, n_exposures)
    model = star_model()
    dtype = data["t"].dtype
    out(f"jaxmle demo: {n_stars:,} stars x {n_exposures} exposures, Poisson light curves "
        f"lambda(t) = exp(a + b sin wt + c cos wt)")
    out(f"device: {jax.devices()[0].platform.upper()} ({jax.device_count()} device(s)), dtype {np.dtype(dtype).name}, method {method}")

    # Chunks of equal shape (one compilation) give a progress bar in a terminal.
    chunk = max(1_000, -(-n_stars // 10))
    t0 = time.perf_counter()
    res = fit_batch(model, data, method=method, chunk_size=chunk, progress=progress)
    jax.block_until_ready(res.params)
    first = time.perf_counter() - t0
    # Later calls: same shapes, so the compiled fitter is reused (no retrace). Its programs
    # start quickly compiled and are compiled again fully optimised once their runs have
    # cost about as much (jaxmle._compile._Quick): the fastest of a few calls is the
    # compiled speed, the second call what a user calling twice sees.
    warm = []
    for _ in range(WARM_CALLS):
        t0 = time.perf_counter()
        res = fit_batch(model, data, method=method, chunk_size=chunk, progress=progress)
        jax.block_until_ready(res.params)
        warm.append(time.perf_counter() - t0)
    run = min(warm)
    rate = n_stars / run

    counts = res.status_counts()
    out("")
    out("status: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    out(f"iterations: median {np.median(np.asarray(res.n_iter)):g}, max {int(np.max(np.asarray(res.n_iter)))}")
    ok = np.asarray(res.converged)
    ci = res.conf_int(0.95)
    out("")
    out(f"{'param':>6}{'RMSE vs truth':>15}{'mean std err':>15}{'95% CI coverage':>17}")
    for name in ("a", "b", "c"):
        est = np.asarray(res.params[name])[ok]
        tr = truth[name][ok]
        rmse = float(np.sqrt(np.mean((est - tr) ** 2)))
        se = float(np.mean(np.asarray(res.stderr[name])[ok]))
        lo, hi = np.asarray(ci[name])[ok, 0], np.asarray(ci[name])[ok, 1]
        cover = float(np.mean((lo <= tr) & (tr <= hi)))
        out(f"{name:>6}{rmse:>15.4f}{se:>15.4f}{cover:>17.3f}")
    out("")
    out(f"first call (compile + fit): {first:.2f} s;  compiled fit: {run:.3f} s  ->  {rate:,.0f} fits/s")
    out(f"  (second call {warm[0]:.3f} s: programs start quickly compiled and are optimised once they "
        f"have run about as long as they took to compile; fastest of {len(warm)} calls above)")
    result = {"n_stars": n_stars, "fits_per_s": rate, "compile_and_fit_s": first, "fit_s": run,
              "second_call_s": warm[0], "warm_calls_s": warm, "status": counts}

    if compare:
        try:
            sp, secs = _scipy_loop(data, min(compare, n_stars))
        except ImportError:
            out("scipy not installed: skipping the comparison (pip install 'jaxmle[bench]')")
            return result
        n = sp.shape[0]
        sp_rate = n / secs
        ours = np.stack([np.asarray(res.params[k][:n]) for k in ("a", "b", "c")], axis=1)
        diff = float(np.max(np.abs(ours - sp)))
        out(f"scipy BFGS loop on {n} stars: {sp_rate:,.0f} fits/s  ->  jaxmle is {rate / sp_rate:,.0f}x faster "
            f"(max |difference| in estimates {diff:.1e}; scipy uses finite-difference gradients)")
        result.update(scipy_fits_per_s=sp_rate, speedup=rate / sp_rate, max_abs_diff=diff)
    n_bad = sum(v for k, v in counts.items() if k != Status.CONVERGED.name)
    if n_bad:
        out(f"note: {n_bad} fits did not converge cleanly; inspect them with res[i].summary()")
    return result
