"""Gaussian mixture models, fitted by EM (method="em") or any gradient method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats
from jax.scipy.special import logsumexp

from .._model import Model
from .._params import Fixed, Positive, PositiveDefinite, Simplex


def _as_matrix(x):
    return x[:, None] if x.ndim == 1 else x


def gaussian_mixture(n_components: int, dim: int | None = None, covariance: str = "diag") -> Model:
    """Mixture of Gaussians; data ``{"x": (n,)}`` or ``{"x": (n, dim)}``.

    Params: ``weights`` (simplex, K), ``means`` ((K,) in 1-D, (K, dim) otherwise) and
    either ``scales`` (diagonal: standard deviations, shaped like means) or, with
    ``covariance="full"``, ``covs`` ((K, dim, dim) positive definite). Mixtures are multimodal and their
    labels interchangeable: fit with ``n_starts`` (random data points as starting
    means, run as one batch, best kept) and compare by log-likelihood, not labels.

    Args:
        n_components: K >= 1.
        dim: None for 1-D data, else the dimension of each observation.
        covariance: "diag" (default) or "full" (needs dim).

    Example:
        >>> res = jm.fit(jm.models.gaussian_mixture(2), {"x": x}, method="em", n_starts=10)
    """
    if not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be a positive int, got {n_components!r}")
    if dim is not None and (not isinstance(dim, int) or dim < 1):
        raise ValueError(f"dim must be None (1-D data) or a positive int, got {dim!r}")
    if covariance not in ("diag", "full"):
        raise ValueError(f"covariance must be 'diag' or 'full', got {covariance!r}")
    if covariance == "full" and dim is None:
        raise ValueError("covariance='full' needs dim (the dimension of each observation)")
    full = covariance == "full"
    K = n_components
    shape = (K,) if dim is None else (K, dim)

    def component_logpdf(p, X):
        means = p["means"].reshape(K, -1)
        if full:
            comp = jax.vmap(lambda m, c: stats.multivariate_normal.logpdf(X, m, c))(means, p["covs"]).T
        else:
            scales = p["scales"].reshape(K, -1)
            comp = jnp.sum(stats.norm.logpdf(X[:, None, :], means[None], scales[None]), axis=-1)
        return jnp.log(p["weights"])[None, :] + comp              # (n, K)

    def loglik(p, d):
        return logsumexp(component_logpdf(p, _as_matrix(d["x"])), axis=1)

    def em_step(p, d, mask):
        X = _as_matrix(d["x"])
        r = jax.nn.softmax(component_logpdf(p, X), axis=1)
        if mask is not None:
            r = r * mask[:, None]
        nk = jnp.sum(r, axis=0)
        safe = jnp.maximum(nk, jnp.finfo(X.dtype).tiny)
        means = (r.T @ X) / safe[:, None]
        dev = X[:, None, :] - means[None]                        # (n, K, d)
        out = {"weights": nk / jnp.sum(nk), "means": means.reshape(shape)}
        if full:
            covs = jnp.einsum("nk,nkd,nke->kde", r, dev, dev) / safe[:, None, None]
            out["covs"] = covs + jnp.finfo(X.dtype).eps * jnp.eye(X.shape[1], dtype=X.dtype)
        else:
            var = jnp.einsum("nk,nkd->kd", r, dev**2) / safe[:, None]
            out["scales"] = jnp.sqrt(jnp.maximum(var, jnp.finfo(X.dtype).tiny)).reshape(shape)
        return out

    def init_fn(key, d):
        X = _as_matrix(d["x"])
        idx = jax.random.choice(key, X.shape[0], (K,), replace=False)
        out = {"weights": jnp.full((K,), 1.0 / K, X.dtype), "means": X[idx].reshape(shape)}
        if full:
            out["covs"] = jnp.broadcast_to(jnp.cov(X.T, bias=True).reshape(X.shape[1], X.shape[1]), (K, X.shape[1], X.shape[1]))
        else:
            out["scales"] = jnp.broadcast_to(jnp.std(X, axis=0), (K, X.shape[1])).reshape(shape)
        return out

    def validate(data, batched):
        if not isinstance(data, dict) or set(data) != {"x"}:
            raise ValueError("gaussian_mixture needs data as {'x': array}")
        want = 1 + (dim is not None) + batched
        if data["x"].ndim != want or (dim is not None and data["x"].shape[-1] != dim):
            raise ValueError(
                f"x has shape {data['x'].shape}; expected {'(B, ' if batched else '('}n"
                f"{'' if dim is None else f', {dim}'}) for this mixture"
            )

    spec = {
        # Host arrays: jax.numpy here compiled a small program per operation.
        "weights": Simplex(np.full((K,), 1.0 / K)) if K > 1 else Fixed(np.ones(1)),
        "means": np.linspace(-1.0, 1.0, K).reshape((K,) + (() if dim is None else (1,))) * np.ones(shape),
    }
    if full:
        spec["covs"] = PositiveDefinite(np.broadcast_to(np.eye(dim), (K, dim, dim)))
    else:
        spec["scales"] = Positive(np.ones(shape))
    return Model(loglik, spec, name=f"gaussian_mixture_{K}_{covariance}", validate=validate,
                 em_step=em_step, init_fn=init_fn)
