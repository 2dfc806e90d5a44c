"""Cox proportional hazards: partial likelihood with Breslow or Efron ties."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._data import float_dtype
from .._model import Model
from .regression import _check_k


def _cox_validator(k):
    def validate(data, batched):
        keys = ("X", "time", "event")
        if not isinstance(data, dict) or set(data) != set(keys):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"cox needs data as a dict with keys {list(keys)}; got {got}")
        X = data["X"]
        lead = 1 if batched else 0
        if X.ndim != 2 + lead or X.shape[-1] != k:
            raise ValueError(f"X has shape {X.shape}; expected (n, {k}) per dataset")
        for name in ("time", "event"):
            if data[name].shape != X.shape[:-1]:
                raise ValueError(f"{name} has shape {data[name].shape}; expected {X.shape[:-1]}")

    return validate


def _cox_prepare(d):
    """Rows sorted by time once per fit, with the risk-set and tie-group indices as data.

    Sorted position j's risk set (rows with time >= its time) is the suffix starting at
    ``first[j]``, the first position of its tie group; ``next[j]`` is the first
    position after the group. ``frac[j]`` is Efron's l/d: the events before j in its
    tie group over the group's events (0 for censored rows). ``inv`` puts the sorted
    terms back in the rows' order.
    """
    t = d["time"]
    n = t.shape[0]
    X = d["X"]
    order = jnp.argsort(t, stable=True)
    ts = t[order]
    ev = d["event"][order].astype(float_dtype(d))   # the fit's float dtype (bool/int events too)
    idx = jnp.arange(n)
    starts = jnp.concatenate([jnp.ones((1,), bool), ts[1:] != ts[:-1]])
    ends = jnp.concatenate([ts[1:] != ts[:-1], jnp.ones((1,), bool)])
    first = jax.lax.cummax(jnp.where(starts, idx, 0))
    nxt = jax.lax.cummin(jnp.where(ends, idx + 1, n), reverse=True)
    before = jnp.cumsum(ev) - ev                   # events at earlier sorted positions
    cum = jnp.concatenate([jnp.zeros((1,), ev.dtype), jnp.cumsum(ev)])
    n_tied = cum[nxt] - cum[first]                 # events in the tie group (exact small integers)
    frac = jnp.where(n_tied > 0, (before - cum[first]) / jnp.maximum(n_tied, 1.0), 0.0) * ev
    inv = jnp.zeros((n,), order.dtype).at[order].set(idx)
    return {"X": X[order], "event": ev, "first": first, "next": nxt, "frac": frac, "inv": inv}


def cox(k: int, ties: str = "breslow") -> Model:
    """Cox proportional-hazards model by partial likelihood; params {"beta": (k,)}.

    Data: ``{"X": (n, k), "time": (n,), "event": (n,)}`` with event 1 for an observed
    failure and 0 for right-censoring. No intercept (it cancels). Ties use Breslow's
    or Efron's approximation. Each row's term is its event's contribution (0 when
    censored); the risk sets span every row, so for ragged batches pad with
    ``event=0`` and a time before every real one rather than masking (a mask would
    leave copies of a real row in the risk sets); ``time=-inf`` works too, with
    ``fit_batch(..., nan_policy="status")``.

    Risk-set sums are reverse cumulative sums of ``exp(eta - max(eta))``: exact (and
    small to compile and differentiate) while the largest linear predictor in each
    event's risk set lies within about 700 (float64; about 85 in float32) of the
    largest overall.

    Args:
        k: number of covariates.
        ties: "breslow" or "efron".
    """
    _check_k(k)
    if ties not in ("breslow", "efron"):
        raise ValueError(f"ties must be 'breslow' or 'efron', got {ties!r}")

    def loglik(p, d):
        # d comes from _cox_prepare: rows sorted by time, risk sets as suffixes.
        eta = d["X"] @ p["beta"]
        ev, first = d["event"].astype(eta.dtype), d["first"]
        # A cumulative sum (linear, so its derivatives are cumulative sums too) rather
        # than lax.cumlogsumexp, whose derivatives are a parallel-prefix network that
        # made the Newton program (Hessian: differentiated twice) ~10x larger to compile.
        shift = jax.lax.stop_gradient(jnp.max(eta))
        w = jnp.exp(eta - shift)
        S = jax.lax.cumsum(w, reverse=True)[first]        # risk-set sums, scaled by exp(-shift)
        # Censored rows contribute nothing: S = 1 there, so a risk set far below the
        # shift (S = 0) cannot put 0 * inf (NaN) into their terms or gradients.
        S = jnp.where(ev > 0, S, 1.0)
        terms = ev * (eta - shift - jnp.log(S))
        if ties == "efron":
            # The l-th of d tied events sees S - (l/d) E, E the tied events' sum.
            cw = jnp.concatenate([jax.lax.cumsum(ev * w, reverse=True), jnp.zeros((1,), w.dtype)])
            E = cw[first] - cw[d["next"]]
            terms = terms - ev * jnp.log1p(-d["frac"] * E / S)
        return terms[d["inv"]]

    model = Model(loglik, {"beta": np.zeros(k)}, name=f"cox_{ties}", validate=_cox_validator(k),
                  prepare=_cox_prepare)
    # Each term reads its whole risk set: padding rows to a shape bucket would change
    # it, so fits run at the data's exact length (no padded trial compile first).
    model.rowwise = False
    # Risk sets span every row: a masked row's stand-in values would enter them.
    model.masks_ok = False
    return model
