"""Priya's call centre: 36 calls in 8 hours. The Poisson MLE is the mean, 4.5 calls/hour."""

import jax
import jax.numpy as jnp

import jaxmle as jm

jax.config.update("jax_enable_x64", True)

calls = jnp.array([3, 5, 2, 8, 4, 6, 3, 5])
res = jm.fit_distribution("poisson", calls)
print(res.summary())
print(f"\nrate = {float(res.params['rate']):.3f} calls/hour; std err sqrt(rate/n) = {float(res.stderr['rate']):.3f}")
print("95% Wald    :", res.conf_int(0.95)["rate"].round(3))
print("95% profile :", res.conf_int(0.95, method="profile")["rate"].round(3))
