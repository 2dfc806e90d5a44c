"""A two-component Gaussian mixture fitted by EM, Newton and Adam: iterations, time, log-likelihood."""

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle as jm

jax.config.update("jax_enable_x64", True)

rng = np.random.default_rng(0)
x = jnp.asarray(np.concatenate([rng.normal(-2.0, 0.7, 600), rng.normal(3.0, 1.2, 400)]))
model = jm.models.gaussian_mixture(2)
start = {"weights": jnp.array([0.5, 0.5]), "means": jnp.array([-0.5, 0.5]), "scales": jnp.array([2.0, 2.0])}

print(f"{'method':>8}{'iterations':>12}{'seconds':>10}{'loglik':>16}  status")
for method in ["em", "newton", "bfgs", "adam"]:
    jm.fit(model, {"x": x}, method=method, init=start, warn=False)          # compile
    t0 = time.perf_counter()
    res = jm.fit(model, {"x": x}, method=method, init=start, warn=False)
    secs = time.perf_counter() - t0
    print(f"{method:>8}{int(res.n_iter):>12}{secs:>10.3f}{float(res.loglik):>16.6f}  {jm.Status(int(res.status)).name}")

best = jm.fit(model, {"x": x}, method="em", n_starts=10, key=jax.random.key(0))
print(f"\n10 random starts as one batch: {best.starts['converged']} converged, "
      f"{best.starts['at_best']} reached the best log-likelihood {float(best.loglik):.4f}")
print(best.summary())
