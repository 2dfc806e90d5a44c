"""Profile-likelihood intervals against independent root solves (scipy brentq) and closed forms."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats as jstats

import jaxmle as jm
from jaxmle import _profile, _profile_curve
from helpers import normal_model

stats = pytest.importorskip("scipy.stats")
optimize = pytest.importorskip("scipy.optimize")


def poisson_model():
    return jm.Model(lambda p, x: jstats.poisson.logpmf(x, p["lam"]), {"lam": jm.Positive(1.0)})


# Shared by tests on the same data shapes: a model caches its compiled programs.
POISSON, NORMAL = poisson_model(), normal_model()
CALLS = np.array([3.0, 5, 2, 8, 4, 6, 3, 5])
TIMES = np.array([240.0, 255.0, 261.0, 248.0, 271.0])


def test_poisson_rate_profile_equals_brentq():
    x = CALLS
    res = jm.fit(POISSON, jnp.asarray(x))
    lo, hi = res.conf_int(0.95, method="profile")["lam"]
    ll = lambda lam: stats.poisson.logpmf(x, lam).sum()  # noqa: E731
    q = stats.chi2.ppf(0.95, 1)
    g = lambda lam: 2 * (ll(4.5) - ll(lam)) - q  # noqa: E731
    np.testing.assert_allclose(lo, optimize.brentq(g, 1e-6, 4.5, xtol=1e-13), rtol=1e-7)
    np.testing.assert_allclose(hi, optimize.brentq(g, 4.5, 50.0, xtol=1e-13), rtol=1e-7)
    assert lo < 4.5 - (4.5 - lo) * 0 and (hi - 4.5) > (4.5 - lo)   # asymmetric, longer upward


def test_normal_profiles_closed_form():
    res = jm.fit(NORMAL, jnp.asarray(TIMES))
    ci = res.conf_int(0.95, method="profile")
    n, s2, q = 5, 113.2, stats.chi2.ppf(0.95, 1)
    half = np.sqrt(s2 * (np.exp(q / n) - 1))   # mu profiled: n log(s2(mu)/s2) = q
    np.testing.assert_allclose(ci["mu"], [255 - half, 255 + half], rtol=1e-8)

    def g(sig):                                 # sigma profiled over mu = mean
        return 2 * (n / 2 * (np.log(sig**2) - np.log(s2)) + n * s2 / (2 * sig**2) - n / 2) - q

    want = [optimize.brentq(g, 1.0, np.sqrt(s2), xtol=1e-13), optimize.brentq(g, np.sqrt(s2), 500.0, xtol=1e-13)]
    np.testing.assert_allclose(ci["sigma"], want, rtol=1e-7)


def test_profile_with_nuisance_parameters_logistic():
    # Profile intervals for a regression coefficient, checked by a brute-force
    # profile: refit with the coefficient held at a value and solve the LR equation
    # with brentq. The held value rides in the data, so every refit reuses one
    # compiled program (a jm.Fixed model per value would compile each time).
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(150), rng.normal(size=150)])
    y = (rng.uniform(size=150) < 1 / (1 + np.exp(-(0.3 + 0.8 * X[:, 1])))).astype(float)
    data = {"X": jnp.asarray(X), "y": jnp.asarray(y)}

    def loglik(p, d):
        eta = p["b0"] + p["b1"] * d["X"][:, 1]
        return d["y"] * eta - jnp.logaddexp(0.0, eta)

    res = jm.fit(jm.Model(loglik, {"b0": 0.0, "b1": 0.0}), data)
    lo, hi = res.conf_int(0.9, method="profile")["b1"]
    q = stats.chi2.ppf(0.9, 1)
    held = jm.Model(lambda p, d: loglik({"b0": p["b0"], "b1": d["b1"]}, d), {"b0": 0.0})

    def g(b1):
        refit = jm.fit(held, dict(data, b1=jnp.asarray(b1)), tol=1e-12)
        return 2 * (float(res.loglik) - float(refit.loglik)) - q

    b1 = float(res.params["b1"])
    np.testing.assert_allclose(lo, optimize.brentq(g, b1 - 3, b1, xtol=1e-10), rtol=1e-6)
    np.testing.assert_allclose(hi, optimize.brentq(g, b1, b1 + 3, xtol=1e-10), rtol=1e-6)


def test_profile_reports_constraint_edge():
    # All-zero counts: the MLE is lambda = 0 (at the edge); the lower bound is the edge
    # and the upper bound solves 2 n lambda = q.
    batch = jm.fit_batch(poisson_model(), jnp.array([[0.0, 0, 0, 0], [3, 5, 2, 8]]))
    with pytest.warns(UserWarning, match="constraint edge"):
        ci = batch.conf_int(0.95, method="profile")["lam"]
    q = stats.chi2.ppf(0.95, 1)
    np.testing.assert_allclose(ci[0], [0.0, q / 8], atol=1e-7)
    assert batch.profile_at_edge["lam"][0].tolist() == [True, False]
    assert not batch.profile_at_edge["lam"][1].any()


def test_batched_profile_equals_single_and_shows_progress(monkeypatch, capsys):
    # Long batched searches run in chunks of datasets with the fit's progress bar
    # (chunks of 2 here); each dataset's bounds equal its single fit's.
    monkeypatch.setattr(_profile, "_CHUNK", 2)
    xs = jax.random.poisson(jax.random.key(0), 3.0, (4, 12)).astype(jnp.float64) + 1.0
    model = normal_model()
    batch = jm.fit_batch(model, xs)
    flat, _ = _profile.profile_intervals(batch, 0.95, progress=True)
    assert "2/2" in capsys.readouterr().err
    assert batch.param_names == ["mu", "sigma"]
    for i in [0, 3]:
        one = jm.fit(model, xs[i]).conf_int(0.95, method="profile")
        np.testing.assert_allclose(flat[i, 0], one["mu"], rtol=1e-9)
        np.testing.assert_allclose(flat[i, 1], one["sigma"], rtol=1e-9)
    curve = _profile_curve.profile_curve(batch, "mu", n_points=5, bound=2.0)
    one = _profile_curve.profile_curve(jm.fit(model, xs[3]), "mu", n_points=5, bound=2.0)
    assert curve["grid"].shape == curve["loglik"].shape == (4, 5)
    np.testing.assert_allclose(curve["grid"][3], one["grid"], rtol=1e-12)
    np.testing.assert_allclose(curve["loglik"][3], one["loglik"], rtol=1e-10)


def test_unknown_interval_method():
    res = jm.fit(poisson_model(), jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="'wald', 'profile'"):
        res.conf_int(method="bayes")


# -- batched profile intervals: work, stragglers, progress ----------------------------

def _censored_weibull(degenerate):
    """Eight right-censored Weibull datasets; optionally one that cannot be profiled."""
    rng = np.random.default_rng(1)
    t = rng.weibull(1.5, (8, 30)) * 2.0
    c = rng.exponential(3.0, (8, 30))
    ev = (t <= c).astype(float)
    if degenerate:
        ev[1, 1:] = 0.0    # one event: the fit runs off, its standard errors are NaN
    return {"t": jnp.asarray(np.minimum(t, c)), "event": jnp.asarray(ev)}


def _counting_weibull():
    """A censored Weibull model counting how often its log-density is evaluated (per lane)."""
    calls = {"n": 0}

    def bump(_):
        calls["n"] += 1

    def loglik(p, d):
        jax.debug.callback(bump, p["shape"])
        k, lam = p["shape"], p["scale"]
        z = d["t"] / lam
        return d["event"] * (jnp.log(k / lam) + (k - 1) * jnp.log(z)) - z ** k

    return jm.Model(loglik, {"shape": jm.Positive(1.0), "scale": jm.Positive(1.0)}), calls


def test_batched_profile_work_is_a_few_fits_and_ignores_unidentified_datasets():
    # Work = evaluations of the log-density, summed over vmapped lanes (what a batched
    # program pays for). Four searches per dataset used to cost ~20 fits' worth (each
    # end ~17 root-search evaluations, each a full Newton solve), and one dataset
    # whose standard errors are NaN kept the whole batch searching for 60 evaluations.
    model, calls = _counting_weibull()
    work = {}
    for degenerate in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calls["n"] = 0
            batch = jm.fit_batch(model, _censored_weibull(degenerate))
            fit_work = calls["n"]
            calls["n"] = 0
            ci = batch.conf_int(0.95, method="profile")
        work[degenerate] = (fit_work, calls["n"])
        assert np.isfinite(ci["shape"][2:]).all() and np.isfinite(ci["scale"][2:]).all()
        if degenerate:
            assert not np.isfinite(np.asarray(batch.stderr["shape"])[1])
            assert np.isnan(ci["shape"][1]).all()
    fit_work, profile_work = work[False]
    assert profile_work <= 8 * fit_work, work
    assert work[True][1] <= 1.5 * profile_work, work


def test_a_fit_running_off_with_finite_errors_gets_a_one_sided_interval():
    # No events at all: the likelihood rises as the scale runs off to infinity. Newton
    # (first trust radius 0.1 ||D z0||) stops AT_BOUNDARY at a finite point whose
    # standard errors are finite but meaningless; its profile interval is searched (a
    # real cost, several fits' worth) and is unbounded on the side it ran off to.
    rng = np.random.default_rng(1)
    t = np.minimum(rng.weibull(1.5, 30) * 2.0, rng.exponential(3.0, 30))
    model, _ = _counting_weibull()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = jm.fit(model, {"t": jnp.asarray(t), "event": jnp.zeros(30)})
        ci = res.conf_int(0.95, method="profile")
    assert res.status == jm.Status.AT_BOUNDARY
    lo, hi = ci["shape"]
    assert 0 < lo < float(res.params["shape"])
    # Unbounded above: the batched search reports inf, a single fit's search stops at the
    # largest float it reached (about 3e307).
    assert not np.isfinite(hi) or hi > 1e300



# -- profile curves and plots --------------------------------------------------------

def test_profile_curve_closed_forms_and_default_range():
    # Normal sample: with mu profiled out, l_p(sigma) = -n log sigma - n s2 / (2 sigma^2) + c;
    # with sigma profiled out, l_p(mu) = -n/2 log(2 pi (s2 + (mu - xbar)^2)) - n/2.
    res = jm.fit(NORMAL, jnp.asarray(TIMES))
    n, s2 = 5, 113.2
    prof = _profile_curve.profile_curve(res, "sigma", n_points=9)
    sig = prof["grid"]
    np.testing.assert_allclose(prof["loglik"], -n * np.log(sig) - n * s2 / (2 * sig**2) - n / 2 * np.log(2 * np.pi),
                               rtol=1e-12)
    lo, hi = res.conf_int(0.95, method="profile")["sigma"]
    assert sig[0] < lo < float(res.params["sigma"]) < hi < sig[-1]     # the range shows both cuts
    assert sig[0] > 0                                                   # and stays in the domain
    prof = _profile_curve.profile_curve(res, "mu", n_points=5, bound=(230.0, 280.0))
    np.testing.assert_allclose(prof["grid"], [230, 242.5, 255, 267.5, 280])
    np.testing.assert_allclose(prof["loglik"], -n / 2 * np.log(2 * np.pi * (s2 + (prof["grid"] - 255) ** 2)) - n / 2,
                               rtol=1e-12)
    with pytest.raises(ValueError, match="free parameters are"):
        _profile_curve.profile_curve(res, "tau")


def test_plot_profile_marks_estimate_cut_and_interval():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    res = jm.fit(POISSON, jnp.asarray(CALLS))
    ax = _profile_curve.plot_profile(res, "lam", n_points=11)
    q = stats.chi2.ppf(0.95, 1)
    lo, hi = res.conf_int(0.95, method="profile")["lam"]
    horizontal = [ln.get_ydata()[0] for ln in ax.lines if ln.get_ydata()[0] == ln.get_ydata()[-1]
                  and len(ln.get_xdata()) == 2 and ln.get_xdata()[0] != ln.get_xdata()[-1]]
    vertical = sorted(ln.get_xdata()[0] for ln in ax.lines if len(ln.get_xdata()) == 2
                      and ln.get_xdata()[0] == ln.get_xdata()[-1])
    np.testing.assert_allclose(horizontal, [q])
    np.testing.assert_allclose(vertical, [lo, 4.5, hi], rtol=1e-9)
    curve = ax.lines[0]
    assert len(curve.get_xdata()) == 11 and np.nanmin(curve.get_ydata()) >= -1e-9
    assert ax.get_title().startswith("lam = 4.5")
    with pytest.raises(ValueError, match="index the batch"):
        _profile_curve.plot_profile(jm.fit_batch(poisson_model(), jnp.ones((2, 3))), "lam")


# -- a single fit's profile runs the fit's own compiled program ------------------------

def test_first_profile_after_a_fit_compiles_nothing_and_equals_the_lr_root():
    # Exponential rate: 2 (l_hat - l(r)) = q  <=>  n log(r / r_hat) - n (r / r_hat - 1) = -q / 2,
    # solved independently by brentq. The profile's evaluations are calls of the fit's
    # program with the coordinate pinned as data: after the (padded, bucketed) Newton
    # fit, the intervals at any level lower no new XLA program.
    from jax._src import monitoring

    x = np.array([0.8, 2.1, 0.3, 1.7, 0.9, 3.2, 0.5])
    n = len(x)
    model = jm.Model(lambda p, t: jstats.expon.logpdf(t, scale=1.0 / p["rate"]), {"rate": jm.Positive(1.0)})
    res = jm.fit(model, jnp.asarray(x))
    lowered = []

    def listen(event, duration, **_):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowered.append(duration)

    monitoring.register_event_duration_secs_listener(listen)
    try:
        cis = {level: res.conf_int(level, method="profile")["rate"] for level in (0.95, 0.8)}
        assert lowered == []
        # A profile curve adds at most the small natural -> z map of its grid (two shapes).
        curve = res.profile("rate", n_points=5)
        assert len(lowered) <= 2
    finally:
        monitoring.unregister_event_duration_listener(listen)
    np.testing.assert_allclose(curve["loglik"], n * np.log(curve["grid"]) - curve["grid"] * x.sum(), rtol=1e-12)
    r_hat = n / x.sum()
    for level, (lo, hi) in cis.items():
        q = stats.chi2.ppf(level, 1)
        g = lambda r: n * np.log(r / r_hat) - n * (r / r_hat - 1) + q / 2  # noqa: E731
        np.testing.assert_allclose(lo, optimize.brentq(g, 1e-3 * r_hat, r_hat, xtol=1e-14), rtol=1e-8)
        np.testing.assert_allclose(hi, optimize.brentq(g, r_hat, 100 * r_hat, xtol=1e-14), rtol=1e-8)
    assert not res.profile_at_edge["rate"].any()


def test_profile_of_a_bfgs_fit_and_of_a_batch_dataset_equal_the_newton_fits():
    # Another method's fit profiles through the Newton program of the same model and
    # data; a batch's dataset (no fit setup of its own) through the same program at its
    # shapes. Both equal the closed form of a normal mean with sigma profiled out.
    n, s2, q = 5, 113.2, stats.chi2.ppf(0.95, 1)
    half = np.sqrt(s2 * (np.exp(q / n) - 1))
    res = jm.fit(NORMAL, jnp.asarray(TIMES), method="bfgs")
    np.testing.assert_allclose(res.conf_int(0.95, method="profile")["mu"], [255 - half, 255 + half], rtol=1e-8)
    batch = jm.fit_batch(NORMAL, jnp.asarray(np.stack([TIMES, TIMES + 10.0])))
    np.testing.assert_allclose(batch[1].conf_int(0.95, method="profile")["mu"], [265 - half, 265 + half],
                               rtol=1e-8)
