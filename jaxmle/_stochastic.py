"""Mini-batch Adam and SGD on one dataset: shuffled epochs, a compiled scan per chunk.

Each chunk of rows (the whole dataset, kept on the device, when it fits; else the
chunks of ``jaxmle._chunks.RowSource`` in a random order per epoch) is shuffled on
the device and scanned in batches of ``batch_size`` rows by one compiled program.
The mini-batch objective is the batch's mean negative log-likelihood plus the
log-prior divided by n: an unbiased estimate of the full-data objective that the
exact fits minimise. The estimate returned is the average of the iterates over
the last epoch (over the second half of the steps when there are fewer than two
epochs), which cancels most of the mini-batch noise.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from ._compile import jit
from ._chunks import RowSource
from ._data import to_plain
from ._model import Model
from ._solve import ready_data
from .optimizers import Adam, GradientAscent

DEFAULT_EPOCHS = 10
# Rows per host chunk when the data stay on the host and no chunk_size is given.
DEFAULT_CHUNK = 65_536
# Array data up to this many bytes go to the device whole (one chunk) when no chunk_size is given.
DEVICE_BYTES = 1 << 30
# A number as learning rate decays along a cosine to this fraction of itself over the fit.
FLOOR = 0.01


def default_chunk(batch_size: int, data=None) -> int:
    """Rows per chunk: the whole dataset when it fits on the device, else about 65,536 rows."""
    if data is not None and not callable(data):
        leaves = jax.tree_util.tree_leaves(to_plain(data))
        if sum(int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize for x in leaves) <= DEVICE_BYTES:
            return max(int(np.shape(leaves[0])[0]), 1)
    return max(batch_size, (DEFAULT_CHUNK // batch_size) * batch_size)


def transformation(opt) -> "optax.GradientTransformation":
    """The optax transformation of a stochastic method (``learning_rate`` may be a schedule)."""
    import optax  # here, not at import: exact fits never load optax
    if isinstance(opt, Adam):
        return optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2)
    if isinstance(opt, GradientAscent):
        return optax.sgd(0.01 if opt.learning_rate is None else opt.learning_rate)
    raise TypeError(f"no stochastic transformation for {type(opt).__name__}")


def _cosine(k, total, floor=FLOOR):
    """The default learning-rate factor at step k of total: a cosine from 1 down to ``floor``."""
    t = jnp.minimum(k, total).astype(jnp.float32) / jnp.maximum(total, 1).astype(jnp.float32)
    return floor + (1.0 - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))


def _chunk_program(model: Model, opt, batch_size: int):
    """``run(carry, key, fixed, data, mask, n_obs, tail_start, total) -> carry``: one chunk's batches."""

    def build():
        spec, tx, B = model.spec, transformation(opt), batch_size
        decay = not callable(opt.learning_rate)

        def loss(z, fixed, batch, valid, n_obs):
            p = spec.to_params(z, fixed)
            count = jnp.maximum(jnp.sum(valid), 1).astype(z.dtype)
            ll = model.loglik_sum(p, ready_data(model, batch, valid), valid) / count
            if model.log_prior is not None:
                ll = ll + model.log_prior(p) / n_obs
            return -ll

        def run(carry, key, fixed, data, mask, n_obs, tail_start, total):
            C = mask.shape[0]
            nb = -(-C // B)
            # Used rows first, in random order; padding and masked rows last.
            order = jnp.argsort(jnp.where(mask, jax.random.uniform(key, (C,)), 2.0))
            valid = mask[order]
            pad = nb * B - C
            if pad:
                order = jnp.concatenate([order, jnp.zeros(pad, order.dtype)])
                valid = jnp.concatenate([valid, jnp.zeros(pad, bool)])

            def step(c, xs):
                z, state, k, total_z, n_avg = c
                ids, v = xs
                batch = jax.tree_util.tree_map(lambda x: x[ids], data)
                g = jax.grad(loss)(z, fixed, batch, v, n_obs)
                updates, new_state = tx.update(g, state, z)
                if decay:
                    updates = updates * _cosine(k, total)
                do = jnp.any(v) & (k < total)
                z = jnp.where(do, (z + updates).astype(z.dtype), z)   # optax.apply_updates
                state = jax.tree_util.tree_map(lambda a, b: jnp.where(do, a, b), new_state, state)
                k = k + do.astype(k.dtype)
                tail = do & (k > tail_start)
                return (z, state, k, total_z + jnp.where(tail, z, 0.0), n_avg + tail.astype(n_avg.dtype)), None

            carry, _ = jax.lax.scan(step, carry, (order.reshape(nb, B), valid.reshape(nb, B)))
            return carry

        return jit(run)

    return model.compiled(("stream-sgd", opt, batch_size), build)


def run_stochastic(model: Model, source: RowSource, fixed, z0, opt, batch_size: int, epochs, max_steps,
                   key, progress):
    """Mini-batch optimisation from ``z0``.

    Returns:
        (the averaged iterate, the number of steps taken).
    """
    if source.n is None or not source.checked and source.from_callable:
        for _ in source.chunks():     # a callable source: count its rows (and check them) first
            pass
    steps_per_epoch = sum(-(-v // batch_size) for v in source.chunk_valid)
    if epochs is None and max_steps is None:
        epochs = DEFAULT_EPOCHS
    total = min(epochs * steps_per_epoch if epochs else np.inf, max_steps or np.inf)
    total = int(total)
    n_tail = steps_per_epoch if total >= 2 * steps_per_epoch else max(1, total // 2)
    prog = _chunk_program(model, opt, batch_size)
    dtype = z0.dtype
    carry = (z0, transformation(opt).init(z0), jnp.zeros((), jnp.int32), jnp.zeros_like(z0),
             jnp.zeros((), jnp.int32))
    args = (jnp.asarray(source.n_obs, dtype), jnp.asarray(total - n_tail, jnp.int32), jnp.asarray(total, jnp.int32))
    n_epochs = -(-total // steps_per_epoch)
    show = progress if progress is not None else (n_epochs > 1 and sys.stderr.isatty())
    epochs_iter = range(n_epochs)
    if show:
        from tqdm.auto import tqdm  # only when a bar shows: its import takes ~0.15 s
        epochs_iter = tqdm(epochs_iter, desc=f"fit ({opt.name}, mini-batch)", unit="epoch", leave=False)
    for e in epochs_iter:
        ke = jax.random.fold_in(key, e)
        order = None
        if not source.from_callable:
            seed = int(jax.random.randint(ke, (), 0, np.iinfo(np.int32).max))
            order = np.random.default_rng(seed).permutation(source.n_chunks)
        previous = None
        for i, ch in enumerate(source.chunks(order)):
            carry = prog(carry, jax.random.fold_in(ke, i), fixed, ch.data, ch.mask, *args)
            if previous is not None:      # at most two chunks in flight (see _chunks.Streamed)
                jax.block_until_ready(previous)
            previous = carry
    z, _, k, total_z, n_avg = carry
    return total_z / jnp.maximum(n_avg, 1).astype(dtype), int(k)
