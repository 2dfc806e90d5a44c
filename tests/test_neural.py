"""Neural-network likelihoods (issue 14, part 3): pytree parameters, a bigram language
model whose MLE is the table of transition frequencies, MLPs fitted by L-BFGS and
Adam, fits too big for a dense Hessian, and ``method="auto"`` by parameter count."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm
from jaxmle import _solve
from jaxmle.optimizers import AUTO_NEWTON_MAX_PARAMS, resolve

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "neural_regression.py"
V = 6   # vocabulary size of the bigram model


# -- a bigram "language model" ----------------------------------------------------

def _tokens(n=4000, seed=0):
    """A Markov chain over V symbols with a random, strongly non-uniform transition matrix."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(V, 2.0), size=V)
    seq = np.empty(n, np.int32)
    seq[0] = 0
    for t in range(1, n):
        seq[t] = rng.choice(V, p=P[seq[t - 1]])
    return {"prev": jnp.asarray(seq[:-1]), "next": jnp.asarray(seq[1:])}


def _counts(data):
    C = np.zeros((V, V))
    np.add.at(C, (np.asarray(data["prev"]), np.asarray(data["next"])), 1.0)
    return C


def _bigram_simplex(p, d):
    P = jnp.stack(p["rows"])                      # a list of V probability vectors
    return jnp.log(P[d["prev"], d["next"]])


def _bigram_logits(p, d):
    return jax.nn.log_softmax(p["logits"], axis=-1)[d["prev"], d["next"]]


def test_bigram_mle_is_the_table_of_transition_frequencies():
    data = _tokens()
    C = _counts(data)
    assert (C > 0).all()
    freq = C / C.sum(axis=1, keepdims=True)
    model = jm.Model(_bigram_simplex, {"rows": [jm.Simplex(jnp.ones(V) / V) for _ in range(V)]})
    res = jm.fit(model, data)
    assert res.method == "newton" and res.converged
    np.testing.assert_allclose(np.stack(res.params["rows"]), freq, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(float(res.loglik), np.sum(C * np.log(freq)), rtol=1e-12)
    # Each row is a multinomial: its covariance is (diag(p) - p p') / n_i, SE sqrt(p (1 - p) / n_i).
    se = np.stack(res.stderr["rows"])
    np.testing.assert_allclose(se, np.sqrt(freq * (1 - freq) / C.sum(axis=1, keepdims=True)), rtol=1e-6)


def test_bigram_as_unconstrained_logits_reproduces_the_counts():
    """The over-parametrised softmax (each row shift-invariant): the probabilities are still
    the frequencies, and the flat directions are reported, not hidden."""
    data = _tokens(seed=1)
    C = _counts(data)
    model = jm.Model(_bigram_logits, {"logits": jnp.zeros((V, V))})
    res = jm.fit(model, data, method="lbfgs", warn=False)
    P = np.asarray(jax.nn.softmax(res.params["logits"], axis=-1))
    np.testing.assert_allclose(P, C / C.sum(axis=1, keepdims=True), rtol=1e-5)
    assert int(res.status) == jm.Status.HESSIAN_NOT_PD


# -- MLPs with list-of-dict parameters --------------------------------------------

def _mlp_spec(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [{"w": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a)), "b": jnp.zeros(b)}
            for a, b in zip(sizes[:-1], sizes[1:])]


def _mlp(layers, x):
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def _regression_loglik(p, d):
    return jax.scipy.stats.norm.logpdf(d["y"], _mlp(p["layers"], d["x"])[:, 0], p["sigma"])


def _wave(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.5, 2.5, (n, 1))
    return {"x": jnp.asarray(x), "y": jnp.asarray(np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=n))}


def _linear_loglik(data):
    """The maximised log-likelihood of the homoscedastic line y = a + b x + N(0, sigma^2) (OLS)."""
    x, y = np.asarray(data["x"])[:, 0], np.asarray(data["y"])
    X = np.c_[np.ones_like(x), x]
    rss = np.sum((y - X @ np.linalg.lstsq(X, y, rcond=None)[0]) ** 2)
    return -0.5 * y.size * (np.log(2 * np.pi * rss / y.size) + 1)


@pytest.mark.parametrize("method", ["lbfgs", jm.optimizers.Adam(learning_rate=0.02)])
def test_mlp_beats_a_linear_model_on_nonlinear_data(method):
    data = _wave()
    mlp = jm.Model(_regression_loglik, {"layers": _mlp_spec([1, 16, 1]), "sigma": jm.Positive(1.0)})
    assert mlp.n_free == 16 + 16 + 16 + 1 + 1
    res = jm.fit(mlp, data, method=method, max_iter=2000, warn=False)
    assert isinstance(res.params["layers"], list) and res.params["layers"][0]["w"].shape == (1, 16)
    assert np.isfinite(float(res.loglik))
    # Noise sd 0.1 vs a line through a sine (residual sd ~0.6): the network wins by far,
    # its 50 parameters against the line's 3 included.
    ll_linear = _linear_loglik(data)
    assert float(res.loglik) > ll_linear + 150
    assert float(res.aic) < (6 - 2 * ll_linear) - 200
    assert float(res.params["sigma"]) < 0.15


# -- more parameters than a dense Hessian allows ----------------------------------

def test_fit_above_the_dense_hessian_limit_skips_standard_errors_with_a_message():
    data = _wave(n=100)
    model = jm.Model(_regression_loglik, {"layers": _mlp_spec([1, 48, 48, 1]), "sigma": jm.Positive(1.0)})
    assert model.n_free > _solve.DENSE_HESSIAN_MAX_PARAMS
    res = jm.fit(model, data, max_iter=40, warn=False)
    assert res.method == "lbfgs"
    assert res.hessian_skipped and res.cov is None and np.isnan(float(res.cond))
    assert np.isfinite(float(res.loglik)) and int(res.n_iter) > 0
    assert np.all(np.isnan(np.asarray(res.stderr_flat)))
    assert np.isnan(float(res.stderr["sigma"])) and res.stderr["layers"][1]["w"].shape == (48, 48)
    assert "standard errors not computed" in res.stderr_note and "jm.Fixed" in res.stderr_note
    text = res.summary()
    assert "NOTE: standard errors not computed" in text and "more; res.params holds them all" in text
    assert len(text.splitlines()) < 120
    assert np.isnan(res.conf_int()["sigma"]).all()
    assert res.to_dict()["cov"] is None
    with pytest.raises(ValueError, match="dense Hessian"):
        res.derived(lambda p: p["sigma"] ** 2)
    with pytest.raises(ValueError, match="dense Hessian"):
        res.conf_int(method="profile")
    with pytest.raises(ValueError, match="bound=.low, high."):
        res.profile("sigma")


def test_without_a_hessian_the_status_rests_on_the_gradient_rule(monkeypatch):
    """With the limit lowered, a small well-posed fit keeps its estimate and CONVERGED status
    (the gradient rule), and a likelihood rising to infinity is still AT_BOUNDARY."""
    rng = np.random.default_rng(3)
    X = np.c_[np.ones(300), rng.normal(size=(300, 2))]
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=300)
    ll = lambda p, d: jax.scipy.stats.norm.logpdf(d["y"], d["X"] @ p["beta"], p["sigma"])  # noqa: E731
    monkeypatch.setattr(_solve, "DENSE_HESSIAN_MAX_PARAMS", 1)
    # A new model: the limit is read when its program is compiled.
    res = jm.fit(jm.Model(ll, {"beta": jnp.zeros(3), "sigma": jm.Positive(1.0)}),
                 {"X": jnp.asarray(X), "y": jnp.asarray(y)}, method="lbfgs")
    assert res.hessian_skipped and int(res.status) == jm.Status.CONVERGED
    ols = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(res.params["beta"], ols, rtol=1e-6)
    # The profile over a given range needs no Hessian: it peaks at the estimate.
    curve = res.profile("beta[1]", bound=(ols[1] - 0.2, ols[1] + 0.2), n_points=5)
    assert int(np.argmax(curve["loglik"])) == 2
    # Complete separation: the fit travels towards infinity and the path probe notices.
    x = jnp.linspace(-1, 1, 40)
    sep = {"X": jnp.c_[jnp.ones(40), x], "y": (x > 0.05).astype(x.dtype)}
    with pytest.warns(jm.ConvergenceWarning, match="AT_BOUNDARY"):
        res = jm.fit(jm.models.logistic(2), sep, method="lbfgs")
    assert res.hessian_skipped and int(res.status) == jm.Status.AT_BOUNDARY


def test_chunked_dense_hessian_equals_jax_hessian():
    k = _solve.HVP_CHUNK + 5
    A = jnp.asarray(np.random.default_rng(0).normal(size=(k, k)))
    fn = lambda z: jnp.sum(jnp.cos(A @ z)) + jnp.sum(z ** 4)  # noqa: E731
    z = jnp.linspace(-1, 1, k)
    chunked = jax.jit(lambda z: _solve.dense_hessian(fn, z))(z)
    np.testing.assert_allclose(chunked, jax.jit(jax.hessian(fn))(z), rtol=1e-12, atol=1e-10)


# -- method="auto" --------------------------------------------------------------------

def test_auto_picks_newton_for_few_parameters_and_lbfgs_for_many():
    """Fits above show it in use: the bigram's 30 free parameters get Newton, the 2,500-parameter
    network L-BFGS."""
    assert AUTO_NEWTON_MAX_PARAMS == 200
    assert resolve("auto", AUTO_NEWTON_MAX_PARAMS).name == "newton"
    for k in (AUTO_NEWTON_MAX_PARAMS + 1, 5_000, 10**6):
        assert resolve("auto", k).name == "lbfgs"
    net = jm.Model(_regression_loglik, {"layers": _mlp_spec([1, 20, 8, 1]), "sigma": jm.Positive(1.0)})
    assert resolve("auto", net.n_free, net).name == "lbfgs"


# -- the example ----------------------------------------------------------------------

def test_neural_regression_example_runs_small():
    env = dict(os.environ, JAXMLE_EXAMPLE_SMALL="1")
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    for text in ("heteroscedastic MLP", "homoscedastic linear", "AIC", "standard errors"):
        assert text in out.stdout, f"{text!r} missing:\n{out.stdout[-1500:]}"
