"""Profile-likelihood curves and their plot (``res.profile``, ``res.plot_profile``).

A curve is the profile log-likelihood on a grid of values of one parameter: every
grid point is one Newton solve of the other parameters, warm-started on the Wald
tangent of the profile path. For a single fit each point is one call of the fit's
own compiled program with the parameter pinned as data (``jaxmle._profile.PinnedFit``);
for a batch, the points of every dataset are lanes of one vmapped, compiled call.
Profiling by hand with ``jm.Fixed`` in a loop builds a new model, and so compiles,
for every value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _stats
from ._compile import jit
from ._profile import PinnedFit, _information_inverse, _pinned_solve, _run, _setup, _z_index, profile_intervals
from ._solve import make_objective, ready_data
from ._status import Status

_CURVE_ITERS = 200


def element_index(result, name: str) -> int:
    """Index into ``param_names`` of ``name``: an element ("beta[1]") or a scalar parameter."""
    names = result.param_names
    if name in names:
        return names.index(name)
    spec = result.model.spec
    if name in spec.leaf_names:
        i = spec.leaf_names.index(name)
        if spec.is_fixed[i]:
            raise ValueError(f"{name!r} is fixed (jm.Fixed): there is no profile to compute")
        raise ValueError(f"{name!r} has several elements: name one, e.g. {name + '[0]'!r}")
    raise ValueError(f"unknown parameter {name!r}; the free parameters are {names}")


def _free_leaves(result):
    return jax.tree_util.tree_leaves(result.params)


def _to_z(result, j: int, jz: int, values):
    """z_jz for natural values of element j (leading axes of ``values`` as the batch's, then points).

    One small program per model and shape of ``values``, with the element as an argument
    (run op by op, the same mapping compiled a program per operation).
    """
    spec = result.model.spec
    dtype = result.z.dtype
    batched = np.ndim(result.loglik) == 1

    def build():
        def one(leaves, v, j, jz):
            flat = jnp.concatenate([jnp.ravel(x) for x, f in zip(leaves, spec.is_fixed) if not f])
            return spec.to_z(spec.replace_free(leaves, flat.at[j].set(v)), dtype)[jz]

        f = jax.vmap(one, in_axes=(None, 0, None, None))
        if batched:
            f = jax.vmap(f, in_axes=(0, 0, None, None))
        return jit(f)

    fn = result.model.compiled(("profile_to_z", batched, np.dtype(dtype).name), build)
    return np.asarray(fn(_free_leaves(result), np.asarray(values, dtype), np.int32(j), np.int32(jz)))


def _single_curve(result, jz: int, z_grid):
    """The profile log-likelihood of a single fit at pinned values ``z_grid`` of z_jz: each
    point one call of the fit's own compiled program (``jaxmle._profile.PinnedFit``),
    started on the Wald tangent of the profile path."""
    fit = PinnedFit(result)
    z_hat = fit.z_hat
    Hinv = _stats.inverse_information_host(fit.hessian())[0]
    with np.errstate(all="ignore"):
        tangent = np.where(np.isfinite(Hinv[:, jz]), Hinv[:, jz] / Hinv[jz, jz], 0.0)
    out = np.full(np.shape(z_grid), np.nan, fit.dtype)
    for i, v in enumerate(np.asarray(z_grid, np.float64)):
        if not np.isfinite(v):
            continue
        z0 = z_hat + (v - z_hat[jz]) * tangent
        _, ll, _, status, _ = fit.solve(z0, jz, v, retry=z_hat)
        if status in (Status.CONVERGED, Status.PRECISION_LIMIT):
            out[i] = ll
    return out


def _inside(result, j, jz, est, end):
    """``end`` moved towards ``est`` (halving the distance) until it is inside the domain."""
    end = np.array(end, dtype=float)
    for _ in range(60):
        bad = ~np.isfinite(_to_z(result, j, jz, end[..., None])[..., 0])
        if not bad.any():
            break
        end = np.where(bad, est + 0.5 * (end - est), end)
    return end


def _grid(result, j, jz, n_points, bound, level):
    est = np.asarray(result.estimate_flat)[..., j]
    if bound is None:
        ci, _ = profile_intervals(result, level, elements=(j,))
        lo, hi = ci[..., 0, 0], ci[..., 0, 1]
        se = np.asarray(result.stderr_flat)[..., j]
        fallback = np.where(np.isfinite(se), 3.0 * se, np.maximum(np.abs(est), 1.0))
        span_lo = np.where(np.isfinite(lo), est - lo, fallback)
        span_hi = np.where(np.isfinite(hi), hi - est, fallback)
        a = _inside(result, j, jz, est, est - 1.25 * span_lo)
        b = _inside(result, j, jz, est, est + 1.25 * span_hi)
    elif np.ndim(bound) == 0:
        se = np.asarray(result.stderr_flat)[..., j]
        a = _inside(result, j, jz, est, est - float(bound) * se)
        b = _inside(result, j, jz, est, est + float(bound) * se)
    else:
        a, b = (np.broadcast_to(np.asarray(x, float), np.shape(est)) for x in bound)
    u = np.linspace(0.0, 1.0, int(n_points))
    return a[..., None] + (b - a)[..., None] * u


def profile_curve(result, name: str, n_points: int = 30, bound=None, level: float = 0.95,
                  progress: bool | None = None) -> dict:
    """The profile log-likelihood of one parameter on a grid, in one batched call.

    Args:
        result: a FitResult or BatchFitResult (then one curve per dataset).
        name: a scalar parameter ("k") or an element ("beta[1]").
        n_points: grid size.
        bound: the grid's range: None (default) spans the profile interval at
            ``level`` with a quarter of each half-width added beyond it; a number k
            spans estimate -/+ k standard errors (as iminuit's ``mnprofile``); a pair
            (low, high) is used as it is. Ends outside the parameter's domain are
            pulled inside.
        level: coverage of the interval the default range is built around.
        progress: progress bar over chunks of datasets (see ``jm.fit_batch``).

    Returns:
        {"grid": values (n_points,), "loglik": profile log-likelihood at them}, with
        a leading batch axis for a batch; NaN where a solve failed. For a MAP fit the
        curve is the profile log-posterior, as the profile intervals use.

    Example:
        >>> prof = res.profile("shape", n_points=30)
        >>> prof["grid"], prof["loglik"]
    """
    j = element_index(result, name)
    jz = int(_z_index(result.model.spec)[j])
    if jz < 0:
        raise ValueError(f"{name!r} is an element of a jm.Simplex or jm.PositiveDefinite parameter: "
                         "profile a function of it with derived(fn, method='profile') instead")
    grid = _grid(result, j, jz, n_points, bound, level)
    z_grid = _to_z(result, j, jz, grid)
    model = result.model
    batched, n_static, gtol, ftol = _setup(result)
    if not batched:
        return {"grid": grid, "loglik": _single_curve(result, jz, z_grid)}
    mask = result._mask

    def build():
        def curve(z_hat, fixed, data, mk, values, jz):
            obj = make_objective(model, z_hat.dtype, fixed, ready_data(model, data, mk), mk, n_static)
            Hinv = _information_inverse(obj, z_hat)
            tangent = jnp.where(jnp.isfinite(Hinv[:, jz]), Hinv[:, jz] / Hinv[jz, jz], 0.0)

            def point(v):
                z0 = z_hat + (v - z_hat[jz]) * tangent
                z0 = jnp.where(jnp.isfinite(obj.neg_total(z0)), z0, z_hat)
                _, ll, _, status = _pinned_solve(obj, gtol, ftol, z0, jz, v, max_iter=_CURVE_ITERS)
                good = (status == Status.CONVERGED) | (status == Status.PRECISION_LIMIT)
                return jnp.where(good & jnp.isfinite(v), ll, jnp.nan)

            return jax.vmap(point)(values)

        if batched:
            curve = jax.vmap(curve, in_axes=(0, 0, 0, 0 if mask is not None else None, 0, 0))
        return jit(curve)

    # The parameter rides along as an argument: one compilation serves them all.
    fn = model.compiled(("profile_curve", batched, mask is not None, n_static), build)
    jz_arg = jnp.full(np.shape(result.loglik), jz, jnp.int32)
    ll = _run(fn, (result.z, result.fixed, result._data, mask, jnp.asarray(z_grid, result.z.dtype), jz_arg),
              batched, progress)
    return {"grid": grid, "loglik": np.asarray(ll)}


def plot_profile(result, name: str, ax=None, level: float = 0.95, n_points: int = 30, bound=None):
    """Plot the profile of one parameter as iminuit's ``draw_mnprofile`` does.

    Draws 2 (l_hat - l_p) against the parameter with the chi-squared cut of
    ``level`` (dashed), the estimate (solid) and the profile interval (dotted, shaded).

    Args:
        result: a FitResult (index a batch first: ``batch[i]``).
        name: a scalar parameter or an element ("beta[1]").
        ax: matplotlib axes to draw on (default: a new figure's).
        level, n_points, bound: as for ``profile_curve``.

    Returns:
        The matplotlib axes.

    Example:
        >>> ax = res.plot_profile("shape"); ax.figure.savefig("shape.png")
    """
    if np.ndim(result.loglik) != 0:
        raise ValueError("plot_profile draws one fit: index the batch first, e.g. batch[0].plot_profile(...)")
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plot_profile needs matplotlib: pip install matplotlib") from e
    j = element_index(result, name)
    curve = profile_curve(result, name, n_points=n_points, bound=bound, level=level)
    (lo, hi), = profile_intervals(result, level, elements=(j,))[0]
    est = float(np.asarray(result.estimate_flat)[j])
    q = _stats.normal_quantile(level) ** 2
    dev = 2.0 * (float(result.logpost) - curve["loglik"])
    if ax is None:
        _, ax = plt.subplots()
    ax.plot(curve["grid"], dev, "-", color="C0")
    ax.axhline(q, color="k", ls="--", lw=1, label=f"{level:.3g} cut")
    ax.axvline(est, color="C1", lw=1.5, label="estimate")
    finite = [v for v in (lo, hi) if np.isfinite(v)]
    for v in finite:
        ax.axvline(v, color="C1", ls=":", lw=1)
    if len(finite) == 2:
        ax.axvspan(lo, hi, color="C1", alpha=0.12, label=f"profile {level:.3g} interval")
    ax.set_xlabel(name)
    ax.set_ylabel(r"$2\,(\hat\ell - \ell_p)$")
    ax.set_title(f"{name} = {est:.4g} -{est - lo:.2g} +{hi - est:.2g}")
    ax.legend(fontsize="small")
    return ax
