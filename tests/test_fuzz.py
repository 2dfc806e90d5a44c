"""Fuzzing: malformed specs, data, inits, masks and command lines.

Every outcome must be a fit with a valid status or one of jaxmle's documented
errors (ValueError/TypeError with a message; exit code 2 on the command line),
never another exception or a crash. Derandomized and bounded (well under a minute).
A tally of inputs and outcomes is printed at the end (pytest -s) and was quoted in
the issue's closing note.
"""

import collections
import contextlib
import io
import math

import jax
import jax.numpy as jnp
import numpy as np
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


def outcome(fn):
    """Run fn; return 'ok' / 'error' for documented outcomes, fail the test otherwise."""
    try:
        res = fn()
    except (ValueError, TypeError) as e:
        assert str(e).strip(), "an error must say what is wrong"
        return "error"
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

    TALLY["spec " + outcome(build)] += 1


@FUZZ
@given(model=st.sampled_from(sorted(MODELS)), data=data_like,
       init=st.one_of(st.none(), st.dictionaries(st.sampled_from(["mu", "sigma", "lam", "nope"]), weird_scalars, max_size=2)),
       method=st.one_of(st.sampled_from(["auto", "newton", "bfgs", "lbfgs", "em", "nelder", ""]), st.integers(-1, 3)),
       mask=st.one_of(st.none(), arrays(max_dims=1)))
def test_fuzz_fit(model, data, init, method, mask):
    TALLY["fit " + outcome(lambda: jm.fit(MODELS[model], data, method=method, init=init, mask=mask, warn=False))] += 1


@FUZZ
@given(model=st.sampled_from(sorted(MODELS)), data=data_like,
       nan_policy=st.sampled_from(["raise", "status", "omit"]),
       mask=st.one_of(st.none(), arrays(max_dims=2)),
       chunk=st.one_of(st.none(), st.integers(-1, 4)))
def test_fuzz_fit_batch(model, data, nan_policy, mask, chunk):
    TALLY["fit_batch " + outcome(lambda: jm.fit_batch(MODELS[model], data, nan_policy=nan_policy, mask=mask,
                                                       chunk_size=chunk, progress=False))] += 1


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


def test_fuzz_tally_printed():
    """Runs last in this module: print what the fuzzers tried (pytest -s shows it)."""
    total = sum(TALLY.values())
    print(f"\nfuzz tally ({total} inputs): " + ", ".join(f"{k}: {v}" for k, v in sorted(TALLY.items())))
    if total:
        assert not any("crash" in k for k in TALLY)
