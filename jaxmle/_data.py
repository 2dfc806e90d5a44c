"""Input conversion and validation, masks, and ``pad``: everything about data before a fit."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._tabular import from_tabular, split_groups

_NUMBER = (bool, int, float, np.number)


def _numeric_seq(x) -> bool:
    """A (nested) list or tuple of plain numbers: data or a start value, not a container."""
    if not isinstance(x, (list, tuple)) or hasattr(x, "_fields") or not x:
        return False
    return all(isinstance(v, _NUMBER) or _numeric_seq(v) for v in x)


def lists_to_arrays(tree):
    """Turn lists (and tuples) of plain numbers into numpy arrays, anywhere in a pytree.

    JAX treats a list as a container of separate leaves, so ``[1.0, 2.0]`` would
    reach the log-density as a Python list. Lists of arrays stay containers.
    """
    if _numeric_seq(tree):
        try:
            return np.asarray(tree)
        except ValueError:
            raise ValueError(
                "a nested list of numbers has rows of different lengths; pass a rectangular "
                "array (for ragged datasets use jm.pad)"
            ) from None
    if isinstance(tree, dict):
        return {k: lists_to_arrays(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        return type(tree)(lists_to_arrays(v) for v in tree)
    return tree


def to_plain(data):
    """DataFrames, Series and lists of numbers as arrays (dicts of arrays)."""
    return lists_to_arrays(from_tabular(data))

# -- big host arrays handed to a compiled program without a copy ----------------------

#: A host (NumPy) data leaf of at least this many bytes that XLA cannot share (its
#: address is not a multiple of ``ALIGN`` bytes, as with most big NumPy arrays: malloc
#: puts them 16 bytes past a page) is not copied for a big blocked fit
#: (``jaxmle._solve.block_rows``): the program reads it through ``Rows``.
ALIAS_MIN_BYTES = 1 << 24
ALIGN = 64


class _Span:
    """The memory of ``owner`` seen from the aligned address at or below its start: what
    ``np.asarray`` reads through ``__array_interface__``. The bytes before the array lie in
    the same memory page (the page start is a multiple of ``ALIGN``), are never written,
    and never enter a result (``Rows`` reads past them). Keeps ``owner`` alive."""

    def __init__(self, owner: np.ndarray, lead: int):
        self.owner = owner
        ptr = owner.__array_interface__["data"][0]
        self.__array_interface__ = {"data": (ptr - lead * owner.itemsize, True), "shape": (owner.size + lead,),
                                    "typestr": owner.dtype.str, "version": 3}


@jax.tree_util.register_pytree_node_class
class Rows:
    """An (n, ...) data leaf held as a flat array with ``lead`` elements before its first row.

    A big C-contiguous NumPy array whose address XLA cannot share is handed to a blocked
    fit's program this way (``host_rows``): the flat array starts at the aligned address
    below it and aliases its memory, so the program gets the data without the copy that
    ``jax.device_put`` would make (0.8 GB and ~1-2 s for 5e6 x 21 float64 on a 2-core
    machine). ``jaxmle._solve.block_sum`` slices row blocks out of it (``rows``); any
    other use (``jnp.asarray``, arithmetic) sees the (n, ...) array, formed in the
    program; ``np.asarray`` of a host ``Rows`` is the user's array itself.
    """

    def __init__(self, flat, lead: int, shape: tuple, host: np.ndarray | None = None):
        self.flat, self.lead, self.shape, self.host = flat, int(lead), tuple(shape), host

    def tree_flatten(self):
        return (self.flat,), (self.lead, self.shape)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)

    @property
    def dtype(self):
        return self.flat.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def rows(self, start, size: int):
        """Rows [start, start + size) as an array (``start`` may be traced)."""
        width = int(np.prod(self.shape[1:], dtype=np.int64))
        part = jax.lax.dynamic_slice_in_dim(self.flat, self.lead + start * width, size * width, 0)
        return part.reshape((size,) + self.shape[1:])

    def __jax_array__(self):
        return self.rows(0, self.shape[0])

    def __array__(self, dtype=None, copy=None):
        out = self.host if self.host is not None else np.asarray(self.__jax_array__())
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, index):
        return self.__jax_array__()[index]

    def __repr__(self):
        return f"Rows(shape={self.shape}, dtype={self.dtype})"


def is_rows(x) -> bool:
    return isinstance(x, Rows)


def aliasable(host) -> bool:
    """Whether a host leaf may go to a program as ``Rows`` (see ``ALIAS_MIN_BYTES``)."""
    if type(host) is not np.ndarray or host.ndim < 1 or host.nbytes < ALIAS_MIN_BYTES:
        return False
    if not (host.flags.c_contiguous and host.flags.aligned) or host.dtype.kind != "f":
        return False
    if np.dtype(jax.dtypes.canonicalize_dtype(host.dtype)) != host.dtype:
        return False     # float64 without x64: JAX converts it anyway
    return host.__array_interface__["data"][0] % ALIGN != 0


def host_rows(host: np.ndarray):
    """``Rows`` aliasing ``host`` (see ``aliasable``); a jaxlib that copied host arrays
    at any address would copy it (as before: nothing gained, nothing lost)."""
    lead = host.__array_interface__["data"][0] % ALIGN // host.itemsize   # whole items: host is aligned
    return Rows(jax.device_put(np.asarray(_Span(host, lead))), lead, host.shape, host)


def plain_rows(data):
    """``data`` with each ``Rows`` as an ordinary device array (a copy of the user's array):
    what code outside a blocked fit's row loop (a model's residuals, scores, means) reads."""
    if not any(is_rows(x) for x in data_leaves(data)):
        return data
    return jax.tree_util.tree_map(
        lambda x: (jax.device_put(x.host) if x.host is not None else x.__jax_array__()) if is_rows(x) else x,
        data, is_leaf=is_rows)


def data_leaves(data) -> list:
    """The data's leaves, a ``Rows`` counted as one (an (n, ...) leaf)."""
    return jax.tree_util.tree_leaves(data, is_leaf=is_rows)


def _leading_sizes(data) -> dict[str, int]:
    sizes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(data, is_leaf=is_rows)[0]:
        shape = leaf.shape if is_rows(leaf) else np.shape(leaf)
        if len(shape) >= 1:
            sizes[jax.tree_util.keystr(path) or "data"] = shape[0]
    return sizes


def n_data(data) -> int | None:
    """The common leading-axis length of the data leaves, or None if they differ."""
    sizes = set(_leading_sizes(data).values())
    return sizes.pop() if len(sizes) == 1 else None


def substitute_masked(data, mask, fill=lambda first_row: first_row):
    """Replace masked-out observations by the first valid one (or ``fill`` of it).

    Padded or NaN entries then never reach the log-density, so neither their values
    nor their gradients (0 * NaN = NaN) can leak into the fit. ``substitute_other``
    passes another ``fill``.
    """
    if mask is None:
        return data
    n = mask.shape[0]
    first = jnp.argmax(mask)

    def fix(x):
        if jnp.ndim(x) >= 1 and x.shape[0] == n:
            m = mask.reshape((n,) + (1,) * (x.ndim - 1))
            return jnp.where(m, x, fill(x[first]))
        return x

    return jax.tree_util.tree_map(fix, data)


def float_dtype(data):
    floats = [
        x.dtype for x in jax.tree_util.tree_leaves(data) if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    dt = jnp.result_type(*floats) if floats else jnp.float64
    return jax.dtypes.canonicalize_dtype(dt)


def as_arrays(data, what="data", keep_host=False):
    """Validate data and convert every leaf to a JAX array (DataFrames and lists included).

    With ``keep_host``, big NumPy leaves that XLA could not share (``aliasable``) stay
    NumPy arrays: a single fit decides once it knows its size whether its program reads
    them in place (``host_rows``) or gets a device copy (``device_leaves``)."""
    leaves, treedef = jax.tree_util.tree_flatten(to_plain(data))
    if not leaves:
        raise ValueError(f"{what} is empty: pass an array or a dict of arrays")
    out = []
    for leaf in leaves:
        try:
            host = None if isinstance(leaf, jax.Array) else np.asarray(leaf)
            # Strings and objects: jnp.asarray would try to parse them (a SyntaxError for ",").
            # NumPy arrays and lists go to the device by device_put: jnp.asarray compiles a
            # small program for every new shape (jax 0.10), ~10 ms each on a first fit.
            arr = None if host is not None and host.dtype.kind in "USO" else (
                host if keep_host and aliasable(host) else
                jax.device_put(host) if isinstance(leaf, (np.ndarray, np.generic, list, tuple))
                else jnp.asarray(leaf))
        except (TypeError, ValueError):
            raise TypeError(
                f"{what} leaf of type {type(leaf).__name__} cannot be made an array; "
                "pass numbers, numpy or JAX arrays"
            ) from None
        if arr is None:
            raise TypeError(f"{what} has non-numeric dtype {host.dtype} (e.g. {host.ravel()[:1].tolist()}); "
                            "pass numbers, numpy or JAX arrays")
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


def device_leaves(data, rows: bool = False):
    """The NumPy leaves ``as_arrays(..., keep_host=True)`` kept, as ``Rows`` (``rows``)
    or as device arrays; other leaves unchanged."""
    def one(x):
        if type(x) is not np.ndarray:
            return x
        return host_rows(x) if rows else jax.device_put(x)

    return jax.tree_util.tree_map(one, data)


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


def _on_host(leaf) -> bool:
    return not isinstance(leaf, jax.Array) or all(d.platform == "cpu" for d in leaf.devices())


def _host_view(leaf) -> np.ndarray:
    """A host array of ``leaf``: a CPU jax array is read in place (``np.asarray`` of one
    copies it: 800 MB for 5e6 x 20 float64)."""
    if isinstance(leaf, jax.Array) and _on_host(leaf):
        try:
            return np.from_dlpack(leaf)
        except Exception:       # noqa: BLE001 - a layout dlpack cannot share
            pass
    return np.asarray(leaf)


def _all_finite(arr: np.ndarray, rows: int = 1 << 16) -> bool:
    """``np.isfinite(arr).all()`` a slice of rows at a time (no full-size temporary)."""
    if arr.ndim == 0:
        return bool(np.isfinite(arr))
    return all(bool(np.isfinite(arr[i:i + rows]).all()) for i in range(0, arr.shape[0], rows))


def nonfinite_report(data, mask=None):
    """Names of data leaves with NaN/inf at unmasked positions (host check)."""
    bad = []
    m = None if mask is None else jnp.asarray(mask, bool)
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            continue
        use = m if m is not None and leaf.shape[: m.ndim] == m.shape else None
        # On an accelerator one fused reduction decides first, and only a failing leaf
        # is copied to the host to say where; on the CPU NumPy reads the buffer itself
        # (no program compiled for each new data shape).
        if not _on_host(leaf) and bool(_finite_where_used(leaf, use)):
            continue
        arr = _host_view(leaf)
        if use is None and _all_finite(arr):
            continue
        finite = np.isfinite(arr)
        if use is not None:
            u = np.asarray(use)
            finite = finite | ~u.reshape(u.shape + (1,) * (arr.ndim - u.ndim))
        if finite.all():
            continue
        where = np.argwhere(~finite)[:3].tolist()
        name = jax.tree_util.keystr(path) or "data"
        bad.append(f"{name} ({(~finite).sum()} values, first at {where})")
    return bad


def check_mask(mask, data, batch: int | None):
    """The mask as a boolean device array, checked on the host (NumPy: checking it with
    ``jax.numpy`` compiled a small program per operation and shape, ~0.15 s for a
    ragged batch's first fit)."""
    if mask is None:
        return None
    on_device = isinstance(mask, jax.Array)
    try:
        host = np.asarray(mask)
    except (TypeError, ValueError):   # ragged nested lists
        host = np.asarray(None, dtype=object)
    # Objects (None, mixed types), strings and complex numbers: jnp.asarray would fail
    # inside JAX ("Error interpreting argument to stage ...") or keep an imaginary part.
    if host.dtype.kind == "c":
        raise ValueError(f"mask must be boolean (or 0/1): True marks a real observation; got dtype {host.dtype}")
    if host.dtype.kind not in "biuf":
        raise ValueError(f"mask must be boolean (or 0/1): True marks a real observation; got "
                         f"{type(mask).__name__} of dtype {host.dtype} (e.g. {host.ravel()[:2].tolist()})")
    if host.dtype != bool:
        if not np.isin(host, [0, 1]).all():
            raise ValueError("mask must be boolean (or 0/1): True marks a real observation")
        host = host.astype(bool)
    want_nd = 1 if batch is None else 2
    # One dataset's shapes, without indexing device arrays (a program each).
    one = data if batch is None else jax.tree_util.tree_map(
        lambda x: np.broadcast_to(np.zeros((), bool), np.shape(x)[1:]), data)
    n = n_data(one)
    if host.ndim != want_nd or (batch is not None and host.shape[0] != batch) or (
        n is not None and host.shape[-1] != n
    ):
        want = f"({n},)" if batch is None else f"({batch}, {n})"
        raise ValueError(
            f"mask has shape {host.shape}; expected {want}: one entry per observation"
            + (" per dataset" if batch is not None else "")
            + " (jm.pad returns a matching mask)"
        )
    empty = ~host.any(axis=-1)
    if empty.any():
        which = np.flatnonzero(np.atleast_1d(empty))
        where = "" if batch is None else f" (dataset {int(which[0])}" + (
            f" and {which.size - 1} more)" if which.size > 1 else ")")
        raise ValueError(f"mask has a dataset with no observations (all False){where}: nothing to fit; drop it "
                         "or give it at least one True")
    return mask if on_device and mask.dtype == bool else jax.device_put(host)


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


def scatter_pad(columns, codes, n_groups: int, fill=None):
    """Scatter rows into a padded ``(G, n_max, ...)`` batch by group index, plus the mask.

    Args:
        columns: pytree of numpy arrays sharing the leading (row) axis.
        codes: each row's group index in ``range(n_groups)``; rows keep their order.
        n_groups: G.
        fill: see ``pad``.

    Returns:
        (padded, mask) as numpy arrays.
    """
    codes = np.asarray(codes).reshape(-1)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    counts = np.bincount(codes, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(codes.shape[0]) - starts[sorted_codes]
    n_max = int(counts.max())
    mask = np.zeros((n_groups, n_max), bool)
    mask[sorted_codes, pos] = True
    leaves, treedef = jax.tree_util.tree_flatten(columns)
    floating = [np.issubdtype(leaf.dtype, np.floating) for leaf in leaves]
    out = []
    for leaf, is_float in zip(leaves, floating):
        rows = leaf[order]
        shape = (n_groups, n_max) + leaf.shape[1:]
        # Integer and boolean leaves keep their dtype (they may be indices or flags)
        # when a floating leaf beside them carries the NaN padding.
        if fill == "edge" or (fill is None and not is_float and any(floating)):
            last = rows[starts + counts - 1]
            buf = np.ascontiguousarray(np.broadcast_to(last[:, None], shape))
        else:
            value = np.nan if fill is None else fill
            dtype = leaf.dtype if is_float else np.result_type(leaf.dtype, np.asarray(value).dtype)
            buf = np.full(shape, value, dtype)
        buf[sorted_codes, pos] = rows
        out.append(buf)
    return jax.tree_util.tree_unflatten(treedef, out), mask


def _pad_layout(items):
    """Per-item leaves, the leaf indices with an observation axis, and each item's length."""
    structs = [jax.tree_util.tree_structure(it) for it in items]
    if any(st != structs[0] for st in structs):
        raise ValueError(f"pad needs items of one structure (the same keys); got {structs[0]} and "
                         f"{next(st for st in structs if st != structs[0])}")
    per = [[np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(it)] for it in items]
    if not per[0]:
        raise ValueError("pad got items without arrays")
    obs = [j for j, leaf in enumerate(per[0]) if leaf.ndim >= 1]
    shapes = [[leaf.shape for leaf in leaves] for leaves in per]
    bad_tail = any(
        (per[i][j].ndim >= 1) != (j in obs) or (j in obs and per[i][j].shape[1:] != per[0][j].shape[1:])
        for i in range(len(per)) for j in range(len(per[0]))
    )
    if not obs or bad_tail:
        raise ValueError("pad needs arrays that differ only in their first axis (the observations); "
                         f"got shapes {shapes[:5]}")
    lengths = []
    for i, leaves in enumerate(per):
        n = {leaves[j].shape[0] for j in obs}
        if len(n) != 1:
            raise ValueError(f"item {i} has leaves of different lengths {shapes[i]}: every leaf of one "
                             "dataset needs one row per observation")
        lengths.append(n.pop())
    empty = [i for i, n in enumerate(lengths) if n == 0]
    if empty:
        raise ValueError(f"pad got empty arrays at positions {empty[:5]}: drop those datasets")
    return structs[0], per, obs, lengths


def pad(items: Sequence[Any], fill: float | str | None = None) -> tuple[Any, jax.Array]:
    """Stack datasets of different lengths into one padded batch and its mask.

    Padded slots hold NaN by default, so a fit that forgets the mask stops with
    "data contain NaN ... pass mask=" instead of silently fitting the padding.
    Integer and boolean leaves keep their dtype (padded with their last value)
    when a floating leaf of the same dataset carries the NaN; data with no
    floating leaf are padded as floats. Integer codes that must stay integers
    (category indices) need ``fill="edge"``, and then nothing catches a forgotten mask.

    Args:
        items: sequence of arrays whose first axes differ (other axes must agree),
            or of pytrees (e.g. dicts ``{"t": ..., "event": ...}``) whose leaves
            share each dataset's length; scalar leaves are stacked unpadded.
        fill: None (NaN, the default), "edge" (repeat each dataset's last
            observation: the old behaviour, stays inside the model's support but
            is silently wrong without the mask), or a constant.

    Returns:
        (padded, mask): padded has the items' structure with leaves of shape
        ``(B, n_max, ...)``; mask is ``(B, n_max)``, True at real observations.
        Pass both: ``jm.fit_batch(model, padded, mask=mask)``.

    Example:
        >>> padded, mask = jm.pad([jnp.ones(3), jnp.ones(5)])
        >>> padded.shape, mask.sum(axis=1)   # (2, 5), [3, 5]
        >>> data, mask = jm.pad([{"t": t1, "event": e1}, {"t": t2, "event": e2}])
    """
    items = [to_plain(it) for it in items]
    if not items:
        raise ValueError("pad needs at least one array")
    treedef, per, obs, lengths = _pad_layout(items)
    codes = np.repeat(np.arange(len(items)), lengths)
    columns = [np.concatenate([leaves[j] for leaves in per]) for j in obs]
    padded, mask = scatter_pad(columns, codes, len(items), fill)
    stacked = dict(zip(obs, padded))
    leaves = [stacked[j] if j in stacked else np.stack([ls[j] for ls in per]) for j in range(len(per[0]))]
    # device_put, not jnp.asarray: with jax 0.10 that compiles a small program per shape.
    return jax.tree_util.tree_unflatten(treedef, [jax.device_put(x) for x in leaves]), jax.device_put(mask)


def group_pad(data: Any, by: str, fill: float | str | None = None) -> tuple[Any, jax.Array, list]:
    """Long-format data -> (padded, mask, groups): one dataset per value of column ``by``.

    Groups are in sorted label order; see ``pad`` for the padding.
    """
    columns, codes, groups = split_groups(data, by)
    padded, mask = scatter_pad(columns, codes, len(groups), fill)
    return jax.tree_util.tree_map(jax.device_put, padded), jax.device_put(mask), groups


# -- shape buckets --------------------------------------------------------------------

#: Data longer than this many observations are fitted at their exact length: the
#: compile a new length costs is small beside such a fit, and padding would copy the data.
BUCKET_MAX = 1 << 20


def bucket_size(n: int) -> int:
    """The padded length for ``n`` observations: a power of two (at least 8) up to 4096,
    then the next of 1, 1.25, 1.5, 1.75 times a power of two (at most 25% padding);
    ``n`` itself above ``BUCKET_MAX``. Fits of different lengths in one bucket share
    one compiled program."""
    if n > BUCKET_MAX:
        return n
    size = 8
    while size < n:
        size *= 2
    if size <= 4096:
        return size
    for frac in (0.625, 0.75, 0.875):
        if int(size * frac) >= n:
            return int(size * frac)
    return size


def pad_rows(data, mask, n: int, size: int, axis: int):
    """``data`` padded along ``axis`` (the observation axis) from ``n`` to ``size`` rows
    with copies of the last row, and a mask with False there (True where ``mask`` was
    None). Leaves without ``n`` rows on that axis are left as they are."""
    def pad(x):
        if np.ndim(x) > axis and x.shape[axis] == n:
            width = [(0, 0)] * x.ndim
            width[axis] = (0, size - n)
            return np.pad(np.asarray(x), width, mode="edge")
        return x

    if mask is None:
        lead = tuple(next(np.shape(x)[:axis] for x in jax.tree_util.tree_leaves(data) if np.ndim(x) > axis))
        mask = np.ones(lead + (n,), bool)
    width = [(0, 0)] * (axis + 1)
    width[axis] = (0, size - n)
    return jax.tree_util.tree_map(pad, data), np.pad(np.asarray(mask, bool), width)


def substitute_other(data, mask):
    """Masked-out observations replaced by a value unlike any real one (2 x + 1 of the
    first valid row, the negation for booleans): ``rows_independent`` compares the
    log-density's terms under this and under ``substitute_masked``."""
    return substitute_masked(data, mask, lambda row: ~row if row.dtype == bool else row * 2 + 1)
