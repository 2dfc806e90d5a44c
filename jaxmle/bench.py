"""Benchmark optimizers on your own model: ``jm.bench.compare``, traces and plots.

Example:
    >>> table = jm.bench.compare(model, data, methods=("newton", "lbfgs", "adam"))
    >>> print(table); table.to_markdown(); table.to_json()
    >>> jm.bench.plot(jm.bench.traces(model, data), "convergence.png")
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
import warnings
from typing import Any

import jax
import numpy as np

from ._fit import fit, fit_batch
from ._model import Model
from .optimizers import general_methods
from ._status import Status

COLUMNS = ["method", "converged", "iters (median)", "iters (max)", "f evals", "grad evals",
           "hess evals", "compile s", "run s", "fits/s", "loglik gap"]


@dataclasses.dataclass
class BenchTable:
    """Rows of a comparison, one per method; print it, or export markdown / JSON."""

    rows: list[dict]
    title: str = ""

    def to_markdown(self) -> str:
        head = "| " + " | ".join(COLUMNS) + " |"
        rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
        body = ["| " + " | ".join(_cell(r.get(c)) for c in COLUMNS) + " |" for r in self.rows]
        return "\n".join(([f"**{self.title}**", ""] if self.title else []) + [head, rule] + body)

    def to_json(self) -> str:
        return json.dumps({"title": self.title, "rows": self.rows}, indent=2, default=float)

    def __str__(self) -> str:
        widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in self.rows)) for c in COLUMNS}
        lines = [self.title] if self.title else []
        lines.append("  ".join(f"{c:>{widths[c]}}" for c in COLUMNS))
        lines.append("  ".join("-" * widths[c] for c in COLUMNS))
        for r in self.rows:
            lines.append("  ".join(f"{_cell(r.get(c)):>{widths[c]}}" for c in COLUMNS))
        return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not np.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        return f"{v:.3g}" if abs(v) < 1e3 else f"{v:,.0f}"
    return str(v)


def _run(model, data, method, batch, init, max_iter):
    kw = dict(method=method, init=init, max_iter=max_iter)
    if batch:
        res = fit_batch(model, data, nan_policy="status", **kw)
    else:
        res = fit(model, data, warn=False, **kw)
    jax.block_until_ready(res.status)
    return res


def compare(
    model: Model,
    data: Any,
    methods=None,
    batch: bool = False,
    repeats: int = 3,
    init: dict | None = None,
    max_iter: int | None = None,
    reference: float | None = None,
) -> BenchTable:
    """Fit the same model with several methods and tabulate speed and quality.

    Args:
        model, data: as for ``jm.fit`` (``jm.fit_batch`` with ``batch=True``).
        methods: method names (or optimizer instances); default every general
            method in the registry (``jm.optimizers.general_methods()``).
        batch: data carry a leading batch axis; report fits/s.
        repeats: timed runs after the compiling one; the median is reported.
        init: common start values.
        max_iter: iteration cap for every method (method defaults otherwise).
        reference: known optimum log-likelihood (per dataset with ``batch=True``), from
            outside the methods compared; gaps are then signed (rounding-level
            negatives mean "at the optimum") and a method exceeding it by more than
            1e-8 relative warns. Default: the best any method reached, so the best
            method's gap is 0 by construction.

    Returns:
        A ``BenchTable``: per method the fraction converged, median and max
        iterations, mean evaluation counts per fit, compile and run seconds, fits/s
        and the log-likelihood gap to the reference (median over a batch).
    """
    rows, lls = [], {}
    for method in general_methods() if methods is None else methods:
        name = method if isinstance(method, str) else method.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            res = _run(model, data, method, batch, init, max_iter)
            first = time.perf_counter() - t0
            runs = []
            for _ in range(max(1, int(repeats))):
                t0 = time.perf_counter()
                res = _run(model, data, method, batch, init, max_iter)
                runs.append(time.perf_counter() - t0)
        run = statistics.median(runs)
        status = np.atleast_1d(np.asarray(res.status))
        iters = np.atleast_1d(np.asarray(res.n_iter))
        evals = np.atleast_2d(np.asarray(res.evals))
        lls[name] = np.atleast_1d(np.asarray(res.logpost))
        rows.append({
            "method": name,
            "converged": float(np.mean(status == Status.CONVERGED)),
            "iters (median)": float(np.median(iters)),
            "iters (max)": int(iters.max()),
            "f evals": float(evals[:, 0].mean()),
            "grad evals": float(evals[:, 1].mean()),
            "hess evals": float(evals[:, 2].mean()),
            "compile s": max(first - run, 0.0),
            "run s": run,
            "fits/s": float(len(status) / run),
        })
    best = np.max(np.stack([np.where(np.isfinite(v), v, -np.inf) for v in lls.values()]), axis=0)
    if reference is not None:
        # Gaps to the given optimum, signed: a method at the optimum shows a gap at the
        # rounding level of the log-likelihood (either sign), never 0 by construction.
        over = np.max(best - reference)
        if over > 1e-8 * (1.0 + abs(float(np.max(np.abs(reference))))):
            warnings.warn(f"a method's log-likelihood exceeds the reference by {over:.3g}: the reference "
                          "is not the optimum of this problem", RuntimeWarning, stacklevel=2)
        best = np.asarray(reference, float)
    for row in rows:
        gap = best - lls[row["method"]]
        row["loglik gap"] = float(np.median(gap))
    return BenchTable(rows)


def traces(model: Model, data: Any, methods=None, length: int = 200, init=None, max_iter=None) -> dict:
    """Per-method convergence traces of one dataset.

    Returns:
        {method: {"logpost": (T,), "grad_norm": (T,), "seconds_per_iter": float,
        "n_iter": int}}: the start and the iterates, at most ``length`` of them.
    """
    out = {}
    for method in general_methods() if methods is None else methods:
        name = method if isinstance(method, str) else method.name
        res = fit(model, data, method=method, init=init, max_iter=max_iter, warn=False, trace=length)
        t0 = time.perf_counter()
        res = fit(model, data, method=method, init=init, max_iter=max_iter, warn=False, trace=length)
        secs = time.perf_counter() - t0
        n = int(res.n_iter)
        keep = min(n + 1, length)
        out[name] = {
            "logpost": np.asarray(res.trace["logpost"])[:keep],
            "grad_norm": np.asarray(res.trace["grad_norm"])[:keep],
            "seconds_per_iter": secs / max(n, 1),
            "n_iter": n,
        }
    return out


def plot(trace_dict: dict, path: str, best: float | None = None, title: str = "") -> str:
    """Draw log-likelihood gap vs iteration and vs time per method to a PNG.

    Needs matplotlib (``pip install 'jaxmle[bench]'``).
    """
    if best is None:
        best = max(float(np.nanmax(t["logpost"])) for t in trace_dict.values())
    return plot_problems({title: (trace_dict, best)}, path)


def plot_problems(problems: dict, path: str) -> str:
    """One row of (gap vs iteration, gap vs time) panels per problem.

    Args:
        problems: {title: (traces from ``traces()``, best log-likelihood)}.
        path: PNG file to write.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install 'jaxmle[bench]'") from e
    fig, axes = plt.subplots(len(problems), 2, figsize=(11, 3.4 * len(problems)), squeeze=False)
    for row, (title, (trace_dict, best)) in enumerate(problems.items()):
        for name, t in trace_dict.items():
            gap = np.maximum(best - t["logpost"], 1e-16)
            it = np.arange(len(gap))
            axes[row, 0].semilogy(it, gap, label=name)
            axes[row, 1].semilogy(it * t["seconds_per_iter"] * 1e3, gap, label=name)
        axes[row, 0].set_ylabel((f"{title}\n" if title else "") + "log-likelihood gap")
        axes[row, 0].set_xlabel("iteration")
        axes[row, 1].set_xlabel("time (ms)")
        for ax in axes[row]:
            ax.grid(True, which="both", alpha=0.3)
        axes[row, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


from . import _bench_problems as problems  # noqa: E402  (the problem suite)

__all__ = ["compare", "traces", "plot", "plot_problems", "BenchTable", "problems"]
