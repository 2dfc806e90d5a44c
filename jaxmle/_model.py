"""Model: a user log-density plus a parameter spec, and the objective built from it."""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._compile import code_of_classes, gc_paused, jit, model_key
from ._data import n_data, substitute_masked
from ._params import ParamSpec, Real

# Names people give standard deviations and scales; a "log_" prefix means the
# parameter is on the log scale, where negative values are fine.
_SCALE_WORDS = {"sigma", "sigmas", "scale", "scales", "sd", "sds", "std", "stdev", "stddev", "sdev"}


def scale_like(name: str) -> bool:
    """True for a parameter name that reads like a standard deviation or scale."""
    last = name.split(".")[-1].lower()
    if last.startswith("log"):
        return False
    return any(word in _SCALE_WORDS for word in re.split(r"[_\d\[\]]+", last))


class LinearPredictor(NamedTuple):
    """A model's declaration that its log-likelihood is a sum over rows of a function of
    a linear predictor: term i is ``loglik(eta, params, data)[i]`` with
    ``eta = data[x] @ params[param]``, and it depends on row i of the data (and on
    ``eta[i]`` and the other parameters) alone.

    Set as ``model.linear_predictor``; the ready GLMs (linear, logistic, probit,
    Poisson) declare it. Big in-memory fits (``jaxmle._solve.BLOCK_MIN_ROWS``) then
    form the Hessian of the ``param`` block as a weighted Gram matrix
    X' diag(w) X, block by block (``jaxmle._solve``), instead of by autodiff
    through the matrix product; the result is the same to rounding. ``loglik``
    must equal ``model.loglik`` row by row; it must not read ``params[param]``.
    """

    x: str                 # the data key of the (n, k) design matrix
    param: str             # the top-level parameter (a (k,) vector) that multiplies it
    loglik: Callable       # loglik(eta, params, data) -> (n,) log-likelihood terms


# Programs shared between Model objects that compute the same thing, keyed by
# (Model._sharing_key(), program key); the oldest are dropped past _SHARED_MAX.
_SHARED: dict = {}
_SHARED_MAX = 256


class Model:
    """A log-likelihood written as a pure JAX function, with its parameter spec.

    Args:
        loglik: ``loglik(params, data)`` returning per-observation log-density terms
            (a vector, summed by jaxmle) or their sum (a scalar). ``params`` is a dict
            shaped like ``spec`` with natural-scale values.
        spec: dict of start values and constraint wrappers (``jm.Positive``,
            ``jm.Interval``, ``jm.Simplex``, ``jm.Fixed``); nested dicts allowed.
        log_prior: optional ``log_prior(params)``; the fit is then a MAP estimate.
        name: a label for summaries.
        validate: optional ``validate(data, batched)`` raising ValueError for data
            the log-density cannot use (ready models check keys and shapes).
        em_step: optional ``em_step(params, data, mask) -> params`` enabling method="em".
        init_fn: optional ``init_fn(key, data) -> params`` drawing random start values
            for ``fit(..., n_starts=...)`` (default: jitter the spec's start).
        prepare: optional ``prepare(data) -> data`` for work that depends on the data
            alone (features such as sin(w t), log-factorials of counts): it runs once
            per fit, before the optimizer loop, and ``loglik`` (and ``em_step``)
            receive its output. Inside ``loglik`` such work would be redone at every
            evaluation. Its output must keep one entry per observation on the
            leading axis.
        start: optional ``start(data, mask) -> params`` giving data-driven start values
            (natural scale) for (some of) the parameters, written in jax.numpy:
            ``mask`` is a boolean vector, True for the observations to use (all True
            when the fit has no mask), so a padded dataset's start ignores its
            padding. It runs once per fit, vectorised over a batch, before the
            optimizer. Where a value is not finite or breaks its constraint (a log
            of a zero mean count), that dataset keeps the spec's start; ``init=``
            overrides it. Ready models define one (OLS or GLM-style starts).

    Example:
        >>> def loglik(p, x):
        ...     return jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"])
        >>> model = jm.Model(loglik, {"mu": 0.0, "sigma": jm.Positive(1.0)})
    """

    def __init__(
        self,
        loglik: Callable[[Any, Any], jax.Array],
        spec: dict,
        log_prior: Callable[[Any], jax.Array] | None = None,
        name: str | None = None,
        validate: Callable[[Any, bool], None] | None = None,
        em_step: Callable | None = None,
        init_fn: Callable | None = None,
        prepare: Callable | None = None,
        start: Callable | None = None,
    ):
        if not callable(loglik):
            raise TypeError("loglik must be a function loglik(params, data)")
        if log_prior is not None and not callable(log_prior):
            raise TypeError("log_prior must be a function log_prior(params)")
        if prepare is not None and not callable(prepare):
            raise TypeError("prepare must be a function prepare(data) -> data")
        if start is not None and not callable(start):
            raise TypeError("start must be a function start(data, mask) -> params")
        self.loglik = loglik
        self.spec = ParamSpec(spec)
        self.log_prior = log_prior
        self.name = name or getattr(loglik, "__name__", "model")
        self.validate = validate
        self.em_step = em_step
        self.init_fn = init_fn
        self.prepare = prepare
        self.start = start
        # Unconstrained leaves named like scales: fit warns when one ends negative.
        self.scale_like_leaves = [i for i, (name, con) in enumerate(zip(self.spec.leaf_names, self.spec.constraints))
                           if isinstance(con, Real) and scale_like(name)]
        # Whether term i of the log-density depends on observation i alone (None: not
        # yet known; the first fit padded to a shape bucket finds out, see jm.fit). A
        # user may set it to True (a promise: one term per row, each reading its own
        # row of every data leaf): fits of at least ``jaxmle._solve.BLOCK_MIN_ROWS``
        # rows then evaluate the log-likelihood in row blocks (bounded memory).
        self.rowwise: bool | None = None
        # False: the model cannot take a mask (its terms read every row; Cox), and fits
        # with one raise (``jaxmle._solve.ready_data``).
        self.masks_ok = True
        self._compiled: dict = {}
        self._checked: dict = {}

    def compiled(self, key: tuple, build: Callable[[], Callable]) -> Callable:
        """The compiled function cached under ``key``, built by ``build()`` on first use.

        Every compiled program of this model (fits, profiles, sandwich covariances)
        lives here, keyed by a tuple whose first entry names its kind (``"fit"``,
        ``"profile"``, ...) and whose other entries are everything the program was
        specialised on; fitting new data of the same shape reuses it.
        """
        fn = self._compiled.get(key)
        if fn is None:
            # A model built from the same functions and spec (a re-run notebook cell)
            # shares the programs of an earlier one: no retrace, no recompile.
            shared = self._sharing_key()
            if shared is not None:
                fn = _SHARED.get((shared, key))
            if fn is None:
                fn = build()
                code = code_of_classes(key) if shared is not None else None
                if code is not None and hasattr(fn, "persist_as"):
                    # Saved to disk as well: a later session loads it without tracing. A
                    # setting of the user's own class (an optimizer subclass) by its code.
                    fn.persist_as(("model program", shared, key, code))
                if shared is not None:
                    if len(_SHARED) >= _SHARED_MAX:
                        _SHARED.pop(next(iter(_SHARED)))
                    _SHARED[(shared, key)] = fn
            self._compiled[key] = fn
        return fn

    def _sharing_key(self):
        """What the model computes, as a key (``jaxmle._compile.model_key``); None: share nothing."""
        if "_share_key" not in self.__dict__:
            self._share_key = model_key(self, self.spec.sharing_key())
        return self._share_key

    @property
    def param_names(self) -> list[str]:
        return self.spec.names

    @property
    def n_free(self) -> int:
        """Number of free (unconstrained) dimensions, the k of AIC/BIC."""
        return self.spec.n_free

    def __repr__(self):
        return f"Model({self.name}, params={self.spec.leaf_names})"

    def prepared(self, data):
        """``prepare(data)`` when the model has a ``prepare`` step, else ``data``."""
        return data if self.prepare is None else self.prepare(data)

    def start_leaves(self, data, mask, batched: bool) -> list | None:
        """The ``start`` function's values as one entry per spec leaf (None where it gave none).

        Batched, each entry has a leading axis B; one compiled, vectorised call.
        """
        if self.start is None:
            return None

        def one(d, m):
            # Padding (NaN from jm.pad) replaced, so 0 * NaN cannot reach the start.
            d = substitute_masked(d, m)
            if m is None:
                m = jnp.ones((n_data(d) or 1,), bool)
            return self.start(d, m)

        fn = self.compiled(("start", batched), lambda: jit(jax.vmap(one) if batched else one))
        out = fn(data, mask)
        if not isinstance(out, dict):
            raise TypeError(f"the model's start function must return a dict of parameters, got {type(out).__name__}")
        leaves = [None] * len(self.spec.leaf_names)
        for i, value in self.spec.named_leaves(out, "the model's start function"):
            shape = self.spec.shapes[i]
            value = np.asarray(value)
            want = ((value.shape[0],) if batched else ()) + shape
            if value.shape != want:
                raise ValueError(f"the model's start function gives {self.spec.leaf_names[i]!r} shape "
                                 f"{value.shape[batched:]}; the spec's is {shape}")
            leaves[i] = value if batched else value[None]
        return leaves

    # -- output checks -----------------------------------------------------
    def check_output(self, data, dtype, masked: bool) -> int | None:
        """Trace the log-density once per data signature and check what it returns.

        Returns:
            The number of per-observation terms, or None for a scalar log-density.
        """
        sig = (
            jax.tree_util.tree_structure(data),
            tuple((np.shape(x), np.dtype(x.dtype)) for x in jax.tree_util.tree_leaves(data)),
            np.dtype(dtype),
            masked,
        )
        if sig in self._checked:
            return self._checked[sig]
        params = self.spec.unflatten(
            [jax.ShapeDtypeStruct(s, dtype) for s in self.spec.shapes]
        )
        try:
            with gc_paused():
                out = jax.eval_shape(lambda p, d: self.loglik(p, self.prepared(d)), params, data)
        except jax.errors.TracerArrayConversionError as e:
            raise TypeError(
                "the log-density (or prepare) converts a JAX value to a NumPy array: it calls numpy "
                "or scipy (np.exp, scipy.stats...) on a parameter or the data. jaxmle differentiates "
                "and compiles it, so use jax.numpy (jnp.exp, ...) and jax.scipy (jax.scipy.stats, "
                "jax.scipy.special) inside the log-density. JAX said: " + str(e).splitlines()[0]
            ) from e
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
                jax.errors.TracerIntegerConversionError) as e:
            raise TypeError(
                "the log-density uses Python control flow (if/while/int()/float()) on a "
                "parameter or data value; jaxmle differentiates and compiles it, so it must "
                "be written with jnp.where / jax.lax.cond instead. JAX said: "
                + str(e).splitlines()[0]
            ) from e
        if not isinstance(out, jax.ShapeDtypeStruct):
            raise TypeError(
                f"the log-density must return one array, got {type(out).__name__}"
            )
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise TypeError(
                f"the log-density returned dtype {out.dtype}; it must return floating-point "
                "log-density values (did it return a count or a boolean?)"
            )
        n = n_data(data)
        if out.ndim > 1:
            raise ValueError(
                f"the log-density returned shape {out.shape}; it must return a scalar or "
                "one term per observation (a vector). Sum over the extra axes inside it."
            )
        if out.ndim == 1 and n is not None and out.shape[0] != n:
            raise ValueError(
                f"the log-density returned {out.shape[0]} terms but the data has {n} "
                "observations (leading axis); return one term per observation or a scalar"
            )
        if masked and out.ndim == 0:
            raise ValueError(
                "a mask needs per-observation terms, but the log-density returns a scalar: "
                "return the vector of log-density terms instead of their sum"
            )
        result = None if out.ndim == 0 else int(out.shape[0])
        self._checked[sig] = result
        return result

    # -- objective ---------------------------------------------------------
    def loglik_sum(self, params, data, mask=None):
        """Total log-likelihood (masked terms contribute zero)."""
        terms = self.loglik(params, data)
        if mask is not None:
            terms = jnp.where(mask, terms, 0)
        return jnp.sum(terms)

    def logpost(self, params, data, mask=None):
        """Log-likelihood plus log-prior (equal to the log-likelihood without a prior)."""
        ll = self.loglik_sum(params, data, mask)
        if self.log_prior is not None:
            ll = ll + self.log_prior(params)
        return ll
