"""Naive Bayes: Gaussian, Bernoulli and multinomial, fitted in closed form.

The tutorial's "Naive Bayes: empirical frequency estimates" row. The joint
log-likelihood of features and labels,

    sum_i [ log prior[y_i] + log p(x_i | y_i) ],

is maximised by empirical frequencies: class priors n_c / n, and per class the
feature means and (biased, 1/n_c) variances (Gaussian), the fraction of rows with
each feature present (Bernoulli), or each feature's share of the class's counts
(multinomial). ``model.fit(data)`` computes them with NumPy on the host and returns
a full ``FitResult`` (log-likelihood, standard errors from the observed
information, ``summary()``, ``conf_int()``) in milliseconds, compiling nothing.
``jm.fit(model, data)`` also works: the model's ``start`` is the same closed form,
so Newton stops at iteration 0 (after compiling its program, about a second).

Data: ``{"X": (n, n_features), "y": (n,) int class labels 0..n_classes-1}``.

Standard errors (inverse observed information at the MLE, natural scale):
priors: multinomial, cov = (diag(p) - p p') / n; Gaussian means: scale / sqrt(n_c);
Gaussian scales: scale / sqrt(2 n_c); Bernoulli probabilities: sqrt(p (1 - p) / n_c);
multinomial probabilities of class c: (diag(p_c) - p_c p_c') / N_c, N_c the class's
total count. Priors and class parameters are uncorrelated.

Like scikit-learn: ``model.predict_proba(params, {"X": X})``, ``predict`` and
``predict_log_proba`` give the posterior class probabilities; with the MLE they
equal ``GaussianNB(var_smoothing=0)``, ``BernoulliNB(alpha=1e-10, force_alpha=True)``
and ``MultinomialNB(alpha=1e-10, force_alpha=True)`` (up to that alpha). The
smoothing options ``var_smoothing`` / ``alpha`` reproduce scikit-learn's smoothed
estimates (no longer MLEs: the reported log-likelihood is at the smoothed values
and the standard errors use the same formulas).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special as jsp

from .._model import Model
from .._params import Interval, Positive, Simplex
from .._result import FitResult
from .._status import Status
from .regression import _validator

__all__ = ["NaiveBayes", "gaussian_nb", "bernoulli_nb", "multinomial_nb"]

_LOG_2PI = float(np.log(2 * np.pi))
_KINDS = ("gaussian", "bernoulli", "multinomial")


def _np_xlogy(x, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(y))


def _np_gammaln(x):
    from scipy.special import gammaln   # scipy ships with jax
    return gammaln(x)


def _is_traced(tree) -> bool:
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(tree))


class NaiveBayes(Model):
    """A naive Bayes classifier as a ``jm.Model``, with its closed-form MLE.

    Build it with ``jm.models.gaussian_nb``, ``bernoulli_nb`` or ``multinomial_nb``.

    Methods:
        fit(data, mask=None): the closed-form MLE as a ``FitResult`` (no XLA compile).
        closed_form(data, mask=None): the estimates alone, a params dict of NumPy arrays.
        predict_proba / predict_log_proba / predict / joint_log_likelihood(params, data).
    """

    def __init__(self, kind: str, n_features: int, n_classes: int, *, alpha: float = 0.0,
                 var_smoothing: float = 0.0):
        if kind not in _KINDS:
            raise ValueError(f"naive Bayes kind must be one of {_KINDS}, got {kind!r}")
        if not isinstance(n_features, (int, np.integer)) or n_features < 1:
            raise ValueError(f"n_features must be a positive int, got {n_features!r}")
        if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
        if kind == "multinomial" and n_features < 2:
            raise ValueError("multinomial_nb needs n_features >= 2 (each class's feature "
                             "probabilities form a simplex)")
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be >= 0 (0: the MLE), got {alpha!r}")
        if not (np.isfinite(var_smoothing) and var_smoothing >= 0):
            raise ValueError(f"var_smoothing must be >= 0 (0: the MLE), got {var_smoothing!r}")
        self.kind = kind
        self.n_features, self.n_classes = int(n_features), int(n_classes)
        self.alpha, self.var_smoothing = float(alpha), float(var_smoothing)
        C, F = self.n_classes, self.n_features
        spec = {"priors": Simplex(np.full(C, 1.0 / C))}
        if kind == "gaussian":
            spec["means"] = np.zeros((C, F))
            spec["scales"] = Positive(np.ones((C, F)))
        elif kind == "bernoulli":
            spec["probs"] = Interval(0.0, 1.0, init=np.full((C, F), 0.5))
        else:
            spec["probs"] = [Simplex(np.full(F, 1.0 / F)) for _ in range(C)]
        super().__init__(self._loglik, spec, name=f"{kind}_nb", validate=_validator(F),
                         start=self._start)

    # -- the log-density (JAX; for jm.fit, profiles, sandwich covariances) ---------------
    def _class_params(self, params, xp):
        """(priors (C,), parameter arrays (C, F)...) from a params dict."""
        if self.kind == "gaussian":
            return xp.asarray(params["priors"]), (xp.asarray(params["means"]), xp.asarray(params["scales"]))
        probs = params["probs"]
        if isinstance(probs, (list, tuple)):
            probs = xp.stack([xp.asarray(p) for p in probs])
        return xp.asarray(params["priors"]), (xp.asarray(probs),)

    def _cond_terms(self, X, parts, xp):
        """log p(x | class) per row, for per-row (n, F) or per-class (F,) parameters."""
        xlogy = jsp.xlogy if xp is jnp else _np_xlogy
        if self.kind == "gaussian":
            m, s = parts
            return xp.sum(-0.5 * _LOG_2PI - xp.log(s) - 0.5 * ((X - m) / s) ** 2, axis=-1)
        (p,) = parts
        if self.kind == "bernoulli":
            return xp.sum(xlogy(X, p) + xlogy(1.0 - X, 1.0 - p), axis=-1)
        return xp.sum(xlogy(X, p), axis=-1)

    def _coef(self, X, xp):
        """The multinomial coefficient log(N! / prod x_j!) (zero for the other kinds)."""
        if self.kind != "multinomial":
            return 0.0
        gammaln = jsp.gammaln if xp is jnp else _np_gammaln
        return gammaln(xp.sum(X, axis=-1) + 1.0) - xp.sum(gammaln(X + 1.0), axis=-1)

    def _terms(self, params, X, y, xp):
        priors, parts = self._class_params(params, xp)
        y = y.astype(int) if xp is np else jnp.clip(y.astype(jnp.int32), 0, self.n_classes - 1)
        return xp.log(priors)[y] + self._cond_terms(X, tuple(a[y] for a in parts), xp) + self._coef(X, xp)

    def _loglik(self, params, data):
        return self._terms(params, data["X"], data["y"], jnp)

    # -- closed form -----------------------------------------------------------------
    def _estimates(self, X, W, xp):
        """Closed-form estimates from one-hot class weights W (n, C) (zero rows: masked)."""
        n_c = xp.sum(W, axis=0)
        out = {"priors": n_c / xp.sum(n_c)}
        if self.kind == "gaussian":
            means = (W.T @ X) / n_c[:, None]
            # Per-class squared deviations from the class mean (two-pass: no cancellation).
            dev2 = xp.stack([W[:, c] @ (X - means[c]) ** 2 for c in range(self.n_classes)])
            var = dev2 / n_c[:, None]
            if self.var_smoothing > 0:
                # scikit-learn's epsilon: var_smoothing * the largest feature variance.
                w = xp.sum(W, axis=1)
                mu = (w @ X) / xp.sum(w)
                var = var + self.var_smoothing * xp.max((w @ (X - mu) ** 2) / xp.sum(w))
            out.update(means=means, scales=xp.sqrt(var))
        elif self.kind == "bernoulli":
            out["probs"] = (W.T @ X + self.alpha) / (n_c + 2 * self.alpha)[:, None]
        else:
            counts = W.T @ X
            out["probs"] = (counts + self.alpha) / (xp.sum(counts, axis=1) + self.n_features * self.alpha)[:, None]
        return out

    def _start(self, data, mask):
        # For jm.fit: the closed form, so Newton converges at iteration 0 (invalid entries,
        # e.g. a zero variance, fall back to the spec's start).
        W = jax.nn.one_hot(data["y"], self.n_classes, dtype=data["X"].dtype) * mask[:, None]
        est = self._estimates(data["X"], W, jnp)
        if self.kind == "multinomial":
            est["probs"] = [est["probs"][c] for c in range(self.n_classes)]
        return est

    def _host_data(self, data, mask):
        if not isinstance(data, dict) or "X" not in data or "y" not in data:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{self.name} needs data as a dict with keys ['X', 'y']; got {got}")
        X = np.asarray(data["X"], dtype=np.float64)
        y_raw = np.asarray(data["y"])
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}; expected (n, {self.n_features}) for a model built "
                             f"with n_features={self.n_features}")
        if y_raw.shape != (X.shape[0],):
            raise ValueError(f"y has shape {y_raw.shape}; expected ({X.shape[0]},) (one label per row of X)")
        if not np.all(np.isfinite(X)):
            raise ValueError("X has non-finite values (NaN or inf)")
        if not (np.issubdtype(y_raw.dtype, np.integer) or np.issubdtype(y_raw.dtype, np.bool_)):
            if not np.issubdtype(y_raw.dtype, np.floating) or np.any(y_raw != np.round(y_raw)):
                raise ValueError(f"y must hold integer class labels 0..{self.n_classes - 1}")
        y = y_raw.astype(np.int64)
        m = np.ones(X.shape[0], bool) if mask is None else np.asarray(mask, bool)
        if m.shape != y.shape:
            raise ValueError(f"mask has shape {m.shape}; expected {y.shape}")
        bad = m & ((y < 0) | (y >= self.n_classes))
        if bad.any():
            raise ValueError(f"y has labels outside 0..{self.n_classes - 1} (e.g. {int(y[bad][0])}); "
                             f"this model was built with n_classes={self.n_classes}")
        Xm = X[m]
        if self.kind == "bernoulli" and not np.all((Xm == 0) | (Xm == 1)):
            raise ValueError("bernoulli_nb needs X of 0/1 values; binarise first, e.g. "
                             "(X > 0).astype(float) as scikit-learn's BernoulliNB(binarize=0.0) does")
        if self.kind == "multinomial" and np.any(Xm < 0):
            raise ValueError("multinomial_nb needs non-negative counts in X")
        return X, np.where(m, y, 0), m

    def closed_form(self, data, mask=None) -> dict:
        """The closed-form MLE (or the smoothed estimate) as a params dict of NumPy arrays.

        Raises ValueError for a class with no observations, a Gaussian feature with zero
        variance within a class (pass ``var_smoothing``, scikit-learn's default is 1e-9),
        or a multinomial class whose counts are all zero.
        """
        X, y, m = self._host_data(data, mask)
        W = np.eye(self.n_classes)[y] * m[:, None]
        n_c = W.sum(axis=0)
        if np.any(n_c == 0):
            empty = [int(c) for c in np.flatnonzero(n_c == 0)]
            raise ValueError(f"class(es) {empty} have no observations: their prior MLE is 0 (the simplex "
                             "edge) and their feature parameters are undefined; drop the class "
                             "(n_classes) or relabel y")
        est = self._estimates(X, W, np)
        if self.kind == "gaussian" and np.any(est["scales"] <= 0):
            c, j = map(int, np.argwhere(est["scales"] <= 0)[0])
            raise ValueError(f"feature {j} has zero variance within class {c} ({int(n_c[c])} observation(s)): "
                             "the Gaussian MLE scale is 0 and the likelihood unbounded; pass "
                             "var_smoothing (scikit-learn's GaussianNB default is 1e-9, adding 1e-9 x the "
                             "largest feature variance) or drop the feature")
        if self.kind == "multinomial":
            tot = est["probs"].sum(axis=1)
            if not np.all(np.isfinite(tot)):
                empty = [int(c) for c in np.flatnonzero(~np.isfinite(tot))]
                raise ValueError(f"class(es) {empty} have all-zero counts: their feature probabilities are "
                                 "undefined; pass alpha > 0 (additive smoothing) or drop those rows")
            est["probs"] = [est["probs"][c] for c in range(self.n_classes)]
        return est

    def fit(self, data, mask=None, warn: bool = True) -> FitResult:
        """The closed-form MLE as a ``FitResult``, computed with NumPy (no XLA compile).

        Standard errors come from the observed information at the estimate (see the
        module docstring); status CONVERGED, or AT_BOUNDARY when a Bernoulli or
        multinomial probability is exactly 0 or 1 (``alpha=0``; those elements get NaN
        standard errors and are listed in ``res.boundary_params``).

        Example:
            >>> model = jm.models.gaussian_nb(4, 3)
            >>> res = model.fit({"X": X, "y": y}); print(res.summary())
        """
        X, y, m = self._host_data(data, mask)
        est = self.closed_form(data, mask)
        dtype = np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
        ll = float(np.sum(self._terms(est, X[m], y[m], np)))
        n = int(m.sum())
        n_c = np.bincount(y[m], minlength=self.n_classes).astype(float)
        z, blocks, edge, eig = [], [], [], []
        priors = est["priors"]
        z.append(np.log(priors[:-1]) - np.log(priors[-1]))
        blocks.append((np.diag(priors) - np.outer(priors, priors)) / n)
        edge.append(np.zeros(self.n_classes, bool))
        eig.append(_scaled_simplex_eig(priors))
        if self.kind == "gaussian":
            s = est["scales"]
            z += [est["means"].ravel(), np.log(s).ravel()]
            blocks += [(s ** 2 / n_c[:, None]).ravel(), (s ** 2 / (2 * n_c[:, None])).ravel()]
            edge += [np.zeros(s.size, bool)] * 2
        elif self.kind == "bernoulli":
            p = est["probs"]
            with np.errstate(divide="ignore"):
                z.append((np.log(p) - np.log1p(-p)).ravel())
            at = ((p <= 0) | (p >= 1)).ravel()
            blocks.append(np.where(at, np.nan, (p * (1 - p) / n_c[:, None]).ravel()))
            edge.append(at)
        else:
            N_c = (np.eye(self.n_classes)[y] * m[:, None]).T @ X
            N_c = N_c.sum(axis=1)
            for c, p in enumerate(est["probs"]):
                with np.errstate(divide="ignore"):
                    z.append(np.log(p[:-1]) - np.log(p[-1]))
                at = p <= 0
                cov = (np.diag(p) - np.outer(p, p)) / N_c[c]
                cov[at, :] = np.nan
                cov[:, at] = np.nan
                blocks.append(cov)
                edge.append(at)
                if not at.any():
                    eig.append(_scaled_simplex_eig(p))
        boundary = np.concatenate(edge)
        k = boundary.size
        if k <= _dense_max():
            cov = np.zeros((k, k))
            i = 0
            for b in blocks:
                if b.ndim == 1:
                    cov[np.arange(i, i + b.size), np.arange(i, i + b.size)] = b
                    i += b.size
                else:
                    cov[i:i + b.shape[0], i:i + b.shape[0]] = b
                    i += b.shape[0]
            cov = cov.astype(dtype)
            eig = np.concatenate(eig + [np.ones(1)])
            cond = np.inf if boundary.any() else float(eig.max() / eig.min())
        else:
            cov, cond = None, np.nan
        status = Status.AT_BOUNDARY if boundary.any() else Status.CONVERGED
        params = {kk: (np.asarray(v, dtype) if not isinstance(v, list) else [np.asarray(r, dtype) for r in v])
                  for kk, v in est.items()}
        fields = dict(
            params=params, z=np.concatenate(z).astype(dtype), fixed=[], loglik=np.asarray(ll, dtype),
            logpost=np.asarray(ll, dtype), status=np.asarray(int(status), np.int32),
            n_iter=np.asarray(0, np.int32), grad_norm=np.asarray(0.0, dtype), n_obs=np.asarray(float(n), dtype),
            cov=cov, cond=np.asarray(cond, dtype), boundary=boundary,
            evals=np.zeros(3, np.int32), trace=None,
        )
        host = {"X": X.astype(dtype), "y": y.astype(np.int32)}
        res = FitResult(self, "closed_form", fields, data=host,
                        mask=None if mask is None else np.asarray(m), n_terms=X.shape[0])
        if warn and status != Status.CONVERGED:
            from .._fit import _warn_status
            _warn_status(res, stacklevel=2)
        return res

    # ``jm.fit(model, data)`` hands an "auto" fit to this (see jaxmle._fit.fit).
    closed_form_fit = fit

    # -- prediction (NumPy on host arrays, jax.numpy inside a JAX transform) -----------
    def joint_log_likelihood(self, params, data):
        """log prior_c + log p(x | c) for every row and class, (n, n_classes); the
        multinomial coefficient (the same for every class) is left out, as in scikit-learn."""
        X = data["X"] if isinstance(data, dict) else data
        xp = jnp if _is_traced((params, X)) else np
        X = xp.asarray(X, dtype=float) if xp is np else jnp.asarray(X)
        priors, parts = self._class_params(params, xp)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}; expected (n, {self.n_features})")
        with np.errstate(divide="ignore"):
            cols = [xp.log(priors[c]) + self._cond_terms(X, tuple(a[c] for a in parts), xp)
                    for c in range(self.n_classes)]
        return xp.stack(cols, axis=1)

    def predict_log_proba(self, params, data):
        """log P(class | x), (n, n_classes)."""
        jll = self.joint_log_likelihood(params, data)
        xp = np if isinstance(jll, np.ndarray) else jnp
        top = xp.max(jll, axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):
            return jll - (top + xp.log(xp.sum(xp.exp(jll - top), axis=1, keepdims=True)))

    def predict_proba(self, params, data):
        """Posterior class probabilities P(class | x), (n, n_classes), like scikit-learn's."""
        lp = self.predict_log_proba(params, data)
        return np.exp(lp) if isinstance(lp, np.ndarray) else jnp.exp(lp)

    def predict(self, params, data):
        """The most probable class of each row, (n,) ints."""
        jll = self.joint_log_likelihood(params, data)
        return np.argmax(jll, axis=1) if isinstance(jll, np.ndarray) else jnp.argmax(jll, axis=1)


def _dense_max() -> int:
    from .._solve import DENSE_HESSIAN_MAX_PARAMS
    return DENSE_HESSIAN_MAX_PARAMS


def _scaled_simplex_eig(p):
    """Eigenvalues of the simplex log-ratio information n (diag(q) - q q'), q = p[:-1],
    scaled to unit diagonal (what ``cond`` reports; n cancels)."""
    q = p[:-1]
    H = np.diag(q) - np.outer(q, q)
    d = 1.0 / np.sqrt(np.diag(H))
    return np.linalg.eigvalsh(H * np.outer(d, d))


def gaussian_nb(n_features: int, n_classes: int, var_smoothing: float = 0.0) -> NaiveBayes:
    """Gaussian naive Bayes: params "priors" (Simplex, n_classes), "means" and "scales"
    (Positive), both (n_classes, n_features).

    ``model.fit(data)`` returns the closed-form MLE (class frequencies, class means,
    1/n_c standard deviations) with standard errors in milliseconds; posteriors with
    ``model.predict_proba(params, {"X": X})`` equal scikit-learn's
    ``GaussianNB(var_smoothing=0)`` (``var_smoothing`` here adds the same epsilon,
    var_smoothing x the largest feature variance, to every variance).

    Example:
        >>> model = jm.models.gaussian_nb(4, 3)
        >>> res = model.fit({"X": X, "y": y})
        >>> model.predict_proba(res.params, {"X": X_new})
    """
    return NaiveBayes("gaussian", n_features, n_classes, var_smoothing=var_smoothing)


def bernoulli_nb(n_features: int, n_classes: int, alpha: float = 0.0) -> NaiveBayes:
    """Bernoulli naive Bayes on 0/1 features: params "priors" (Simplex) and "probs"
    (n_classes, n_features), P(feature present | class), in (0, 1).

    The MLE (``alpha=0``) is the fraction of the class's rows with the feature; a
    probability of exactly 0 or 1 is reported with status AT_BOUNDARY. ``alpha > 0``
    gives scikit-learn's smoothed (count + alpha) / (n_c + 2 alpha), as ``BernoulliNB(alpha)``.
    """
    return NaiveBayes("bernoulli", n_features, n_classes, alpha=alpha)


def multinomial_nb(n_features: int, n_classes: int, alpha: float = 0.0) -> NaiveBayes:
    """Multinomial naive Bayes on counts: params "priors" (Simplex) and "probs", a list
    of n_classes Simplex vectors over the features (``np.stack(params["probs"])`` is the
    (n_classes, n_features) matrix; names "probs.c[j]").

    The MLE (``alpha=0``) is each feature's share of the class's total count; the
    log-likelihood includes the multinomial coefficient. ``alpha > 0`` gives
    scikit-learn's (count + alpha) / (N_c + n_features alpha), as ``MultinomialNB(alpha)``.
    """
    return NaiveBayes("multinomial", n_features, n_classes, alpha=alpha)
