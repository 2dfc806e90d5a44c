import atexit
import os
import shutil
import tempfile

# XLA compilation is about 80% of this suite's time (measured: 1,140 of 1,420 s on 2
# cores), and the programs it compiles are small and run briefly. Two XLA:CPU options
# cut compile time about 3x (a fit's program: 2.1 -> 0.6 s) and slow the compiled code
# (1.4-1.7x on the 10,000-fit benchmarks): the older fusion emitters, and no LLVM
# optimisation. Neither changes floating-point semantics (no fast math either way), and
# both are on for subprocesses (examples, CLI) too. JAXMLE_TEST_XLA_DEFAULTS=1 runs the
# suite with XLA's defaults, as users' programs compile. Set before jax starts a backend.
_FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
if os.environ.get("JAXMLE_TEST_XLA_DEFAULTS") != "1":
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

import jax  # noqa: E402

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
