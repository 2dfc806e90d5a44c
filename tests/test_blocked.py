"""Big in-memory fits summed over row blocks (``jaxmle._solve._Blocked``).

The block threshold is lowered so small data take the blocked path; every result
is compared with the unblocked fit of the same data (to 1e-10) and, where easy,
with statsmodels.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm
import jaxmle._compile as _compile
import jaxmle._model as _model
import jaxmle._solve as _solve


@pytest.fixture
def isolated(monkeypatch):
    """No program shared between models or saved to disk: the blocked and unblocked fits
    of one data signature must each compile their own program."""
    monkeypatch.setattr(_compile, "programs_dir", lambda: None)
    monkeypatch.setattr(_model, "_SHARED", {})
    # Which path each traced objective took: the tests check the blocked one ran.
    seen = {"blocked": 0, "gram": 0}
    init, gram = _solve._Blocked.__init__, _solve._Blocked._gram_pass

    def counted_init(self, *a, **kw):
        seen["blocked"] += 1
        init(self, *a, **kw)

    def counted_gram(self, z):
        out = gram(self, z)
        seen["gram"] += out is not None
        return out

    monkeypatch.setattr(_solve._Blocked, "__init__", counted_init)
    monkeypatch.setattr(_solve._Blocked, "_gram_pass", counted_gram)

    def set_blocked(on: bool):
        _model._SHARED.clear()
        monkeypatch.setattr(_solve, "BLOCK_MIN_ROWS", 64 if on else 1 << 40)
        # Blocks of 128 rows: several blocks and a final one that overlaps its neighbour.
        monkeypatch.setattr(_solve, "BLOCK_ROWS_MIN", 16)
        monkeypatch.setattr(_solve, "BLOCK_ROWS_MAX", 128)

    set_blocked.seen = seen
    return set_blocked


def _both(isolated, make_model, fit):
    """(unblocked, blocked) results of ``fit(model)``, each with a fresh model."""
    isolated.seen.update(blocked=0, gram=0)
    isolated(False)
    ref = fit(make_model())
    assert isolated.seen["blocked"] == 0
    isolated(True)
    model = make_model()
    res = fit(model)
    assert isolated.seen["blocked"] > 0
    return ref, res, model


def _close(a, b, tol=1e-10):
    a, b = np.asarray(a, float), np.asarray(b, float)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def _logit_data(n=1000, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.standard_normal((n, k - 1))])
    beta = np.linspace(-0.5, 0.7, k)
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ beta))).astype(float)
    return X, y


def test_block_rows_only_for_big_data():
    model = jm.models.logistic(3)
    X, y = _logit_data(200)
    data = {"X": jnp.asarray(X), "y": jnp.asarray(y)}
    assert _solve.block_rows(model, data, None, 200) is None          # below the threshold
    n = _solve.BLOCK_MIN_ROWS
    big = {"X": jax.ShapeDtypeStruct((n, 3), jnp.float64), "y": jax.ShapeDtypeStruct((n,), jnp.float64)}
    size = _solve.block_rows(model, big, None, n)
    assert size is not None and n % size == 0 and size * 32 <= 2 * _solve.BLOCK_BYTES
    user = jm.Model(lambda p, x: jax.scipy.stats.norm.logpdf(x, p["mu"], 1.0), {"mu": 0.0})
    assert _solve.block_rows(user, jax.ShapeDtypeStruct((n,), jnp.float64), None, n) is None  # rowwise unknown
    user.rowwise = True
    assert _solve.block_rows(user, jax.ShapeDtypeStruct((n,), jnp.float64), None, n) is not None


def test_declared_rows_equal_the_loglik():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((7, 3))
    d = {"X": X, "y": rng.integers(0, 2, 7).astype(float), "offset": rng.standard_normal(7)}
    p = {"beta": rng.standard_normal(3), "sigma": 1.3}
    for make in (jm.models.linear, jm.models.logistic, jm.models.probit, jm.models.poisson):
        model = make(3)
        lp = model.linear_predictor
        dd = d if make is jm.models.poisson else {"X": X, "y": d["y"]}
        pp = p if make is jm.models.linear else {"beta": p["beta"]}
        _close(lp.loglik(X @ pp["beta"], pp, dd), model.loglik(pp, dd), 1e-15)


def test_logistic_blocked_gram_padded(isolated):
    """n = 1000 is padded to 1024 rows with a mask; blocks of 128 rows (Gram path)."""
    import statsmodels.api as sm

    X, y = _logit_data(1000)
    ref, res, _ = _both(isolated, lambda: jm.models.logistic(3), lambda m: jm.fit(m, {"X": X, "y": y}))
    assert res.status == jm.Status.CONVERGED and res.n_obs == 1000
    assert isolated.seen["gram"] > 0
    _close(res.params["beta"], ref.params["beta"])
    _close(res.stderr["beta"], ref.stderr["beta"])
    _close(res.loglik, ref.loglik)
    sm_res = sm.Logit(y, X).fit(disp=0, tol=1e-12)
    _close(res.params["beta"], sm_res.params, 1e-7)
    _close(res.stderr["beta"], sm_res.bse, 1e-7)


def test_poisson_offset_and_linear_blocked(isolated):
    import statsmodels.api as sm

    rng = np.random.default_rng(5)
    n = 777
    X = np.column_stack([np.ones(n), rng.standard_normal((n, 2))])
    off = rng.normal(0, 0.3, n)
    y = rng.poisson(np.exp(X @ np.array([0.3, 0.2, -0.4]) + off)).astype(float)
    data = {"X": X, "y": y, "offset": off}
    ref, res, _ = _both(isolated, lambda: jm.models.poisson(3), lambda m: jm.fit(m, data, bucket=False))
    _close(res.params["beta"], ref.params["beta"])
    _close(res.stderr["beta"], ref.stderr["beta"])
    sm_res = sm.GLM(y, X, family=sm.families.Poisson(), offset=off).fit(tol=1e-12)
    _close(res.params["beta"], sm_res.params, 1e-7)
    _close(res.stderr["beta"], sm_res.bse, 1e-7)

    # linear: beta and the Positive sigma (cross terms and the chain rule through exp/softplus)
    yl = X @ np.array([1.0, -2.0, 0.5]) + rng.standard_normal(n) * 0.7
    ref, res, _ = _both(isolated, lambda: jm.models.linear(3), lambda m: jm.fit(m, {"X": X, "y": yl}, bucket=False))
    for name in ("beta", "sigma"):
        _close(res.params[name], ref.params[name])
        _close(res.stderr[name], ref.stderr[name])
    _close(res.cov, ref.cov)


def _user_model():
    def loglik(p, d):
        return jax.scipy.stats.norm.logpdf(d["y"], p["a"] + p["b"] * d["x"], p["s"])

    model = jm.Model(loglik, {"a": 0.0, "b": 0.0, "s": jm.Positive(1.0)})
    model.rowwise = True
    return model


def test_user_rowwise_model_newton_bfgs_profile(isolated):
    """Generic per-block autodiff (no declared linear predictor), by Newton and by BFGS
    (gradient through the blocked custom_jvp); a profile interval (pinned Newton)."""
    rng = np.random.default_rng(7)
    n = 900
    x = rng.standard_normal(n)
    data = {"x": x, "y": 1.0 + 2.0 * x + rng.standard_normal(n) * 0.5}
    for method in ("newton", "bfgs"):
        ref, res, model = _both(isolated, _user_model, lambda m: jm.fit(m, data, method=method, bucket=False))
        assert res.status == ref.status == jm.Status.CONVERGED
        assert isolated.seen["gram"] == 0
        tol = 1e-10 if method == "newton" else 1e-7
        for name in ("a", "b", "s"):
            _close(res.params[name], ref.params[name], tol)
            _close(res.stderr[name], ref.stderr[name], tol)
    # OLS closed form for a and b, MLE sigma = sqrt(SSR / n)
    A = np.column_stack([np.ones(n), x])
    coef, ssr = np.linalg.lstsq(A, data["y"], rcond=None)[:2]
    _close([res.params["a"], res.params["b"], res.params["s"]], [coef[0], coef[1], np.sqrt(ssr[0] / n)], 1e-6)


def test_profile_interval_blocked(isolated):
    X, y = _logit_data(600, k=2, seed=2)
    ref, res, _ = _both(isolated, lambda: jm.models.logistic(2),
                        lambda m: jm.fit(m, {"X": X, "y": y}, bucket=False))
    ci_ref = ref.conf_int(method="profile")["beta"]
    isolated(True)
    # Profiles rerun the fit's own (blocked) program with a coordinate pinned.
    ci = res.conf_int(method="profile")["beta"]
    _close(ci, ci_ref, 1e-8)


def test_fit_batch_ragged_blocked(isolated):
    rng = np.random.default_rng(11)
    sets = []
    for n in (700, 900, 640):
        x = rng.standard_normal(n)
        sets.append({"x": x, "y": -1.0 + 0.5 * x + rng.standard_normal(n)})
    padded, mask = jm.pad(sets)
    ref, res, _ = _both(isolated, _user_model, lambda m: jm.fit_batch(m, padded, mask=mask))
    assert np.all(np.asarray(res.status) == jm.Status.CONVERGED)
    for name in ("a", "b", "s"):
        _close(res.params[name], ref.params[name])
        _close(res.stderr[name], ref.stderr[name])


def test_blocked_objective_autodiff_matches_direct():
    """The blocked sum's value, jax.grad / jax.hessian (through its custom_jvp) and its own
    (f, g, H) pass (Gram for logistic, per-block autodiff for a user model) equal autodiff
    of the unblocked sum."""
    X, y = _logit_data(1000, k=3, seed=4)
    mask = np.ones(1000, bool)
    mask[::7] = False
    data = {"X": jnp.asarray(X), "y": jnp.asarray(y)}
    z = jnp.asarray([0.1, -0.2, 0.3])
    for model in (jm.models.logistic(3), jm.Model(jm.models.logistic(3).loglik, {"beta": jnp.zeros(3)})):
        fixed = model.spec.fixed_values(model.spec.natural_leaves(None), jnp.float64)
        plain = _solve.make_objective(model, jnp.float64, fixed, data, jnp.asarray(mask), 1000).neg_total
        blocked = _solve._Blocked(model, fixed, data, jnp.asarray(mask), 1000, 96)

        # One program for all of it (op by op, each operation would compile on its own).
        @jax.jit
        def pieces(z, blocked=blocked, plain=plain):
            return (blocked.value_grad_hessian(z), (blocked(z), jax.grad(blocked)(z), jax.hessian(blocked)(z)),
                    (plain(z), jax.grad(plain)(z), jax.hessian(plain)(z)))

        (f, g, H), (fb, gb, Hb), (fp, gp, Hp) = pieces(z)
        for own, via_jvp, direct in ((f, fb, fp), (g, gb, gp), (H, Hb, Hp)):
            _close(own, direct, 1e-12)
            _close(via_jvp, direct, 1e-12)


def _misaligned(a, shift=16):
    """A copy of ``a`` whose data start ``shift`` bytes past a multiple of 64, as malloc
    places most big NumPy arrays."""
    buf = np.empty(a.nbytes + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + shift
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def test_big_host_arrays_read_in_place(isolated, monkeypatch):
    """A blocked fit's program reads big misaligned NumPy leaves in place (``Rows``, no
    device copy): the same estimates, SEs, profile interval and predictions as from
    device arrays, the user's arrays untouched; start values from a sample of rows."""
    import jaxmle._data as _data

    monkeypatch.setattr(_data, "ALIAS_MIN_BYTES", 1024)
    monkeypatch.setattr(_solve, "START_ROWS", 100)
    X, y = _logit_data(700, k=3, seed=4)
    Xm, ym = _misaligned(X), _misaligned(y, 48)
    assert Xm.ctypes.data % 64 == 16 and ym.ctypes.data % 64 == 48
    isolated(True)
    ref = jm.fit(jm.models.logistic(3), {"X": jnp.asarray(X), "y": jnp.asarray(y)})
    res = jm.fit(jm.models.logistic(3), {"X": Xm, "y": ym})
    held = res._memo["fit_setup"].data["X"]      # what the fit's program (and its profiles) read
    assert isinstance(held, _data.Rows) and held.shape == (700, 3)
    assert held.flat.unsafe_buffer_pointer() == Xm.ctypes.data - 16      # aliased, not copied
    assert res.status == ref.status == jm.Status.CONVERGED
    _close(res.params["beta"], ref.params["beta"])
    _close(res.stderr["beta"], ref.stderr["beta"])
    _close(res.loglik, ref.loglik)
    _close(res.conf_int(method="profile")["beta"], ref.conf_int(method="profile")["beta"], 1e-8)
    _close(res.predict(), ref.predict())
    _close(res.cov_robust, ref.cov_robust)
    np.testing.assert_array_equal(Xm, X)
    np.testing.assert_array_equal(ym, y)
    # Code outside the row loop reads ordinary arrays: a ready model's sandwich through
    # gammaln(y + 1), a model of one's own comparing its data (y == 0), LM's residuals.
    Xp, yp = _misaligned(X), _misaligned(np.floor(2 * y + X[:, 1] ** 2))
    refp = jm.fit(jm.models.poisson(3), {"X": jnp.asarray(Xp), "y": jnp.asarray(yp)})
    resp = jm.fit(jm.models.poisson(3), {"X": Xp, "y": yp})
    _close(resp.cov_robust, refp.cov_robust)

    def zip_model():
        def loglik(p, d):
            lam = jnp.exp(p["a"] + p["b"] * d["x"])
            pois = d["y"] * jnp.log(lam) - lam - jax.scipy.special.gammaln(d["y"] + 1)
            w = jax.nn.sigmoid(p["w"])
            return jnp.where(d["y"] == 0, jnp.log(w + (1 - w) * jnp.exp(-lam)), jnp.log1p(-w) + pois)

        m = jm.Model(loglik, {"a": 0.0, "b": 0.0, "w": 0.0})
        m.rowwise = True
        return m

    x = _misaligned(X[:, 1].copy())
    yz = _misaligned(np.where(X[:, 2] > 0.5, 0.0, yp))
    refz = jm.fit(zip_model(), {"x": jnp.asarray(x), "y": jnp.asarray(yz)})
    resz = jm.fit(zip_model(), {"x": x, "y": yz})
    assert isinstance(resz._memo["fit_setup"].data["x"], _data.Rows)
    _close(resz.params["w"], refz.params["w"])
    _close(resz.cov_robust, refz.cov_robust)
    nl = jm.models.nonlinear_regression(lambda p, x: p["a"] + p["b"] * x ** 2, {"a": 0.0, "b": 1.0})
    nl.rowwise = True
    yl = _misaligned(1.0 + 0.5 * X[:, 1] ** 2 + X[:, 2])
    lm = jm.fit(nl, {"x": x, "y": yl})         # method "auto": Levenberg-Marquardt
    assert lm.status == jm.Status.CONVERGED and np.shape(lm.predict()) == (700,)
    # Not blocked (below the threshold): a plain device copy, as before.
    isolated(False)
    small = jm.fit(jm.models.logistic(3), {"X": Xm, "y": ym}, bucket=False)
    assert not isinstance(small._data["X"], _data.Rows)
    _close(small.params["beta"], ref.params["beta"])
