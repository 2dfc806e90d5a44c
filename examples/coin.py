"""Arjun's coin: 7 heads in 10 flips. The MLE is the observed proportion, 0.7."""

import jax
import jax.numpy as jnp

import jaxmle as jm

jax.config.update("jax_enable_x64", True)

flips = jnp.array([1, 1, 0, 1, 1, 0, 1, 1, 1, 0])   # H,H,T,H,H,T,H,H,H,T
model = jm.Model(lambda p, x: jax.scipy.stats.bernoulli.logpmf(x, p["p"]), {"p": jm.Interval(0.0, 1.0)})
res = jm.fit(model, flips)
print(res.summary())
print(f"\np_hat = {float(res.params['p']):.4f} (closed form k/n = {jm.closed_form('bernoulli', flips)['p']:.4f})")
lo, hi = res.conf_int(0.95, method="profile")["p"]
print(f"95% profile interval: [{lo:.3f}, {hi:.3f}]  (asymmetric, stays inside (0, 1))")
