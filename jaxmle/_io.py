"""Results out of the process: pickling, plain dicts and JSON, pandas frames, ``.npz`` files.

A result keeps arrays, never functions: when pickled or saved it swaps its model
for a ``DetachedModel`` (parameter names and constraints, no log-density) and
drops the data it was fitted to. Everything computed from the stored arrays
(estimates, standard errors, Wald intervals, AIC/BIC, summaries, the delta
method) still works; what needs the log-density or the data (profile intervals,
sandwich covariances) says so with a ``DetachedError``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jax
import numpy as np

from ._constraints import Fixed, Interval, Positive, PositiveDefinite, Real, Simplex, SphereSimplex, StartSimplex
from ._params import ParamSpec
from ._stats import wald_interval
from ._status import Status

FORMAT = "jaxmle-result-1"
_CONSTRAINTS = {c.__name__: c for c in (Real, Positive, Interval, Simplex, PositiveDefinite, Fixed,
                                                  SphereSimplex, StartSimplex)}


class DetachedError(RuntimeError):
    """A result without its model function or data was asked for something that needs them."""


def detached_message(what: str) -> str:
    return (f"{what} needs the model's log-density and the data, but this result was unpickled or "
            "loaded from a file, which keeps the estimates, standard errors and covariance only. "
            "Refit to get it: res = jm.fit(model, data) (or jm.fit_batch)")


def _prior_gone(params):
    raise DetachedError(detached_message("the log-prior"))


class DetachedModel:
    """The part of a ``jm.Model`` a stored result keeps: name, parameter spec, prior or not.

    Args:
        name: the model's name.
        spec: its ``ParamSpec`` (names, shapes, constraints).
        has_prior: whether the fit was a MAP estimate.
    """

    def __init__(self, name: str, spec: ParamSpec, has_prior: bool = False):
        self.name, self.spec, self.has_prior = name, spec, bool(has_prior)

    @classmethod
    def of(cls, model) -> "DetachedModel":
        if isinstance(model, DetachedModel):
            return model
        return cls(model.name, model.spec, model.log_prior is not None)

    @property
    def log_prior(self):
        return _prior_gone if self.has_prior else None

    @property
    def param_names(self) -> list[str]:
        return self.spec.names

    @property
    def n_free(self) -> int:
        return self.spec.n_free

    def _gone(self, *args, **kwargs):
        raise DetachedError(detached_message("this"))

    loglik = logpost = loglik_sum = prepared = compiled = check_output = _gone

    def __repr__(self):
        return f"DetachedModel({self.name}, params={self.spec.leaf_names})"


# -- plain values ---------------------------------------------------------------

def plain(tree):
    """Arrays as Python floats/ints/lists, dicts (ParamDicts too) as plain dicts in their order."""
    if isinstance(tree, dict):
        return {k: plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [plain(v) for v in tree]
    if tree is None or isinstance(tree, (str, bool)):
        return tree
    return np.asarray(tree).tolist()


def json_safe(tree):
    """NaN and infinities as None (JSON has no NaN); numpy scalars as Python numbers."""
    if isinstance(tree, dict):
        return {str(k): json_safe(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [json_safe(v) for v in tree]
    if isinstance(tree, np.generic):
        tree = tree.item()
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


def status_names(codes):
    """Status codes (int or array) as their names (str or nested list)."""
    names = {int(s): s.name for s in Status}
    arr = np.asarray(codes)
    if arr.ndim == 0:
        return names.get(int(arr), str(int(arr)))
    return [status_names(c) for c in arr]


def to_dict(res, level: float = 0.95) -> dict:
    """Everything a report needs as plain Python values; see ``FitResult.to_dict``.

    Host NumPy throughout (the result's arrays are copied to the host, nothing compiles).
    """
    ci = np.asarray(wald_interval(res.estimate_flat, res.stderr_flat, level))
    out = {
        "model": res.model.name,
        "method": res.method,
        "estimator": "MAP" if res.is_map else "MLE",
        "dtype": str(res.dtype),
        "status": status_names(res.status),
        "converged": plain(res.converged),
        "loglik": plain(res.loglik),
        "n_obs": plain(res.n_obs),
        "n_iter": plain(res.n_iter),
        "grad_norm": plain(res.grad_norm),
        "aic": plain(res.aic),
        "bic": plain(res.bic),
        "param_names": list(res.param_names),
        "params": plain(res.params),
        "stderr": plain(res.stderr),
        "conf_int": {"level": level, **{n: plain(ci[..., i, :]) for i, n in enumerate(res.param_names)}},
        "cov": plain(res.cov),
        "boundary_params": res.boundary_params,
    }
    if getattr(res, "groups", None) is not None:
        out["groups"] = json_safe(plain(list(res.groups)))
    return out


def to_json(res, level: float = 0.95, **kwargs) -> str:
    """``to_dict`` as JSON text; NaN and infinities become null."""
    return json.dumps(json_safe(to_dict(res, level)), allow_nan=False, **kwargs)


def _pandas():
    try:
        import pandas as pd  # optional extra, imported on first use
    except ImportError:
        raise ImportError("to_frame needs pandas: python -m pip install pandas") from None
    return pd


def to_frame(res, level: float = 0.95):
    """A pandas DataFrame: one row per parameter (single fit) or per dataset (batch).

    A single fit's status name is in ``df.attrs["status"]``; a batch has a status column.
    """
    pd = _pandas()
    est = np.asarray(res.estimate_flat)
    se = np.asarray(res.stderr_flat)
    z, p = np.asarray(res.zvalues), np.asarray(res.pvalues)
    ci = np.asarray(wald_interval(est, se, level))
    names = list(res.param_names)
    if est.ndim == 1:
        df = pd.DataFrame({"estimate": est, "stderr": se, "z": z, "p": p,
                           "lower": ci[:, 0], "upper": ci[:, 1]},
                          index=pd.Index(names, name="parameter"))
        df.attrs["status"] = status_names(res.status)
    else:
        cols: dict[str, Any] = {"status": status_names(res.status), "converged": np.asarray(res.converged),
                                "loglik": np.asarray(res.loglik), "n_obs": np.asarray(res.n_obs),
                                "n_iter": np.asarray(res.n_iter)}
        for i, n in enumerate(names):
            cols.update({n: est[:, i], f"{n}_stderr": se[:, i], f"{n}_z": z[:, i], f"{n}_p": p[:, i],
                         f"{n}_lower": ci[:, i, 0], f"{n}_upper": ci[:, i, 1]})
        groups = getattr(res, "groups", None)
        index = (pd.Index(list(groups), name=getattr(res, "group_key", None) or "group")
                 if groups is not None else pd.RangeIndex(est.shape[0], name="dataset"))
        df = pd.DataFrame(cols, index=index)
    df.attrs["level"] = level
    return df


# -- .npz files -----------------------------------------------------------------

def _pack(tree, arrays: dict):
    """A tree of dicts/lists/arrays as a JSON layout; its arrays go to ``arrays``."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {"dict": [[k, _pack(v, arrays)] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        return {"list": [_pack(v, arrays) for v in tree]}
    key = f"a{len(arrays)}"
    arrays[key] = np.asarray(tree)
    return {"array": key}


def _unpack(layout, arrays):
    if layout is None:
        return None
    if "dict" in layout:
        return {k: _unpack(v, arrays) for k, v in layout["dict"]}
    if "list" in layout:
        return [_unpack(v, arrays) for v in layout["list"]]
    return arrays[layout["array"]]


def _describe_spec(spec: ParamSpec) -> list:
    out = []
    for name, path, con in zip(spec.leaf_names, spec._paths, spec.constraints):
        kind = type(con).__name__
        if _CONSTRAINTS.get(kind) is not type(con):
            raise TypeError(f"parameter {name!r} uses the constraint {kind}, which save() cannot "
                            "store; pickle the result instead")
        entry = {"path": list(path), "kind": kind, "init": np.asarray(con.init, float).tolist()}
        if isinstance(con, Interval):
            entry.update(lo=con.lo, hi=con.hi)
        out.append(entry)
    return out


def _as_lists(node):
    """Dicts keyed 0..n-1 (list containers of a spec, stored by index) back to lists."""
    if not isinstance(node, dict):
        return node
    out = {k: _as_lists(v) for k, v in node.items()}
    if out and all(isinstance(k, int) for k in out) and sorted(out) == list(range(len(out))):
        return [out[i] for i in range(len(out))]
    return out


def _rebuild_spec(entries: list) -> ParamSpec:
    tree: dict = {}
    for e in entries:
        cls = _CONSTRAINTS[e["kind"]]
        init = np.asarray(e["init"], float)
        node = tree
        for key in e["path"][:-1]:
            node = node.setdefault(key, {})
        node[e["path"][-1]] = cls(e["lo"], e["hi"], init=init) if cls is Interval else cls(init)
    return ParamSpec({k: _as_lists(v) for k, v in tree.items()})


def save(res, path, fields: tuple, batched: bool) -> None:
    """Write a result's arrays and a JSON header to one ``.npz`` (no pickle)."""
    arrays: dict = {}
    # cov through the property: a model's own convention (cov="gauss-newton") is what is saved.
    layout = {f: _pack(res.cov if f == "cov" else res._field(f), arrays) for f in fields}
    groups = getattr(res, "groups", None)
    meta = {
        "format": FORMAT, "kind": "BatchFitResult" if batched else "FitResult",
        "method": res.method, "model": res.model.name, "has_prior": res.is_map,
        "spec": _describe_spec(res.model.spec), "layout": layout, "n_terms": res._n_terms,
        "starts": json_safe(res.starts), "group_key": getattr(res, "group_key", None), "groups": None,
    }
    if groups is not None:
        labels = np.asarray(list(groups))
        if labels.dtype.kind in "biufU":
            arrays["__groups__"] = labels
            meta["groups"] = "array"
        else:
            meta["groups"] = [str(g) for g in groups]
    np.savez(path, __meta__=np.asarray(json.dumps(json_safe(meta))), **arrays)


def load(path) -> dict:
    """Read what ``save`` wrote: a dict with kind, model (detached), method, fields and extras."""
    with np.load(path, allow_pickle=False) as f:
        if "__meta__" not in f.files:
            raise ValueError(f"{path} is not a file written by jaxmle's save()")
        meta = json.loads(str(f["__meta__"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} has format {meta.get('format')!r}; this jaxmle reads {FORMAT!r}")
        arrays = {k: f[k] for k in f.files}
    groups = meta["groups"]
    if groups == "array":
        groups = arrays["__groups__"].tolist()
    model = DetachedModel(meta["model"], _rebuild_spec(meta["spec"]), meta["has_prior"])
    fields = {k: _unpack(v, arrays) for k, v in meta["layout"].items()}
    return {"kind": meta["kind"], "model": model, "method": meta["method"], "fields": fields,
            "n_terms": meta["n_terms"], "starts": meta["starts"], "groups": groups,
            "group_key": meta["group_key"]}


def state(res, fields: tuple) -> dict:
    """What pickling keeps: the fields as numpy arrays, the detached model, the labels."""
    to_np = lambda t: None if t is None else jax.tree_util.tree_map(np.asarray, t)  # noqa: E731
    return {"fields": {f: to_np(res._field(f)) for f in fields}, "model": DetachedModel.of(res.model),
            "method": res.method, "n_terms": res._n_terms, "starts": res.starts,
            "groups": getattr(res, "groups", None), "group_key": getattr(res, "group_key", None)}
