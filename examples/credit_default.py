"""Credit default by income: the tutorial's numbers, why three applicants have no MLE,
and a logistic regression on a realistic sample (with MAP as the fix for tiny data)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle as jm

jax.config.update("jax_enable_x64", True)

three = {"X": jnp.array([[1.0, 50.0], [1.0, 80.0], [1.0, 40.0]]), "y": jnp.array([1.0, 0.0, 1.0])}
model = jm.models.logistic(2)
ll = model.loglik_sum({"beta": jnp.array([-4.0, 0.06])}, three)
print(f"log-likelihood at beta = (-4, 0.06): {float(ll):.3f}  (tutorial: -4.266 with rounded probabilities)")

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    res = jm.fit(model, three)
print(f"MLE on the three applicants: status {jm.Status(int(res.status)).name} "
      f"(income separates defaulters perfectly, so the likelihood rises forever)")

rng = np.random.default_rng(7)
income = rng.uniform(20, 120, 500)
p = 1 / (1 + np.exp(-(2.0 - 0.05 * income)))
data = {"X": jnp.asarray(np.column_stack([np.ones(500), income])), "y": jnp.asarray(rng.uniform(size=500) < p, float)}
res = jm.fit(model, data)
print("\n500 simulated applicants (true beta = (2.0, -0.05)):")
print(res.summary())
odds = res.derived(lambda q: jnp.exp(10 * q["beta"][1]))
print(f"odds ratio per +10k income: {float(odds[0]):.3f} +/- {float(odds[1]):.3f}")

ridge = jm.Model(model.loglik, {"beta": jnp.zeros(2)}, log_prior=jm.priors.gaussian(1.0))
res = jm.fit(ridge, three)
print(f"\nMAP with a N(0, 1) prior on the three applicants: beta = {np.round(np.asarray(res.params['beta']), 3)}, "
      f"status {jm.Status(int(res.status)).name}")
