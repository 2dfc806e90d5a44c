"""Input conversion and validation, masks, and ``pad``: everything about data before a fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

def _leading_sizes(data) -> dict[str, int]:
    sizes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        shape = np.shape(leaf)
        if len(shape) >= 1:
            sizes[jax.tree_util.keystr(path) or "data"] = shape[0]
    return sizes


def n_data(data) -> int | None:
    """The common leading-axis length of the data leaves, or None if they differ."""
    sizes = set(_leading_sizes(data).values())
    return sizes.pop() if len(sizes) == 1 else None


def substitute_masked(data, mask):
    """Replace masked-out observations by the first valid one.

    Padded or NaN entries then never reach the log-density, so neither their values
    nor their gradients (0 * NaN = NaN) can leak into the fit.
    """
    if mask is None:
        return data
    n = mask.shape[0]
    first = jnp.argmax(mask)

    def fix(x):
        if jnp.ndim(x) >= 1 and x.shape[0] == n:
            m = mask.reshape((n,) + (1,) * (x.ndim - 1))
            return jnp.where(m, x, x[first])
        return x

    return jax.tree_util.tree_map(fix, data)


def float_dtype(data):
    floats = [
        x.dtype for x in jax.tree_util.tree_leaves(data) if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    dt = jnp.result_type(*floats) if floats else jnp.float64
    return jax.dtypes.canonicalize_dtype(dt)


def as_arrays(data, what="data"):
    leaves, treedef = jax.tree_util.tree_flatten(data)
    if not leaves:
        raise ValueError(f"{what} is empty: pass an array or a dict of arrays")
    out = []
    for leaf in leaves:
        try:
            arr = jnp.asarray(leaf)
        except (TypeError, ValueError):
            raise TypeError(
                f"{what} leaf of type {type(leaf).__name__} cannot be made an array; "
                "pass numbers, numpy or JAX arrays"
            ) from None
        if not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == bool):
            raise TypeError(f"{what} has non-numeric dtype {arr.dtype}")
        if jnp.issubdtype(arr.dtype, jnp.complexfloating):
            raise TypeError(f"{what} has complex dtype {arr.dtype}: log-likelihoods need real data")
        if jnp.issubdtype(arr.dtype, jnp.integer):
            arr = widen_integers(leaf, arr, what)
        if arr.size == 0:
            raise ValueError(f"{what} has an empty leaf of shape {arr.shape}: nothing to fit")
        out.append(arr)
    return jax.tree_util.tree_unflatten(treedef, out)


def widen_integers(leaf, arr, what):
    """Integer data at the default integer width (see docs/errors.md, "Integer data").

    Narrow types would wrap around inside the log-density (a uint8 count of 255
    plus one is 0); 64-bit values that JAX would silently truncate to int32 (without
    jax_enable_x64) are an error.
    """
    target = jax.dtypes.canonicalize_dtype(jnp.int64)
    info = np.iinfo(target)
    host = np.asarray(leaf) if not isinstance(leaf, jax.Array) else None
    if host is not None and host.size and np.issubdtype(host.dtype, np.integer) and (
        host.min() < info.min or host.max() > info.max
    ):
        raise ValueError(
            f"integer {what} hold values up to {host.max()} that exceed the {target.name} range JAX "
            "uses here; pass them as floats, or enable 64-bit mode with "
            "jax.config.update('jax_enable_x64', True)"
        )
    if jnp.iinfo(arr.dtype).bits < info.bits or arr.dtype != target:
        arr = arr.astype(target)
    return arr


@jax.jit
def _finite_where_used(leaf, mask):
    """True when every entry of ``leaf`` at a used (unmasked) position is finite.

    One fused reduction on the device: no host copy of the data, no full-size
    temporaries (this runs on every fit_batch call, on the whole batch).
    """
    finite = jnp.isfinite(leaf)
    if mask is not None:
        finite = finite | ~mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))
    return jnp.all(finite)


def nonfinite_report(data, mask=None):
    """Names of data leaves with NaN/inf at unmasked positions (host check)."""
    bad = []
    m = None if mask is None else jnp.asarray(mask, bool)
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            continue
        use = m if m is not None and leaf.shape[: m.ndim] == m.shape else None
        if bool(_finite_where_used(leaf, use)):
            continue
        # Only a failing leaf is copied to the host, to say where.
        arr = np.asarray(leaf)
        finite = np.isfinite(arr)
        if use is not None:
            u = np.asarray(use)
            finite = finite | ~u.reshape(u.shape + (1,) * (arr.ndim - u.ndim))
        where = np.argwhere(~finite)[:3].tolist()
        name = jax.tree_util.keystr(path) or "data"
        bad.append(f"{name} ({(~finite).sum()} values, first at {where})")
    return bad


def check_mask(mask, data, batch: int | None):
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.dtype != bool:
        if not jnp.isin(mask, jnp.array([0, 1])).all():
            raise ValueError("mask must be boolean (or 0/1): True marks a real observation")
        mask = mask.astype(bool)
    want_nd = 1 if batch is None else 2
    n = n_data(data) if batch is None else n_data(jax.tree_util.tree_map(lambda x: x[0], data))
    if mask.ndim != want_nd or (batch is not None and mask.shape[0] != batch) or (
        n is not None and mask.shape[-1] != n
    ):
        want = f"({n},)" if batch is None else f"({batch}, {n})"
        raise ValueError(
            f"mask has shape {mask.shape}; expected {want}: one entry per observation"
            + (" per dataset" if batch is not None else "")
            + " (jm.pad returns a matching mask)"
        )
    if not mask.any(axis=-1).all():
        raise ValueError("mask has a dataset with no observations (all False): nothing to fit")
    return mask


def batch_size(data) -> int:
    sizes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        name = jax.tree_util.keystr(path) or "data"
        if leaf.ndim == 0:
            raise ValueError(
                f"data leaf {name} is a scalar; fit_batch needs a leading batch axis on "
                "every data leaf (use jnp.broadcast_to for data shared by all datasets)"
            )
        sizes[name] = leaf.shape[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(
            f"data leaves have mismatched batch axes {sizes}; every leaf needs the same "
            "leading axis B (one slice per dataset)"
        )
    return next(iter(sizes.values()))


def pad(arrays, fill=None):
    """Stack arrays of different lengths into one padded batch and its mask.

    Padded slots repeat each array's last observation (so they stay inside the
    model's support) and are marked False in the mask; ``fit_batch(..., mask=mask)``
    ignores them.

    Args:
        arrays: sequence of arrays whose first axes differ (other axes must agree).
        fill: optional constant to pad with instead.

    Returns:
        (padded, mask): shapes ``(B, n_max, ...)`` and ``(B, n_max)``.

    Example:
        >>> padded, mask = jm.pad([jnp.ones(3), jnp.ones(5)])
        >>> padded.shape, mask.sum(axis=1)   # (2, 5), [3, 5]
    """
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("pad needs at least one array")
    tails = {a.shape[1:] for a in arrays}
    if any(a.ndim == 0 for a in arrays) or len(tails) != 1:
        raise ValueError(
            "pad needs arrays that differ only in their first axis; got shapes "
            f"{[a.shape for a in arrays][:5]}"
        )
    empty = [i for i, a in enumerate(arrays) if a.shape[0] == 0]
    if empty:
        raise ValueError(f"pad got empty arrays at positions {empty[:5]}: drop those datasets")
    n_max = max(a.shape[0] for a in arrays)
    dtype = np.result_type(*arrays)
    padded = np.empty((len(arrays), n_max) + arrays[0].shape[1:], dtype)
    mask = np.zeros((len(arrays), n_max), bool)
    for i, a in enumerate(arrays):
        n = a.shape[0]
        padded[i, :n] = a
        padded[i, n:] = a[-1] if fill is None else fill
        mask[i, :n] = True
    return jnp.asarray(padded), jnp.asarray(mask)
