"""Constraint wrappers: each carries a start value and the bijector between the
natural scale and the unconstrained coordinates the optimizers work on."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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
