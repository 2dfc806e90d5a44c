"""fit and fit_batch: the driver loop, per-lane status and the compile cache.

Stopping rule (documented in README): with f the negative *mean* log-likelihood
(sum divided by the number of observations) on the unconstrained scale and g its
gradient, a fit has converged when

    max|g| <= gtol * max(1, |f|)

or when an accepted step changed f by at most ``ftol * max(1, |f|)`` while
``max|g| <= 10 * gtol * max(1, |f|)`` (progress has hit the floating-point
floor). Defaults depend on the dtype: gtol = 1e-9 (float64) / 1e-5 (float32) for
Newton, BFGS and L-BFGS, 1e-7 / 1e-4 for Adam and gradient ascent; ftol is 4 ulps.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import optimizers as _opt
from ._model import Model, n_data, substitute_masked
from ._result import BatchFitResult, FitResult
from ._status import RUNNING, ConvergenceWarning, Status, message

_NAN_POLICIES = ("raise", "status")

# A fit whose progress stalls at the floating-point floor still counts as converged
# when its gradient is within this factor of the tolerance.
FLOOR = 10.0


def _float_dtype(data):
    floats = [
        x.dtype for x in jax.tree_util.tree_leaves(data) if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    dt = jnp.result_type(*floats) if floats else jnp.float64
    return jax.dtypes.canonicalize_dtype(dt)


def _as_arrays(data, what="data"):
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
            arr = _widen_integers(leaf, arr, what)
        if arr.size == 0:
            raise ValueError(f"{what} has an empty leaf of shape {arr.shape}: nothing to fit")
        out.append(arr)
    return jax.tree_util.tree_unflatten(treedef, out)


def _widen_integers(leaf, arr, what):
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


def _nonfinite_report(data, mask=None):
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


def _check_mask(mask, data, batch: int | None):
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


def _tolerances(opt, dtype, tol, ftol):
    gtol = opt.default_gtol(dtype) if tol is None else float(tol)
    if ftol is None:
        ftol = 4 * float(jnp.finfo(dtype).eps)
    if not (gtol > 0 and ftol >= 0):
        raise ValueError(f"tolerances must be positive, got tol={tol}, ftol={ftol}")
    return gtol, float(ftol)


def _measure(state):
    gs = jnp.max(jnp.abs(state.grad))
    fs = jnp.maximum(1.0, jnp.abs(state.f))
    finite = jnp.isfinite(state.f) & jnp.all(jnp.isfinite(state.grad))
    return gs, fs, finite


def _record(buf, i, state, gs):
    # Iterates past the buffer are dropped: the trace is the first trace_len ones.
    if buf is None:
        return None
    row = jnp.stack([state.f, gs]).astype(buf.dtype)
    return buf.at[i].set(row, mode="drop")


def loop_start(opt, objective, z0, data, gtol: float, trace_len: int = 0):
    """The driver's initial carry (state, iterations, status, trace buffer)."""
    state0 = opt.init(objective, z0, data)
    gs, fs, finite = _measure(state0)
    status0 = jnp.where(
        ~finite, Status.NONFINITE, jnp.where(gs <= gtol * fs, Status.CONVERGED, RUNNING)
    ).astype(jnp.int32)
    buf0 = None
    if trace_len > 0:
        buf0 = _record(jnp.full((trace_len, 2), jnp.nan, z0.dtype), 0, state0, gs)
    return state0, jnp.zeros((), jnp.int32), status0, buf0


def loop_body(opt, objective, carry, data, max_iter: int, gtol: float, ftol: float):
    """One iteration of the driver: a step, then the stopping rule."""
    state, it, status, buf = carry
    new = opt.step(objective, state, data, active=status == RUNNING)
    it = it + 1
    gs, fs, finite = _measure(new)
    df = jnp.abs(state.f - new.f)
    moved = jnp.any(new.z != state.z)
    floor = (df <= ftol * fs) & (gs <= FLOOR * gtol * fs)
    conv = (gs <= gtol * fs) | (moved & floor)
    stuck = new.ls_failed | ~moved
    # A line search comparing objective values rounded to eps cannot resolve a
    # gradient below about sqrt(eps): stalling there is the dtype's limit, not a
    # rough objective.
    noise = float(np.sqrt(jnp.finfo(new.f.dtype).eps))
    status = jnp.where(
        ~finite,
        Status.NONFINITE,
        jnp.where(
            conv,
            Status.CONVERGED,
            jnp.where(
                stuck,
                jnp.where(gs <= FLOOR * gtol * fs, Status.CONVERGED,
                          jnp.where(gs <= noise * fs, Status.PRECISION_LIMIT, Status.LINESEARCH_FAILED)),
                jnp.where(it >= max_iter, Status.MAX_ITER, RUNNING),
            ),
        ),
    ).astype(jnp.int32)
    # A non-finite step is not taken: the lane keeps its last finite point.
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, state)
    return state, it, status, _record(buf, it, state, gs)


def minimize(opt, objective, z0, data, max_iter: int, gtol: float, ftol: float, trace_len: int = 0):
    """The driver: one ``lax.while_loop`` of ``opt.step`` with the stopping rule.

    Args:
        opt: an optimizer following the protocol in ``jaxmle.optimizers``.
        objective: ``objective(z, data)``, the scalar to minimise.
        z0: start (flat unconstrained vector).

        trace_len: if > 0, also record (objective, max|gradient|) at the start and
            after each of the first ``trace_len - 1`` iterations in a fixed-size
            buffer (NaN beyond the last iteration); no host callbacks.

    Returns:
        (final OptState, iterations, status code, trace or None). Under vmap,
        finished lanes are frozen by while_loop's batching rule at their own state.
    """
    carry = loop_start(opt, objective, z0, data, gtol, trace_len)
    return jax.lax.while_loop(
        lambda c: c[2] == RUNNING,
        lambda c: loop_body(opt, objective, c, data, max_iter, gtol, ftol),
        carry,
    )


def ready_data(model: Model, data, mask):
    """The data the log-density sees: masked entries replaced, then ``model.prepare``."""
    return model.prepared(substitute_masked(data, mask))


def objective_parts(model: Model, z_dtype, fixed, data, mask, n_static, ready: bool = False):
    """(data made ready, n_obs, scale, neg_total) for one dataset.

    ``neg_total(z)`` is minus the log-likelihood (plus log-prior); optimizers see
    ``neg_total / scale`` with scale the number of observations. With ``ready`` the
    data has been through ``ready_data`` already.
    """
    spec = model.spec
    if not ready:
        data = ready_data(model, data, mask)
    if mask is not None:
        n_obs = jnp.sum(mask).astype(z_dtype)
    else:
        n_obs = jnp.asarray(np.nan if n_static is None else n_static, z_dtype)
    scale = jnp.where(jnp.isfinite(n_obs), jnp.maximum(n_obs, 1.0), 1.0)

    def neg_total(z):
        return -model.logpost(spec.to_params(z, fixed), data, mask)

    return data, n_obs, scale, neg_total


class _Stages:
    """One fit split into start / iterate / finish, each a per-dataset function.

    ``solve`` chains them in one while_loop (the plain path); ``fit_batch``'s
    straggler compaction calls them separately on shrinking sets of datasets.
    Every function takes ``(..., z0, fixed, data, mask)`` for one dataset.
    """

    def __init__(self, model: Model, opt, max_iter, gtol, ftol, n_static, trace_len=0, ready=False):
        self.model, self.opt = model, opt
        self.max_iter, self.gtol, self.ftol = max_iter, gtol, ftol
        self.n_static, self.trace_len, self.ready = n_static, trace_len, ready

    def parts(self, z0, fixed, data, mask):
        data, n_obs, scale, neg_total = objective_parts(
            self.model, z0.dtype, fixed, data, mask, self.n_static, self.ready)

        def objective(z, _):
            return neg_total(z) / scale

        return objective, _opt.FitData(fixed, data, mask), n_obs, scale, neg_total

    def start(self, z0, fixed, data, mask):
        objective, bundle, *_ = self.parts(z0, fixed, data, mask)
        return loop_start(self.opt, objective, z0, bundle, self.gtol, self.trace_len)

    def body(self, carry, z0, fixed, data, mask):
        objective, bundle, *_ = self.parts(z0, fixed, data, mask)
        return loop_body(self.opt, objective, carry, bundle, self.max_iter, self.gtol, self.ftol)

    def solve(self, z0, fixed, data, mask):
        objective, bundle, *_ = self.parts(z0, fixed, data, mask)
        carry = minimize(self.opt, objective, z0, bundle, self.max_iter, self.gtol, self.ftol, self.trace_len)
        return self.finish(carry, z0, fixed, data, mask)

    def finish(self, carry, z0, fixed, data, mask):
        """Estimates, covariance and the final status checks from the loop's carry."""
        model, opt, spec = self.model, self.opt, self.model.spec
        objective, bundle, n_obs, scale, neg_total = self.parts(z0, fixed, data, mask)
        state, n_iter, status, buf = carry
        dtype = z0.dtype
        z = state.z
        params = spec.to_params(z, fixed)
        # Every optimizer's state.f is the objective at state.z: no extra pass needed.
        logpost = -state.f * scale
        loglik = logpost if model.log_prior is None else logpost - model.log_prior(params)
        H = opt.hessian(state)
        H = jax.hessian(neg_total)(z) if H is None else H * scale
        H = 0.5 * (H + H.T)
        J = jax.jacfwd(lambda zz: spec.natural_flat(zz, fixed))(z)
        eig = jnp.linalg.eigvalsh(H)
        eps = jnp.finfo(dtype).eps
        pd = (eig[0] > 100 * eps * eig[-1]) & jnp.all(jnp.isfinite(eig))
        L = jnp.linalg.cholesky(jnp.where(pd, H, jnp.eye(H.shape[0], dtype=dtype)))
        # cov_natural = J H^-1 J' computed as (L^-1 J')' (L^-1 J').
        A = jax.scipy.linalg.solve_triangular(L, J.T, lower=True)
        cov = jnp.where(pd, A.T @ A, jnp.nan)
        se = jnp.sqrt(jnp.diagonal(cov))
        edge = spec.edge_distance_flat(z, fixed)
        at_edge = jnp.any((edge <= 0) | (edge <= 1e-3 * se))
        # Ray probe: an interior optimum rises again past itself along the path the
        # fit travelled; a likelihood whose supremum lies at infinity (complete
        # separation, a mixture component collapsing) keeps improving along it.
        # Probing near (0.1x) and far (1x) keeps a far point in another basin of a
        # multimodal likelihood from passing for a runaway.
        slack = 8 * eps * jnp.maximum(jnp.abs(state.f), jnp.finfo(dtype).tiny)
        runaway = (objective(z + 0.1 * (z - z0), bundle) < state.f - slack) & (
            objective(z + (z - z0), bundle) < state.f - slack
        )
        status = jnp.where(
            status == Status.CONVERGED,
            jnp.where(at_edge | runaway, Status.AT_BOUNDARY,
                      jnp.where(pd, Status.CONVERGED, Status.HESSIAN_NOT_PD)),
            status,
        ).astype(jnp.int32)
        return {
            "params": params,
            "z": z,
            "fixed": list(fixed),
            "loglik": loglik,
            "logpost": logpost,
            "status": status,
            "n_iter": n_iter,
            "grad_norm": jnp.max(jnp.abs(state.grad)) * scale,
            "n_obs": n_obs,
            "cov": cov,
            "cond": jnp.where(pd, eig[-1] / eig[0], jnp.inf),
            "evals": state.evals,
            "trace": None if buf is None else {"logpost": -buf[:, 0] * scale, "grad_norm": buf[:, 1] * scale},
        }


class _BatchFitter:
    """A batched fit in three compiled stages, optionally regrouping stragglers.

    ``start`` and ``finish`` run on the whole batch; ``advance`` iterates. Under
    vmap a while_loop runs until its slowest lane is done and every step costs the
    full batch. With ``compact`` the batch iterates until at most an eighth of its
    lanes are still running; those are gathered into a bucket of the next power of
    two (at least ``min_bucket``; few sizes, so few compilations) which continues,
    and so on. Each dataset runs exactly the steps it would run in the full batch,
    and both modes share the start and finish programs, so results are identical.
    """

    shrink = 8

    def __init__(self, stages: _Stages, masked: bool, compact: bool, min_bucket: int = 64):
        ax = (0, 0, 0, 0 if masked else None)
        self.compact, self.min_bucket = compact, min_bucket
        # The data is made ready (masked entries replaced, model.prepare applied)
        # once; the stages (built with ready=True) take it as it is.
        model = stages.model
        self.ready = jax.jit(jax.vmap(lambda d, m: ready_data(model, d, m), in_axes=ax[2:]))
        self.start = jax.jit(jax.vmap(stages.start, in_axes=ax))
        self.finish = jax.jit(jax.vmap(stages.finish, in_axes=(0,) + ax))
        body = jax.vmap(stages.body, in_axes=(0,) + ax)

        def advance(carry, z0, fixed, data, mask, threshold):
            def step(c):
                new = body(c, z0, fixed, data, mask)
                run = c[2] == RUNNING
                return jax.tree_util.tree_map(
                    lambda a, b: jnp.where(run.reshape(run.shape + (1,) * (a.ndim - 1)), a, b), new, c)

            return jax.lax.while_loop(lambda c: jnp.sum(c[2] == RUNNING) > threshold, step, carry)

        self.advance = jax.jit(advance)

    def _size(self, n):
        return max(self.min_bucket, 1 << (int(n) - 1).bit_length())

    def __call__(self, z0, fixed, data, mask):
        args = (z0, fixed, self.ready(data, mask), mask)
        carry = self.start(*args)
        sub, sub_args, lanes = carry, args, None

        def take(tree, idx):
            return jax.tree_util.tree_map(lambda a: a[idx], tree)

        while True:
            size = sub_args[0].shape[0]
            threshold = size // self.shrink if self.compact and size >= self.shrink * self.min_bucket else 0
            sub = self.advance(sub, *sub_args, threshold)
            running = np.asarray(sub[2]) == RUNNING
            if lanes is None:
                carry, live = sub, np.flatnonzero(running)
            else:
                n = lanes.size
                carry = jax.tree_util.tree_map(lambda a, b: a.at[lanes].set(b[:n]), carry, sub)
                live = lanes[running[:n]]
            if live.size == 0:
                break
            # Pad the bucket by repeating a live dataset; only the first copies count.
            idx = np.concatenate([live, np.full(self._size(live.size) - live.size, live[-1])])
            sub, sub_args, lanes = take(carry, idx), take(args, idx), live
        return self.finish(carry, *args)


def _compiled(model: Model, opt, max_iter, gtol, ftol, n_static, masked: bool, batched: bool, trace_len=0,
              compact: bool = False):
    key = (opt, max_iter, gtol, ftol, n_static, masked, batched, trace_len, compact)
    fn = model._compiled.get(key)
    if fn is None:
        stages = _Stages(model, opt, max_iter, gtol, ftol, n_static, trace_len, ready=batched)
        if batched:
            fn = _BatchFitter(stages, masked, compact)
        else:
            fn = jax.jit(stages.solve)
        model._compiled[key] = fn
    return fn


def _prepare(model, data, method, max_iter, tol, ftol, nan_policy):
    if not isinstance(model, Model):
        raise TypeError(f"the first argument must be a jm.Model, got {type(model).__name__}")
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {_NAN_POLICIES}, got {nan_policy!r}")
    data = _as_arrays(data)
    dtype = _float_dtype(data)
    opt = _opt.resolve(method, model.n_free, model)
    if max_iter is None:
        max_iter = opt.default_max_iter
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    gtol, ftol = _tolerances(opt, dtype, tol, ftol)
    return data, dtype, opt, int(max_iter), gtol, ftol


def fit(
    model: Model,
    data: Any,
    method: str | _opt.Optimizer = "auto",
    init: dict | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    ftol: float | None = None,
    mask=None,
    warn: bool = True,
    n_starts: int = 1,
    key=None,
    trace: int = 0,
) -> FitResult:
    """Maximise the model's log-likelihood on one dataset.

    Args:
        model: a ``jm.Model``.
        data: an array or any pytree of arrays, passed to the log-density as is.
        method: "auto" (Newton up to 200 free parameters, L-BFGS above), "newton",
            "bfgs", "lbfgs", "adam", "gd", or an optimizer instance from
            ``jm.optimizers`` (e.g. ``Adam(learning_rate=0.01)``).
        init: natural-scale start values overriding (some of) the spec's.
        max_iter: iteration cap (method-dependent default).
        tol: gradient tolerance of the stopping rule (dtype-aware default).
        ftol: relative objective-change tolerance (default 4 ulps).
        mask: optional boolean vector, True for observations to use.
        warn: warn (``jm.ConvergenceWarning``) when the fit did not converge.
        n_starts: with more than 1, run that many starts as one batch (the first
            from the spec/``init``, the others from the model's ``init_fn`` or
            jittered start values) and keep the best; ``res.starts`` reports how
            many converged and how many reached the best optimum.
        key: ``jax.random.key`` for the random starts (default key 0).
        trace: record the log-likelihood and gradient norm of the first ``trace``
            iterates in ``res.trace`` (see ``jm.bench``); 0 turns it off.

    Returns:
        A ``FitResult``.

    Example:
        >>> res = jm.fit(model, jnp.array([240., 255., 261., 248., 271.]))
        >>> res.params["mu"]   # 255.0
    """
    if int(n_starts) > 1:
        return _multistart(model, data, method, init, max_iter, tol, ftol, mask, warn, int(n_starts), key)
    data, dtype, opt, max_iter, gtol, ftol = _prepare(model, data, method, max_iter, tol, ftol, "raise")
    if model.validate is not None:
        model.validate(data, False)
    mask = _check_mask(mask, data, None)
    bad = _nonfinite_report(data, mask)
    if bad:
        raise ValueError(
            "data contain NaN or inf: " + "; ".join(bad)
            + ". Drop those observations, or pass mask= with False at them"
        )
    n_terms = model.check_output(data, dtype, mask is not None)
    n_static = n_terms if n_terms is not None else n_data(data)
    leaves = model.spec.natural_leaves(init)
    z0 = model.spec.to_z(leaves, dtype)
    fixed = model.spec.fixed_values(leaves, dtype)
    fn = _compiled(model, opt, max_iter, gtol, ftol, n_static, mask is not None, False, int(trace))
    out = fn(z0, fixed, data, mask)
    res = FitResult._from_outputs(model, opt.name, out)._attach(data, mask, n_terms)
    status = int(res.status)
    if status == Status.NONFINITE and int(res.n_iter) == 0:
        start = {n: np.asarray(v).tolist() for n, v in zip(model.spec.leaf_names, leaves)}
        raise ValueError(
            f"the log-likelihood (or its gradient) is not finite at the start values {start}; "
            "choose start values where the data are possible (init= or the spec)"
        )
    if warn and status != Status.CONVERGED:
        warnings.warn(f"fit status {Status(status).name}: {message(status)}", ConvergenceWarning, stacklevel=2)
    return res


def _multistart(model, data, method, init, max_iter, tol, ftol, mask, warn, n_starts, key):
    """Run n_starts fits of one dataset as a batch and keep the best (see ``fit``)."""
    data = _as_arrays(data)
    if model.validate is not None:
        model.validate(data, False)
    key = jax.random.key(0) if key is None else key
    dtype = _float_dtype(data)
    base = model.spec.natural_leaves(init)
    keys = jax.random.split(key, n_starts - 1)
    if model.init_fn is not None:
        drawn = jax.vmap(model.init_fn, in_axes=(0, None))(keys, data)
        drawn = model.spec.treedef.flatten_up_to(drawn)
    else:
        z0 = model.spec.to_z(base, dtype)
        fixed = model.spec.fixed_values(base, dtype)
        zs = z0 + jax.random.normal(keys[0], (n_starts - 1,) + z0.shape, dtype)
        drawn = jax.vmap(lambda z: model.spec.to_leaves(z, fixed))(zs)
    starts = {}
    for name, b, d in zip(model.spec.leaf_names, base, drawn):
        starts[name] = np.concatenate([np.asarray(b)[None], np.asarray(d)], axis=0)
    init_tree = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(model.spec.unflatten(base)), [starts[n] for n in model.spec.leaf_names]
    )
    reps = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n_starts,) + a.shape), data)
    rmask = None if mask is None else jnp.broadcast_to(jnp.asarray(mask), (n_starts,) + jnp.shape(mask))
    batch = fit_batch(model, reps, method=method, init=init_tree, max_iter=max_iter, tol=tol, ftol=ftol, mask=rmask)
    status = np.asarray(batch.status)
    lp = np.where(np.isfinite(np.asarray(batch.logpost)), np.asarray(batch.logpost), -np.inf)
    usable = np.isin(status, [Status.CONVERGED, Status.AT_BOUNDARY, Status.HESSIAN_NOT_PD, Status.PRECISION_LIMIT])
    pool = np.where(usable, lp, -np.inf) if usable.any() else lp
    best = int(np.argmax(pool))
    at_best = usable & (np.abs(lp - lp[best]) <= 1e-6 * max(1.0, abs(lp[best])))
    res = batch[best]._attach(data, None if mask is None else jnp.asarray(mask), batch._n_terms)
    res.starts = {"n": n_starts, "converged": int((status == Status.CONVERGED).sum()),
                  "at_best": int(at_best.sum()), "best": best}
    code = int(res.status)
    if warn and code != Status.CONVERGED:
        warnings.warn(f"fit status {Status(code).name}: {message(code)}", ConvergenceWarning, stacklevel=3)
    return res


def _batch_size(data) -> int:
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


def fit_batch(
    model: Model,
    data: Any,
    method: str | _opt.Optimizer = "auto",
    init: dict | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    ftol: float | None = None,
    mask=None,
    nan_policy: str = "raise",
    trace: int = 0,
    chunk_size: int | None = None,
    progress: bool | None = None,
    mesh=None,
    compact: bool | None = None,
) -> BatchFitResult:
    """Fit the same model to B datasets in one compiled, vectorised call.

    Every data leaf carries a leading batch axis B. Each fit runs the same loop as
    ``fit`` under ``jax.vmap``; a finished fit is frozen at its own optimum while the
    others continue, and each gets its own ``status``. Nothing raises for one bad
    dataset: it gets a status code and the others are untouched.

    Args:
        model: a ``jm.Model``.
        data: pytree of arrays, each with leading axis B.
        method, max_iter, tol, ftol: as for ``fit``.
        init: start values; a leaf of shape ``(B,) + shape`` gives one per dataset.
        mask: boolean ``(B, n)``, True for real observations (see ``jm.pad``).
        nan_policy: "raise" (default) rejects NaN/inf at unmasked positions;
            "status" lets those datasets end with ``Status.NONFINITE``.
        trace: as for ``fit``.
        chunk_size: fit at most this many datasets per compiled call (bounded
            memory); every chunk has the same shape, so there is one compilation.
        progress: show a progress bar over chunks (default: when there are several
            chunks and stderr is a terminal).
        mesh: a ``jax.sharding.Mesh`` whose first axis shards the batch; default all
            local devices when there is more than one. B is padded to a multiple of
            the device count and results are identical to one device.
        compact: regroup the datasets still iterating into smaller batches as the
            others finish, so a few slow fits do not make every step cost the whole
            batch (see README, "Stragglers"); each dataset runs the same steps and
            gets the same result. Each bucket size compiles once (cached like the
            rest). Default: on for batches of at least 1024 datasets on one
            device; off when sharding over several devices.

    Returns:
        A ``BatchFitResult`` whose fields have a leading axis B.

    Example:
        >>> batch = jm.fit_batch(model, xs)        # xs.shape == (10_000, 100)
        >>> batch.params["mu"].shape               # (10000,)
    """
    data, dtype, opt, max_iter, gtol, ftol = _prepare(model, data, method, max_iter, tol, ftol, nan_policy)
    if model.validate is not None:
        model.validate(data, True)
    B = _batch_size(data)
    mask = _check_mask(mask, data, B)
    if nan_policy == "raise":
        bad = _nonfinite_report(data, mask)
        if bad:
            raise ValueError(
                "data contain NaN or inf: " + "; ".join(bad)
                + ". Mask them (mask=), drop those datasets, or pass nan_policy='status' "
                "to give those datasets Status.NONFINITE"
            )
    one = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), data)
    n_terms = model.check_output(one, dtype, mask is not None)
    n_static = n_terms if n_terms is not None else n_data(one)
    leaves = model.spec.natural_leaves(init, batch=B)
    z0 = jax.vmap(lambda *ls: model.spec.to_z(ls, dtype))(*leaves)
    fixed = model.spec.fixed_values(leaves, dtype)
    mesh = _default_mesh(mesh)
    if compact is None:
        per_call = B if chunk_size is None else min(int(chunk_size), B)
        compact = mesh is None and per_call >= 1024
    fn = _compiled(model, opt, max_iter, gtol, ftol, n_static, mask is not None, True, int(trace),
                   bool(compact) and mesh is None)
    out = _run_chunks(fn, (z0, fixed, data, mask), B, chunk_size, progress, mesh)
    return BatchFitResult._from_outputs(model, opt.name, out)._attach(data, mask, n_terms)


def _default_mesh(mesh):
    if mesh is not None:
        return mesh
    devices = jax.local_devices()
    if len(devices) == 1:
        return None
    return jax.sharding.Mesh(np.array(devices), ("batch",))


def _run_chunks(fn, args, B: int, chunk_size, progress, mesh):
    """Call the compiled batch fitter over equal-shaped chunks, sharded over devices.

    Each chunk (and a single-chunk batch too, when sharded) is padded to a multiple
    of the device count by repeating the last dataset; padded lanes are dropped.
    """
    mesh = _default_mesh(mesh)
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
        from tqdm.auto import tqdm

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
