"""Issue 13: silent traps (forgotten mask, missing batch axis, float32, negative scales),
data in (pandas, lists, ragged pytrees), results out (pickle, dict/JSON, frames, .npz),
and parameters in the spec's order."""

import functools
import json
import pickle
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.scipy import stats

import jaxmle as jm
from jaxmle import _result
from jaxmle._model import scale_like

X = jnp.array([240.0, 255.0, 261.0, 248.0, 271.0])   # reaction times, ms

# One model per data layout, reused by every test (one compilation each).
NORMAL = jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]), {"mu": 0.0, "sigma": jm.Positive(1.0)})
COLUMNS = jm.Model(lambda p, d: stats.norm.logpdf(d["x"], p["mu"] + p["b"] * d["u"], p["sigma"]),
                   {"mu": 0.0, "b": 0.0, "sigma": jm.Positive(1.0)}, name="columns")


def _long_frame():
    rng = np.random.default_rng(0)
    sizes = {"s3": 7, "s1": 12, "s2": 4}
    parts = [pd.DataFrame({"star": k, "u": rng.normal(size=n), "x": rng.normal(2.0, 1.5, n)})
             for k, n in sizes.items()]
    return pd.concat(parts, ignore_index=True), sizes


# Compilations dominate these tests' time: each fit below compiles once and is shared.
@functools.lru_cache(maxsize=None)
def _single():
    return jm.fit(NORMAL, X)


@functools.lru_cache(maxsize=None)
def _by_star():
    return jm.fit_batch(COLUMNS, _long_frame()[0], by="star")


def _ols(rows):
    """The closed-form MLE of COLUMNS (linear regression): mu, b, sigma (divisor n)."""
    A = np.column_stack([np.ones(len(rows)), rows["u"]])
    coef, ssr, *_ = np.linalg.lstsq(A, rows["x"].to_numpy(), rcond=None)
    return np.array([coef[0], coef[1], np.sqrt(ssr[0] / len(rows))])


# -- 1. forgotten mask ----------------------------------------------------------------

def test_forgotten_mask_is_an_error_not_a_silent_fit():
    padded, mask = jm.pad([X, X[:2]])
    assert np.isnan(np.asarray(padded)[1, 2:]).all()
    with pytest.raises(ValueError, match="pass its mask"):
        jm.fit_batch(NORMAL, padded)
    assert np.asarray(mask).sum(axis=1).tolist() == [5, 2]   # with mask=: tests/test_batch.py


def test_pad_dtypes_and_edge_fill():
    counts, mask = jm.pad([np.array([1, 2, 3]), np.array([4])])         # no float leaf: floats + NaN
    assert jnp.issubdtype(counts.dtype, jnp.floating) and np.isnan(counts[1, 1])
    edge, _ = jm.pad([np.array([1, 2, 3]), np.array([4])], fill="edge")  # the old behaviour
    assert np.asarray(edge).tolist() == [[1, 2, 3], [4, 4, 4]]
    tree, tmask = jm.pad([{"t": np.ones(3), "event": np.array([True, False, True])},
                          {"t": np.ones(1), "event": np.array([False])}])
    assert tree["event"].dtype == bool and np.isnan(tree["t"][1, 2])
    assert np.asarray(tmask).tolist() == np.asarray(mask).tolist()


# -- 2. missing batch axis ------------------------------------------------------------

def test_fit_batch_without_batch_axis_says_so():
    with pytest.raises(ValueError, match="leading batch axis.*jm.fit"):
        jm.fit_batch(NORMAL, X)


# -- 4. float32 ------------------------------------------------------------------------

def test_dtype_shown_and_float32_standard_errors_warn_once(monkeypatch):
    monkeypatch.setitem(_result._FLOAT32_WARNED, "done", False)
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731  (a float32 result without compiling a fit)
    res = jm.FitResult.closed_form(NORMAL, "newton", params={"mu": f32(255.0), "sigma": f32(10.6)},
                                   z=f32([255.0, 2.36]), loglik=f32(-18.9), status=jnp.int32(0), n_obs=f32(5),
                                   cov=f32([[22.6, 0.0], [0.0, 11.3]]))
    assert res.dtype == np.float32
    with pytest.warns(UserWarning, match="float32.*jax_enable_x64"):
        text = res.summary()
    assert "dtype: float32" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res.stderr                              # once per process, not on every access
    assert "dtype: float64" in _single().summary()


# -- 5. negative scales ---------------------------------------------------------------

def test_scale_like_names():
    assert [scale_like(n) for n in ("sigma", "noise_sd", "scale[0]", "sigma2", "log_sigma", "Km", "ds")] == \
        [True, True, True, True, False, False, False]


def test_ready_distributions_refuse_negative_scales():
    assert np.isnan(jm.distributions.logpdf("normal", {"mu": 0.0, "sigma": -1.0}, X)).all()
    assert np.isnan(jm.distributions.logpdf("weibull", {"shape": 2.0, "scale": -1.0}, X)).all()
    assert np.isfinite(jm.distributions.logpdf("normal", {"mu": 250.0, "sigma": 10.0}, X)).all()
    with pytest.raises(ValueError, match="sigma.*> 0"):
        jm.fit_distribution("normal", X, fixed={"sigma": -1.0})


# -- 6. pandas -------------------------------------------------------------------------

def test_dataframe_and_dict_of_series_as_data():
    df, _ = _long_frame()
    res = jm.fit(COLUMNS, df[["x", "u"]])
    np.testing.assert_allclose(res.estimate_flat, _ols(df), rtol=1e-8)
    same = jm.fit(COLUMNS, {"x": df["x"], "u": df["u"]})
    np.testing.assert_allclose(same.estimate_flat, res.estimate_flat, rtol=1e-12)
    with pytest.raises(TypeError, match="column 'star'.*non-numeric"):
        jm.fit(COLUMNS, df)


def test_fit_batch_by_group_column():
    df, sizes = _long_frame()
    batch = _by_star()
    assert batch.groups == ["s1", "s2", "s3"] and batch.group_key == "star"
    assert np.asarray(batch.n_obs).tolist() == [sizes[g] for g in batch.groups]
    for g in batch.groups:
        np.testing.assert_allclose(batch.group(g).estimate_flat, _ols(df[df.star == g]), rtol=1e-7)
    frame = batch.to_frame()
    assert list(frame.index) == ["s1", "s2", "s3"] and frame.index.name == "star"
    np.testing.assert_allclose(frame.loc["s2", "b"], _ols(df[df.star == "s2"])[1], rtol=1e-7)
    with pytest.raises(ValueError, match="not both"):
        jm.fit_batch(COLUMNS, df, by="star", mask=np.ones((3, 12), bool))


# -- 7. ragged pytrees -----------------------------------------------------------------

def test_pad_list_of_dicts_shares_one_mask():
    df, _ = _long_frame()
    items = [{"x": g["x"].to_numpy(), "u": g["u"].to_numpy()} for _, g in df.groupby("star")]
    data, mask = jm.pad(items)
    assert data["x"].shape == data["u"].shape == mask.shape == (3, 12)
    batch = jm.fit_batch(COLUMNS, data, mask=mask)
    np.testing.assert_array_equal(batch.estimate_flat, _by_star().estimate_flat)
    with pytest.raises(ValueError, match="different lengths"):
        jm.pad([{"x": np.ones(3), "u": np.ones(2)}])


# -- 8. lists and Python numbers ---------------------------------------------------------

def test_lists_as_data_and_start_values():
    df, _ = _long_frame()
    res = jm.fit(COLUMNS, {"x": df["x"].tolist(), "u": df["u"].tolist()}, init={"mu": 1, "b": 0, "sigma": 2})
    np.testing.assert_allclose(res.estimate_flat, _ols(df), rtol=1e-8)

    def lin(p, d):
        return stats.norm.logpdf(d["y"], d["X"] @ p["beta"], 1.0)

    model = jm.Model(lin, {"beta": [0.0, 0.0]})
    assert model.param_names == ["beta[0]", "beta[1]"]
    start = model.spec.natural_leaves({"beta": [1, 2]})
    assert model.spec.to_params(model.spec.to_z(start, jnp.float64), [])["beta"].shape == (2,)
    with pytest.raises(ValueError, match="different lengths"):
        jm.fit(NORMAL, [[1.0, 2.0], [3.0]])


# -- 9. numpy inside the log-density -------------------------------------------------------

def test_numpy_inside_the_log_density_is_explained():
    model = jm.Model(lambda p, x: -0.5 * np.exp(x - p["mu"]), {"mu": 0.0})
    with pytest.raises(TypeError, match="use jax.numpy"):
        jm.fit(model, X)


# -- 10. pickle, dict/JSON, frames, .npz --------------------------------------------------

def test_pickle_a_lambda_model_result_keeps_numbers_and_explains_what_is_gone():
    res = _single()
    back = pickle.loads(pickle.dumps(res))
    assert back.detached and not res.detached
    np.testing.assert_array_equal(back.params["mu"], res.params["mu"])
    np.testing.assert_allclose(back.cov, res.cov, rtol=0)
    assert back.summary() == res.summary()
    est, se = back.derived(lambda p: p["sigma"] / p["mu"])
    np.testing.assert_allclose(se, res.derived(lambda p: p["sigma"] / p["mu"])[1], rtol=1e-12)
    with pytest.raises(jm.DetachedError, match="profile.*jm.fit"):
        back.conf_int(method="profile")
    with pytest.raises(jm.DetachedError, match="sandwich"):
        back.stderr_robust
    batch = pickle.loads(pickle.dumps(_by_star()))
    assert batch.status_counts() == {"CONVERGED": 3} and batch.groups == ["s1", "s2", "s3"]
    np.testing.assert_array_equal(batch.group("s2").params["b"], _by_star().group("s2").params["b"])


def test_to_dict_and_json_are_plain():
    res = _single()
    d = res.to_dict()
    assert d["status"] == "CONVERGED" and d["param_names"] == ["mu", "sigma"]
    assert type(d["params"]) is dict and isinstance(d["params"]["mu"], float)
    assert d["conf_int"]["mu"][0] < 255.0 < d["conf_int"]["mu"][1]
    assert json.loads(res.to_json())["stderr"]["sigma"] == pytest.approx(3.3645, rel=1e-4)
    bd = json.loads(_by_star().to_json())
    assert bd["status"] == ["CONVERGED"] * 3 and len(bd["params"]["b"]) == 3 and bd["groups"] == ["s1", "s2", "s3"]


def test_to_frame_single_and_batch():
    res = _single()
    f = res.to_frame()
    assert list(f.columns) == ["estimate", "stderr", "z", "p", "lower", "upper"]
    assert list(f.index) == ["mu", "sigma"]
    np.testing.assert_allclose(f.loc["sigma", "stderr"], float(res.stderr["sigma"]), rtol=1e-12)
    fb = _by_star().to_frame()
    assert len(fb) == 3 and {"status", "mu", "mu_stderr", "b_z", "b_p", "sigma_upper"} <= set(fb.columns)


def test_save_and_load_npz_without_pickle(tmp_path):
    batch = _by_star()
    path = tmp_path / "fits.npz"
    batch.save(path)
    with np.load(path, allow_pickle=False) as f:
        assert "__meta__" in f.files
    back = jm.load(path)
    assert isinstance(back, jm.BatchFitResult) and back.groups == batch.groups
    assert back.param_names == ["mu", "b", "sigma"]
    np.testing.assert_array_equal(back.cov, batch.cov)
    np.testing.assert_array_equal(back.status, batch.status)
    assert back.to_frame().equals(batch.to_frame())
    single = _single()
    single.save(tmp_path / "one.npz")
    assert jm.load(tmp_path / "one.npz").summary() == single.summary()


# -- 11. spec order --------------------------------------------------------------------------

def test_spec_order_and_a_negative_unconstrained_scale():
    def loglik(p, x):   # "a" is pinned near 3 by a per-observation share of a N(3, 1) term
        return stats.norm.logpdf(x, p["Vmax"] + p["Km"], p["sigma"]) + stats.norm.logpdf(p["a"], 3.0, 1.0) / 5

    spec = {"Vmax": jm.Fixed(200.0), "Km": 0.0, "sigma": -1.0, "a": jm.Interval(0.0, 10.0)}
    # 5: norm.logpdf accepts sigma < 0, so an unconstrained sigma started at -1 ends at -10.6.
    with pytest.warns(UserWarning, match=r"\['sigma'\] look like scales.*jm.Positive"):
        res = jm.fit(jm.Model(loglik, spec), X)
    assert float(res.params["sigma"]) < 0
    # 11: names, params, summary rows, frames, dicts and the covariance follow the spec.
    assert res.param_names == ["Km", "sigma", "a"]                 # not sorted: Km, a, sigma
    assert list(res.params) == ["Vmax", "Km", "sigma", "a"]
    rows = [line.split()[0] for line in res.summary().splitlines()[6:10]]
    assert rows == ["Km", "sigma", "a", "Vmax"]
    assert list(res.to_frame().index) == ["Km", "sigma", "a"]
    assert list(res.to_dict()["params"]) == ["Vmax", "Km", "sigma", "a"]
    # Km's variance is sigma^2 / n, a's is 1.
    np.testing.assert_allclose(np.diag(res.cov)[[0, 2]], [float(res.params["sigma"]) ** 2 / 5, 1.0], rtol=1e-6)


def test_result_methods_profile_and_derived_interval():
    # The FitResult methods DESIGN names: res.profile(name, n_points) and
    # res.derived(fn, level=...) -> (estimate, stderr, (lower, upper)).
    m = jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], p["sigma"]),
                 {"mu": 0.0, "sigma": jm.Positive(1.0)})
    res = jm.fit(m, jnp.array([240.0, 255.0, 261.0, 248.0, 271.0]))
    curve = res.profile("mu", n_points=5)
    grid, ll = np.asarray(curve["grid"]), np.asarray(curve["loglik"])
    assert grid.shape == ll.shape == (5,)
    # The profile of mu for a normal sample: sigma re-optimised at each mu, closed form.
    x = np.array([240.0, 255.0, 261.0, 248.0, 271.0])
    s2 = ((x[None, :] - grid[:, None]) ** 2).mean(axis=1)
    np.testing.assert_allclose(ll, -0.5 * len(x) * (np.log(2 * np.pi * s2) + 1), rtol=1e-9)
    est, se, (lo, hi) = res.derived(lambda p: p["mu"], level=0.95)
    np.testing.assert_allclose([lo, hi], [est - 1.959963984540054 * se, est + 1.959963984540054 * se], rtol=1e-12)
