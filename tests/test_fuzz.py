"""Fuzzing: malformed specs, data, inits, masks and command lines.

Every outcome must be a fit with a valid status or one of jaxmle's documented
errors (exit code 2 on the command line), never another exception or a crash. A
documented error is a ValueError/TypeError raised by jaxmle's own code (not from
inside JAX, NumPy or Python) whose message carries the fixed words of a message in
docs/errors.md's error table (``classify_error``); an exception raised by the model's
own log-density propagates unchanged and is tallied as such. Anything else is tallied
as a crash and fails its test, and the final tally check. Derandomized and bounded
(about a minute). A tally of inputs and outcomes is printed at the end (pytest -s).
"""

import collections
import contextlib
import io
import math
import pathlib
import re
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.scipy import stats

import jaxmle as jm
from jaxmle import cli

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TALLY = collections.Counter()

# A few fixed models, so valid inputs reuse compiled fitters.
NORMAL = jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]), {"mu": 0.0, "sigma": jm.Positive(1.0)})
POISSON = jm.Model(lambda p, x: stats.poisson.logpmf(x, p["lam"]), {"lam": jm.Positive(1.0)})
MODELS = {"normal": NORMAL, "poisson": POISSON}

weird_scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-10**12, 10**12),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
dtypes = st.sampled_from(["float64", "float32", "int64", "int32", "int8", "uint8", "bool", "complex64", "object", "str"])


@st.composite
def arrays(draw, max_dims=2):
    shape = tuple(draw(st.lists(st.integers(0, 6), max_size=max_dims)))
    dtype = draw(dtypes)
    size = int(np.prod(shape)) if shape else 1
    values = draw(st.lists(st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf])),
                           min_size=size, max_size=size))
    arr = np.array(values, dtype=float).reshape(shape)
    if dtype == "object":
        return arr.astype(object)
    if dtype == "str":
        return arr.astype(str)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.nan_to_num(arr, nan=0, posinf=1, neginf=-1).astype(dtype) if dtype not in ("float64", "float32", "complex64") else arr.astype(dtype)


data_like = st.one_of(
    arrays(),
    st.lists(weird_scalars, max_size=6),
    weird_scalars,
    st.dictionaries(st.sampled_from(["x", "y", "X"]), arrays(), max_size=3),
)

# Constraint wrappers are built inside the test (their constructors validate too).
spec_values = st.one_of(
    st.tuples(st.just("plain"), st.one_of(weird_scalars, arrays(max_dims=1))),
    st.tuples(st.just("positive"), weird_scalars),
    st.tuples(st.just("interval"), st.tuples(weird_scalars, weird_scalars, weird_scalars)),
    st.tuples(st.just("simplex"), arrays(max_dims=1)),
    st.tuples(st.just("fixed"), weird_scalars),
)


def build_spec(raw):
    if not isinstance(raw, dict):
        return raw
    out = {}
    for name, (kind, v) in raw.items():
        out[name] = {"plain": lambda: v, "positive": lambda: jm.Positive(v), "simplex": lambda: jm.Simplex(v),
                     "interval": lambda: jm.Interval(v[0], v[1], init=v[2]), "fixed": lambda: jm.Fixed(v)}[kind]()
    return out


JAXMLE_DIR = pathlib.Path(jm.__file__).resolve().parent
THIS_FILE = pathlib.Path(__file__).resolve()
ERRORS_MD = pathlib.Path(__file__).resolve().parent.parent / "docs" / "errors.md"
# Parts of a documented message that vary with the input: quoted names, numbers, shapes, lists.
_VARIABLE = re.compile(r"\.\.\.|'[^']*'|\[[^\]]*\]|\{[^}]*\}|\([^)]*\)|-?\d+(?:\.\d+)?(?:e-?\d+)?")


def documented_fragments(text=None):
    """The fixed words of every message in docs/errors.md's "Errors" table: for each
    excerpt (`...` spans in the last column), its longest run of text that does not
    depend on the input. A raised message must contain one of them."""
    text = ERRORS_MD.read_text() if text is None else text
    table = text.split("## Errors", 1)[1].split("\n## ", 1)[0]
    frags = set()
    for row in table.splitlines():
        cells = row.split("|")
        if len(cells) < 4 or not re.fullmatch(r"`(Value|Type)Error`( / `(Value|Type)Error`)?", cells[2].strip()):
            continue
        for excerpt in re.findall(r"`([^`]+)`", cells[3]):
            parts = [p.strip(" :;,.") for p in _VARIABLE.split(excerpt)]
            best = max(parts, key=len)
            if len(best) >= 8:
                frags.add(best)
    return frags


DOCUMENTED = documented_fragments()


def classify_error(e):
    """'error' for one of jaxmle's documented input errors, else why it is not one.

    Documented means: a ValueError/TypeError raised by jaxmle's own code (the innermost
    frame of the traceback is in the jaxmle package, not in jax, numpy or Python), whose
    message contains the fixed words of a message in docs/errors.md's error table. JAX's
    "Error interpreting argument to stage ..." is a TypeError with a message too, and
    must not pass.
    """
    if not isinstance(e, (ValueError, TypeError)):
        return f"crash: {type(e).__name__}"
    frames = traceback.extract_tb(e.__traceback__)
    files = [pathlib.Path(f.filename).resolve() for f in frames]
    in_jaxmle = [i for i, f in enumerate(files) if JAXMLE_DIR in f.parents]
    if in_jaxmle and any(f == THIS_FILE for f in files[in_jaxmle[-1]:]):
        # jaxmle called the model's log-density (defined in this file), which raised:
        # the user's own exception propagates unchanged (docs/errors.md says so).
        return "error in the log-density"
    where = files[-1] if files else None
    if where is None or JAXMLE_DIR not in where.parents:
        return f"crash: {type(e).__name__} raised outside jaxmle ({where})"
    message = str(e)
    if not any(f in message for f in DOCUMENTED):
        return f"crash: undocumented {type(e).__name__} at {where.name}:{frames[-1].lineno}"
    return "error"


def outcome(fn, kind, tally=TALLY):
    """Run fn; tally and return 'ok' / 'error...' for documented outcomes, fail the test otherwise
    (after tallying it as a crash, so the tally's final check fails too)."""
    try:
        res = fn()
    except Exception as e:  # noqa: BLE001 - classified below
        verdict = classify_error(e)
        tally[f"{kind} {verdict}"] += 1
        if not verdict.startswith("error"):
            raise AssertionError(f"{kind}: {verdict}: {type(e).__name__}: {e}") from e
        return verdict
    status = np.atleast_1d(np.asarray(res.status))
    assert set(status.tolist()) <= {int(s) for s in jm.Status}
    converged = status == jm.Status.CONVERGED
    for leaf in jax.tree_util.tree_leaves(res.params):
        leaf = np.asarray(leaf)
        if leaf.ndim and leaf.shape[0] == status.shape[0] and status.shape[0] > 1:
            ok = np.isfinite(leaf.reshape(status.shape[0], -1)).all(axis=1)
        else:
            ok = np.full(status.shape, np.isfinite(leaf).all())
        assert ok[converged].all(), "a CONVERGED fit has finite estimates"
    tally[f"{kind} ok"] += 1
    return "ok"


SPEC_MODELS = {}


@FUZZ
@given(spec=st.one_of(st.dictionaries(st.sampled_from(["mu", "sigma", "w"]), spec_values, max_size=3),
                      weird_scalars, st.lists(weird_scalars, max_size=2)))
def test_fuzz_model_specs(spec):
    def build():
        model = jm.Model(lambda p, x: stats.norm.logpdf(x, 0.0, 1.0), build_spec(spec))
        # Valid specs are fitted too; one compiled model per spec layout keeps this fast.
        layout = tuple((n, type(c).__name__, s) for n, c, s in
                       zip(model.spec.leaf_names, model.spec.constraints, model.spec.shapes))
        model = SPEC_MODELS.setdefault(layout, model)
        return jm.fit(model, jnp.array([0.1, -0.3, 0.7]), warn=False)

    outcome(build, "spec")


@FUZZ
@given(model=st.sampled_from(sorted(MODELS)), data=data_like,
       init=st.one_of(st.none(), st.dictionaries(st.sampled_from(["mu", "sigma", "lam", "nope"]), weird_scalars, max_size=2)),
       method=st.one_of(st.sampled_from(["auto", "newton", "bfgs", "lbfgs", "em", "nelder", ""]), st.integers(-1, 3)),
       mask=st.one_of(st.none(), arrays(max_dims=1)))
def test_fuzz_fit(model, data, init, method, mask):
    outcome(lambda: jm.fit(MODELS[model], data, method=method, init=init, mask=mask, warn=False), "fit")


@st.composite
def masks_for(draw, shape):
    """A mask of the right shape (so it gets past the shape check) in any dtype, with
    0/1 values, or other values, or None among them."""
    size = int(np.prod(shape))
    values = draw(st.lists(st.sampled_from([0, 1, 1, 1, 0.5, 2, -1, math.nan, None, True, "1", 1j]),
                           min_size=size, max_size=size))
    kind = draw(st.sampled_from(["list", "object", "as drawn", "bool", "int8", "float32"]))
    if kind == "list":
        return np.array(values, dtype=object).reshape(shape).tolist()
    if kind in ("object", "as drawn"):
        try:
            arr = np.array(values, dtype=None if kind == "as drawn" else object)
        except (TypeError, ValueError):
            arr = np.array(values, dtype=object)
        return arr.reshape(shape)
    plain = [v if isinstance(v, (int, float)) and not isinstance(v, complex) else 1 for v in values]
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(np.array(plain, float)).astype(kind).reshape(shape)


X_VALID = np.array([0.1, -0.3, 0.7, 1.2])


@FUZZ
@given(batched=st.booleans(), data=st.data(),
       init=st.one_of(st.none(), st.dictionaries(st.sampled_from(["mu", "sigma", "nope"]), weird_scalars, max_size=2)))
def test_fuzz_masks_and_inits_on_valid_data(batched, data, init):
    """Valid data, so the mask and the start values are what gets checked (with random
    data almost every call stops at the data check first)."""
    shape = (2, 4) if batched else (4,)
    mask = data.draw(st.one_of(masks_for(shape), arrays(max_dims=2), st.lists(weird_scalars, max_size=4)))
    if batched:
        fit = lambda: jm.fit_batch(NORMAL, np.stack([X_VALID, 2 * X_VALID]), mask=mask, init=init,  # noqa: E731
                                   progress=False)
    else:
        fit = lambda: jm.fit(NORMAL, X_VALID, mask=mask, init=init, warn=False)  # noqa: E731
    outcome(fit, "fit_batch" if batched else "fit")


@FUZZ
@given(model=st.sampled_from(sorted(MODELS)), data=data_like,
       nan_policy=st.sampled_from(["raise", "status", "omit"]),
       mask=st.one_of(st.none(), arrays(max_dims=2)),
       chunk=st.one_of(st.none(), st.integers(-1, 4)))
def test_fuzz_fit_batch(model, data, nan_policy, mask, chunk):
    outcome(lambda: jm.fit_batch(MODELS[model], data, nan_policy=nan_policy, mask=mask, chunk_size=chunk,
                                 progress=False), "fit_batch")


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n_bad=st.integers(0, 3), masked=st.booleans())
def test_fuzz_poisoned_batches_leave_other_datasets_unharmed(seed, n_bad, masked):
    """Random NaN/inf sprinkled into some datasets (fixed shape, so one compilation):
    with nan_policy="status" those end NONFINITE unless their bad values are masked,
    and every other dataset's fit equals its fit in a clean batch."""
    rng = np.random.default_rng(seed)
    x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 2), (8, 12))
    clean = jm.fit_batch(NORMAL, x)
    bad_rows = rng.choice(8, n_bad, replace=False)
    poisoned = x.copy()
    mask = np.ones_like(x, bool)
    for r in bad_rows:
        cols = rng.choice(12, rng.integers(1, 4), replace=False)
        poisoned[r, cols] = rng.choice([np.nan, np.inf, -np.inf], cols.size)
        if masked:
            mask[r, cols] = False
    if masked:
        res = jm.fit_batch(NORMAL, poisoned, mask=mask, nan_policy="status")
        ref = jm.fit_batch(NORMAL, x, mask=mask)
    else:
        res = jm.fit_batch(NORMAL, poisoned, nan_policy="status")
        ref = clean
    good = np.setdiff1d(np.arange(8), bad_rows) if not masked else np.arange(8)
    np.testing.assert_array_equal(np.asarray(res.status)[good], np.asarray(ref.status)[good])
    for k in ("mu", "sigma"):
        np.testing.assert_array_equal(np.asarray(res.params[k])[good], np.asarray(ref.params[k])[good])
    if not masked and n_bad:
        assert (np.asarray(res.status)[bad_rows] == jm.Status.NONFINITE).all()
    TALLY[f"poisoned batch ({'masked' if masked else 'status'})"] += 1


@FUZZ
@given(lines=st.lists(st.one_of(st.text(alphabet="0123456789.,-e naNinf", max_size=12), st.just("")), max_size=8),
       dist=st.sampled_from(["normal", "poisson", "exponential", "uniform", "nope"]),
       column=st.sampled_from(["x", "y", "0"]),
       extra=st.lists(st.sampled_from(["--json", "--method", "newton", "--float64", "-q"]), max_size=2))
def test_fuzz_cli_fit(tmp_path_factory, lines, dist, column, extra):
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    path.write_text("\n".join(["x,y"] + lines) + "\n")
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["fit", dist, str(path), "--column", column, *extra])
    except SystemExit as e:       # argparse usage errors
        code = e.code
    finally:
        jax.config.update("jax_enable_x64", True)   # the CLI picks precision for its own run
    assert code in (0, 2)
    if code == 2:
        assert err.getvalue().strip(), "a CLI error prints one line saying why"
        assert err.getvalue().strip().count("\n") == 0 or "usage:" in err.getvalue()
    TALLY[f"cli exit {code}"] += 1


def test_the_harness_tells_a_documented_error_from_an_internal_one(monkeypatch):
    """The check above must be able to fail: JAX's own TypeError (what an object-dtype mask
    used to reach) and a jaxmle message missing from docs/errors.md are crashes, and a
    crash is tallied under a key the final check looks for."""
    obj = np.array([1.0, None], dtype=object)
    with pytest.raises(TypeError, match="Error interpreting argument|not a valid JAX") as internal:
        jnp.asarray(obj)
    assert str(internal.value).strip()                      # it does have a message
    assert classify_error(internal.value).startswith("crash: TypeError raised outside jaxmle")
    tally = collections.Counter()
    with pytest.raises(AssertionError, match="raised outside jaxmle"):
        outcome(lambda: jnp.asarray(obj), "probe", tally)
    assert any("crash" in k for k in tally)

    x = np.array([0.1, -0.3, 0.7])
    def bad_mask():
        return jm.fit(NORMAL, x, mask=np.array([1, 0, 1], dtype=object), warn=False)
    assert outcome(bad_mask, "probe", tally) == "error"      # documented now
    monkeypatch.setattr(sys.modules[__name__], "DOCUMENTED", {f for f in DOCUMENTED if "mask must" not in f})
    with pytest.raises(AssertionError, match="undocumented ValueError at _data.py"):
        outcome(bad_mask, "probe", tally)
    # An error the model's own log-density raises is the user's, propagated unchanged.
    def raises_inside_loglik():
        return jm.fit(NORMAL, {"x": x}, warn=False)
    assert outcome(raises_inside_loglik, "probe", tally) == "error in the log-density"
    # The documented table parses: every row of docs/errors.md's error table gives words.
    assert {"mask must be boolean", "data is empty", "nan_policy must be one of"} <= documented_fragments()


def test_fuzz_tally_printed():
    """Runs last in this module: print what the fuzzers tried (pytest -s shows it).

    A crash (an outcome that is neither a valid fit nor a documented error) is tallied
    under a key holding "crash" before its test fails, so this check fails with it."""
    total = sum(TALLY.values())
    print(f"\nfuzz tally ({total} inputs): " + ", ".join(f"{k}: {v}" for k, v in sorted(TALLY.items())))
    crashes = {k: v for k, v in TALLY.items() if "crash" in k}
    assert not crashes, crashes
    for kind in ("spec", "fit", "fit_batch"):
        if any(k.startswith(kind + " ") for k in TALLY):
            # Both outcomes were reached: valid inputs were fitted, invalid ones refused.
            assert TALLY[f"{kind} ok"] > 0 and TALLY[f"{kind} error"] > 0, dict(TALLY)
