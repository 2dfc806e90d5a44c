"""The astronomer's catalogue: one Poisson light curve per star, all stars in one batched fit."""

import time

import jax
import numpy as np

import jaxmle as jm
from jaxmle._demo import star_catalogue, star_model

jax.config.update("jax_enable_x64", True)

data, truth = star_catalogue(seed=1, n_stars=5_000, n_exposures=64)
model = star_model()
t0 = time.perf_counter()
batch = jm.fit_batch(model, data, method="newton")
jax.block_until_ready(batch.params)
print(f"fitted {len(batch):,} stars in {time.perf_counter() - t0:.2f} s (including compilation)")
print(batch.summary())
err = np.asarray(batch.params["a"]) - truth["a"]
print(f"\nlog mean rate a: RMSE vs truth {np.sqrt(np.mean(err**2)):.4f}, mean std err {np.mean(np.asarray(batch.stderr['a'])):.4f}")
print("star 0:")
print(batch[0].summary())
