"""Small dense linear algebra for the fitting loop, safe and fast under vmap.

Every fit needs a Cholesky factorisation, triangular solves and now and then an
eigendecomposition of its k x k Hessian, and ``fit_batch`` vmaps them over
thousands of fits. Two reasons not to hand those to LAPACK:

* Speed. A batched LAPACK call loops over tiny matrices one at a time; for k up to
  ``SMALL`` the Cholesky factorisation and triangular solves written here in plain
  ``jax.numpy`` run as a few vector operations over the whole batch, 3-10x faster
  (benchmarks/small_solves.py measures both for each k; beyond k = 4 LAPACK wins,
  and the unrolled code's compile time grows as k^3).
* Deadlock. jaxlib 0.10.0-0.10.2 split a batched LAPACK call whose batch x
  per-matrix cost reaches about 200,000 into chunks on XLA's intra-op thread pool
  and block the calling thread until they finish; two such calls running at once
  (one per host device, or one per Python thread) can leave every pool thread
  waiting and the process hung. Beyond ``SMALL`` the LAPACK call stays, but under
  vmap it is issued in chunks small enough never to split (``_chunked``).

All functions take one matrix (no batch axes) and are meant to be vmapped.
``cholesky`` returns NaN where the matrix is not positive definite, as
``jnp.linalg.cholesky`` does.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading

import jax
import jax.numpy as jnp

#: Largest k whose Cholesky factorisation and triangular solves skip LAPACK.
SMALL = 4

# Lanes per batched LAPACK call: keeps batch x cost at half of jaxlib 0.10's split
# point (200,000; measured: 22,223 3x3 Cholesky or 1,482 3x3 eigh calls split).
# The costs passed below over-estimate LAPACK's (5 k^3 for everything).
_SPLIT_BUDGET = 100_000


_lapack_lock = threading.Lock()
_lapack_tried: list = []


def lapack_ready() -> None:
    """Load the two modules jaxlib's CPU LAPACK calls come from, and nothing else.

    On the CPU, jaxlib 0.10 takes its LAPACK and BLAS routines from
    ``scipy.linalg.cython_lapack`` and ``cython_blas`` when it first lowers a program
    that calls them. Imported the usual way they first run ``scipy.linalg``'s package
    ``__init__`` (its whole Python API: 0.16-0.23 s here, a fifth of a first fit with
    more than two parameters). Loaded from their files (~10 ms) they are the same
    extension modules under the same names in ``sys.modules``, which is where jaxlib,
    Cython and ``from scipy.linalg import cython_lapack`` look; when ``scipy.linalg``
    itself is imported later they are bound on it as usual (``_BindOnImport``). Called
    while a program that calls LAPACK is traced, once per process; an unexpected
    layout leaves the import to jaxlib.
    """
    if _lapack_tried:
        return
    with _lapack_lock:
        if _lapack_tried:
            return
        _lapack_tried.append(True)
        names = ("scipy.linalg.cython_blas", "scipy.linalg.cython_lapack")
        if any(n in sys.modules for n in names) or "scipy.linalg" in sys.modules:
            return
        try:
            spec = importlib.util.find_spec("scipy")
            folder = os.path.join(spec.submodule_search_locations[0], "linalg")
            for name in names:
                short = name.rsplit(".", 1)[1]
                path = next(p for p in (os.path.join(folder, short + suffix)
                                        for suffix in importlib.machinery.EXTENSION_SUFFIXES)
                            if os.path.exists(p))
                mspec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(mspec)
                mspec.loader.exec_module(module)
                sys.modules[name] = module
        except Exception:       # noqa: BLE001 - jaxlib imports them itself
            return
        sys.meta_path.insert(0, _BindOnImport())


class _BindOnImport:
    """An import hook: once ``scipy.linalg`` is imported (after ``lapack_ready`` loaded its
    two modules alone), binds them on it as attributes, as importing them the usual way
    would have (``scipy.linalg.cython_lapack``), and removes itself. A ``find_spec`` that
    does not import (a check whether scipy is there) leaves it in place."""

    def __init__(self):
        self._looking = False

    def find_spec(self, name, path=None, target=None):
        if name != "scipy.linalg" or self._looking:
            return None
        self._looking = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._looking = False
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run, hook = loader.exec_module, self

        def exec_module(module):
            run(module)
            for child in ("cython_blas", "cython_lapack"):
                found = sys.modules.get(f"{name}.{child}")
                if found is not None and not hasattr(module, child):
                    setattr(module, child, found)
            if hook in sys.meta_path:
                sys.meta_path.remove(hook)

        loader.exec_module = exec_module
        return spec


def _chunked(fn, cost):
    """``fn`` (arrays for one matrix in, arrays out) that, vmapped, calls LAPACK in chunks.

    Lane i of a batch of B goes to chunk i mod n (n = ceil(B / lanes)), so each
    chunk is a strided slice of the batch: a batch sharded over devices stays
    sharded chunk by chunk instead of being gathered onto one device.
    """
    lapack_ready()

    @jax.custom_batching.custom_vmap
    def call(*args):
        return fn(*args)

    @call.def_vmap
    def _rule(axis_size, in_batched, *args):
        args = [a if b else jnp.broadcast_to(a, (axis_size,) + a.shape) for a, b in zip(args, in_batched)]
        lanes = max(1, _SPLIT_BUDGET // max(1, cost))
        if axis_size <= lanes:
            out = jax.vmap(fn)(*args)
        else:
            n = -(-axis_size // lanes)
            width = -(-axis_size // n)
            pad = n * width - axis_size

            def split(a):       # (B, ...) -> (n, width, ...), lane i at [i % n, i // n]
                a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,) + a.shape[1:])]) if pad else a
                return jnp.swapaxes(a.reshape((width, n) + a.shape[1:]), 0, 1)

            def merge(a):
                return jnp.swapaxes(a, 0, 1).reshape((n * width,) + a.shape[2:])[:axis_size]

            out = jax.lax.map(lambda a: jax.vmap(fn)(*a), tuple(split(a) for a in args))
            out = jax.tree.map(merge, out)
        return out, jax.tree.map(lambda _: True, out)

    return call


def _sym(A):
    return 0.5 * (A + A.T)


def _entries(A):
    """The matrix as a list of lists of scalars: under vmap each is one vector over the
    batch, so the loops below become a few fused elementwise operations, no gathers."""
    k = A.shape[0]
    return [[A[i, j] for j in range(k)] for i in range(k)]


def _matrix(rows):
    return jnp.stack([jnp.stack(r) for r in rows])


def cholesky(A):
    """Lower Cholesky factor of the symmetric part of ``A``; all NaN if not positive definite."""
    A = _sym(A)
    k = A.shape[0]
    if k > SMALL:
        L = _chunked(jnp.linalg.cholesky, 5 * k ** 3)(A)
        return jnp.where(jnp.all(jnp.isfinite(L)), L, jnp.nan)
    a = _entries(A)
    zero = jnp.zeros((), A.dtype)
    L = [[zero] * k for _ in range(k)]
    ok = jnp.ones((), bool)
    for j in range(k):
        d2 = a[j][j]
        for m in range(j):
            d2 = d2 - L[j][m] * L[j][m]
        ok = ok & (d2 > 0)
        d = jnp.sqrt(jnp.where(d2 > 0, d2, 1.0))
        L[j][j] = d
        for i in range(j + 1, k):
            s = a[i][j]
            for m in range(j):
                s = s - L[i][m] * L[j][m]
            L[i][j] = s / d
    L = _matrix(L)
    return jnp.where(ok & jnp.all(jnp.isfinite(L)), L, jnp.nan)


def _substitute(T, b, order, lower):
    k = T.shape[0]
    t = _entries(T)
    xs = [None] * k
    for i in order:
        acc = b[i]
        for j in (range(i) if lower else range(i + 1, k)):
            acc = acc - t[i][j] * xs[j]
        xs[i] = acc / t[i][i]
    return jnp.stack(xs, axis=0)


def solve_lower(L, b):
    """x with L x = b for lower-triangular L; ``b`` a vector or a matrix (columns)."""
    k = L.shape[0]
    if k > SMALL:
        return _chunked(lambda L, b: jax.scipy.linalg.solve_triangular(L, b, lower=True), 5 * k ** 3)(L, b)
    return _substitute(L, b, range(k), lower=True)


def solve_upper(U, b):
    """x with U x = b for upper-triangular U; ``b`` a vector or a matrix (columns)."""
    k = U.shape[0]
    if k > SMALL:
        return _chunked(lambda U, b: jax.scipy.linalg.solve_triangular(U, b, lower=False), 5 * k ** 3)(U, b)
    return _substitute(U, b, reversed(range(k)), lower=False)


def cho_solve(L, b):
    """x with (L L') x = b, from the lower Cholesky factor ``L``."""
    return solve_upper(L.T, solve_lower(L, b))


def eigh(A):
    """(eigenvalues ascending, eigenvectors as columns) of the symmetric part of ``A``.

    For k <= 2 one Jacobi rotation diagonalises the matrix exactly (``_eigh2``):
    no LAPACK call, so a one- or two-parameter model's program neither waits for
    jaxlib to load LAPACK (``lapack_ready``: ~10 ms once per process, 0.2 s when
    jaxlib imports scipy.linalg itself) nor carries a custom call. Larger k: LAPACK (chunked under vmap):
    cyclic Jacobi written elementwise was about 2x faster for k <= 4 but took
    seconds to compile (benchmarks/small_solves.py), and the eigendecomposition
    runs only for indefinite Hessians and once per fit at the end, so compile time
    matters more here than run time.
    """
    A = _sym(A)
    k = A.shape[0]
    if k <= 2:
        return _eigh2(A)
    return _chunked(jnp.linalg.eigh, 5 * k ** 3)(A)


def _eigh2(A):
    """Closed-form eigendecomposition of a symmetric 1x1 or 2x2 matrix.

    The rotation of the classical Jacobi method (Rutishauser's formulas:
    t = tan(theta) = sign(zeta) / (|zeta| + sqrt(1 + zeta^2)), zeta = (c - a) / 2b)
    zeroes the off-diagonal entry; the eigenvalues a - t b and c + t b carry errors
    of order eps * ||A||, as LAPACK's do. A NaN entry gives NaN results, as LAPACK.
    """
    if A.shape[0] == 1:
        return A[0], jnp.ones_like(A)
    a, b, c = A[0, 0], A[0, 1], A[1, 1]
    dtype = A.dtype
    nonzero = b != 0
    bs = jnp.where(nonzero, b, 1.0)
    zeta = (c - a) / (2.0 * bs)
    big = jnp.abs(zeta) > 1.0 / jnp.sqrt(jnp.finfo(dtype).eps)
    root = jnp.where(big, jnp.abs(zeta), jnp.sqrt(1.0 + jnp.where(big, 0.0, zeta) ** 2))
    t = jnp.where(zeta >= 0, 1.0, -1.0) / (jnp.abs(zeta) + root)
    t = jnp.where(nonzero, t, jnp.zeros((), dtype))
    cs = 1.0 / jnp.sqrt(1.0 + t * t)
    sn = t * cs
    w1, w2 = a - t * b, c + t * b
    # Columns: (cs, -sn) belongs to w1, (sn, cs) to w2; ascending order.
    swap = w1 > w2
    lo, hi = jnp.where(swap, w2, w1), jnp.where(swap, w1, w2)
    v1 = jnp.stack([cs, -sn])
    v2 = jnp.stack([sn, cs])
    V = jnp.stack([jnp.where(swap, v2, v1), jnp.where(swap, v1, v2)], axis=1)
    return jnp.stack([lo, hi]), V


def svd(A):
    """Thin SVD (U, s, V') of an m x n matrix, LAPACK chunked under vmap."""
    m, n = A.shape
    return _chunked(lambda A: jnp.linalg.svd(A, full_matrices=False), 5 * m * n * min(m, n))(A)


def eigvalsh(A):
    """Eigenvalues (ascending) of the symmetric part of ``A``."""
    return eigh(A)[0]


def inv_spd(A):
    """Inverse of a symmetric positive-definite matrix from its Cholesky factor (NaN if not PD)."""
    L = cholesky(A)
    Linv = solve_lower(L, jnp.eye(A.shape[0], dtype=A.dtype))
    return Linv.T @ Linv
