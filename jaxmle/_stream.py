"""Fits of one dataset too big for the device: exact chunked fits and stochastic fits.

``jm.fit(model, data, chunk_size=N)`` streams the rows through the device N at a
time (``jaxmle._chunks``): every objective, gradient and Hessian is a sum over
chunks, each a compiled per-chunk program cached on the model, so peak memory is
set by N, not by n. The optimizer loop runs on the host, one pass over the data
per evaluation: Newton with a backtracking line search (up to
``AUTO_NEWTON_MAX_PARAMS`` free parameters, as ``method="auto"`` chooses in
memory) or L-BFGS. Every step is judged by the in-memory driver's own stopping
rule (``jaxmle._solve.loop_body``, handed the host's step), so statuses and
tolerances mean the same; the standard errors come from the chunk-accumulated
information, inverted as ``jaxmle._stats`` does.

With ``batch_size=`` the fit is stochastic (``jaxmle._stochastic``); its end
point is judged on the full data in the same way.
"""

from __future__ import annotations

import collections
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import _linalg, _stats
from . import optimizers as _opt
from ._chunks import RowSource, Streamed
from ._data import float_dtype
from ._model import Model
from ._result import FitResult
from ._solve import loop_body, loop_start, tolerances
from ._status import RUNNING, ConvergenceWarning, Status, message
from ._stochastic import DEFAULT_EPOCHS, default_chunk, run_stochastic, transformation
from .optimizers._base import descent_direction, failed_if
from .optimizers.newton import NewtonState, cholesky_step, newton_direction, trust_region_step

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


# -- the stopping rule, fed with steps made on the host -------------------------------

class _Replay(_opt.Optimizer):
    """Hands ``loop_start``/``loop_body`` a step made on the host: ``data`` is (state, info)."""

    def __init__(self, opt):
        self.opt = opt

    def init(self, objective, z0, data):
        return data

    def step(self, objective, state, data, active=True):
        return data

    def newton_step(self, state):
        return self.opt.newton_step(state)

    def decrement(self, state, step=None):
        return self.opt.decrement(state, step)


def _rule(model, opt, max_iter, gtol, ftol):
    """(start, body): the driver's stopping rule, compiled once per model and settings."""

    def build():
        replay = _Replay(opt)
        return (jax.jit(lambda st, inf: loop_start(replay, None, st.z, (st, inf), gtol, 0, ftol)),
                jax.jit(lambda c, st, inf: loop_body(replay, None, c, (st, inf), max_iter, gtol, ftol)))

    return model.compiled(("stream-rule", opt, max_iter, gtol, ftol), build)


class _GradState(collections.namedtuple("_GradState", "z f grad")):
    """A first-order method's state for the stopping rule."""


@jax.jit
def _newton_state(z, f, g, H, radius=None, D=None):
    """A ``NewtonState`` at z; without radius and D, the trust region ``Newton.init`` sets up."""
    if D is None:
        D = jnp.sqrt(jnp.abs(jnp.diagonal(H)))
        D = jnp.where((D > 0) & jnp.isfinite(D), D, 1.0)
    else:
        diag = jnp.sqrt(jnp.abs(jnp.diagonal(H)))
        D = jnp.maximum(D, jnp.where(jnp.isfinite(diag), diag, 0.0))
    if radius is None:
        dz = jnp.linalg.norm(D * z)
        radius = jnp.where(dz > 0, dz, 1.0)
    return NewtonState(z, f, g, H, _linalg.cholesky(H), radius, D)


@jax.jit
def _newton_dir(st):
    return descent_direction(st.grad, newton_direction(st.hess, st.grad, st.chol))


@jax.jit
def _tr_trial(st, radius):
    """The trust-region trial step of ``Newton._trust_region_step`` for this radius: (p, ||D p||)."""
    D = st.scale
    Hs, gs = st.hess / jnp.outer(D, D), st.grad / D
    p_newton, newton_ok = cholesky_step(st.chol / D[:, None], gs)
    ps = trust_region_step(Hs, gs, p_newton, newton_ok, radius)
    return ps / D, jnp.linalg.norm(ps)


@jax.jit
def _tr_judge(st, p, pn, f_new, radius):
    """``Newton._trust_region_step``'s verdict on a trial: (accepted, hopeless, next radius)."""
    f0, g0, H = st.f, st.grad, st.hess
    slack = 4 * jnp.finfo(f0.dtype).eps * jnp.maximum(1.0, jnp.abs(f0))
    pred = -(jnp.vdot(g0, p) + 0.5 * jnp.vdot(p, H @ p))
    actual = f0 - f_new
    finite = jnp.isfinite(f_new)
    ratio = jnp.where(pred > slack, actual / jnp.where(pred > 0, pred, 1.0), 1.0)
    ok = finite & (actual >= 1e-4 * jnp.maximum(pred, 0.0) - slack) & (pred >= -slack)
    slope = jnp.vdot(g0, p)
    t = 0.5 * slope / jnp.where(slope - actual < 0, slope - actual, -1.0)
    shrink = jnp.where(finite & (actual < 0), jnp.clip(t, 0.1, 0.5), jnp.where(finite, 0.5, 0.1))
    grow = (ratio > 0.75) & (pn >= 0.99 * radius)
    radius = jnp.where(~finite | (ratio < 0.25), shrink * jnp.minimum(pn, radius),
                       jnp.where(grow, 2.0 * radius, radius))
    return ok, ok | (finite & (pred <= slack)), radius


def _backtrack(trial, f0: float, slope: float, max_trials: int):
    """Armijo backtracking from step 1 (``trial(alpha)`` evaluates the objective there).

    A non-finite value shrinks the step 10x; otherwise the minimum of the quadratic
    through f0, the slope and the trial value, kept within [0.1, 0.5] of the step.

    Returns:
        (alpha, accepted, evaluations).
    """
    slack = 4 * np.finfo(np.float64).eps * abs(f0)
    alpha, n = 1.0, 1
    f1 = trial(alpha)
    while not (np.isfinite(f1) and f1 <= f0 + 1e-4 * alpha * slope + slack):
        if n >= max_trials:
            return alpha, False, n
        if np.isfinite(f1):
            curv = f1 - f0 - slope * alpha
            t = -slope * alpha * alpha / (2 * curv) if curv > 0 else 0.5 * alpha
            alpha = float(np.clip(t, 0.1 * alpha, 0.5 * alpha))
        else:
            alpha *= 0.1
        f1 = trial(alpha)
        n += 1
    return alpha, True, n


def _newton_start(ev: Streamed, opt, start, z0):
    st = _newton_state(z0, *ev.value_grad_hessian(z0))
    return start(st._replace(radius=opt.initial_radius * st.radius), _opt.info(1, 1, 1))


def _newton_tr(ev: Streamed, opt, start, body, z0):
    """``Newton``'s trust-region iteration, every evaluation a pass over the chunks.

    The same trial steps, acceptance test and radius updates as the in-memory
    method, so both take the same steps (to the rounding of the sums).
    """
    carry = _newton_start(ev, opt, start, z0)
    while int(carry.status) == RUNNING:
        st = carry.state
        p, pn = _tr_trial(st, st.radius)
        fgh = ev.value_grad_hessian(st.z + p)
        ok, decided, radius = _tr_judge(st, p, pn, fgh[0], st.radius)
        k = 1
        while not bool(decided) and k < opt.max_trials:
            p, pn = _tr_trial(st, radius)
            ok, decided, radius = _tr_judge(st, p, pn, ev.value(st.z + p), radius)
            k += 1
        ok = bool(ok)
        extra = int(ok and k > 1)
        if extra:
            fgh = ev.value_grad_hessian(st.z + p)
        new = _newton_state(st.z + p, *fgh, radius, st.scale) if ok else st._replace(radius=radius)
        carry = body(carry, new, _opt.info(k + extra, 1 + extra, 1 + extra, failed_if(jnp.asarray(not ok))))
    return carry


def _newton_ls(ev: Streamed, opt, start, body, z0):
    """``Newton(globalization="line-search")``: the modified Newton direction and backtracking."""
    carry = _newton_start(ev, opt, start, z0)
    while int(carry.status) == RUNNING:
        st = carry.state
        d = _newton_dir(st)
        got = {}

        def trial(alpha, z=st.z, d=d, got=got):
            if alpha == 1.0:
                got[1.0] = ev.value_grad_hessian(z + d)
                return float(got[1.0][0])
            return float(ev.value(z + alpha * d))

        alpha, ok, n = _backtrack(trial, float(st.f), float(jnp.vdot(st.grad, d)), opt.max_trials)
        extra = int(ok and alpha != 1.0)
        if ok:
            fgh = got[1.0] if not extra else ev.value_grad_hessian(st.z + alpha * d)
            new = _newton_state(st.z + alpha * d, *fgh, st.radius, st.scale)
        else:
            new = st
        carry = body(carry, new, _opt.info(n + extra, 1 + extra, 1 + extra, failed_if(jnp.asarray(not ok))))
    return carry


def _two_loop(g, S, Y):
    """The L-BFGS direction -H g from the stored pairs (s, y), H0 = s'y / y'y."""
    q, stack = g.copy(), []
    for s, y in zip(reversed(S), reversed(Y)):
        rho = 1.0 / np.dot(y, s)
        a = rho * np.dot(s, q)
        q -= a * y
        stack.append((rho, a, s, y))
    r = q * (np.dot(S[-1], Y[-1]) / np.dot(Y[-1], Y[-1]))
    for rho, a, s, y in reversed(stack):
        r += s * (a - rho * np.dot(y, r))
    return -r


def _lbfgs(ev: Streamed, opt, start, body, z0):
    f, g = ev.value_grad(z0)
    carry = start(_GradState(z0, f, g), _opt.info(1, 1, 0))
    S = collections.deque(maxlen=opt.memory_size)
    Y = collections.deque(maxlen=opt.memory_size)
    while int(carry.status) == RUNNING:
        st = carry.state
        g = np.asarray(st.grad, np.float64)
        d = _two_loop(g, S, Y) if S else -g / max(1.0, float(np.linalg.norm(g)))
        if not np.dot(g, d) < 0:
            S.clear(), Y.clear()
            d = -g / max(1.0, float(np.linalg.norm(g)))
        dz = jnp.asarray(d, st.z.dtype)
        got = {}

        def trial(alpha, z=st.z, dz=dz, got=got):
            got[alpha] = ev.value_grad(z + alpha * dz)
            return float(got[alpha][0])

        alpha, ok, n = _backtrack(trial, float(st.f), float(np.dot(g, d)), opt.max_linesearch_steps)
        new = st
        if ok:
            f1, g1 = got[alpha]
            s, y = alpha * d, np.asarray(g1, np.float64) - g
            if np.dot(s, y) > np.finfo(np.float64).eps * np.dot(y, y):
                S.append(s), Y.append(y)
            new = _GradState(st.z + alpha * dz, f1, g1)
        carry = body(carry, new, _opt.info(n, n, 0, failed_if(jnp.asarray(not ok))))
    return carry


# -- the report: covariance, boundary checks, final status ------------------------------

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

        return jax.jit(core)

    return model.compiled(("stream-report",), build)


def _runaways(ev: Streamed, z, f, z0, Hinv):
    """``jaxmle._solve._runaways`` with every probe evaluated in passes over the chunks.

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
    params, J, Hinv, pd, cond, cov, at_edge = _report_core(model)(z, fixed, H * scale)
    status = int(carry.status)
    boundary = np.asarray(at_edge)
    if status == Status.CONVERGED:
        # The probes cost passes over the data: only a converged fit can change status by them.
        runaway = _runaways(ev, z, f, z0, Hinv)
        boundary = boundary | ((np.abs(np.asarray(J)) @ runaway.astype(np.float64)) > 0)
    if status == Status.CONVERGED:
        status = Status.AT_BOUNDARY if boundary.any() else (Status.CONVERGED if bool(pd) else Status.HESSIAN_NOT_PD)
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
    warnings.warn(text, ConvergenceWarning, stacklevel=4)


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
    return _stochastic(model, data, method, init, tol, ftol, mask, warn, key, chunk_size, batch_size,
                       epochs, max_steps, progress)


def _exact(model, data, method, init, max_iter, tol, ftol, mask, warn, chunk_size, progress):
    opt = _exact_method(method, model)
    source, dtype, z0, fixed, leaves = _setup(model, data, chunk_size, mask, init, True)
    max_iter = opt.default_max_iter if max_iter is None else int(max_iter)
    gtol, ftol = tolerances(opt, dtype, tol, ftol)
    start, body = _rule(model, opt, max_iter, gtol, ftol)
    ev = Streamed(model, source, fixed, progress, desc=f"fit ({opt.name}, chunked)")
    try:
        newton = isinstance(opt, _opt.Newton)
        run = (_newton_tr if opt.globalization == "trust-region" else _newton_ls) if newton else _lbfgs
        carry = run(ev, opt, start, body, z0)
        if int(carry.status) == Status.NONFINITE and int(carry.n_iter) == 0:
            start_values = {n: np.asarray(v).tolist() for n, v in zip(model.spec.leaf_names, leaves)}
            raise ValueError(f"the log-likelihood (or its gradient) is not finite at the start values "
                             f"{start_values}; choose start values where the data are possible (init= or the spec)")
        H = carry.state.hess if newton else ev.value_grad_hessian(carry.state.z)[2]
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
        return _opt.GradientAscent(learning_rate=0.01)
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
    f, g, H = ev.value_grad_hessian(z)
    st = _newton_state(z, f, g, H)
    start, _ = _rule(model, _opt.Newton(), 1, gtol, ftol)
    carry = start(st, _opt.info(steps + 1, steps + 1, 1))
    code = int(carry.status)
    carry = carry._replace(n_iter=jnp.asarray(steps, jnp.int32),
                           status=jnp.asarray(Status.MAX_ITER if code == RUNNING else code, jnp.int32))
    out = _finish(model, ev, carry, z0, fixed, H)
    res = FitResult(model, f"{opt.name} (mini-batch)", out, n_terms=source.n)
    if warn:
        _warn(res, _polish_advice(st, ev, gtol, source.chunk_size))
    return res


def _polish_advice(st, ev, gtol, chunk_size) -> str:
    g, H = np.asarray(st.grad, np.float64), np.asarray(st.hess, np.float64)
    try:
        m = float(np.sqrt(max(np.dot(g, np.linalg.solve(H, g)), 0.0)))
    except np.linalg.LinAlgError:
        m = float("nan")
    return (f"the stochastic optimum is not converged to tol={gtol:g} on the full data (Newton decrement "
            f"{m:.3g}: the estimates are about {np.sqrt(ev.scale) * m:.3g} standard errors from the MLE). "
            f"More epochs or a decaying learning rate get closer; a few exact steps finish it: "
            f"jm.fit(model, data, chunk_size={chunk_size}, init=res.params)")
