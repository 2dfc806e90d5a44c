"""Compiled programs as a designed layer: compiler options, the on-disk cache, sharing.

Every program jaxmle compiles goes through ``jit`` here, which

* turns on JAX's persistent compilation cache the first time (see ``enable_cache``),
  so a second Python session fitting the same model loads its programs from disk;
* passes per-program XLA options (``compiler_options``) on the CPU: XLA:CPU's older
  loop emitters (``xla_cpu_use_fusion_emitters=False``) compile a fit's program about
  twice as fast at equal run time (``benchmarks/compile_options.py``). The options go
  to each program, never through the global ``XLA_FLAGS``, and are dropped on a
  jaxlib that does not know them (a one-off probe) or on other backends.

``fingerprint`` gives a key for a Python function by what it computes (its code,
constants, defaults, closure values and the globals it reads), so a new
``jm.Model`` built from the same function (a re-run notebook cell) can reuse the
programs of an old one (``jaxmle._model.Model.compiled``).

Environment:
    JAXMLE_CACHE_DIR: where the persistent cache lives (default
        ``$XDG_CACHE_HOME/jaxmle/xla``, else ``~/.cache/jaxmle/xla``); ``0``, ``off``
        or ``none`` turns it off. A cache directory the user configured in JAX
        (``jax_compilation_cache_dir`` / ``JAX_COMPILATION_CACHE_DIR``) is left as is.
    JAXMLE_COMPILER_OPTIONS: ``0``/``off`` compiles with XLA's defaults.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import types
from typing import Any, Callable

import jax
import numpy as np

#: Per-program XLA:CPU options (measured in benchmarks/compile_options.py).
CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}

#: The persistent cache's size limit when jaxmle sets it up (least recently used go first).
CACHE_MAX_BYTES = 512 * 2 ** 20

_OFF = ("0", "off", "false", "no", "none")
_state: dict = {"cache": None, "options": None}


def cache_dir() -> str | None:
    """The directory jaxmle's persistent compilation cache uses, or None when it is off."""
    env = os.environ.get("JAXMLE_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in _OFF or not env.strip() else os.path.expanduser(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxmle", "xla")


def enable_cache() -> str | None:
    """Turn on JAX's persistent compilation cache in ``cache_dir()`` (once per process).

    Left alone when the user configured a JAX cache directory themselves or turned
    jaxmle's off. Programs of any compile time are stored (jaxmle's take 0.1-2 s each;
    JAX's default threshold, 1 s, would skip most), up to ``CACHE_MAX_BYTES`` (least
    recently used entries are evicted). Returns the directory in use.
    """
    if _state["cache"] is not None:
        return _state["cache"] or None
    current = jax.config.jax_compilation_cache_dir
    path = cache_dir()
    if current:
        _state["cache"] = current
    elif path is None:
        _state["cache"] = ""
    else:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            _state["cache"] = ""
            return None
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        # Least recently used entries go past this size; JAX needs the filelock package
        # for it (without it the cache would fail to write), so only then.
        if importlib.util.find_spec("filelock") is not None:
            try:
                jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
            except (AttributeError, KeyError, ValueError):
                pass
        _state["cache"] = path
    return _state["cache"] or None


def compiler_options() -> dict | None:
    """The per-program options for the default backend, or None (probed once)."""
    if _state["options"] is None:
        opts = {}
        if os.environ.get("JAXMLE_COMPILER_OPTIONS", "").strip().lower() not in _OFF and \
                jax.default_backend() == "cpu":
            try:
                jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(np.float32(0)).compile()
                opts = dict(CPU_OPTIONS)
            except Exception:  # an XLA that lacks the option: compile with its defaults
                opts = {}
        _state["options"] = opts
    return _state["options"] or None


def jit(fn: Callable | None = None, **kwargs) -> Callable:
    """``jax.jit`` with jaxmle's compiler options and the persistent cache turned on.

    Usable as ``jit(fn)``, ``jit(fn, static_argnums=...)`` or as a decorator. Called
    inside another traced function (a user's ``jax.jit`` or ``vmap``), the function is
    inlined there: compiler options belong to top-level programs only.
    """
    if fn is None:
        return functools.partial(jit, **kwargs)
    enable_cache()
    return _Program(fn, jax.jit(fn, compiler_options=compiler_options(), **kwargs))


class _Program:
    """A jitted function that runs inline when called on tracers (see ``jit``)."""

    def __init__(self, fn, jitted):
        self._fn, self._jitted = fn, jitted
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((args, kwargs))):
            return self._fn(*args, **kwargs)
        return self._jitted(*args, **kwargs)

    def __getattr__(self, name):      # lower, trace, _cache_size, ...
        return getattr(self._jitted, name)


def lazy_jit(fn: Callable) -> Callable:
    """A module-level ``jit`` that builds its program at the first call, not at import."""
    holder = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not holder:
            holder.append(jit(fn))
        return holder[0](*args, **kwargs)

    return call


# -- fingerprints: what a function computes, as a hashable key ------------------------

class Unknown(Exception):
    """A value whose meaning cannot be read from outside (no sharing for its model)."""


_SIMPLE = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))


def fingerprint(obj: Any) -> Any:
    """A hashable key equal for two objects that compute the same thing, or None.

    Functions are keyed by their code (recursively: nested functions, constants),
    defaults, closure values and the module globals their code names; arrays by
    dtype, shape and a hash of their bytes; numbers, strings, tuples, lists and dicts
    by value; modules by name; classes and callables of installed libraries by
    their qualified name. Anything else (an instance of a user class that could be
    mutated between calls) gives None: the caller then shares nothing.
    """
    try:
        return _fp(obj, {})
    except (Unknown, RecursionError, TypeError, ValueError):
        return None


def _fp(obj, seen: dict):
    if isinstance(obj, _SIMPLE):
        return (type(obj).__name__, obj)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        if isinstance(obj, jax.core.Tracer):
            raise Unknown(obj)
        a = np.asarray(obj)
        return ("array", a.dtype.str, a.shape, hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest())
    if isinstance(obj, (tuple, list, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return (type(obj).__qualname__, tuple(_fp(x, seen) for x in items))
    if isinstance(obj, dict):
        return ("dict", tuple((_fp(k, seen), _fp(v, seen)) for k, v in obj.items()))
    if isinstance(obj, types.ModuleType):
        return ("module", obj.__name__)
    if isinstance(obj, functools.partial):
        return ("partial", _fp(obj.func, seen), _fp(obj.args, seen), _fp(obj.keywords, seen))
    if isinstance(obj, types.MethodType):
        if id(obj.__self__) in seen:
            return ("own method", _fp(obj.__func__, seen))
        return ("method", _fp(obj.__func__, seen), _fp(obj.__self__, seen))
    if isinstance(obj, types.FunctionType):
        return _fp_function(obj, seen)
    if isinstance(obj, types.CodeType):
        return _fp_code(obj, seen)
    if isinstance(obj, type) or callable(obj):
        # Classes and callables of installed libraries (jnp.exp, a jitted function of a
        # package, numpy ufuncs) by name; a jitted user function by what it wraps.
        wrapped = getattr(obj, "__wrapped__", None)
        if isinstance(wrapped, types.FunctionType):
            return ("wrapped", type(obj).__qualname__, _fp_function(wrapped, seen))
        module = getattr(obj, "__module__", None) or type(obj).__module__
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if module and name and module != "__main__" and "<locals>" not in name:
            return ("named", module, name)
    if hasattr(obj, "_jaxmle_fingerprint"):
        return ("jaxmle", type(obj).__qualname__, _fp(obj._jaxmle_fingerprint(), seen))
    raise Unknown(obj)


def _fp_function(fn: types.FunctionType, seen: dict):
    if id(fn) in seen:          # recursion: name the function, its body is being keyed
        return ("recursive", fn.__qualname__)
    seen[id(fn)] = fn
    module = fn.__module__ or ""
    if module.split(".")[0] in ("jax", "jaxlib", "numpy", "optax", "chex", "scipy"):
        return ("named", module, fn.__qualname__)
    glob = fn.__globals__
    names = sorted(n for n in _global_names(fn.__code__) if n in glob)
    cells = tuple(_fp(c.cell_contents, seen) if _cell_full(c) else ("empty",) for c in fn.__closure__ or ())
    return ("function", _fp_code(fn.__code__, seen), _fp(fn.__defaults__, seen),
            _fp(fn.__kwdefaults__, seen), cells, tuple((n, _fp(glob[n], seen)) for n in names))


def _cell_full(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _fp_code(code: types.CodeType, seen: dict):
    consts = tuple(_fp_code(c, seen) if isinstance(c, types.CodeType) else _fp(c, seen) for c in code.co_consts)
    return ("code", code.co_code, consts, code.co_names, code.co_varnames, code.co_freevars,
            code.co_argcount, code.co_kwonlyargcount, code.co_flags)


def _global_names(code: types.CodeType) -> set:
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _global_names(c)
    return names


#: Model attributes that do not enter any program (or are keyed separately).
_MODEL_SKIP = {"_compiled", "_checked", "_share_key", "name", "spec", "scale_like_leaves", "rowwise"}


def model_key(model, spec_key) -> Any | None:
    """A key for everything a model's programs are built from, or None (share nothing).

    The model's class, its spec (``ParamSpec.sharing_key``) and every other
    attribute (the log-density, prior, prepare, start, EM and validation functions,
    a ready model's settings), each by ``fingerprint``. Two models with equal keys
    trace to the same programs for the same data signature.
    """
    if spec_key is None:
        return None
    seen = {id(model): model}   # a bound method of the model refers back to it
    try:
        attrs = tuple((k, _fp(v, seen)) for k, v in sorted(vars(model).items()) if k not in _MODEL_SKIP)
    except (Unknown, RecursionError, TypeError, ValueError):
        return None
    return (type(model).__module__, type(model).__qualname__, spec_key, attrs)
