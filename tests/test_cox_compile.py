"""Cox model: small compiled programs, per-row terms against a brute-force reference,
and ragged batches against statsmodels PHReg."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import statsmodels.api as sm
from scipy.special import logsumexp

import jaxmle as jm


def _data(n, seed, k=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    t_event = rng.exponential(1.0 / np.exp(X @ np.array([0.5, -0.8, 0.3])[:k]))
    t_cens = rng.exponential(1.5, n)
    time = np.round(np.minimum(t_event, t_cens), 1) + 0.1       # many tied times
    return X, time, (t_event <= t_cens).astype(float)


def _brute_terms(eta, time, event, ties):
    """Each row's partial-likelihood term by summing over its risk set directly."""
    out = np.zeros(len(eta))
    for i in np.flatnonzero(event):
        risk = time >= time[i]
        tied = (time == time[i]) & (event == 1)
        d = tied.sum()
        l = np.sum(tied[:i])                 # this row is the l-th of the d tied events
        log_risk = logsumexp(eta[risk])
        if ties == "efron" and d > 1:
            log_risk = log_risk + np.log1p(-(l / d) * np.exp(logsumexp(eta[tied]) - log_risk))
        out[i] = eta[i] - log_risk
    return out


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_terms_match_brute_force_in_row_order(ties):
    X, time, event = _data(60, 1)
    # Late censored rows far below the largest linear predictor: their risk sets
    # underflow the shifted sum, which must not turn their zero terms into NaN.
    late = np.argsort(time)[-4:]
    event[late] = 0.0
    X[late] = [-1000.0, 0.0]
    beta = np.array([0.9, -1.3])
    model = jm.models.cox(2, ties=ties)
    data = {"X": jnp.asarray(X), "time": jnp.asarray(time), "event": jnp.asarray(event)}

    def total(b):
        return jnp.sum(model.loglik({"beta": b}, model.prepared(data)))

    terms = model.loglik({"beta": jnp.asarray(beta)}, model.prepared(data))
    ref = _brute_terms(X @ beta, time, event, ties)
    np.testing.assert_allclose(np.asarray(terms), ref, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(np.asarray(jax.grad(total)(jnp.asarray(beta)))))


def test_hessian_program_is_small_and_does_not_grow_with_n():
    # lax.cumlogsumexp's derivatives made this ~2,600 lines at n=400 (and the fit's
    # compile ~10x slower); cumulative sums keep it a few hundred, at any n.
    sizes = {}
    for ties in ("breslow", "efron"):
        model = jm.models.cox(2, ties=ties)
        for n in (50, 400):
            X, time, event = _data(n, 2)
            data = model.prepared({"X": jnp.asarray(X), "time": jnp.asarray(time), "event": jnp.asarray(event)})
            hess = jax.hessian(lambda b, d: jnp.sum(model.loglik({"beta": b}, d)))
            sizes[ties, n] = jax.jit(hess).lower(jnp.zeros(2), data).as_text().count("\n")
        assert sizes[ties, 50] == sizes[ties, 400]
        assert sizes[ties, 400] < 600, sizes


def test_fit_compiles_one_program_and_matches_phreg():
    # The risk sets read every row, so the model is known not to be rowwise: no
    # padded trial fit (a second compile) before the exact-length one.
    model = jm.models.cox(2, ties="efron")
    assert model.rowwise is False
    X, time, event = _data(150, 3)
    res = jm.fit(model, {"X": X, "time": time, "event": event})
    ref = sm.PHReg(time, X, status=event, ties="efron").fit()
    np.testing.assert_allclose(res.params["beta"], ref.params, rtol=1e-8)
    np.testing.assert_allclose(res.stderr["beta"], ref.bse, rtol=1e-8)
    assert len([k for k in model._compiled if k[0] == "fit"]) == 1


def test_ragged_batch_padded_before_every_time():
    model = jm.models.cox(2, ties="breslow")
    sets = [_data(n, s) for n, s in [(80, 4), (55, 5)]]
    N = max(len(t) for _, t, _ in sets)
    X = np.zeros((2, N, 2))
    time = np.full((2, N), -np.inf)
    event = np.zeros((2, N))
    for i, (x, t, e) in enumerate(sets):
        X[i, :len(t)], time[i, :len(t)], event[i, :len(t)] = x, t, e
    batch = jm.fit_batch(model, {"X": X, "time": time, "event": event}, nan_policy="status")
    finite = jm.fit_batch(model, {"X": X, "time": np.where(np.isinf(time), -1.0, time), "event": event})
    for i, (x, t, e) in enumerate(sets):
        ref = sm.PHReg(t, x, status=e, ties="breslow").fit()
        assert int(batch.status[i]) == jm.Status.CONVERGED
        np.testing.assert_allclose(batch.params["beta"][i], ref.params, rtol=1e-8)
        np.testing.assert_allclose(batch.stderr["beta"][i], ref.bse, rtol=1e-8)
        np.testing.assert_allclose(finite.params["beta"][i], batch.params["beta"][i], rtol=1e-12)


def test_a_masked_cox_fit_is_refused():
    # Risk sets span every row: a masked row's stand-in copy would enter them (silently
    # wrong before). The error names the problem and the fix.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(12, 1))
    data = {"X": X, "time": rng.exponential(size=12), "event": np.ones(12)}
    mask = np.ones(12, bool)
    mask[-2:] = False
    with pytest.raises(ValueError, match="cannot take a mask"):
        jm.fit(jm.models.cox(1), data, mask=mask)
