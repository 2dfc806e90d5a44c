"""Fits of one dataset too big for the device: exact chunked fits and stochastic fits.

``jm.fit(model, data, chunk_size=N)`` streams the rows through the device N at a
time (``jaxmle._chunks``): every objective, gradient and Hessian is a sum over
chunks, each a compiled per-chunk program cached on the model, so peak memory is
set by N, not by n. The optimizer loop runs on the host (``jaxmle._stream_solve``),
one pass over the data per evaluation: Newton's trust region (up to
``AUTO_NEWTON_MAX_PARAMS`` free parameters, as ``method="auto"`` chooses in
memory) or L-BFGS, every step judged by the in-memory driver's own stopping rule,
so statuses and tolerances mean the same. The standard errors come from the
chunk-accumulated information, inverted as ``jaxmle._stats`` does, and the
boundary and runaway checks of ``jaxmle._solve`` are repeated with passes.

With ``batch_size=`` the fit is stochastic (``jaxmle._stochastic``); its end
point is judged on the full data in the same way.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import _solve, _stats
from . import optimizers as _opt
from ._compile import jit
from ._chunks import RowSource, Streamed
from ._data import float_dtype
from ._model import Model
from ._result import FitResult
from ._solve import tolerances
from ._status import RUNNING, ConvergenceWarning, Status, message
from ._stochastic import DEFAULT_CHUNK, default_chunk, run_stochastic
from ._stream_solve import GradState, newton_state, rule, run


# -- checking the call -------------------------------------------------------------

def _positive_int(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _exact_method(method, model) -> _opt.Optimizer:
    """Newton or L-BFGS for a chunked fit (``"auto"``: Newton up to 200 free parameters)."""
    if method == "auto":
        method = "newton" if model.n_free <= _opt.AUTO_NEWTON_MAX_PARAMS else "lbfgs"
    opt = _opt.resolve(method, model.n_free, model)
    if isinstance(opt, (_opt.Newton, _opt.LBFGS)):
        return opt
    if isinstance(opt, (_opt.Adam, _opt.GradientAscent)):
        raise ValueError(f"method={opt.name!r} on chunks is a stochastic fit: pass batch_size= (and epochs= or "
                         "max_steps=), or use method='newton' or 'lbfgs' for an exact chunked fit")
    raise ValueError(f"method={opt.name!r} is not available for chunked fits; use 'newton' or 'lbfgs' "
                     "(or 'auto')")


def _setup(model, data, chunk_size, mask, init, keep_on_device):
    """The row source, dtype, start point and fixed values of a streamed fit."""
    if not isinstance(model, Model):
        raise TypeError(f"the first argument must be a jm.Model, got {type(model).__name__}")
    source = RowSource(data, chunk_size, mask, keep_on_device)
    if source.n is not None and source.n < source.chunk_size:
        source = RowSource(data, source.n, mask, keep_on_device)
    first = source.first_chunk()
    dtype = float_dtype(first.data)
    if model.validate is not None:
        model.validate(first.data, False)
    shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), first.data)
    if model.check_output(shapes, dtype, False) is None:
        raise ValueError("a chunked or stochastic fit needs per-observation log-likelihood terms, but the "
                         "log-density returns a scalar: return the vector of terms instead of their sum")
    # A model's data-driven start values (ready models: GLM-style) come from the first chunk.
    start = model.start_leaves(first.data, first.mask, False) if hasattr(model, "start_leaves") else None
    leaves = model.spec.natural_leaves(init) if start is None else model.spec.natural_leaves(init, start=start)
    z0 = model.spec.to_z(leaves, dtype)
    return source, dtype, z0, model.spec.fixed_values(leaves, dtype), leaves


# -- the report: covariance, boundary checks, final status ------------------------------

def _dense(model) -> bool:
    """Whether a dense k x k Hessian is formed for the standard errors.

    Follows the in-memory fit's limit (``jaxmle._solve.DENSE_HESSIAN_MAX_PARAMS``)
    where this version of jaxmle has one; above it ``cov`` is None.
    """
    limit = getattr(_solve, "DENSE_HESSIAN_MAX_PARAMS", None)
    return limit is None or model.n_free <= limit


def _report_core(model):
    def build():
        spec = model.spec

        def core(z, fixed, H):
            J = jax.jacfwd(lambda zz: spec.natural_flat(zz, fixed))(z)
            Hinv, pd, cond = _stats.inverse_information(H)
            cov = J @ Hinv @ J.T
            edge = spec.edge_distance_flat(z, fixed)
            at_edge = (edge <= 0) | (edge <= 1e-3 * jnp.sqrt(jnp.diagonal(cov)))
            return spec.to_params(z, fixed), J, Hinv, pd, cond, cov, at_edge

        return jit(core)

    return model.compiled(("stream-report",), build)


def _runaways(ev: Streamed, z, f, z0, Hinv):
    """``jaxmle._solve``'s runaway probes (``_path_probe``, ``runaway_probes``) with every
    probe evaluated in passes over the chunks.

    The same three probes (along the path travelled; along each coordinate that
    looks unidentified; along the flattest direction), the same distances and
    slack, so a streamed fit flags exactly what the in-memory fit flags.
    """
    dtype = z.dtype
    eps = float(jnp.finfo(dtype).eps)
    zn, z0n, Hn = (np.asarray(a, np.float64) for a in (z, z0, Hinv))
    slack = 8 * eps * max(abs(f), float(jnp.finfo(dtype).tiny))
    travel = zn - z0n
    moved = travel != 0
    probes = (0.1, 1.0)

    def values(points):
        return np.asarray(ev.values(jnp.asarray(np.stack(points), dtype)))

    along_path = bool(np.all(values([zn + t * travel for t in probes]) < f - slack)) & moved
    se_z = np.sqrt(np.diagonal(Hn) / ev.scale)
    suspect = ~(se_z <= 10.0 * (1.0 + np.abs(zn))) & moved
    alone = np.zeros_like(moved)
    along_flat = np.zeros_like(moved)
    if suspect.any():
        idx = np.flatnonzero(suspect)
        steps = np.sign(travel) * np.maximum(1.0, np.abs(travel))
        eye = np.eye(zn.shape[0])
        vals = values([zn + t * steps[j] * eye[j] for j in idx for t in probes]).reshape(len(idx), len(probes))
        alone[idx] = np.all(vals <= f + slack, axis=1)
        if np.all(np.isfinite(Hn)):
            v = np.abs(travel) + eps
            for _ in range(30):
                v = Hn @ (v / max(np.linalg.norm(v), np.finfo(np.float64).tiny))
            v = v / max(np.linalg.norm(v), np.finfo(np.float64).tiny)
            v = -v if np.dot(v, travel) < 0 else v
            step = v * np.linalg.norm(travel)
            falls = bool(np.all(values([zn + t * step for t in probes]) < f - slack))
            along_flat = falls & (np.abs(v) >= 0.01 * np.max(np.abs(v))) & moved
    return along_path | alone | along_flat


def _finish(model, ev: Streamed, carry, z0, fixed, H) -> dict:
    """The result fields (``jaxmle._result.FIELDS``) from the final carry and information H (mean scale)."""
    st, scale = carry.state, ev.scale
    z = st.z
    f = float(st.f)
    status = int(carry.status)
    if H is None:
        # Too many parameters for a dense Hessian (see ``_dense``): no covariance, and the
        # checks of ``jaxmle._solve._first_order_checks``: an edge, or a rise along the path.
        spec = model.spec
        params, cov, cond = spec.to_params(z, fixed), None, jnp.asarray(np.nan, z.dtype)
        boundary = np.asarray(spec.edge_distance_flat(z, fixed)) <= 0
        if status == Status.CONVERGED:
            eps, travel = float(jnp.finfo(z.dtype).eps), z - z0
            slack = 8 * eps * max(abs(f), float(jnp.finfo(z.dtype).tiny))
            rises = bool(np.all(np.asarray(ev.values(jnp.stack([z + t * travel for t in (0.1, 1.0)]))) < f - slack))
            moved = np.asarray(spec.natural_flat(z, fixed) != spec.natural_flat(z0, fixed))
            boundary = boundary | (rises & moved)
            status = Status.AT_BOUNDARY if boundary.any() else status
    else:
        params, J, Hinv, pd, cond, cov, at_edge = _report_core(model)(z, fixed, H * scale)
        boundary = np.asarray(at_edge)
        if status == Status.CONVERGED:
            # The probes cost passes over the data: only a converged fit can change status by them.
            runaway = _runaways(ev, z, f, z0, Hinv)
            boundary = boundary | ((np.abs(np.asarray(J)) @ runaway.astype(np.float64)) > 0)
            status = Status.AT_BOUNDARY if boundary.any() else (
                Status.CONVERGED if bool(pd) else Status.HESSIAN_NOT_PD)
    logpost = -st.f * scale
    loglik = logpost if model.log_prior is None else logpost - model.log_prior(params)
    return {
        "params": params, "z": z, "fixed": list(fixed), "loglik": jnp.asarray(loglik, z.dtype),
        "logpost": jnp.asarray(logpost, z.dtype), "status": jnp.asarray(status, jnp.int32),
        "n_iter": jnp.asarray(carry.n_iter, jnp.int32), "grad_norm": jnp.max(jnp.abs(st.grad)) * scale,
        "n_obs": jnp.asarray(ev.source.n_obs, z.dtype), "cov": cov, "cond": cond,
        "boundary": jnp.asarray(boundary), "evals": jnp.asarray(carry.evals, jnp.int32), "trace": None,
    }


def _warn(res, advice: str | None):
    code = int(res.status)
    if code == Status.CONVERGED:
        return
    if code == Status.AT_BOUNDARY:
        text = (f"fit status AT_BOUNDARY: {res.boundary_params} at a constraint edge or running off "
                f"to infinity. {message(code)}")
    else:
        text = f"fit status {Status(code).name}: " + (advice or message(code))
    warnings.warn(text, ConvergenceWarning, stacklevel=5)   # _warn < _exact|_stochastic < fit_streamed < fit


# -- the entry point ----------------------------------------------------------------------

def fit_streamed(model, data, *, method, init, max_iter, tol, ftol, mask, warn, key, chunk_size,
                 batch_size, epochs, max_steps, progress) -> FitResult:
    """Fit one dataset streamed in chunks (exact) or in mini-batches (stochastic).

    Called by ``jm.fit`` when ``chunk_size=`` or ``batch_size=`` is given; see its
    docstring and README, "Data bigger than memory".
    """
    chunk_size = _positive_int(chunk_size, "chunk_size")
    batch_size = _positive_int(batch_size, "batch_size")
    epochs = _positive_int(epochs, "epochs")
    max_steps = _positive_int(max_steps, "max_steps")
    if max_iter is not None and int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if batch_size is None:
        if epochs is not None or max_steps is not None:
            raise ValueError("epochs= and max_steps= belong to a stochastic fit: pass batch_size= too "
                             "(e.g. method='adam', batch_size=4096, epochs=5)")
        return _exact(model, data, method, init, max_iter, tol, ftol, mask, warn, chunk_size, progress)
    if max_iter is not None and max_steps is None:
        max_steps = int(max_iter)          # a mini-batch fit's iterations are its steps
    return _stochastic(model, data, method, init, tol, ftol, mask, warn, key, chunk_size, batch_size,
                       epochs, max_steps, progress)


def _exact(model, data, method, init, max_iter, tol, ftol, mask, warn, chunk_size, progress):
    opt = _exact_method(method, model)
    source, dtype, z0, fixed, leaves = _setup(model, data, chunk_size, mask, init, True)
    max_iter = opt.default_max_iter if max_iter is None else int(max_iter)
    gtol, ftol = tolerances(opt, dtype, tol, ftol)
    start, body = rule(model, opt, max_iter, gtol, ftol)
    ev = Streamed(model, source, fixed, progress, desc=f"fit ({opt.name}, chunked)")
    try:
        newton = isinstance(opt, _opt.Newton)
        carry = run(ev, opt, start, body, z0)
        if int(carry.status) == Status.NONFINITE and int(carry.n_iter) == 0:
            start_values = {n: np.asarray(v).tolist() for n, v in zip(model.spec.leaf_names, leaves)}
            raise ValueError(f"the log-likelihood (or its gradient) is not finite at the start values "
                             f"{start_values}; choose start values where the data are possible (init= or the spec)")
        H = carry.state.hess if newton else (ev.value_grad_hessian(carry.state.z)[2] if _dense(model) else None)
        out = _finish(model, ev, carry, z0, fixed, H)
    finally:
        ev.close()
    res = FitResult(model, opt.name, out, n_terms=source.n)
    if warn:
        _warn(res, None)
    return res


def _stochastic_method(method) -> _opt.Optimizer:
    if method in ("auto", "adam"):
        return _opt.Adam()
    if method in ("sgd", "gd"):
        return _opt.GradientAscent()     # the mini-batch default rule (jaxmle._stochastic)
    if isinstance(method, (_opt.Adam, _opt.GradientAscent)):
        return method
    name = method if isinstance(method, str) else getattr(method, "name", type(method).__name__)
    raise ValueError(
        f"method={name!r} cannot use batch_size=: mini-batch fits need method='adam' or 'sgd' (or a "
        "jm.optimizers.Adam(learning_rate=...) instance). For an exact fit of data bigger than memory, "
        f"drop batch_size and pass chunk_size= instead (jm.fit(model, data, method={name!r}, chunk_size=65536))"
    )


def _stochastic(model, data, method, init, tol, ftol, mask, warn, key, chunk_size, batch_size, epochs,
                max_steps, progress):
    opt = _stochastic_method(method)
    if chunk_size is None and callable(data):
        chunk_size = default_chunk(batch_size)
    source, dtype, z0, fixed, _ = _setup(model, data, chunk_size or default_chunk(batch_size, data), mask,
                                         init, True)
    gtol, ftol = tolerances(opt, dtype, tol, ftol)
    key = jax.random.key(0) if key is None else key
    z, steps = run_stochastic(model, source, fixed, z0, opt, batch_size, epochs, max_steps, key, progress)
    ev = Streamed(model, source, fixed, False)
    # Judged on the full data: by the Newton decrement where the information is formed
    # (scale-invariant, as exact Newton fits are), else by max|g| as in-memory Adam is.
    if _dense(model):
        f, g, H = ev.value_grad_hessian(z)
        st = newton_state(z, f, g, H, jnp.ones((), z.dtype), jnp.ones_like(z))
        start, _ = rule(model, _opt.Newton(), 1, gtol, ftol)
    else:
        H, st = None, GradState(z, *ev.value_grad(z))
        start, _ = rule(model, opt, 1, gtol, ftol)
    carry = start(st, _opt.info(steps + 1, steps + 1, int(H is not None)))
    code = int(carry.status)
    carry = carry._replace(n_iter=jnp.asarray(steps, jnp.int32),
                           status=jnp.asarray(Status.MAX_ITER if code == RUNNING else code, jnp.int32))
    out = _finish(model, ev, carry, z0, fixed, H)
    res = FitResult(model, f"{opt.name} (mini-batch)", out, n_terms=source.n)
    if warn:
        _warn(res, _polish_advice(st, ev, gtol, min(source.chunk_size, DEFAULT_CHUNK)))
    return res


def _polish_advice(st, ev, gtol, chunk_size) -> str:
    """Why a stochastic fit is not converged, how far it is from the MLE, and how to finish it."""
    g = np.asarray(st.grad, np.float64)
    where = f"max |gradient| {np.max(np.abs(g)):.3g}"
    if hasattr(st, "hess"):
        try:
            m = float(np.sqrt(max(np.dot(g, np.linalg.solve(np.asarray(st.hess, np.float64), g)), 0.0)))
            # n m^2 is the squared distance of the Newton step in the metric of the information.
            where = (f"Newton decrement {m:.3g}: the estimates are about {np.sqrt(ev.scale) * m:.3g} "
                     "standard errors from the MLE")
        except np.linalg.LinAlgError:
            pass
    return (f"the stochastic optimum is not converged to tol={gtol:g} on the full data ({where}). More "
            f"epochs or a smaller learning rate get closer; a few exact steps finish it: "
            f"jm.fit(model, data, chunk_size={chunk_size}, init=res.params)")
