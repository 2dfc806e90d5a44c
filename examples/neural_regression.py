"""Heteroscedastic regression with a neural network: a small MLP outputs the mean and the
log-variance of a Gaussian at each x; its weights (a list of dicts of arrays) are the
parameters, fitted by mini-batch Adam, polished by L-BFGS on the full data, and compared
with a homoscedastic straight line by log-likelihood, AIC and BIC."""

import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle as jm

jax.config.update("jax_enable_x64", True)

SMALL = os.environ.get("JAXMLE_EXAMPLE_SMALL") == "1"   # the test suite's quick run
N, EPOCHS, HIDDEN = (1_000, 20, 8) if SMALL else (4_000, 60, 16)


def true_mean(x):
    return np.sin(1.5 * x) + 0.3 * x


def true_sd(x):
    return 0.05 + 0.15 * np.abs(x)


rng = np.random.default_rng(0)
x = rng.uniform(-3, 3, N)
y = true_mean(x) + true_sd(x) * rng.normal(size=N)


def init_layers(sizes, seed=1):
    """Weights ~ N(0, 1/fan_in), biases 0: a list of {"w", "b"} dicts (any pytree works)."""
    r = np.random.default_rng(seed)
    return [{"w": r.normal(size=(a, b)) / np.sqrt(a), "b": np.zeros(b)} for a, b in zip(sizes[:-1], sizes[1:])]


def mlp(layers, x):
    h = x[:, None]
    for layer in layers[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    out = h @ layers[-1]["w"] + layers[-1]["b"]
    return out[:, 0], out[:, 1]                  # mean and log-variance


def loglik(p, d):
    mean, log_var = mlp(p["layers"], d["x"])
    return jax.scipy.stats.norm.logpdf(d["y"], mean, jnp.exp(0.5 * log_var))


net = jm.Model(loglik, {"layers": init_layers([1, HIDDEN, HIDDEN, 2])})
data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}

t0 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", jm.ConvergenceWarning)   # a stochastic optimum: polished below
    sgd = jm.fit(net, data, method=jm.optimizers.Adam(learning_rate=0.01), batch_size=64, epochs=EPOCHS,
                 key=jax.random.key(0))
t_sgd = time.perf_counter() - t0
res = sgd
if not SMALL:   # a few hundred exact L-BFGS steps from the stochastic optimum
    t0 = time.perf_counter()
    res = jm.fit(net, data, method="lbfgs", init=sgd.params, max_iter=300, warn=False)
    t_polish = time.perf_counter() - t0

X = jnp.c_[jnp.ones(N), data["x"]]
line = jm.fit(jm.models.linear(2), {"X": X, "y": data["y"]})

print(f"heteroscedastic MLP 1-{HIDDEN}-{HIDDEN}-2 ({res.k} parameters), n = {N:,}")
print(f"  mini-batch Adam, {EPOCHS} epochs of batches of 64: {t_sgd:.1f} s, loglik {float(sgd.loglik):.2f}, "
      f"status {jm.Status(int(sgd.status)).name}")
if res is not sgd:
    print(f"  polished by L-BFGS on the full data: {int(res.n_iter)} iterations, {t_polish:.1f} s, "
          f"loglik {float(res.loglik):.2f}, status {jm.Status(int(res.status)).name}")
print(f"homoscedastic linear model ({line.k} parameters), Newton: status {jm.Status(int(line.status)).name}")
print()
print(f"{'model':<28}{'k':>6}{'loglik':>12}{'AIC':>12}{'BIC':>12}")
for name, r in [("heteroscedastic MLP", res), ("homoscedastic linear", line)]:
    print(f"{name:<28}{r.k:>6}{float(r.loglik):>12.2f}{float(r.aic):>12.2f}{float(r.bic):>12.2f}")
print(f"AIC prefers the {'MLP' if float(res.aic) < float(line.aic) else 'line'} by "
      f"{abs(float(res.aic) - float(line.aic)):.1f}")

grid = np.array([-2.5, -1.0, 0.0, 1.0, 2.5])
mean, log_var = mlp(res.params["layers"], jnp.asarray(grid))
print(f"\n{'x':>6}{'true mean':>11}{'MLP mean':>10}{'true sd':>9}{'MLP sd':>8}{'line sd':>9}")
for i, g in enumerate(grid):
    print(f"{g:>6.1f}{true_mean(g):>11.3f}{float(mean[i]):>10.3f}{true_sd(g):>9.3f}"
          f"{float(jnp.exp(0.5 * log_var[i])):>8.3f}{float(line.params['sigma']):>9.3f}")

# Standard errors: a network's weights are not identified one by one (hidden units can be
# permuted or be redundant), so its information matrix is often singular and the weights'
# Wald errors NaN; quantities the network predicts, and likelihood comparisons, are what to
# report. Above jaxmle._solve.DENSE_HESSIAN_MAX_PARAMS parameters no Hessian is formed at all.
sd_at = lambda p, v=1.0: jnp.exp(0.5 * mlp(p["layers"], jnp.array([v]))[1][0])  # noqa: E731
if res.hessian_skipped:
    print(f"\nstandard errors: {res.stderr_note}")
elif np.isfinite(float(res.cond)):
    est, se = res.derived(sd_at)
    print(f"\nstandard errors: noise sd at x = 1 is {float(est):.3f} +/- {float(se):.3f} (delta method; "
          f"true {true_sd(1.0):.3f})")
else:
    print("\nstandard errors: NaN for the network: its information matrix is not positive definite "
          "at this estimate (weights not identified one by one); the likelihood comparison above "
          "does not need them")
