"""Compile once: shape buckets, programs shared between models, the on-disk cache (issue 21).

Trace counts stand for compilations here: a program that is not traced again is
not compiled again (timings are never asserted; benchmarks/latency.py measures them).
"""

import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm
from jaxmle import _compile
from jaxmle._data import bucket_size

X = np.array([240.0, 255.0, 261.0, 248.0, 271.0, 250.0, 262.0, 244.0, 259.0, 266.0])


def _counting_normal():
    calls = []

    def loglik(p, x):
        calls.append(1)
        return jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"])

    return jm.Model(loglik, {"mu": 0.0, "sigma": jm.Positive(1.0)}), calls


def _assert_same(a, b, rtol=1e-12):
    assert int(a.status) == int(b.status)
    assert int(a.n_obs) == int(b.n_obs)
    np.testing.assert_allclose(float(a.loglik), float(b.loglik), rtol=rtol)
    for k in a.params:
        np.testing.assert_allclose(np.asarray(a.params[k]), np.asarray(b.params[k]), rtol=1e-9)
        np.testing.assert_allclose(np.asarray(a.stderr[k]), np.asarray(b.stderr[k]), rtol=1e-6)


def test_bucket_sizes():
    assert [bucket_size(n) for n in (1, 5, 8, 9, 100, 4096)] == [8, 8, 8, 16, 128, 4096]
    # Above 4096: steps of at most 25 %.
    for n in (4097, 5000, 6000, 7000, 8000, 100_000, 1_000_000):
        b = bucket_size(n)
        assert n <= b <= 1.25 * n + 1
    assert bucket_size(3_000_000) == 3_000_000


def test_a_first_newton_fit_traces_the_log_density_eight_times_at_most():
    """Program size: every trace of the log-density is a copy of it (and of its
    derivatives) that XLA compiles. A first padded Newton fit traces it 2 times for the
    shape checks (the data's length and the bucket's) and 6 times in its program: the
    (f, gradient, Hessian) pass of the trial step, which also makes the start (a single
    copy for the start, first trials and retries alike), two values along the fit's path
    (the runaway probe), two row-independence checks of the padding and the gradient at
    a pinned point (profiles). Before the trial loop was merged a fit traced it 11 times,
    before the start moved into the loop 9."""
    calls = []

    def loglik(p, x, tag="program size"):      # its own fingerprint: no saved program
        calls.append(1)
        return jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"])

    model = jm.Model(loglik, {"mu": 0.0, "sigma": jm.Positive(1.0)})
    res = jm.fit(model, X[:5])
    assert res.converged and res.method == "newton"
    assert len(calls) <= 8, f"the log-density was traced {len(calls)} times for one first fit (8 expected)"
    before = len(calls)
    jm.fit(model, X[:6])                       # same bucket: the shape check alone
    assert len(calls) - before == 1


def test_new_length_reuses_the_program_and_equals_the_exact_fit():
    model, calls = _counting_normal()
    first = jm.fit(model, X[:5])
    traced = len(calls)
    for n in (6, 7, 8):
        res = jm.fit(model, X[:n])
        # The closed-form MLE: mean and the divisor-n standard deviation.
        np.testing.assert_allclose(float(res.params["mu"]), X[:n].mean(), rtol=1e-10)
        np.testing.assert_allclose(float(res.params["sigma"]), X[:n].std(), rtol=1e-8)
        assert int(res.n_obs) == n
    # One abstract evaluation per new length checks the log-density's output shape;
    # nothing is traced for a program.
    assert len(calls) == traced + 3, "a new length in the same bucket traced the log-density again"
    assert model.rowwise is True
    exact, _ = _counting_normal()
    _assert_same(first, jm.fit(exact, X[:5], bucket=False))
    # Inference on a padded fit uses the real observations only.
    np.testing.assert_allclose(np.asarray(first.stderr_robust["mu"]),
                               np.asarray(jm.fit(exact, X[:5], bucket=False).stderr_robust["mu"]), rtol=1e-8)


def test_profile_interval_of_a_padded_fit_equals_the_exact_one():
    model, _ = _counting_normal()
    padded = jm.fit(model, X[:5]).conf_int(method="profile")
    exact = jm.fit(_counting_normal()[0], X[:5], bucket=False).conf_int(method="profile")
    for k in padded:
        np.testing.assert_allclose(np.asarray(padded[k]), np.asarray(exact[k]), rtol=1e-8)


def test_terms_that_read_other_rows_are_fitted_at_their_exact_length():
    # Centering by the sample mean makes every term depend on every observation:
    # padding would change the answer, so the first fit finds out and refits exactly.
    def loglik(p, x):
        return jax.scipy.stats.norm.logpdf(x - jnp.mean(x), p["mu"], p["sigma"])

    model = jm.Model(loglik, {"mu": 1.0, "sigma": jm.Positive(1.0)})
    res = jm.fit(model, X[:5])
    assert model.rowwise is False
    c = X[:5] - X[:5].mean()
    np.testing.assert_allclose(float(res.params["sigma"]), c.std(), rtol=1e-8)
    np.testing.assert_allclose(float(res.params["mu"]), 0.0, atol=1e-8)
    _assert_same(res, jm.fit(jm.Model(loglik, {"mu": 1.0, "sigma": jm.Positive(1.0)}), X[:5], bucket=False))


def test_batch_with_mask_reuses_programs_across_max_lengths():
    model, calls = _counting_normal()
    rng = np.random.default_rng(1)
    first = jm.pad([rng.normal(5, 2, n) for n in (5, 9, 12)])
    jm.fit_batch(model, first[0], mask=first[1])
    traced = len(calls)
    padded, mask = jm.pad([rng.normal(5, 2, n) for n in (4, 14, 7)])
    batch = jm.fit_batch(model, padded, mask=mask)
    assert len(calls) == traced + 1     # the output-shape check of the new length
    exact = jm.fit_batch(_counting_normal()[0], padded, mask=mask, bucket=False)
    np.testing.assert_allclose(np.asarray(batch.params["mu"]), np.asarray(exact.params["mu"]), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(batch.stderr["sigma"]), np.asarray(exact.stderr["sigma"]), rtol=1e-8)


def test_a_batch_compiles_its_programs_together_before_running_them(monkeypatch):
    from jaxmle import _batch

    rng = np.random.default_rng(3)
    xs = rng.normal(5.0, 2.0, (40, 12))
    compiled = []

    def spy(job):
        compiled.append(job)
        return job()

    monkeypatch.setattr(_compile, "_quietly", spy)
    model, calls = _counting_normal()
    ahead = jm.fit_batch(model, xs)
    assert len(compiled) >= 3          # start, loop and finish (and the data step)
    fitter = next(fn for fn in model._compiled.values() if isinstance(fn, _batch.BatchFitter))
    assert fitter.compile_s > 0        # the loop's compile, for the straggler rule
    traced = len(calls)
    jm.fit_batch(model, xs + 1.0)      # same shapes: nothing compiled or traced again
    n_ahead = len(compiled)
    assert len(calls) == traced
    # The same numbers as compiling each program at its call (a model of its own: other
    # code, the same computation, so it shares no program with the first).
    monkeypatch.setattr(_batch.BatchFitter, "_compile_ahead", lambda self, *a: None)

    def loglik(p, x):
        return jax.scipy.stats.norm.logpdf(x, loc=p["mu"], scale=p["sigma"])

    other = jm.Model(loglik, {"mu": 0.0, "sigma": jm.Positive(1.0)})
    at_call = jm.fit_batch(other, xs)
    assert len(compiled) == n_ahead
    assert not {id(fn) for fn in other._compiled.values()} & {id(fn) for fn in model._compiled.values()}
    for k in ahead.params:
        np.testing.assert_array_equal(np.asarray(ahead.params[k]), np.asarray(at_call.params[k]))
        np.testing.assert_array_equal(np.asarray(ahead.stderr[k]), np.asarray(at_call.stderr[k]))
    np.testing.assert_array_equal(np.asarray(ahead.status), np.asarray(at_call.status))


@pytest.mark.parametrize("method", ["lbfgs", "gd"])
def test_programs_compiled_ahead_are_the_ones_the_call_runs(method):
    # L-BFGS's and gradient ascent's optax states hold weakly typed scalars: the shapes
    # compiled ahead must carry them, or the loop program compiles twice.
    from jaxmle import _batch

    model, _ = _counting_normal()
    xs = np.random.default_rng(4).normal(5.0, 2.0, (16, 8))
    jm.fit_batch(model, xs, method=method, max_iter=50)
    fitter = next(fn for fn in model._compiled.values() if isinstance(fn, _batch.BatchFitter))
    for name in ("ready", "start", "advance", "finish_host"):
        assert getattr(fitter, name)._cache_size() == 1, name
    # Stragglers stepping on in smaller buckets: one loop program per bucket size (the
    # start's carry is as strongly typed as the loop's own).
    model, _ = _counting_normal()
    xs = np.random.default_rng(1).normal(5.0, 2.0, (1024, 20))
    xs[:40] *= 50.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # gradient ascent leaves some at MAX_ITER
        jm.fit_batch(model, xs, method=method, max_iter=3000, compact=True)
    fitter = next(fn for fn in model._compiled.values() if isinstance(fn, _batch.BatchFitter))
    sizes = [sig[1][0][1][0] for sig in fitter.advance._executables]
    assert len(sizes) >= 2 and len(set(sizes)) == len(sizes)


def _programs_built(fn):
    """(fn(), how many XLA programs JAX lowered meanwhile: op-by-op ones included)."""
    from jax._src import monitoring
    n = []

    def listen(event, duration, **_):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            n.append(1)

    monitoring.register_event_duration_secs_listener(listen)
    try:
        return fn(), len(n)
    finally:
        monitoring.unregister_event_duration_listener(listen)


def test_host_steps_compile_nothing():
    # With jax 0.10, jnp.asarray of a NumPy array and jax.numpy operations outside a
    # program each compile a small program per shape (10-50 ms each): padding, checking a
    # mask, building the ready models' specs and gathering a chunked batch's results
    # are NumPy and device_put.
    rng = np.random.default_rng(5)
    lengths = rng.integers(3, 30, 50)
    (padded, mask), n = _programs_built(lambda: jm.pad([rng.normal(5, 2, int(k)) for k in lengths]))
    assert n == 0
    from jaxmle._data import check_mask
    _, n = _programs_built(lambda: check_mask(np.asarray(mask).astype(int), padded, 50))
    assert n == 0
    _, n = _programs_built(lambda: check_mask(mask, padded, 50))
    assert n == 0
    _, n = _programs_built(lambda: (jm.models.logistic(4), jm.models.linear(3), jm.models.softmax(3, 4),
                                    jm.models.gaussian_mixture(2)))
    assert n == 0
    model, _ = _counting_normal()
    full = jm.fit(model, X)
    restricted = jm.fit(jm.Model(model.loglik, {"mu": jm.Fixed(250.0), "sigma": jm.Positive(1.0)}), X)
    test, n = _programs_built(lambda: jm.lr_test(restricted, full))
    assert n == 0 and 0.0 <= float(test.pvalue) <= 1.0
    jm.fit_batch(model, padded, mask=mask, chunk_size=16)      # compiles its programs
    other = np.asarray(padded) + 1.0
    again, n = _programs_built(lambda: jm.fit_batch(model, other, mask=mask, chunk_size=16))
    assert n == 0 and again.params["mu"].shape == (50,)


def test_a_new_model_of_the_same_function_reuses_the_programs():
    def make(factor):
        # A re-run notebook cell: a new function object with the same code and closure.
        def loglik(p, x):
            return jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"] * factor)

        return jm.Model(loglik, {"mu": 0.0, "sigma": jm.Positive(1.0)})

    def programs(model):
        return {id(fn) for fn in model._compiled.values()}

    m1, m2 = make(1.0), make(1.0)
    a, b = jm.fit(m1, X), jm.fit(m2, X)
    assert programs(m1) == programs(m2)
    _assert_same(a, b)
    # A different closure value is a different model: its own programs, and right.
    m3 = make(2.0)
    c = jm.fit(m3, X)
    assert not programs(m3) & programs(m1)
    np.testing.assert_allclose(float(c.params["sigma"]), X.std() / 2.0, rtol=1e-8)
    # Another start value is not another program; another constraint is.
    m4 = jm.Model(m1.loglik, {"mu": 240.0, "sigma": jm.Positive(5.0)})
    jm.fit(m4, X)
    assert programs(m4) == programs(m1)
    assert jm.Model(m1.loglik, {"mu": 0.0, "sigma": jm.Interval(0.0, 50.0)})._sharing_key() != m1._sharing_key()


def test_fingerprint_follows_globals_and_refuses_unknown_objects():
    class Box:
        value = 1.0

    box = Box()
    assert _compile.fingerprint(lambda x: x * box.value) is None
    assert _compile.fingerprint(lambda x: jnp.exp(x)) == _compile.fingerprint(lambda x: jnp.exp(x))
    assert _compile.fingerprint(lambda x: jnp.exp(x)) != _compile.fingerprint(lambda x: jnp.log(x))
    a = np.arange(3.0)
    f1 = _compile.fingerprint(lambda x: x + a)
    a = np.arange(3.0) + 1
    assert _compile.fingerprint(lambda x: x + a) != f1
    # Ready models share their programs too.
    assert jm.models.logistic(3)._sharing_key() == jm.models.logistic(3)._sharing_key()
    assert jm.models.logistic(3)._sharing_key() != jm.models.poisson(3)._sharing_key()


def test_cache_dir_rules(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXMLE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _compile.cache_dir() == os.path.join(str(tmp_path), "jaxmle", "xla")
    monkeypatch.setenv("JAXMLE_CACHE_DIR", str(tmp_path / "here"))
    assert _compile.cache_dir() == str(tmp_path / "here")
    for off in ("0", "off", "none", ""):
        monkeypatch.setenv("JAXMLE_CACHE_DIR", off)
        assert _compile.cache_dir() is None


_CHILD = """
import jax, jaxmle as jm, numpy as np
jax.config.update("jax_enable_x64", True)
m = jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"]), {"mu": 0.0, "sigma": jm.Positive(1.0)})
print(float(jm.fit(m, np.array([1.0, 2.0, 4.0])).params["mu"]), jax.config.jax_compilation_cache_dir)
"""


def test_persistent_cache_by_default_and_its_off_switch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "JAXMLE_CACHE_DIR")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    where = tmp_path / "xdg" / "jaxmle" / "xla"
    assert out.stdout.split()[1] == str(where)
    assert any(where.iterdir()), "no compiled program was written to the cache"
    env["JAXMLE_CACHE_DIR"] = "off"
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg2")
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == "None"
    assert not (tmp_path / "xdg2").exists()


def test_compiler_options_off_switch(monkeypatch):
    monkeypatch.setitem(_compile._state, "options", None)
    monkeypatch.setenv("JAXMLE_COMPILER_OPTIONS", "0")
    assert _compile.compiler_options() is None
    monkeypatch.setitem(_compile._state, "options", None)
    monkeypatch.delenv("JAXMLE_COMPILER_OPTIONS")
    if jax.default_backend() == "cpu":
        assert _compile.compiler_options() == _compile.CPU_OPTIONS


def _compiles_of(fn):
    """(fn(), the number of programs it compiled or loaded from JAX's cache)."""
    from jax._src import stages
    n = []
    compile = stages.Lowered.compile

    def counted(self, *args, **kwargs):
        n.append(1)
        return compile(self, *args, **kwargs)

    stages.Lowered.compile = counted
    try:
        return fn(), len(n)
    finally:
        stages.Lowered.compile = compile


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="jaxmle's options are XLA:CPU's")
def test_options_are_probed_in_one_compile_and_the_answer_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXMLE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_compile, "_probed", {})
    asked = [(o, b) for o, b in _compile._PROBES]
    answers, n = _compiles_of(lambda: [_compile._accepted(o, b) for o, b in asked])
    assert n == 1
    # The same answers as probing each option on its own (the way a jaxlib that refuses
    # one of them is probed).
    monkeypatch.setattr(_compile, "_probed", {})
    monkeypatch.setattr(_compile, "_PROBES", ())
    monkeypatch.setenv("JAXMLE_CACHE_DIR", str(tmp_path / "other"))
    singly, n_singly = _compiles_of(lambda: [_compile._accepted(o, b) for o, b in asked])
    assert singly == answers and n_singly == sum(len(o) for o, _ in asked)
    # A later session reads the answers from the cache directory: no compile.
    monkeypatch.setattr(_compile, "_probed", {})
    monkeypatch.setenv("JAXMLE_CACHE_DIR", str(tmp_path))
    again, n_again = _compiles_of(lambda: [_compile._accepted(o, b) for o, b in asked])
    assert again == answers and n_again == 0
    # An option this XLA does not know is dropped, the others kept.
    monkeypatch.setattr(_compile, "_probed", {})
    bogus = {"xla_cpu_use_fusion_emitters": False, "xla_no_such_option_in_any_xla": 1}
    assert _compile._accepted(bogus, {}) == {"xla_cpu_use_fusion_emitters": False}


def test_a_log_density_written_for_its_exact_length_is_not_padded():
    # The residuals ignore the data's values and have a fixed length (as the MGH test
    # functions do): padding cannot apply, and the fit runs at the exact shape.
    target = jnp.array([1.0, 2.0, 3.0])

    def loglik(p, d):
        return jax.scipy.stats.norm.logpdf(target, p["mu"] + 0.0 * d["i"][:3], 1.0)

    model = jm.Model(loglik, {"mu": 0.0})
    res = jm.fit(model, {"i": jnp.arange(3.0)})
    assert model.rowwise is False
    np.testing.assert_allclose(float(res.params["mu"]), 2.0, rtol=1e-10)
    assert int(res.n_obs) == 3


# -- saved programs: a second session loads the fit's executable, no trace, no compile --

_SESSION = """
import sys, jax, numpy as np
jax.config.update("jax_enable_x64", True)
from jax._src import monitoring
compiles = []
monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None)
traces = []
monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: traces.append(event) if event == "/jax/core/compile/jaxpr_trace_duration" else None)
sys.path.insert(0, sys.argv[1])
import jaxmle as jm
import usermod
m = jm.Model(usermod.loglik, {"mu": 0.0, "sigma": jm.Positive(1.0)})
x = np.array([1.0, 2.0, 4.0, 3.5, 0.5])
before = len(compiles), len(traces)
res = jm.fit(m, x)
print(repr(float(res.params["mu"])), repr(float(res.params["sigma"])), repr(float(res.stderr["mu"])),
      len(compiles) - before[0], len(traces) - before[1])
"""

# The shift sits in a class: a model's fingerprint names classes of modules but does
# not read them, so only the module's source digest can tell the edit apart.
_USERMOD = """
import jax
class Shift:
    value = {shift}
def loglik(p, x):
    return jax.scipy.stats.norm.logpdf(x - Shift.value, p["mu"], p["sigma"])
"""


def _session(tmp_path, env):
    out = subprocess.run([sys.executable, "-c", _SESSION, str(tmp_path / "mod")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    mu, sigma, se, n_compiles, n_traces = out.stdout.split()[-5:]
    return float(mu), float(sigma), float(se), int(n_compiles), int(n_traces)


def test_a_second_session_loads_the_saved_fit_and_an_edited_module_is_not_stale(tmp_path):
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "usermod.py").write_text(_USERMOD.format(shift=0.0))
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["JAXMLE_CACHE_DIR"] = str(tmp_path / "cache")
    first = _session(tmp_path, env)
    saved = list((tmp_path / "cache" / "programs").glob("*.jaxexe"))
    assert saved, "the fit's program was not saved"
    second = _session(tmp_path, env)
    x = np.array([1.0, 2.0, 4.0, 3.5, 0.5])
    # Closed form: the normal MLE; SE of mu = sigma_hat / sqrt(n).
    for mu, sigma, se, _, _ in (first, second):
        np.testing.assert_allclose([mu, sigma, se], [x.mean(), x.std(), x.std() / np.sqrt(5)], rtol=1e-9)
    assert second[:3] == first[:3]
    assert first[3] >= 1
    # The fit's program is loaded, not compiled: what compiles now is at most a few
    # one-operation programs of the setup, far fewer than the first session.
    assert second[3] < first[3] and second[4] < first[4], (first, second)
    # An edited user module (same names, other code) must not reuse the old program.
    (tmp_path / "mod" / "usermod.py").write_text(_USERMOD.format(shift=1.0))
    third = _session(tmp_path, env)
    np.testing.assert_allclose(third[0], x.mean() - 1.0, rtol=1e-9)
    # A damaged saved program is compiled again, not trusted.
    for f in (tmp_path / "cache" / "programs").glob("*.jaxexe"):
        f.write_bytes(f.read_bytes()[:100])
    again = _session(tmp_path, env)
    assert again[:3] == third[:3] and again[3] >= 1


def test_a_program_with_a_host_callback_is_not_saved(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMLE_CACHE_DIR", str(tmp_path))

    def loglik(p, x):
        jax.debug.callback(lambda v: None, p["mu"])
        return jax.scipy.stats.norm.logpdf(x, p["mu"], 1.0)

    res = jm.fit(jm.Model(loglik, {"mu": 0.0}), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(float(res.params["mu"]), 2.0, rtol=1e-10)
    with_callback = len(list((tmp_path / "programs").glob("*.jaxexe")))
    monkeypatch.setenv("JAXMLE_CACHE_DIR", str(tmp_path / "plain"))
    jm.fit(jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], 1.0), {"mu": 0.0}), np.array([1.0, 2.0, 3.0]))
    plain = len(list((tmp_path / "plain" / "programs").glob("*.jaxexe")))
    # The start-value program is saved either way; the fit's only without the callback.
    assert with_callback == plain - 1, (with_callback, plain)


def test_distribution_models_have_a_fingerprint():
    # Without one their programs were neither shared nor saved (the CLI's fit compiled
    # in every session).
    for name in ("exponential", "gamma", "normal"):
        res = jm.fit_distribution(name, np.array([1.0, 2.0, 3.5]))
        assert res.model._sharing_key() is not None, name


def test_a_program_taking_a_typed_key_runs_unsaved(tmp_path, monkeypatch):
    # Typed PRNG keys have an extended dtype: such a call runs through jit, not the saved path.
    monkeypatch.setenv("JAXMLE_CACHE_DIR", str(tmp_path))
    prog = _compile.jit(lambda k, x: jax.random.normal(k, x.shape) + x).persist_as(("test", "typed key"))
    a = prog(jax.random.key(0), np.zeros(3))
    b = jax.random.normal(jax.random.key(0), (3,))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _tiers_on():
    return _compile.quick_options() is not None


def test_a_program_starts_quick_and_is_optimised_once_its_runs_cost_its_compile(tmp_path, monkeypatch):
    # Tiers: the first compile skips LLVM's optimisation (about half the compile); a
    # program whose calls have taken PROMOTE_AFTER times that compile is compiled again
    # fully optimised, and saved in the quick one's place. Results are the same.
    if not _tiers_on():
        pytest.skip("no compile tiers on this backend")
    monkeypatch.setenv("JAXMLE_CACHE_DIR", str(tmp_path))
    prog = _compile.jit(lambda x: jnp.cumsum(jnp.sin(x) ** 2)).persist_as(("test", "tiers"))
    x = np.linspace(0.0, 3.0, 64)
    want = np.cumsum(np.sin(x) ** 2)
    np.testing.assert_allclose(np.asarray(prog(x)), want, rtol=1e-13)
    (entry,) = prog._executables.values()
    assert isinstance(entry, _compile._Quick)
    saved = sorted(p.name for p in (tmp_path / "programs").glob("*.jaxexe"))
    assert len(saved) == 1
    entry.compile_s = 0.0          # as if its runs had already cost its compile
    np.testing.assert_allclose(np.asarray(prog(x)), want, rtol=1e-13)
    (entry,) = prog._executables.values()
    assert not isinstance(entry, _compile._Quick)
    np.testing.assert_allclose(np.asarray(prog(x)), want, rtol=1e-13)
    now = sorted(p.name for p in (tmp_path / "programs").glob("*.jaxexe"))
    assert len(now) == 1 and now != saved          # the optimised program replaced the quick one


def test_a_quick_batch_loop_runs_in_segments_with_the_steps_of_one_call(monkeypatch):
    # While a batch's loop program is quick code it runs in doubling segments, so a long
    # call can switch to the optimised code part way (see BatchFitter._advance); the
    # segments take exactly the steps one call takes: the same numbers bit for bit.
    if not _tiers_on():
        pytest.skip("no compile tiers on this backend")
    from jaxmle import _batch

    xs = np.random.default_rng(6).normal(3.0, 2.0, (40, 20))
    xs[:3] *= 300.0

    def run(segment, promote_after):
        monkeypatch.setattr(_batch, "QUICK_SEGMENT", segment)
        monkeypatch.setattr(_compile, "PROMOTE_AFTER", promote_after)
        model, _ = _counting_normal()          # a fresh model: its own programs
        calls = []
        prog_call = _compile._Program.__call__

        def spy(self, *a, **k):
            if getattr(self._fn, "__name__", "") == "advance":
                calls.append(int(a[-2]))
            return prog_call(self, *a, **k)

        monkeypatch.setattr(_compile._Program, "__call__", spy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = jm.fit_batch(model, xs, method="gd", max_iter=300)
        monkeypatch.setattr(_compile._Program, "__call__", prog_call)
        return res, calls

    whole, one = run(10 ** 9, 1e9)               # quick code, one call
    parts, many = run(4, 1e9)                    # quick code, segments of 4, 8, 16, ...
    assert len(one) == 1 and len(many) > 3 and many[:3] == [4, 8, 16]
    for k in whole.params:
        np.testing.assert_array_equal(np.asarray(whole.params[k]), np.asarray(parts.params[k]))
    np.testing.assert_array_equal(np.asarray(whole.status), np.asarray(parts.status))
    np.testing.assert_array_equal(np.asarray(whole.n_iter), np.asarray(parts.n_iter))
    # Promoted after the first segment: the rest runs in one call of optimised code.
    promoted, calls = run(4, 0.0)
    assert len(calls) == 2 and calls[0] == 4
    both = np.asarray(promoted.converged) & np.asarray(whole.converged)
    assert both.sum() >= 30
    for k in whole.params:      # the two tiers round differently: converged fits agree
        np.testing.assert_allclose(np.asarray(promoted.params[k])[both], np.asarray(whole.params[k])[both],
                                   rtol=1e-5)


def test_small_programs_compile_lean_and_batch_loops_and_bigger_ones_do_not(monkeypatch):
    # Lean: the quick options plus LEAN_OPTIONS (no loop-invariant code motion) for
    # programs of small arguments; a batch's loop program (one_tier) and arguments over
    # LEAN_MAX_BYTES get the plain quick options. Same results either way.
    if not _tiers_on():
        pytest.skip("no compile tiers on this backend")
    seen = []
    real = _compile._compile_saved

    def spy(lowered, key, sig, quick, timed=False):
        seen.append(quick)
        return real(lowered, key, sig, quick, timed)

    monkeypatch.setattr(_compile, "_compile_saved", spy)
    monkeypatch.setattr(_compile, "LEAN_MAX_BYTES", 100)
    fn = lambda x: jax.lax.fori_loop(0, 3, lambda i, c: c + jnp.sin(x), x)   # noqa: E731
    small, loop = _compile.jit(fn), _compile.jit(fn)
    loop.one_tier = True
    for prog in (small, loop):
        np.testing.assert_allclose(np.asarray(prog(np.ones(10))), 1 + 3 * np.sin(1.0), rtol=1e-14)
    small(np.ones(20))                                  # 160 bytes: over LEAN_MAX_BYTES
    assert seen == ["lean", True, True]
    assert set(_compile.LEAN_OPTIONS) <= set(_compile.lean_options())


def test_big_arguments_and_the_off_switch_compile_fully_at_once(monkeypatch):
    if not _tiers_on():
        pytest.skip("no compile tiers on this backend")
    monkeypatch.setattr(_compile, "QUICK_MAX_BYTES", 100)
    small = _compile.jit(lambda x: x * 2.0)
    small(np.ones(10))                                  # 80 bytes: quick
    small(np.ones(11))                                  # 88 bytes: quick too
    assert [isinstance(e, _compile._Quick) for e in small._executables.values()] == [True, True]
    big = _compile.jit(lambda x: x * 3.0)
    big.one_tier = True                                 # as a batch's loop program
    big(np.ones(20))                                    # 160 bytes: compiled fully at once
    big(np.ones(10))                                    # then one tier for all: fully too
    assert [isinstance(e, _compile._Quick) for e in big._executables.values()] == [False, False]
    # One signature promoted: the program's other quick signatures follow at their next call
    # (a batch's buckets compute bit for bit what the full batch computes).
    small.one_tier = True
    next(iter(small._executables.values())).compile_s = 0.0
    np.testing.assert_array_equal(np.asarray(small(np.ones(10))), 2.0)
    np.testing.assert_array_equal(np.asarray(small(np.ones(11))), 2.0)
    assert not any(isinstance(e, _compile._Quick) for e in small._executables.values())
    monkeypatch.setitem(_compile._state, "quick", None)
    monkeypatch.setenv("JAXMLE_TIERS", "0")
    assert _compile.quick_options() is None
    monkeypatch.setitem(_compile._state, "quick", None)


def test_the_garbage_collector_is_paused_while_a_program_builds_and_restored_after(monkeypatch):
    import gc

    seen = []
    model = jm.Model(lambda p, x: seen.append(gc.isenabled()) or jax.scipy.stats.norm.logpdf(x, p["mu"], 1.0),
                     {"mu": 0.0})
    assert gc.isenabled()
    jm.fit(model, X)
    assert seen and not any(seen)          # traced (every time) with the collector paused
    assert gc.isenabled()
    # A build that fails restores it too; nested pauses restore it once, at the end.
    with pytest.raises(RuntimeError):
        with _compile.gc_paused():
            with _compile.gc_paused():
                pass
            assert not gc.isenabled()
            raise RuntimeError("failed build")
    assert gc.isenabled()
    # A collector the user turned off stays off.
    gc.disable()
    try:
        jm.fit(model, X + 1.0)
        assert not gc.isenabled()
    finally:
        gc.enable()


_LAPACK_CHILD = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import jaxmle as jm
rng = np.random.default_rng(1)
X = np.column_stack([np.ones(40), rng.normal(size=(40, 4))])
y = X @ np.array([1.0, -0.5, 0.3, 0.2, 0.1]) + rng.normal(size=40)
res = jm.fit(jm.models.linear(5), {"X": X, "y": y})
print(int("scipy.linalg" in sys.modules), int("scipy.linalg.cython_lapack" in sys.modules), int(res.status))
print(" ".join(repr(float(v)) for v in np.ravel(res.params["beta"])))
import scipy.linalg.cython_lapack
capi = scipy.linalg.cython_lapack.__pyx_capi__          # bound on the package, as usual
from scipy.linalg import cython_blas, cython_lapack
print(int(cython_lapack is sys.modules["scipy.linalg.cython_lapack"] and len(capi) > 0
          and scipy.linalg.cython_blas is cython_blas), float(scipy.linalg.cholesky([[4.0]])[0, 0]))
"""


def test_lapack_loads_without_scipy_linalg_and_scipy_linalg_still_works():
    # A five-parameter fit's program calls LAPACK (Cholesky, eigh): jaxlib's routines come
    # from scipy.linalg.cython_lapack, loaded alone (jaxmle._linalg.lapack_ready), not with
    # scipy.linalg's whole package. A fresh process, as a user's first fit.
    env = {**os.environ, "JAXMLE_CACHE_DIR": "off"}
    out = subprocess.run([sys.executable, "-c", _LAPACK_CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    first, beta, after = out.stdout.split("\n")[:3]
    assert first == "0 1 0", out.stdout       # scipy.linalg not imported, LAPACK loaded; CONVERGED
    rng = np.random.default_rng(1)
    X = np.column_stack([np.ones(40), rng.normal(size=(40, 4))])
    y = X @ np.array([1.0, -0.5, 0.3, 0.2, 0.1]) + rng.normal(size=40)
    np.testing.assert_allclose([float(b) for b in beta.split()], np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-8)
    assert after == "1 2.0"


def _damped_newton(s):
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Damped(jm.optimizers.Newton):
        def step(self, objective, state, data, active=True):
            new, info = super().step(objective, state, data, active)
            return new._replace(z=state.z + s * (new.z - state.z)), info

    return Damped()


def test_a_saved_program_is_keyed_by_the_code_of_a_user_s_optimizer_class(tmp_path, monkeypatch):
    # Two optimizer subclasses with the same name and fields print the same repr; the
    # saved program's key must tell them apart by their code (found by a new-user trial:
    # the second ran the first one's program), and share it when the code is the same.
    monkeypatch.setenv("JAXMLE_CACHE_DIR", str(tmp_path))
    model = jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"]),
                     {"mu": 0.0, "sigma": jm.Positive(1.0)})
    iters = {s: int(jm.fit(model, X, method=_damped_newton(s), max_iter=200).n_iter) for s in (0.5, 1.0)}
    assert iters[0.5] != iters[1.0], iters
    assert iters[1.0] == int(jm.fit(model, X).n_iter)
    files = set((tmp_path / "programs").glob("*.jaxexe"))
    again = int(jm.fit(model, X, method=_damped_newton(0.5), max_iter=200).n_iter)
    assert again == iters[0.5]
    assert set((tmp_path / "programs").glob("*.jaxexe")) == files      # the same code: the same saved program
