"""Gaussian mixtures: EM against Newton, scikit-learn and scipy; multi-start, batching."""

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
    _check_1d_against_sklearn_and_scipy(nt, em)


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
    _check_2d_against_sklearn(nt, em, X, "full")
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
    # fit_distribution starts at the closed form; the same log-density started away from
    # it (mean shifted, correlation dropped, variances doubled) must find it by iterating.
    mvn = jm.Model(jm.distributions.get("multivariate_normal").logpdf,
                   {"mean": np.zeros(2), "cov": jm.PositiveDefinite(np.eye(2))}, name="mvn")
    far = jm.fit(mvn, jnp.asarray(X), init={"mean": cf["mean"] + 1.0, "cov": np.diag(2 * np.diag(cf["cov"]))})
    assert far.converged and int(far.n_iter) >= 2
    np.testing.assert_allclose(far.params["mean"], cf["mean"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(far.params["cov"], cf["cov"], rtol=1e-9)
    # Wishart-type closed form: var(S_11) = 2 S_11^2 / n.
    np.testing.assert_allclose(res.stderr["cov"][0, 0], np.sqrt(2 * cf["cov"][0, 0] ** 2 / 400), rtol=1e-5)


# -- against scikit-learn's GaussianMixture and scipy.optimize on the same data ------
# reg_covar=0: sklearn otherwise adds 1e-6 to every variance (not the MLE). Its EM stops
# on a change of the mean log-likelihood below tol, so it is run to 1e-15 from many inits.

def _sklearn_gmm(X, covariance_type):
    mixture = pytest.importorskip("sklearn.mixture")
    X = X.reshape(len(X), -1)
    gm = mixture.GaussianMixture(2, covariance_type=covariance_type, tol=1e-15, max_iter=100_000, n_init=10,
                                 reg_covar=0.0, random_state=0).fit(X)
    order = np.argsort(gm.means_[:, 0])
    return gm, order, float(gm.score(X) * len(X))


def _check_1d_against_sklearn_and_scipy(nt, em):
    optimize = pytest.importorskip("scipy.optimize")
    special = pytest.importorskip("scipy.special")
    ours = _sorted(nt.params)
    sk, order, sk_ll = _sklearn_gmm(X1, "full")
    np.testing.assert_allclose(float(nt.loglik), sk_ll, rtol=1e-13)
    np.testing.assert_allclose(float(em.loglik), sk_ll, rtol=1e-12)
    np.testing.assert_allclose(ours["weights"], sk.weights_[order], rtol=1e-6)
    np.testing.assert_allclose(ours["means"], sk.means_[order, 0], rtol=1e-6)
    np.testing.assert_allclose(ours["scales"], np.sqrt(sk.covariances_[order, 0, 0]), rtol=1e-6)

    # scipy: the mixture log-likelihood written in NumPy, maximised by BFGS from sklearn's fit.
    def nll(t):
        lw = np.array([-np.logaddexp(0.0, t[0]), -np.logaddexp(0.0, -t[0])])
        s = np.exp(t[3:5])
        z = (X1[:, None] - t[1:3]) / s
        return -np.sum(special.logsumexp(lw - 0.5 * z * z - np.log(s) - 0.5 * np.log(2 * np.pi), axis=1))

    w, m, s = sk.weights_[order], sk.means_[order, 0], np.sqrt(sk.covariances_[order, 0, 0])
    t = optimize.minimize(nll, np.r_[np.log(w[1] / w[0]), m, np.log(s)], method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(float(nt.loglik), -nll(t), rtol=1e-14)
    np.testing.assert_allclose(ours["means"], t[1:3], rtol=1e-6)
    np.testing.assert_allclose(ours["scales"], np.exp(t[3:5]), rtol=1e-6)


def _check_2d_against_sklearn(nt, em, X, covariance):
    sk, order, sk_ll = _sklearn_gmm(X, covariance)
    np.testing.assert_allclose(float(nt.loglik), sk_ll, rtol=1e-13)
    np.testing.assert_allclose(float(em.loglik), sk_ll, rtol=1e-12)
    mine = np.argsort(np.asarray(nt.params["means"])[:, 0])
    np.testing.assert_allclose(np.asarray(nt.params["weights"])[mine], sk.weights_[order], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(nt.params["means"])[mine], sk.means_[order], rtol=1e-6, atol=1e-7)
    if covariance == "diag":
        np.testing.assert_allclose(np.asarray(nt.params["scales"])[mine], np.sqrt(sk.covariances_[order]), rtol=1e-6)
    else:
        np.testing.assert_allclose(np.asarray(nt.params["covs"])[mine], sk.covariances_[order], rtol=1e-6, atol=1e-7)


def test_diagonal_2d_mixture_matches_sklearn():
    rng = np.random.default_rng(7)
    X = np.concatenate([rng.normal([-2, 0], 0.7, (200, 2)), rng.normal([3, 1], 1.0, (150, 2))])
    gm = jm.models.gaussian_mixture(2, dim=2)
    em = jm.fit(gm, {"x": jnp.asarray(X)}, method="em", n_starts=4, key=jax.random.key(2))
    nt = jm.fit(gm, {"x": jnp.asarray(X)}, method="newton", init=em.params)
    assert em.converged and nt.converged
    _check_2d_against_sklearn(nt, em, X, "diag")
