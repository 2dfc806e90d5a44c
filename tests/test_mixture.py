"""Gaussian mixtures: EM against Newton, multi-start, batching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm

RNG = np.random.default_rng(0)
X1 = np.concatenate([RNG.normal(-2, 0.7, 300), RNG.normal(3, 1.2, 200)])


def _sorted(params):
    order = np.argsort(np.asarray(params["means"]))
    return {k: np.asarray(v)[order] for k, v in params.items()}


def test_em_and_newton_reach_the_same_optimum():
    gm = jm.models.gaussian_mixture(2)
    em = jm.fit(gm, {"x": jnp.asarray(X1)}, method="em", n_starts=6, key=jax.random.key(1))
    nt = jm.fit(gm, {"x": jnp.asarray(X1)}, method="newton", n_starts=6, key=jax.random.key(1))
    assert em.converged and nt.converged and em.method == "em"
    np.testing.assert_allclose(em.loglik, nt.loglik, rtol=1e-10)
    a, b = _sorted(em.params), _sorted(nt.params)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5)
    np.testing.assert_allclose(a["means"], [-2.0, 3.0], atol=0.25)
    np.testing.assert_allclose(a["weights"], [0.6, 0.4], atol=0.05)
    assert em.starts["n"] == 6 and 1 <= em.starts["at_best"] <= 6


def test_em_step_never_decreases_loglik():
    gm = jm.models.gaussian_mixture(3)
    p = {"weights": jnp.ones(3) / 3, "means": jnp.array([-1.0, 0.0, 1.0]), "scales": jnp.ones(3)}
    d = {"x": jnp.asarray(X1)}
    prev = float(jnp.sum(gm.loglik(p, d)))
    for _ in range(30):
        p = gm.em_step(p, d, None)
        cur = float(jnp.sum(gm.loglik(p, d)))
        assert cur >= prev - 1e-9
        prev = cur


def test_multivariate_diagonal_mixture_and_batch():
    X = np.concatenate([RNG.normal([-2, 0], 0.7, (200, 2)), RNG.normal([3, 1], 1.0, (150, 2))])
    gm = jm.models.gaussian_mixture(2, dim=2)
    res = jm.fit(gm, {"x": jnp.asarray(X)}, method="em", n_starts=4)
    m = np.asarray(res.params["means"])
    m = m[np.argsort(m[:, 0])]
    np.testing.assert_allclose(m, [[-2, 0], [3, 1]], atol=0.3)
    xs = jnp.asarray(np.stack([X1, X1[::-1]]))
    init = {"weights": jnp.array([[0.5, 0.5]] * 2), "means": jnp.array([[-1.0, 1.0]] * 2),
            "scales": jnp.ones((2, 2))}
    batch = jm.fit_batch(jm.models.gaussian_mixture(2), {"x": xs}, method="em", init=init)
    assert batch.converged.all()
    np.testing.assert_allclose(batch.loglik[0], batch.loglik[1], rtol=1e-9)   # same data, permuted


def test_em_errors():
    with pytest.raises(ValueError, match="method='em' needs a model with an EM update"):
        jm.fit(jm.models.logistic(2), {"X": jnp.ones((4, 2)), "y": jnp.array([0.0, 1, 0, 1])}, method="em")
    with pytest.raises(ValueError, match="x has shape"):
        jm.fit(jm.models.gaussian_mixture(2, dim=3), {"x": jnp.ones((10, 2))})


def test_full_covariance_mixture_em_matches_newton():
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.multivariate_normal([-2, 0], [[1.0, 0.6], [0.6, 1.0]], 250),
                        rng.multivariate_normal([2, 1], [[0.5, -0.2], [-0.2, 0.8]], 150)])
    gm = jm.models.gaussian_mixture(2, dim=2, covariance="full")
    em = jm.fit(gm, {"x": jnp.asarray(X)}, method="em", n_starts=4)
    nt = jm.fit(gm, {"x": jnp.asarray(X)}, method="newton", init=em.params)
    assert em.converged and nt.converged
    np.testing.assert_allclose(em.loglik, nt.loglik, rtol=1e-9)
    k = int(np.argmin(np.asarray(em.params["means"])[:, 0]))
    np.testing.assert_allclose(em.params["covs"][k], [[1.0, 0.6], [0.6, 1.0]], atol=0.25)
    with pytest.raises(ValueError, match="needs dim"):
        jm.models.gaussian_mixture(2, covariance="full")


def test_multivariate_normal_fit_equals_closed_form():
    X = RNG.multivariate_normal([1, -1], [[2, 0.8], [0.8, 1]], 400)
    res = jm.fit_distribution("multivariate_normal", X)
    cf = jm.closed_form("multivariate_normal", X)
    np.testing.assert_allclose(res.params["mean"], cf["mean"], rtol=1e-8)
    np.testing.assert_allclose(res.params["cov"], cf["cov"], rtol=1e-7)
    # Wishart-type closed form: var(S_11) = 2 S_11^2 / n.
    np.testing.assert_allclose(res.stderr["cov"][0, 0], np.sqrt(2 * cf["cov"][0, 0] ** 2 / 400), rtol=1e-5)
