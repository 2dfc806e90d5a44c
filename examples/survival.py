"""Cox proportional hazards by Newton-Raphson on the partial likelihood (Breslow and Efron ties)."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle as jm

jax.config.update("jax_enable_x64", True)

rng = np.random.default_rng(5)
n = 400
X = np.column_stack([rng.normal(size=n), rng.binomial(1, 0.5, n)])
beta_true = np.array([0.7, -0.5])
t_event = rng.exponential(1 / np.exp(X @ beta_true))
t_cens = rng.exponential(1.5, n)
time = np.ceil(np.minimum(t_event, t_cens) * 10) / 10      # recorded to 0.1: tied times
data = {"X": jnp.asarray(X), "time": jnp.asarray(time), "event": jnp.asarray(t_event <= t_cens, float)}
print(f"{n} subjects, {int(data['event'].sum())} events, true beta = {beta_true}")
for ties in ["breslow", "efron"]:
    res = jm.fit(jm.models.cox(2, ties=ties), data)
    print(f"\nties = {ties}:")
    print(res.summary())
    hr, se = res.derived(lambda p: jnp.exp(p["beta"]))
    print("hazard ratios:", np.round(np.asarray(hr), 3), "+/-", np.round(np.asarray(se), 3))
