"""Mini-batch Adam and SGD on one dataset: shuffled epochs, a compiled scan per chunk.

Each chunk of rows (the whole dataset, kept on the device, when it fits; else the
chunks of ``jaxmle._chunks.RowSource`` in a random order per epoch) is shuffled on
the device and scanned in batches of ``batch_size`` rows by one compiled program.
A step's objective is minus the batch's log-likelihood (plus its share, rows / n, of
the log-prior) divided by ``batch_size``: an unbiased estimate of the full-data
objective that the exact fits minimise, in which a short last batch counts its rows
alike with the others, so over an epoch the steps' gradients sum to n / batch_size
times the full-data gradient.

The default rule (``method="adam"`` or ``"sgd"`` with no learning rate, at most
``WHITEN_MAX_PARAMS`` free parameters):

- Whitening. At the start, the Hessian H of one random batch's mean objective at the
  start values is formed, scaled to unit diagonal (so rescaling a parameter changes
  nothing) and eigendecomposed (eigenvalues in absolute value, floored at
  ``EIG_FLOOR`` of the largest); the optimizer then runs on u with z = z0 + M u,
  M' H M = I, where every direction has unit curvature per observation.
- Step size, constant in those coordinates: ``SGD_RATE`` (a fraction of a Newton
  step) for SGD; ``ADAM_RATE / sqrt(batch_size)`` for Adam (near the optimum Adam
  divides by the root mean square of a batch gradient, about 1 / sqrt(batch_size)
  per unit of curvature), starting from ``ADAM_START`` and decaying to it along a
  cosine over the burn-in, with ``b1 = ADAM_B1`` = 0 (no momentum: with b1 = 0.9
  the average ended about twice as far from the MLE; ``b2`` is the optimizer's).
  The learning rate is thus chosen from the data's scale, not given.
- Averaging (Polyak-Ruppert, tail). The estimate is the plain average of the iterates
  after a burn-in of ``BURN_IN`` of the steps, at least ``MIN_BURN`` steps, rounded up
  to whole epochs and at most half of them (the second half of the steps when there
  are fewer than two epochs). Over whole shuffled epochs the batch gradients at the
  MLE sum to zero, so the average cancels the mini-batch noise up to terms of order
  the step size.

Measured with ``benchmarks/minibatch.py`` (200,000 x 6 logistic regression, 5 epochs
of 4,096 rows, two shuffling keys): SGD ends 0.05-0.08 SE from the MLE (Mahalanobis),
Adam 0.05-0.09 SE; the former rule (below) ended 2.1 SE (Adam at 0.05) and 40 SE
(SGD at 0.01) away. A 20,000-token bigram model in 30 epochs of 2,048: transition
probabilities within 5e-4 of the count ratios (formerly 1.1e-2 with Adam).

A learning rate given as a number keeps the former rule: it decays along a cosine
to ``FLOOR`` of itself over the fit, without whitening, and the iterates of the last
epoch are averaged (the second half of the steps when there are fewer than two
epochs); an optax schedule is used as given with that averaging. Models with more
free parameters than ``WHITEN_MAX_PARAMS`` take ``FALLBACK_RATE`` that way too.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from ._compile import jit
from ._chunks import RowSource
from ._data import to_plain
from ._linalg import lapack_ready
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

# The default rule (see the module docstring); measured in benchmarks/minibatch.py.
WHITEN_MAX_PARAMS = 200      # dense k x k whitening up to this many free parameters
ADAM_RATE = 0.5              # Adam's step in whitened coordinates, times 1 / sqrt(batch_size)
ADAM_START = 0.05            # Adam's step at the start, decaying to the above over the burn-in
ADAM_B1 = 0.0                # Adam's momentum in the default rule: none (momentum doubled the distance)
SGD_RATE = 0.3               # SGD's step in whitened coordinates (a fraction of a Newton step)
BURN_IN = 0.2                # fraction of the steps not averaged (rounded up to whole epochs) ...
MIN_BURN = 20                # ... and at least this many steps, but at most half the epochs
EIG_FLOOR = 1e-8             # whitening: eigenvalues below this fraction of the largest are raised to it
# Without whitening (more free parameters), the default numbers, on the former cosine rule.
FALLBACK_RATE = {"adam": 0.05, "gd": 0.01}


def default_chunk(batch_size: int, data=None) -> int:
    """Rows per chunk: the whole dataset when it fits on the device, else about 65,536 rows."""
    if data is not None and not callable(data):
        leaves = jax.tree_util.tree_leaves(to_plain(data))
        if sum(int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize for x in leaves) <= DEVICE_BYTES:
            return max(int(np.shape(leaves[0])[0]), 1)
    return max(batch_size, (DEFAULT_CHUNK // batch_size) * batch_size)


def whitened(opt, model: Model) -> bool:
    """Whether a fit takes the default rule: no learning rate given and few enough parameters."""
    return opt.learning_rate is None and model.n_free <= WHITEN_MAX_PARAMS


def rate(opt, model: Model, batch_size: int):
    """The learning rate (number or schedule) a stochastic fit uses."""
    if opt.learning_rate is not None:
        return opt.learning_rate
    if not whitened(opt, model):
        return FALLBACK_RATE["adam" if isinstance(opt, Adam) else "gd"]
    return ADAM_RATE / np.sqrt(batch_size) if isinstance(opt, Adam) else SGD_RATE


def transformation(opt, learning_rate, white: bool = False) -> "optax.GradientTransformation":
    """The optax transformation of a stochastic method (``learning_rate`` may be a schedule)."""
    import optax  # here, not at import: exact fits never load optax
    if isinstance(opt, Adam):
        return optax.adam(learning_rate, b1=ADAM_B1 if white else opt.b1, b2=opt.b2)
    if isinstance(opt, GradientAscent):
        return optax.sgd(learning_rate)
    raise TypeError(f"no stochastic transformation for {type(opt).__name__}")


def _cosine(k, total, floor=FLOOR):
    """The learning-rate factor of a number rate at step k of total: a cosine from 1 down to ``floor``."""
    t = jnp.minimum(k, total).astype(jnp.float32) / jnp.maximum(total, 1).astype(jnp.float32)
    return floor + (1.0 - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))


def _loss(model: Model, batch_size: int | None = None):
    """The mini-batch objective: minus (the batch's log-likelihood plus count / n times the log-prior),
    divided by ``batch_size`` (None: by the batch's row count, a mean).

    Dividing a short batch (an epoch's last) by the full batch size weights every row alike, so
    over an epoch the steps' gradients sum to n / batch_size times the full-data gradient, which
    is zero at the MLE: the average of the iterates then cancels the mini-batch noise.
    """
    spec = model.spec

    def loss(z, fixed, batch, valid, n_obs):
        p = spec.to_params(z, fixed)
        count = jnp.maximum(jnp.sum(valid), 1).astype(z.dtype)
        ll = model.loglik_sum(p, ready_data(model, batch, valid), valid)
        if model.log_prior is not None:
            ll = ll + count * model.log_prior(p) / n_obs
        return -ll / (count if batch_size is None else batch_size)

    return loss


def _whitener(model: Model, batch_size: int):
    """``white(z, key, fixed, data, mask, n_obs) -> M``: M' H M = I for the Hessian H of one random batch."""

    def build():
        loss = _loss(model)

        def white(z, key, fixed, data, mask, n_obs):
            rows = min(batch_size, mask.shape[0])
            u = jax.random.uniform(jax.random.wrap_key_data(key), mask.shape)
            ids = jnp.argsort(jnp.where(mask, u, 2.0))[:rows]     # used rows, in random order
            batch = jax.tree_util.tree_map(lambda x: x[ids], data)
            H = jax.hessian(loss)(z, fixed, batch, mask[ids], n_obs)
            # Scaled to unit diagonal first, so the rule does not change when a parameter is
            # rescaled and the eigenvalue floor applies to the correlations only.
            d = jnp.abs(jnp.diagonal(H))
            d = 1.0 / jnp.sqrt(jnp.where(d > 0, d, jnp.maximum(jnp.max(d), 1.0)))
            lapack_ready()
            w, U = jnp.linalg.eigh(0.5 * (H + H.T) * d[:, None] * d[None, :])
            w = jnp.abs(w)
            w = jnp.maximum(w, EIG_FLOOR * jnp.max(w))
            M = d[:, None] * U / jnp.sqrt(w)
            ok = jnp.all(jnp.isfinite(M)) & (jnp.max(w) > 0)
            return jnp.where(ok, M, jnp.eye(z.shape[0], dtype=z.dtype))   # no curvature: plain steps

        return jit(white)

    return model.compiled(("stream-sgd-white", batch_size, EIG_FLOOR), build)


def _chunk_program(model: Model, opt, batch_size: int, white: bool):
    """``run(carry, key, fixed, data, mask, n_obs, tail_start, total, M) -> carry``: one chunk's batches."""

    def build():
        loss, B = _loss(model, batch_size), batch_size
        base = rate(opt, model, batch_size)
        tx = transformation(opt, base, white)
        decay = not white and not callable(opt.learning_rate)
        # Adam's default steps start larger (its steps are about the rate long before the optimum).
        adam = white and isinstance(opt, Adam)
        boost = max(ADAM_START / base, 1.0) - 1.0 if adam else 0.0

        def run(carry, key, fixed, data, mask, n_obs, tail_start, total, M):
            C = mask.shape[0]
            nb = -(-C // B)
            # Used rows first, in random order; padding and masked rows last.
            key = jax.random.wrap_key_data(key)
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
                if white:      # the optimizer runs on u with z = z_ref + M u: gradient M'g, step M du
                    updates, new_state = tx.update(M.T @ g, state)
                    updates = M @ updates
                else:
                    updates, new_state = tx.update(g, state, z)
                if decay:
                    updates = updates * _cosine(k, total)
                if boost:
                    updates = updates * (1.0 + boost * _cosine(k, tail_start, 0.0))
                do = jnp.any(v) & (k < total)
                z = jnp.where(do, (z + updates).astype(z.dtype), z)   # optax.apply_updates
                state = jax.tree_util.tree_map(lambda a, b: jnp.where(do, a, b), new_state, state)
                k = k + do.astype(k.dtype)
                tail = do & (k > tail_start)
                return (z, state, k, total_z + jnp.where(tail, z, 0.0), n_avg + tail.astype(n_avg.dtype)), None

            carry, _ = jax.lax.scan(step, carry, (order.reshape(nb, B), valid.reshape(nb, B)))
            return carry

        return jit(run)

    return model.compiled(("stream-sgd", opt, batch_size, white, ADAM_B1, ADAM_RATE, ADAM_START, SGD_RATE), build)


def _n_tail(total: int, steps_per_epoch: int, white: bool) -> int:
    """How many of the last steps are averaged (see the module docstring)."""
    if total < 2 * steps_per_epoch:
        return max(1, total // 2)
    if not white:
        return steps_per_epoch
    burn = max(int(np.ceil(BURN_IN * total)), MIN_BURN)
    burn = min(-(-burn // steps_per_epoch), total // steps_per_epoch // 2) * steps_per_epoch
    return max(total - burn, 1)


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
    white = whitened(opt, model)
    n_tail = _n_tail(total, steps_per_epoch, white)
    prog = _chunk_program(model, opt, batch_size, white)
    dtype = z0.dtype
    carry = (z0, transformation(opt, rate(opt, model, batch_size), white).init(z0), jnp.zeros((), jnp.int32),
             jnp.zeros_like(z0), jnp.zeros((), jnp.int32))
    n_obs = jnp.asarray(source.n_obs, dtype)
    args = (n_obs, jnp.asarray(total - n_tail, jnp.int32), jnp.asarray(total, jnp.int32))
    M = jnp.zeros((0, 0), dtype)
    n_epochs = -(-total // steps_per_epoch)
    show = progress if progress is not None else (n_epochs > 1 and sys.stderr.isatty())
    epochs_iter = range(n_epochs)
    if show:
        from tqdm.auto import tqdm  # only when a bar shows: its import takes ~0.15 s
        epochs_iter = tqdm(epochs_iter, desc=f"fit ({opt.name}, mini-batch)", unit="epoch", leave=False)
    # Typed keys cannot be saved-program arguments: the chunk program takes raw key data of
    # the default implementation, whatever kind of key the user passed.
    key = jax.random.key(int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max)))
    for e in epochs_iter:
        ke = jax.random.fold_in(key, e)
        order = None
        if not source.from_callable:
            seed = int(jax.random.randint(ke, (), 0, np.iinfo(np.int32).max))
            order = np.random.default_rng(seed).permutation(source.n_chunks)
        previous = None
        for i, ch in enumerate(source.chunks(order)):
            kc = jax.random.key_data(jax.random.fold_in(ke, i))
            if white and e == 0 and i == 0:
                # Once, at the start: a batch Hessian formed again at later iterates was measured to hurt
                # (rare categories of a bigram model get near-zero curvature in one batch: huge steps).
                M = _whitener(model, batch_size)(carry[0], kc, fixed, ch.data, ch.mask, n_obs)
            carry = prog(carry, kc, fixed, ch.data, ch.mask, *args, M)
            if previous is not None:      # at most two chunks in flight (see _chunks.Streamed)
                jax.block_until_ready(previous)
            previous = carry
    z, _, k, total_z, n_avg = carry
    return total_z / jnp.maximum(n_avg, 1).astype(dtype), int(k)
