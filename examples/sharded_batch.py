"""One fit_batch call over every device, on one machine or on a cluster.

On one host, fit_batch shards the batch axis over all local devices by itself
(padding the batch to a multiple of the device count). On a cluster, start this
same script once per host with JAX's coordinator settings in the environment, e.g.

    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 python examples/sharded_batch.py
    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 python examples/sharded_batch.py

jax.distributed.initialize() then joins the processes, jax.devices() lists every
host's devices, and the mesh below spans them all. Without those variables this
runs on the local devices (on this CPU: one).
"""

import os

import jax
import numpy as np

import jaxmle as jm
from jaxmle._demo import star_catalogue, star_model

if "JAX_COORDINATOR_ADDRESS" in os.environ:
    jax.distributed.initialize()      # reads the coordinator address, process count and id
jax.config.update("jax_enable_x64", True)

devices = jax.devices()               # every device of every process
mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
data, truth = star_catalogue(seed=2, n_stars=3_000, n_exposures=64)
batch = jm.fit_batch(star_model(), data, mesh=mesh)
print(f"process {jax.process_index()} of {jax.process_count()}: {len(devices)} device(s) "
      f"({devices[0].platform}), {len(batch):,} stars fitted")
print("status:", batch.status_counts())
err = np.asarray(batch.params["a"]) - truth["a"]
print(f"RMSE of a vs truth: {np.sqrt(np.mean(err ** 2)):.4f}")
