"""Profile likelihood: intervals and curves, batched over parameters, sides, points and datasets.

For a free parameter theta_j the profile log-likelihood l_p(t) is the log-likelihood
maximised over the other parameters with theta_j = t. The bijectors are elementwise
and monotone, so fixing theta_j is fixing its unconstrained coordinate z_j, and each
evaluation is a Newton solve in the other coordinates (``_pinned_solve``).

The interval is {t : 2 (l_hat - l_p(t)) <= q}, q the chi-squared(1) quantile. Each
end is a root of the signed root deviance h(t) = sqrt(2 (l_hat - l_p)) - sqrt(q),
with t measured in Wald standard errors of z_j: h is exactly linear in t for a
quadratic log-likelihood and close to it otherwise, and its slope comes for free
(by the envelope theorem dl_p/dz_j is the partial derivative of l at the profile
point). So each end is a safeguarded Newton iteration (as in rtsafe: bracket growth,
Newton on log(deviance) where the deviance is far from quadratic, secant, bisection)
from the Wald bound, and each solve starts from the profile path predicted by the
points before (at first the Wald tangent): typically three evaluations of a few
Newton steps. Searches whose Wald standard error is not finite (an unidentified
parameter) are not run: their bounds are NaN.

A single fit runs its searches on the host, one after another (``_single_intervals``,
the ``_host_*`` ports of the lane functions below), and each evaluation is one call
of the fit's own compiled program with the coordinate pinned as data
(``PinnedFit``): after a Newton fit the first profile compiles nothing. For a batch,
all searches of a dataset are lanes of one vmapped program; datasets go through
``jaxmle._batch`` (straggler compaction, chunks, a progress bar over chunks), so the
odd dataset whose searches run long does not hold up the rest.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _stats
from ._compile import jit
from ._batch import BatchFitter, run_chunks
from ._data import n_data
from ._solve import loop_body, loop_start, make_objective, ready_data
from ._status import RUNNING, Status
from .optimizers import Newton

_MAX_GROWTH = 8           # the bracket grows up to 2 * 4^8 * sqrt(q) Wald SEs (in z) from the optimum
_MAX_EVALS = 80           # solver steps per search (an evaluation or a resumed solve)
_INNER_ITERS = 8          # Newton iterations per step; a solve may resume up to _RESUMES times
_RESUMES = 5
# Datasets per compiled call: bounds the working memory and feeds the progress bar.
_CHUNK = 4096
# Straggler buckets hold at least this many datasets (each new size is a compilation).
_MIN_BUCKET = 8
# Lane phases: searching, root found, no root before the growth limit (the bound is the
# constraint edge or infinity), not searched (NaN bound), likelihood not finite beyond
# the last point below the threshold (that point is the bound, flagged as an edge).
_SEARCH, _FOUND, _NO_ROOT, _SKIP, _BROKEN = 0, 2, 3, 4, 5


def _z_index(spec):
    """For each free natural element, its z coordinate (or -1 for simplex elements)."""
    out, zi = [], 0
    for con, shape, size, fixed in zip(spec.constraints, spec.shapes, spec.free_sizes, spec.is_fixed):
        if fixed:
            continue
        n_el = int(np.prod(shape, dtype=int))
        if not con.elementwise:
            out += [-1] * n_el
        else:
            out += list(range(zi, zi + n_el))
        zi += size
    return np.asarray(out)


def _pinned_solve(obj, gtol, ftol, z_start, jz, value, active=True, max_iter=_INNER_ITERS):
    """Maximise the log-likelihood over z with z_jz = value, from ``z_start``.

    An inactive lane (a finished search) does not iterate: under vmap the loop runs
    as long as its slowest active lane.

    Returns:
        (z, loglik, d loglik / d z_jz at z, inner status).
    """
    neg_total, scale = obj.neg_total, obj.scale
    e = jnp.arange(z_start.shape[0]) == jz

    def pinned(z, _):
        # z_j is pinned by a decoupled quadratic: its Newton step lands on `value`.
        return neg_total(jnp.where(e, value, z)) / scale + 0.5 * (z[jz] - value) ** 2

    opt = Newton()
    carry = loop_start(opt, pinned, jnp.where(e, value, z_start), None, gtol, 0, ftol)
    carry = carry._replace(status=jnp.where(active, carry.status, Status.CONVERGED).astype(jnp.int32))
    carry = jax.lax.while_loop(lambda c: c.status == RUNNING,
                               lambda c: loop_body(opt, pinned, c, None, max_iter, gtol, ftol, placeholder=False), carry)
    z = jnp.where(e, value, carry.state.z)
    nt, g = jax.value_and_grad(neg_total)(z)
    return z, -nt, -g[jz], carry.status


def _information_inverse(obj, z_hat):
    """H^-1 of one dataset at its optimum: Wald standard errors and profile-path tangents."""
    return _stats.inverse_information(jax.hessian(obj.neg_total)(z_hat))[0]


# -- one end of one interval: start, step, end ---------------------------------------

def _lane_start(q, z_hat, Hinv, jz, side):
    dtype = z_hat.dtype
    s = jnp.sqrt(Hinv[jz, jz])
    # For a quadratic log-likelihood the profile path is z_hat + t u exactly.
    u = side * Hinv[:, jz] / s
    ok = (jz >= 0) & jnp.isfinite(s) & (s > 0) & jnp.all(jnp.isfinite(u))
    rq = jnp.sqrt(q)
    zero, inf = jnp.zeros((), dtype), jnp.asarray(jnp.inf, dtype)
    # The current point starts at the optimum with the quadratic model's slope 1, so
    # the first Newton step is the Wald bound.
    return dict(t=zero, h=-rq, hp=jnp.ones((), dtype), dev=zero, step=inf, s=jnp.where(ok, s, 1.0),
                t_lo=zero, h_lo=-rq, z_lo=z_hat, slope=jnp.where(ok, u, 0.0), t_hi=inf, h_hi=inf,
                z_hi=z_hat, phase=jnp.where(ok, _SEARCH, _SKIP).astype(jnp.int32),
                cuts=jnp.zeros((), jnp.int32), n=jnp.zeros((), jnp.int32), pend=jnp.zeros((), bool),
                t_pend=zero, z_pend=z_hat, resumes=jnp.zeros((), jnp.int32))


def _propose(obj, q, c):
    """The next point t of a search and the start of its solve."""
    rq = jnp.sqrt(q)
    t0, t_lo, t_hi, hp = c["t"], c["t_lo"], c["t_hi"], c["hp"]
    bracketed = jnp.isfinite(t_hi)
    slope_ok = jnp.isfinite(hp) & (hp > 0)
    t_newton = t0 - c["h"] / hp
    # Growing: Newton, but at most 4x further out (a flat profile would jump to infinity).
    reach = 4.0 * jnp.maximum(t_lo, rq)
    grow = jnp.where(slope_ok & (t_newton > t_lo), jnp.minimum(t_newton, reach), reach)

    # Refining (as in rtsafe): Newton while it stays inside the bracket and its steps
    # at least halve. When they do not, the deviance is far from quadratic in t (e.g.
    # exponential past a boundary estimate): Newton on log(deviance) from above the
    # root, else the secant if it lands well inside, else bisection; but when the
    # upper end overflowed and no finite point beyond the optimum is known (the Wald
    # step was absurdly long: a flat likelihood), cuts to 1/8, 1/64, 1/4096, ... of it.
    def inside(x):
        return jnp.isfinite(x) & (x > t_lo) & (x < t_hi)

    newton_ok = slope_ok & inside(t_newton) & (jnp.abs(t_newton - t0) <= 0.5 * c["step"])
    t_log = t0 - jnp.log(c["dev"] / q) * (c["h"] + rq) / (2.0 * hp)
    log_ok = slope_ok & (c["dev"] > q) & inside(t_log)
    width = t_hi - t_lo
    dh = c["h_hi"] - c["h_lo"]
    t_sec = t_lo - c["h_lo"] * width / jnp.where(dh > 0, dh, 1.0)
    frac = (t_sec - t_lo) / jnp.where(width > 0, width, 1.0)
    sec_ok = jnp.isfinite(c["h_hi"]) & (dh > 0) & (frac > 0.02) & (frac < 0.98)
    absurd = ~jnp.isfinite(c["h_hi"]) & (t_lo == 0)
    cut = jnp.where(absurd, 0.125 ** (2.0 ** jnp.minimum(c["cuts"], 6).astype(width.dtype)), 0.5)
    refine = jnp.where(newton_ok, t_newton, jnp.where(log_ok, t_log, jnp.where(sec_ok, t_sec, t_lo + cut * width)))
    t = jnp.where(bracketed, refine, grow)
    # Predict the other coordinates: between the bracket's ends, else along the path.
    w = jnp.clip((t - t_lo) / jnp.where(width > 0, width, 1.0), 0.0, 1.0)
    z_pred = jnp.where(bracketed, c["z_lo"] + w * (c["z_hi"] - c["z_lo"]), c["z_lo"] + (t - t_lo) * c["slope"])
    z_pred = jnp.where(jnp.isfinite(obj.neg_total(z_pred)), z_pred, c["z_lo"])
    cuts = c["cuts"] + (bracketed & absurd & ~newton_ok & ~log_ok & ~sec_ok).astype(jnp.int32)
    return t, z_pred, cuts


def _lane_step(obj, q, gtol, ftol, z_hat, loglik_hat, jz, side, c):
    """One evaluation of the profile for one search (a no-op for a finished one)."""
    rq = jnp.sqrt(q)
    inf = jnp.asarray(jnp.inf, z_hat.dtype)
    s = c["s"]
    t, z_pred, cuts = _propose(obj, q, c)
    pend = c["pend"]
    t = jnp.where(pend, c["t_pend"], t)
    z_pred = jnp.where(pend, c["z_pend"], z_pred)
    z, ll, dll, status = _pinned_solve(obj, gtol, ftol, z_pred, jz, z_hat[jz] + side * t * s, _running(c))
    dev = 2.0 * (loglik_hat - ll)
    finite = jnp.isfinite(dev)
    r = jnp.sqrt(jnp.maximum(dev, 0.0))
    # Non-finite means "too far out": it bounds the root from above.
    h = jnp.where(finite, r - rq, inf)
    hp = -side * s * dll / jnp.where(r > 0, r, jnp.nan)
    upper = h > 0
    # Close to the root (|h| is in Wald SEs, about), a Newton correction below 1e-4
    # SEs is taken without another solve: its own error is of order its square.
    dt = -h / hp
    eps = float(jnp.finfo(z_hat.dtype).eps)
    close = finite & (hp > 0) & (jnp.abs(h) <= max(1e-5, 1e3 * eps) * rq) & (jnp.abs(dt) <= max(1e-4, 1e4 * eps))
    new = dict(c, t=jnp.where(close, t + dt, t), h=jnp.where(close, 0.0, h), hp=jnp.where(finite, hp, jnp.nan),
               dev=dev, step=jnp.abs(t - c["t"]), cuts=cuts, n=c["n"] + 1)
    step = t - c["t_lo"]
    new["slope"] = jnp.where(~upper & (step > 0), (z - c["z_lo"]) / jnp.where(step > 0, step, 1.0), c["slope"])
    new["t_lo"] = jnp.where(upper, c["t_lo"], t)
    new["h_lo"] = jnp.where(upper, c["h_lo"], h)
    new["z_lo"] = jnp.where(upper, c["z_lo"], z)
    new["t_hi"] = jnp.where(upper, t, c["t_hi"])
    new["h_hi"] = jnp.where(upper, h, c["h_hi"])
    new["z_hi"] = jnp.where(upper & finite, z, jnp.where(upper, new["z_lo"], c["z_hi"]))
    # Stop on the LR equation itself, or when the bracket is ~1e-10 wide in z (looser in
    # float32, whose log-likelihoods carry fewer digits than that); or when
    # the likelihood stops being finite within 1e-4 (relative, in z) of the last point
    # below the threshold: the profile does not cross it before breaking down.
    z_scale = jnp.maximum(1.0, jnp.abs(z_hat[jz]))
    z_width = (new["t_hi"] - new["t_lo"]) * s
    done = close | (jnp.abs(dev - q) <= max(1e-9, 1e3 * eps) * q) | (z_width <= max(1e-10, 1e2 * eps) * z_scale)
    broken = ~jnp.isfinite(new["h_hi"]) & (new["t_lo"] > 0) & (z_width <= 1e-4 * z_scale)
    lost = ~jnp.isfinite(new["t_hi"]) & (new["t_lo"] >= 2.0 * rq * 4.0 ** _MAX_GROWTH)
    phase = jnp.where(done, _FOUND, jnp.where(broken, _BROKEN, jnp.where(lost, _NO_ROOT, _SEARCH)))
    new["phase"] = phase.astype(jnp.int32)
    # A solve that used up its iterations continues from where it stopped at the next
    # step (the search waits), so that one slow solve does not hold up every lane of
    # the batch for long; after _RESUMES resumptions its point is taken as it is.
    again = (status == Status.MAX_ITER) & (c["resumes"] < _RESUMES)
    new["pend"], new["resumes"] = jnp.zeros((), bool), jnp.zeros((), jnp.int32)
    wait = dict(c, pend=jnp.ones((), bool), t_pend=t, z_pend=z, resumes=c["resumes"] + 1, n=c["n"] + 1)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(again, a, b), wait, new)


def _lane_end(c):
    """(t of the bound, whether it is an edge) from a finished search."""
    exact = jnp.abs(c["h"]) <= jnp.minimum(jnp.abs(c["h_lo"]), jnp.abs(c["h_hi"]))
    width = c["t_hi"] - c["t_lo"]
    dh = c["h_hi"] - c["h_lo"]
    t_sec = c["t_lo"] - c["h_lo"] * width / jnp.where(dh > 0, dh, 1.0)
    t_sec = jnp.where(jnp.isfinite(c["h_hi"]) & (dh > 0), t_sec, 0.5 * (c["t_lo"] + c["t_hi"]))
    t = jnp.where(exact, c["t"], t_sec)
    t = jnp.where(c["phase"] == _NO_ROOT, jnp.inf, jnp.where(c["phase"] == _BROKEN, c["t_lo"], t))
    t = jnp.where(c["phase"] == _SKIP, jnp.nan, t)
    return t, (c["phase"] == _NO_ROOT) | (c["phase"] == _BROKEN)


# -- all searches of one dataset as stages (the jaxmle._batch protocol) ---------------

class _Carry(NamedTuple):
    lanes: dict
    status: jax.Array      # RUNNING while any search of the dataset runs


def _running(lanes):
    return (lanes["phase"] == _SEARCH) & (lanes["n"] < _MAX_EVALS)


class _IntervalStages:
    """The interval searches of one dataset in start / body / finish stages.

    ``extra`` is (fixed, loglik_hat, q, lanes) with lanes = (element j, its z index
    (-1: not elementwise), side) arrays; ``data`` has been through ``ready_data``.
    ``jaxmle._batch.BatchFitter`` runs the stages over a batch, regrouping the datasets
    still searching; ``solve`` chains them for a single fit. Levels and lanes are
    arguments, so one compilation serves every level and every set of parameters
    of the same size.
    """

    def __init__(self, model, n_static, gtol, ftol):
        self.model, self.n_static, self.gtol, self.ftol = model, n_static, gtol, ftol

    def _objective(self, z_hat, extra, data, mask):
        return make_objective(self.model, z_hat.dtype, extra[0], data, mask, self.n_static)

    @staticmethod
    def _lanes(z_hat, extra):
        js, jzs, sides = extra[3]
        return js, jnp.maximum(jzs, 0), sides.astype(z_hat.dtype)

    def start(self, z_hat, extra, data, mask) -> _Carry:
        obj = self._objective(z_hat, extra, data, mask)
        Hinv = _information_inverse(obj, z_hat)
        q = extra[2]
        _, jzs, sides = self._lanes(z_hat, extra)
        lanes = jax.vmap(lambda jz, side: _lane_start(q, z_hat, Hinv, jz, side))(jzs, sides)
        lanes["phase"] = jnp.where(extra[3][1] >= 0, lanes["phase"], _SKIP).astype(jnp.int32)
        return _Carry(lanes, jnp.where(jnp.any(_running(lanes)), RUNNING, 0).astype(jnp.int32))

    def body(self, carry: _Carry, z_hat, extra, data, mask) -> _Carry:
        obj = self._objective(z_hat, extra, data, mask)
        ll_hat, q = extra[1], extra[2]
        _, jzs, sides = self._lanes(z_hat, extra)
        run = _running(carry.lanes)
        step = jax.vmap(lambda jz, side, c: _lane_step(obj, q, self.gtol, self.ftol, z_hat, ll_hat, jz, side, c))
        new = step(jzs, sides, carry.lanes)
        lanes = jax.tree_util.tree_map(
            lambda a, b: jnp.where(run.reshape(run.shape + (1,) * (a.ndim - 1)), a, b), new, carry.lanes)
        return _Carry(lanes, jnp.where(jnp.any(_running(lanes)), RUNNING, 0).astype(jnp.int32))

    def finish(self, carry: _Carry, z_hat, extra, data, mask):
        fixed = extra[0]
        js, jzs, sides = self._lanes(z_hat, extra)

        def bound(j, jz, side, c):
            t, edge = _lane_end(c)
            z_end = z_hat.at[jz].set(z_hat[jz] + side * t * c["s"])
            return self.model.spec.natural_flat(z_end, fixed)[j], edge

        return jax.vmap(bound)(js, jzs, sides, carry.lanes)

    def solve(self, z_hat, extra, data, mask):
        data = ready_data(self.model, data, mask)
        carry = self.start(z_hat, extra, data, mask)
        carry = jax.lax.while_loop(lambda c: c.status == RUNNING,
                                   lambda c: self.body(c, z_hat, extra, data, mask), carry)
        return self.finish(carry, z_hat, extra, data, mask)


# -- a single fit: the searches on the host, each evaluation one call of the fit's program --

class PinnedFit:
    """Profile-likelihood evaluations of a single fit through the fit's own compiled program.

    Each evaluation is a default Newton fit of the result's model on the data the fit
    saw (padded and masked as it was), started where the search predicts, with the
    profiled coordinate pinned as data (``jaxmle._solve.make_objective``): for a Newton
    fit the cached program that fit ran, for any other method one Newton program of
    that model and data signature (``jaxmle._fit.profile_program``). Nothing is
    compiled per parameter, level or call.
    """

    def __init__(self, result):
        from ._fit import _Setup, profile_program   # _fit imports _result, which imports this module

        s = result._memo.get("fit_setup")
        if s is None:       # a batch's dataset, a multi-start fit: the same program at its shapes
            _, n_static, _, _ = _setup(result)
            s = _Setup(result._data, result._mask, None, 0, 0.0, 0.0, result._n_terms, n_static, None,
                       result.z, list(result.fixed), False)
        self.fn, self.setup = profile_program(result.model, s)
        self.spec = result.model.spec
        self.z_hat = np.asarray(result.z)
        self.dtype = self.z_hat.dtype
        self.k = self.z_hat.shape[0]
        self._hess = result._memo.get("fit_hess")

    def call(self, z0, on, value):
        s = self.setup
        pin = (np.asarray(on, bool), np.asarray(value, self.dtype))
        return self.fn(np.asarray(z0, self.dtype), s.fixed, s.data, s.mask, pin)

    def hessian(self):
        """The Hessian of minus the log-likelihood at the estimate (the fit's, when it was Newton's)."""
        if self._hess is None:
            off = np.zeros(self.k, bool)
            out = self.call(self.z_hat, off, np.zeros(self.k, self.dtype))
            # Above DENSE_HESSIAN_MAX_PARAMS the program forms none: NaN (no Wald tangent;
            # profile curves over a given range then start each point at the estimate).
            self._hess = out["pending"]["hess"] if "pending" in out else np.full((self.k, self.k), np.nan)
        return np.asarray(self._hess)

    def solve(self, z_start, jz, value, retry=None):
        """Maximise over z with z_jz = value from ``z_start`` (else from ``retry`` when the
        likelihood is not finite at the start): (z, loglik, d loglik / d z_jz, status, iterations)."""
        on = np.arange(self.k) == jz
        vals = np.where(on, np.asarray(value, self.dtype), 0).astype(self.dtype)
        z0 = np.where(on, vals, z_start)
        out = self.call(z0, on, vals)
        status, n_iter = int(out["status"]), int(out["n_iter"])
        if status == Status.NONFINITE and n_iter == 0 and retry is not None:
            out = self.call(np.where(on, vals, retry), on, vals)
            status, n_iter = int(out["status"]), int(out["n_iter"])
        pinned = out["pinned"]
        z = np.asarray(pinned["z"])
        return z, -float(pinned["neg_total"]), -float(np.asarray(pinned["grad"])[jz]), status, n_iter

    def natural(self, z):
        """The free natural-scale values at z (``spec.natural_flat``), from the same program."""
        z = np.asarray(z, self.dtype)
        params = self.call(z, np.ones(self.k, bool), z)["params"]
        leaves = self.spec.flatten(params)
        return np.concatenate([np.ravel(np.asarray(v)) for v, f in zip(leaves, self.spec.is_fixed) if not f])


def _host_lane_start(q, z_hat, Hinv, jz, side):
    """``_lane_start`` on the host (one search)."""
    rq = np.sqrt(q)
    j0 = max(jz, 0)
    with np.errstate(all="ignore"):
        s = np.sqrt(Hinv[j0, j0])
        u = side * Hinv[:, j0] / s
    ok = jz >= 0 and np.isfinite(s) and s > 0 and bool(np.all(np.isfinite(u)))
    f = np.float64      # NumPy scalars: IEEE results (inf, NaN) where Python floats would raise
    return dict(t=f(0), h=f(-rq), hp=f(1), dev=f(0), step=f(np.inf), s=f(s) if ok else f(1), t_lo=f(0),
                h_lo=f(-rq), z_lo=z_hat, slope=u if ok else np.zeros_like(z_hat), t_hi=f(np.inf),
                h_hi=f(np.inf), z_hi=z_hat, phase=_SEARCH if ok else _SKIP, cuts=0, n=0, pend=False,
                t_pend=f(0), z_pend=z_hat, resumes=0)


def _host_propose(q, c):
    """``_propose`` on the host, without the start's finiteness check (``PinnedFit.solve`` retries)."""
    rq = np.sqrt(q)
    t0, t_lo, t_hi, hp, h = c["t"], c["t_lo"], c["t_hi"], c["hp"], c["h"]
    bracketed = np.isfinite(t_hi)
    slope_ok = np.isfinite(hp) and hp > 0
    t_newton = t0 - h / hp
    reach = 4.0 * max(t_lo, rq)
    grow = min(t_newton, reach) if slope_ok and t_newton > t_lo else reach

    def inside(x):
        return np.isfinite(x) and t_lo < x < t_hi

    newton_ok = slope_ok and inside(t_newton) and abs(t_newton - t0) <= 0.5 * c["step"]
    t_log = t0 - np.log(c["dev"] / q) * (h + rq) / (2.0 * hp)
    log_ok = slope_ok and c["dev"] > q and inside(t_log)
    width = t_hi - t_lo
    dh = c["h_hi"] - c["h_lo"]
    t_sec = t_lo - c["h_lo"] * width / (dh if dh > 0 else 1.0)
    frac = (t_sec - t_lo) / (width if width > 0 else 1.0)
    sec_ok = np.isfinite(c["h_hi"]) and dh > 0 and 0.02 < frac < 0.98
    absurd = not np.isfinite(c["h_hi"]) and t_lo == 0
    cut = 0.125 ** (2.0 ** min(c["cuts"], 6)) if absurd else 0.5
    if not bracketed:
        t = grow
        z_pred = c["z_lo"] + (t - t_lo) * c["slope"]
    else:
        t = t_newton if newton_ok else t_log if log_ok else t_sec if sec_ok else t_lo + cut * width
        w = min(max((t - t_lo) / (width if width > 0 else 1.0), 0.0), 1.0)
        z_pred = c["z_lo"] + w * (c["z_hi"] - c["z_lo"])
    cuts = c["cuts"] + int(bracketed and absurd and not (newton_ok or log_ok or sec_ok))
    return t, z_pred, cuts


def _host_lane_step(fit: PinnedFit, q, z_hat, loglik_hat, jz, side, c):
    """``_lane_step`` on the host: one evaluation of the profile (one call of the fit's program)."""
    rq = np.sqrt(q)
    s = c["s"]
    t, z_pred, cuts = _host_propose(q, c)
    pend = c["pend"]
    if pend:
        t, z_pred = c["t_pend"], c["z_pend"]
    z, ll, dll, status, n_iter = fit.solve(z_pred, jz, z_hat[jz] + side * t * s, None if pend else c["z_lo"])
    dev = 2.0 * (loglik_hat - ll)
    finite = np.isfinite(dev)
    r = np.sqrt(np.maximum(dev, 0.0))
    h = r - rq if finite else np.inf
    hp = -side * s * dll / (r if r > 0 else np.nan)
    upper = h > 0
    dt = -h / hp
    eps = float(np.finfo(fit.dtype).eps)
    close = finite and hp > 0 and abs(h) <= max(1e-5, 1e3 * eps) * rq and abs(dt) <= max(1e-4, 1e4 * eps)
    # An evaluation whose solve took more Newton iterations counts as the steps the
    # vmapped search would have spent on it (``_INNER_ITERS`` iterations per step).
    spent = max(1, -(-n_iter // _INNER_ITERS))
    new = dict(c, t=t + dt if close else t, h=0.0 if close else h, hp=hp if finite else np.nan, dev=dev,
               step=abs(t - c["t"]), cuts=cuts, n=c["n"] + spent)
    step = t - c["t_lo"]
    if not upper and step > 0:
        new["slope"] = (z - c["z_lo"]) / step
    if upper:
        new["t_hi"], new["h_hi"] = t, h
        new["z_hi"] = z if finite else c["z_lo"]
    else:
        new["t_lo"], new["h_lo"], new["z_lo"] = t, h, z
    z_scale = max(1.0, abs(float(z_hat[jz])))
    z_width = (new["t_hi"] - new["t_lo"]) * s
    done = close or abs(dev - q) <= max(1e-9, 1e3 * eps) * q or z_width <= max(1e-10, 1e2 * eps) * z_scale
    broken = not np.isfinite(new["h_hi"]) and new["t_lo"] > 0 and z_width <= 1e-4 * z_scale
    lost = not np.isfinite(new["t_hi"]) and new["t_lo"] >= 2.0 * rq * 4.0 ** _MAX_GROWTH
    new["phase"] = _FOUND if done else _BROKEN if broken else _NO_ROOT if lost else _SEARCH
    new["pend"], new["resumes"] = False, 0
    if status == Status.MAX_ITER and c["resumes"] < _RESUMES:
        return dict(c, pend=True, t_pend=t, z_pend=z, resumes=c["resumes"] + 1, n=c["n"] + spent)
    return new


def _host_lane_end(c):
    """``_lane_end`` on the host: (t of the bound, whether it is an edge)."""
    with np.errstate(all="ignore"):
        exact = abs(c["h"]) <= min(abs(c["h_lo"]), abs(c["h_hi"]))
        width = c["t_hi"] - c["t_lo"]
        dh = c["h_hi"] - c["h_lo"]
        if np.isfinite(c["h_hi"]) and dh > 0:
            t_sec = c["t_lo"] - c["h_lo"] * width / dh
        else:
            t_sec = 0.5 * (c["t_lo"] + c["t_hi"])
    t = c["t"] if exact else t_sec
    phase = c["phase"]
    if phase == _NO_ROOT:
        t = np.inf
    elif phase == _BROKEN:
        t = c["t_lo"]
    elif phase == _SKIP:
        t = np.nan
    return t, phase in (_NO_ROOT, _BROKEN)


def _single_intervals(result, q, elements, jz_all):
    """Profile intervals of a single fit: the root searches of ``_lane_start`` / ``_propose`` /
    ``_lane_step`` / ``_lane_end`` one after another on the host, each evaluation one call of
    the fit's compiled program (``PinnedFit``). Flat (m, 2) bounds and edge flags."""
    fit = PinnedFit(result)
    z_hat, dtype = fit.z_hat, fit.dtype
    loglik_hat = float(result.logpost)
    m = len(elements)
    bounds = np.full((m, 2), np.nan)
    edge = np.zeros((m, 2), bool)
    if not (jz_all >= 0).any():
        return bounds, edge
    Hinv = _stats.inverse_information_host(fit.hessian())[0].astype(np.float64)
    ends = {}
    with np.errstate(all="ignore"):
        for i, jz in enumerate(jz_all):
            for k, side in enumerate((-1.0, 1.0)):
                c = _host_lane_start(q, z_hat.astype(np.float64), Hinv, int(jz), side)
                while c["phase"] == _SEARCH and c["n"] < _MAX_EVALS:
                    c = _host_lane_step(fit, q, z_hat, loglik_hat, int(jz), side, c)
                t, edge[i, k] = _host_lane_end(c)
                if jz >= 0:
                    ends[i, k] = z_hat[jz] + side * t * c["s"]
        for k in range(2):
            # Elementwise bijectors: element j's natural value depends on z_jz alone, so one
            # call maps every bound of a side. Elements of a Simplex or PositiveDefinite
            # (no z coordinate of their own) stay NaN.
            z_end = z_hat.copy()
            idx = [i for i in range(m) if (i, k) in ends]
            for i in idx:
                z_end[jz_all[i]] = ends[i, k]
            nat = fit.natural(z_end)
            for i in idx:
                bounds[i, k] = nat[elements[i]]
    return bounds.astype(dtype), edge


def missing_data_message(what: str) -> str:
    """Why ``what`` is unavailable on a result that does not carry its data, and the fix."""
    return (f"{what} needs the data the fit saw, and this result does not carry it: a streamed fit "
            "(chunk_size= or batch_size=) keeps none, and a result rebuilt by a JAX transform loses it. "
            "Refit with the data in memory (res = jm.fit(model, data), or jm.fit_batch) to get it")


def _setup(result):
    """(batched, n_static, gtol, ftol) shared by intervals and curves."""
    if result._data is None:
        raise ValueError(missing_data_message("profile likelihood"))
    batched = np.ndim(result.loglik) == 1
    dtype = result.z.dtype
    gtol = Newton().default_gtol(dtype)
    ftol = 4 * float(jnp.finfo(dtype).eps)
    if result._n_terms is not None:
        n_static = result._n_terms
    else:
        one = jax.tree_util.tree_map(lambda a: a[0], result._data) if batched else result._data
        n_static = n_data(one)
    return batched, n_static, gtol, ftol


def _run(fn, args, batched, progress):
    """Call ``fn(*args)`` once, or over equal chunks of datasets (progress bar when long)."""
    if not batched:
        return fn(*args)
    B = int(np.shape(args[0])[0])
    n_chunks = -(-B // _CHUNK)
    return run_chunks(fn, args, B, -(-B // n_chunks) if n_chunks > 1 else None, progress, None)


def profile_intervals(result, level: float = 0.95, progress: bool | None = None, elements=None):
    """Profile-likelihood intervals and flags for a FitResult or BatchFitResult.

    Args:
        result: the fit.
        level: coverage.
        progress: show a progress bar over chunks of datasets (default: when the
            batch spans several chunks and stderr is a terminal).
        elements: indices into ``param_names`` to profile (default all).

    Returns:
        (intervals, at_edge): flat arrays ``(..., m, 2)`` ordered as ``param_names``
        (or ``elements``); ``at_edge`` is True where the profile never crossed the
        threshold before the constraint edge (or +/- infinity, or where the
        likelihood stops being finite): the reported bound is that edge.
    """
    model, spec = result.model, result.model.spec
    batched, n_static, gtol, ftol = _setup(result)
    data, mask = result._data, result._mask
    q = _stats.normal_quantile(level) ** 2
    elements = tuple(range(len(spec.names))) if elements is None else tuple(int(e) for e in elements)
    jz_all = _z_index(spec)[list(elements)]
    m = len(elements)
    if not batched:
        bounds, edge = _single_intervals(result, q, elements, jz_all)
        _warn_not_elementwise(jz_all)
        return bounds, edge
    stages = _IntervalStages(model, n_static, gtol, ftol)

    # Regrouping gathers rows across devices: on one device only (as fit_batch does).
    compact = len(jax.local_devices()) == 1

    def build():
        if batched:
            return BatchFitter(stages, mask is not None, compact=compact, min_bucket=_MIN_BUCKET)
        return jit(stages.solve)

    fn = model.compiled(("profile", batched, mask is not None, n_static, compact), build)
    # Per-dataset arguments when batched (chunks slice every leading axis).
    lead = np.shape(result.loglik)
    lanes = (np.repeat(elements, 2), np.repeat(jz_all, 2), np.tile([-1.0, 1.0], m))
    # device_put and NumPy: jnp.asarray / jnp.full outside a program compile one each.
    lanes = tuple(jax.device_put(np.ascontiguousarray(np.broadcast_to(a, lead + a.shape))) for a in lanes)
    extra = (result.fixed, result.logpost, jax.device_put(np.full(lead, q, result.z.dtype)), lanes)
    bounds, edge = _run(fn, (result.z, extra, data, mask), batched, progress)
    lead = bounds.shape[:-1]
    bounds = np.asarray(bounds).reshape(lead + (m, 2))
    edge = np.asarray(edge).reshape(lead + (m, 2))
    _warn_not_elementwise(jz_all)
    return bounds, edge


def _warn_not_elementwise(jz_all):
    if (jz_all < 0).any():
        warnings.warn("profile intervals need an elementwise constraint (not jm.Simplex or "
                      "jm.PositiveDefinite elements): those are reported as NaN; use "
                      "derived(fn, method='profile') for a function of them", stacklevel=4)
