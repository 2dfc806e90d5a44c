"""Hidden Markov models against hmmlearn: forward log-likelihood, Viterbi, posteriors, fits, SEs.

Few compilations on purpose (a fit program costs seconds to compile): one batched
EM program (Poisson; fit_batch and n_starts share it), one Newton fit (normal);
the other checks jit small functions (the forward pass, Viterbi, one EM step).
"""

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm

H = pytest.importorskip("hmmlearn.hmm")

A_TRUE = np.array([[0.93, 0.07], [0.1, 0.9]])


def sample(T, emit, seed, A=A_TRUE):
    rng = np.random.default_rng(seed)
    s = np.zeros(T, int)
    s[0] = rng.integers(2)
    u = rng.random(T)
    for t in range(1, T):
        s[t] = int(u[t] < A[s[t - 1], 1])
    return emit(s, rng)


EMIT = {
    "poisson": lambda s, rng: rng.poisson(np.array([2.0, 9.0])[s]),
    "normal": lambda s, rng: rng.normal(np.array([-1.0, 1.0])[s], 1.0),
    "categorical": lambda s, rng: np.where(s == 1, rng.choice(3, len(s), p=[0.1, 0.3, 0.6]),
                                           rng.choice(3, len(s), p=[0.6, 0.3, 0.1])),
}
EMISSION = {
    "poisson": {"rates": np.array([2.5, 8.0])},
    "normal": {"means": np.array([-1.0, 1.5]), "scales": np.array([0.8, 1.3])},
    "categorical": {"emission": {"0": np.array([0.6, 0.3, 0.1]), "1": np.array([0.1, 0.3, 0.6])}},
}
MODELS = {"poisson": jm.models.hmm(2, "poisson"), "normal": jm.models.hmm(2, "normal"),
          "categorical": jm.models.hmm(2, "categorical", n_categories=3)}
A0, START0 = np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0.4, 0.6])


def params(A, start, emission):
    p = {"start": start, "trans": {"0": A[0], "1": A[1]}, **emission}
    return jax.tree_util.tree_map(jnp.asarray, p)


def reference(kind, A, start, emission):
    """An hmmlearn model holding the same parameters."""
    ref = {"poisson": H.PoissonHMM, "normal": H.GaussianHMM, "categorical": H.CategoricalHMM}[kind](2)
    ref.startprob_, ref.transmat_ = np.asarray(start), np.asarray(A)
    if kind == "poisson":
        ref.lambdas_ = np.asarray(emission["rates"])[:, None]
    elif kind == "normal":
        ref.means_, ref.covars_ = emission["means"][:, None], emission["scales"][:, None] ** 2
    else:
        ref.emissionprob_ = np.stack([emission["emission"]["0"], emission["emission"]["1"]])
    return ref


_EVAL = {}


def evaluate(kind, p, x, mask=None):
    """(log-likelihood, Viterbi path, posteriors) in one compiled call per model."""
    model = MODELS[kind]
    if kind not in _EVAL:
        _EVAL[kind] = jax.jit(lambda p, d, m: (model.loglik_sum(p, d, m), model.viterbi(p, d, m),
                                               model.posterior(p, d, m), jnp.sum(jnp.where(m, model.loglik(p, d), 0))))
    mask = np.ones(len(x), bool) if mask is None else mask
    return jax.tree_util.tree_map(np.asarray, _EVAL[kind](p, {"x": jnp.asarray(x)}, jnp.asarray(mask)))


@pytest.mark.parametrize("kind", sorted(EMIT))
def test_forward_viterbi_posterior_equal_hmmlearn_at_the_same_params(kind):
    x = sample(200, EMIT[kind], 1)
    ll, path, post, terms = evaluate(kind, params(A0, START0, EMISSION[kind]), x)
    ref = reference(kind, A0, START0, EMISSION[kind])
    np.testing.assert_allclose(ll, ref.score(x[:, None]), rtol=1e-12)
    np.testing.assert_array_equal(path, ref.decode(x[:, None])[1])
    np.testing.assert_allclose(post, ref.predict_proba(x[:, None]), atol=1e-10)
    # The per-step terms the fit machinery sees sum to the same log-likelihood.
    np.testing.assert_allclose(terms, ll, rtol=1e-12)


def test_forward_is_stable_over_a_long_sequence():
    x = sample(100_000, EMIT["poisson"], 2)
    p = params(A_TRUE, np.array([0.5, 0.5]), {"rates": np.array([2.0, 9.0])})
    ll, path, _, _ = evaluate("poisson", p, x)
    ref = reference("poisson", A_TRUE, np.array([0.5, 0.5]), {"rates": np.array([2.0, 9.0])})
    assert np.isfinite(ll) and ll < -1e5
    np.testing.assert_allclose(ll, ref.score(x[:, None]), rtol=1e-11)
    np.testing.assert_array_equal(path, ref.decode(x[:, None])[1])


def test_masked_steps_are_skipped_in_the_recursion():
    """Against brute force over all state paths, with an interior and a trailing masked step."""
    rates = np.array([1.5, 6.0])
    x = np.array([0, 7, 1000, 5, 2, 1000])            # 1000: garbage where masked
    mask = np.array([True, True, False, True, True, False])
    total = 0.0
    for path in itertools.product(range(2), repeat=len(x)):
        pr = START0[path[0]] * np.prod([A0[a, b] for a, b in zip(path, path[1:])])
        for t, s in enumerate(path):
            if mask[t]:
                pr *= rates[s] ** x[t] * np.exp(-rates[s]) / np.prod(np.arange(1.0, x[t] + 1))
        total += pr
    p = params(A0, START0, {"rates": rates})
    # Padded to the length of the other tests' sequences (one compilation for all).
    xs, ms = np.resize(x, 200), np.concatenate([mask, np.zeros(194, bool)])
    ll, path, post, terms = evaluate("poisson", p, xs, ms)
    np.testing.assert_allclose(ll, np.log(total), rtol=1e-12)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all((path >= 0) & (path < 2))


def _hmmlearn_best(make, X, seeds=range(3)):
    fits = []
    for seed in seeds:
        ref = make(seed)
        if "s" not in ref.init_params:
            ref.startprob_ = np.full(2, 0.5)
        fits.append(ref.fit(X))
    return max(fits, key=lambda r: r.score(X))


def _fd_hessian(f, theta, h=1e-4):
    E = np.eye(theta.size) * h
    return np.array([[(f(theta + a + b) - f(theta + a - b) - f(theta - a + b) + f(theta - a - b)) / (4 * h * h)
                      for b in E] for a in E])


def test_poisson_em_batch_ragged_vs_hmmlearn_sort_states_and_stderr():
    seqs = [sample(T, EMIT["poisson"], 10 + i) for i, T in enumerate([300, 180, 240])]
    padded, mask = jm.pad(seqs, fill=500)          # padded counts must not count
    model = jm.models.hmm(2, "poisson", start="uniform")
    # The middle sequence starts with its states the other way round.
    init = {"rates": jnp.array([[1.0, 5.0], [5.0, 1.0], [1.0, 5.0]])}
    batch = jm.fit_batch(model, {"x": padded}, method="em", mask=mask, init=init)
    assert batch.converged.all() and batch.method == "em"
    assert np.asarray(batch.params["rates"])[1, 0] > np.asarray(batch.params["rates"])[1, 1]
    srt = model.sort_states(batch)
    rates, se = np.asarray(srt.params["rates"]), np.asarray(srt.stderr["rates"])
    assert (np.diff(rates, axis=1) > 0).all()
    np.testing.assert_allclose(se[1], np.asarray(batch.stderr["rates"])[1, ::-1], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(srt.params["trans"]["0"])[1],
                               np.asarray(batch.params["trans"]["1"])[1, ::-1], rtol=1e-12)
    np.testing.assert_array_equal(srt.status, batch.status)
    np.testing.assert_allclose(srt.loglik, batch.loglik)
    paths = np.asarray(model.viterbi(srt))
    A = np.stack([np.asarray(srt.params["trans"]["0"]), np.asarray(srt.params["trans"]["1"])], axis=1)
    half = np.full(2, 0.5)
    for i, x in enumerate(seqs):
        X = x[:, None]
        at_ours = reference("poisson", A[i], half, {"rates": rates[i]})
        np.testing.assert_allclose(srt.loglik[i], at_ours.score(X), rtol=1e-12)   # the padding changed nothing
        np.testing.assert_array_equal(paths[i, : len(x)], at_ours.decode(X)[1])
        ref = _hmmlearn_best(lambda seed: H.PoissonHMM(2, params="tl", init_params="l", n_iter=1000,
                                                       tol=1e-9, random_state=seed), X)
        assert np.all(ref.startprob_ == 0.5)
        assert srt.loglik[i] >= ref.score(X) - 1e-6
        np.testing.assert_allclose(rates[i], np.sort(ref.lambdas_.ravel()), rtol=1e-3)

    # Standard errors against a finite-difference Hessian of hmmlearn's forward
    # log-likelihood in (P(0->1), P(1->0), rate 0, rate 1).
    X = seqs[0][:, None]

    def loglik(theta):
        a, b, r0, r1 = theta
        return reference("poisson", np.array([[1 - a, a], [b, 1 - b]]), half, {"rates": np.array([r0, r1])}).score(X)

    theta = np.array([A[0, 0, 1], A[0, 1, 0], *rates[0]])
    se_fd = np.sqrt(np.diag(np.linalg.inv(-_fd_hessian(loglik, theta))))
    ours = srt[0].stderr
    np.testing.assert_allclose([ours["trans"]["0"][1], ours["trans"]["1"][0], *ours["rates"]], se_fd, rtol=1e-4)
    np.testing.assert_allclose(ours["trans"]["0"][0], ours["trans"]["0"][1], rtol=1e-9)

    # n_starts on one (masked) sequence runs as a batch through the same compiled program.
    res = jm.fit(model, {"x": padded[1]}, method="em", mask=mask[1], n_starts=3, key=jax.random.key(0))
    assert res.starts["n"] == 3 and res.starts["at_best"] >= 1
    np.testing.assert_allclose(res.loglik, batch.loglik[1], rtol=1e-9)


def test_normal_newton_vs_hmmlearn_and_the_em_fixed_point():
    x = sample(200, EMIT["normal"], 20)
    model = MODELS["normal"]
    init = {"means": jnp.array([-0.5, 0.5]), "trans": {"0": jnp.array([0.8, 0.2]), "1": jnp.array([0.2, 0.8])}}
    res = jm.fit(model, {"x": jnp.asarray(x)}, method="newton", init=init, warn=False)
    # One sequence: the MLE of the start distribution is a vertex (all mass on one state),
    # a structural edge the documented rule does not report: everything else is interior.
    assert res.status == jm.Status.CONVERGED
    assert res.boundary_params == []
    ref = _hmmlearn_best(lambda seed: H.GaussianHMM(2, n_iter=1000, tol=1e-9, min_covar=1e-9, covars_prior=0,
                                                    random_state=seed), x[:, None])
    assert float(res.loglik) >= ref.score(x[:, None]) - 1e-6
    np.testing.assert_allclose(np.sort(res.params["means"]), np.sort(ref.means_.ravel()), atol=1e-3)
    # The vertex is hmmlearn's (its EM gets there geometrically), for the same state.
    k = int(np.argmax(ref.startprob_))
    same = int(np.argmin(np.abs(np.asarray(res.params["means"]) - ref.means_[k, 0])))
    assert ref.startprob_[k] > 1 - 1e-6 and float(res.params["start"][same]) > 1 - 1e-12
    # A probability at a vertex has no Wald standard error (its delta-method one is 0):
    # reported NaN; the other parameters keep theirs.
    assert np.all(np.isnan(np.asarray(res.stderr["start"])))
    assert np.all(np.isfinite(np.asarray(res.stderr["means"])))
    # The MLE is a fixed point of Baum-Welch.
    again = jax.jit(model.em_step)(res.params, {"x": jnp.asarray(x)}, None)
    flat = model.spec.treedef.flatten_up_to
    for a, b in zip(flat(again), flat(res.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_normal_newton_reports_a_transition_at_its_edge_not_the_start_vertex():
    """AT_BOUNDARY still names a transition probability whose MLE is 0: one switch, 0 -> 1,
    so P(1 -> 0) = 0. The start vertex is not named (the rule in jm.models.hmm)."""
    rng = np.random.default_rng(21)
    x = np.concatenate([rng.normal(-4.0, 1.0, 100), rng.normal(4.0, 1.0, 100)])
    res = jm.fit(MODELS["normal"], {"x": jnp.asarray(x)}, method="newton", warn=False)
    assert res.status == jm.Status.AT_BOUNDARY
    lo = int(np.argmin(np.asarray(res.params["means"])))
    assert f"trans.{1 - lo}[{lo}]" in res.boundary_params
    assert not any(n.startswith("start") for n in res.boundary_params)
    ref = _hmmlearn_best(lambda seed: H.GaussianHMM(2, n_iter=1000, tol=1e-9, min_covar=1e-9, covars_prior=0,
                                                    random_state=seed), x[:, None])
    assert float(res.loglik) >= ref.score(x[:, None]) - 1e-6


def test_normal_newton_batch_every_fit_at_hmmlearn_optimum_or_not_converged():
    """Issue 22 item 3, small: many series in one fit_batch with Newton and the default
    start="estimate". Every fit reaches hmmlearn's best EM optimum (to 1e-6) or says it
    did not; the start vertex of each series is no status of its own."""
    B, T = 16, 300
    rng = np.random.default_rng(2207)
    A = np.array([[0.95, 0.05], [0.1, 0.9]])
    xs = np.stack([sample(T, EMIT["normal"], int(rng.integers(2**31)), A=A) for _ in range(B)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = jm.fit_batch(MODELS["normal"], {"x": jnp.asarray(xs)}, method="newton")
    status, ll = np.asarray(batch.status), np.asarray(batch.loglik)
    names = {jm.Status(int(s)).name for s in status}
    assert names <= {"CONVERGED", "AT_BOUNDARY", "LINESEARCH_FAILED", "MAX_ITER", "HESSIAN_NOT_PD",
                     "PRECISION_LIMIT"}
    assert np.mean(status == jm.Status.CONVERGED) >= 0.9
    for i in np.flatnonzero(status == jm.Status.AT_BOUNDARY):
        assert not any(n.startswith("start") for n in batch[int(i)].boundary_params)
    for i, x in enumerate(xs):
        ref = _hmmlearn_best(lambda seed: H.GaussianHMM(2, n_iter=500, tol=1e-10, min_covar=1e-10, covars_prior=0,
                                                        random_state=seed), x[:, None], seeds=range(2))
        assert ll[i] >= ref.score(x[:, None]) - 1e-6 or status[i] != jm.Status.CONVERGED, (i, status[i])


def test_categorical_baum_welch_vs_hmmlearn():
    x = sample(300, EMIT["categorical"], 30)
    model, d = MODELS["categorical"], {"x": jnp.asarray(x)}
    p0 = params(A0, START0, EMISSION["categorical"])
    run = jax.jit(lambda p: jax.lax.fori_loop(0, 300, lambda _, q: model.em_step(q, d, None), p))
    p = model.sort_states(run(p0))
    ll = float(evaluate("categorical", p, x)[0])
    ref = _hmmlearn_best(lambda seed: H.CategoricalHMM(2, n_iter=1000, tol=1e-9, random_state=seed), x[:, None])
    assert ll >= ref.score(x[:, None]) - 1e-6
    order = np.argsort(ref.emissionprob_ @ np.arange(3))
    E = np.stack([p["emission"]["0"], p["emission"]["1"]])
    np.testing.assert_allclose(E, ref.emissionprob_[order], atol=2e-3)


def test_hmm_errors():
    with pytest.raises(ValueError, match="emission must be one of"):
        jm.models.hmm(2, "gamma")
    with pytest.raises(ValueError, match="n_categories"):
        jm.models.hmm(2, "categorical")
    with pytest.raises(ValueError, match="start must be .estimate., .uniform. or a probability vector"):
        jm.models.hmm(2, start=[0.2, 0.2])
    with pytest.raises(ValueError, match="expected \\(T,\\)"):
        jm.fit(MODELS["normal"], {"x": jnp.ones((10, 2))})
    with pytest.raises(ValueError, match="must lie in 0..2"):
        jm.fit(MODELS["categorical"], {"x": jnp.array([0, 1, 3])})
    with pytest.raises(ValueError, match="needs integer x"):
        jm.fit(MODELS["categorical"], {"x": jnp.array([0.0, 1.0])})
