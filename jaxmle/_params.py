"""Constraint wrappers, bijectors to an unconstrained vector, and parameter names.

A parameter spec is a dict (nested dicts allowed) whose leaves are either a plain
initial value (an unconstrained real, scalar or array) or a constraint wrapper
carrying its initial value. Optimizers see one flat unconstrained vector ``z``;
users only ever see natural-scale values.
"""

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


def _is_constraint(x) -> bool:
    return isinstance(x, Constraint)


def _path_name(path) -> str:
    parts = []
    for key in path:
        parts.append(str(getattr(key, "key", getattr(key, "idx", key))))
    return ".".join(parts)


def _element_names(name: str, shape: tuple) -> list[str]:
    if shape == ():
        return [name]
    return [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


class ParamSpec:
    """The flattened view of a parameter spec: leaves, shapes, names and bijectors.

    Args:
        spec: dict of initial values and constraint wrappers.
    """

    def __init__(self, spec: dict):
        if not isinstance(spec, dict) or not spec:
            raise TypeError(
                "the parameter spec must be a non-empty dict such as "
                "{'mu': 0.0, 'sigma': jm.Positive(1.0)}; got " + type(spec).__name__
            )
        with_path, self.treedef = jax.tree_util.tree_flatten_with_path(spec, is_leaf=_is_constraint)
        self.leaf_names: list[str] = []
        self.constraints: list[Constraint] = []
        self.shapes: list[tuple] = []
        self.inits: list[np.ndarray] = []
        for path, leaf in with_path:
            name = _path_name(path)
            con = leaf if _is_constraint(leaf) else Real(leaf)
            try:
                if np.iscomplexobj(con.init):
                    raise TypeError
                value = np.asarray(con.init, dtype=float)
            except (TypeError, ValueError):
                raise TypeError(
                    f"parameter {name!r}: the initial value {con.init!r} is not numeric; "
                    "give a number or an array"
                ) from None
            bad = con.violation(value)
            if bad:
                raise ValueError(f"parameter {name!r}: the initial value {con.init!r} {bad}")
            self.leaf_names.append(name)
            self.constraints.append(con)
            self.shapes.append(value.shape)
            self.inits.append(value)
        self.free_sizes = [c.n_free(s) for c, s in zip(self.constraints, self.shapes)]
        self.n_free = int(sum(self.free_sizes))
        self.is_fixed = [isinstance(c, Fixed) for c in self.constraints]
        self.names = [
            n
            for name, shape, fixed in zip(self.leaf_names, self.shapes, self.is_fixed)
            if not fixed
            for n in _element_names(name, shape)
        ]
        if self.n_free == 0:
            raise ValueError("every parameter is jm.Fixed: there is nothing to estimate")

    # -- host-side helpers -------------------------------------------------
    def natural_leaves(self, init: dict | None, batch: int | None = None) -> list[np.ndarray]:
        """Start values as a list of leaves, with the spec's values overridden by ``init``.

        With ``batch`` set, a leaf of ``init`` may carry a leading axis of that length
        (one start value per dataset); the returned leaves then all have it.
        """
        leaves = [v.copy() for v in self.inits]
        if init is not None:
            if not isinstance(init, dict):
                raise TypeError("init must be a dict with (some of) the spec's parameter names")
            flat, _ = jax.tree_util.tree_flatten_with_path(init)
            index = {n: i for i, n in enumerate(self.leaf_names)}
            for path, value in flat:
                name = _path_name(path)
                if name not in index:
                    raise ValueError(
                        f"init names unknown parameter {name!r}; the parameters are {self.leaf_names}"
                    )
                leaves[index[name]] = np.asarray(value, dtype=float)
        out = []
        for name, con, shape, value in zip(self.leaf_names, self.constraints, self.shapes, leaves):
            if value.shape == shape:
                per = value[None] if batch is not None else value
            elif batch is not None and value.shape == (batch,) + shape:
                per = value
            else:
                want = f"{shape}" + (f" or {(batch,) + shape} (one per dataset)" if batch else "")
                raise ValueError(
                    f"init for {name!r} has shape {value.shape}; expected {want}"
                )
            for row in per if batch is not None else [per]:
                bad = con.violation(np.asarray(row))
                if bad:
                    raise ValueError(
                        f"the start value of {name!r} ({np.asarray(row).tolist()}) {bad}; "
                        "pass a valid value in init= or in the spec"
                    )
            if batch is not None:
                per = np.broadcast_to(per, (batch,) + shape)
            out.append(per)
        return out

    # -- traceable maps ------------------------------------------------------
    def to_z(self, leaves, dtype):
        """Natural leaves -> flat unconstrained vector (fixed leaves are skipped)."""
        parts = [
            con.inverse(jnp.asarray(v, dtype))
            for con, v, fixed in zip(self.constraints, leaves, self.is_fixed)
            if not fixed
        ]
        return jnp.concatenate(parts)

    def fixed_values(self, leaves, dtype):
        """The fixed leaves' values, in spec order (inputs of the compiled fit)."""
        return [jnp.asarray(v, dtype) for v, fixed in zip(leaves, self.is_fixed) if fixed]

    def to_leaves(self, z, fixed):
        """Flat unconstrained vector (+ fixed values) -> natural leaves."""
        out, i, j = [], 0, 0
        for con, shape, size, is_fixed in zip(
            self.constraints, self.shapes, self.free_sizes, self.is_fixed
        ):
            if is_fixed:
                out.append(fixed[j])
                j += 1
            else:
                out.append(con.forward(z[i : i + size], shape))
                i += size
        return out

    def to_params(self, z, fixed):
        """Flat unconstrained vector -> natural parameter dict (what the user sees)."""
        return jax.tree_util.tree_unflatten(self.treedef, self.to_leaves(z, fixed))

    def unflatten(self, leaves):
        return jax.tree_util.tree_unflatten(self.treedef, list(leaves))

    def natural_flat(self, z, fixed):
        """Free natural-scale values as one flat vector, ordered as ``names``."""
        leaves = self.to_leaves(z, fixed)
        return jnp.concatenate(
            [jnp.ravel(v) for v, f in zip(leaves, self.is_fixed) if not f]
        )

    def edge_distance_flat(self, z, fixed):
        """Distance of each free natural element to its constraint edge."""
        leaves = self.to_leaves(z, fixed)
        return jnp.concatenate(
            [
                jnp.ravel(con.edge_distance(v))
                for con, v, f in zip(self.constraints, leaves, self.is_fixed)
                if not f
            ]
        )

    def replace_free(self, leaves, flat):
        """Leaves with the free ones replaced by slices of a flat natural vector (traceable)."""
        out, i = [], 0
        for v, shape, fixed in zip(leaves, self.shapes, self.is_fixed):
            if fixed:
                out.append(v)
            else:
                size = int(np.prod(shape, dtype=int))
                out.append(flat[i : i + size].reshape(shape))
                i += size
        return out

    def flat_to_tree(self, flat, fill=np.nan):
        """A flat vector ordered as ``names`` (last axis) -> dict shaped like params.

        Fixed leaves get ``fill``. Leading (batch) axes are kept.
        """
        flat = np.asarray(flat)
        lead = flat.shape[:-1]
        out, i = [], 0
        for shape, fixed in zip(self.shapes, self.is_fixed):
            size = int(np.prod(shape, dtype=int))
            if fixed:
                out.append(np.full(lead + shape, fill))
            else:
                out.append(flat[..., i : i + size].reshape(lead + shape))
                i += size
        return self.unflatten(out)
