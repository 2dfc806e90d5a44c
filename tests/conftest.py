import atexit
import os
import shutil
import tempfile

# The suite compiles as users' programs do: jaxmle's per-program options, and its
# compile tiers (a program's first compile skips LLVM's optimisation; one called often
# enough is compiled again fully optimised: ``jaxmle._compile._Quick``). No test-only
# XLA flags. Set before jax starts a backend.
import jax

# Inference checks need float64; jaxmle itself never flips this flag on import.
jax.config.update("jax_enable_x64", True)

# XLA compilation dominates this suite's time, and many tests build a fresh jm.Model
# for the same log-density and data shapes: each new Model compiles its programs again.
# JAX's persistent compilation cache, in a directory private to this session (nothing
# is reused between runs), turns those repeats into cache hits. Tracing still happens
# for every new model, so tests that count traces or compiled programs see no change.
_XLA_CACHE = tempfile.mkdtemp(prefix="jaxmle-tests-xla-")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
# jaxmle's saved programs (``jaxmle._compile``) go there too, not to the user's cache;
# subprocesses (examples, CLI) inherit it.
os.environ["JAXMLE_CACHE_DIR"] = _XLA_CACHE
jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
