"""The optimizer protocol and the pieces the methods share.

An optimizer is a small frozen dataclass of hyper-parameters (hashable: it is part
of the compile-cache key) with

* ``init(objective, z0, data) -> (state, info)``
* ``step(objective, state, data, active) -> (state, info)``
* ``hessian(state)``: the objective's Hessian at ``state.z`` if the method carries
  it, else None (the driver then computes it once, at the end).
* ``decrement(state)`` and ``newton_step(state)``: the Newton decrement g' H^-1 g
  and the Newton step H^-1 g if the method has them, else None (see the stopping
  rule in ``jaxmle._solve``).
* optionally ``folds_start()`` True and ``placeholder(z0)``: a state at ``z0`` that
  nothing was evaluated for, from which ``step(..., fresh=...)`` makes what ``init``
  would have made (one evaluation at z0) for the lanes where ``fresh`` holds. The
  driver then starts its loop from the placeholder, so the program holds one copy
  of the objective's derivatives (the step's), not two. By default ``init`` starts.

``objective(z, data)`` is the scalar to *minimise* (the negative mean
log-likelihood). ``state`` is the method's own ``NamedTuple`` whose first three
fields are ``z`` (the point), ``f`` (the objective there) and ``grad`` (its
gradient); everything else in it is carried from step to step. ``info`` is a
``StepInfo`` of diagnostics that are not carried: evaluations used, and the
method's verdict on its own step (``failure``, a ``jm.Status`` code or
``NO_FAILURE``). Only the driver (``jaxmle._solve``) loops; ``step`` does one
iteration (a line search inside it may loop over step lengths). Under vmap every
lane runs every step, finished ones included (their results are discarded);
``active`` is False for those, and inner loops should not iterate for them.

Adding a method: one file in this package with the dataclass, and one line in
the registry (``METHODS`` in ``jaxmle/optimizers/__init__.py``, or
``jm.optimizers.register`` at run time).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from .._status import RUNNING, Status

# ``StepInfo.failure`` when the step did not fail.
NO_FAILURE = RUNNING


class FitData(NamedTuple):
    """What the driver passes as ``data`` to ``objective``, ``init`` and ``step``.

    Gradient-based methods only hand it on to the objective; EM reads it to run
    the model's own update.
    """

    fixed: Any
    data: Any
    mask: Any


class StepInfo(NamedTuple):
    """Diagnostics of one ``init`` or ``step`` call (not carried to the next step).

    Attributes:
        evals: int32[3], evaluations of the objective, gradient and Hessian used.
        failure: int32, ``NO_FAILURE`` or the ``jm.Status`` code the fit ends with
            unless the driver's stall rule finds it converged (e.g.
            ``LINESEARCH_FAILED`` when no acceptable step was found).
    """

    evals: jax.Array
    failure: jax.Array


class Optimizer:
    """Base class: hyper-parameters live in dataclass fields of subclasses.

    Class attributes: ``name`` (the registry name), ``default_max_iter``, and
    ``general`` (False for methods that need something a general model lacks, such
    as EM's update; the CLI and ``jm.bench`` list general methods only).
    """

    name: ClassVar[str] = "base"
    default_max_iter: ClassVar[int] = 100
    general: ClassVar[bool] = True

    @classmethod
    def create(cls, model=None) -> "Optimizer":
        """The instance ``method=<name>`` builds for ``model`` (default settings)."""
        return cls()

    def default_gtol(self, dtype) -> float:
        """Gradient tolerance for the stopping rule (relative to max(1, |f|))."""
        return 1e-9 if jnp.finfo(dtype).bits == 64 else 1e-5

    def init(self, objective, z0, data) -> tuple[Any, StepInfo]:  # pragma: no cover
        raise NotImplementedError

    def step(self, objective, state, data, active=True) -> tuple[Any, StepInfo]:  # pragma: no cover
        raise NotImplementedError

    def hessian(self, state):
        """The objective's Hessian at ``state.z`` if the method already has it, else None."""
        return None

    def folds_start(self) -> bool:
        """Whether ``step(..., fresh=...)`` can start the fit from ``placeholder(z0)``."""
        return False

    def placeholder(self, z0):
        """A state at ``z0`` for ``step(..., fresh=...)`` to start from (see ``folds_start``)."""
        return None

    def newton_step(self, state):
        """The Newton step H^-1 g at ``state`` if the method can give it, else None.

        When a fit can make no more progress (its step failed), a Newton step below
        a relative size of 100 sqrt(eps) in every coordinate means the optimum is
        within that distance: the objective is flat to rounding and the parameters
        are determined to about six digits (see ``jaxmle._solve``).
        """
        return None

    def decrement(self, state, step=None):
        """The Newton decrement g' H^-1 g at ``state`` if the method can give it, else None.

        The stopping rule then measures the distance to the optimum in a way no
        rescaling of the parameters changes (NaN where it is unavailable for a fit,
        e.g. an indefinite Hessian: the rule falls back to max|g| there). By default
        it is g' (H^-1 g) from ``step`` (``newton_step``'s result, passed in so the
        driver solves with H once: with jax 0.10, two independent batched LAPACK
        solves in one program can deadlock XLA:CPU).
        """
        step = self.newton_step(state) if step is None else step
        return None if step is None else jnp.vdot(state.grad, step)


def info(n_f, n_g, n_h, failure=None) -> StepInfo:
    """A ``StepInfo`` with evaluation counts [objective, gradient, Hessian]."""
    evals = jnp.stack([jnp.asarray(n, jnp.int32) for n in (n_f, n_g, n_h)])
    failure = jnp.asarray(NO_FAILURE if failure is None else failure, jnp.int32)
    return StepInfo(evals, failure)


def failed_if(flag, code=Status.LINESEARCH_FAILED):
    """``code`` where ``flag`` holds, else ``NO_FAILURE`` (for ``StepInfo.failure``)."""
    return jnp.where(flag, jnp.int32(code), jnp.int32(NO_FAILURE))


def value_grad_hessian(objective, z, data):
    """(f, grad, Hessian) in one forward-over-reverse pass (the gradient rides along).

    An objective with a ``value_grad_hessian(z, data)`` method of its own (a big
    in-memory fit summed over row blocks, ``jaxmle._solve._Blocked``) forms them there.
    """
    own = getattr(objective, "value_grad_hessian", None)
    if own is not None:
        return own(z, data)

    def grad_aux(zz):
        f, g = jax.value_and_grad(objective)(zz, data)
        return g, (f, g)

    H, (f, g) = jax.jacfwd(grad_aux, has_aux=True)(z)
    return f, g, H


@jax.custom_batching.custom_vmap
def any_lane(flag):
    """``flag`` for one fit; under vmap, whether it is True for any fit in the batch.

    The batched result is one unbatched boolean, which makes a ``lax.while_loop``
    predicate the whole batch shares (see ``lane_while``).
    """
    return flag


@any_lane.def_vmap
def _any_lane_vmap(axis_size, in_batched, flag):
    (batched,) = in_batched
    return (jnp.any(flag) if batched else flag), False


def lane_while(pending, body, carry):
    """``carry = body(carry)`` while ``pending(carry)``: a per-fit while loop that vmaps cheaply.

    Per fit it is ``lax.while_loop(pending, body, carry)``. Under vmap the loop runs
    while any fit is pending and each fit keeps only the updates made while its own
    ``pending`` held, which is what vmap of a while_loop does too; but a vmapped
    while_loop with a per-fit predicate measured about half an (f, gradient,
    Hessian) pass of overhead per loop even when no fit looped, and this does not.
    """

    def step(c):
        keep = pending(c)
        new = body(c)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, c)

    return jax.lax.while_loop(lambda c: any_lane(pending(c)), step, carry)


def descent_direction(g, d):
    """``d`` if it is a descent direction for gradient ``g``, else ``-g``."""
    return jnp.where(jnp.vdot(g, d) < 0, d, -g)


def backtracking(objective, data, z, f, g, d, max_steps=40, c1=1e-4, shrink=0.5, f1=None, active=True):
    """Armijo backtracking along ``d`` from step length 1.

    A non-descent direction is replaced by steepest descent. Non-finite trial
    values count as "too far" (the step then shrinks 10x instead of 2x), so an
    objective that overflows makes the search back off instead of returning NaN. A
    slack of a few ulps of |f| accepts steps that only fail by roundoff near the
    optimum.

    Args:
        f1: the objective at ``z + d`` when the caller has it already (``d`` must
            then be a descent direction, see ``descent_direction``).
        active: False for a dataset whose fit has finished; under vmap its lane
            still runs the step (the result is discarded), and this keeps it from
            making every lane pay for a full backtracking search.

    Returns:
        (z_new, f_new, ok, n_evals): the accepted point (or the old one with
        ok=False) and the number of objective evaluations used (``f1`` counts).
    """
    d = descent_direction(g, d)
    slope = jnp.vdot(g, d)
    slack = 4 * jnp.finfo(f.dtype).eps * jnp.abs(f)

    def accept(alpha, f_new):
        return jnp.isfinite(f_new) & (f_new <= f + c1 * alpha * slope + slack)

    def pending(c):
        _, _, k, ok = c
        return (~ok) & (k < max_steps) & active

    def body(c):
        alpha, f_prev, k, _ = c
        # An overflowing trial (inf/NaN) says the step is far too long: shrink 10x.
        alpha = alpha * jnp.where(jnp.isfinite(f_prev), shrink, 0.1)
        f_new = objective(z + alpha * d, data)
        return alpha, f_new, k + 1, accept(alpha, f_new)

    one = jnp.ones((), f.dtype)
    f1 = objective(z + d, data) if f1 is None else f1
    alpha, f_new, k, ok = lane_while(pending, body, (one, f1, jnp.zeros((), jnp.int32), accept(one, f1)))
    return jnp.where(ok, z + alpha * d, z), jnp.where(ok, f_new, f), ok, k + 1
