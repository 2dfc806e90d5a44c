"""How long a user waits: each step timed in a fresh Python process, as a user meets it.

Steps (float64; every child process gets a fresh, empty persistent-cache directory, so
no child warms another, except the two children of step 10, which share one):

 1. first ``jm.fit`` of the README's normal model on 5 reaction times, standard errors
    read back to the host (timed from after the imports);
 2. then a fit of the same model on 7 points (a new data length);
 3. then a new ``jm.Model`` from a new lambda with the same code (a re-run notebook cell);
 4. then the first ``res.summary()`` of step 1's result;
 5. then its first ``res.conf_int(method="profile")``;
 6. first ``jm.fit_distribution("gamma", x)`` on 200 gamma draws (new process);
 7. ``jaxmle demo --compare 0`` as a user runs it: wall time, and the first-call and
    compiled-fit times it prints;
 8. ``jm.fit_batch`` of 10,000 logistic regressions (benchmarks/batch_logistic.py's
    data and log-likelihood): first and second (compiled) call;
 9. the command line: ``jaxmle --version`` and ``jaxmle fit exponential FILE --column x``, the
    latter twice with one cache directory (a shell loop: the second run is warm); step 7's
    demo also runs a second time with its first run's cache;
10. a second session: step 1 in two processes in a row sharing one cache directory
    (``JAXMLE_CACHE_DIR``; JAX's own ``JAX_COMPILATION_CACHE_DIR`` where this checkout
    of jaxmle has no persistent cache of its own): the second's first fit vs the first's.

Peers, each in a fresh process on the same normal model with parameters (mu, log sigma)
from the same start: optimistix BFGS (``optimistix.minimise``, jitted as a user would;
a separate time for standard errors from ``jax.hessian``), scipy.optimize.minimize
(BFGS) and iminuit (Migrad + Hesse); each also on the 7-point data. A peer that is not
installed is shown as "-".

Import time (``import jax`` / ``import jaxmle`` and the library's modules, the backend
start) is recorded apart from the steps; ``wall`` is the whole child process as seen
from outside.

    python benchmarks/latency.py [--repeats N] [--quick] [--json PATH]

``--repeats N`` runs every child N times (fresh each time) and reports min and median;
``--quick`` skips the slow steps (demo, batched logistic). Targets are those of the
latency issue (21); ratios are taken between medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MARK = "LATENCY_JSON:"

X5 = [240.0, 255.0, 261.0, 248.0, 271.0]
X7 = [240.0, 255.0, 261.0, 248.0, 271.0, 252.0, 266.0]

# The README's model, as the source of a notebook cell: executing it again builds a new
# lambda with the same code, as re-running the cell does.
MODEL_CELL = """
model = jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"]),
                 {"mu": 0.0, "sigma": jm.Positive(1.0)})
"""


# ---------------------------------------------------------------- child workers --

def _now():
    return time.perf_counter()


def _import_jaxmle(force=True):
    """(jax, jm, seconds): import jax (float64) and jaxmle, and start the backend.

    jaxmle's namespace is lazy, so its modules are loaded here by touching the names the
    steps use: their import cost stays out of the first fit's time.
    """
    t0 = _now()
    import jax

    jax.config.update("jax_enable_x64", True)
    import jaxmle as jm

    if force:
        jm.Model, jm.fit, jm.Positive, jm.fit_distribution, jm.fit_batch  # noqa: B018
    t1 = _now()
    jax.devices()
    t2 = _now()
    return jax, jm, {"import_s": t1 - t0, "backend_s": t2 - t1}


def _new_model(jax, jm):
    ns = {"jax": jax, "jm": jm}
    exec(compile(MODEL_CELL, "<cell>", "exec"), ns)
    return ns["model"]


def _on_host(res):
    """What a user reads: estimates and standard errors as Python floats."""
    return ({k: float(v) for k, v in res.params.items()}, {k: float(v) for k, v in res.stderr.items()})


def _cache_in_use(jax):
    try:
        return jax.config.jax_compilation_cache_dir or None
    except AttributeError:
        return None


def work_first_fit(args):
    """Step 1 alone (the children of step 10)."""
    jax, jm, out = _import_jaxmle()
    import jax.numpy as jnp

    # The data are made before the clock starts, as for optimistix (jnp.array compiles a
    # conversion program of its own, ~0.02 s, which neither library's fit should carry).
    x5 = jnp.array(X5)
    t0 = _now()
    res = jm.fit(_new_model(jax, jm), x5)
    est, se = _on_host(res)
    out["first_fit_s"] = _now() - t0
    out.update(mu=est["mu"], se_mu=se["mu"], cache_dir=_cache_in_use(jax))
    return out


def work_session(args):
    """Steps 1-5 in one process, in that order."""
    import warnings

    jax, jm, out = _import_jaxmle()
    import jax.numpy as jnp

    # Step 1: the first fit, standard errors on the host. The data are made before the
    # clock starts, as for optimistix.
    x5, x7 = jnp.array(X5), jnp.array(X7)
    t0 = _now()
    model = _new_model(jax, jm)
    res = jm.fit(model, x5)
    est, se = _on_host(res)
    out["first_fit_s"] = _now() - t0
    out.update(mu=est["mu"], se_mu=se["mu"], status=int(res.status))
    # Step 2: the same Model object on a new data length.
    t0 = _now()
    _on_host(jm.fit(model, x7))
    out["new_length_s"] = _now() - t0
    # Step 3: a new Model from a new lambda with the same code.
    t0 = _now()
    _on_host(jm.fit(_new_model(jax, jm), x5))
    out["new_model_s"] = _now() - t0
    # Step 4: the first summary of step 1's result.
    t0 = _now()
    text = res.summary()
    out["summary_s"] = _now() - t0
    assert "mu" in text
    # Step 5: the first profile-likelihood intervals, on the host.
    t0 = _now()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = res.conf_int(method="profile")
    ci = {k: [float(a) for a in jnp.ravel(jnp.asarray(v))] for k, v in ci.items()}
    out["profile_s"] = _now() - t0
    out.update(profile_mu=ci["mu"], cache_dir=_cache_in_use(jax))
    return out


def work_fit_distribution(args):
    import numpy as np

    jax, jm, out = _import_jaxmle()
    x = np.random.default_rng(0).gamma(2.0, 3.0, 200)
    t0 = _now()
    res = jm.fit_distribution("gamma", x)
    _on_host(res)
    out["first_s"] = _now() - t0
    return out


def work_batch_logistic(args):
    import warnings

    jax, jm, out = _import_jaxmle()
    sys.path.insert(0, HERE)
    from batch_logistic import logistic_loglik, make_data

    import jax.numpy as jnp

    t0 = _now()
    data = make_data(args.batch, 200, 5)
    jax.block_until_ready(data)
    out["data_s"] = _now() - t0
    model = jm.Model(logistic_loglik, {"beta": jnp.zeros(5)})
    for key in ("first_s", "second_s"):
        t0 = _now()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = jm.fit_batch(model, data)
        jax.block_until_ready((res.params, res.status))
        out[key] = _now() - t0
    out["converged"] = float(jnp.mean(res.converged))
    return out


def _peer_import(name):
    t0 = _now()
    try:
        __import__(name)
    except ImportError:
        return None
    return _now() - t0


def work_optimistix(args):
    t0 = _now()
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import optimistix as optx
    except ImportError:
        return {"missing": True}
    import jax.numpy as jnp
    import numpy as np

    t1 = _now()
    jax.devices()
    out = {"import_s": t1 - t0, "backend_s": _now() - t1}

    def nll(theta, x):
        return -jnp.sum(jax.scipy.stats.norm.logpdf(x, theta[0], jnp.exp(theta[1])))

    solver = optx.BFGS(rtol=1e-8, atol=1e-8)

    @jax.jit
    def solve(x):
        sol = optx.minimise(nll, solver, jnp.zeros(2), args=x, max_steps=1000, throw=False)
        return sol.value, sol.result == optx.RESULTS.successful

    hessian = jax.jit(jax.hessian(nll))
    for key, data in (("first_s", X5), ("new_length_s", X7)):
        x = jnp.array(data)
        t0 = _now()
        theta, ok = solve(x)
        theta = np.asarray(theta)
        out[key] = _now() - t0
        if key == "first_s":
            out.update(mu=float(theta[0]), converged=bool(ok))
            t0 = _now()
            se = np.sqrt(np.diag(np.linalg.inv(np.asarray(hessian(jnp.asarray(theta), x)))))
            out["stderr_s"] = _now() - t0
            out["se_mu"] = float(se[0])
    return out


def _np_nll(x):
    import numpy as np

    x = np.asarray(x)
    n, c = x.size, 0.5 * x.size * np.log(2 * np.pi)

    def nll(mu, log_sigma):
        s = np.exp(log_sigma)
        return 0.5 * np.sum(((x - mu) / s) ** 2) + n * log_sigma + c

    return nll


def work_scipy(args):
    t = _peer_import("scipy.optimize")
    if t is None:
        return {"missing": True}
    import numpy as np
    from scipy import optimize

    out = {"import_s": t}
    for key, data in (("first_s", X5), ("new_length_s", X7)):
        f = _np_nll(data)
        t0 = _now()
        r = optimize.minimize(lambda th: f(th[0], th[1]), np.zeros(2), method="BFGS")
        se = np.sqrt(np.diag(r.hess_inv))
        out[key] = _now() - t0
        if key == "first_s":
            out.update(mu=float(r.x[0]), se_mu=float(se[0]), converged=bool(r.success))
    return out


def work_iminuit(args):
    t = _peer_import("iminuit")
    if t is None:
        return {"missing": True}
    from iminuit import Minuit

    out = {"import_s": t}
    for key, data in (("first_s", X5), ("new_length_s", X7)):
        f = _np_nll(data)

        def cost(mu, log_sigma):
            return f(mu, log_sigma)

        t0 = _now()
        m = Minuit(cost, mu=0.0, log_sigma=0.0)
        m.errordef = Minuit.LIKELIHOOD
        m.migrad()
        m.hesse()
        out[key] = _now() - t0
        if key == "first_s":
            out.update(mu=float(m.values["mu"]), se_mu=float(m.errors["mu"]), converged=bool(m.valid))
    return out


WORKERS = {
    "first_fit": work_first_fit,
    "session": work_session,
    "fit_distribution": work_fit_distribution,
    "batch_logistic": work_batch_logistic,
    "optimistix": work_optimistix,
    "scipy": work_scipy,
    "iminuit": work_iminuit,
}


def worker_main(args) -> int:
    out = WORKERS[args.worker](args)
    print(MARK + json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------------- parent --

def _library_has_cache() -> bool:
    """Whether this checkout of jaxmle turns on a persistent cache of its own."""
    import importlib.util

    spec = importlib.util.find_spec("jaxmle._compile")
    if spec is None or not spec.origin:
        return False
    with open(spec.origin) as fh:
        return "JAXMLE_CACHE_DIR" in fh.read()


def _env(cache_dir: str, jax_env: bool) -> dict:
    """The child's environment: its persistent cache in ``cache_dir``.

    jaxmle defers to a cache directory the user gave JAX (``JAX_COMPILATION_CACHE_DIR``)
    and then keeps JAX's thresholds, so that variable is only set where the library has
    no cache of its own (``jax_env``); otherwise it is removed, and ``JAXMLE_CACHE_DIR``
    alone points the library's default cache at ``cache_dir``.
    """
    env = dict(os.environ)
    for k in [k for k in env if k.startswith("JAX_PERSISTENT_CACHE") or k == "JAX_COMPILATION_CACHE_DIR"]:
        del env[k]
    env["JAXMLE_CACHE_DIR"] = cache_dir
    if jax_env:
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


class Runner:
    def __init__(self, timeout: float, batch: int):
        self.timeout, self.batch = timeout, batch
        self.has_cache = _library_has_cache()
        self.tmp = tempfile.mkdtemp(prefix="jaxmle-latency-")
        self.failures: list[str] = []

    def fresh_cache(self) -> str:
        return tempfile.mkdtemp(prefix="cache-", dir=self.tmp)

    def command(self, argv: list[str], cache_dir: str | None = None, jax_env: bool = False):
        """(wall seconds, CompletedProcess) of one child process."""
        env = _env(cache_dir or self.fresh_cache(), jax_env)
        t0 = time.perf_counter()
        try:
            p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.failures.append(f"{' '.join(argv[-3:])}: timed out after {self.timeout:.0f} s")
            return time.perf_counter() - t0, None
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            self.failures.append(f"{' '.join(argv[-3:])}: exit {p.returncode}: {' | '.join(tail)}")
            return wall, None
        return wall, p

    def worker(self, name: str, cache_dir: str | None = None, jax_env: bool = False) -> dict | None:
        argv = [sys.executable, os.path.abspath(__file__), "--worker", name, "--batch", str(self.batch)]
        wall, p = self.command(argv, cache_dir, jax_env)
        if p is None:
            return None
        line = next((s for s in reversed(p.stdout.splitlines()) if s.startswith(MARK)), None)
        if line is None:
            self.failures.append(f"{name}: no result line")
            return None
        out = json.loads(line[len(MARK):])
        if out.get("missing"):
            return None
        out["wall_s"] = wall
        return out

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def _cli_argv() -> list[str]:
    """The console script next to this interpreter (as a user types ``jaxmle``), else -m."""
    script = os.path.join(os.path.dirname(sys.executable), "jaxmle")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "jaxmle.cli"]


DEMO_LINE = re.compile(r"first call \(compile \+ fit\): ([0-9.]+) s;\s+compiled fit: ([0-9.]+) s")
DEMO_SECOND = re.compile(r"\(second call ([0-9.]+) s")


def run_all(args) -> dict:
    """{job: [one dict per fresh child]}."""
    runner = Runner(args.timeout, args.batch)
    jobs: dict[str, list[dict]] = {}

    def add(job, out):
        jobs.setdefault(job, [])
        if out is not None:
            jobs[job].append(out)

    try:
        for rep in range(args.repeats):
            print(f"repeat {rep + 1}/{args.repeats}", flush=True)
            for name in ("session", "fit_distribution", "optimistix", "scipy", "iminuit"):
                print(f"  {name}", flush=True)
                add(name, runner.worker(name))
            if not args.quick:
                print("  batch_logistic", flush=True)
                add("batch_logistic", runner.worker("batch_logistic"))
                print("  demo", flush=True)
                demo_cache = runner.fresh_cache()
                wall, p = runner.command(_cli_argv() + ["demo", "--compare", "0"], demo_cache)
                out = None
                if p is not None:
                    m = DEMO_LINE.search(p.stdout)
                    m2 = DEMO_SECOND.search(p.stdout)
                    out = {"wall_s": wall, "first_call_s": float(m.group(1)) if m else None,
                           "compiled_s": float(m.group(2)) if m else None,
                           "second_call_s": float(m2.group(1)) if m2 else None}
                add("demo", out)
                # Run again with the first run's cache (saved programs): a second session.
                if p is not None:
                    wall, p = runner.command(_cli_argv() + ["demo", "--compare", "0"], demo_cache)
                    m = DEMO_LINE.search(p.stdout) if p is not None else None
                    add("demo_warm", {"wall_s": wall, "first_call_s": float(m.group(1)) if m else None}
                        if p is not None else None)
            print("  cli", flush=True)
            wall, p = runner.command(_cli_argv() + ["--version"])
            add("cli_version", {"wall_s": wall} if p is not None else None)
            csv = os.path.join(runner.tmp, "waits.csv")
            with open(csv, "w") as fh:
                fh.write("x\n" + "\n".join(f"{v:.4f}" for v in _exponential_draws()) + "\n")
            cli_cache = runner.fresh_cache()
            wall, p = runner.command(_cli_argv() + ["fit", "exponential", csv, "--column", "x"], cli_cache)
            add("cli_fit", {"wall_s": wall} if p is not None else None)
            # The same command again (a shell loop): its programs are in the cache now.
            wall, p = runner.command(_cli_argv() + ["fit", "exponential", csv, "--column", "x"], cli_cache)
            add("cli_fit_warm", {"wall_s": wall} if p is not None else None)
            print("  second session", flush=True)
            shared = runner.fresh_cache()
            first = runner.worker("first_fit", shared, jax_env=not runner.has_cache)
            second = runner.worker("first_fit", shared, jax_env=not runner.has_cache)
            if first and second:
                add("second_session", {"first_fit_s": first["first_fit_s"], "second_fit_s": second["first_fit_s"],
                                       "ratio": second["first_fit_s"] / first["first_fit_s"],
                                       "cache_dir_used": second.get("cache_dir") is not None})
            else:
                add("second_session", None)
    finally:
        runner.close()
    return {"jobs": jobs, "failures": runner.failures,
            "cache": "jaxmle (JAXMLE_CACHE_DIR)" if runner.has_cache else "JAX (JAX_COMPILATION_CACHE_DIR)"}


def _exponential_draws():
    import random

    rng = random.Random(0)
    return [rng.expovariate(1 / 3.0) for _ in range(40)]


def _stat(jobs, job, key):
    vals = [r[key] for r in jobs.get(job, []) if r.get(key) is not None]
    if not vals:
        return None, None
    return min(vals), statistics.median(vals)


# (label, job, key) rows of the time table.
ROWS = [
    ("import jax + jaxmle (session child)", "session", "import_s"),
    ("backend start", "session", "backend_s"),
    ("1 first fit + stderr (5 points)", "session", "first_fit_s"),
    ("2 new data length (7 points)", "session", "new_length_s"),
    ("3 new Model, same code", "session", "new_model_s"),
    ("4 first summary()", "session", "summary_s"),
    ("5 first conf_int(profile)", "session", "profile_s"),
    ("  session child wall", "session", "wall_s"),
    ("6 first fit_distribution(gamma, 200)", "fit_distribution", "first_s"),
    ("7 jaxmle demo --compare 0: wall", "demo", "wall_s"),
    ("7   demo first call (printed)", "demo", "first_call_s"),
    ("7   demo compiled fit (printed: fastest of 5)", "demo", "compiled_s"),
    ("7   demo second call (printed: quick tier)", "demo", "second_call_s"),
    ("8 fit_batch logistic 10k: first", "batch_logistic", "first_s"),
    ("8   second (compiled)", "batch_logistic", "second_s"),
    ("9 jaxmle --version: wall", "cli_version", "wall_s"),
    ("9 jaxmle fit exponential: wall", "cli_fit", "wall_s"),
    ("9   same command again (warm cache)", "cli_fit_warm", "wall_s"),
    ("7   demo again (warm cache): wall", "demo_warm", "wall_s"),
    ("7   demo again: first call (printed)", "demo_warm", "first_call_s"),
    ("10 first session: first fit", "second_session", "first_fit_s"),
    ("10 second session: first fit", "second_session", "second_fit_s"),
    ("optimistix BFGS: import jax + optimistix", "optimistix", "import_s"),
    ("optimistix BFGS: first call", "optimistix", "first_s"),
    ("optimistix BFGS: + stderr (jax.hessian)", "optimistix", "stderr_s"),
    ("optimistix BFGS: 7 points", "optimistix", "new_length_s"),
    ("scipy BFGS: import scipy.optimize", "scipy", "import_s"),
    ("scipy BFGS: first call", "scipy", "first_s"),
    ("scipy BFGS: 7 points", "scipy", "new_length_s"),
    ("iminuit Migrad+Hesse: import", "iminuit", "import_s"),
    ("iminuit Migrad+Hesse: first call", "iminuit", "first_s"),
    ("iminuit Migrad+Hesse: 7 points", "iminuit", "new_length_s"),
]


def _div(a, b):
    return None if a is None or b is None or b == 0 else a / b


def targets(jobs) -> list[dict]:
    """The latency issue's targets, each as a measured value against its limit (medians)."""
    def med(job, key):
        return _stat(jobs, job, key)[1]

    first = med("session", "first_fit_s")
    demo_first, demo_run = med("demo", "first_call_s"), med("demo", "compiled_s")
    rows = [
        ("first fit / optimistix first call", _div(first, med("optimistix", "first_s")), 1.0, "x (aim 0.5x)"),
        ("new data length / first fit", _div(med("session", "new_length_s"), first), 0.05, "x"),
        ("new Model / first fit", _div(med("session", "new_model_s"), first), 0.10, "x"),
        ("first summary()", med("session", "summary_s"), 0.030, "s"),
        ("first profile / first fit", _div(med("session", "profile_s"), first), 1.0, "x"),
        ("second session / first", med("second_session", "ratio"), 0.3, "x"),
        ("demo first call", demo_first, 2.0, "s"),
        ("demo first call / compiled fit", _div(demo_first, demo_run), 12.0, "x"),
        ("batched logistic first call", med("batch_logistic", "first_s"), 2.0, "s"),
        ("jaxmle --version", med("cli_version", "wall_s"), 0.5, "s"),
        ("jaxmle fit, warm cache (about 1 s)", med("cli_fit_warm", "wall_s"), 1.0, "s"),
    ]
    return [{"target": name, "value": v, "limit": lim, "unit": unit,
             "met": None if v is None else ("yes" if v <= lim else "no")} for name, v, lim, unit in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="fresh child processes per step (default 3)")
    ap.add_argument("--quick", action="store_true", help="skip the slow steps (demo, batched logistic)")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "latency.json"))
    ap.add_argument("--batch", type=int, default=10_000, help="batched logistic: number of fits (default 10000)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed to one child (default 900)")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args)

    t0 = time.perf_counter()
    got = run_all(args)
    jobs = got["jobs"]
    from _common import print_table, write_json   # imports JAX: only after the children ran

    rows = []
    for label, job, key in ROWS:
        lo, med = _stat(jobs, job, key)
        rows.append({"step": label, "min s": lo, "median s": med, "runs": len(jobs.get(job, []))})
    print()
    print_table(rows, ["step", "min s", "median s", "runs"])
    tg = targets(jobs)
    print()
    print_table([{**r, "value": None if r["value"] is None else round(r["value"], 4)} for r in tg],
                ["target", "value", "unit", "limit", "met"])
    for f in got["failures"]:
        print(f"failed: {f}")
    print(f"\n{args.repeats} repeat(s), persistent cache: {got['cache']}, total {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"benchmark": "latency", "args": vars(args), "python": sys.version.split()[0],
                           "xla_flags": os.environ.get("XLA_FLAGS"), "cache": got["cache"], "steps": rows,
                           "targets": tg, "runs": jobs, "failures": got["failures"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
