"""FitResult and BatchFitResult: immutable registered pytrees, natural-scale reporting, summaries."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import _io, _postfit, _predict, _profile_curve, _solve, _stats, _summary
from ._data import plain_rows
from ._io import DetachedError, DetachedModel, detached_message
from ._profile import profile_intervals
from ._status import Status

# Standard errors in float32 carry ~3-4 significant digits at best: say so once per process.
_FLOAT32_WARNED = {"done": False}


def warn_float32(dtype, what: str = "standard errors", stacklevel: int = 3) -> None:
    """Warn (once per process) that ``what`` are computed in a low-precision dtype."""
    if _FLOAT32_WARNED["done"] or not jnp.issubdtype(dtype, jnp.floating) or jnp.finfo(dtype).bits >= 64:
        return
    _FLOAT32_WARNED["done"] = True
    warnings.warn(
        f"{what} computed in {np.dtype(dtype).name} (jax_enable_x64 is off): expect 3-4 significant "
        "digits and unreliable intervals for ill-conditioned fits. For inference enable float64 "
        "first: jax.config.update('jax_enable_x64', True)",
        UserWarning, stacklevel=stacklevel + 1,
    )

# The one list of a result's fields: the compiled fit returns a dict with exactly
# these keys, pytree flattening walks them in this order, and closed-form results
# fill the ones they lack from ``_absent``.
FIELDS = ("params", "z", "fixed", "loglik", "logpost", "status", "n_iter", "grad_norm",
          "n_obs", "cov", "cond", "boundary", "evals", "trace")


def _absent(name, lead, k, like):
    """The value of a field that a closed-form result does not compute (k natural elements).

    Host arrays, in the log-likelihood's floating dtype: building them runs no XLA program.
    """
    dtype = np.dtype(like.dtype) if hasattr(like, "dtype") else np.dtype(np.float64)
    dtype = dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)
    nan = lambda shape=(): np.full(lead + shape, np.nan, dtype)  # noqa: E731
    return {
        "fixed": [], "logpost": like, "n_iter": np.zeros(lead, np.int32), "grad_norm": nan(),
        "cov": nan((k, k)), "cond": nan(), "boundary": np.zeros(lead + (k,), bool),
        "evals": np.zeros(lead + (3,), np.int32), "trace": None,
    }[name]


def _host(tree):
    """A field as host NumPy arrays; a traced field (a result inside jit/vmap) as it is.

    ``np.asarray`` of a JAX array copies it to the host once (the array caches the
    copy) and runs no XLA program: reporting computes with NumPy from here on.
    """
    if tree is None:
        return None
    leaves = jax.tree_util.tree_leaves(tree)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return tree
    return jax.tree_util.tree_map(np.asarray, tree)


class _Take:
    """Dataset ``i`` of a batch's data (or mask), sliced when first asked for.

    ``batch[i]`` reports from its fields alone; the data matter only to refits
    (profile intervals, sandwich covariances), so slicing them waits until then.
    """

    __slots__ = ("tree", "i")

    def __init__(self, tree, i):
        self.tree, self.i = tree, i

    def get(self):
        return jax.tree_util.tree_map(lambda a: a[self.i], self.tree)


class _ResultBase:
    """Fields and inference shared by single and batched results (batch axes lead).

    Results are immutable: every field is set once, at construction. The data the
    fit saw (for the sandwich covariance and profile intervals) are plain
    attributes, not pytree children: a result rebuilt by a JAX transform does not
    carry them.
    """

    def __init__(self, model, method, fields: dict, *, data=None, mask=None, n_terms=None,
                 starts=None, groups=None, group_key=None):
        unknown = set(fields) ^ set(FIELDS)
        if unknown:
            raise ValueError(f"result fields mismatch: {sorted(unknown)}")
        # Closed-form results and user code may hand in plain dicts: keep the spec's order.
        fields = dict(fields, params=model.spec.coerce(fields["params"]))
        if isinstance(fields["status"], int):  # a jm.Status or int: stored as the int32 array a fit gives
            fields["status"] = np.asarray(int(fields["status"]), np.int32)
        init = dict(fields, model=model, method=method, _data_src=data, _mask_src=mask, _n_terms=n_terms,
                    starts=starts, _memo={}, groups=groups, group_key=group_key)
        # Written past __setattr__ (results are immutable); ``status``, ``_data`` and
        # ``_mask`` are properties over the stored values.
        self.__dict__.update(init)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable; build a new result instead")

    # -- pickling and export -----------------------------------------------------
    def __getstate__(self):
        # Arrays only: the model's function (a lambda or closure would not pickle, and
        # its compiled programs never do) and the data stay behind; see jaxmle._io.
        state = _io.state(self, FIELDS)
        if _predict.cov_type(self) == "gauss-newton":   # keep the convention the model asked for
            state["fields"]["cov"] = _host(self.cov)
        return state

    def __setstate__(self, state):
        init = dict(state["fields"], model=state["model"], method=state["method"], _data_src=None,
                    _mask_src=None, _n_terms=state["n_terms"], starts=state["starts"], _memo={},
                    groups=state["groups"], group_key=state["group_key"])
        self.__dict__.update(init)

    def _field(self, name: str):
        """A field as stored (``status`` as the int32 array the fit returned)."""
        return self.__dict__[name]

    @property
    def _data(self):
        """The data the fit saw (None for a detached result); ``batch[i]`` slices on first use.

        Data a big fit read in place (``jaxmle._data.Rows``) become ordinary arrays here,
        on first use: the post-fit computations (sandwich, predictions, residuals) hand
        them to the model whole. A single fit's profiles rerun its program on the data
        as the fit saw them (``_memo["fit_setup"]``)."""
        src = self.__dict__["_data_src"]
        if isinstance(src, _Take):
            src = self.__dict__["_data_src"] = src.get()
        if src is not None:
            plain = plain_rows(src)
            if plain is not src:
                src = self.__dict__["_data_src"] = plain
        return src

    @property
    def _mask(self):
        src = self.__dict__["_mask_src"]
        if isinstance(src, _Take):
            src = self.__dict__["_mask_src"] = src.get()
        return src

    @property
    def detached(self) -> bool:
        """True for a result that was unpickled or loaded: no model function, no data."""
        return isinstance(self.model, DetachedModel)

    def _needs_model(self, what: str) -> None:
        if self.detached:
            raise DetachedError(detached_message(what))

    def to_dict(self, level: float = 0.95) -> dict:
        """The result as plain Python values (floats, lists, status names), parameters in spec order.

        Keys: model, method, estimator ("MLE"/"MAP"), dtype, status, converged, loglik,
        n_obs, n_iter, grad_norm, aic, bic, param_names, params, stderr, conf_int
        (Wald, at ``level``), cov, boundary_params (and groups for ``by=`` batches).
        A batch gives a list per dataset in every per-fit entry.

        Example:
            >>> res.to_dict()["params"]     # {'mu': 255.0, 'sigma': 10.6395...}
        """
        return _io.to_dict(self, level)

    def to_json(self, level: float = 0.95, **kwargs) -> str:
        """``to_dict()`` as JSON text (NaN and infinities as null); kwargs go to ``json.dumps``."""
        return _io.to_json(self, level, **kwargs)

    def to_frame(self, level: float = 0.95):
        """A pandas DataFrame (pandas must be installed).

        A single fit gives one row per free parameter (spec order) with columns
        estimate, stderr, z, p, lower, upper (Wald at ``level``). A batch gives one
        row per dataset, indexed by group label for ``fit_batch(..., by=)``: status,
        converged, loglik, n_obs, n_iter and, per parameter ``name``, the columns
        ``name``, ``name_stderr``, ``name_z``, ``name_p``, ``name_lower``, ``name_upper``.
        """
        return _io.to_frame(self, level)

    def save(self, path) -> None:
        """Write the result to an ``.npz`` file (no pickle inside); read it with ``jm.load``.

        The file holds every field (estimates, covariances, status, ...), the parameter
        spec and group labels, not the model's function or the data: the loaded result
        reports, summarises and exports, but refits are needed for profile intervals.

        Example:
            >>> batch.save("fits.npz"); same = jm.load("fits.npz")
        """
        _io.save(self, path, FIELDS, batched=np.ndim(self.loglik) == 1)

    @classmethod
    def closed_form(cls, model, method: str, **given):
        """A result from a closed-form estimate: fields not in ``given`` get NaN/empty values.

        ``given`` needs at least params, z, loglik, status and n_obs.
        """
        lead = np.shape(given["loglik"])
        k = len(model.param_names)
        fields = {f: given[f] if f in given else _absent(f, lead, k, given["loglik"])
                  for f in FIELDS}
        return cls(model, method, fields)

    def tree_flatten(self):
        return tuple(self._field(f) for f in FIELDS), (self.model, self.method)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(aux[0], aux[1], dict(zip(FIELDS, children)))

    # -- plain fields --------------------------------------------------------
    @property
    def status(self):
        """The fit's ``jm.Status``: an IntEnum for one fit, an int32 array (B,) of codes for a batch."""
        return self._field("status")

    @property
    def converged(self):
        """True where the fit met the stopping rule with a valid optimum (a bool; a bool array for a batch)."""
        code = _host(self._field("status"))
        if isinstance(code, jax.core.Tracer):
            return code == Status.CONVERGED
        ok = np.asarray(code) == Status.CONVERGED
        return bool(ok) if ok.ndim == 0 else ok

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
    def dtype(self):
        """The floating dtype the fit computed in (float32 unless jax_enable_x64 is on)."""
        ll = self.loglik
        return np.dtype(ll.dtype if hasattr(ll, "dtype") else np.asarray(ll).dtype)

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
    def cov(self):
        """Covariance of the free natural-scale parameters, ordered as ``param_names`` (None
        without a Hessian). The inverse observed information, except for a Gaussian regression
        built with ``cov="gauss-newton"`` (``jaxmle._predict.covariance``)."""
        return _predict.covariance(self)

    @property
    def estimate_flat(self):
        """Free natural-scale estimates as one flat vector (last axis), as ``cov`` (NumPy)."""
        spec = self.model.spec
        leaves = jax.tree_util.tree_leaves(_host(self.params))
        lead = np.shape(self.loglik)
        xp = jnp if any(isinstance(v, jax.core.Tracer) for v in leaves) else np
        return xp.concatenate(
            [xp.reshape(v, lead + (-1,)) for v, f in zip(leaves, spec.is_fixed) if not f], axis=-1
        )

    def _se_flat(self):
        if self.cov is None:
            return np.full(np.shape(self.loglik) + (len(self.param_names),), np.nan, self.dtype)
        return _stats.flat_stderr(_host(self.cov))

    @property
    def hessian_skipped(self) -> bool:
        """True when the fit had too many free parameters for a dense Hessian: ``cov`` is None,
        standard errors are NaN and ``stderr_note`` says why (``jaxmle._solve.DENSE_HESSIAN_MAX_PARAMS``)."""
        return self.cov is None

    @property
    def stderr_note(self) -> str | None:
        """Why the standard errors are NaN and how to get some, for a fit without a Hessian; else None."""
        if not self.hessian_skipped:
            return None
        return (
            f"standard errors not computed: {self.k:,} free parameters exceed the dense-Hessian limit "
            f"({_solve.DENSE_HESSIAN_MAX_PARAMS:,}, jaxmle._solve.DENSE_HESSIAN_MAX_PARAMS; a k x k Hessian "
            "costs k^2 memory and k Hessian-vector products). The status rests on the fit's stopping rule "
            "alone (for L-BFGS and Adam max|gradient| <= tol * max(1, |f|)); that the information matrix is "
            "positive definite (a strict maximum) was not checked. For one parameter, draw its profile "
            "likelihood over a range you choose, res.profile(name, bound=(low, high)); for standard errors "
            "of a few, refit with the others held at their estimates (jm.Fixed; conditional standard "
            "errors) or fit a smaller model."
        )

    def _needs_hessian(self, what: str) -> None:
        if self.hessian_skipped:
            raise ValueError(f"{what} needs the dense Hessian, which this fit skipped: {self.stderr_note}")

    @property
    def stderr_flat(self):
        """Standard errors of the free parameters as one flat vector (last axis), as ``cov``."""
        warn_float32(self.dtype)
        return self._se_flat()

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
            self._needs_model("conf_int(method='profile')")
            self._needs_hessian("conf_int(method='profile')")
            warn_float32(self.dtype, "profile intervals")
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
        self._needs_model("the sandwich covariance (cov_robust, stderr_robust)")
        self._needs_hessian("the sandwich covariance (cov_robust, stderr_robust)")
        warn_float32(self.dtype)
        return _postfit.robust_cov(self)

    @property
    def stderr_robust(self):
        """Sandwich standard errors shaped like ``params``."""
        return self.model.spec.flat_to_tree(_stats.flat_stderr(_host(self.cov_robust)))

    def derived(self, fn, level: float | None = None, method: str = "delta"):
        """(estimate, stderr) of ``fn(params)`` by the delta method; with ``level``, also
        its confidence interval: (estimate, stderr, (lower, upper)).

        Args:
            fn: function of the natural-scale params dict.
            level: coverage of an interval (e.g. 0.95); None returns no interval unless
                ``method="profile"`` (then 0.95).
            method: the interval's: "delta" or "profile" (likelihood ratio; scalar ``fn``).

        Example:
            >>> est, se = res.derived(lambda p: p["sigma"] / p["mu"])
            >>> est, se, (lo, hi) = res.derived(lambda p: p["sigma"] / p["mu"], level=0.95, method="profile")
        """
        self._needs_hessian("derived()")
        warn_float32(self.dtype)
        if level is None and method == "delta":
            return _postfit.derived(self, fn)
        return _postfit.derived_interval(self, fn, level=0.95 if level is None else level, method=method)

    def profile(self, name: str, n_points: int = 30, bound=None, level: float = 0.95, progress=None) -> dict:
        """The profile log-likelihood of one parameter on a grid ({"grid", "loglik", ...}),
        nuisance parameters re-optimised in one batched call (``_profile_curve.profile_curve``).

        Example:
            >>> curve = res.profile("k", n_points=30)
        """
        if self.hessian_skipped and (bound is None or np.ndim(bound) == 0):
            self._needs_hessian(f"profile({name!r}) without a range (bound=(low, high))")
        return _profile_curve.profile_curve(self, name, n_points=n_points, bound=bound, level=level,
                                            progress=progress)

    def plot_profile(self, name: str, ax=None, level: float = 0.95, n_points: int = 30, bound=None):
        """Plot the profile of one parameter with the MLE and the CI cut marked (matplotlib)."""
        return _profile_curve.plot_profile(self, name, ax=ax, level=level, n_points=n_points, bound=bound)

    def _criteria(self):
        return _stats.information_criteria(_host(self.loglik), self.k, _host(self.n_obs))

    @property
    def aic(self):
        """Akaike's information criterion, 2k - 2 loglik."""
        return self._criteria()[0]

    @property
    def bic(self):
        """The Bayesian information criterion, k log(n_obs) - 2 loglik."""
        return self._criteria()[1]

    @property
    def aicc(self):
        """AIC with the small-sample correction (inf where n_obs <= k + 1)."""
        return self._criteria()[2]


@jax.tree_util.register_pytree_node_class
class FitResult(_ResultBase):
    """The result of ``jm.fit``: estimates on the natural scale and their inference.

    Attributes:
        params: dict shaped like the spec, natural-scale estimates.
        loglik: maximised log-likelihood (without the prior for MAP fits).
        status: ``jm.Status`` code; ``converged`` is ``status == CONVERGED``.
        n_iter, grad_norm: iterations used and max |d loglik / dz| at the end.
        n_obs: number of observations (masked ones excluded).
        cov: covariance of the free natural-scale parameters, ordered as ``param_names``;
            None when the fit had more free parameters than
            ``jaxmle._solve.DENSE_HESSIAN_MAX_PARAMS`` (``hessian_skipped``; see ``stderr_note``).
        cond: condition number of the information matrix scaled to unit diagonal
            (unconstrained coordinates): independent of the parameters' units.
        boundary: bool per element of ``param_names``: at a constraint edge, or
            running off to infinity (status ``AT_BOUNDARY``).
    """

    @property
    def status(self):
        """Why the fit stopped, a ``jm.Status`` (an IntEnum: ``int(res.status)`` and
        ``res.status == jm.Status.CONVERGED`` work as on the code). Inside a JAX transform
        the stored int32 value is returned as it is."""
        code = self._field("status")
        if isinstance(code, jax.core.Tracer):
            return code
        try:
            arr = np.asarray(code)
            return Status(int(arr)) if arr.ndim == 0 else code
        except (TypeError, ValueError):  # not a code: a placeholder leaf of a tree transform
            return code

    def summary(self, level: float = 0.95) -> str:
        """A statsmodels-like text table of estimates, errors, z, p and intervals."""
        return _summary.single(self, level)

    # -- predictions (ready models; jaxmle._predict) -------------------------------
    def predict(self, new_data=None, se: bool = False):
        """The mean response at ``new_data``: X beta (linear), probabilities (logistic, probit),
        the rate (Poisson), class probabilities (softmax, (n, n_classes)), f(params, x)
        (nonlinear_regression). ``new_data`` is a data dict or the covariates alone (X, or x);
        None predicts the fitted rows. ``se=True`` returns a ``Prediction`` that unpacks as
        ``(mean, se)`` (delta-method standard errors of the mean from ``cov``, statsmodels'
        ``get_prediction(...).se_mean``; also ``.predicted_mean``, ``.se_mean``, ``.conf_int()``).

        Example:
            >>> p = res.predict({"X": X_new})          # logistic: P(y = 1)
            >>> mean, se = res.predict(X_new, se=True)
        """
        return _predict.predict(self, new_data, se)

    @property
    def fittedvalues(self):
        """The mean response on the fitted rows (padding dropped); for logistic/Poisson the
        probabilities/rates (statsmodels GLM's ``fittedvalues``, not Logit's linear predictor)."""
        return _predict.fittedvalues(self)

    @property
    def resid(self):
        """Response residuals y - ``fittedvalues`` (softmax: one_hot(y) - probabilities)."""
        return _predict.resid(self)

    def _reg(self, key):
        stats = _predict.regression_stats(self)
        return None if stats is None else stats[key]

    @property
    def ssr(self):
        """Gaussian regressions: the (weighted) residual sum of squares; else None."""
        return self._reg("ssr")

    @property
    def df_resid(self):
        """Gaussian regressions: n - p, p the number of free mean parameters; else None."""
        return self._reg("df_resid")

    @property
    def scale(self):
        """Gaussian regressions: s^2 = ssr / df_resid (statsmodels' scale); else None."""
        return self._reg("scale")

    @property
    def redchi(self):
        """Gaussian regressions: the reduced chi-square, ssr / (sigma^2 df_resid) for a known sigma,
        else s^2 (lmfit's ``redchi``); else None."""
        return self._reg("redchi")

    @property
    def cov_type(self):
        """Gaussian regressions: the covariance convention, "observed" or "gauss-newton"; else None."""
        return _predict.cov_type(self)

    def __repr__(self):
        return self.summary()


@jax.tree_util.register_pytree_node_class
class BatchFitResult(_ResultBase):
    """The result of ``jm.fit_batch``: every field of ``FitResult`` with a leading axis B.

    ``batch[i]`` is the i-th fit as a ``FitResult`` (its fields host NumPy arrays).
    ``batch.status`` is the int32 array (B,) of ``jm.Status`` codes; ``batch[i].status``
    and ``status_counts()`` give them as ``jm.Status`` members and names.
    """

    def __len__(self):
        return int(np.shape(self.status)[0])

    def __getitem__(self, i) -> FitResult:
        if not isinstance(i, (int, np.integer)):
            raise TypeError("index a BatchFitResult with an int; use jax.tree_util.tree_map to slice")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a batch of {n} fits")
        # Host slices of the fields (no XLA program); the data are sliced when a refit asks.
        take = lambda t: None if t is None else jax.tree_util.tree_map(lambda a: a[i, ...], _host(t))  # noqa: E731
        fields = {f: take(self._field(f)) for f in FIELDS}
        lazy = lambda t: None if t is None else _Take(t, i)  # noqa: E731
        return FitResult(self.model, self.method, fields, data=lazy(self._data), mask=lazy(self._mask),
                         n_terms=self._n_terms)

    def group(self, label) -> FitResult:
        """The fit of the dataset with group label ``label`` (``fit_batch(..., by=)``)."""
        if self.groups is None:
            raise ValueError("this batch has no group labels; they come from fit_batch(model, df, by=...)")
        try:
            return self[list(self.groups).index(label)]
        except ValueError:
            raise KeyError(f"no group {label!r} in this batch") from None

    def status_counts(self) -> dict[str, int]:
        """{status name: number of fits} for the statuses that occur."""
        codes = np.asarray(self.status)
        return {s.name: int((codes == s).sum()) for s in Status if (codes == s).any()}

    def summary(self) -> str:
        """Status counts and the spread of each estimate across the batch."""
        return _summary.batch(self)

    def __repr__(self):
        return self.summary()


def load(path) -> FitResult | BatchFitResult:
    """Read a result written by ``res.save(path)`` (an ``.npz``; nothing is unpickled).

    The loaded result has every field and the parameter names, constraints and group
    labels, but not the model's log-density or the data (see ``save``).

    Example:
        >>> batch.save("fits.npz")
        >>> batch = jm.load("fits.npz")
    """
    got = _io.load(path)
    cls = BatchFitResult if got["kind"] == "BatchFitResult" else FitResult
    return cls(got["model"], got["method"], got["fields"], n_terms=got["n_terms"], starts=got["starts"],
               groups=got["groups"], group_key=got["group_key"])
