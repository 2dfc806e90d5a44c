"""Batched fitting on whatever device JAX has (GPU or CPU): fits/s, compile time, memory.

Three problems, each fitted by ``jm.fit_batch(model, data, method="newton")`` (public API
only) at several batch sizes B, in float32 and in float64:

* ``star``: the astronomer's catalogue (Poisson light curves with log-rate
  a + b sin wt + c cos wt, 3 parameters, n = 64 exposures), B = 10^5, 10^6, 10^7
  (``chunk_size=10**6`` above 10^6).
* ``logistic``: ``jm.models.logistic(5)``, n = 200 rows, B = 10^4, 10^5, 10^6.
* ``gauss2d``: Gpufit's own benchmark problem (their
  ``Gpufit_Cpufit_Performance_Comparison``): a circular 2-D Gaussian (amplitude, x0, y0,
  width as one sigma, offset) on a 5 x 5 pixel grid, each fit's truth (500, 2, 2, 1, 10)
  scaled by U(0.9, 1.1) per parameter, Gaussian noise at their SNR of 10 (sd 17.05),
  least squares written as a Gaussian log-likelihood with sigma known (``jm.Fixed``).
  ``gauss2d_poisson``: the same peak with Poisson counts, fitted by Poisson maximum
  likelihood (Gpufit's MLE estimator). B = 10^4, 10^5, 10^6 (add 1e7 with --gauss-sizes).
  Every fit starts at the nominal peak, i.e. its own truth perturbed by 1/U(0.9, 1.1);
  ``--gauss-init per-fit`` passes Gpufit's truth x U(0.9, 1.1) through ``init=``.

Per size, ``--calls`` (3) calls on fresh data of the same shape, each timed with the
standard errors (``batch.stderr``) and blocked on: the first call (compile + fit) is
reported apart from the second and from the steady state, the fastest of calls 2, 3
(a later call can still compile: fit_batch regroups straggling fits into power-of-two
buckets, and a bucket size not seen before compiles once). fits/s = B / steady. Also:
% CONVERGED, median |error| / median |truth| per parameter (converged fits), median
|error| / stderr (0.674 when the standard errors are right), the share of converged fits
with finite standard errors, and peak memory: the device allocator's
``peak_bytes_in_use`` where it has one, else the process's peak RSS. Each
(problem, dtype) runs in its own subprocess (float32 never sees ``jax_enable_x64``)
with sizes ascending, so a row's peak is its process's peak so far. ``--max-seconds``
(320) bounds the whole run: processes run in priority order (the order of --problems,
float32 first), each keeping ``--reserve-seconds`` (25) for every process after it, and a
size predicted not to fit is skipped and reported as skipped.

Data are drawn on the device with ``jax.random`` (the star catalogue has the
distribution of ``jaxmle._demo.star_catalogue``; logistic data as in
``batch_logistic.py``), brought to the host chunk by chunk and given to ``fit_batch``
whole, so the generator does not inflate the peak.

    PYTHONPATH=. python benchmarks/gpu.py [--out PATH] [--small] [--max-seconds 320]
        [--problems star,gauss2d,logistic,gauss2d_poisson] [--dtypes float32,float64]
        [--star-sizes 1e5,1e6,1e7] [--logistic-sizes 1e4,1e5,1e6] [--gauss-sizes 1e4,1e5,1e6]

The JSON goes to ``--out`` (default ``benchmarks/results/gpu_<platform>.json``, e.g.
gpu_cuda.json or gpu_cpu.json; ``--small`` adds ``_small``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

PROBLEMS = ("star", "gauss2d", "logistic", "gauss2d_poisson")   # default priority order
DEFAULT_SIZES = {"star": "1e5,1e6,1e7", "logistic": "1e4,1e5,1e6", "gauss2d": "1e4,1e5,1e6"}
SMALL_SIZE = 1000

OMEGA = 2.0 * math.pi          # as in jaxmle/_demo.py: one cycle per unit of time
GAUSS_SIZE = 5                 # Gpufit: 5 x 5 pixels
GAUSS_TRUTH = {"amplitude": 500.0, "x0": 2.0, "y0": 2.0, "width": 1.0, "offset": 10.0}
GAUSS_SNR = 10.0
# Gpufit's noise level: mean signal over the full-width-at-tenth-maximum area, / SNR.
GAUSS_NOISE_SD = 2 * math.pi * 500.0 * 1.0 ** 2 / (4.292 * 1.0) ** 2 / GAUSS_SNR

GPUFIT_NOTE = (
    "Gpufit (Przybylski et al., Sci. Rep. 7, 15722 (2017); github.com/gpufit/Gpufit) report a few "
    "million fits/s for this 2-D Gaussian problem (5x5 pixels, 5 parameters, LSE, Levenberg-Marquardt, "
    "float32, tolerance 1e-4 on the relative chi-square change, at most 10-20 iterations) on a "
    "GTX 1070/1080-class GPU: their published figure, not measured here. jaxmle runs with its "
    "default stopping rule (gradient-based, stricter) and each fit also returns standard errors."
)


# ----------------------------------------------------------------------------- parent


def _sizes(text: str) -> list[int]:
    return sorted({int(float(s)) for s in text.split(",") if s.strip()})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help=f"B = {SMALL_SIZE} for every problem (a quick check)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_<platform>.json)")
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--star-sizes", default=DEFAULT_SIZES["star"])
    ap.add_argument("--logistic-sizes", default=DEFAULT_SIZES["logistic"])
    ap.add_argument("--gauss-sizes", default=DEFAULT_SIZES["gauss2d"], help="both 2-D Gaussian variants")
    ap.add_argument("--chunk-size", type=int, default=1_000_000, help="chunk_size when B is larger")
    ap.add_argument("--exposures", type=int, default=64)
    ap.add_argument("--n", type=int, default=200, help="rows per logistic regression")
    ap.add_argument("--k", type=int, default=5, help="logistic coefficients")
    ap.add_argument("--gauss-init", choices=("nominal", "per-fit"), default="nominal",
                    help="start every fit at the nominal peak (500, 2, 2, 1, 10), i.e. its own truth "
                         "perturbed by 1/U(0.9, 1.1); or pass init= with truth x U(0.9, 1.1) per fit, "
                         "as Gpufit does (init= is checked per fit in Python: slow for large B)")
    ap.add_argument("--max-seconds", type=float, default=320.0,
                    help="wall-clock budget for all runs; a size predicted to overrun it is skipped")
    ap.add_argument("--reserve-seconds", type=float, default=25.0,
                    help="time kept back for each later (problem, dtype) process (at least its smallest size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calls", type=int, default=3,
                    help="fit_batch calls per size, fresh data each; steady state = fastest of calls 2..")
    ap.add_argument("--compact", choices=("auto", "on", "off"), default="auto",
                    help="fit_batch(compact=...): auto is jaxmle's default (on for 1024+ fits on one device)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="worker processes at a time (for quick CPU checks; keep 1 on a GPU and for timings)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--plan", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.calls < 2:
        ap.error("--calls must be at least 2 (a first call and a steady-state call)")
    if args.worker:
        return worker(args)

    problems = [p for p in args.problems.split(",") if p]   # also the priority order
    dtypes = [d for d in args.dtypes.split(",") if d]
    for p in problems:
        if p not in PROBLEMS:
            ap.error(f"unknown problem {p!r}; choose from {PROBLEMS}")
    for d in dtypes:
        if d not in ("float32", "float64"):
            ap.error(f"unknown dtype {d!r}")
    sizes = {p: [SMALL_SIZE] if args.small else _sizes(getattr(args, f"{_size_arg(p)}_sizes")) for p in problems}

    start = time.perf_counter()
    # One process per (problem, dtype) so each row's peak memory is its own; --small
    # groups the problems of a dtype in one process (start-up and imports dominate there).
    if args.small:
        jobs = [(d, problems) for d in dtypes]
    else:
        jobs = [(d, [p]) for p in problems for d in dtypes]
    rows, info, errors = _run_jobs(jobs, args, sizes, start, start + args.max_seconds)

    wall = time.perf_counter() - start
    plat = info.get("platform_name", "unknown")
    out = args.out or f"benchmarks/results/gpu_{plat}{'_small' if args.small else ''}.json"
    print(f"\n{info.get('device_kind', '?')} ({plat}), jax {info.get('jax', '?')}, "
          f"{info.get('device_count', '?')} device(s); total wall {wall:.0f}s\n")
    print_markdown(rows)
    print(f"\n{GPUFIT_NOTE}")
    payload = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    **{k: v for k, v in info.items() if k != "kind"}},
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "worker_out", "deadline")},
        "sizes": sizes,
        "total_wall_s": wall,
        "rows": rows,
        "errors": errors,
        "notes": {
            "gpufit_published": GPUFIT_NOTE,
            "first_s": "first fit_batch call on this shape: compile + fit + stderr (0 compile when "
                       "compile_cached, i.e. an earlier size had the same per-call shape)",
            "second_s": "second call, fresh data of the same shape, fit + stderr",
            "steady_s": "fastest of calls 2..calls (fresh data each; call_s lists them all); "
                        "fits_per_s = B / steady_s",
            "gen_s": "drawing one dataset of size B (not in any timing above)",
            "median_rel_err": "per parameter: median |estimate - truth| / median |truth|, converged fits",
            "median_abs_z": "per parameter: median |estimate - truth| / stderr; 0.674 for a standard normal",
            "peak_bytes": "device peak_bytes_in_use (or process peak RSS on a device without allocator "
                          "stats), peak so far in the (problem, dtype) process, sizes ascending",
            "gauss2d_noise_sd": GAUSS_NOISE_SD,
        },
    }
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(payload, f, indent=2, default=float)
    print(f"\nwrote {out}")
    return 1 if errors else 0


def _run_jobs(jobs, args, sizes, start, deadline):
    """Run one worker subprocess per (dtype, problem), ``args.jobs`` at a time, in order.

    Jobs run in priority order (the order of --problems, float32 before float64). Job i
    of N may run until the overall deadline minus ``--reserve-seconds`` for each job after
    it, so time a job does not need flows to the next; a size predicted to overrun is
    skipped. A worker still running a minute after its deadline is killed (the sizes it
    finished are kept: workers write a line per size).
    """
    pending, running, done, errors, info = list(enumerate(jobs)), {}, {}, [], {}
    while pending or running:
        while pending and len(running) < args.jobs:
            i, (dtype, group) = pending.pop(0)
            problem = ",".join(group)
            now = time.perf_counter()
            share = max(0.0, deadline - args.reserve_seconds * (len(jobs) - 1 - i) - now)
            path = tempfile.mkstemp(suffix=".jsonl")[1]
            err = tempfile.TemporaryFile("w+")
            plan = json.dumps({p: sizes[p] for p in group})
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", dtype, "--plan", plan,
                   "--worker-out", path, "--deadline", repr(time.time() + share)] + _forward(args)
            print(f"[{now - start:6.1f}s] start {dtype} {plan} (may run {share:.0f}s)", flush=True)
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
            running[i] = (proc, path, err, now + share + 60, dtype, problem)
        time.sleep(0.1)
        for i in list(running):
            proc, path, err, hard, dtype, problem = running[i]
            if proc.poll() is None and time.perf_counter() < hard:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                errors.append({"problem": problem, "dtype": dtype, "error": "killed: exceeded its time share"})
            elif proc.returncode != 0:
                err.seek(0)
                tail = err.read()[-3000:]
                errors.append({"problem": problem, "dtype": dtype, "returncode": proc.returncode,
                               "stderr_tail": tail})
                print(tail, file=sys.stderr)
            err.close()
            recs = []
            with open(path) as f:
                for line in f:
                    rec = json.loads(line)
                    if rec.get("kind") == "device":
                        info = info or rec
                    else:
                        recs.append(rec)
            os.unlink(path)
            print(f"[{time.perf_counter() - start:6.1f}s] done  {problem} {dtype}", flush=True)
            for rec in recs:
                _progress(rec)
            done[i] = recs
            del running[i]
    rows = [rec for i in sorted(done) for rec in done[i]]
    return rows, info, errors


def _size_arg(problem):
    return "gauss" if problem.startswith("gauss") else problem


def _forward(args):
    return ["--chunk-size", str(args.chunk_size), "--calls", str(args.calls), "--compact", args.compact,
            "--exposures", str(args.exposures), "--n", str(args.n), "--k", str(args.k),
            "--gauss-init", args.gauss_init, "--seed", str(args.seed)]


def _progress(r):
    if r.get("skipped"):
        print(f"    B={r['B']:>10,}  skipped: {r['skipped']}", flush=True)
    else:
        print(f"    B={r['B']:>10,}  first {r['first_s']:7.2f}s  steady {r['steady_s']:7.3f}s  "
              f"{r['fits_per_s']:>12,.0f} fits/s  converged {100 * r['converged_frac']:.1f}%", flush=True)


COLUMNS = [("problem", "problem"), ("dtype", "dtype"), ("B", "B"), ("chunk", "chunk_size"),
           ("compile+first s", "first_s"), ("2nd call s", "second_s"), ("steady s", "steady_s"),
           ("fits/s", "fits_per_s"),
           ("converged %", "converged_pct"), ("max med rel err", "max_median_rel_err"),
           ("med abs z", "median_abs_z_all"), ("SE finite %", "se_finite_pct"), ("peak MB", "peak_mb")]


def print_markdown(rows):
    print("| " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|")
    for r in rows:
        if r.get("skipped"):
            cells = [r["problem"], r["dtype"], f"{r['B']:,}", "", f"skipped: {r['skipped']}"]
            cells += [""] * (len(COLUMNS) - len(cells))
        else:
            r = dict(r, converged_pct=100 * r["converged_frac"], se_finite_pct=100 * r["se_finite_frac"],
                     peak_mb=None if r["peak_bytes"] is None else r["peak_bytes"] / 2 ** 20)
            cells = [_cell(r.get(k)) for _, k in COLUMNS]
            if r.get("compile_cached"):
                cells[4] += " (cached)"
        print("| " + " | ".join(cells) + " |")


def _cell(v):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    return str(v)


# ----------------------------------------------------------------------------- worker


def worker(args):
    dtype_name = args.worker
    import jax

    jax.config.update("jax_enable_x64", dtype_name == "float64")
    import jax.numpy as jnp
    import numpy as np

    import jaxmle as jm

    dtype = jnp.dtype(dtype_name)
    dev = jax.devices()[0]
    out = open(args.worker_out, "a")

    def emit(rec):
        out.write(json.dumps(rec, default=float) + "\n")
        out.flush()

    emit({"kind": "device", "device_kind": dev.device_kind, "device": str(dev), "platform": dev.platform,
          "platform_name": _platform_name(jax, dev), "jax": jax.__version__, "jaxlib": _jaxlib_version(),
          "device_count": jax.device_count(), "has_memory_stats": dev.memory_stats() is not None})

    for problem, sizes in json.loads(args.plan).items():
        model, generate, names = _problem(problem, args, jax, jnp, np, jm)
        _run_sizes(problem, sizes, model, generate, names, dtype_name, dtype, dev, emit, args, jax, np, jm)
    out.close()
    return 0


def _run_sizes(problem, sizes, model, generate, names, dtype_name, dtype, dev, emit, args, jax, np, jm):
    """Fit each size ``args.calls`` times, on fresh data each time; emit a row per size.

    The first call compiles; later calls can still compile a little (``fit_batch``
    regroups straggling fits into power-of-two buckets, and a bucket size not seen
    before compiles once), so the steady state is the fastest of calls 2..calls.
    """
    key = jax.random.key(args.seed)
    shapes_done, done = set(), []
    compact = {"auto": None, "on": True, "off": False}[args.compact]
    for B in sizes:
        base = {"problem": problem, "dtype": dtype_name, "B": B}
        chunk = args.chunk_size if B > args.chunk_size else None
        per_call = min(B, args.chunk_size)
        cached = per_call in shapes_done
        if done and args.deadline is not None:
            predicted = _predict(done, B, cached, args.calls)
            if time.time() + predicted > args.deadline:
                emit({**base, "skipped": f"predicted {predicted:.0f}s, more than the time left to it "
                                         f"under --max-seconds"})
                continue
        fit_kw = {"method": "newton", "chunk_size": chunk, "compact": compact}
        timings, gen_s = [], 0.0
        for call in range(args.calls):
            key, sub = jax.random.split(key)
            t0 = time.perf_counter()
            data, truth, init = generate(sub, B, dtype)
            gen_s = time.perf_counter() - t0
            kw = dict(fit_kw, init=init) if init is not None else fit_kw
            t0 = time.perf_counter()
            res = jm.fit_batch(model, data, **kw)
            se = res.stderr
            jax.block_until_ready((res.params, res.status, se))
            timings.append(time.perf_counter() - t0)
            if call < args.calls - 1:
                del res, se, data, truth, init
        shapes_done.add(per_call)
        steady = min(timings[1:])
        row = {**base, "chunk_size": chunk, "compile_cached": cached, "gen_s": gen_s,
               "first_s": timings[0], "second_s": timings[1], "steady_s": steady, "call_s": timings,
               "fits_per_s": B / steady, **_accuracy(res, se, truth, names, np, B), **_memory(dev)}
        emit(row)
        done.append(row)
        del res, se, data, truth


def _predict(done, B, cached, calls):
    """Seconds the next size will take: steady time as a + b B through the last two sizes
    (with one size, half of its time taken as fixed cost), generation linear in B, plus a
    compilation (the first call's excess) unless the per-call shape was compiled before."""
    last = done[-1]
    if len(done) >= 2:
        prev = done[-2]
        b = max((last["steady_s"] - prev["steady_s"]) / (last["B"] - prev["B"]), 0.0)
        b = max(b, 0.5 * last["steady_s"] / last["B"])
        a = max(last["steady_s"] - b * last["B"], 0.0)
    else:
        a = b = 0.5 * last["steady_s"]
        b /= last["B"]
    compile_s = 0.0 if cached else max(last["first_s"] - last["steady_s"], 0.0)
    return calls * (a + b * B) + calls * last["gen_s"] * B / last["B"] + compile_s


def _platform_name(jax, dev):
    if dev.platform != "gpu":
        return dev.platform
    version = str(getattr(dev.client, "platform_version", "")).lower()
    return "rocm" if "rocm" in version or "hip" in version else "cuda"


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # pragma: no cover - informational only
        return None


def _memory(dev):
    stats = dev.memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return {"peak_bytes": int(stats["peak_bytes_in_use"]), "memory_source": "device peak_bytes_in_use"}
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux
    return {"peak_bytes": int(kb) * 1024, "memory_source": "process peak RSS"}


def _accuracy(res, se, truth, names, np, B):
    status = np.asarray(res.status)
    ok = status == 0        # jm.Status.CONVERGED
    counts = res.status_counts()
    n_iter = np.asarray(res.n_iter)
    rel, absz, finite = {}, {}, np.ones(B, bool)
    for name in names:
        est = np.asarray(res.params[name], float).reshape(B, -1)
        s = np.asarray(se[name], float).reshape(B, -1)
        tr = np.asarray(truth[name], float).reshape(B, -1)
        finite &= np.all(np.isfinite(s), axis=1)
        err = np.abs(est - tr)[ok]
        for j in range(est.shape[1]):
            label = name if est.shape[1] == 1 else f"{name}[{j}]"
            if ok.any():
                rel[label] = float(np.median(err[:, j]) / np.median(np.abs(tr[ok, j])))
                absz[label] = float(np.median(err[:, j] / s[ok, j]))
            else:
                rel[label] = absz[label] = float("nan")
    zs = list(absz.values())
    return {
        "converged_frac": float(ok.mean()),
        "status_counts": counts,
        "n_iter_median": float(np.median(n_iter)),
        "n_iter_max": int(n_iter.max()),
        "median_rel_err": rel,
        "max_median_rel_err": max(rel.values()),
        "median_abs_z": absz,
        "median_abs_z_all": float(np.median(zs)) if zs else float("nan"),
        "se_finite_frac": float(finite[ok].mean()) if ok.any() else 0.0,
    }


# ----------------------------------------------------------------------------- problems


def _problem(problem, args, jax, jnp, np, jm):
    """(model, generate(key, B, dtype) -> (data, truth, init), parameter names)."""
    gen_chunk = 1_000_000

    def chunked(draw, B, dtype, key):
        """Draw B datasets on the device, gen_chunk at a time, into host arrays; one device_put."""
        host = None
        for c, lo in enumerate(range(0, B, gen_chunk)):
            m = min(gen_chunk, B - lo)
            part = jax.device_get(draw(jax.random.fold_in(key, c), m, dtype))
            if host is None:
                host = jax.tree_util.tree_map(lambda a: np.empty((B,) + a.shape[1:], a.dtype), part)
            for h, p in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(part)):
                h[lo:lo + m] = p
        data, truth = host
        return jax.device_put(data), truth

    if problem == "star":
        n = args.exposures

        from jaxmle._demo import OMEGA as DEMO_OMEGA, star_model   # after the worker set x64
        assert DEMO_OMEGA == OMEGA
        model = star_model()          # the demo's model: prepare computes sin, cos, log k! once

        @functools.partial(jax.jit, static_argnums=(1, 2))
        def draw(key, m, dtype):
            # The distribution of jaxmle._demo.star_catalogue (exposure order is irrelevant).
            ka, kb, kc, kt, kk = jax.random.split(key, 5)
            a = jax.random.uniform(ka, (m,), dtype, 1.0, 3.0)
            b = 0.3 * jax.random.normal(kb, (m,), dtype)
            c = 0.3 * jax.random.normal(kc, (m,), dtype)
            t = jax.random.uniform(kt, (m, n), dtype, 0.0, 3.0)
            eta = a[:, None] + b[:, None] * jnp.sin(OMEGA * t) + c[:, None] * jnp.cos(OMEGA * t)
            counts = jax.random.poisson(kk, jnp.exp(eta)).astype(dtype)
            return {"t": t, "counts": counts}, {"a": a, "b": b, "c": c}

        return model, lambda key, B, dtype: (*chunked(draw, B, dtype, key), None), ["a", "b", "c"]

    if problem == "logistic":
        n, k = args.n, args.k
        model = jm.models.logistic(k)

        @functools.partial(jax.jit, static_argnums=(1, 2))
        def draw(key, m, dtype):
            # As benchmarks/batch_logistic.py: intercept column, beta ~ N(0, 0.5^2).
            kx, kb, ky = jax.random.split(key, 3)
            X = jax.random.normal(kx, (m, n, k), dtype).at[..., 0].set(1.0)
            beta = 0.5 * jax.random.normal(kb, (m, k), dtype)
            p = jax.nn.sigmoid(jnp.einsum("bnk,bk->bn", X, beta))
            y = (jax.random.uniform(ky, (m, n), dtype) < p).astype(dtype)
            return {"X": X, "y": y}, {"beta": beta}

        return model, lambda key, B, dtype: (*chunked(draw, B, dtype, key), None), ["beta"]

    # Gpufit's 2-D Gaussian: pixel (ix, iy) at coordinates (ix, iy), ix, iy = 0..4.
    iy, ix = np.meshgrid(np.arange(GAUSS_SIZE), np.arange(GAUSS_SIZE), indexing="ij")
    gx, gy = ix.ravel().astype(float), iy.ravel().astype(float)
    names = list(GAUSS_TRUTH)
    poisson = problem == "gauss2d_poisson"

    def peak(p, dtype):
        r2 = (jnp.asarray(gx, dtype) - p["x0"]) ** 2 + (jnp.asarray(gy, dtype) - p["y0"]) ** 2
        return p["amplitude"] * jnp.exp(-0.5 * r2 / p["width"] ** 2) + p["offset"]

    if poisson:
        def prepare(d):
            # log Poisson(z | mu) = z log(mu / z) - (mu - z) + [z log z - z - log z!]: the first
            # two terms stay O(1) near the optimum and the bracket depends on the data alone,
            # so float32 rounding does not swamp the differences the line search compares
            # (z log mu and log z! are each ~3000 at the peak's centre).
            z = d["z"]
            safe = jnp.where(z > 0, z, 1.0)
            return {"z": z, "safe_z": safe,
                    "const": z * jnp.log(safe) - z - jax.scipy.special.gammaln(z + 1.0)}

        def loglik(p, d):
            mu = peak(p, d["z"].dtype)
            return d["z"] * jnp.log(mu / d["safe_z"]) - (mu - d["z"]) + d["const"]

        spec = {"amplitude": jm.Positive(500.0), "x0": 2.0, "y0": 2.0, "width": jm.Positive(1.0),
                "offset": jm.Positive(10.0)}
        model = jm.Model(loglik, spec, name="gauss2d_poisson_mle", prepare=prepare)
    else:
        def loglik(p, d):
            # Gaussian log-likelihood with known sigma: maximising it is least squares.
            r = (d["z"] - peak(p, d["z"].dtype)) / p["sigma"]
            return -0.5 * r * r - jnp.log(p["sigma"]) - 0.5 * math.log(2 * math.pi)

        spec = {"amplitude": 500.0, "x0": 2.0, "y0": 2.0, "width": jm.Positive(1.0), "offset": 10.0,
                "sigma": jm.Fixed(GAUSS_NOISE_SD)}
        model = jm.Model(loglik, spec, name="gauss2d_lse")

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def draw(key, m, dtype):
        kt, kn, ki = jax.random.split(key, 3)
        scale = jax.random.uniform(kt, (m, len(names)), dtype, 0.9, 1.1)
        truth = {nm: GAUSS_TRUTH[nm] * scale[:, i] for i, nm in enumerate(names)}
        mu = jax.vmap(lambda p: peak(p, dtype))(truth)
        if poisson:
            z = jax.random.poisson(kn, mu).astype(dtype)
        else:
            z = mu + GAUSS_NOISE_SD * jax.random.normal(kn, mu.shape, dtype)
        start = jax.random.uniform(ki, (m, len(names)), dtype, 0.9, 1.1)
        init = {nm: truth[nm] * start[:, i] for i, nm in enumerate(names)}
        return {"z": z}, (truth, init)

    def generate(key, B, dtype):
        data, (truth, init) = chunked(draw, B, dtype, key)
        return data, truth, (init if args.gauss_init == "per-fit" else None)

    return model, generate, names


if __name__ == "__main__":
    sys.exit(main())
