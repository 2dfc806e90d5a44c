"""Rows of one big dataset served chunk by chunk, and full-data sums over the chunks.

A chunked fit never holds the whole dataset on the device. ``RowSource`` reads
rows from host memory (numpy arrays, ``np.memmap``, or a callable returning a
fresh iterator of chunk pytrees each pass), pads every chunk to ``chunk_size``
rows with a mask (so each per-chunk program compiles once, whatever n is) and
validates the chunks during the first pass. ``Streamed`` turns the per-chunk
programs (cached on the model) into full-data evaluations of the negative mean
log-posterior, its gradient and Hessian: one call, one pass over the data.
"""

from __future__ import annotations

import collections.abc
import mmap
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._compile import jit
from ._data import as_arrays, check_mask, nonfinite_report, to_plain
from ._model import Model
from ._solve import ready_data
from .optimizers._base import value_grad_hessian


class Chunk(NamedTuple):
    """One padded chunk on the device."""

    data: Any        # pytree of arrays with chunk_size rows (the tail padded)
    mask: jax.Array  # bool (chunk_size,): False at padding and at masked-out rows
    start: int       # the chunk's first row in the dataset
    rows: int        # rows before padding
    n_valid: int     # rows used (mask True)


def _rows(leaves) -> int:
    return int(np.shape(leaves[0])[0])


def _row_counts(leaves, names) -> dict:
    return {name: (np.shape(x)[0] if np.ndim(x) >= 1 else "scalar") for name, x in zip(names, leaves)}


class RowSource:
    """The rows of one dataset, read chunk by chunk from host memory.

    Args:
        data: a pytree of arrays whose leaves all have the n rows on axis 0
            (numpy, ``np.memmap``, JAX arrays, a DataFrame), or a callable
            returning a fresh iterator of such pytrees (chunks of any row count,
            regrouped here into chunks of ``chunk_size`` rows) each time it is called.
        chunk_size: rows per chunk; the last chunk is padded.
        mask: optional boolean vector of n entries, True for rows to use.
        keep_on_device: keep a single-chunk dataset on the device between passes.
    """

    def __init__(self, data, chunk_size: int, mask=None, keep_on_device: bool = True):
        if isinstance(data, collections.abc.Iterator):
            raise TypeError(
                "a chunked fit reads the data several times, but an iterator can be read once: pass a "
                "callable returning a fresh iterator instead (e.g. data=lambda: read_chunks(path))"
            )
        self.chunk_size = int(chunk_size)
        self.keep_on_device = keep_on_device
        self._cached = None
        self._fn: Callable | None = data if callable(data) else None
        self.checked = False
        self._dtypes = None
        self.chunk_valid: list[int] = []
        if self._fn is None:
            leaves, self.treedef = jax.tree_util.tree_flatten(to_plain(data))
            if not leaves:
                raise ValueError("data is empty: pass an array or a dict of arrays")
            self.leaves = [x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x) for x in leaves]
            self._names = [jax.tree_util.keystr(p) or "data"
                           for p, _ in jax.tree_util.tree_flatten_with_path(to_plain(data))[0]]
            self._check_rows(self.leaves, "data")
            self.n = _rows(self.leaves)
        else:
            self.leaves, self.treedef, self._names, self.n = None, None, None, None
        self.mask = None
        if mask is not None:
            if self._fn is None:
                self.mask = np.asarray(check_mask(mask, jax.tree_util.tree_unflatten(self.treedef, [
                    jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in self.leaves]), None))
            else:
                try:
                    self.mask = np.asarray(mask)
                except (TypeError, ValueError):
                    self.mask = np.asarray(None, dtype=object)
                if self.mask.ndim != 1 or self.mask.dtype.kind not in "biuf" or not (
                        self.mask.dtype == bool or np.isin(self.mask, [0, 1]).all()):
                    raise ValueError(f"mask must be boolean (or 0/1): True marks a real observation, one entry "
                                     f"per row; got shape {self.mask.shape}, dtype {self.mask.dtype}")
                self.mask = self.mask.astype(bool)
        if self.n is not None:
            self.n_obs = int(self.n if self.mask is None else self.mask.sum())
            C = self.chunk_size
            valid = np.ones(self.n, bool) if self.mask is None else self.mask
            self.chunk_valid = [int(valid[a:a + C].sum()) for a in range(0, self.n, C)]
        else:
            self.n_obs = None

    @property
    def from_callable(self) -> bool:
        return self._fn is not None

    @property
    def n_chunks(self) -> int | None:
        return None if self.n is None else -(-self.n // self.chunk_size)

    def _check_rows(self, leaves, where):
        counts = _row_counts(leaves, self._names)
        if len(set(counts.values())) != 1 or "scalar" in counts.values():
            raise ValueError(
                f"{where}: every data leaf of a chunked fit needs the same number of rows on axis 0, "
                f"got {counts}. Put constants shared by all rows into the log-density (a closure) "
                "and give every leaf one row per observation"
            )

    # -- reading -------------------------------------------------------------
    def _pieces(self, order=None):
        """(leaves, start row) of each chunk before padding, in ``order`` (array sources)."""
        C = self.chunk_size
        if self._fn is None:
            idx = range(self.n_chunks) if order is None else order
            for c in idx:
                a, b = c * C, min((c + 1) * C, self.n)
                # A copy owned by this process (the device may alias it), then the mapped pages can go.
                piece = [x[a:b] if isinstance(x, jax.Array) else np.array(x[a:b]) for x in self.leaves]
                for x in self.leaves:
                    _release(x, a, b)
                yield piece, a
            return
        start = 0
        for piece in _regroup(self._chunks_from_callable(), C):
            yield piece, start
            start += _rows(piece)

    def _chunks_from_callable(self):
        it = self._fn()
        if isinstance(it, (np.ndarray, jax.Array, dict)) or not isinstance(it, collections.abc.Iterable):
            raise TypeError(f"the data callable must return an iterator of chunks (e.g. a generator), got "
                            f"{type(it).__name__}")
        for i, part in enumerate(it):
            leaves, treedef = jax.tree_util.tree_flatten(to_plain(part))
            if self.treedef is None:
                self.treedef = treedef
                self._names = [jax.tree_util.keystr(p) or "data"
                               for p, _ in jax.tree_util.tree_flatten_with_path(to_plain(part))[0]]
            elif treedef != self.treedef:
                raise ValueError(f"chunk {i} from the data callable has structure {treedef}, the first had "
                                 f"{self.treedef}: every chunk needs the same keys")
            leaves = [np.asarray(x) for x in leaves]
            self._check_rows(leaves, f"chunk {i} from the data callable")
            yield leaves

    def chunks(self, order=None):
        """Padded device chunks, validated on the first complete pass."""
        if self._cached is not None:
            yield self._cached
            return
        total, valid_counts = 0, []
        for piece, start in self._pieces(order):
            chunk = self._device_chunk(piece, start)
            total += chunk.rows
            valid_counts.append(chunk.n_valid)
            if self.keep_on_device and self.checked and self.n_chunks == 1:
                self._cached = chunk
            yield chunk
        if order is None or len(order) == self.n_chunks:
            self._end_pass(total, valid_counts)

    def _device_chunk(self, piece, start) -> Chunk:
        C, m = self.chunk_size, _rows(piece)
        if self.mask is not None:
            if start + m > self.mask.shape[0]:
                raise ValueError(f"mask has {self.mask.shape[0]} entries but the data callable yields more "
                                 "rows: give one mask entry per row")
            valid = self.mask[start:start + m]
        else:
            valid = np.ones(m, bool)
        if m < C:
            piece = [jnp.concatenate([x, jnp.repeat(x[:1], C - m, axis=0)]) if isinstance(x, jax.Array)
                     else np.concatenate([x, np.repeat(x[:1], C - m, axis=0)]) for x in piece]
            valid = np.concatenate([valid, np.zeros(C - m, bool)])
        if self.checked:
            # Validated and converted once (as_arrays) on the first pass: now one copy per leaf.
            leaves = [x.astype(dt) if isinstance(x, jax.Array) else jax.device_put(np.asarray(x, dt))
                      for x, dt in zip(piece, self._dtypes)]
            data = jax.tree_util.tree_unflatten(self.treedef, leaves)
        else:
            data = as_arrays(jax.tree_util.tree_unflatten(self.treedef, piece))
            self._dtypes = [x.dtype for x in jax.tree_util.tree_leaves(data)]
        mask = jax.device_put(valid)
        if not self.checked:
            bad = nonfinite_report(data, mask)
            if bad:
                raise ValueError(
                    f"data contain NaN or inf in the chunk of rows {start}..{start + m - 1}: "
                    + "; ".join(bad) + " (positions within the chunk). Drop those rows, or pass mask= "
                    "with False at them"
                )
        return Chunk(data, mask, start, m, int(valid.sum()))

    def _end_pass(self, total: int, valid_counts: list[int]):
        if self._fn is not None:
            if total == 0:
                raise ValueError("the data callable yielded no rows" + (
                    " on this pass: it must return a fresh iterator each time it is called"
                    if self.checked else ""))
            if self.n is not None and total != self.n:
                raise ValueError(f"the data callable yielded {total} rows on this pass but {self.n} on the "
                                 "first: it must return the same data each time it is called")
            if self.mask is not None and self.mask.shape[0] != total:
                raise ValueError(f"mask has {self.mask.shape[0]} entries but the data have {total} rows")
            self.n, self.chunk_valid = total, valid_counts
            self.n_obs = int(sum(valid_counts))
        if self.n_obs == 0:
            raise ValueError("mask is all False: nothing to fit")
        self.checked = True

    def first_chunk(self) -> Chunk:
        """The first chunk (a fresh read), for checking the data against the model."""
        return next(iter(self._first_only()))

    def _first_only(self):
        for piece, start in self._pieces([0] if self._fn is None else None):
            yield self._device_chunk(piece, start)
            return
        raise ValueError("the data callable yielded no rows")


def _regroup(parts, C: int):
    """Leaves of chunks of exactly C rows (the last may be shorter) from parts of any size."""
    buf, have = [], 0
    for leaves in parts:
        if _rows(leaves) == 0:
            continue
        buf.append(leaves)
        have += _rows(leaves)
        while have >= C:
            cat = buf[0] if len(buf) == 1 else [np.concatenate(xs) for xs in zip(*buf)]
            yield [x[:C] for x in cat]
            have -= C
            buf = [[x[C:] for x in cat]] if have else []
    if have:
        yield buf[0] if len(buf) == 1 else [np.concatenate(xs) for xs in zip(*buf)]


def _release(leaf, a: int, b: int) -> None:
    """Drop rows a:b of a memory-mapped leaf from this process's resident memory.

    Reading a memmap maps its pages into the process; without this, one pass over
    the data would leave the whole file resident (and counted in the peak RSS).
    The pages stay in the OS page cache, so the next pass does not hit the disk.
    Copy-on-write maps (mode "c") may hold private changes and are left alone.
    """
    mm = getattr(leaf, "_mmap", None)
    if not isinstance(mm, mmap.mmap) or getattr(leaf, "mode", "c") == "c" or not leaf.flags.c_contiguous:
        return
    try:
        base = np.frombuffer(mm, np.uint8).ctypes.data
        row = leaf.strides[0]
        lo = leaf.ctypes.data + a * row - base
        hi = leaf.ctypes.data + b * row - base
        lo -= lo % mmap.PAGESIZE
        if hi > lo >= 0:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (ValueError, OSError, AttributeError, TypeError):
        pass


# -- per-chunk programs and full-data passes ----------------------------------------

def chunk_neg(model: Model):
    """``neg(z, fixed, chunk, mask)``: minus the chunk's total log-likelihood (no prior)."""
    spec = model.spec

    def neg(z, fixed, data, mask):
        return -model.loglik_sum(spec.to_params(z, fixed), ready_data(model, data, mask), mask)

    return neg


def _program(model: Model, kind: str):
    """The compiled per-chunk accumulation of ``kind``, cached on the model."""

    def build():
        neg = chunk_neg(model)
        add = lambda acc, new: jax.tree_util.tree_map(jnp.add, acc, new)  # noqa: E731
        if kind == "value":
            return jit(lambda acc, z, fx, d, m: acc + neg(z, fx, d, m))
        if kind == "vg":
            return jit(lambda acc, z, fx, d, m: add(acc, jax.value_and_grad(neg)(z, fx, d, m)))
        if kind == "vgh":
            return jit(lambda acc, z, fx, d, m: add(acc, value_grad_hessian(
                lambda zz, dd: neg(zz, *dd), z, (fx, d, m))))
        if kind == "values":
            return jit(lambda acc, zs, fx, d, m: acc + jax.vmap(neg, (0, None, None, None))(zs, fx, d, m))
        raise ValueError(kind)

    return model.compiled(("stream", kind), build)


class Streamed:
    """Full-data evaluations of the objective a fit minimises, one pass over the chunks each.

    The objective is the in-memory fit's: minus the log-posterior divided by the
    number of observations used (``scale``), as a function of the flat
    unconstrained vector z.
    """

    def __init__(self, model: Model, source: RowSource, fixed, progress: bool | None, desc: str = "fit"):
        self.model, self.source, self.fixed = model, source, fixed
        n_chunks = source.n_chunks
        show = progress if progress is not None else ((n_chunks is None or n_chunks > 1) and sys.stderr.isatty())
        if show:
            from tqdm.auto import tqdm  # only when a bar shows: its import takes ~0.15 s
        self.bar = tqdm(desc=desc, unit="pass", leave=False) if show else None
        self.passes = 0

    @property
    def scale(self) -> float:
        return float(max(self.source.n_obs, 1))

    def _pass(self, kind, acc, z):
        prog = _program(self.model, kind)
        previous = None
        for ch in self.source.chunks():
            acc = prog(acc, z, self.fixed, ch.data, ch.mask)
            # Dispatch is asynchronous: without this the host would queue every chunk of the
            # pass at once. Waiting for the one before keeps two chunks in flight (reading
            # the next overlaps computing this one) and memory bounded by the chunk size.
            if previous is not None:
                jax.block_until_ready(previous)
            previous = acc
        self.passes += 1
        if self.bar is not None:
            self.bar.update(1)
        return acc

    def _finish(self, kind, acc, z):
        """The pass's sums plus the prior's terms, divided by the number of observations."""

        def build():
            model = self.model

            def fin(acc, z, fixed, scale):
                if model.log_prior is not None:
                    def prior(zz):
                        return -jnp.asarray(model.log_prior(model.spec.to_params(zz, fixed)), zz.dtype)

                    if kind == "values":
                        acc = acc + jax.vmap(prior)(z)
                    else:
                        terms = value_grad_hessian(lambda zz, _: prior(zz), z, None)
                        acc = jax.tree_util.tree_map(jnp.add, acc, terms[:len(acc)] if kind != "value" else terms[0])
                return jax.tree_util.tree_map(lambda a: a / scale, acc)

            return jit(fin)

        fin = self.model.compiled(("stream-finish", kind), build)
        return fin(acc, z, self.fixed, jnp.asarray(self.scale, z.dtype))

    def value(self, z) -> jax.Array:
        return self._finish("value", self._pass("value", jnp.zeros((), z.dtype), z), z)

    def value_grad(self, z):
        return self._finish("vg", self._pass("vg", (jnp.zeros((), z.dtype), jnp.zeros_like(z)), z), z)

    def value_grad_hessian(self, z):
        k = z.shape[0]
        acc = (jnp.zeros((), z.dtype), jnp.zeros_like(z), jnp.zeros((k, k), z.dtype))
        return self._finish("vgh", self._pass("vgh", acc, z), z)

    def values(self, zs) -> jax.Array:
        """The objective at each row of ``zs`` (P, k), in one pass."""
        return self._finish("values", self._pass("values", jnp.zeros(zs.shape[:1], zs.dtype), zs), zs)

    def close(self):
        if self.bar is not None:
            self.bar.close()
