"""The objective, the driver loop and its stopping rule, and the per-dataset fit stages.

Stopping rule (documented in README and docs/errors.md). f is the negative *mean*
log-likelihood (sum divided by the number of observations) on the unconstrained
scale, g its gradient and fs = max(1, |f|). The rule measures the distance to the
optimum by

    m = sqrt(g' H^-1 g)    (the Newton decrement) for methods that carry a
                           positive-definite Hessian (Newton), else
    m = max|g|

The decrement does not change when a parameter is rescaled (or any other linear
reparametrisation), so badly scaled models converge like well-scaled ones. A fit
has converged when

* m <= gtol * s, with s = fs for max|g| and s = sqrt(fs) for the decrement (whose
  square is in units of f), or
* an accepted step changed f by at most ftol * fs and either m <= 10 * gtol * s
  or the predicted decrease m^2 / 2 is at most ftol * |f| (no step can improve f
  beyond its rounding: the optimum to working precision). That floor is relative
  to |f| itself, not fs: a small f (a residual sum of squares near zero) rounds
  far below one ulp of 1, and an absolute floor would call any f of about 1e-8
  on a slowly falling valley an optimum. Only where f and m^2 / 2 are both at
  most ftol (f is zero to one ulp of 1) is the absolute unit the floor.

A step that finds no improvement ends the fit as CONVERGED when one of those
floor tests holds or the Newton step is below 100 sqrt(eps) relative to every
coordinate (f is flat to its rounding noise there and the parameters are known
to about six digits), as PRECISION_LIMIT when m is at the sqrt(eps) noise level,
and otherwise with the method's own failure code. Defaults depend on the dtype:
gtol = 1e-9 (float64) / 1e-5 (float32) for Newton, BFGS and L-BFGS, 1e-7 / 1e-4
for Adam and gradient ascent; ftol is 4 ulps.

After the loop, ``Stages.finish`` forms the Hessian once, and ``conclude`` (host
NumPy) turns it into the covariance, the positive-definiteness verdict
(HESSIAN_NOT_PD) and the runaway checks, compiling the per-coordinate probes as a
program of their own only when some fit needs them. Above
``DENSE_HESSIAN_MAX_PARAMS`` free parameters (neural networks) it does not: the
status then rests on the loop's rule above (max|g| for L-BFGS and Adam, which is
not invariant to rescaling, as for any fit by those methods), an edge or a
runaway along the path still gives AT_BOUNDARY, and ``cov`` is None.

Big data in memory (``BLOCK_MIN_ROWS`` observations or more, a model whose terms
each read their own row: ``Model.rowwise`` True or a ``LinearPredictor`` declared):
the objective and its derivatives are sums over blocks of ``block_rows`` rows, formed
one block at a time in a loop (``_Blocked``), as the chunked path (``jaxmle._chunks``)
forms them chunk by chunk. Working memory is then a bounded multiple of one block, not
of the data; the sums equal the unblocked ones to rounding. Models that declare a
``LinearPredictor`` (the ready GLMs) get the Hessian of beta as a weighted Gram
matrix X_b' diag(w) X_b per block, with the value and gradient in the same pass. Below
the threshold the program is exactly the unblocked one.

Everything here is written for one dataset; ``jaxmle._batch`` vmaps it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from . import _stats
from ._data import _host_view, data_leaves, is_rows, substitute_masked
from ._model import Model
from ._status import RUNNING, Status
from .optimizers import NO_FAILURE, FitData
from .optimizers._base import lane_while, value_grad_hessian

# A fit whose progress stalls at the floating-point floor still counts as converged
# when its gradient is within this factor of the tolerance.
FLOOR = 10.0


# -- the objective ---------------------------------------------------------------

def ready_data(model: Model, data, mask):
    """The data the log-density sees: masked entries replaced, then ``model.prepare``.

    Every fit, profile and sandwich computation calls this once, outside its loops.
    A model whose terms read every row (``Model.masks_ok`` False: Cox's risk sets)
    refuses a mask: a masked row's stand-in values would enter other rows' terms.
    """
    if mask is not None and not getattr(model, "masks_ok", True):
        raise ValueError(f"{model.name}: this model cannot take a mask (each term reads every row, so masked "
                         "rows would still count); drop the rows instead, or pad ragged batches as the "
                         "model's docstring says")
    return model.prepared(substitute_masked(data, mask))


class Objective(NamedTuple):
    """One dataset's objective pieces (``data`` already through ``ready_data``).

    ``neg_total(z)`` is minus the log-likelihood (plus log-prior); optimizers
    minimise ``mean(z, bundle) = neg_total(z) / scale`` with scale the number of
    observations (1 when unknown). For a blocked fit (``_Blocked``) both are
    callables with a ``value_grad_hessian`` method, which
    ``jaxmle.optimizers._base.value_grad_hessian`` and ``dense_hessian`` use.
    """

    neg_total: Any
    n_obs: jax.Array
    scale: jax.Array
    bundle: FitData
    pin: Any = None        # (on: bool[k], value: float[k]) or None: see ``make_objective``

    @property
    def mean(self):
        """The objective optimizers minimise, ``mean(z, data=None)``."""
        if not isinstance(self.neg_total, _Blocked):
            return self._mean
        return _WithDerivatives(self._mean, self._mean_vgh)

    def _mean(self, z, _=None):
        if self.pin is None:
            return self.neg_total(z) / self.scale
        on, value = self.pin
        # Pinned coordinates: the log-likelihood sees ``value`` there, and a decoupled
        # quadratic (in the mean's units) makes Newton's step land on it. With ``on``
        # all False both terms change nothing: the value, gradient and Hessian are the
        # unpinned ones exactly (a select and an added exact zero).
        return (self.neg_total(jnp.where(on, value, z)) / self.scale
                + 0.5 * jnp.sum(jnp.where(on, (z - value) ** 2, 0.0)))

    def _mean_vgh(self, z, _=None):
        """(f, g, H) of ``mean`` from the blocked pass: what autodiff of ``_mean`` gives."""
        if self.pin is None:
            f, g, H = self.neg_total.value_grad_hessian(z)
            return f / self.scale, g / self.scale, H / self.scale
        on, value = self.pin
        f, g, H = self.neg_total.value_grad_hessian(jnp.where(on, value, z))
        keep = ~on
        f = f / self.scale + 0.5 * jnp.sum(jnp.where(on, (z - value) ** 2, 0.0))
        g = jnp.where(keep, g / self.scale, 0.0) + jnp.where(on, z - value, 0.0)
        H = (jnp.where(keep[:, None] & keep[None, :], H / self.scale, 0.0)
             + jnp.diag(on.astype(H.dtype)))
        return f, g, H


def make_objective(model: Model, z_dtype, fixed, data, mask, n_static, pin=None) -> Objective:
    """The ``Objective`` of one dataset whose data has been made ready.

    ``pin`` = (on, value), boolean and float vectors over z, holds the coordinates where
    ``on`` is True at ``value``: the objective minimised (``Objective.mean``) is then
    the log-likelihood's at ``where(on, value, z)`` plus ``0.5 sum(on (z - value)^2)``,
    so a Newton fit lands on the pinned values and optimises the rest (a profile
    likelihood evaluation, ``jaxmle._profile``) in the fit's own compiled program.
    ``neg_total`` stays the unpinned log-likelihood.

    With ``n_static`` at least ``BLOCK_MIN_ROWS`` and a model whose terms read their own
    rows alone (``block_rows``), ``neg_total`` is a ``_Blocked`` sum over row blocks.
    """
    spec = model.spec
    if mask is not None:
        n_obs = jnp.sum(mask).astype(z_dtype)
    else:
        n_obs = jnp.asarray(np.nan if n_static is None else n_static, z_dtype)
    scale = jnp.where(jnp.isfinite(n_obs), jnp.maximum(n_obs, 1.0), 1.0)

    size = block_rows(model, data, mask, n_static)
    if size is not None:
        neg_total = _Blocked(model, fixed, data, mask, int(n_static), size)
    else:
        def neg_total(z):
            return -model.logpost(spec.to_params(z, fixed), data, mask)

    return Objective(neg_total, n_obs, scale, FitData(fixed, data, mask), pin)


# -- big data in memory: sums over row blocks ----------------------------------------

#: In-memory fits of at least this many observations (per dataset; the padded length
#: when padded) evaluate the log-likelihood, its gradient and Hessian in row blocks, for
#: models whose term i reads row i alone (``Model.rowwise`` True, or a declared
#: ``LinearPredictor``) and whose data leaves all have one row per observation. Read
#: when a fit is compiled; smaller fits compile the unblocked program.
BLOCK_MIN_ROWS = 1 << 17

#: The bytes of data in one block (rows of all data leaves together): about what a core's
#: cache holds, so a block is read from memory once per pass. Rows per block: this over a
#: row's bytes, rounded down to a power of two within [BLOCK_ROWS_MIN, BLOCK_ROWS_MAX].
BLOCK_BYTES = 1 << 20
BLOCK_ROWS_MIN = 256
BLOCK_ROWS_MAX = 1 << 14


def block_rows(model: Model, data, mask, n_static) -> int | None:
    """Rows per block for a blocked fit of this data, or None for the unblocked one."""
    if n_static is None or int(n_static) < BLOCK_MIN_ROWS:
        return None
    # A model found to read other rows (``rowwise`` False) never; a declared linear
    # predictor promises rows read alone.
    if model.rowwise is False or (model.rowwise is not True and getattr(model, "linear_predictor", None) is None):
        return None
    n = int(n_static)
    leaves = data_leaves(data)
    if not leaves or any(len(x.shape) < 1 or x.shape[0] != n for x in leaves):
        return None
    if mask is not None and tuple(np.shape(mask)) != (n,):
        return None
    return rows_per_block(leaves, n)


def rows_per_block(leaves, n: int) -> int:
    """Rows per block for arrays ``leaves`` with ``n`` rows each (see ``BLOCK_BYTES``)."""
    row_bytes = sum(int(np.prod(x.shape[1:], dtype=np.int64)) * np.dtype(x.dtype).itemsize for x in leaves)
    rows = max(1, BLOCK_BYTES // max(row_bytes, 1))
    size = 1 << (int(rows).bit_length() - 1)
    return int(min(max(size, BLOCK_ROWS_MIN), BLOCK_ROWS_MAX, n))


def block_sum(fn, data, mask, n: int, size: int, init):
    """The sum over row blocks of ``fn(block, valid)`` (a pytree like ``init``).

    Block i covers rows [i size, (i + 1) size); the last one is read as the final
    ``size`` rows, with ``valid`` False at the rows an earlier block counted, so every
    block has the same shape and the loop body is traced once. ``valid`` is also
    False at masked-out rows.
    """
    count = -(-n // size)

    def body(i, acc):
        start = jnp.minimum(i * size, n - size)
        block = jax.tree_util.tree_map(
            lambda x: x.rows(start, size) if is_rows(x) else jax.lax.dynamic_slice_in_dim(x, start, size, 0),
            data, is_leaf=is_rows)
        valid = start + jnp.arange(size) >= i * size
        if mask is not None:
            valid = valid & jax.lax.dynamic_slice_in_dim(mask, start, size, 0)
        return jax.tree_util.tree_map(jnp.add, acc, fn(block, valid))

    return jax.lax.fori_loop(0, count, body, init)


#: A big blocked fit takes its start values (``Model.start``) from this many rows, evenly
#: spaced: a start is a first guess that Newton then takes to the MLE, and a pass of
#: ``start`` over all rows would cost what a Newton pass does.
START_ROWS = 1 << 16


def start_sample(data, mask, n: int):
    """(data, mask) at ``START_ROWS`` evenly spaced rows of ``n`` (host arrays)."""
    step = max(n // START_ROWS, 1)

    def take(x):
        host = _host_view(x.host if is_rows(x) else x)
        return host[: step * START_ROWS: step]

    sample = jax.tree_util.tree_map(take, data, is_leaf=is_rows)
    return sample, None if mask is None else take(mask)


class _WithDerivatives:
    """A function of z with its (value, gradient, Hessian) computed by ``vgh``: what
    ``jaxmle.optimizers._base.value_grad_hessian`` calls instead of autodiff."""

    def __init__(self, fn, vgh):
        self._fn, self._vgh = fn, vgh

    def __call__(self, z, *args):
        return self._fn(z, *args)

    def value_grad_hessian(self, z, *_):
        return self._vgh(z)


class _Blocked:
    """Minus the log-posterior of a big dataset, summed over row blocks.

    Calling it gives the value (one pass over the blocks); autodiff of it (``jax.grad``,
    ``jax.hessian``) goes through a ``custom_jvp`` whose rule forms the gradient block
    by block, so reverse mode never holds per-row intermediates of the whole data;
    ``value_grad_hessian`` forms all three in one pass: by forward-over-reverse autodiff
    of each block, or, for a declared ``LinearPredictor``, as the weighted Gram matrix.
    """

    def __init__(self, model: Model, fixed, data, mask, n: int, size: int):
        self.model, self.fixed, self.data, self.mask = model, fixed, data, mask
        self.n, self.size = n, size
        spec = model.spec

        def block_neg(z, block, valid, fixed=fixed):
            terms = model.loglik(spec.to_params(z, fixed), block)
            if jnp.shape(terms) != (size,):
                raise ValueError(
                    f"the model is marked rowwise (model.rowwise = True) but its log-density returned shape "
                    f"{jnp.shape(terms)} for {size} rows: a rowwise model returns one term per row. Set "
                    "model.rowwise = None (or False)")
            return -jnp.sum(jnp.where(valid, terms, 0))

        self._block_neg = block_neg

        @jax.custom_jvp
        def total(z, fixed, data, mask):
            return self._sum(lambda b, v: block_neg(z, b, v, fixed), data, mask, jnp.zeros((), z.dtype))

        @total.defjvp
        def total_jvp(primals, tangents):
            # Fixed values and data are never differentiated (their tangents are zeros):
            # the rule reads the tangent of z alone.
            z, fixed, data, mask = primals
            f, g = self._sum(lambda b, v: jax.value_and_grad(block_neg)(z, b, v, fixed), data, mask,
                             (jnp.zeros((), z.dtype), jnp.zeros_like(z)))
            return f, jnp.vdot(g, tangents[0])

        self._total = total

    def _sum(self, fn, data, mask, init):
        return block_sum(fn, data, mask, self.n, self.size, init)

    def _prior(self, z):
        model = self.model
        return -jnp.asarray(model.log_prior(model.spec.to_params(z, self.fixed)), z.dtype)

    def __call__(self, z):
        f = self._total(z, self.fixed, self.data, self.mask)
        return f if self.model.log_prior is None else f + self._prior(z)

    def value_grad_hessian(self, z, *_):
        k = z.shape[0]
        gram = self._gram_pass(z)
        if gram is None:
            init = (jnp.zeros((), z.dtype), jnp.zeros_like(z), jnp.zeros((k, k), z.dtype))
            f, g, H = self._sum(lambda b, v: value_grad_hessian(lambda zz, _: self._block_neg(zz, b, v), z, None),
                                self.data, self.mask, init)
        else:
            f, g, H = gram
        if self.model.log_prior is not None:
            fp, gp, Hp = value_grad_hessian(lambda zz, _: self._prior(zz), z, None)
            f, g, H = f + fp, g + gp, H + Hp
        return f, g, H

    def _gram_pass(self, z):
        """(f, g, H) by the weighted Gram matrix for a declared ``LinearPredictor``, else None.

        With eta = X beta and theta the other natural parameters (flat), the row
        terms' derivatives in (eta_i, theta) come from autodiff of the declared row
        function (its Hessian in eta is diagonal: term i reads eta_i alone), and

            g_beta = -X' h_eta,   H_beta,beta = -X' diag(h_eta,eta) X,
            H_beta,theta = -X' h_eta,theta,   g_theta, H_theta,theta summed,

        block by block. The chain rule to z: g = J'g_q, H = J'H_q J + d2(g_q . q(z)),
        q(z) = (beta, theta) the natural parameters, J = dq/dz.
        """
        lp = getattr(self.model, "linear_predictor", None)
        data = self.data
        if lp is None or not isinstance(data, dict) or lp.x not in data or len(data[lp.x].shape) != 2:
            return None
        spec, fixed = self.model.spec, self.fixed
        params = spec.to_params(z, fixed)
        if not isinstance(params, dict) or lp.param not in params:
            return None
        X = data[lp.x]
        k = X.shape[1]
        if jnp.shape(params[lp.param]) != (k,) or not jnp.issubdtype(X.dtype, jnp.floating):
            return None
        dtype = z.dtype
        rest0 = {key: v for key, v in params.items() if key != lp.param}
        theta0, unravel = jax.flatten_util.ravel_pytree(rest0)
        theta0 = theta0.astype(dtype)
        m = theta0.shape[0]
        beta = params[lp.param]
        row, size = lp.loglik, self.size

        def total(eta, theta, block, valid):
            p = dict(unravel(theta))
            p[lp.param] = jax.lax.stop_gradient(beta)
            return jnp.sum(jnp.where(valid, row(eta, p, block), 0))

        grad = jax.grad(total, argnums=(0, 1))
        # Tangents (1, 0) and (0, e_j): the first gives diag h_eta,eta (the Hessian in eta is
        # diagonal) and sum_i h_theta,eta; the others h_eta,theta_j per row and column j of
        # H_theta,theta.
        t_eta = jnp.concatenate([jnp.ones((1, size), dtype), jnp.zeros((m, size), dtype)])
        t_theta = jnp.concatenate([jnp.zeros((1, m), dtype), jnp.eye(m, dtype=dtype)])

        def block_terms(block, valid):
            Xb = block[lp.x]
            eta = Xb @ beta
            val, (ge, gt) = jax.value_and_grad(total, argnums=(0, 1))(eta, theta0, block, valid)
            he, ht = jax.vmap(lambda te, tt: jax.jvp(lambda e, t: grad(e, t, block, valid),
                                                    (eta, theta0), (te, tt))[1])(t_eta, t_theta)
            Hbb = (Xb * he[0][:, None]).T @ Xb
            Hbt = Xb.T @ he[1:].T
            return -val, -(ge @ Xb), -gt, -Hbb, -Hbt, -ht[1:]

        init = (jnp.zeros((), dtype), jnp.zeros((k,), dtype), jnp.zeros((m,), dtype),
                jnp.zeros((k, k), dtype), jnp.zeros((k, m), dtype), jnp.zeros((m, m), dtype))
        f, gb, gt, Hbb, Hbt, Htt = self._sum(block_terms, data, self.mask, init)
        gq = jnp.concatenate([gb, gt])
        Hbb = 0.5 * (Hbb + Hbb.T)     # X'(w X) is symmetric but for the rounding of each product
        Hq = jnp.concatenate([jnp.concatenate([Hbb, Hbt], axis=1),
                              jnp.concatenate([Hbt.T, 0.5 * (Htt + Htt.T)], axis=1)], axis=0)

        def q(zz):
            pp = spec.to_params(zz, fixed)
            th, _ = jax.flatten_util.ravel_pytree({key: v for key, v in pp.items() if key != lp.param})
            return jnp.concatenate([pp[lp.param].astype(dtype), th.astype(dtype)])

        J = jax.jacfwd(q)(z)
        g = J.T @ gq
        H = J.T @ Hq @ J + jax.hessian(lambda zz: jnp.vdot(jax.lax.stop_gradient(gq), q(zz)))(z)
        return f, g, H


def tolerances(opt, dtype, tol, ftol):
    """(gtol, ftol): the user's values or the method's dtype-aware defaults."""
    gtol = opt.default_gtol(dtype) if tol is None else float(tol)
    if ftol is None:
        ftol = 4 * float(jnp.finfo(dtype).eps)
    if not (gtol > 0 and ftol >= 0):
        raise ValueError(f"tolerances must be positive, got tol={tol}, ftol={ftol}")
    return gtol, float(ftol)


# -- the driver --------------------------------------------------------------------

class Carry(NamedTuple):
    """The driver loop's carry: the optimizer state and the driver's own bookkeeping."""

    state: Any
    n_iter: jax.Array
    status: jax.Array      # RUNNING while the fit iterates, then a Status code
    evals: jax.Array       # int32[3]: objective, gradient, Hessian evaluations so far
    trace: Any             # (trace_len, 2) buffer of (objective, max|g|), or None


class _Measure(NamedTuple):
    m: jax.Array          # the distance measure: Newton decrement or max|g|
    scale: jax.Array      # what tolerances on m multiply: sqrt(fs) for the decrement, fs for max|g|
    gmax: jax.Array       # max|g|, for traces and reports
    fs: jax.Array         # max(1, |f|)
    precise: jax.Array    # predicted decrease m^2/2 within ftol * |f| (needs a Hessian)
    close: jax.Array      # Newton step below XTOL relative to z in every coordinate
    finite: jax.Array


# A fit that can make no more progress is converged when its Newton step is below this
# times sqrt(eps), relative to each coordinate: about six correct digits.
XTOL = 100.0


def _measure(opt, state, ftol) -> _Measure:
    gmax = jnp.max(jnp.abs(state.grad))
    fs = jnp.maximum(1.0, jnp.abs(state.f))
    finite = jnp.isfinite(state.f) & jnp.all(jnp.isfinite(state.grad))
    step = opt.newton_step(state)
    dec2 = opt.decrement(state, step)
    close = jnp.zeros((), bool)
    if step is not None:
        xtol = XTOL * float(np.sqrt(jnp.finfo(state.z.dtype).eps))
        close = jnp.all(jnp.abs(step) <= xtol * jnp.abs(state.z))
    if dec2 is None:
        return _Measure(gmax, fs, gmax, fs, jnp.zeros((), bool), close, finite)
    # The decrement squared is in units of f: its tolerance scales with sqrt(|f|).
    known = jnp.isfinite(dec2) & (dec2 >= 0)
    m = jnp.where(known, jnp.sqrt(jnp.where(known, dec2, 0.0)), gmax)
    scale = jnp.where(known, jnp.sqrt(fs), fs)
    # The floor: the predicted decrease is below the rounding of f itself, which is at
    # least ftol * |f|. The absolute unit in fs is only an assumption about the size of
    # the terms summed, and it fails for a small f that is not a cancellation (a
    # residual sum of squares of 1e-9 still falling along a valley: f resolves changes
    # far below one ulp of 1). It is used only when f itself is zero to that unit
    # (|f| <= ftol), where |f| says nothing about the terms' rounding.
    pred, af = 0.5 * dec2, jnp.abs(state.f)
    precise = known & ((pred <= ftol * af) | (jnp.maximum(pred, af) <= ftol))
    return _Measure(m, scale, gmax, fs, precise, close, finite)


def _record(buf, i, state, gs):
    # Iterates past the buffer are dropped: the trace is the first trace_len ones.
    if buf is None:
        return None
    row = jnp.stack([state.f, gs]).astype(buf.dtype)
    return buf.at[i].set(row, mode="drop")


def loop_start(opt, objective, z0, data, gtol: float, trace_len: int = 0, ftol: float = 0.0) -> Carry:
    """The driver's initial carry."""
    state0, info = opt.init(objective, z0, data)
    ms = _measure(opt, state0, ftol)
    status0 = _start_status(ms, gtol)
    buf0 = None
    if trace_len > 0:
        buf0 = _record(jnp.full((trace_len, 2), jnp.nan, z0.dtype), 0, state0, ms.gmax)
    return Carry(state0, jnp.zeros((), jnp.int32), status0, info.evals, buf0)


def _start_status(ms: _Measure, gtol: float):
    """The status at the start: NONFINITE, CONVERGED already, or RUNNING."""
    return jnp.where(~ms.finite, Status.NONFINITE,
                     jnp.where(ms.m <= gtol * ms.scale, Status.CONVERGED, RUNNING)).astype(jnp.int32)


def loop_placeholder(opt, z0, trace_len: int = 0) -> Carry | None:
    """The driver's initial carry before anything is evaluated (``opt.placeholder``), or
    None for a method without one. Its ``n_iter`` is -1: the loop's first iteration
    makes the carry ``loop_start`` would have made, from the step's own evaluation at
    z0, so a program holds one copy of the objective's derivatives instead of two
    (compile time: ``benchmarks/latency.py``)."""
    if not opt.folds_start():
        return None
    state = opt.placeholder(z0)
    buf = None if trace_len <= 0 else jnp.full((trace_len, 2), jnp.nan, z0.dtype)
    return Carry(state, jnp.full((), -1, jnp.int32), jnp.asarray(RUNNING, jnp.int32), jnp.zeros((3,), jnp.int32), buf)


def loop_body(opt, objective, carry: Carry, data, max_iter: int, gtol: float, ftol: float,
              placeholder: bool = True) -> Carry:
    """One iteration of the driver: a step, then the stopping rule. From a
    ``loop_placeholder`` carry (``n_iter`` -1) the iteration is the start instead:
    the evaluation at z0 and ``loop_start``'s status, with ``n_iter`` 0. A loop that
    started from ``loop_start`` may say ``placeholder=False``: its program then holds
    no code for fresh lanes."""
    state, it = carry.state, carry.n_iter + 1
    fresh = None
    if placeholder and opt.folds_start():
        fresh = carry.n_iter < 0
        new, info = opt.step(objective, state, data, active=carry.status == RUNNING, fresh=fresh)
    else:
        new, info = opt.step(objective, state, data, active=carry.status == RUNNING)
    ms = _measure(opt, new, ftol)
    m, fs, scale = ms.m, ms.fs, ms.scale
    df = jnp.abs(state.f - new.f)
    moved = jnp.any(new.z != state.z)
    at_floor = (m <= FLOOR * gtol * scale) | ms.precise
    conv = (m <= gtol * scale) | (moved & (df <= ftol * fs) & at_floor)
    failed = info.failure != NO_FAILURE
    stuck = failed | ~moved
    # A line search comparing objective values rounded to eps cannot resolve a
    # gradient below about sqrt(eps): stalling there is the dtype's limit, not a
    # rough objective.
    noise = float(np.sqrt(jnp.finfo(new.f.dtype).eps))
    gave_up = jnp.where(failed, info.failure, Status.LINESEARCH_FAILED)
    status = jnp.where(
        ~ms.finite,
        Status.NONFINITE,
        jnp.where(
            conv,
            Status.CONVERGED,
            jnp.where(
                stuck,
                jnp.where(at_floor | ms.close, Status.CONVERGED,
                          jnp.where(m <= noise * scale, Status.PRECISION_LIMIT, gave_up)),
                jnp.where(it >= max_iter, Status.MAX_ITER, RUNNING),
            ),
        ),
    ).astype(jnp.int32)
    # A non-finite step is not taken: the lane keeps its last finite point.
    keep = ms.finite
    if fresh is not None:
        # The start: loop_start's status, and its state even where it is not finite.
        status = jnp.where(fresh, _start_status(ms, gtol), status)
        it = jnp.where(fresh, 0, it)
        keep = keep | fresh
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, state)
    return Carry(state, it, status, carry.evals + info.evals, _record(carry.trace, it, state, ms.gmax))


def minimize(opt, objective, z0, data, max_iter: int, gtol: float, ftol: float, trace_len: int = 0) -> Carry:
    """The driver: one ``lax.while_loop`` of ``opt.step`` with the stopping rule.

    Args:
        opt: an optimizer following the protocol in ``jaxmle.optimizers``.
        objective: ``objective(z, data)``, the scalar to minimise.
        z0: start (flat unconstrained vector).
        trace_len: if > 0, also record (objective, max|gradient|) at the start and
            after each of the first ``trace_len - 1`` iterations in a fixed-size
            buffer (NaN beyond the last iteration); no host callbacks.

    Returns:
        The final ``Carry``. Under vmap, finished lanes are frozen by while_loop's
        batching rule at their own state.
    """
    carry = loop_placeholder(opt, z0, trace_len)
    if carry is None:
        carry = loop_start(opt, objective, z0, data, gtol, trace_len, ftol)
    return jax.lax.while_loop(
        lambda c: c.status == RUNNING,
        lambda c: loop_body(opt, objective, c, data, max_iter, gtol, ftol),
        carry,
    )


# -- one dataset's fit in stages ----------------------------------------------------

class Stages:
    """One fit split into start / iterate / finish, each a per-dataset function.

    ``solve`` chains them in one while_loop (the plain path); ``jaxmle._batch``
    calls them separately on shrinking sets of datasets (straggler compaction).
    Every function takes ``(..., z0, fixed, data, mask)`` for one dataset, with
    ``data`` already through ``ready_data``.
    """

    def __init__(self, model: Model, opt, max_iter, gtol, ftol, n_static, trace_len=0, batched=False):
        self.model, self.opt = model, opt
        self.max_iter, self.gtol, self.ftol = max_iter, gtol, ftol
        self.n_static, self.trace_len = n_static, trace_len
        # A batch inverts its information matrices in the finish program: vectorised over
        # the batch there, where NumPy on the host loops over them (0.36 s for 100,000
        # 3 x 3 matrices, a quarter of the demo's fit). A single fit inverts on the host
        # and keeps the eigendecomposition out of its program (compile time).
        self.batched = batched

    def objective(self, z0, fixed, data, mask, pin=None) -> Objective:
        return make_objective(self.model, z0.dtype, fixed, data, mask, self.n_static, pin)

    def start(self, z0, fixed, data, mask) -> Carry:
        carry = loop_placeholder(self.opt, z0, self.trace_len)
        if carry is not None:
            return carry
        obj = self.objective(z0, fixed, data, mask)
        return loop_start(self.opt, obj.mean, z0, obj.bundle, self.gtol, self.trace_len, self.ftol)

    def body(self, carry, z0, fixed, data, mask) -> Carry:
        obj = self.objective(z0, fixed, data, mask)
        return loop_body(self.opt, obj.mean, carry, obj.bundle, self.max_iter, self.gtol, self.ftol)

    def solve(self, z0, fixed, data, mask, pin=None) -> dict:
        """The whole fit; with ``pin`` (see ``make_objective``) also ``out["pinned"]``."""
        obj = self.objective(z0, fixed, data, mask, pin)
        carry = minimize(self.opt, obj.mean, z0, obj.bundle, self.max_iter, self.gtol, self.ftol,
                         self.trace_len)
        return self.finish(carry, z0, fixed, data, mask, pin)

    def finish(self, carry: Carry, z0, fixed, data, mask, pin=None) -> dict:
        """Estimates and what the final status checks need, from the loop's carry.

        Up to ``DENSE_HESSIAN_MAX_PARAMS`` free parameters the result holds a
        ``"pending"`` entry (Hessian, Jacobian, edge distances, the path probe) that
        ``conclude`` turns into the covariance and the final status on the host, so
        this program holds no eigendecomposition and no per-coordinate probes. Above
        it no Hessian is formed (see ``_first_order_checks``): ``cov`` is None and
        ``cond`` NaN.
        """
        model, spec = self.model, self.model.spec
        obj = self.objective(z0, fixed, data, mask, pin)
        state, status, scale = carry.state, carry.status, obj.scale
        z = state.z
        params = spec.to_params(z, fixed)
        # Every optimizer's state.f is the objective at state.z: no extra pass needed.
        logpost = -state.f * scale
        loglik = logpost if model.log_prior is None else logpost - model.log_prior(params)
        pending = None
        if z.shape[0] > DENSE_HESSIAN_MAX_PARAMS:
            cov, cond, boundary, status = _first_order_checks(obj, spec, state, status, z0, fixed)
        else:
            cov, cond, boundary = None, None, None
            pending = _second_order_pieces(self.opt, obj, spec, state, z0, fixed, self.batched)
        buf = carry.trace
        out = {
            "params": params,
            "z": z,
            "fixed": list(fixed),
            "loglik": loglik,
            "logpost": logpost,
            "status": status,
            "n_iter": carry.n_iter,
            "grad_norm": jnp.max(jnp.abs(state.grad)) * scale,
            "n_obs": obj.n_obs,
            "cov": cov,
            "cond": cond,
            "boundary": boundary,
            "evals": carry.evals,
            "trace": None if buf is None else {"logpost": -buf[:, 0] * scale, "grad_norm": buf[:, 1] * scale},
        }
        if pending is not None:
            out["pending"] = pending
        if pin is not None:
            # The profile likelihood's point: minus the log-likelihood at the pinned z and
            # its gradient there (whose pinned entries are the profile's slope, by the
            # envelope theorem). One gradient pass; ``fit`` drops it.
            zp = jnp.where(pin[0], pin[1], z)
            nt, g = jax.value_and_grad(obj.neg_total)(zp)
            out["pinned"] = {"z": zp, "neg_total": nt, "grad": g}
        return out

    def probes(self, z, f, Hinv, suspect, z0, fixed, data, mask):
        """``runaway_probes`` for one dataset (``data`` through ``ready_data``)."""
        return runaway_probes(self.objective(z0, fixed, data, mask), z, f, z0, Hinv, suspect)


# -- the finish step's checks -------------------------------------------------------

#: Above this many free parameters the finish step forms no Hessian: no covariance,
#: standard errors or definiteness check (``FitResult.cov`` is None). The Hessian costs
#: k Hessian-vector products, O(k^3) factorisations and ~10 k x k matrices (times the
#: batch under ``fit_batch``): an MLP on 1,000 rows took 7 s at k = 1,000 and 25 s,
#: 1.3 GB at k = 2,100 on a loaded 2-core CPU. Read when a fit is compiled.
DENSE_HESSIAN_MAX_PARAMS = 2000

# Hessian-vector products (and per-coordinate probes) evaluated together when there
# are more: bounds forward-over-reverse memory to this many copies of the gradient's
# intermediates (jax.hessian holds k of them).
HVP_CHUNK = 128


def dense_hessian(fn, z):
    """The Hessian of scalar ``fn`` at ``z`` (forward over reverse), in column chunks for big k.

    A blocked objective (``_Blocked``) forms it in its own pass over the row blocks."""
    vgh = getattr(fn, "value_grad_hessian", None)
    if vgh is not None:
        return vgh(z)[2]
    if z.shape[0] <= HVP_CHUNK:
        return jax.hessian(fn)(z)
    grad = jax.grad(fn)
    return _per_coordinate(lambda v: jax.jvp(grad, (z,), (v,))[1], jnp.eye(z.shape[0], dtype=z.dtype)).T


def _per_coordinate(fn, *xs):
    """``jax.vmap(fn)(*xs)``, evaluated HVP_CHUNK rows at a time when there are more."""
    if xs[0].shape[0] <= HVP_CHUNK:
        return jax.vmap(fn)(*xs)
    return jax.lax.map(lambda a: fn(*a), xs, batch_size=HVP_CHUNK)


def _second_order_pieces(opt, obj: Objective, spec, state, z0, fixed, invert: bool) -> dict:
    """What ``conclude`` needs from the compiled program: the Hessian of minus the
    log-likelihood (total), the Jacobian d(natural)/dz, the edge distances, the
    objective at the estimate and the probe along the fit's path; with ``invert``
    also ``inverse_information`` of the Hessian (else ``conclude`` computes it)."""
    z = state.z
    H = opt.hessian(state)
    H = dense_hessian(obj.neg_total, z) if H is None else H * obj.scale
    J = jax.jacfwd(lambda zz: spec.natural_flat(zz, fixed))(z)
    out = {"hess": H, "jac": J, "edge": spec.edge_distance_flat(z, fixed), "f": state.f,
           "scale": obj.scale, "path": _path_probe(obj, z, state.f, z0)}
    if invert:
        out["hinv"], out["pd"], out["cond"] = _stats.inverse_information(H)
    return out


def conclude(out: dict, z0, probes, wald_ok=None) -> dict:
    """Covariance, condition number, edges, runaways and the final status, on the host.

    ``out`` is ``Stages.finish``'s result for one fit or (with a leading axis) a batch,
    ``z0`` the starts, and ``probes(Hinv, suspect)`` runs ``runaway_probes`` in a
    separately compiled program: called only when some fit has a coordinate that looks
    unidentified, so the common fit never compiles it. Equal to doing all of this in
    the fit's program (``jaxmle._stats.inverse_information``) to rounding.
    ``wald_ok(params)`` (``ParamSpec.wald_ok_flat``) names the elements whose delta-method
    standard error means nothing (a probability at a vertex of ``SphereSimplex``): their
    rows and columns of the covariance are NaN.
    """
    if "pending" not in out:
        return out
    out = dict(out)
    p = {k: np.asarray(v) for k, v in out.pop("pending").items()}
    z, status = np.asarray(out["z"]), np.asarray(out["status"])
    J = p["jac"]
    if "hinv" in p:
        Hinv, pd, cond = p["hinv"], p["pd"], p["cond"]
    else:
        Hinv, pd, cond = _stats.inverse_information_host(p["hess"])
    cov = J @ Hinv @ np.swapaxes(J, -1, -2)
    se = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    with np.errstate(invalid="ignore"):
        boundary = (p["edge"] <= 0) | (p["edge"] <= 1e-3 * se)
        travel = z - np.asarray(z0)
        se_z = np.sqrt(np.diagonal(Hinv, axis1=-2, axis2=-1) / p["scale"][..., None])
        suspect = ~(se_z <= 10.0 * (1.0 + np.abs(z))) & (travel != 0)
    runaway = p["path"]
    if suspect.any():
        runaway = runaway | np.asarray(probes(Hinv, suspect))
    # A flag on an unconstrained coordinate names the natural elements it moves.
    boundary = boundary | ((np.abs(J) @ runaway.astype(J.dtype)[..., None])[..., 0] > 0)
    status = np.where(
        status == Status.CONVERGED,
        np.where(np.any(boundary, axis=-1), Status.AT_BOUNDARY,
                 np.where(pd, Status.CONVERGED, Status.HESSIAN_NOT_PD)),
        status,
    ).astype(np.int32)
    # A fit that stalled (no improving step, or the rounding floor) with its gradient and
    # its curvature both vanished (the likelihood saturated in every direction) while
    # it still rises along the way the fit travelled is running off to infinity
    # (complete separation): say so, not that a step search failed. A fit stalled on a
    # plateau where some parameters are still determined (curvature left) keeps its
    # failure status: its supremum along the path need not be the maximum.
    noise = np.sqrt(np.finfo(z.dtype).eps) * np.maximum(1.0, np.abs(p["f"]))
    gmax = np.asarray(out["grad_norm"]) / p["scale"]
    hmax = np.max(np.abs(p["hess"]), axis=(-2, -1)) / p["scale"]
    stalled = np.isin(status, (Status.LINESEARCH_FAILED, Status.PRECISION_LIMIT))
    off = stalled & (gmax <= noise) & (hmax <= noise) & np.any(p["path"], axis=-1)
    if off.any():
        moved = (np.abs(J) @ p["path"].astype(J.dtype)[..., None])[..., 0] > 0
        boundary = np.where(off[..., None], boundary | moved, boundary)
        status = np.where(off, Status.AT_BOUNDARY, status).astype(np.int32)
    if wald_ok is not None and "params" in out:
        ok = np.asarray(wald_ok(out["params"]), bool)
        if ok.size and not ok.all():
            bad = ~ok
            cov = np.where(bad[..., :, None] | bad[..., None, :], np.nan, cov)
    out.update(cov=cov, cond=cond, boundary=boundary, status=status)
    return out


def _first_order_checks(obj: Objective, spec, state, status, z0, fixed):
    """(None, NaN, boundary, status) for a fit too big for a dense Hessian.

    Kept: the loop's stopping rule (max|g| for L-BFGS and Adam, as in every fit by
    them), a parameter exactly at its edge, and the probe along the path (``_path_probe``)
    (two evaluations). Not checked: a positive-definite information (a strict
    maximum, not a ridge or saddle) and the probes that need H^-1. CONVERGED here
    means the rule held and no edge or runaway was seen; ``summary`` says so.
    """
    z, f = state.z, state.f
    dtype = z.dtype
    slack = 8 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(f), jnp.finfo(dtype).tiny)
    travel = z - z0
    rises = jnp.all(jnp.stack([obj.mean(z + t * travel) < f - slack for t in (0.1, 1.0)]))
    # Without the Jacobian, a runaway along the path names every natural element the fit moved.
    moved = spec.natural_flat(z, fixed) != spec.natural_flat(z0, fixed)
    boundary = (spec.edge_distance_flat(z, fixed) <= 0) | (rises & moved)
    status = jnp.where((status == Status.CONVERGED) & jnp.any(boundary), Status.AT_BOUNDARY,
                       status).astype(jnp.int32)
    return None, jnp.full((), jnp.nan, dtype), boundary, status


def _path_probe(obj: Objective, z, f, z0):
    """Coordinates that moved, flagged when the likelihood keeps rising along the path
    the fit travelled, z + t (z - z0) for t = 0.1 and 1 (see ``runaway_probes``)."""
    dtype = z.dtype
    slack = 8 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(f), jnp.finfo(dtype).tiny)
    travel = z - z0
    return jnp.all(jnp.stack([obj.mean(z + t * travel) < f - slack for t in (0.1, 1.0)])) & (travel != 0)


def runaway_probes(obj: Objective, z, f, z0, Hinv, suspect):
    """Unconstrained coordinates along which the likelihood keeps rising past the estimate.

    An interior optimum rises again past itself; a likelihood whose supremum lies
    at infinity (complete separation, a mixture component collapsing, a zero
    inflation or a variance component running to 0) keeps improving. Three probes:

    * along the path the fit travelled (``_path_probe``, in the fit's own program),
      which catches directions that mix coordinates (separation moves all of them);
    * here, along each ``suspect`` coordinate (one that looks unidentified: its
      standard error in z is more than 10 (1 + |z_j|), or the information is
      singular), moving it by 0.1 and 1 times max(1, |z_j - z0_j|) the way it
      travelled. Here a likelihood that does not rise again beyond rounding counts:
      flat to working precision out to there, the estimate is wherever the fit
      stopped (a zero inflation or a variance component drifting towards 0 looks
      like this);
    * here, along the flattest direction (largest variance), as far as the fit
      travelled: a ray to infinity that mixes coordinates (a ratio of parameters
      identified, their scale not) is flat along it, while each coordinate alone
      is not.

    Probing near and far keeps a far point in another basin of a multimodal
    likelihood from passing for a runaway. This runs as its own program, compiled
    only when some fit has a suspect coordinate (``conclude``); under vmap the
    probes iterate only for fits that have one.

    Returns:
        bool per coordinate of z.
    """
    dtype = z.dtype
    eps = jnp.finfo(dtype).eps
    slack = 8 * eps * jnp.maximum(jnp.abs(f), jnp.finfo(dtype).tiny)
    travel = z - z0
    probes = (0.1, 1.0)
    eye = jnp.eye(z.shape[0], dtype=dtype)

    def no_rise(step):
        return jnp.all(jnp.stack([obj.mean(z + t * step) <= f + slack for t in probes]))

    # The probes read the point through the loop's flag (NaN once it is down): left
    # loop-invariant, XLA hoists them out of the while loop and runs them for every
    # fit even when none is suspect.
    def probe(c):
        steps = jnp.where(c[0], jnp.sign(travel) * jnp.maximum(1.0, jnp.abs(travel)), jnp.nan)
        flags = _per_coordinate(lambda e, t: no_rise(e * t), eye, steps)
        return jnp.zeros((), bool), flags & suspect

    _, alone = lane_while(lambda c: c[0], probe, (jnp.any(suspect), jnp.zeros_like(suspect)))

    def flat_probe(c):
        # The flattest direction (top eigenvector of H^-1, by power iteration: no LAPACK),
        # pointed the way the fit travelled, probed as far as the fit travelled: catches a
        # runaway along a ray that mixes coordinates (x0, x2, x3 -> inf together).
        safe = jnp.where(jnp.isfinite(Hinv), Hinv, 0.0)
        v = jax.lax.fori_loop(0, 30, lambda _, v: _unit(safe @ v), _unit(jnp.abs(travel) + eps))
        v = jnp.where(jnp.vdot(v, travel) < 0, -v, v)
        # Only a likelihood that still rises strictly counts here: a direction merely flat
        # to rounding over this (borrowed) distance is a weakly identified combination.
        step = jnp.where(c[0], v * jnp.linalg.norm(travel), jnp.nan)
        falls = jnp.all(jnp.stack([obj.mean(z + t * step) < f - slack for t in probes]))
        flags = falls & (jnp.abs(v) >= 0.01 * jnp.max(jnp.abs(v)))
        return jnp.zeros((), bool), flags & (travel != 0)

    flat_ok = jnp.all(jnp.isfinite(Hinv)) & jnp.any(suspect)
    _, along_flat = lane_while(lambda c: c[0], flat_probe, (flat_ok, jnp.zeros_like(suspect)))
    return alone | along_flat


def _unit(v):
    return v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(v.dtype).tiny)
