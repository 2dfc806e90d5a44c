"""Batched fits: straggler compaction, chunking and sharding over devices."""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ._solve import Stages, ready_data
from ._status import RUNNING


# Seconds JAX spent tracing, lowering and compiling, summed over the process (JAX's
# own monitoring events): the cost the ski-rental rule in BatchFitter weighs.
_compile_clock = [0.0]
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


def _on_duration(event, duration, **_):
    if event in _COMPILE_EVENTS:
        _compile_clock[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_duration)


class BatchFitter:
    """A batched fit in three compiled stages, optionally regrouping stragglers.

    ``start`` and ``finish`` run on the whole batch; ``advance`` iterates. Under
    vmap a while_loop runs until its slowest lane is done and every step costs the
    full batch. With ``compact`` the batch iterates until at most an eighth of its
    lanes are still running; those are gathered into a bucket of the next power of
    two (at least ``min_bucket``; few sizes, so few compilations) which continues,
    and so on. Each dataset runs exactly the steps it would run in the full batch,
    and both modes share the start and finish programs, so results are identical.

    ``compact="auto"`` regroups only when it pays: a bucket size whose program is
    already compiled is used at once; a new one is compiled only after the
    stragglers have cost, in steps of the bigger batch, as much as compiling the
    loop program did, over this and earlier calls (the ski-rental rule: never more
    than about twice the better of the two choices, and nothing compiled for a first
    call whose stragglers finish in a few cheap steps).
    """

    shrink = 8

    def __init__(self, stages: Stages, masked: bool, compact, min_bucket: int = 64):
        ax = (0, 0, 0, 0 if masked else None)
        if compact not in (True, False, "auto"):
            raise ValueError(f"compact must be True, False or 'auto', got {compact!r}")
        self.compact, self.min_bucket = compact, min_bucket
        model = stages.model
        # The data is made ready (masked entries replaced, model.prepare applied) once.
        self.ready = jax.jit(jax.vmap(lambda d, m: ready_data(model, d, m), in_axes=ax[2:]))
        self.start = jax.jit(jax.vmap(stages.start, in_axes=ax))
        self.finish = jax.jit(jax.vmap(stages.finish, in_axes=(0,) + ax))
        body = jax.vmap(stages.body, in_axes=(0,) + ax)

        def advance(carry, z0, fixed, data, mask, threshold, max_steps):
            def step(c):
                c, i = c
                new = body(c, z0, fixed, data, mask)
                run = c.status == RUNNING
                return jax.tree_util.tree_map(
                    lambda a, b: jnp.where(run.reshape(run.shape + (1,) * (a.ndim - 1)), a, b), new, c), i + 1

            def cond(c):
                return (jnp.sum(c[0].status == RUNNING, dtype=jnp.int32) > threshold) & (c[1] < max_steps)

            return jax.lax.while_loop(cond, step, (carry, jnp.zeros((), jnp.int32)))[0]

        self.advance = jax.jit(advance)
        self._shapes: set = set()     # argument shapes the loop program was compiled for
        self.compile_s = 0.0          # how long compiling it took last time (measured)
        self.waste = 0.0              # straggler time spent in too-big buckets since then

    def _size(self, n):
        return max(self.min_bucket, 1 << (int(n) - 1).bit_length())

    def _advance(self, sub, sub_args, threshold, max_steps=np.iinfo(np.int32).max):
        """Run the loop; when this compiles a new program, remember how long that took."""
        before = _compile_clock[0]
        out = self.advance(sub, *sub_args, jnp.int32(threshold), jnp.int32(max_steps))
        if _compile_clock[0] > before:
            self.compile_s = _compile_clock[0] - before
        self._shapes.add(tuple(a.shape for a in jax.tree_util.tree_leaves((sub, *sub_args))))
        return out

    def __call__(self, z0, fixed, data, mask):
        args = (z0, fixed, self.ready(data, mask), mask)
        carry = self.start(*args)
        sub, sub_args, lanes, idx = carry, args, None, None

        def take(tree, idx):
            return jax.tree_util.tree_map(lambda a: a[idx], tree)

        def collect(carry, sub):
            running = np.asarray(sub.status) == RUNNING
            if lanes is None:
                return sub, np.flatnonzero(running)
            return _merge(carry, sub, idx), lanes[running[: lanes.size]]

        while True:
            size = sub_args[0].shape[0]
            shrinks = self.compact and size >= self.shrink * self.min_bucket
            sub = self._advance(sub, sub_args, size // self.shrink if shrinks else 0)
            carry, live = collect(carry, sub)
            if live.size and self.compact == "auto" and shrinks:
                # Ski rental: step the stragglers in this bucket (1, 2, 4, ... steps at a
                # time) until what they waste here matches compiling the smaller bucket;
                # a bucket size compiled before (this call or an earlier one) costs nothing.
                # The waste adds up over calls (new data of the same shape), so repeated
                # calls with stragglers do get their bucket compiled.
                steps = 1
                while (live.size and self.waste < self.compile_s
                       and not self._has_program(self._size(live.size), sub, sub_args)):
                    t0 = time.perf_counter()
                    sub = self._advance(sub, sub_args, 0, steps)
                    carry, live = collect(carry, sub)
                    self.waste += (time.perf_counter() - t0) * (1.0 - self._size(max(live.size, 1)) / size)
                    steps *= 2
                if live.size and not self._has_program(self._size(live.size), sub, sub_args):
                    self.waste = 0.0      # paid for: the smaller bucket compiles now
            if live.size == 0:
                break
            # Pad the bucket by repeating a live dataset: the copies compute exactly what
            # the original does, so writing them all back is harmless, and every shape
            # depends on the bucket size alone (no recompilation for new data).
            idx = np.concatenate([live, np.full(self._size(live.size) - live.size, live[-1])])
            sub, sub_args, lanes = take(carry, idx), take(args, idx), live
        return self.finish(carry, *args)

    def _has_program(self, size, sub, sub_args):
        """Whether the loop program for a bucket of ``size`` lanes (same data) is compiled."""
        shapes = tuple((size,) + a.shape[1:] for a in jax.tree_util.tree_leaves((sub, *sub_args)))
        return shapes in self._shapes


@jax.jit
def _merge(carry, sub, idx):
    """Write a bucket's carry back into the full batch's carry at rows ``idx``."""
    return jax.tree_util.tree_map(lambda a, b: a.at[idx].set(b), carry, sub)


def default_mesh(mesh):
    """``mesh``, or a one-axis mesh over all local devices when there are several."""
    if mesh is not None:
        return mesh
    devices = jax.local_devices()
    if len(devices) == 1:
        return None
    return jax.sharding.Mesh(np.array(devices), ("batch",))


def run_chunks(fn, args, B: int, chunk_size, progress, mesh):
    """Call the compiled batch fitter over equal-shaped chunks, sharded over devices.

    Each chunk (and a single-chunk batch too, when sharded) is padded to a multiple
    of the device count by repeating the last dataset; padded lanes are dropped.
    """
    mesh = default_mesh(mesh)
    n_dev = 1 if mesh is None else int(mesh.devices.shape[0])
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size}")
    size = B if chunk_size is None else min(int(chunk_size), B)
    size = -(-size // n_dev) * n_dev
    n_chunks = -(-B // size)
    if n_chunks == 1 and size == B and mesh is None:
        return fn(*args)
    total = n_chunks * size

    def pad(a):
        if a.shape[0] == total:
            return a
        return jnp.concatenate([a, jnp.repeat(a[-1:], total - a.shape[0], axis=0)], axis=0)

    args = jax.tree_util.tree_map(pad, args)
    sharding = None
    if mesh is not None:
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
    show = progress if progress is not None else (n_chunks > 1 and sys.stderr.isatty())
    chunks = range(n_chunks)
    if show:
        chunks = tqdm(chunks, desc="fit_batch", unit="chunk")
    merged = None
    for c in chunks:
        part = jax.tree_util.tree_map(lambda a: a[c * size : (c + 1) * size], args)
        if sharding is not None:
            part = jax.device_put(part, sharding)
        out = fn(*part)
        if n_chunks == 1:
            merged = out
            break
        # Each chunk's results go straight into one preallocated host array per
        # field, so memory stays bounded (no list of chunks, no concatenated copy).
        host = jax.tree_util.tree_map(np.asarray, out)
        if merged is None:
            merged = jax.tree_util.tree_map(lambda h: np.empty((total,) + h.shape[1:], h.dtype), host)
        for dst, h in zip(jax.tree_util.tree_leaves(merged), jax.tree_util.tree_leaves(host)):
            dst[c * size : (c + 1) * size] = h
        del out, host
    if n_chunks > 1:
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a[:B]), merged)
    return jax.tree_util.tree_map(lambda a: a[:B], merged)
