"""Text summaries of fit results: the statsmodels-like table and the batch spread."""

from __future__ import annotations

import textwrap

import jax
import numpy as np

from . import _predict, _stats
from ._status import Status, message


def _fmt(x, width=11):
    """A right-aligned number cell that always keeps a leading space as separator."""
    x = float(x)
    w = width - 1
    if not np.isfinite(x):
        text = "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    elif x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-4):
        text = f"{x:.3e}"
    else:
        text = f"{x:.5g}"
    return " " + f"{text:>{w}}"

def single(res, level: float = 0.95) -> str:
    """``FitResult.summary``: estimates, errors, z, p and Wald intervals, in spec order."""
    status = Status(int(res.status))
    kind = "MAP estimate" if res.is_map else "Maximum likelihood"
    lines = [
        f"{kind}: {res.model.name}    method: {res.method}    status: {status.name}",
        f"n_obs: {float(res.n_obs):g}    loglik: {float(res.loglik):.6g}    "
        f"AIC: {float(res.aic):.6g}    BIC: {float(res.bic):.6g}    "
        f"iterations: {int(res.n_iter)}",
        f"max |gradient|: {float(res.grad_norm):.3g}    "
        + ("no Hessian (too many parameters)" if res.hessian_skipped else
           f"information condition number (scaled): {float(res.cond):.3g}")
        + f"    dtype: {res.dtype}",
    ]
    note = _predict.summary_line(res)   # regressions: residual error, reduced chi-square, cov convention
    if note:
        lines.append(note)
    lo_hi = f"[{(1 - level) / 2:.3g}", f"{(1 + level) / 2:.3g}]"
    header = f"{'':>14}{'estimate':>11}{'std err':>11}{'z':>11}{'P>|z|':>11}{lo_hi[0]:>11}{lo_hi[1]:>11}"
    rule = "-" * len(header)
    lines += [rule, header, rule]
    est = np.asarray(res.estimate_flat)
    se = np.asarray(res.stderr_flat)
    z = np.asarray(res.zvalues)
    p = np.asarray(res.pvalues)
    ci = np.asarray(_stats.wald_interval(est, se, level))
    names = list(res.param_names)
    for i in _shown(len(names)):
        if i is None:
            lines.append(f"{'...':>14}   ({len(names) - MAX_ROWS} more; res.params holds them all)")
            continue
        lines.append(
            f"{names[i][:14]:>14}{_fmt(est[i])}{_fmt(se[i])}{_fmt(z[i])}{_fmt(p[i])}"
            f"{_fmt(ci[i, 0])}{_fmt(ci[i, 1])}"
        )
    spec = res.model.spec
    for name, fixed, v in zip(spec.leaf_names, spec.is_fixed, jax.tree_util.tree_leaves(res.params)):
        if fixed:
            lines.append(f"{name[:14]:>14}{_fmt(np.ravel(v)[0])}   (fixed)")
    lines.append(rule)
    if status != Status.CONVERGED:
        lines.append(f"WARNING: {message(status)}")
    if res.hessian_skipped:
        lines.append(textwrap.fill(f"NOTE: {res.stderr_note}", width=len(rule), subsequent_indent="      "))
    return "\n".join(lines)


# A table with more free parameters than this shows the first and last few rows only.
MAX_ROWS = 100


def _shown(m: int) -> list:
    """Row indices a table of m parameters shows, None marking the elided middle."""
    if m <= MAX_ROWS:
        return list(range(m))
    head = MAX_ROWS - 10
    return list(range(head)) + [None] + list(range(m - 10, m))

def batch(res) -> str:
    """``BatchFitResult.summary``: status counts and the spread of each estimate."""
    counts = ", ".join(f"{k}: {v}" for k, v in res.status_counts().items())
    ok = np.asarray(res.converged)
    est = np.asarray(res.estimate_flat)
    se = np.asarray(res.stderr_flat)
    lines = [
        f"{'MAP' if res.is_map else 'Maximum likelihood'} batch: {res.model.name}    "
        f"method: {res.method}    fits: {len(res)}    dtype: {res.dtype}",
        f"status: {counts}",
        f"iterations: median {np.median(np.asarray(res.n_iter)):g}, max {np.max(np.asarray(res.n_iter))}",
        "spread over converged fits:",
    ]
    header = f"{'':>14}{'mean':>11}{'std':>11}{'min':>11}{'median':>11}{'max':>11}{'mean se':>11}"
    lines += [header, "-" * len(header)]
    names = list(res.param_names)
    for i in _shown(len(names)):
        if i is None:
            lines.append(f"{'...':>14}   ({len(names) - MAX_ROWS} more)")
            continue
        col = est[ok, i] if ok.any() else np.array([np.nan])
        s = se[ok, i] if ok.any() else np.array([np.nan])
        lines.append(
            f"{names[i][:14]:>14}{_fmt(col.mean())}{_fmt(col.std())}{_fmt(col.min())}"
            f"{_fmt(np.median(col))}{_fmt(col.max())}{_fmt(np.mean(s))}"
        )
    if res.hessian_skipped:
        lines.append(textwrap.fill(f"NOTE: {res.stderr_note}", width=len(header), subsequent_indent="      "))
    return "\n".join(lines)
