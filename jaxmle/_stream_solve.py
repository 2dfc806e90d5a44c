"""The host-side optimizer loops of chunked fits: every evaluation a pass over the chunks.

``Newton`` (trust region, or line search) and L-BFGS as loops on the host around
``jaxmle._chunks.Streamed`` evaluations. Each step is judged by the in-memory
driver's own stopping rule: ``jaxmle._solve.loop_start`` / ``loop_body`` are
compiled with a stand-in optimizer (``_Replay``) whose "step" is the one made on
the host, so statuses, tolerances and the floor rules are exactly the driver's.
The trust-region Newton repeats ``Newton._trust_region_step``'s trial steps,
acceptance test and radius updates, so a chunked fit takes the in-memory fit's
steps (to the rounding of the sums).
"""

from __future__ import annotations

import collections

import jax.numpy as jnp
import numpy as np

from . import _linalg
from . import optimizers as _opt
from ._compile import jit, lazy_jit
from ._chunks import Streamed
from ._solve import loop_body, loop_start
from ._status import RUNNING
from .optimizers._base import descent_direction, failed_if
from .optimizers.newton import (boundary_step, dogleg_step, judge_trial, newton_direction, scaled_problem,
                                start_state)
from .optimizers.newton import newton_state as make_newton_state


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


def rule(model, opt, max_iter, gtol, ftol):
    """(start, body): the driver's stopping rule, compiled once per model and settings."""

    def build():
        replay = _Replay(opt)
        return (jit(lambda st, inf: loop_start(replay, None, st.z, (st, inf), gtol, 0, ftol)),
                jit(lambda c, st, inf: loop_body(replay, None, c, (st, inf), max_iter, gtol, ftol)))

    return model.compiled(("stream-rule", opt, max_iter, gtol, ftol), build)


class GradState(collections.namedtuple("GradState", "z f grad")):
    """A first-order method's state for the stopping rule."""


@lazy_jit
def newton_state(z, f, g, H, radius, D):
    """A ``NewtonState`` at z, the scaling D grown by H's diagonal as ``Newton`` does."""
    diag = jnp.sqrt(jnp.abs(jnp.diagonal(H)))
    D = jnp.maximum(D, jnp.where(jnp.isfinite(diag), diag, 0.0))
    return make_newton_state(z, f, g, H, _linalg.cholesky(H), radius, D)


@lazy_jit
def _newton_dir(st):
    return descent_direction(st.grad, newton_direction(st.hess, st.grad, st.newton))


# The scaled problem of ``Newton._trust_region_step``: (Hs, gs, Newton step, usable).
_tr_newton = lazy_jit(scaled_problem)


_dogleg = lazy_jit(dogleg_step)
_boundary = lazy_jit(boundary_step)


def _tr_trial(st, scaled, radius):
    """``trust_region_step`` for this radius, (p, ||D p||): the dogleg for a positive-definite
    Hessian, the exact subproblem (an eigendecomposition, compiled only when needed) otherwise."""
    Hs, gs, p_newton, newton_ok = scaled
    ps = _dogleg(Hs, gs, p_newton, radius) if bool(newton_ok) else _boundary(Hs, gs, radius)
    return ps / st.scale, jnp.linalg.norm(ps)


@lazy_jit
def _tr_judge(st, p, pn, f_new, radius):
    """``Newton._trust_region_step``'s verdict on a trial: (accepted, stop trying, next radius)."""
    slack = 4 * jnp.finfo(st.f.dtype).eps * jnp.maximum(1.0, jnp.abs(st.f))
    ok, hopeless, radius = judge_trial(st.f, st.grad, st.hess, p, pn, f_new, radius, slack)
    return ok, ok | hopeless, radius


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
    """``Newton.init``: the first pass, the scaling D and the initial trust radius."""
    f, g, H = ev.value_grad_hessian(z0)
    st = start_state(z0, f, g, H, _linalg.cholesky(H), opt.initial_radius)
    return start(st, _opt.info(1, 1, 1))


def _newton_tr(ev: Streamed, opt, start, body, z0):
    """``Newton``'s trust-region iteration, every evaluation a pass over the chunks.

    The same trial steps, acceptance test and radius updates as the in-memory
    method, so both take the same steps (to the rounding of the sums). Where the
    in-memory step evaluates value, gradient and Hessian at every trial (one copy of
    the derivatives in its program), a retried trial here costs a value alone and the
    full pass is redone at the accepted point: a pass over the chunks is dear, and
    nothing is compiled per trial.
    """
    carry = _newton_start(ev, opt, start, z0)
    while int(carry.status) == RUNNING:
        st = carry.state
        scaled = _tr_newton(st)
        p, pn = _tr_trial(st, scaled, st.radius)
        fgh = ev.value_grad_hessian(st.z + p)
        ok, decided, radius = _tr_judge(st, p, pn, fgh[0], st.radius)
        k = 1
        while not bool(decided) and k < opt.max_trials:
            p, pn = _tr_trial(st, scaled, radius)
            ok, decided, radius = _tr_judge(st, p, pn, ev.value(st.z + p), radius)
            k += 1
        ok = bool(ok)
        extra = int(ok and k > 1)
        if extra:
            fgh = ev.value_grad_hessian(st.z + p)
        new = newton_state(st.z + p, *fgh, radius, st.scale) if ok else st._replace(radius=radius)
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
            new = newton_state(st.z + alpha * d, *fgh, st.radius, st.scale)
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
    carry = start(GradState(z0, f, g), _opt.info(1, 1, 0))
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
            new = GradState(st.z + alpha * dz, f1, g1)
        carry = body(carry, new, _opt.info(n, n, 0, failed_if(jnp.asarray(not ok))))
    return carry


def run(ev: Streamed, opt, start, body, z0):
    """The chunked fit's loop for ``opt`` (Newton or L-BFGS); returns the driver's final carry."""
    if isinstance(opt, _opt.Newton):
        return (_newton_tr if opt.globalization == "trust-region" else _newton_ls)(ev, opt, start, body, z0)
    return _lbfgs(ev, opt, start, body, z0)
