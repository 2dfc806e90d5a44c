"""fit, fit_batch and multi-start fits: thin entry points.

They validate the inputs (``jaxmle._data``), pick the optimizer from the
registry (``jaxmle.optimizers``), fetch the compiled program from the model's
cache, and wrap its outputs in a result. The loop and its stopping rule live in
``jaxmle._solve``, the batch engine in ``jaxmle._batch``.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _solve, optimizers as _opt
from ._batch import BatchFitter, default_mesh, run_chunks
from ._compile import jit
from ._data import (BUCKET_MAX, as_arrays, batch_size, bucket_size, check_mask, device_leaves, float_dtype,
                    group_pad, n_data, nonfinite_report, pad_rows, substitute_masked, substitute_other, to_plain)
from ._model import Model
from ._result import BatchFitResult, FitResult, warn_float32
from ._solve import Stages, conclude, ready_data, tolerances
from ._stream import fit_streamed
from ._status import ConvergenceWarning, Status, message
from ._tabular import long_nonfinite_report

_NAN_POLICIES = ("raise", "status")
_USABLE = [Status.CONVERGED, Status.AT_BOUNDARY, Status.HESSIAN_NOT_PD, Status.PRECISION_LIMIT]


class _Setup(NamedTuple):
    """Validated inputs of one fit call, ready for the compiled program."""

    data: Any
    mask: Any
    opt: _opt.Optimizer
    max_iter: int
    gtol: float
    ftol: float
    n_terms: int | None
    n_static: int | None
    leaves: list
    z0: jax.Array
    fixed: list
    padded: bool      # observations padded to a shape bucket (``bucket_size``), masked out
    n_user: int | None = None     # the observation axis's length as given (before the bucket)


def _setup(model, data, method, init, max_iter, tol, ftol, mask, nan_policy, batched: bool, bucket=True,
           in_place=True):
    """Check everything about a fit call once, for single and batched fits alike.

    With ``bucket``, the observation axis is padded to ``bucket_size`` (and masked) so
    that data of another length reuses the compiled programs: for a single fit of a
    log-density that returns one term per observation (each depending on its own
    observation alone: ``rows_independent``, checked by the first padded fit), and
    for a batch that has a mask (ragged data, ``by=``), whose padding already
    assumes that. An unmasked batch keeps its exact shape, so the programs a batch
    compiles do not change once a single fit has checked the model.

    With ``in_place``, a big blocked single fit's program reads big NumPy leaves in place
    (``jaxmle._data.Rows``) instead of a device copy of them.
    """
    if not isinstance(model, Model):
        raise TypeError(f"the first argument must be a jm.Model, got {type(model).__name__}")
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {_NAN_POLICIES}, got {nan_policy!r}")
    data = as_arrays(data, keep_host=not batched)
    dtype = float_dtype(data)
    opt = _opt.resolve(method, model.n_free, model)
    max_iter = opt.default_max_iter if max_iter is None else max_iter
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    gtol, ftol = tolerances(opt, dtype, tol, ftol)
    if model.validate is not None:
        model.validate(data, batched)
    B = batch_size(data) if batched else None
    if batched and mask is None and all(x.ndim == 1 for x in jax.tree_util.tree_leaves(data)):
        shapes = [tuple(x.shape) for x in jax.tree_util.tree_leaves(data)]
        raise ValueError(
            f"fit_batch needs a leading batch axis before each dataset's observations, but the data "
            f"(shapes {shapes[:3]}) would make {B} datasets of one number each. For one dataset use "
            "jm.fit(model, data); for many, stack them as (B, n) (jm.pad for different lengths) or "
            "pass long-format data with by='group column'; if each dataset really is a single "
            "observation, give it shape (B, 1)"
        )
    mask = check_mask(mask, data, B)
    if nan_policy == "raise":
        bad = nonfinite_report(data, mask)
        if bad:
            fix = ("If they are the padding of jm.pad, pass its mask: jm.fit_batch(model, padded, "
                   "mask=mask). Otherwise mask them (mask=), drop those datasets, or pass "
                   "nan_policy='status' to give those datasets Status.NONFINITE") if batched else (
                   "Drop those observations, or pass mask= with False at them")
            raise ValueError("data contain NaN or inf: " + "; ".join(bad) + ". " + fix)
    one = _one_dataset(data, batched)
    n_terms = model.check_output(one, dtype, mask is not None)
    padded = False
    n_user = n_terms
    # A big fit summed in row blocks (``jaxmle._solve.block_rows``) is not padded: the
    # padded copy of the data would double its memory, and such a fit's compile is a
    # small part of its time.
    if bucket and n_terms is not None and n_terms == n_data(one) and model.rowwise is not False and (
            not batched or mask is not None) and not _blockable(model, n_terms):
        if n_terms <= BUCKET_MAX:
            # Padded (masked) even when n fills the bucket: one program per bucket.
            pdata, pmask = pad_rows(data, mask, n_terms, bucket_size(n_terms), int(batched))
            pdata, pmask = as_arrays(pdata), jax.device_put(np.asarray(pmask))
            pone = _one_dataset(pdata, batched)
            try:
                n_pad = model.check_output(pone, dtype, True)
            except (ValueError, TypeError):
                # The log-density is written for its data's exact length (a fixed-size
                # array inside it): no buckets for this model.
                model.rowwise = False
            else:
                data, mask, one, n_terms, padded = pdata, pmask, pone, n_pad, True
    n_static = n_terms if n_terms is not None else n_data(one)
    blocked = not batched and not padded and _solve.block_rows(model, data, mask, n_static) is not None
    # Big NumPy leaves that as_arrays kept: a blocked fit's program reads them in place.
    # Only for methods that hand the data to the objective alone (LM's residuals, EM's
    # update read it whole).
    data = device_leaves(data, rows=in_place and blocked and mask is None and model.prepare is None
                         and opt.general)
    start = model.start_leaves(*(_solve.start_sample(data, mask, n_static) if blocked else (data, mask)), batched)
    leaves = model.spec.natural_leaves(init, batch=B, start=start)
    z0 = _z_program(model, batched, dtype)(*leaves)
    fixed = model.spec.fixed_values(leaves, dtype)
    return _Setup(data, mask, opt, int(max_iter), gtol, ftol, n_terms, n_static, leaves, z0, fixed, padded,
                  n_user if padded else None)


def _z_program(model: Model, batched: bool, dtype):
    """Natural start leaves -> z0, as one small program of the model (saved with its
    programs): run op by op, the constraint maps compiled a program per operation."""
    def build():
        def one(*leaves):
            return model.spec.to_z(leaves, dtype)
        return jit(jax.vmap(one) if batched else one)

    return model.compiled(("to_z", batched, np.dtype(dtype).name), build)


def _one_dataset(data, batched: bool):
    """The shapes of one dataset: the data itself, or a batch's without its leading axis."""
    if not batched:
        return data
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), data)


def rows_independent(model: Model, z0, fixed, data, mask):
    """Whether the log-density's terms at the real observations ignore the padded ones.

    Padding to a shape bucket is exact only for a log-density whose term i depends on
    observation i alone (not on a mean or a sum over the data): its terms at the start
    must not change when the padded rows change (``substitute_masked`` vs
    ``substitute_other``). Two evaluations, inside the fit's own program.
    """
    params = model.spec.to_params(z0, fixed)
    a = model.loglik(params, model.prepared(substitute_masked(data, mask)))
    b = model.loglik(params, model.prepared(substitute_other(data, mask)))
    same = (a == b) | (jnp.isnan(a) & jnp.isnan(b))
    return jnp.all(same | ~mask)


def _blockable(model: Model, n) -> bool:
    """Whether a fit of ``n`` observations may be summed in row blocks (``jaxmle._solve``):
    part of every fit program's key, so a model marked ``rowwise`` after a fit gets the
    blocked program."""
    return (n is not None and int(n) >= _solve.BLOCK_MIN_ROWS
            and (model.rowwise is True or getattr(model, "linear_predictor", None) is not None))


def _compiled(model: Model, s: _Setup, batched: bool, trace_len: int = 0, compact: bool = False):
    """The model's cached program for this optimizer, tolerances and data signature."""
    masked = s.mask is not None
    check_rows = s.padded and not batched
    key = ("fit", s.opt, s.max_iter, s.gtol, s.ftol, s.n_static, masked, batched, trace_len, compact, check_rows,
           _blockable(model, s.n_static))

    def build():
        stages = Stages(model, s.opt, s.max_iter, s.gtol, s.ftol, s.n_static, trace_len, batched)
        if batched:
            return BatchFitter(stages, masked, compact)

        # ``pin`` (see ``jaxmle._solve.make_objective``) is data: an ordinary fit passes
        # ``no_pin`` (nothing pinned: the plain fit exactly), a profile likelihood
        # evaluation pins a coordinate, so profiles reuse this very program. Only the
        # default Newton program, which profiles run (``profile_program``), carries it:
        # another method's program ignores it and stays as small as before.
        pinnable = s.opt == _opt.resolve("newton", model.n_free, model)

        def program(z0, fixed, data, mask, pin):
            out = stages.solve(z0, fixed, ready_data(model, data, mask), mask, pin if pinnable else None)
            if check_rows:
                out["rows_independent"] = rows_independent(model, z0, fixed, data, mask)
            return out

        return jit(program)

    return model.compiled(key, build)


def no_pin(z0):
    """The ``pin`` argument of a single fit's program that pins nothing (host arrays)."""
    z0 = np.asarray(z0)
    return np.zeros(z0.shape, bool), np.zeros(z0.shape, z0.dtype)


def profile_program(model: Model, s: _Setup):
    """The single-fit program that profile likelihoods run, and the setup it is keyed by.

    A default Newton fit (the optimizer, iteration cap and tolerances of
    ``method="newton"``) of the same model, data signature and padding as the fit in
    ``s``: for a Newton fit with default tolerances (``method="auto"`` on up to 200
    parameters) the very program that fit compiled and ran; for fits by another
    method, one Newton program shared with Newton fits.
    """
    opt = _opt.resolve("newton", model.n_free, model)
    gtol, ftol = tolerances(opt, np.asarray(s.z0).dtype, None, None)
    p = s._replace(opt=opt, max_iter=int(opt.default_max_iter), gtol=gtol, ftol=ftol)
    return _compiled(model, p, False), p


def _probes(model: Model, s: _Setup):
    """The runaway probes of one fit as their own program (``jaxmle._solve.conclude``)."""
    def build():
        stages = Stages(model, s.opt, s.max_iter, s.gtol, s.ftol, s.n_static)
        return jit(lambda z, f, Hinv, suspect, z0, fixed, data, mask: stages.probes(
            z, f, Hinv, suspect, z0, fixed, ready_data(model, data, mask), mask))

    return model.compiled(("probes", s.n_static, s.mask is not None, _blockable(model, s.n_static)), build)


def _warn_status(res, stacklevel):
    """The fit's warning: non-convergence, the parameters at a boundary, or unidentified ones."""
    code = int(res.status)
    text = None
    if code == Status.AT_BOUNDARY:
        names = res.boundary_params
        shown = names if len(names) <= 10 else names[:10] + [f"... {len(names) - 10} more"]
        text = (f"fit status AT_BOUNDARY: {shown} at a constraint edge or running off "
                f"to infinity. {message(code)}")
    elif code != Status.CONVERGED:
        text = f"fit status {Status(code).name}: {message(code, res.dtype)}"
    elif res.hessian_skipped:
        # Converged, but no standard errors: say so once, not as a convergence problem.
        warnings.warn(res.stderr_note, UserWarning, stacklevel=stacklevel + 1)
    else:
        est, se = np.abs(np.asarray(res.estimate_flat)), np.asarray(res._se_flat())
        vague = [n for n, e, s in zip(res.param_names, est, se) if s > 1e3 * e + 1e3]
        if vague:
            text = (f"standard errors of {vague} exceed 1000 x |estimate| + 1000: those parameters are "
                    "practically unidentified by these data (a flat likelihood; check the model)")
    if text is not None:
        if res.hessian_skipped:
            text = f"{text}. Also: {res.stderr_note}"
        warnings.warn(text, ConvergenceWarning, stacklevel=stacklevel + 1)
    _warn_negative_scale(res, stacklevel + 1)


def _warn_negative_scale(res, stacklevel):
    """Warn when an unconstrained parameter named like a scale (sigma, sd, ...) ends negative.

    Many log-densities (jax.scipy.stats.norm.logpdf among them) accept a negative
    scale and give the same likelihood as its absolute value, so the fit "converges"
    to a value that is not a scale at all.
    """
    spec = res.model.spec
    leaves = spec.flatten(res.params)
    neg = [spec.leaf_names[i] for i in res.model.scale_like_leaves if np.any(np.asarray(leaves[i]) < 0)]
    if neg:
        warnings.warn(
            f"parameter(s) {neg} look like scales but ended negative in "
            f"{'some fits' if np.ndim(res.loglik) else 'the fit'}: the log-density accepts a negative "
            f"scale. Constrain them in the spec, e.g. {{{neg[0].split('.')[-1]!r}: jm.Positive(1.0)}}",
            UserWarning, stacklevel=stacklevel + 1,
        )


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
    chunk_size: int | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    progress: bool | None = None,
    bucket: bool = True,
) -> FitResult:
    """Maximise the model's log-likelihood on one dataset.

    Args:
        model: a ``jm.Model``.
        data: an array or any pytree of arrays, passed to the log-density as is.
        method: "auto" (Newton up to 200 free parameters, L-BFGS above), "newton",
            "bfgs", "lbfgs", "adam", "gd", any name in ``jm.optimizers.METHODS``, or
            an optimizer instance (e.g. ``jm.optimizers.Adam(learning_rate=0.01)``).
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
        chunk_size: stream the observations through the device this many rows at a
            time (numpy arrays, ``np.memmap``, or a callable yielding chunks): every
            objective, gradient and Hessian is a sum over chunks, so the MLE and its
            standard errors equal the in-memory fit's while peak memory is set by
            the chunk size. See README, "Data bigger than memory".
        batch_size, epochs, max_steps: a stochastic fit (``method="adam"`` or
            ``"sgd"``) on mini-batches of ``batch_size`` rows, shuffled per epoch
            with ``key``; the status and standard errors are computed on the full
            data at the end.
        progress: show a progress bar over passes of a streamed fit.
        bucket: pad the observations to a shape bucket (8, 16, 32, ..., then steps of
            at most 25%; ``jaxmle._data.bucket_size``) with a mask, so data of another
            length reuse the compiled programs; results equal the unpadded fit's to
            rounding. Only for a log-density that returns one term per observation,
            each depending on its own observation alone (checked in the first fit;
            a model whose terms read other rows is then fitted at exact lengths).
            False fits at the exact shape.

    Returns:
        A ``FitResult``.

    Example:
        >>> res = jm.fit(model, jnp.array([240., 255., 261., 248., 271.]))
        >>> res.params["mu"]   # 255.0
    """
    closed = getattr(model, "closed_form_fit", None)   # a ready model with a closed-form MLE (naive Bayes)
    if closed is not None and method == "auto" and init is None and int(n_starts) == 1 and not int(trace) \
            and chunk_size is None and batch_size is None and epochs is None and max_steps is None:
        return closed(to_plain(data), mask=mask, warn=warn)
    if chunk_size is not None or batch_size is not None:
        if int(n_starts) > 1 or int(trace):
            raise ValueError("n_starts= and trace= need the data in memory: drop chunk_size=/batch_size=, "
                             "or run several streamed fits from different init= values")
        res = fit_streamed(model, data, method=method, init=init, max_iter=max_iter, tol=tol,
                           ftol=ftol, mask=mask, warn=warn, key=key, chunk_size=chunk_size,
                           batch_size=batch_size, epochs=epochs, max_steps=max_steps, progress=progress)
        if warn:
            _warn_negative_scale(res, stacklevel=2)
        return res
    if epochs is not None or max_steps is not None:
        raise ValueError("epochs= and max_steps= belong to a stochastic fit: pass batch_size= too "
                         "(e.g. method='adam', batch_size=4096, epochs=5)")
    # Multi-start fits run as a batch, which pads only models known to treat rows alone.
    s = _setup(model, data, method, init, max_iter, tol, ftol, mask, "raise", batched=False,
               bucket=bucket and (int(n_starts) == 1 or bool(model.rowwise)), in_place=int(n_starts) == 1)
    if int(n_starts) > 1:
        res = _multistart(model, s, int(n_starts), key)
    else:
        out = _compiled(model, s, False, int(trace))(s.z0, s.fixed, s.data, s.mask, no_pin(s.z0))
        out.pop("pinned", None)
        hess = out["pending"]["hess"] if "pending" in out else None
        out = conclude(out, s.z0, lambda Hinv, suspect: _probes(model, s)(
            out["z"], out["pending"]["f"], Hinv, suspect, s.z0, s.fixed, s.data, s.mask),
            model.spec.wald_ok_flat)
        if "rows_independent" in out:
            model.rowwise = bool(out.pop("rows_independent"))
            if not model.rowwise:
                # Terms that read other observations (a mean over the data, a risk set):
                # padding would change them, so this model is fitted at exact lengths.
                return fit(model, data, method, init, max_iter, tol, ftol, mask, warn, n_starts, key, trace,
                           bucket=False)
        res = FitResult(model, s.opt.name, out, data=s.data, mask=s.mask, n_terms=s.n_terms)
        res._memo["n_user"] = s.n_user
        # What profile likelihoods need to rerun this fit's program with a coordinate
        # pinned (``jaxmle._profile``): its setup, and the Hessian of a Newton fit at
        # the estimate (another method's may be an approximation: recomputed there).
        res._memo["fit_setup"] = s
        if hess is not None and s.opt == _opt.resolve("newton", model.n_free, model):
            res._memo["fit_hess"] = hess
        if int(res.status) == Status.NONFINITE and int(res.n_iter) == 0:
            start = {n: np.asarray(v).tolist() for n, v in zip(model.spec.leaf_names, s.leaves)}
            raise ValueError(
                f"the log-likelihood (or its gradient) is not finite at the start values {start}; "
                "choose start values where the data are possible (init= or the spec)"
            )
    if warn:
        _warn_status(res, stacklevel=2)
        _warn_x64_off(res, stacklevel=2)
    return res


def _multistart(model: Model, s: _Setup, n_starts: int, key) -> FitResult:
    """Run n_starts fits of one dataset as one batch and keep the best (see ``fit``)."""
    spec = model.spec
    key = jax.random.key(0) if key is None else key
    keys = jax.random.split(key, n_starts - 1)
    if model.init_fn is not None:
        # Masked-out (padded, NaN) observations replaced, as the log-density sees them.
        drawn = jax.vmap(model.init_fn, in_axes=(0, None))(keys, substitute_masked(s.data, s.mask))
        drawn = spec.flatten(drawn)
    else:
        zs = s.z0 + jax.random.normal(keys[0], (n_starts - 1,) + s.z0.shape, s.z0.dtype)
        drawn = jax.vmap(lambda z: spec.to_leaves(z, s.fixed))(zs)
    starts = [np.concatenate([np.asarray(b)[None], np.asarray(d)], axis=0) for b, d in zip(s.leaves, drawn)]
    leaves = spec.natural_leaves(spec.unflatten(starts), batch=n_starts)
    z0 = jax.vmap(lambda *ls: spec.to_z(ls, s.z0.dtype))(*leaves)
    fixed = spec.fixed_values(leaves, s.z0.dtype)
    reps = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n_starts,) + a.shape), s.data)
    rmask = None if s.mask is None else jnp.broadcast_to(s.mask, (n_starts,) + s.mask.shape)
    out = _compiled(model, s, True)(z0, fixed, reps, rmask)
    status = np.asarray(out["status"])
    lp = np.asarray(out["logpost"])
    lp = np.where(np.isfinite(lp), lp, -np.inf)
    usable = np.isin(status, _USABLE)
    pool = np.where(usable, lp, -np.inf) if usable.any() else lp
    best = int(np.argmax(pool))
    at_best = usable & (np.abs(lp - lp[best]) <= 1e-6 * max(1.0, abs(lp[best])))
    info = {"n": n_starts, "converged": int((status == Status.CONVERGED).sum()),
            "at_best": int(at_best.sum()), "best": best}
    one = jax.tree_util.tree_map(lambda a: a[best], out)
    return FitResult(model, s.opt.name, one, data=s.data, mask=s.mask, n_terms=s.n_terms, starts=info)


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
    compact: bool | str | None = None,
    by: str | None = None,
    bucket: bool = True,
) -> BatchFitResult:
    """Fit the same model to B datasets in one compiled, vectorised call.

    Every data leaf carries a leading batch axis B. Each fit runs the same loop as
    ``fit`` under ``jax.vmap``; a finished fit is frozen at its own optimum while the
    others continue, and each gets its own ``status``. Once the fits run, nothing
    raises for one bad dataset: it gets a status code and the others are untouched.
    Input errors raise for the whole call, including NaN/inf at an unmasked position
    of any dataset under the default ``nan_policy="raise"`` (``"status"`` gives such a
    dataset the NONFINITE status instead).

    Args:
        model: a ``jm.Model``.
        data: pytree of arrays, each with leading axis B; or, with ``by``, long-format
            data (a pandas DataFrame or a dict of equally long columns).
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
            rest). True: always; "auto" (the default for batches of at least 1024
            datasets on one device): a new bucket size is compiled only once the
            stragglers have cost as much as compiling did, so a first call does not
            pay compilations that its few remaining steps never repay; False (the
            default when sharding over several devices, or for smaller batches): never.
        by: name of a column of long-format ``data`` holding a group label: one fit
            per group, the other columns padded as by ``jm.pad`` with the mask
            passed for you. Groups come in sorted label order; ``batch.groups``
            holds the labels, ``batch.group(label)`` one fit, and ``to_frame()``
            is indexed by them.
        bucket: when the batch has a mask (ragged data, ``by=``), pad each dataset's
            observations to a shape bucket (as ``fit`` does), so other lengths
            reuse the compiled programs. False keeps the exact shape.

    Returns:
        A ``BatchFitResult`` whose fields have a leading axis B.

    Example:
        >>> batch = jm.fit_batch(model, xs)        # xs.shape == (10_000, 100)
        >>> batch.params["mu"].shape               # (10000,)
        >>> jm.fit_batch(model, df, by="star_id").to_frame()   # one row per star
    """
    groups = None
    if by is not None:
        if mask is not None:
            raise ValueError("pass either by= (which builds the mask) or mask=, not both")
        if nan_policy == "raise":
            bad = long_nonfinite_report(data, by)
            if bad:
                raise ValueError("data contain NaN or inf: " + "; ".join(bad) + ". Drop or fill those rows "
                                 "(df.dropna()), or pass nan_policy='status' to give those groups "
                                 "Status.NONFINITE")
        data, mask, groups = group_pad(data, by)
    s = _setup(model, data, method, init, max_iter, tol, ftol, mask, nan_policy, batched=True, bucket=bucket)
    B = int(s.z0.shape[0])
    mesh = default_mesh(mesh)
    if compact is None:
        per_call = B if chunk_size is None else min(int(chunk_size), B)
        compact = "auto" if mesh is None and per_call >= 1024 else False
    fn = _compiled(model, s, True, int(trace), compact if mesh is None else False)
    out = run_chunks(fn, (s.z0, s.fixed, s.data, s.mask), B, chunk_size, progress, mesh)
    res = BatchFitResult(model, s.opt.name, out, data=s.data, mask=s.mask, n_terms=s.n_terms,
                         groups=groups, group_key=by)
    res._memo["n_user"] = s.n_user
    _warn_negative_scale(res, stacklevel=2)
    status = np.asarray(res.status)
    n_edge = int(np.sum(status == Status.AT_BOUNDARY))
    if n_edge:
        warnings.warn(f"{n_edge} of {B} fits ended AT_BOUNDARY ({res.boundary_params} at a constraint "
                      "edge or running off to infinity; see batch.boundary)", ConvergenceWarning, stacklevel=2)
    n_flat = int(np.sum(status == Status.HESSIAN_NOT_PD))
    if n_flat:
        warnings.warn(f"{n_flat} of {B} fits ended HESSIAN_NOT_PD: {message(Status.HESSIAN_NOT_PD)} "
                      "(np.flatnonzero(batch.status == jm.Status.HESSIAN_NOT_PD) lists them)",
                      ConvergenceWarning, stacklevel=2)
    _warn_x64_off(res, stacklevel=2)
    return res


def _warn_x64_off(res, stacklevel):
    """The float32 warning at fit time when JAX's 64-bit mode is off (the usual cause)."""
    if not jax.config.jax_enable_x64:
        warn_float32(res.dtype, stacklevel=stacklevel + 1)
