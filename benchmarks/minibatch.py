"""How close mini-batch Adam and SGD get to the MLE with default settings (issue 23, item 3).

Each problem is fitted with ``method="adam"`` and with SGD (``jm.optimizers.GradientAscent()``,
no learning rate: the default rule of ``jaxmle._stochastic``; ``method="sgd"`` by name takes
it too once ``jaxmle._stream._stochastic_method`` passes no learning rate) and compared with
an exact reference on the same data:

- logistic regression, 200,000 x 6 (an intercept and 5 standard-normal features),
  4,096 rows per batch, 5 epochs; the reference is statsmodels' ``Logit``;
- a bigram model, 20,000 tokens of a random 10-symbol Markov chain, as Simplex rows and
  as softmax logits, 2,048 tokens per batch, 30 epochs; the reference is the table of
  transition frequencies (the closed-form MLE);
- three checks that the defaults were not tuned to those two: Poisson regression
  (statsmodels ``GLM``), linear-Gaussian regression with unknown sigma (statsmodels
  ``OLS``; sigma's MLE is sqrt(RSS / n)) and a logistic regression whose features are
  scaled by 1e-2 to 1e3 and shifted (statsmodels ``Logit``), each 200,000 rows,
  4,096 per batch, 5 epochs.

The distance to the MLE is in standard errors: the largest |estimate - MLE| / SE over the
parameters, and the Mahalanobis distance sqrt(d' cov^-1 d) with the reference covariance
(the Newton decrement's scale). For the bigram it is the largest absolute error of a
transition probability. Accuracy only: run under shared load, timings mean nothing.

    python benchmarks/minibatch.py [--scale 1.0] [--seeds 1] [--json benchmarks/results/minibatch.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jaxmle as jm  # noqa: E402
from _common import print_table, provenance, write_json  # noqa: E402

V = 10   # the bigram model's vocabulary


# -- problems ---------------------------------------------------------------------------

def logistic_data(n, seed=0, scales=None, shifts=None):
    rng = np.random.default_rng(seed)
    Z = np.column_stack([np.ones(n), rng.standard_normal((n, 5))])
    beta = np.array([0.5, -1.0, 0.75, 0.25, -0.5, 1.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-Z @ beta))).astype(float)
    X = Z if scales is None else Z * scales + shifts
    return {"X": X, "y": y}


def poisson_data(n, seed=1):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.standard_normal((n, 4))])
    return {"X": X, "y": rng.poisson(np.exp(X @ np.array([0.3, 0.5, -0.4, 0.2, 0.1]))).astype(float)}


def linear_data(n, seed=2):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.standard_normal((n, 4))])
    return {"X": X, "y": X @ np.array([2.0, 1.0, -0.5, 0.3, 0.0]) + 3.0 * rng.standard_normal(n)}


def bigram_data(n, seed=0):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(V, 2.0), size=V)
    cum, u = np.cumsum(P, axis=1), rng.random(n)
    seq = np.zeros(n, np.int64)
    for t in range(1, n):
        seq[t] = min(np.searchsorted(cum[seq[t - 1]], u[t]), V - 1)
    return {"prev": seq[:-1], "next": seq[1:]}


def bigram_model(kind):
    if kind == "simplex":
        return jm.Model(lambda p, d: jnp.log(jnp.stack(p["rows"])[d["prev"], d["next"]]),
                        {"rows": [jm.Simplex(jnp.ones(V) / V) for _ in range(V)]})
    return jm.Model(lambda p, d: jax.nn.log_softmax(p["logits"], axis=-1)[d["prev"], d["next"]],
                    {"logits": jnp.zeros((V, V))})


def bigram_probs(res, kind):
    if kind == "simplex":
        return np.stack([np.asarray(r) for r in res.params["rows"]])
    return np.asarray(jax.nn.softmax(res.params["logits"], axis=-1))


def frequencies(d):
    C = np.zeros((V, V))
    np.add.at(C, (d["prev"], d["next"]), 1.0)
    return C / C.sum(axis=1, keepdims=True)


# -- references (statsmodels) --------------------------------------------------------------

def reference(kind, d):
    """(MLE, covariance) of the free parameters in jaxmle's order, from statsmodels."""
    import statsmodels.api as sm
    if kind == "logistic":
        r = sm.Logit(d["y"], d["X"]).fit(method="newton", tol=1e-12, maxiter=100, disp=0)
        return np.asarray(r.params), np.asarray(r.cov_params())
    if kind == "poisson":
        r = sm.GLM(d["y"], d["X"], family=sm.families.Poisson()).fit(tol=1e-12)
        return np.asarray(r.params), np.asarray(r.cov_params())
    # linear: beta by OLS; sigma's MLE sqrt(RSS/n), asymptotically independent of beta, SE sigma/sqrt(2n)
    n = len(d["y"])
    r = sm.OLS(d["y"], d["X"]).fit()
    sigma = np.sqrt(np.sum(r.resid ** 2) / n)
    XtX_inv = np.linalg.inv(d["X"].T @ d["X"])
    cov = np.zeros((6, 6))
    cov[:5, :5] = sigma ** 2 * XtX_inv
    cov[5, 5] = sigma ** 2 / (2 * n)
    return np.append(np.asarray(r.params), sigma), cov


def natural_flat(res):
    """The estimates on the natural scale, flat in the order of res.param_names."""
    return np.concatenate([np.ravel(np.asarray(res.params[k])) for k in res.params])


def distances(res, mle, cov):
    d = natural_flat(res) - mle
    return float(np.max(np.abs(d) / np.sqrt(np.diag(cov)))), float(np.sqrt(d @ np.linalg.solve(cov, d)))


METHODS = {"adam": "adam", "sgd": jm.optimizers.GradientAscent()}


def fit(model, data, method, batch_size, epochs, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jm.ConvergenceWarning)
        return jm.fit(model, data, method=METHODS[method], batch_size=batch_size, epochs=epochs,
                      key=jax.random.key(seed))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every problem's size (rows, tokens)")
    ap.add_argument("--seeds", type=int, default=1, help="shuffling keys per fit (the worst is reported too)")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "minibatch.json"))
    args = ap.parse_args(argv)
    n = int(200_000 * args.scale)
    scaled = (np.array([1.0, 100.0, 0.01, 10.0, 1.0, 1000.0]), np.array([0.0, 50.0, 0.0, 0.0, 3.0, 0.0]))
    glms = [
        ("logistic 200k x 6", "logistic", jm.models.logistic(6), logistic_data(n), 0.1),
        ("poisson 200k x 5", "poisson", jm.models.poisson(5), poisson_data(n), None),
        ("linear-Gaussian 200k x 5 + sigma", "linear", jm.models.linear(5), linear_data(n), None),
        ("logistic, features scaled 1e-2..1e3", "logistic", jm.models.logistic(6),
         logistic_data(n, seed=3, scales=scaled[0], shifts=scaled[1]), None),
    ]
    rows = []
    for label, kind, model, data, target in glms:
        mle, cov = reference(kind, data)
        for method in METHODS:
            for seed in range(args.seeds):
                res = fit(model, data, method, 4096, 5, seed)
                zmax, maha = distances(res, mle, cov)
                rows.append({"problem": label, "method": method, "seed": seed, "batch": 4096, "epochs": 5,
                             "max_se": zmax, "mahalanobis_se": maha, "prob_err": None,
                             "target": None if target is None else f"<= {target} SE",
                             "status": res.status.name, "steps": int(res.n_iter)})
                print_row(rows[-1])
    tokens = bigram_data(int(20_000 * args.scale))
    freq = frequencies(tokens)
    for kind in ("simplex", "logits"):
        model = bigram_model(kind)
        for method in METHODS:
            for seed in range(args.seeds):
                res = fit(model, tokens, method, 2048, 30, seed)
                rows.append({"problem": f"bigram 20k tokens, V=10, {kind}", "method": method, "seed": seed,
                             "batch": 2048, "epochs": 30, "max_se": None, "mahalanobis_se": None,
                             "prob_err": float(np.max(np.abs(bigram_probs(res, kind) - freq))),
                             "target": "<= 2e-3", "status": res.status.name, "steps": int(res.n_iter)})
                print_row(rows[-1])
    print()
    print_table(rows, ["problem", "method", "seed", "batch", "epochs", "max_se", "mahalanobis_se", "prob_err",
                       "target", "status"])
    write_json(args.json, {
        "what": "distance of default mini-batch Adam / SGD fits from the MLE (issue 23 item 3); accuracy only",
        "sgd_method": "jm.optimizers.GradientAscent() (no learning rate: the default rule)",
        "scale": args.scale, "provenance": provenance(), "rows": rows,
    })


def print_row(r):
    print(f"{r['problem']:38s} {r['method']:5s} seed {r['seed']}: max {r['max_se']} SE, "
          f"mahalanobis {r['mahalanobis_se']} SE, prob err {r['prob_err']}, {r['status']}", flush=True)


if __name__ == "__main__":
    main()
