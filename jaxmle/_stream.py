"""Fits of one dataset too big for the device: exact chunked fits and stochastic fits.

Work in progress (issue 14, part 1): ``fit_streamed`` is the entry point that
``jm.fit`` calls when ``chunk_size=`` or ``batch_size=`` is given.
"""

from __future__ import annotations


def fit_streamed(model, data, *, method, init, max_iter, tol, ftol, mask, warn, key, chunk_size,
                 batch_size, epochs, max_steps, progress):
    """Fit one dataset streamed in chunks (exact) or in mini-batches (stochastic)."""
    raise NotImplementedError("chunk_size= and batch_size= are being built (issue 14)")
