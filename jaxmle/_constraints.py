"""Constraint wrappers: each carries a start value and the bijector between the
natural scale and the unconstrained coordinates the optimizers work on."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._linalg import lapack_ready


class Constraint:
    """Base of the constraint wrappers. Subclasses define the bijector.

    ``elementwise`` says whether each natural element is a monotone function of its
    own unconstrained coordinate (z and the natural value have the same size, one
    to one). Profile intervals pin one coordinate at a time and need this; a
    constraint that couples elements (a simplex, a covariance matrix) sets it False.
    """

    init: Any
    elementwise: bool = True

    def n_free(self, shape: tuple) -> int:
        return int(np.prod(shape, dtype=int))

    def forward(self, z, shape):
        """Unconstrained segment -> natural value of ``shape``."""
        raise NotImplementedError

    def inverse(self, x):
        """Natural value -> flat unconstrained segment."""
        raise NotImplementedError

    def violation(self, x: np.ndarray) -> str | None:
        """A description of why ``x`` is not allowed, or None."""
        return None

    def valid_rows(self, x: np.ndarray) -> np.ndarray:
        """For a stack of values (leading axis: one per dataset), which rows are allowed.

        One array operation for the elementwise constraints, so checking 10^6
        per-dataset start values costs no more than checking one; constraints
        that couple elements override it.
        """
        if self.elementwise:
            ok = np.isfinite(x) & self._allowed(x)
            return ok.reshape(x.shape[0], -1).all(axis=1)
        return np.array([self.violation(row) is None for row in x], dtype=bool)

    def _allowed(self, x: np.ndarray) -> np.ndarray:
        """Elementwise: which (finite) elements lie inside the constraint."""
        return np.ones(np.shape(x), dtype=bool)

    def edge_distance(self, x):
        """Distance of each element to the nearest constraint edge (inf if none)."""
        return jnp.full(jnp.shape(x), jnp.inf, dtype=jnp.result_type(x))

    def wald_ok(self, x: np.ndarray) -> np.ndarray:
        """Host NumPy: which elements of a natural value have a meaningful Wald standard
        error (their delta-method one is reported NaN elsewhere)."""
        return np.ones(np.shape(x), dtype=bool)


class Real(Constraint):
    """An unconstrained real parameter (what a plain spec value means)."""

    def __init__(self, init=0.0):
        self.init = init

    def forward(self, z, shape):
        return z.reshape(shape)

    def inverse(self, x):
        return jnp.ravel(x)

    def violation(self, x):
        if not np.all(np.isfinite(x)):
            return "must be finite"
        return None

    def __repr__(self):
        return f"Real({self.init!r})"


class Positive(Constraint):
    """A parameter > 0, optimised as log(x).

    Example:
        >>> jm.Model(loglik, {"sigma": jm.Positive(1.0)})
    """

    def __init__(self, init=1.0):
        self.init = init

    def forward(self, z, shape):
        return jnp.exp(z).reshape(shape)

    def inverse(self, x):
        return jnp.log(jnp.ravel(x))

    def violation(self, x):
        if not np.all(np.isfinite(x)) or np.any(x <= 0):
            return "must be finite and > 0 (jm.Positive)"
        return None

    def _allowed(self, x):
        return x > 0

    def edge_distance(self, x):
        return x

    def __repr__(self):
        return f"Positive({self.init!r})"


class Interval(Constraint):
    """A parameter in the open interval (lo, hi); either end may be infinite.

    Both finite: a scaled logistic bijector; one end infinite: a shifted exp.
    ``init`` defaults to the midpoint (or one unit inside a half-line).

    Example:
        >>> jm.Interval(0.0, 1.0)            # a probability, starts at 0.5
        >>> jm.Interval(-1.0, 1.0, init=0.2)  # a correlation
    """

    def __init__(self, lo=0.0, hi=1.0, init=None):
        try:
            lo, hi = float(lo), float(hi)
        except (TypeError, ValueError):
            raise TypeError(
                f"Interval bounds must be numbers, got lo={lo!r}, hi={hi!r}"
            ) from None
        if math.isnan(lo) or math.isnan(hi) or not lo < hi:
            raise ValueError(
                f"Interval(lo={lo}, hi={hi}): lo must be strictly less than hi; "
                "swap the bounds or use jm.Fixed for a known value"
            )
        if math.isinf(lo) and math.isinf(hi):
            raise ValueError(
                "Interval(-inf, inf) is no constraint: give a plain initial value instead"
            )
        self.lo, self.hi = lo, hi
        if init is None:
            if math.isinf(hi):
                init = lo + 1.0
            elif math.isinf(lo):
                init = hi - 1.0
            else:
                init = 0.5 * (lo + hi)
        self.init = init

    def forward(self, z, shape):
        if math.isinf(self.hi):
            x = self.lo + jnp.exp(z)
        elif math.isinf(self.lo):
            x = self.hi - jnp.exp(z)
        else:
            x = self.lo + (self.hi - self.lo) * jax.nn.sigmoid(z)
        return x.reshape(shape)

    def inverse(self, x):
        x = jnp.ravel(x)
        if math.isinf(self.hi):
            return jnp.log(x - self.lo)
        if math.isinf(self.lo):
            return jnp.log(self.hi - x)
        u = (x - self.lo) / (self.hi - self.lo)
        return jnp.log(u) - jnp.log1p(-u)

    def violation(self, x):
        if not np.all(np.isfinite(x)) or np.any(x <= self.lo) or np.any(x >= self.hi):
            return f"must lie strictly inside ({self.lo}, {self.hi}) (jm.Interval)"
        return None

    def _allowed(self, x):
        return (x > self.lo) & (x < self.hi)

    def edge_distance(self, x):
        return jnp.minimum(x - self.lo, self.hi - x)

    def __repr__(self):
        return f"Interval({self.lo}, {self.hi}, init={self.init!r})"


class Simplex(Constraint):
    """A probability vector (elements > 0 summing to 1), optimised as k-1 log-ratios
    against the last element.

    Example:
        >>> jm.Simplex(jnp.ones(3) / 3)
    """

    elementwise = False

    def __init__(self, init):
        self.init = init

    def n_free(self, shape):
        return int(shape[-1]) - 1 if len(shape) == 1 else -1

    def forward(self, z, shape):
        full = jnp.concatenate([z, jnp.zeros((1,), z.dtype)])
        return jax.nn.softmax(full).reshape(shape)

    def inverse(self, x):
        x = jnp.ravel(x)
        return jnp.log(x[:-1]) - jnp.log(x[-1])

    def violation(self, x):
        if x.ndim != 1 or x.shape[0] < 2:
            return "must be a 1-D vector of length >= 2 (jm.Simplex)"
        if not np.all(np.isfinite(x)) or np.any(x <= 0):
            return "must have all elements > 0 (jm.Simplex)"
        if abs(float(np.sum(x)) - 1.0) > 1e-6:
            return f"must sum to 1 (sums to {float(np.sum(x)):.6g}; jm.Simplex)"
        return None

    def valid_rows(self, x):
        if x.ndim != 2 or x.shape[1] < 2:
            return super().valid_rows(x)
        pos = (np.isfinite(x) & (x > 0)).all(axis=1)
        return pos & (np.abs(x.sum(axis=1) - 1.0) <= 1e-6)

    def edge_distance(self, x):
        return x

    def __repr__(self):
        return f"Simplex({self.init!r})"


class PositiveDefinite(Constraint):
    """A symmetric positive-definite matrix (e.g. a covariance), optimised through its
    Cholesky factor: the lower triangle with a log-transformed diagonal.

    Leaves of shape (..., d, d) hold a stack of matrices. The natural elements are all
    d*d entries, so their covariance block is singular (the matrix is symmetric);
    profile intervals are not defined for them.

    Example:
        >>> jm.PositiveDefinite(jnp.eye(2))
    """

    elementwise = False

    def __init__(self, init):
        self.init = init

    def n_free(self, shape):
        if len(shape) < 2 or shape[-1] != shape[-2]:
            return -1
        d = shape[-1]
        return int(np.prod(shape[:-2], dtype=int)) * d * (d + 1) // 2

    def forward(self, z, shape):
        d = shape[-1]
        rows, cols = np.tril_indices(d)
        z = z.reshape(shape[:-2] + (len(rows),))
        L = jnp.zeros(shape, z.dtype).at[..., rows, cols].set(z)
        diag = jnp.arange(d)
        L = L.at[..., diag, diag].set(jnp.exp(L[..., diag, diag]))
        return L @ jnp.swapaxes(L, -1, -2)

    def inverse(self, x):
        d = x.shape[-1]
        lapack_ready()
        L = jnp.linalg.cholesky(x)
        diag = jnp.arange(d)
        L = L.at[..., diag, diag].set(jnp.log(L[..., diag, diag]))
        rows, cols = np.tril_indices(d)
        return jnp.ravel(L[..., rows, cols])

    def violation(self, x):
        if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
            return "must be a square matrix (or a stack of them) (jm.PositiveDefinite)"
        if not np.all(np.isfinite(x)) or not np.allclose(x, np.swapaxes(x, -1, -2)):
            return "must be finite and symmetric (jm.PositiveDefinite)"
        if np.any(np.linalg.eigvalsh(x) <= 0):
            return "must be positive definite (jm.PositiveDefinite)"
        return None

    def valid_rows(self, x):
        if x.ndim < 3 or x.shape[-1] != x.shape[-2]:
            return super().valid_rows(x)
        rows = x.reshape(x.shape[0], -1)
        ok = np.isfinite(rows).all(axis=1)
        ok &= np.isclose(x, np.swapaxes(x, -1, -2)).reshape(x.shape[0], -1).all(axis=1)
        safe = np.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, np.eye(x.shape[-1]))
        # numpy's eigvalsh, not jax's: a host check, outside any batched LAPACK call.
        pd = (np.linalg.eigvalsh(safe) > 0).reshape(x.shape[0], -1).all(axis=1)
        return ok & pd

    def __repr__(self):
        return f"PositiveDefinite({self.init!r})"


def _frame(K: int) -> np.ndarray:
    """The fixed rotation of ``SphereSimplex``: first column (1, ..., 1) / sqrt(K), the
    others a fixed generic orthonormal completion (identity for K = 2)."""
    if K == 2:
        return np.eye(2)
    M = np.column_stack([np.full(K, 1.0 / np.sqrt(K)), np.random.default_rng(0).standard_normal((K, K - 1))])
    Q, _ = np.linalg.qr(M)
    return Q


class SphereSimplex(Constraint):
    """A probability vector of an HMM (transition or emission row), parametrised so that
    an element at 0 is an ordinary interior point of the unconstrained coordinates.

    Under ``jm.Simplex`` (log-ratios) a probability of 0 lies at infinity: Newton chases
    it, its curvature vanishes, and the fit ends AT_BOUNDARY only if it got there, or,
    mid-chase, with a failed step (LINESEARCH_FAILED). Here ``pi_k = u_k^2`` with ``u = R v``
    on the unit sphere, ``v`` in hyperspherical angles ``z`` (K - 1 of them, any real:
    the map is periodic, so nothing lies at infinity) and ``R`` a fixed rotation. At a
    vertex the log-likelihood has zero gradient and strictly negative curvature (it
    falls like ``u_j^2`` away from it), so the fit converges there like at any interior
    maximum. The angles' chart is degenerate only where ``R^T u`` has its last two
    coordinates 0; ``R`` puts that set through the uniform distribution and away from
    every vertex (K = 2: nowhere). The map is many to one (signs, periods), which is
    harmless for a maximum. The delta-method standard error of an element at a vertex
    is 0 (the Jacobian vanishes there).

    An element at 0 is still an edge (``edge_distance`` is the probability, and its
    delta-method standard error is proportional to ``|u_k|``, so it is flagged: status
    AT_BOUNDARY); ``StartSimplex`` is the exception.
    """

    elementwise = False

    def __init__(self, init):
        self.init = init

    def edge_distance(self, x):
        return x

    def wald_ok(self, x):
        # At a vertex the map's Jacobian vanishes: the delta-method standard error of
        # a probability at 0 or 1 is 0, which is no standard error at all.
        x = np.asarray(x)
        return (x > 1e-10) & (x < 1.0 - 1e-10)

    def n_free(self, shape):
        return int(shape[-1]) - 1

    def forward(self, z, shape):
        K = int(shape[-1])
        c, s = jnp.cos(z), jnp.sin(z)
        # v_k = sin z_0 ... sin z_(k-1) cos z_k; the last, the product of all sines.
        # (products written out: jnp.cumprod's derivative divides by its factors, NaN at a
        # sine of 0, which is exactly where a vertex can sit)
        lead = [jnp.ones((), z.dtype)]
        for k in range(K - 1):
            lead.append(lead[-1] * s[k])
        lead = jnp.stack(lead)
        v = lead * jnp.concatenate([c, jnp.ones((1,), z.dtype)])
        u = jnp.asarray(_frame(K), z.dtype) @ v
        return (u * u).reshape(shape)

    def inverse(self, x):
        x = jnp.ravel(x)
        K = x.shape[0]
        # Alternating signs keep the uniform start off the chart's degenerate set.
        sign = jnp.asarray((-1.0) ** np.arange(K), x.dtype)
        v = jnp.asarray(_frame(K), x.dtype).T @ (sign * jnp.sqrt(jnp.maximum(x, 0.0)))
        tail = jnp.sqrt(jnp.cumsum((v * v)[::-1])[::-1])          # |v[k:]|
        head = jnp.arctan2(tail[1:K - 1], v[:K - 2])
        return jnp.concatenate([head, jnp.arctan2(v[K - 1:], v[K - 2:K - 1])])

    def violation(self, x):
        if x.ndim != 1 or x.shape[0] < 2:
            return "must be a 1-D vector of length >= 2 (probability vector)"
        if not np.all(np.isfinite(x)) or np.any(x < 0):
            return "must have all elements >= 0 (probability vector)"
        if abs(float(np.sum(x)) - 1.0) > 1e-6:
            return f"must sum to 1 (sums to {float(np.sum(x)):.6g}; probability vector)"
        return None

    def valid_rows(self, x):
        if x.ndim != 2 or x.shape[1] < 2:
            return super().valid_rows(x)
        ok = (np.isfinite(x) & (x >= 0)).all(axis=1)
        return ok & (np.abs(x.sum(axis=1) - 1.0) <= 1e-6)

    def __repr__(self):
        return f"{type(self).__name__}({self.init!r})"


class StartSimplex(SphereSimplex):
    """The initial-state distribution (``SphereSimplex``) whose vertices are no edge.

    With one sequence the likelihood is linear in the start probabilities, so their MLE
    is always a vertex (all mass on one state): structural, not a fact about the data,
    so it is not reported as AT_BOUNDARY (see ``jm.models.hmm``).
    """

    def edge_distance(self, x):
        return jnp.full(jnp.shape(x), jnp.inf, dtype=jnp.result_type(x))


class Fixed(Constraint):
    """A parameter held at a known value (not estimated; excluded from the covariance).

    Example:
        >>> jm.Model(loglik, {"mu": 0.0, "sigma": jm.Fixed(1.0)})
    """

    def __init__(self, value):
        self.init = value

    def n_free(self, shape):
        return 0

    def violation(self, x):
        if not np.all(np.isfinite(x)):
            return "must be finite (jm.Fixed)"
        return None

    def __repr__(self):
        return f"Fixed({self.init!r})"
