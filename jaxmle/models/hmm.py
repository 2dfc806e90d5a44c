"""Hidden Markov models: the forward algorithm in log space, Baum–Welch EM, Viterbi, posteriors.

One sequence is one dataset, ``{"x": (T,)}``; ``fit_batch`` fits many sequences
(ragged ones padded by ``jm.pad``, with the mask). The log-density returns one term
per step, log p(x_t | x_1..x_{t-1}), so the terms sum to the sequence's
log-likelihood and a trailing mask cuts a padded sequence exactly; the fit's total
(``loglik_sum``) also skips the emission of every masked step inside the recursion,
so a masked step anywhere is treated as missing. Per-step terms are not
independent: the sandwich covariance (``stderr_robust``) does not apply.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats
from jax.scipy.special import logsumexp

from .._compile import jit
from .._constraints import SphereSimplex, StartSimplex
from .._model import Model
from .._params import Fixed, Positive, Simplex
from .._result import FIELDS

EMISSIONS = ("normal", "poisson", "categorical")


def _keys(n: int) -> list[str]:
    """Row names "0", "1", ... zero-padded so that their sorted order is numeric order."""
    width = len(str(n - 1))
    return [f"{i:0{width}d}" for i in range(n)]


def _simplex(v):
    return SphereSimplex(v) if np.shape(v)[-1] > 1 else Fixed(v)


def _stack(rows: dict):
    return jnp.stack([rows[k] for k in sorted(rows)], axis=-2)


def _unstack(mat, keys):
    return {k: mat[..., i, :] for i, k in enumerate(keys)}


def _tiny(dtype):
    return jnp.finfo(dtype).tiny


def _normalise(counts, axis=-1):
    counts = jnp.maximum(counts, _tiny(counts.dtype))
    return counts / jnp.sum(counts, axis=axis, keepdims=True)


def _safe_log(p):
    # log(p + delta), delta ~ 1e-139 in float64: a probability of exactly 0 (reached at a
    # finite point by SphereSimplex) gives a finite log and its true derivative
    # (d loglik / d p_j = L_j / L), where log(max(p, tiny)) would give a derivative of 0
    # and a singular Hessian there; delta changes the log-likelihood by ~1e-139 (and delta^2
    # must not underflow: the Hessian of log(u^2 + delta) at u = 0 has delta^2 in it).
    return jnp.log(p + _tiny(p.dtype) ** 0.45)


def _steps_mask(mask, T):
    return jnp.ones((T,), bool) if mask is None else jnp.asarray(mask, bool)


# -- the recursions (one sequence; logb is (T, K), already zero at masked steps) ----

def _forward(log_start, logA, e, keep_alpha: bool):
    """Normalised log forward variables and the log normalisers c_t (sum_t c_t = loglik)."""
    def step(la, et):
        new = logsumexp(la[:, None] + logA, axis=0) + et
        c = logsumexp(new)
        return new - c, ((new - c) if keep_alpha else None, c)

    la0 = log_start + e[0]
    c0 = logsumexp(la0)
    _, (las, cs) = jax.lax.scan(step, la0 - c0, e[1:])
    c = jnp.concatenate([c0[None], cs])
    if not keep_alpha:
        return None, c
    return jnp.concatenate([(la0 - c0)[None], las]), c


def _backward(logA, e, c):
    def step(lb, inp):
        et, ct = inp
        new = logsumexp(logA + (et + lb)[None, :], axis=1) - ct
        return new, new

    zero = jnp.zeros(logA.shape[0], e.dtype)
    _, lbs = jax.lax.scan(step, zero, (e[1:], c[1:]), reverse=True)
    return jnp.concatenate([lbs, zero[None]])


def _viterbi(log_start, logA, e, live=None):
    """Most likely path; steps where ``live`` is False (after the last observed step of a
    padded sequence) carry the path on unchanged, so the observed part is decoded exactly
    as the unpadded sequence would be."""
    K = logA.shape[0]
    live = jnp.ones(e.shape[0], bool) if live is None else live

    def step(d, inp):
        et, lt = inp
        s = d[:, None] + logA
        new = jnp.max(s, axis=0) + et
        new, bp = new - jnp.max(new), jnp.argmax(s, axis=0)
        return jnp.where(lt, new, d), jnp.where(lt, bp, jnp.arange(K, dtype=bp.dtype))

    d0 = log_start + e[0]
    dT, back = jax.lax.scan(step, d0 - jnp.max(d0), (e[1:], live[1:]))
    last = jnp.argmax(dT)

    _, path = jax.lax.scan(lambda s, bp: (bp[s], bp[s]), last, back, reverse=True)
    return jnp.concatenate([path, last[None]])


def _live(mask, T):
    """True up to the last observed step (all True without a mask)."""
    m = _steps_mask(mask, T)
    return jnp.flip(jnp.cumsum(jnp.flip(m.astype(jnp.int32)))) > 0


class HMM(Model):
    """A hidden Markov model as a ``jm.Model``; build it with ``jm.models.hmm``.

    Besides fitting, it decodes: ``viterbi``, ``posterior``; scores new sequences
    (``score``), draws them (``sample``), and puts states in a canonical order with
    ``sort_states``. Each takes natural-scale params and data (``{"x": (T,)}``, or a
    batch ``(B, T)`` with shared or batched params, ragged ones with a mask) or a fit
    result.
    """

    def __init__(self, n_states: int, emission: str, n_categories: int | None, start):
        self.n_states, self.emission, self.n_categories = n_states, emission, n_categories
        K, self._rows = n_states, _keys(n_states)
        stay = 0.9 if K > 1 else 1.0
        A = np.full((K, K), (1 - stay) / max(K - 1, 1)) + (stay - (1 - stay) / max(K - 1, 1)) * np.eye(K)
        if isinstance(start, str):
            uniform = np.full(K, 1.0 / K)
            start_leaf = (StartSimplex if start == "estimate" and K > 1 else Fixed)(uniform)
        else:
            start_leaf = Fixed(np.asarray(start, float))
        spec = {"start": start_leaf, "trans": {k: _simplex(A[i]) for i, k in enumerate(self._rows)}}
        if emission == "normal":
            spec["means"] = np.linspace(-1.0, 1.0, K) if K > 1 else np.zeros(1)
            spec["scales"] = Positive(np.ones(K))
        elif emission == "poisson":
            spec["rates"] = Positive(np.arange(1.0, K + 1.0))
        else:
            tilt = np.linspace(-0.5, 0.5, n_categories)[None, :] * (np.arange(K) - (K - 1) / 2)[:, None]
            E = np.exp(tilt) / np.exp(tilt).sum(axis=1, keepdims=True)
            spec["emission"] = {k: _simplex(E[i]) for i, k in enumerate(self._rows)}
        self._start_fixed, self._start_value = isinstance(start_leaf, Fixed), np.asarray(start_leaf.init)
        super().__init__(self._terms_unmasked, spec, name=f"hmm_{K}_{emission}",
                         validate=self._validate, em_step=self._em_step, init_fn=self._init_fn,
                         start=self._data_start if emission == "normal" and K > 1 else None)

    # -- pieces ------------------------------------------------------------------
    def transition_matrix(self, params):
        """The (K, K) transition matrix, row i = P(next state | state i) (batch axes lead)."""
        return _stack(params["trans"])

    def emission_means(self, params):
        """Mean of each state's emission, the key that ``sort_states`` orders by."""
        if self.emission == "normal":
            return params["means"]
        if self.emission == "poisson":
            return params["rates"]
        E = _stack(params["emission"])
        return E @ jnp.arange(E.shape[-1], dtype=E.dtype)

    def _log_parts(self, p, x, mask):
        """log start (K,), log transition (K, K), emission log-densities (T, K), masked steps 0."""
        if self.emission == "normal":
            logb = stats.norm.logpdf(x[:, None], p["means"], jnp.maximum(p["scales"], _tiny(p["scales"].dtype)))
        elif self.emission == "poisson":
            logb = stats.poisson.logpmf(x[:, None], jnp.maximum(p["rates"], _tiny(p["rates"].dtype)))
        else:
            logb = _safe_log(_stack(p["emission"]))[:, x].T
        m = _steps_mask(mask, x.shape[0])
        e = jnp.where(m[:, None], logb, 0.0)
        return _safe_log(p["start"]), _safe_log(self.transition_matrix(p)), e

    def _terms(self, p, d, mask):
        ls, lA, e = self._log_parts(p, d["x"], mask)
        _, c = _forward(ls, lA, e, keep_alpha=False)
        return c if mask is None else jnp.where(mask, c, 0.0)

    def _terms_unmasked(self, p, d):
        return self._terms(p, d, None)

    def loglik_sum(self, params, data, mask=None):
        """Sequence log-likelihood; masked steps are skipped (no emission) in the recursion."""
        return jnp.sum(self._terms(params, data, mask))

    def _gamma_xi(self, p, x, mask):
        ls, lA, e = self._log_parts(p, x, mask)
        la, c = _forward(ls, lA, e, keep_alpha=True)
        lb = _backward(lA, e, c)
        gamma = jax.nn.softmax(la + lb, axis=1)
        return gamma, (ls, lA, e, la, lb, c)

    # -- EM (Baum–Welch) -----------------------------------------------------------
    def _em_step(self, p, d, mask):
        x = d["x"]
        T = x.shape[0]
        m = _steps_mask(mask, T)
        gamma, (ls, lA, e, la, lb, c) = self._gamma_xi(p, x, mask)
        dtype = gamma.dtype
        # Transitions into steps after the last observed one carry no information:
        # leaving them out keeps EM from being damped by padding.
        later = _live(mask, T)
        log_xi = la[:-1, :, None] + lA[None] + (e[1:] + lb[1:] - c[1:, None])[:, None, :]
        counts = jnp.einsum("t,tij->ij", later[1:].astype(dtype), jnp.exp(log_xi))
        A = _normalise(counts)
        w = gamma * m[:, None].astype(dtype)
        nk = jnp.maximum(jnp.sum(w, axis=0), _tiny(dtype))
        out = {"start": p["start"] if self._start_fixed else _normalise(gamma[0]),
               "trans": _unstack(A, self._rows)}
        if self.emission == "normal":
            xf = x.astype(dtype)
            means = w.T @ xf / nk
            var = jnp.sum(w * (xf[:, None] - means[None]) ** 2, axis=0) / nk
            out.update(means=means, scales=jnp.sqrt(jnp.maximum(var, _tiny(dtype))))
        elif self.emission == "poisson":
            out["rates"] = jnp.maximum(w.T @ x.astype(dtype) / nk, _tiny(dtype))
        else:
            onehot = jax.nn.one_hot(x, self.n_categories, dtype=dtype)
            out["emission"] = _unstack(_normalise(w.T @ onehot), self._rows)
        return out

    def _init_fn(self, key, d):
        """Random start: sticky transitions; state k's emission at a random quantile of the
        data in ((k, k + 1) / K), so the states start apart and in increasing order."""
        x = d["x"]
        K = self.n_states
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
        k1, k2, k3 = jax.random.split(key, 3)
        # Flat Dirichlet draws as normalised exponentials (jax.random.dirichlet's gamma
        # sampler costs seconds of compilation).
        flat = lambda k, shape: _normalise(jax.random.exponential(k, shape, dtype))  # noqa: E731
        A = 0.7 * jnp.eye(K, dtype=dtype) + 0.3 * flat(k1, (K, K))
        start = self._start_value if self._start_fixed else np.full(K, 1.0 / K)
        out = {"start": jnp.asarray(start, dtype), "trans": _unstack(A, self._rows)}
        u = (jnp.arange(K, dtype=dtype) + jax.random.uniform(k2, (K,), dtype)) / K
        # NaN padding (jm.pad's default) sorts last: quantiles of the finite values only.
        xf = x.astype(dtype)
        n = jnp.maximum(jnp.sum(jnp.isfinite(xf)), 1)
        pick = jnp.sort(xf)[jnp.minimum((u * n).astype(jnp.int32), n - 1)]
        if self.emission == "normal":
            out["means"] = pick
            out["scales"] = jnp.full((K,), jnp.nanstd(xf), dtype)
        elif self.emission == "poisson":
            out["rates"] = pick + 0.5
        else:
            out["emission"] = _unstack(flat(k3, (K, self.n_categories)), self._rows)
        return out

    def _data_start(self, d, mask):
        """Data-driven start for normal emissions (like hmmlearn's k-means init, without the
        iterations): state k's mean at the ((k + 1/2) / K) quantile of the observed values,
        every scale the sample standard deviation. Distinct, ordered means keep Newton off the
        symmetric saddle where all states are equal; a start in the data's range keeps it
        off the far-away local maxima that the fixed spec start (means -1..1) can lead to."""
        x = d["x"]
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
        xf = jnp.where(mask, x.astype(dtype), jnp.inf)
        n = jnp.maximum(jnp.sum(mask), 1)
        K = self.n_states
        q = (jnp.arange(K, dtype=dtype) + 0.5) / K
        means = jnp.sort(xf)[jnp.minimum((q * n).astype(jnp.int32), n - 1)]
        w = mask.astype(dtype)
        xm = jnp.where(mask, x.astype(dtype), 0.0)
        mu = jnp.sum(w * xm) / n
        sd = jnp.sqrt(jnp.sum(w * (xm - mu) ** 2) / n)
        return {"means": means, "scales": jnp.full((K,), sd, dtype)}

    def _validate(self, data, batched):
        if not isinstance(data, dict) or set(data) != {"x"}:
            raise ValueError("hmm needs data as {'x': array of shape (T,)} (one sequence)")
        x = data["x"]
        if x.ndim != 1 + batched:
            raise ValueError(f"x has shape {x.shape}; expected {'(B, T)' if batched else '(T,)'} for an hmm")
        if self.emission == "categorical":
            if not jnp.issubdtype(x.dtype, jnp.integer):
                raise ValueError(f"categorical hmm needs integer x (category codes), got {x.dtype}; "
                                 "pad ragged codes with jm.pad(..., fill='edge') to keep them integers")
            if bool(jnp.any((x < 0) | (x >= self.n_categories))):
                raise ValueError(f"categorical hmm: x must lie in 0..{self.n_categories - 1}")
        elif self.emission == "poisson" and bool(jnp.any(x < 0)):
            raise ValueError("poisson hmm: x must be non-negative counts")

    # -- decoding ------------------------------------------------------------------
    def _batched(self, params) -> bool:
        first = jax.tree_util.tree_leaves(params)[0]
        return jnp.ndim(first) > len(self.spec.shapes[0])

    @staticmethod
    def _unwrap(params, data, mask):
        if hasattr(params, "params") and hasattr(params, "loglik"):      # a fit result
            # The data the fit saw, trimmed back to the length given (a fit pads the time
            # axis to a shape bucket): paths and posteriors line up with the user's arrays.
            n = params._memo.get("n_user")
            if data is None and params._data is not None:
                data = params._data if n is None else jax.tree_util.tree_map(lambda a: a[..., :n], params._data)
            if mask is None and params._mask is not None:
                mask = params._mask if n is None else params._mask[..., :n]
            params = params.params
        return params, data, mask

    def _apply(self, kind, fn, params, data, mask):
        """``fn(p, x, mask)`` on one sequence, vmapped over whatever carries a batch axis:
        batched params, a batch of sequences ``x`` (B, T) (with a (B, T) mask), or both."""
        params, data, mask = self._unwrap(params, data, mask)
        if data is None:
            raise ValueError("pass the data: model.%s(params, {'x': x})" % kind)
        x = jnp.asarray(data["x"] if isinstance(data, dict) else data)
        if x.ndim not in (1, 2):
            raise ValueError(f"x has shape {x.shape}; expected (T,) or a batch (B, T)")
        if mask is not None:
            mask = jnp.asarray(mask, bool)
            if mask.shape[-1] != x.shape[-1] or mask.ndim > 2:
                raise ValueError(f"mask has shape {mask.shape}; expected one like x {x.shape}")
        p_axis = 0 if self._batched(params) else None
        x_axis = 0 if x.ndim == 2 else None
        m_axis = None if mask is None or mask.ndim == 1 else 0
        batched = (p_axis, x_axis, m_axis) != (None, None, None)

        def build():
            core = lambda p, x, m: fn(p, x, None if m is None else m)  # noqa: E731
            if batched:
                core = jax.vmap(core, in_axes=(p_axis, x_axis, m_axis))
            return jit(core)

        key = (kind, p_axis, x_axis, m_axis, mask is not None)
        return self.compiled(key, build)(params, x, mask)

    def score(self, params, data=None, mask=None):
        """Log-likelihood of a sequence (hmmlearn's ``score`` at the same parameters).

        Masked steps are skipped (their emission left out), so a ragged batch padded by
        ``jm.pad`` scores each sequence as if unpadded.

        Args:
            params: natural-scale params (batched for one set per sequence), or a fit result.
            data: ``{"x": x}`` or ``x``: one sequence ``(T,)`` or a batch ``(B, T)``.
            mask: optional boolean mask like ``x``.

        Returns:
            A scalar, or ``(B,)`` log-likelihoods, one per sequence (hmmlearn's
            ``score(X, lengths)`` is their sum).

        Example:
            >>> hmm.score(res.params, {"x": new_counts})
        """
        return self._apply("hmm_score", lambda p, x, m: jnp.sum(self._terms(p, {"x": x}, m)),
                           params, data, mask)

    def _sample_one(self, p, key, T: int):
        dtype = jnp.result_type(p["start"].dtype, float)
        k_state, k_emit = jax.random.split(key)
        u = jax.random.uniform(k_state, (T,), dtype)

        def draw(probs, u):
            # Inverse CDF: the last state takes whatever rounding leaves of the total.
            return jnp.sum(jnp.cumsum(probs)[:-1] <= u).astype(jnp.int32)

        A = self.transition_matrix(p)
        s0 = draw(p["start"], u[0])
        step = lambda s, ut: (draw(A[s], ut),) * 2  # noqa: E731
        _, rest = jax.lax.scan(step, s0, u[1:])
        states = jnp.concatenate([s0[None], rest])
        if self.emission == "normal":
            x = p["means"][states] + p["scales"][states] * jax.random.normal(k_emit, (T,), dtype)
        elif self.emission == "poisson":
            x = jax.random.poisson(k_emit, p["rates"][states], (T,))
        else:
            x = jax.random.categorical(k_emit, _safe_log(_stack(p["emission"]))[states], axis=-1)
        return {"x": x, "states": states}

    def sample(self, params, T: int, key):
        """Draw a sequence from the HMM (like hmmlearn's ``sample``), in one compiled program.

        Args:
            params: natural-scale params, or a fit result; batched params (or a batch
                fit result) draw one sequence per set, with independent keys.
            T: sequence length (the program is compiled per T).
            key: a ``jax.random`` key (an int seeds ``jax.random.PRNGKey``).

        Returns:
            ``{"x": (T,), "states": (T,)}`` (``(B, T)`` for batched params): the
            emissions (float for normal, int for poisson and categorical) and the hidden
            states.

        Example:
            >>> d = hmm.sample(res.params, 1000, jax.random.PRNGKey(0))
            >>> hmm.score(res.params, {"x": d["x"]})
        """
        params, _, _ = self._unwrap(params, None, None)
        if not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"T must be a positive int, got {T!r}")
        T = int(T)
        if isinstance(key, (int, np.integer)):
            key = jax.random.PRNGKey(int(key))
        batched = self._batched(params)

        def build():
            one = lambda p, k: self._sample_one(p, k, T)  # noqa: E731
            if batched:
                B = lambda p: jax.tree_util.tree_leaves(p)[0].shape[0]  # noqa: E731
                return jit(lambda p, k: jax.vmap(one)(p, jax.random.split(k, B(p))))
            return jit(one)

        return self.compiled(("hmm_sample", T, batched), build)(params, key)

    def viterbi(self, params, data=None, mask=None):
        """Most likely state path (Viterbi), int array shaped like ``x``.

        Masked steps inside a sequence are decoded from the transitions alone (their
        emission skipped); steps after the last observed one (padding) repeat its state.

        Args:
            params: natural-scale params (batched: one set per sequence), or a fit result.
            data: ``{"x": x}`` or ``x``: one sequence ``(T,)`` or a batch ``(B, T)``
                (with shared or batched params); a fit result's own data by default.
            mask: optional boolean mask like ``x`` (a fit result's own by default);
                ragged sequences padded by ``jm.pad`` decode as if unpadded up to
                their length.

        Returns:
            States ``(T,)`` or ``(B, T)``.

        Example:
            >>> states = model.viterbi(res)     # res = jm.fit(model, {"x": counts})
        """
        return self._apply("hmm_viterbi",
                           lambda p, x, m: _viterbi(*self._log_parts(p, x, m), _live(m, x.shape[0])),
                           params, data, mask)

    def posterior(self, params, data=None, mask=None):
        """Posterior state probabilities P(state_t = k | all observed x), shape ``x.shape + (K,)``.

        Arguments as for ``viterbi``.
        """
        return self._apply("hmm_posterior", lambda p, x, m: self._gamma_xi(p, x, m)[0],
                           params, data, mask)

    # -- label switching -------------------------------------------------------------
    def _order(self, params):
        return jnp.argsort(self.emission_means(params))

    def _permute(self, tree, perm):
        """Relabel the states of a params-shaped tree: new state a is old state perm[a]."""
        out = dict(tree)
        out["start"] = tree["start"][perm]
        out["trans"] = _unstack(_stack(tree["trans"])[perm][:, perm], self._rows)
        for name in ("means", "scales", "rates"):
            if name in tree:
                out[name] = tree[name][perm]
        if "emission" in tree:
            out["emission"] = _unstack(_stack(tree["emission"])[perm], self._rows)
        return self.spec.unflatten(self.spec.treedef.flatten_up_to(out))

    def sort_states(self, params):
        """States relabelled in increasing order of their emission mean.

        An HMM's likelihood does not change when its states are relabelled, so fits
        from different starts (or different datasets) may number the states
        differently; this puts them in one canonical order.

        Args:
            params: a params dict (single or batched), or a ``FitResult`` /
                ``BatchFitResult`` of this model. A result is relabelled whole:
                params, covariance, standard errors and boundary flags (its
                status, log-likelihood and iterations are unchanged).

        Returns:
            The same kind of object, states sorted.

        Example:
            >>> res = model.sort_states(jm.fit(model, {"x": counts}, method="em"))
        """
        if hasattr(params, "params") and hasattr(params, "loglik"):
            return self._sort_result(params)
        one = lambda p: self._permute(p, self._order(p))  # noqa: E731
        batched = self._batched(params)
        fn = self.compiled(("hmm_sort_params", batched), lambda: jit(jax.vmap(one) if batched else one))
        return fn(params)

    def _sort_result(self, res):
        spec = self.spec
        n = len(spec.names)
        index_tree = spec.flat_to_tree(np.arange(n, dtype=float), fill=-1.0)

        def one(params, z, fixed, cov, boundary):
            perm = self._order(params)
            # Unconstrained coordinates, relabelled exactly even where a probability
            # underflows to 0: a simplex's z is log p up to a constant (last = 0).
            # (SphereSimplex rows: relabelled on the natural scale, then mapped back)
            ext = [jnp.concatenate([z_seg, jnp.zeros(1, z.dtype)]) if isinstance(c, Simplex)
                   else c.forward(z_seg, shape) if isinstance(c, SphereSimplex) and not f else z_seg
                   for c, z_seg, shape, f in zip(spec.constraints, self._segments(z, fixed), spec.shapes,
                                                 spec.is_fixed)]
            ext = self._permute(spec.unflatten(ext), perm)
            zs = [s[..., :-1] - s[..., -1:] if isinstance(c, Simplex)
                  else c.inverse(s) if isinstance(c, SphereSimplex) else s
                  for c, s in zip(spec.constraints, spec.treedef.flatten_up_to(ext))]
            new_z = jnp.concatenate([jnp.ravel(s) for s, f in zip(zs, spec.is_fixed) if not f])
            new_fixed = [s for s, f in zip(zs, spec.is_fixed) if f]
            idx = self._permute(jax.tree_util.tree_map(jnp.asarray, index_tree), perm)
            order = jnp.concatenate([jnp.ravel(v) for v, f in zip(spec.treedef.flatten_up_to(idx), spec.is_fixed)
                                     if not f]).astype(jnp.int32)
            return self._permute(params, perm), new_z, new_fixed, cov[order][:, order], boundary[order]

        batched = np.ndim(res.loglik) == 1
        fn = self.compiled(("hmm_sort", batched), lambda: jit(jax.vmap(one) if batched else one))
        params, z, fixed, cov, boundary = fn(res.params, res.z, res.fixed, res.cov, res.boundary)
        fields = {f: getattr(res, f) for f in FIELDS}
        fields.update(params=params, z=z, fixed=fixed, cov=cov, boundary=boundary)
        out = type(res)(self, res.method, fields, data=res._data, mask=res._mask,
                        n_terms=res._n_terms, starts=res.starts)
        out._memo["n_user"] = res._memo.get("n_user")      # the length the user gave
        return out

    def _segments(self, z, fixed):
        """Per leaf: its z segment shaped like the leaf (a simplex: K-1), or a fixed value."""
        spec, out, i, j = self.spec, [], 0, 0
        for shape, size, f in zip(spec.shapes, spec.free_sizes, spec.is_fixed):
            if f:
                out.append(jnp.asarray(fixed[j]))
                j += 1
            else:
                seg = z[i:i + size]
                out.append(seg if size != int(np.prod(shape, dtype=int)) else seg.reshape(shape))
                i += size
        return out


def hmm(n_states: int, emission: str = "normal", n_categories: int | None = None,
        start="estimate") -> HMM:
    """Hidden Markov model with K states; data ``{"x": (T,)}``, one sequence per dataset.

    Params: ``start`` (initial state distribution, simplex K), ``trans`` (a dict of
    K simplex rows "0", "1", ...: ``trans["i"][j]`` = P(state j next | state i);
    ``model.transition_matrix(params)`` stacks them) and the emission parameters:
    ``means``, ``scales`` (normal), ``rates`` (poisson) or ``emission`` (categorical:
    a dict of K simplex rows over ``n_categories`` codes 0..C-1).

    The log-likelihood is the forward algorithm in log space (``lax.scan``, the
    forward variables renormalised at every step, so 10^5+ steps are fine in
    float64). Fit it with Newton/L-BFGS on the exact likelihood or with
    ``method="em"`` (Baum–Welch). Like mixtures, HMMs are multimodal and their state
    labels interchangeable: use ``n_starts``, then ``model.sort_states(res)`` to
    order states by emission mean. ``model.viterbi(res)`` and
    ``model.posterior(res)`` decode.

    Start probabilities and the status. With one sequence the likelihood is linear
    in ``start``, so the MLE of ``start`` is always a vertex of the simplex (all mass
    on the state the sequence most likely begins in; hmmlearn's EM drifts to the
    same vertex). That edge is structural, not a problem of the data, so
    ``start="estimate"`` does not report it: ``start`` is parametrised so that every
    vertex is an ordinary interior maximum of the unconstrained coordinates
    (``StartSimplex``), and the status is decided by the other parameters alone:

    * CONVERGED: the fit converged and every transition and emission parameter is
      interior, even when ``start`` is a vertex;
    * AT_BOUNDARY: a transition or emission parameter is at its edge
      (``res.boundary_params`` names it; never a ``start`` element);
    * LINESEARCH_FAILED, MAX_ITER, HESSIAN_NOT_PD, ...: as for any model.

    Transition and categorical-emission rows are ``SphereSimplex`` parameters: a
    probability of 0 is a finite point there too (no chase to infinity, which under
    log-ratios ended fits LINESEARCH_FAILED), and it is still reported: AT_BOUNDARY
    naming it. The standard errors of probabilities at 0 or 1 (and of ``start``
    elements at a vertex) come out 0 (the delta method through a map that is flat
    there): they are not Wald standard errors, and no interval for them should be
    read off. ``start="uniform"`` (or a fixed
    probability vector) holds ``start`` instead of estimating it, as hmmlearn's
    ``init_params``/``params`` without "s" do. Normal emissions start from the
    data (means at the state-wise quantiles, scales the sample SD) unless ``init=``
    says otherwise.

    Args:
        n_states: K >= 1.
        emission: "normal", "poisson" or "categorical".
        n_categories: number of codes C >= 2, for categorical emissions only.
        start: "estimate" (a ``StartSimplex``: a vertex is not an edge, see above),
            "uniform", or a fixed probability vector.

    Example:
        >>> model = jm.models.hmm(2, "poisson")
        >>> res = model.sort_states(jm.fit(model, {"x": counts}, method="em", n_starts=5))
        >>> states = model.viterbi(res)
    """
    if not isinstance(n_states, int) or n_states < 1:
        raise ValueError(f"n_states must be a positive int, got {n_states!r}")
    if emission not in EMISSIONS:
        raise ValueError(f"emission must be one of {EMISSIONS}, got {emission!r}")
    if emission == "categorical":
        if not isinstance(n_categories, int) or n_categories < 2:
            raise ValueError(f"categorical emissions need n_categories >= 2, got {n_categories!r}")
    elif n_categories is not None:
        raise ValueError("n_categories is only for emission='categorical'")
    if not (isinstance(start, str) and start in ("estimate", "uniform")):
        s = None if isinstance(start, str) else np.asarray(start, float)
        if s is None or s.shape != (n_states,) or np.any(s < 0) or abs(s.sum() - 1) > 1e-6:
            raise ValueError(f"start must be 'estimate', 'uniform' or a probability vector of length "
                             f"{n_states}, got {start!r}")
    return HMM(n_states, emission, n_categories, start)
