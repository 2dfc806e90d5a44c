"""The hmmlearn-like HMM API: sample, score, and batched (ragged) Viterbi / posteriors.

Short sequences throughout except the one sampling check (T = 20,000); each model
compiles a handful of small programs (no fits).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm

H = pytest.importorskip("hmmlearn.hmm")

A = np.array([[0.85, 0.1, 0.05], [0.2, 0.7, 0.1], [0.1, 0.25, 0.65]])
START = np.array([0.5, 0.3, 0.2])
EMISSION = {
    "normal": {"means": np.array([-2.0, 0.5, 3.0]), "scales": np.array([0.7, 1.2, 0.9])},
    "poisson": {"rates": np.array([1.5, 5.0, 12.0])},
    "categorical": {"emission": {"0": np.array([0.7, 0.2, 0.05, 0.05]),
                                 "1": np.array([0.1, 0.5, 0.3, 0.1]),
                                 "2": np.array([0.05, 0.15, 0.2, 0.6])}},
}
KINDS = sorted(EMISSION)
MODELS = {k: jm.models.hmm(3, k, n_categories=4 if k == "categorical" else None) for k in KINDS}


def params(kind):
    p = {"start": START, "trans": {str(i): A[i] for i in range(3)}, **EMISSION[kind]}
    return jax.tree_util.tree_map(jnp.asarray, p)


def reference(kind):
    """An hmmlearn model holding the same parameters."""
    if kind == "normal":
        ref = H.GaussianHMM(3, covariance_type="diag")
        ref.means_ = EMISSION[kind]["means"][:, None]
        ref.covars_ = EMISSION[kind]["scales"][:, None] ** 2
    elif kind == "poisson":
        ref = H.PoissonHMM(3)
        ref.lambdas_ = EMISSION[kind]["rates"][:, None]
    else:
        ref = H.CategoricalHMM(3)
        ref.emissionprob_ = np.stack([EMISSION[kind]["emission"][str(i)] for i in range(3)])
    ref.startprob_, ref.transmat_ = START, A
    return ref


def sequences(kind, lengths=(60, 35, 47), seed=0):
    ref = reference(kind)
    out = []
    for i, T in enumerate(lengths):
        X, _ = ref.sample(T, random_state=seed + i)
        out.append(X[:, 0].astype(int) if kind != "normal" else X[:, 0])
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_sample_matches_the_params_within_sampling_error(kind):
    model, p, T = MODELS[kind], params(kind), 20_000
    d = model.sample(p, T, jax.random.PRNGKey(7))
    x, s = np.asarray(d["x"]), np.asarray(d["states"])
    assert x.shape == s.shape == (T,)
    assert s.min() >= 0 and s.max() < 3
    # Transition frequencies against A, row by row (binomial standard errors).
    counts = np.zeros((3, 3))
    np.add.at(counts, (s[:-1], s[1:]), 1)
    n_from = counts.sum(axis=1, keepdims=True)
    freq = counts / n_from
    se = np.sqrt(A * (1 - A) / n_from)
    assert np.all(np.abs(freq - A) < 4 * se), (freq, A)
    # Emission moments per state.
    for k in range(3):
        xk = x[s == k].astype(float)
        n = xk.size
        assert n > 1000
        if kind == "normal":
            mu, sd = EMISSION[kind]["means"][k], EMISSION[kind]["scales"][k]
            assert abs(xk.mean() - mu) < 4 * sd / np.sqrt(n)
            assert abs(xk.var(ddof=1) - sd**2) < 4 * sd**2 * np.sqrt(2 / (n - 1))
        elif kind == "poisson":
            lam = EMISSION[kind]["rates"][k]
            assert abs(xk.mean() - lam) < 4 * np.sqrt(lam / n)
            assert abs(xk.var(ddof=1) - lam) < 4 * np.sqrt((lam + 2 * lam**2) / n)   # Var(s^2) for Poisson
        else:
            assert np.issubdtype(x.dtype, np.integer)
            prob = EMISSION[kind]["emission"][str(k)]
            f = np.bincount(xk.astype(int), minlength=4) / n
            assert np.all(np.abs(f - prob) < 4 * np.sqrt(prob * (1 - prob) / n)), (f, prob)
    # The same key gives the same draw; another key a different one.
    again = model.sample(p, T, jax.random.PRNGKey(7))
    np.testing.assert_array_equal(np.asarray(again["x"]), x)
    assert not np.array_equal(np.asarray(model.sample(p, T, jax.random.PRNGKey(8))["states"]), s)


def test_sample_batched_params_and_small_T():
    model = MODELS["poisson"]
    p = params("poisson")
    pb = jax.tree_util.tree_map(lambda v: jnp.stack([v, v]), p)
    d = model.sample(pb, 50, 3)                    # an int seeds PRNGKey
    assert d["x"].shape == d["states"].shape == (2, 50)
    assert not np.array_equal(np.asarray(d["states"][0]), np.asarray(d["states"][1]))   # independent keys
    one = model.sample(p, 1, jax.random.PRNGKey(0))
    assert one["x"].shape == (1,)
    with pytest.raises(ValueError, match="positive int"):
        model.sample(p, 0, jax.random.PRNGKey(0))


@pytest.mark.parametrize("kind", KINDS)
def test_score_equals_hmmlearn_single_and_ragged_batch(kind):
    model, p, ref = MODELS[kind], params(kind), reference(kind)
    seqs = sequences(kind)
    np.testing.assert_allclose(float(model.score(p, {"x": seqs[0]})), ref.score(seqs[0][:, None]), rtol=1e-8)
    padded, mask = jm.pad(seqs, fill="edge" if kind == "categorical" else None)
    batch = np.asarray(model.score(p, {"x": padded}, mask=mask))
    assert batch.shape == (3,)
    for b, x in zip(batch, seqs):
        np.testing.assert_allclose(b, ref.score(x[:, None]), rtol=1e-8)
    # hmmlearn's score over several sequences is their total.
    X = np.concatenate(seqs)[:, None]
    np.testing.assert_allclose(batch.sum(), ref.score(X, lengths=[len(x) for x in seqs]), rtol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_viterbi_and_posterior_equal_per_sequence_and_hmmlearn(kind):
    model, p, ref = MODELS[kind], params(kind), reference(kind)
    seqs = sequences(kind, seed=11)
    xb, mask = jm.pad(seqs, fill="edge" if kind == "categorical" else None)
    paths = np.asarray(model.viterbi(p, {"x": xb}, mask=mask))
    post = np.asarray(model.posterior(p, xb, mask=mask))
    assert paths.shape == np.shape(xb) and post.shape == np.shape(xb) + (3,)
    # Batched params (one set per sequence) decode the same.
    pb = jax.tree_util.tree_map(lambda v: jnp.stack([v] * len(seqs)), p)
    np.testing.assert_array_equal(np.asarray(model.viterbi(pb, {"x": xb}, mask=mask)), paths)
    for i, x in enumerate(seqs):
        T = len(x)
        single = np.asarray(model.viterbi(p, {"x": x}))
        np.testing.assert_array_equal(paths[i, :T], single)
        np.testing.assert_array_equal(paths[i, :T], ref.decode(x[:, None], algorithm="viterbi")[1])
        # Padding repeats the last decoded state.
        assert np.all(paths[i, T:] == paths[i, T - 1])
        np.testing.assert_allclose(post[i, :T], ref.predict_proba(x[:, None]), atol=1e-10)
        np.testing.assert_allclose(post[i, :T], np.asarray(model.posterior(p, {"x": x})), atol=1e-12)


def test_viterbi_of_a_fit_result_has_the_users_length():
    # A fit pads the time axis to a shape bucket (30 -> 32 here); paths and posteriors of
    # the fit result, also after sort_states, line up with the user's (B, 30) arrays.
    rng = np.random.default_rng(3)
    x = rng.poisson(np.where(rng.random((3, 30)) < 0.5, 2.0, 9.0)).astype(float)
    x, mask = jm.pad([x[0], x[1, :25], x[2, :28]])
    model = jm.models.hmm(2, "poisson", start="uniform")
    batch = model.sort_states(jm.fit_batch(model, {"x": x}, method="em", mask=mask, max_iter=50))
    paths = np.asarray(model.viterbi(batch))
    assert paths.shape == x.shape
    direct = np.asarray(model.viterbi(batch.params, {"x": x}, mask=mask))
    np.testing.assert_array_equal(paths[np.asarray(mask)], direct[np.asarray(mask)])
