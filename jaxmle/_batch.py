"""Batched fits: straggler compaction, chunking and sharding over devices."""

from __future__ import annotations

import copy
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ._compile import _Program, compile_together, jit, lazy_jit
from ._data import _host_view, _on_host
from ._solve import Stages, conclude, ready_data
from ._status import RUNNING


# Seconds JAX spent tracing, lowering and compiling, summed over the process (JAX's
# own monitoring events): the cost the ski-rental rule in BatchFitter weighs.
_compile_clock = [0.0]
#: Batches up to this many datasets invert their information matrices on the host.
HOST_INVERT_MAX = 16_384
#: Steps of a batch's loop run by its first call of quickly compiled code before it looks
#: at the promotion rule (then twice as many, and so on; see ``BatchFitter._advance``).
QUICK_SEGMENT = 16

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
    call whose stragglers finish in a few cheap steps). The stragglers' allowance of
    steps is worked out from the measured time of a step, so the loop program runs
    on through them in the same call (every return to the host costs a copy of the
    batch's data, ~40 ms for 10,000 logistic datasets: as much as a third of a step).
    """

    shrink = 8

    def __init__(self, stages: Stages, masked: bool, compact, min_bucket: int = 64):
        ax = (0, 0, 0, 0 if masked else None)
        if compact not in (True, False, "auto"):
            raise ValueError(f"compact must be True, False or 'auto', got {compact!r}")
        self.compact, self.min_bucket = compact, min_bucket
        model = self.model = stages.model
        # The data is made ready (masked entries replaced, model.prepare applied) once.
        self.ready = jit(jax.vmap(lambda d, m: ready_data(model, d, m), in_axes=ax[2:]))
        # The start's carry is strongly typed, as the loop's own carry is: L-BFGS's and
        # gradient ascent's optax states start with weakly typed scalars, which gave the
        # loop program a second signature (compiled again) when stragglers stepped on.
        self.start = jit(jax.vmap(lambda *a: _strong(stages.start(*a)), in_axes=ax))
        self.finish = jit(jax.vmap(stages.finish, in_axes=(0,) + ax))
        # Up to HOST_INVERT_MAX datasets the information matrices are inverted on the
        # host (``conclude``), by a finish program without the inversion: compiling it
        # there cost more than NumPy's loop over that many small matrices (measured on
        # the demo, 10,000 fits: the finish program's compile 0.5 s instead of 1.3 s,
        # NumPy ~0.04 s). Bigger batches invert in their (then separately compiled)
        # finish program. Results equal to rounding.
        self.finish_host = self.finish
        if getattr(stages, "batched", False):
            host = copy.copy(stages)
            host.batched = False
            self.finish_host = jit(jax.vmap(host.finish, in_axes=(0,) + ax))
        # Compiled only when some fit has a coordinate that looks unidentified (conclude).
        if hasattr(stages, "probes"):
            self.probes = jit(jax.vmap(stages.probes, in_axes=(0, 0, 0, 0) + ax))
        body = jax.vmap(stages.body, in_axes=(0,) + ax)

        def advance(carry, z0, fixed, data, mask, threshold, max_steps, grace):
            """Step until at most ``threshold`` fits run, then ``grace`` steps more (or
            ``max_steps`` in all). Returns (carry, steps taken, steps of grace taken)."""

            def running(c):
                return jnp.sum(c.status == RUNNING, dtype=jnp.int32)

            def step(c):
                c, i, g = c
                new = body(c, z0, fixed, data, mask)
                run = c.status == RUNNING
                g = g + (running(c) <= threshold).astype(jnp.int32)
                return jax.tree_util.tree_map(
                    lambda a, b: jnp.where(run.reshape(run.shape + (1,) * (a.ndim - 1)), a, b), new, c), i + 1, g

            def cond(c):
                n = running(c[0])
                return (n > 0) & ((n > threshold) | (c[2] < grace)) & (c[1] < max_steps)

            zero = jnp.zeros((), jnp.int32)
            return jax.lax.while_loop(cond, step, (carry, zero, zero))

        self.advance = jit(advance)
        self.advance.one_tier = True     # buckets run the full batch's code (bit-identical results)
        self._shapes: set = set()     # argument shapes the loop program was compiled for
        self.compile_s = 0.0          # how long compiling it took last time (measured)
        self.waste = 0.0              # straggler time spent in too-big buckets since then
        self.step_s: dict = {}        # seconds per step, by bucket size (measured)

    def persist_as(self, material) -> "BatchFitter":
        """Save each of its programs to disk (``jaxmle._compile._Program.persist_as``)."""
        for name in ("ready", "start", "finish", "finish_host", "probes", "advance"):
            prog = getattr(self, name, None)
            if hasattr(prog, "persist_as"):
                prog.persist_as((material, name))
        return self

    def _size(self, n):
        return max(self.min_bucket, 1 << (int(n) - 1).bit_length())

    def _advance(self, sub, sub_args, threshold, max_steps=np.iinfo(np.int32).max, grace=0):
        """Run the loop: (carry, steps taken, steps of grace taken). Remembers how long
        compiling a new program took and, under ``compact="auto"``, how long a step takes
        at this size (the step counts are read only then: reading them waits for the loop).

        While the loop program is quickly compiled code (``jaxmle._compile._Quick``) it runs
        in segments of ``QUICK_SEGMENT`` steps, doubling, so that its promotion rule can
        switch to the fully optimised code within a long call (quick code of some loops runs
        10-15x slower: 20,000 gradient-ascent steps took minutes). Each segment goes on from
        the carry where the last stopped, with the remaining step and grace allowances: the
        steps are those of one call."""
        size = sub_args[0].shape[0]
        before, t0 = _compile_clock[0], time.perf_counter()
        # NumPy scalars: jnp.int32(...) compiles a conversion program at its first call.
        flags = (np.int32(threshold), np.int32(0), np.int32(0))
        done = done_extra = 0
        segment, finished = QUICK_SEGMENT, False
        while not finished and done < max_steps and self.advance.runs_quick(sub, *sub_args, *flags):
            n = min(segment, max_steps - done)
            sub, steps, extra = self.advance(sub, *sub_args, np.int32(threshold), np.int32(n),
                                             np.int32(max(grace - done_extra, 0)))
            steps, extra = int(steps), int(extra)
            done, done_extra, segment, finished = done + steps, done_extra + extra, 2 * segment, steps < n
        if finished or done >= max_steps:
            out, steps, extra = sub, done, done_extra
        else:
            # Fully optimised code (from the start, or promoted after a segment): the rest in one call.
            out, steps, extra = self.advance(sub, *sub_args, np.int32(threshold), np.int32(max_steps - done),
                                             np.int32(max(grace - done_extra, 0)))
            if done:
                steps, extra = done + int(steps), done_extra + int(extra)
        compiled = _compile_clock[0] - before
        shapes = tuple(a.shape for a in jax.tree_util.tree_leaves((sub, *sub_args)))
        if compiled > 0 and shapes not in self._shapes:
            # A new bucket's compile (not a known one compiled again fully optimised:
            # ``jaxmle._compile._Quick``) is what a smaller bucket would cost.
            self.compile_s = compiled
        self._shapes.add(shapes)
        if self.compact != "auto":
            return out, 0, 0
        steps, extra = int(steps), int(extra)
        if steps:
            self.step_s[size] = max(time.perf_counter() - t0 - compiled, 0.0) / steps
        return out, steps, extra

    def _allowance(self, size):
        """Steps the stragglers may take at ``size`` lanes before compiling a smaller bucket
        pays (none while the time of a step at this size is unknown)."""
        if size not in self.step_s:
            return 0
        steps = max(self.compile_s - self.waste, 0.0) / max(self.step_s[size], 1e-9)
        return int(min(steps, np.iinfo(np.int32).max))

    def _compile_ahead(self, z0, fixed, data, mask):
        """Before a call whose programs are all new: lower the data step, start, loop and
        finish programs for this call's shapes and compile them side by side
        (``jaxmle._compile.compile_together``); each is then found compiled when the
        call reaches it. The straggler rule weighs the loop program's tracing, lowering
        and compile (the last measured while the others compiled beside it). Not when a
        program is compiled already or saved on disk (a later chunk, a second session:
        those load at their calls without tracing), nor on several devices (a sharded
        batch compiles at its calls)."""
        if jax.device_count() > 1 or not isinstance(self.advance, _Program) or self.ready.known(data, mask):
            return
        j_ready, ready = self.ready.ahead(data, mask)
        if self.start.known(z0, fixed, ready, mask):
            return
        j_start, carry = self.start.ahead(z0, fixed, ready, mask)
        step_args = (carry, z0, fixed, ready, mask)
        flag = jax.ShapeDtypeStruct((), jnp.int32)
        if self.advance.known(*step_args, flag, flag, flag):
            compile_together([j_start, j_ready])
            return
        j_advance, (done, _, _) = self.advance.ahead(*step_args, flag, flag, flag)
        # The finish program takes the loop's carry (its weak types can differ from start's).
        finish = self.finish_host if z0.shape[0] <= HOST_INVERT_MAX else self.finish
        end_args = (done,) + step_args[1:]
        j_finish = None if finish.known(*end_args) else finish.ahead(*end_args)[0]
        # The loop program first: the longest compile starts while the others lower.
        compile_together([j_advance, j_start, j_finish, j_ready])
        if j_advance.compiled:
            self._shapes.add(tuple(a.shape for a in jax.tree_util.tree_leaves(step_args)))
            self.compile_s = j_advance.seconds

    def __call__(self, z0, fixed, data, mask):
        self._compile_ahead(z0, fixed, data, mask)
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
            auto = self.compact == "auto" and shrinks
            # Ski rental: the stragglers step on in this bucket until what they waste here
            # matches compiling the smaller bucket; a bucket size compiled before (this call
            # or an earlier one) costs nothing. The waste adds up over calls (new data of the
            # same shape), so repeated calls with stragglers do get their bucket compiled.
            # A smaller bucket compiled before: regroup at the threshold, no allowance.
            grace = self._allowance(size) if auto and not self._smaller_compiled(size, sub, sub_args) else 0
            sub, _, extra = self._advance(sub, sub_args, size // self.shrink if shrinks else 0, grace=grace)
            carry, live = collect(carry, sub)
            if auto:
                self.waste += extra * self.step_s.get(size, 0.0)
                if live.size and not extra and not self._has_program(self._size(live.size), sub, sub_args):
                    # No allowance was given (the step time was unknown, or a bucket of
                    # another size exists): give it now.
                    grace = self._allowance(size)
                    if grace:
                        sub, steps, _ = self._advance(sub, sub_args, 0, max_steps=grace)
                        carry, live = collect(carry, sub)
                        self.waste += steps * self.step_s.get(size, 0.0)
                if live.size and not self._has_program(self._size(live.size), sub, sub_args):
                    self.waste = 0.0      # paid for: the smaller bucket compiles now
            if live.size == 0:
                break
            # Pad the bucket by repeating a live dataset: the copies compute exactly what
            # the original does, so writing them all back is harmless, and every shape
            # depends on the bucket size alone (no recompilation for new data).
            idx = np.concatenate([live, np.full(self._size(live.size) - live.size, live[-1])])
            sub, sub_args, lanes = take(carry, idx), take(args, idx), live
        finish = self.finish_host if args[0].shape[0] <= HOST_INVERT_MAX else self.finish
        out = finish(carry, *args)
        if "pending" not in out:
            return out
        z, f = out["z"], out["pending"]["f"]
        spec = getattr(getattr(self, "model", None), "spec", None)
        return conclude(out, z0, lambda Hinv, suspect: self.probes(z, f, Hinv, suspect, *args),
                        None if spec is None else spec.wald_ok_flat)

    def _signature(self, sub, sub_args):
        return tuple(a.shape[1:] for a in jax.tree_util.tree_leaves((sub, *sub_args)))

    def _has_program(self, size, sub, sub_args):
        """Whether the loop program for a bucket of ``size`` lanes (same data) is compiled."""
        return tuple((size,) + r for r in self._signature(sub, sub_args)) in self._shapes

    def _smaller_compiled(self, size, sub, sub_args):
        """Whether a loop program for fewer than ``size`` lanes (same data) is compiled."""
        rest = self._signature(sub, sub_args)
        return any(tuple(a[1:] for a in shapes) == rest and shapes[0][0] < size for shapes in self._shapes)


def _strong(tree):
    """``tree`` with weakly typed arrays made strong (same dtype, same values); other
    leaves (PRNG keys included) as they are."""
    def strong(x):
        aval = jax.typeof(x) if hasattr(jax, "typeof") else jax.core.get_aval(x)
        weak = getattr(aval, "weak_type", False)
        return jax.lax.convert_element_type(x, x.dtype) if weak else x

    return jax.tree_util.tree_map(strong, tree)


@lazy_jit
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


def _in_host_memory(a) -> bool:
    return (isinstance(a, jax.Array) and len(a.devices()) == 1 and _on_host(a)
            and (jnp.issubdtype(a.dtype, jnp.number) or a.dtype == bool))


def _rows(a, lo: int, size: int):
    """Rows [lo, lo + size) of ``a``: for an array in CPU memory a NumPy view of it (a
    jax slice compiles a small program per shape, ~0.1 s of a demo's first call)."""
    if _in_host_memory(a):
        return _host_view(a)[lo:lo + size]
    return a[lo:lo + size]


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
        xp, a = (np, _host_view(a)) if _in_host_memory(a) else (jnp, a)
        return xp.concatenate([a, xp.repeat(a[-1:], total - a.shape[0], axis=0)], axis=0)

    args = jax.tree_util.tree_map(pad, args)
    sharding = None
    if mesh is not None:
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
    show = progress if progress is not None else (n_chunks > 1 and sys.stderr.isatty())
    chunks = range(n_chunks)
    if show:
        from tqdm.auto import tqdm  # only when a bar shows: its import takes ~0.15 s
        chunks = tqdm(chunks, desc="fit_batch", unit="chunk")
    merged = None
    for c in chunks:
        part = jax.tree_util.tree_map(lambda a: _rows(a, c * size, size), args)
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
        # device_put, not jnp.asarray: with jax 0.10 the latter compiles a small program
        # for each new shape and dtype (~15-20 ms each, six for the demo's results).
        return jax.tree_util.tree_map(lambda a: jax.device_put(a[:B]), merged)
    return jax.tree_util.tree_map(lambda a: a[:B], merged)
