"""Reaction times 240, 255, 261, 248, 271 ms: mu = 255, sigma^2 = 113.2 (the biased MLE)."""

import jax
import jax.numpy as jnp

import jaxmle as jm

jax.config.update("jax_enable_x64", True)

ms = jnp.array([240.0, 255.0, 261.0, 248.0, 271.0])
res = jm.fit_distribution("normal", ms)
print(res.summary())
s2 = float(res.params["sigma"]) ** 2
print(f"\nmu_hat = {float(res.params['mu']):.1f} ms, sigma_hat^2 = {s2:.1f} ms^2 "
      f"(divisor n; the unbiased n-1 version is {s2 * 5 / 4:.1f})")
est, se = res.derived(lambda p: p["sigma"] / p["mu"])
print(f"coefficient of variation: {float(est):.4f} +/- {float(se):.4f} (delta method)")
