"""Cox proportional hazards: partial likelihood with Breslow or Efron ties."""

from __future__ import annotations

import jax
import jax.numpy as jnp

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


def cox(k: int, ties: str = "breslow") -> Model:
    """Cox proportional-hazards model by partial likelihood; params {"beta": (k,)}.

    Data: ``{"X": (n, k), "time": (n,), "event": (n,)}`` with event 1 for an observed
    failure and 0 for right-censoring. No intercept (it cancels). Ties use Breslow's
    or Efron's approximation. Each row's term is its event's contribution (0 when
    censored); the risk sets span every row, so for ragged batches pad with
    ``time=-inf, event=0`` rather than masking.

    Args:
        k: number of covariates.
        ties: "breslow" or "efron".
    """
    _check_k(k)
    if ties not in ("breslow", "efron"):
        raise ValueError(f"ties must be 'breslow' or 'efron', got {ties!r}")

    def loglik(p, d):
        eta = d["X"] @ p["beta"]
        t, ev = d["time"], d["event"].astype(eta.dtype)
        n = t.shape[0]
        order = jnp.argsort(t)
        ts, es = t[order], eta[order]
        # Risk set of time t: rows with time >= t, i.e. sorted positions >= first(t).
        first = jnp.searchsorted(ts, t, side="left")
        log_risk = jax.lax.cumlogsumexp(es, reverse=True)[first]
        if ties == "breslow":
            return ev * (eta - log_risk)
        # Efron: the l-th of d tied events at t sees S(t) - (l/d) E(t).
        shift = jax.lax.stop_gradient(jnp.max(eta))
        w = ev * jnp.exp(eta - shift)
        E = jax.ops.segment_sum(w, first, num_segments=n)[first]
        n_tied = jax.ops.segment_sum(ev, first, num_segments=n)[first]
        ev_sorted = ev[order]
        before = jnp.cumsum(ev_sorted) - ev_sorted           # events earlier in sorted order
        rank_sorted = before - before[jnp.searchsorted(ts, ts, side="left")]
        rank = jnp.zeros_like(rank_sorted).at[order].set(rank_sorted)
        S = jnp.exp(log_risk - shift)
        frac = jnp.where(n_tied > 0, rank / jnp.maximum(n_tied, 1.0), 0.0)
        return ev * (eta - log_risk - jnp.log1p(-frac * E / S))

    return Model(loglik, {"beta": jnp.zeros(k)}, name=f"cox_{ties}", validate=_cox_validator(k))
