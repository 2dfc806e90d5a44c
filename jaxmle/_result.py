"""FitResult and BatchFitResult: immutable registered pytrees, natural-scale reporting, summaries."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import _postfit, _stats
from ._profile import profile_intervals
from ._status import Status, message

# The one list of a result's fields: the compiled fit returns a dict with exactly
# these keys, pytree flattening walks them in this order, and closed-form results
# fill the ones they lack from ``_absent``.
FIELDS = ("params", "z", "fixed", "loglik", "logpost", "status", "n_iter", "grad_norm",
          "n_obs", "cov", "cond", "boundary", "evals", "trace")


def _absent(name, lead, k, like):
    """The value of a field that a closed-form result does not compute (k natural elements)."""
    nan = lambda shape=(): jnp.full(lead + shape, jnp.nan)  # noqa: E731
    return {
        "fixed": [], "logpost": like, "n_iter": jnp.zeros(lead, jnp.int32), "grad_norm": nan(),
        "cov": nan((k, k)), "cond": nan(), "boundary": jnp.zeros(lead + (k,), bool),
        "evals": jnp.zeros(lead + (3,), jnp.int32), "trace": None,
    }[name]


class _ResultBase:
    """Fields and inference shared by single and batched results (batch axes lead).

    Results are immutable: every field is set once, at construction. The data the
    fit saw (for the sandwich covariance and profile intervals) are plain
    attributes, not pytree children: a result rebuilt by a JAX transform does not
    carry them.
    """

    def __init__(self, model, method, fields: dict, *, data=None, mask=None, n_terms=None,
                 starts=None):
        unknown = set(fields) ^ set(FIELDS)
        if unknown:
            raise ValueError(f"result fields mismatch: {sorted(unknown)}")
        init = dict(fields, model=model, method=method, _data=data, _mask=mask, _n_terms=n_terms,
                    starts=starts, _memo={})
        for name, value in init.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable; build a new result instead")

    @classmethod
    def closed_form(cls, model, method: str, **given):
        """A result from a closed-form estimate: fields not in ``given`` get NaN/empty values.

        ``given`` needs at least params, z, loglik, status and n_obs.
        """
        lead = jnp.shape(given["loglik"])
        k = len(model.param_names)
        fields = {f: given[f] if f in given else _absent(f, lead, k, given["loglik"])
                  for f in FIELDS}
        return cls(model, method, fields)

    def tree_flatten(self):
        return tuple(getattr(self, f) for f in FIELDS), (self.model, self.method)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(aux[0], aux[1], dict(zip(FIELDS, children)))

    # -- plain fields --------------------------------------------------------
    @property
    def converged(self):
        """True where the fit met the stopping rule with a valid optimum."""
        return self.status == Status.CONVERGED

    @property
    def param_names(self) -> list[str]:
        """Names of the free natural-scale elements, ordered as ``cov``."""
        return self.model.spec.names

    @property
    def boundary_params(self) -> list[str]:
        """Names of the parameters at a constraint edge or running off to infinity (any fit)."""
        flags = np.asarray(self.boundary).reshape(-1, len(self.param_names)).any(axis=0)
        return [n for n, b in zip(self.param_names, flags) if b]

    @property
    def is_map(self) -> bool:
        """True when the model has a prior: the estimate is a MAP estimate."""
        return self.model.log_prior is not None

    @property
    def k(self) -> int:
        """Number of free parameters (unconstrained dimensions)."""
        return self.model.n_free

    # -- inference -------------------------------------------------------------
    @property
    def estimate_flat(self):
        """Free natural-scale estimates as one flat vector (last axis), as ``cov``."""
        spec = self.model.spec
        leaves = jax.tree_util.tree_leaves(self.params)
        lead = jnp.shape(self.loglik)
        return jnp.concatenate(
            [jnp.reshape(v, lead + (-1,)) for v, f in zip(leaves, spec.is_fixed) if not f], axis=-1
        )

    @property
    def stderr_flat(self):
        return _stats.flat_stderr(self.cov)

    @property
    def stderr(self):
        """Standard errors shaped like ``params`` (NaN for fixed parameters)."""
        return self.model.spec.flat_to_tree(self.stderr_flat)

    @property
    def zvalues(self):
        return _stats.z_values(self.estimate_flat, self.stderr_flat)

    @property
    def pvalues(self):
        return _stats.p_values(self.zvalues)

    def conf_int(self, level: float = 0.95, method: str = "wald") -> dict:
        """Confidence intervals for the free parameters.

        Args:
            level: coverage, e.g. 0.95.
            method: "wald" (estimate +/- z * stderr on the natural scale) or
                "profile" (likelihood-ratio inversion with the other parameters
                re-optimised; asymmetric, respects constraints).

        Returns:
            {parameter name: array of shape ``param.shape + (2,)``} holding
            (lower, upper); batched results add the leading batch axis. A profile
            bound that runs into a constraint edge (or infinity) reports the edge,
            with a warning; ``profile_at_edge`` then holds those flags.
        """
        if method == "wald":
            flat = np.asarray(_stats.wald_interval(self.estimate_flat, self.stderr_flat, level))
        elif method == "profile":
            flat, edge = profile_intervals(self, level)
            self._memo["profile_at_edge"] = self._flat_to_named(edge)
            if edge.any():
                hit = [n for i, n in enumerate(self.param_names) if edge[..., i, :].any()]
                warnings.warn(
                    f"profile interval of {hit} reaches the constraint edge (or infinity) before "
                    "the likelihood-ratio threshold: the edge is reported as the bound",
                    stacklevel=2,
                )
        else:
            raise ValueError(f"unknown conf_int method {method!r}; available: 'wald', 'profile'")
        return self._flat_to_named(flat)

    @property
    def profile_at_edge(self) -> dict:
        """{name: bool array (..., *shape, 2)}: where the last profile interval's bound is an edge."""
        if "profile_at_edge" not in self._memo:
            raise AttributeError("profile_at_edge is set by conf_int(method='profile'); call that first")
        return self._memo["profile_at_edge"]

    def _flat_to_named(self, flat):
        """(..., m, 2) flat intervals -> {leaf name: (..., *shape, 2)}."""
        spec = self.model.spec
        lead = flat.shape[:-2]
        out, i = {}, 0
        for name, shape, fixed in zip(spec.leaf_names, spec.shapes, spec.is_fixed):
            if fixed:
                continue
            size = int(np.prod(shape, dtype=int))
            out[name] = flat[..., i : i + size, :].reshape(lead + shape + (2,))
            i += size
        return out

    @property
    def cov_robust(self):
        """Sandwich (HC0) covariance of the free natural-scale parameters."""
        return _postfit.robust_cov(self)

    @property
    def stderr_robust(self):
        """Sandwich standard errors shaped like ``params``."""
        return self.model.spec.flat_to_tree(_stats.flat_stderr(self.cov_robust))

    def derived(self, fn):
        """(estimate, stderr) of ``fn(params)`` by the delta method.

        Example:
            >>> est, se = res.derived(lambda p: p["sigma"] / p["mu"])
        """
        return _postfit.derived(self, fn)

    @property
    def aic(self):
        return _stats.information_criteria(self.loglik, self.k, self.n_obs)[0]

    @property
    def bic(self):
        return _stats.information_criteria(self.loglik, self.k, self.n_obs)[1]

    @property
    def aicc(self):
        return _stats.information_criteria(self.loglik, self.k, self.n_obs)[2]


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


@jax.tree_util.register_pytree_node_class
class FitResult(_ResultBase):
    """The result of ``jm.fit``: estimates on the natural scale and their inference.

    Attributes:
        params: dict shaped like the spec, natural-scale estimates.
        loglik: maximised log-likelihood (without the prior for MAP fits).
        status: ``jm.Status`` code; ``converged`` is ``status == CONVERGED``.
        n_iter, grad_norm: iterations used and max |d loglik / dz| at the end.
        n_obs: number of observations (masked ones excluded).
        cov: covariance of the free natural-scale parameters, ordered as ``param_names``.
        cond: condition number of the information matrix scaled to unit diagonal
            (unconstrained coordinates): independent of the parameters' units.
        boundary: bool per element of ``param_names``: at a constraint edge, or
            running off to infinity (status ``AT_BOUNDARY``).
    """

    def summary(self, level: float = 0.95) -> str:
        """A statsmodels-like text table of estimates, errors, z, p and intervals."""
        status = Status(int(self.status))
        kind = "MAP estimate" if self.is_map else "Maximum likelihood"
        lines = [
            f"{kind}: {self.model.name}    method: {self.method}    status: {status.name}",
            f"n_obs: {float(self.n_obs):g}    loglik: {float(self.loglik):.6g}    "
            f"AIC: {float(self.aic):.6g}    BIC: {float(self.bic):.6g}    "
            f"iterations: {int(self.n_iter)}",
            f"max |gradient|: {float(self.grad_norm):.3g}    "
            f"information condition number (scaled): {float(self.cond):.3g}",
        ]
        lo_hi = f"[{(1 - level) / 2:.3g}", f"{(1 + level) / 2:.3g}]"
        header = f"{'':>14}{'estimate':>11}{'std err':>11}{'z':>11}{'P>|z|':>11}{lo_hi[0]:>11}{lo_hi[1]:>11}"
        rule = "-" * len(header)
        lines += [rule, header, rule]
        est = np.asarray(self.estimate_flat)
        se = np.asarray(self.stderr_flat)
        z = np.asarray(self.zvalues)
        p = np.asarray(self.pvalues)
        ci = np.asarray(_stats.wald_interval(est, se, level))
        for i, name in enumerate(self.param_names):
            lines.append(
                f"{name[:14]:>14}{_fmt(est[i])}{_fmt(se[i])}{_fmt(z[i])}{_fmt(p[i])}"
                f"{_fmt(ci[i, 0])}{_fmt(ci[i, 1])}"
            )
        spec = self.model.spec
        for name, fixed, v in zip(spec.leaf_names, spec.is_fixed, jax.tree_util.tree_leaves(self.params)):
            if fixed:
                lines.append(f"{name[:14]:>14}{_fmt(np.ravel(v)[0])}   (fixed)")
        lines.append(rule)
        if status != Status.CONVERGED:
            lines.append(f"WARNING: {message(status)}")
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


@jax.tree_util.register_pytree_node_class
class BatchFitResult(_ResultBase):
    """The result of ``jm.fit_batch``: every field of ``FitResult`` with a leading axis B.

    ``batch[i]`` is the i-th fit as a ``FitResult``.
    """

    def __len__(self):
        return int(np.shape(self.status)[0])

    def __getitem__(self, i) -> FitResult:
        if not isinstance(i, (int, np.integer)):
            raise TypeError("index a BatchFitResult with an int; use jax.tree_util.tree_map to slice")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a batch of {n} fits")
        take = lambda t: None if t is None else jax.tree_util.tree_map(lambda a: a[i], t)  # noqa: E731
        fields = {f: take(getattr(self, f)) for f in FIELDS}
        return FitResult(self.model, self.method, fields, data=take(self._data), mask=take(self._mask),
                         n_terms=self._n_terms)

    def status_counts(self) -> dict[str, int]:
        codes = np.asarray(self.status)
        return {s.name: int((codes == s).sum()) for s in Status if (codes == s).any()}

    def summary(self) -> str:
        """Status counts and the spread of each estimate across the batch."""
        counts = ", ".join(f"{k}: {v}" for k, v in self.status_counts().items())
        ok = np.asarray(self.converged)
        est = np.asarray(self.estimate_flat)
        se = np.asarray(self.stderr_flat)
        lines = [
            f"{'MAP' if self.is_map else 'Maximum likelihood'} batch: {self.model.name}    "
            f"method: {self.method}    fits: {len(self)}",
            f"status: {counts}",
            f"iterations: median {np.median(np.asarray(self.n_iter)):g}, max {np.max(np.asarray(self.n_iter))}",
            "spread over converged fits:",
        ]
        header = f"{'':>14}{'mean':>11}{'std':>11}{'min':>11}{'median':>11}{'max':>11}{'mean se':>11}"
        lines += [header, "-" * len(header)]
        for i, name in enumerate(self.param_names):
            col = est[ok, i] if ok.any() else np.array([np.nan])
            s = se[ok, i] if ok.any() else np.array([np.nan])
            lines.append(
                f"{name[:14]:>14}{_fmt(col.mean())}{_fmt(col.std())}{_fmt(col.min())}"
                f"{_fmt(np.median(col))}{_fmt(col.max())}{_fmt(np.mean(s))}"
            )
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()
