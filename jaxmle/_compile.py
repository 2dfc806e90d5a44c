"""Compiled programs as a designed layer: compiler options, the on-disk cache, sharing.

Every program jaxmle compiles goes through ``jit`` here, which

* turns on JAX's persistent compilation cache the first time (see ``enable_cache``),
  so a second Python session fitting the same model loads its programs from disk;
* passes per-program XLA options (``compiler_options``) on the CPU: XLA:CPU's older
  loop emitters (``xla_cpu_use_fusion_emitters=False``) compile a fit's program about
  twice as fast at equal run time (``benchmarks/compile_options.py``). The options go
  to each program, never through the global ``XLA_FLAGS``, and are dropped on a
  jaxlib that does not know them (a one-off probe) or on other backends;
* compiles in two tiers on the CPU: a program's first compile skips LLVM's
  optimisation (``QUICK_OPTIONS``: about half the compile, code up to ~3x slower), and
  a program whose calls have taken as long as that compile (``PROMOTE_AFTER``) is compiled
  again fully optimised (``_Quick``; ``benchmarks/tiers.py``). Most programs (a
  single fit, a profile) run for milliseconds and never need more; a fit called in a
  loop, or a big batch, gets the optimised code after a few calls. Arguments over
  ``QUICK_MAX_BYTES`` compile fully optimised at once.

``fingerprint`` gives a key for a Python function by what it computes (its code,
constants, defaults, closure values and the globals it reads), so a new
``jm.Model`` built from the same function (a re-run notebook cell) can reuse the
programs of an old one (``jaxmle._model.Model.compiled``).

Environment:
    JAXMLE_CACHE_DIR: where the persistent cache lives (default
        ``$XDG_CACHE_HOME/jaxmle/xla``, else ``~/.cache/jaxmle/xla``); ``0``, ``off``
        or ``none`` turns it off. A cache directory the user configured in JAX
        (``jax_compilation_cache_dir`` / ``JAX_COMPILATION_CACHE_DIR``) is left as is.
    JAXMLE_COMPILER_OPTIONS: ``0``/``off`` compiles with XLA's defaults (no tiers).
    JAXMLE_TIERS: ``0``/``off`` compiles every program fully optimised at once.

Saved programs. JAX's cache still traces and lowers a program before it can look it
up (0.3-0.7 s for a fit). A program whose model has a fingerprint (``model_key``) is
also saved whole, as the compiled executable, in ``programs/`` under the cache
directory, keyed by that fingerprint, the program's settings and argument shapes,
and the versions of everything that shapes it (Python, jax, jaxlib, numpy, jaxmle's
own source, the source files of user modules the model names, x64): a second
session loads it without tracing (``_Program``). Programs with host callbacks or
custom calls other than LAPACK's are not saved. ``JAXMLE_CACHE_DIR=off`` turns this
off with the rest; deleting the directory clears it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import importlib.util
import json
import os
import pickle
import re
import sys
import tempfile
import threading
import time
import types
from typing import Any, Callable

import jax
import numpy as np

#: Per-program XLA:CPU options (measured in benchmarks/compile_options.py).
CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}

#: Added for a program's first, quick compile on the CPU (no LLVM optimisation: about
#: half the compile, up to ~3x the run time); see ``_Quick`` and benchmarks/tiers.py.
#: Without LLVM's optimisation, splitting the program's LLVM module for parallel
#: code generation (XLA's default: up to 32 parts, each a clone) costs more than it
#: saves: one part compiles the README's normal model 14% faster (22% less CPU time) on
#: 2 cores (benchmarks/compile_options.py: 0.83-1.05x over four cases). Its code may
#: round differently from the split code's in the last bits, as the two tiers do. Only
#: the first entry makes the tier; the others are kept where this jaxlib knows them.
QUICK_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_parallel_codegen_split_count": 1}

#: Added to the quick options for programs whose arguments are at most ``LEAN_MAX_BYTES``
#: (a single fit of small data, a profile, a small batch): XLA's loop-invariant code
#: motion and while-loop simplification, which run inside its fixed-point HLO
#: simplification pipeline, were most of the HLO pass time of a fit program (a while
#: loop with nested per-trial loops): without them the normal model's fit program
#: compiled in 0.54 s instead of 0.70 s (medians of 7 alternating compiles). The code
#: runs ~15% slower, which such programs (milliseconds a call) never notice, but the
#: demo's 10,000-star batch did: its first call got slower, so bigger programs keep
#: the passes. Not for a batch's loop program (``one_tier``), whose straggler buckets
#: must run the full batch's code.
LEAN_OPTIONS = {"xla_disable_hlo_passes": "while-loop-invariant-code-motion,simplify-while-loops"}
LEAN_MAX_BYTES = 2 ** 20

#: A quick program is compiled again with full optimisation once the time spent running
#: it reaches this multiple of its own compile time (a ski-rental rule: pay for the
#: slower compile once the slower runs have cost about as much; measured on the demo, 2
#: left its loop program quick for 6 calls of a 10-chunk batch, 1 promotes it on the 3rd).
PROMOTE_AFTER = 1.0

#: Arguments larger than this (bytes) compile with full optimisation at once: their
#: first run is long enough that the quick program's slower code would cost more than
#: the compile it saves.
QUICK_MAX_BYTES = 32 * 2 ** 20

#: The persistent cache's size limit when jaxmle sets it up (least recently used go first).
CACHE_MAX_BYTES = 512 * 2 ** 20

_OFF = ("0", "off", "false", "no", "none")
_gc_lock = threading.Lock()
_gc_pause = [0, False]    # programs being built now; whether the collector was on before


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector paused while JAX traces, lowers and compiles.

    Tracing allocates hundreds of thousands of short-lived Python objects (reference
    counting frees them), and every 700 allocations the collector runs, now and then a
    full pass over everything JAX and NumPy keep alive (~100,000 objects after their
    import): a fifth of a small first fit's time (benchmarks/latency.py). Paused,
    the passes a program's build would have made are left to the collector's next
    ordinary run. Nested and concurrent builds share one pause; a collector the user
    turned off stays off.
    """
    with _gc_lock:
        if _gc_pause[0] == 0:
            _gc_pause[1] = gc.isenabled()
            gc.disable()
        _gc_pause[0] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pause[0] -= 1
            if _gc_pause[0] == 0 and _gc_pause[1]:
                gc.enable()

_state: dict = {"cache": None, "options": None, "quick": None, "lean": None}
_probed: dict = {}      # the session's answers of ``_accepted``, by probe key


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


#: The (options, base) pairs ``_accepted`` is asked about on the CPU, in order: probed
#: together by one compile when they are not known yet (``_probe_together``).
_PROBES = ((CPU_OPTIONS, {}), (QUICK_OPTIONS, CPU_OPTIONS), (LEAN_OPTIONS, {**CPU_OPTIONS, **QUICK_OPTIONS}))


def _probe_key(options: dict, base: dict) -> str:
    import jaxlib
    return repr((jaxlib.__version__, jax.__version__, jax.default_backend(), sorted(base.items()),
                 list(options.items())))


def _probe_together(known: dict) -> None:
    """Every entry of ``_PROBES`` accepted in one compile, recorded in ``known``, when
    XLA takes them all at once (the common case: one ~15 ms probe a machine instead of
    one per option); nothing recorded otherwise (each is then probed on its own)."""
    everything: dict = {}
    for options, base in _PROBES:
        everything.update(base)
        everything.update(options)
    try:
        jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(everything)
    except Exception:  # noqa: BLE001 - some option unknown: probe one by one
        return
    for options, base in _PROBES:
        known.setdefault(_probe_key(options, base), dict(options))


def _accepted(options: dict, base: dict) -> dict:
    """The entries of ``options`` this jaxlib's XLA accepts, each tried (in order) with
    ``base`` and the entries accepted before it.

    The first question of a machine probes all of jaxmle's options in one compile of a
    one-line program (``_probe_together``); only when XLA refuses that is each entry
    compiled on its own (~15 ms each). The answer depends on jaxlib alone, so it is
    remembered for the session and in the cache directory (``probed-options.json``),
    which a later session reads instead.
    """
    key = _probe_key(options, base)
    if key in _probed:
        return dict(_probed[key])
    path = None if cache_dir() is None else os.path.join(cache_dir(), "probed-options.json")
    known = {}
    if path is not None:
        try:
            with open(path) as f:
                known = json.load(f)
            if not isinstance(known, dict):
                known = {}
        except (OSError, ValueError, TypeError):
            known = {}
    known = {k: v for k, v in known.items() if isinstance(v, dict)}      # a damaged file: probe again
    if key not in known and not _state.get("apart") and any(_probe_key(o, b) == key for o, b in _PROBES):
        _probe_together(known)
        if key in known:
            _write_probed(path, known)
        else:
            _state["apart"] = True      # some option refused: the others are probed one by one
    if key in known:
        _probed.update(known)
        return dict(known[key])
    lowered = jax.jit(lambda x: x + 1).lower(np.float32(0))
    accepted: dict = {}
    for name, value in options.items():
        try:
            lowered.compile({**base, **accepted, name: value})
            accepted[name] = value
        except Exception:  # noqa: BLE001 - an XLA without the option
            pass
    known[key] = accepted
    _probed.update(known)
    _write_probed(path, known)
    return accepted


def _write_probed(path: str | None, known: dict) -> None:
    """Keep the probes' answers in ``path`` (none when the cache is off)."""
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(known, f)
        os.replace(tmp, path)
    except OSError:
        pass


def compiler_options() -> dict | None:
    """The per-program options for the default backend, or None (probed once)."""
    if _state["options"] is None:
        opts = {}
        if os.environ.get("JAXMLE_COMPILER_OPTIONS", "").strip().lower() not in _OFF and \
                jax.default_backend() == "cpu":
            # All or nothing: an XLA that lacks one compiles with its defaults.
            opts = _accepted(CPU_OPTIONS, {})
            opts = opts if opts == CPU_OPTIONS else {}
        _state["options"] = opts
    return _state["options"] or None


def quick_options() -> dict | None:
    """The options added for a program's quick first compile, or None (no tiers).

    Only on the CPU with jaxmle's options on, and where this jaxlib knows them (probed
    once); ``JAXMLE_TIERS=0`` compiles every program fully optimised at once.
    """
    if _state["quick"] is None:
        opts = {}
        if compiler_options() is not None and os.environ.get("JAXMLE_TIERS", "").strip().lower() not in _OFF:
            opts = _accepted(QUICK_OPTIONS, CPU_OPTIONS)
            first = next(iter(QUICK_OPTIONS))
            opts = opts if first in opts else {}     # no quick optimisation level: no tiers
        _state["quick"] = opts
    return _state["quick"] or None


def lean_options() -> dict | None:
    """The quick options plus ``LEAN_OPTIONS`` (those this jaxlib knows), or None (no tiers)."""
    if _state["lean"] is None:
        quick = quick_options()
        _state["lean"] = {} if quick is None else {**quick, **_accepted(LEAN_OPTIONS, {**CPU_OPTIONS, **quick})}
    return _state["lean"] or None


def jit(fn: Callable | None = None, **kwargs) -> Callable:
    """``jax.jit`` with jaxmle's compiler options and the persistent cache turned on.

    Usable as ``jit(fn)``, ``jit(fn, static_argnums=...)`` or as a decorator. Called
    inside another traced function (a user's ``jax.jit`` or ``vmap``), the function is
    inlined there: compiler options belong to top-level programs only. The returned
    ``_Program`` is saved to disk once ``persist_as`` gives it a key.
    """
    if fn is None:
        return functools.partial(jit, **kwargs)
    enable_cache()
    return _Program(fn, jax.jit(fn, compiler_options=compiler_options(), **kwargs))


class _Program:
    """A jitted function that runs inline when called on tracers (see ``jit``).

    With a key (``persist_as``) and concrete arguments, each argument signature's
    executable is loaded from ``programs_dir()`` when saved there (no trace, no
    lowering, no compile), else compiled and saved.
    """

    def __init__(self, fn, jitted):
        self._fn, self._jitted = fn, jitted
        self._persist: str | None = None
        self._executables: dict = {}
        self._jit_known: set = set()      # signatures jax.jit has compiled (``_jit_call``)
        # With ``one_tier`` (a batch's loop program, ``jaxmle._batch``), all argument
        # signatures share one code tier, so the buckets of stragglers compute bit for bit
        # what the full batch computes: once one signature is fully optimised (promoted,
        # big, or loaded so), the others are too, at their next call. Other programs tier
        # each signature on its own (a helper promoted after many calls leaves new shapes
        # their quick first compile).
        self.one_tier = False
        self._tier: str | None = None
        functools.update_wrapper(self, fn)

    def persist_as(self, material) -> "_Program":
        """Save this program's executables under a key made from ``material`` (its repr)."""
        if programs_dir() is not None and self._persist is None:
            try:
                text = repr(material)
            except Exception:       # noqa: BLE001 - an unprintable key: do not save
                return self
            if " at 0x" not in text:     # a repr with an address differs per session
                self._persist = hashlib.sha256(text.encode()).hexdigest()
        return self

    def __call__(self, *args, **kwargs):
        leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return self._fn(*args, **kwargs)
        if self._persist is None and quick_options() is None:
            return self._jit_call(args, kwargs, leaves, tree)
        try:
            sig = _signature(leaves, tree)
        except _NotSaved:
            return self._jit_call(args, kwargs)
        exe = self._executables.get(sig)
        if exe is None:
            with gc_paused():
                exe, loaded_from = _load_or_compile(self._jitted, args, kwargs, self._persist, sig,
                                                    self._quick_for(leaves))
            self._note_tier(exe)
            if loaded_from is not None:
                # The first call of a loaded executable is checked: one that cannot run
                # (a jaxlib that lost its functions) is deleted and compiled again.
                try:
                    out = exe.run(args, kwargs)[0] if isinstance(exe, _Quick) else exe(*args, **kwargs)
                    jax.block_until_ready(out)
                except Exception:       # noqa: BLE001
                    _remove(loaded_from)
                    self._executables[sig] = _NOT_SAVED
                    return self._jit_call(args, kwargs, sig=sig)
                self._executables[sig] = exe
                return out
            self._executables[sig] = exe
        if exe is _NOT_SAVED:
            return self._jit_call(args, kwargs, sig=sig)
        if isinstance(exe, _Quick):
            if self._tier == "full":        # another signature is fully optimised
                full = exe.promote(args, kwargs)
                if full is not None:
                    self._executables[sig] = full
                    return full(*args, **kwargs)
            out, full = exe.run(args, kwargs)
            if full is not None:
                self._executables[sig] = full
                if self.one_tier:
                    self._tier = "full"
            return out
        return exe(*args, **kwargs)

    def _jit_call(self, args, kwargs, leaves=None, tree=None, sig=None):
        """The plain ``jax.jit`` call, which traces and compiles a new signature itself: the
        collector is paused for a signature this program has not run before (and for
        arguments without one), not while a compiled program runs."""
        if sig is None:
            if leaves is None:
                leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
            try:
                sig = _signature(leaves, tree)
            except _NotSaved:
                sig = None
        if sig is not None and sig in self._jit_known:
            return self._jitted(*args, **kwargs)
        with gc_paused():
            out = self._jitted(*args, **kwargs)
        if sig is not None:
            self._jit_known.add(sig)
        return out

    def _quick_for(self, leaves) -> bool | str:
        """How a new signature compiles: quick, ``"lean"`` or (False) fully optimised."""
        nbytes = _nbytes(leaves)
        quick = self._tier != "full" and quick_options() is not None and nbytes <= QUICK_MAX_BYTES
        if quick and not self.one_tier and nbytes <= LEAN_MAX_BYTES:
            quick = "lean"
        return quick

    def _note_tier(self, exe) -> None:
        if exe is not _NOT_SAVED and self.one_tier and self._tier != "full":
            self._tier = "quick" if isinstance(exe, _Quick) else "full"

    def runs_quick(self, *args, **kwargs) -> bool:
        """Whether a call with such arguments runs a quickly compiled executable that is
        not promoted yet (False when none is compiled for them)."""
        try:
            sig = _signature(*jax.tree_util.tree_flatten((args, kwargs)))
        except _NotSaved:
            return False
        return isinstance(self._executables.get(sig), _Quick) and self._tier != "full"

    def known(self, *args, **kwargs) -> bool:
        """Whether a call with such arguments finds its executable compiled in this process
        or saved on disk (or goes through ``jax.jit`` itself, which caches it there)."""
        try:
            sig = _signature(*jax.tree_util.tree_flatten((args, kwargs)))
        except _NotSaved:
            return True
        if sig in self._executables or (self._persist is None and quick_options() is None):
            return True
        key = self._persist
        try:
            return key is not None and any(os.path.exists(_file_for(k, sig)) for k in (key, key + ":quick"))
        except Exception:       # noqa: BLE001 - unsaved: the call's own path decides
            return True

    def ahead(self, *args, **kwargs):
        """Trace this program for ``args`` (arrays or ``jax.ShapeDtypeStruct``s) now and
        return ``(job, out)``: ``job`` (an ``_Ahead``) lowers it and compiles the executable
        its first call with such arguments will run (``compile_together`` runs several
        at once); ``out`` is the outputs' shapes (weak types included, so they make the
        signatures the outputs themselves will). Only for a call that is not ``known``."""
        leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
        sig = _signature(leaves, tree)
        t = time.perf_counter()
        with gc_paused():
            traced = self._jitted.trace(*args, **kwargs)
        return _Ahead(self, traced, sig, self._quick_for(leaves), time.perf_counter() - t), traced.out_info

    def _cache_size(self) -> int:
        """Executables held for this program: jit's own and those saved or loaded here."""
        return self._jitted._cache_size() + sum(e is not _NOT_SAVED for e in self._executables.values())

    def __getattr__(self, name):      # lower, trace, ...
        return getattr(self._jitted, name)


class _Ahead:
    """A traced program on its way to an executable (``_Program.ahead``): ``lower()``
    (Python, holds the interpreter lock), then ``compile()`` (XLA, without it), which
    leaves the executable where the program's call finds it. Once ``compiled``,
    ``seconds`` is the time tracing, lowering and compiling took."""

    def __init__(self, program: _Program, traced, sig, quick, trace_s: float):
        self.program, self.traced, self.sig, self.quick = program, traced, sig, quick
        self.lowered, self.seconds, self.compiled = None, trace_s, False

    def lower(self) -> None:
        if self.lowered is None:
            t = time.perf_counter()
            with gc_paused():
                self.lowered = self.traced.lower()
            self.seconds += time.perf_counter() - t

    def compile(self) -> None:
        self.lower()
        prog = self.program
        exe, seconds = _compile_lowered(prog._jitted, self.lowered, prog._persist, self.sig, self.quick)
        prog._executables.setdefault(self.sig, exe)
        prog._note_tier(exe)
        self.seconds += seconds
        self.compiled = True


def lazy_jit(fn: Callable) -> Callable:
    """A module-level ``jit`` that builds its program at the first call, not at import.

    Its executables are saved across sessions (keyed by jaxmle's source, which is
    all such a function reads).
    """
    holder = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not holder:
            holder.append(jit(fn).persist_as(("jaxmle function", fn.__module__, fn.__qualname__)))
        return holder[0](*args, **kwargs)

    return call


# -- saved executables ----------------------------------------------------------------

#: Size limit of the saved executables (oldest first out).
PROGRAMS_MAX_BYTES = 256 * 2 ** 20
_FORMAT = 2
_NOT_SAVED = object()
_lock = threading.Lock()


class _NotSaved(Exception):
    """An argument or program that is not saved to disk."""


def programs_dir() -> str | None:
    """Where executables are saved (``programs`` in ``cache_dir()``), or None when off."""
    base = cache_dir()
    return None if base is None else os.path.join(base, "programs")


def _signature(leaves, tree):
    """A call's argument signature (see ``_aval``); raises ``_NotSaved`` for an argument
    that has none."""
    return tree, tuple(_aval(x) for x in leaves)


def _aval(x):
    """A leaf's part of an argument signature: dtype, shape, weak type (committed
    arrays on one device only: a sharded argument is not saved)."""
    if isinstance(x, jax.Array):
        # Typed PRNG keys (extended dtypes) and sharded arrays: not saved.
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended) or len(x.sharding.device_set) != 1:
            raise _NotSaved(x)
        return (x.dtype.str, x.shape, bool(getattr(x, "weak_type", False)))
    if isinstance(x, (np.ndarray, np.generic)):
        return (x.dtype.str, x.shape, False)
    if isinstance(x, jax.ShapeDtypeStruct):
        # An argument known by its shape alone (``compile_together``): the signature a
        # committed single-device array of that shape will have.
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended) or x.sharding is not None:
            raise _NotSaved(x)
        return (np.dtype(x.dtype).str, tuple(x.shape), bool(x.weak_type))
    if isinstance(x, (bool, int, float, complex)):
        return (type(x).__name__, (), True)
    raise _NotSaved(x)


@functools.lru_cache(maxsize=None)
def _environment() -> str:
    """Everything outside a program's key that shapes its executable, as one string."""
    import jaxlib
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for root, dirs, files in os.walk(here):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(root, name), "rb") as f:
                    h.update(name.encode() + f.read())
    device = jax.devices()[0]
    return repr((_FORMAT, sys.version, jax.__version__, jaxlib.__version__, np.__version__, h.hexdigest(),
                 device.platform, getattr(device, "device_kind", ""), len(jax.devices()),
                 compiler_options(), bool(jax.config.jax_enable_x64),
                 str(jax.config.jax_default_matmul_precision), str(jax.config.jax_numpy_dtype_promotion),
                 os.environ.get("XLA_FLAGS", "")))


def _file_for(key: str, sig) -> str:
    material = repr((key, _environment(), _user_sources(), repr(sig)))
    return os.path.join(programs_dir(), hashlib.sha256(material.encode()).hexdigest() + ".jaxexe")


_SITE = tuple(os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})


def _user_sources() -> str:
    """A digest of the source files of the user's own modules loaded now.

    A model's fingerprint names the modules and classes it uses but does not read
    their code; a saved executable must not outlive an edit to such a file. Modules
    of the Python installation (the standard library, installed packages) are
    covered by the versions in ``_environment``; jaxmle's by its source digest.
    """
    h = hashlib.sha256()
    for name, mod in sorted(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        # __main__ (a script): its functions are keyed by their code, and its classes
        # are never shared (``_fp``).
        if not path or name == "__main__" or name.split(".")[0] == "jaxmle" or not path.endswith(".py"):
            continue
        if path.startswith(_SITE):
            continue
        real = os.path.realpath(path)
        if real.startswith(_SITE):
            continue
        try:
            st = os.stat(real)
        except OSError:
            continue
        h.update(f"{name}:{real}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


_CUSTOM_CALL = re.compile(r"custom_call\s*@([\w.$-]+)")


def _nbytes(leaves) -> int:
    return sum(int(np.prod(getattr(x, "shape", None) if isinstance(x, jax.ShapeDtypeStruct) else np.shape(x)))
               * np.dtype(getattr(x, "dtype", np.float64)).itemsize for x in leaves)


class _Quick:
    """A program compiled quickly (``QUICK_OPTIONS``): its calls are timed, and once they
    have taken ``PROMOTE_AFTER`` times its compile time it is compiled again with full
    optimisation (saved in its place when the program is saved). Most programs run
    briefly (a single fit, a profile, a summary's helpers) and never get there; a
    program called again and again, or on data big enough for its speed to matter,
    does. On a ``jaxlib`` whose XLA knows no such option there are no tiers."""

    def __init__(self, exe, compile_s, jitted, lowered, key, sig, quick_path):
        self.exe, self.compile_s = exe, compile_s
        self.jitted, self.lowered, self.key, self.sig, self.quick_path = jitted, lowered, key, sig, quick_path
        self.spent = 0.0

    def run(self, args, kwargs):
        """(outputs, the fully optimised executable or None while not promoted)."""
        t = time.perf_counter()
        out = self.exe(*args, **kwargs)
        jax.block_until_ready(out)
        self.spent += time.perf_counter() - t
        if self.spent < PROMOTE_AFTER * self.compile_s:
            return out, None
        return out, self.promote(args, kwargs)

    def promote(self, args, kwargs):
        """The fully optimised executable (saved in the quick one's place), or None when
        it cannot be compiled (the quick one keeps running)."""
        try:
            with gc_paused():
                lowered = self.lowered if self.lowered is not None else self.jitted.lower(*args, **kwargs)
                self.lowered = None
                full = _compile_saved(lowered, self.key, self.sig, quick=False)
        except Exception:       # noqa: BLE001 - keep running the quick program
            self.compile_s = float("inf")
            return None
        if self.quick_path is not None:
            _remove(self.quick_path)
        return full


def _load_or_compile(jitted, args, kwargs, key: str | None, sig, quick: bool | str = False):
    """(executable, the file it was loaded from or None): loaded from disk, else compiled
    (and saved when ``key`` is given), or ``_NOT_SAVED`` for the plain jitted call. With
    ``quick`` a program not found fully optimised on disk is a ``_Quick`` (compiled with
    ``lean_options`` when ``quick == "lean"``)."""
    full_path = quick_path = None
    if key is not None:
        try:
            full_path, quick_path = _file_for(key, sig), _file_for(key + ":quick", sig)
        except Exception:       # noqa: BLE001
            return _NOT_SAVED, None
        entry = _load(full_path, sig)
        if entry is not None:
            return entry[0], full_path
        if quick:
            entry = _load(quick_path, sig)
            if entry is not None:
                return _Quick(entry[0], entry[1], jitted, None, key, sig, quick_path), quick_path
    return _compile_lowered(jitted, jitted.lower(*args, **kwargs), key, sig, quick)[0], None


def _compile_lowered(jitted, lowered, key: str | None, sig, quick: bool | str = False):
    """(the executable of ``lowered``, the seconds its compile took): a ``_Quick`` with
    ``quick``, else fully optimised (saved under ``key`` when that is given)."""
    exe, seconds = _compile_saved(lowered, key, sig, quick=quick, timed=True)
    if quick:
        quick_path = None if key is None else _file_for(key + ":quick", sig)
        exe = _Quick(exe, seconds, jitted, lowered, key, sig, quick_path)
    return exe, seconds


def compile_together(jobs) -> None:
    """Lower the ``_Ahead`` jobs one after the other, in order, and compile each as soon as
    it is lowered, one thread each (one after the other on a single core). XLA compiles
    without Python's lock, so the first job's compile (put the longest first: a batch's
    loop program) runs while the others lower and compile beside it. A job that fails
    here is left to the program's own call, which compiles again and raises there. The
    garbage collector stays paused until all are compiled (``gc_paused``).
    """
    jobs = [j for j in jobs if j is not None]
    with gc_paused():
        if len(jobs) < 2 or (os.cpu_count() or 1) < 2:
            for job in jobs:
                _quietly(job.compile)
            return
        threads = []
        for job in jobs:
            _quietly(job.lower)
            threads.append(threading.Thread(target=_quietly, args=(job.compile,), daemon=True))
            threads[-1].start()
        for t in threads:
            t.join()


def _quietly(job) -> None:
    try:
        job()
    except Exception:       # noqa: BLE001 - the program's own call compiles and reports it
        pass


def _compile_saved(lowered, key: str | None, sig, quick: bool | str, timed: bool = False):
    """Compile ``lowered`` (quickly, ``"lean"``ly or fully optimised); save it under ``key``
    when that is given and the program can be saved. With ``timed``: (executable, seconds
    the compile took, or the original compile's when JAX's cache supplied it)."""
    options = (lean_options() if quick == "lean" else quick_options()) if quick else None
    targets = set(_CUSTOM_CALL.findall(lowered.as_text())) if key is not None else set()
    savable = key is not None and all(t.startswith("lapack_") for t in targets)
    from jax._src import config as jax_config
    events = _collect_events()
    t = time.perf_counter()
    try:
        if savable:
            # Not into JAX's cache as well: the saved file holds it. (An executable that
            # JAX's cache loaded cannot be serialised again: jaxlib 0.10 loses its functions.)
            with jax_config.persistent_cache_min_compile_time_secs(float("inf")):
                compiled = lowered.compile(options)
        else:
            compiled = lowered.compile(options)
    finally:
        _thread_events.current = None
    seconds = time.perf_counter() - t
    if "/jax/compilation_cache/cache_hits" in events:
        # Loaded from JAX's cache: what the compile had cost is what counts for promotion.
        seconds = (events.get("/jax/compilation_cache/compile_time_saved_sec", 0.0)
                   + events.get("/jax/compilation_cache/cache_retrieval_time_sec", 0.0)) or seconds
    elif savable:
        path = _file_for(key + (":quick" if quick else ""), sig)
        _save(path, compiled, bool(targets), seconds)
    return (compiled, seconds) if timed else compiled


_thread_events = threading.local()
_listening: list = []


def _collect_events() -> dict:
    """A fresh dict that collects the JAX monitoring events of this thread (durations
    summed, plain events counted as 0 s) until ``_thread_events.current`` is reset.

    One listener stays registered for the process: JAX calls its listeners from a
    plain list, which registering and removing listeners from several compiling
    threads (``compile_together``) would change under another thread's loop.
    """
    with _lock:
        if not _listening:
            from jax._src import monitoring

            def listen(event, duration=None, **_):
                events = getattr(_thread_events, "current", None)
                if events is not None:
                    events[event] = events.get(event, 0.0) + (duration or 0.0)

            monitoring.register_event_listener(lambda event, **kw: listen(event))
            monitoring.register_event_duration_secs_listener(listen)
            _listening.append(listen)
    _thread_events.current = {}
    return _thread_events.current


def _load(path: str, sig):
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:       # noqa: BLE001 - a truncated or foreign file: compile again
        _remove(path)
        return None
    try:
        from jax.experimental import serialize_executable
        if entry["format"] != _FORMAT:
            return None
        if entry["lapack"]:
            # A LAPACK call needs jaxlib's LAPACK set up (lowering does it; loading does not).
            from jax._src.lax import linalg
            linalg.initialize_lapack()
        exe = serialize_executable.deserialize_and_load(entry["blob"], entry["in_tree"], entry["out_tree"])
    except Exception:       # noqa: BLE001
        _remove(path)
        return None
    try:
        os.utime(path)      # recently used: evicted last
    except OSError:
        pass
    return exe, float(entry.get("compile_s", 1.0))


def _save(path: str, compiled, lapack: bool, compile_s: float = 1.0) -> None:
    try:
        from jax.experimental import serialize_executable
        blob, in_tree, out_tree = serialize_executable.serialize(compiled)
        data = pickle.dumps({"format": _FORMAT, "blob": blob, "in_tree": in_tree, "out_tree": out_tree,
                             "lapack": lapack, "compile_s": compile_s})
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        _evict(folder)
    except Exception:       # noqa: BLE001 - a read-only or full disk: run without saving
        return


def _evict(folder: str) -> None:
    with _lock:
        try:
            entries = [(e.stat().st_mtime, e.stat().st_size, e.path) for e in os.scandir(folder)
                       if e.name.endswith(".jaxexe")]
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        for _, size, p in sorted(entries):
            if total <= PROGRAMS_MAX_BYTES:
                break
            _remove(p)
            total -= size


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


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
    if isinstance(obj, type) and id(obj) in seen:
        return ("own class", obj.__qualname__)
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


def code_of_classes(items) -> tuple | None:
    """The code of the user-defined classes of ``items`` (a program's settings, such as a
    subclass of a jaxmle optimizer): every function defined in such a class or a base
    outside jaxmle, by ``fingerprint`` (code, constants, closure values, globals read).
    A saved program's key needs it: two classes with the same name and fields print the
    same ``repr`` but may step differently. None when some code cannot be read."""
    out = []
    for item in items:
        cls = type(item)
        if isinstance(item, _SIMPLE) or cls.__module__.split(".")[0] in ("jaxmle", "builtins"):
            continue
        # The class itself may appear in its methods (``super()``'s cell).
        seen = {id(c): c for c in cls.__mro__}
        try:
            for base in cls.__mro__:
                if base.__module__.split(".")[0] in ("jaxmle", "builtins", "abc", "typing"):
                    continue
                generated = _DATACLASS_METHODS if hasattr(base, "__dataclass_fields__") else ()
                for name, value in sorted(vars(base).items()):
                    value = getattr(value, "__func__", value)        # static and class methods
                    if not isinstance(value, types.FunctionType):
                        continue
                    if name in generated and value.__code__.co_filename.startswith("<"):
                        continue        # made by dataclasses from the fields (in the repr)
                    out.append((base.__module__, base.__qualname__, name, _fp_function(value, seen)))
        except (Unknown, RecursionError, TypeError, ValueError):
            return None
    return tuple(out)


_DATACLASS_METHODS = frozenset({"__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__",
                                "__lt__", "__le__", "__gt__", "__ge__", "__getstate__", "__setstate__",
                                "__match_args__", "__replace__"})


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
