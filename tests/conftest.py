import jax

# Inference checks need float64; jaxmle itself never flips this flag on import.
jax.config.update("jax_enable_x64", True)
