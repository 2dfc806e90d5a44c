"""The parameter spec: flattening, bijectors to an unconstrained vector, and names.

A parameter spec is a dict (nested dicts allowed) whose leaves are either a plain
initial value (an unconstrained real, scalar or array) or a constraint wrapper
carrying its initial value. Optimizers see one flat unconstrained vector ``z``;
users only ever see natural-scale values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._compile import fingerprint
from ._constraints import (Constraint, Fixed, Interval, Positive, PositiveDefinite, Real,  # noqa: F401
                           Simplex)
from ._data import lists_to_arrays


class ParamDict(dict):
    """A parameter dict that JAX flattens in its own key order, the spec's.

    JAX flattens plain dicts in sorted key order; parameters are reported in the
    order the user wrote them (as statsmodels and iminuit do), so every params
    dict jaxmle builds is one of these. It is a ``dict`` in every other way.
    """

    __slots__ = ()


jax.tree_util.register_pytree_with_keys(
    ParamDict,
    lambda d: ([(jax.tree_util.DictKey(k), v) for k, v in d.items()], tuple(d)),
    lambda keys, values: ParamDict(zip(keys, values)),
    lambda d: (list(d.values()), tuple(d)),
)


def _is_constraint(x) -> bool:
    return isinstance(x, Constraint)


def _ordered(tree):
    """Nested dicts of a spec as ParamDicts, keeping the user's key order."""
    if isinstance(tree, dict):
        return ParamDict((k, _ordered(v)) for k, v in tree.items())
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        return type(tree)(_ordered(v) for v in tree)
    return tree


def _raw_key(key):
    return getattr(key, "key", getattr(key, "idx", key))


class _Structure:
    """``spec.treedef``: flattens any params tree (plain dict or ParamDict) in spec order."""

    def __init__(self, spec: "ParamSpec"):
        self._spec = spec

    def flatten_up_to(self, tree) -> list:
        return self._spec.flatten(tree)

    def unflatten(self, leaves):
        return self._spec.unflatten(leaves)

    @property
    def num_leaves(self) -> int:
        return len(self._spec.leaf_names)


def _numeric(name: str, value) -> np.ndarray:
    """``value`` as a float array, or the TypeError that names the parameter (a spec's
    start value and an ``init=`` value alike)."""
    try:
        if np.iscomplexobj(value):
            raise TypeError
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"parameter {name!r}: the initial value {value!r} is not numeric; "
                        "give a number or an array") from None


def _path_name(path) -> str:
    return ".".join(str(_raw_key(key)) for key in path)


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
        # Leaves, names, the unconstrained vector and the covariance all follow the
        # order in which the user wrote the spec (ParamDict), not JAX's sorted keys.
        self.source = _ordered(lists_to_arrays(spec))
        with_path, self._treedef = jax.tree_util.tree_flatten_with_path(self.source, is_leaf=_is_constraint)
        self.treedef = _Structure(self)
        self._paths = [tuple(_raw_key(k) for k in path) for path, _ in with_path]
        self.leaf_names: list[str] = []
        self.constraints: list[Constraint] = []
        self.shapes: list[tuple] = []
        self.inits: list[np.ndarray] = []
        for path, leaf in with_path:
            name = _path_name(path)
            con = leaf if _is_constraint(leaf) else Real(leaf)
            value = _numeric(name, con.init)
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

    def sharing_key(self):
        """What compiled programs take from the spec, as a key (None if unreadable).

        Names, shapes and each constraint's kind and settings (Interval bounds);
        not the start values, which reach programs as arguments (z0, fixed values).
        """
        cons = tuple((type(c).__qualname__, fingerprint({k: v for k, v in vars(c).items() if k != "init"}))
                     for c in self.constraints)
        if any(f is None for _, f in cons):
            return None
        return (tuple(self._paths), tuple(self.leaf_names), tuple(self.shapes), cons)

    # -- host-side helpers -------------------------------------------------
    def natural_leaves(self, init: dict | None, batch: int | None = None, start: list | None = None) -> list[np.ndarray]:
        """Start values as a list of leaves, with the spec's values overridden by ``init``.

        With ``batch`` set, a leaf of ``init`` may carry a leading axis of that length
        (one start value per dataset); the returned leaves then all have it.
        ``start`` (one entry per leaf, None where it has nothing to say; a leading
        batch axis when batched) holds the model's data-driven start values: they
        replace the spec's, except in the datasets where one is not allowed by its
        constraint or not finite, which keep the spec's; ``init`` overrides both.
        """
        leaves = [v.copy() for v in self.inits]
        given = [False] * len(leaves)
        if init is not None:
            if not isinstance(init, dict):
                raise TypeError("init must be a dict with (some of) the spec's parameter names")
            for i, value in self.named_leaves(lists_to_arrays(init), "init"):
                leaves[i] = _numeric(self.leaf_names[i], value)
                given[i] = True
        out = []
        for i, (name, con, shape, value) in enumerate(zip(self.leaf_names, self.constraints, self.shapes, leaves)):
            if value.shape == shape:
                per = value[None]
            elif batch is not None and value.shape == (batch,) + shape:
                per = value
            else:
                want = f"{shape}" + (f" or {(batch,) + shape} (one per dataset)" if batch else "")
                raise ValueError(
                    f"init for {name!r} has shape {value.shape}; expected {want}"
                )
            # One array operation for all datasets' start values; only the first bad
            # one is described.
            ok = con.valid_rows(per)
            if not ok.all():
                j = int(np.argmin(ok))
                where = f" for dataset {j}" if per.shape[0] > 1 else ""
                raise ValueError(
                    f"the start value of {name!r}{where} ({per[j].tolist()}) {con.violation(per[j])}; "
                    "pass a valid value in init= or in the spec"
                )
            if start is not None and start[i] is not None and not given[i]:
                per = self._data_start(con, np.asarray(start[i], dtype=float), per)
            if batch is not None:
                per = np.broadcast_to(per, (batch,) + shape)
            else:
                per = per[0]
            out.append(per)
        return out

    def named_leaves(self, tree, what: str) -> list[tuple[int, object]]:
        """(leaf index, value) for each leaf of a params dict, matched by its dotted name.

        ``what`` names the source in the error for a name the spec does not have.
        """
        index = {n: i for i, n in enumerate(self.leaf_names)}
        out = []
        for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
            name = _path_name(path)
            if name not in index:
                raise ValueError(f"{what} names unknown parameter {name!r}; the parameters are {self.leaf_names}")
            out.append((index[name], value))
        return out

    @staticmethod
    def _data_start(con, value, fallback):
        """A model's data-driven start values where allowed, ``fallback`` (the spec's) elsewhere.

        ``value`` carries a leading axis (one row per dataset, or one row).
        """
        ok = con.valid_rows(value)
        return np.where(ok.reshape((-1,) + (1,) * (value.ndim - 1)), value, fallback)

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
        return [jax.device_put(np.asarray(v, dtype)) if isinstance(v, (np.ndarray, np.generic, float, int))
                else jnp.asarray(v, dtype) for v, fixed in zip(leaves, self.is_fixed) if fixed]

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
        return self.unflatten(self.to_leaves(z, fixed))

    def unflatten(self, leaves):
        """Leaves in spec order -> params tree (ParamDicts in spec order)."""
        return jax.tree_util.tree_unflatten(self._treedef, list(leaves))

    def flatten(self, tree) -> list:
        """A params tree (plain dicts accepted) -> its leaves in spec order.

        Looks each leaf up by its path, so a dict built by user code (an EM update,
        random starts) works whatever its key order.
        """
        out = []
        for name, path in zip(self.leaf_names, self._paths):
            node = tree
            try:
                for key in path:
                    node = node[key]
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"the parameters {_keys(tree)} lack {name!r}; they need every key "
                                 "of the spec") from None
            out.append(node)
        return out

    def coerce(self, tree):
        """A params tree rebuilt in spec order (a no-op for ParamDict trees)."""
        if isinstance(tree, ParamDict) or not isinstance(tree, dict):
            return tree
        return self.unflatten(self.flatten(tree))

    def __reduce__(self):
        return (ParamSpec, (self.source,))

    def natural_flat(self, z, fixed):
        """Free natural-scale values as one flat vector, ordered as ``names``."""
        leaves = self.to_leaves(z, fixed)
        return jnp.concatenate(
            [jnp.ravel(v) for v, f in zip(leaves, self.is_fixed) if not f]
        )

    def wald_ok_flat(self, params) -> np.ndarray:
        """Host NumPy: for a params pytree (with any leading batch axes), which free natural
        elements have a meaningful Wald standard error (``Constraint.wald_ok``)."""
        parts = []
        for con, shape, f, v in zip(self.constraints, self.shapes, self.is_fixed, jax.tree_util.tree_leaves(params)):
            if f:
                continue
            v = np.asarray(v)
            lead = v.shape[: v.ndim - len(shape)]
            parts.append(np.reshape(con.wald_ok(v), lead + (-1,)))
        return np.concatenate(parts, axis=-1)

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


def _keys(tree):
    return list(tree) if isinstance(tree, dict) else type(tree).__name__
