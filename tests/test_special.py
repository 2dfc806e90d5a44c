"""jaxmle._special: an accurate betaln (jax.scipy.special.betaln is up to ~5e-7 off
for max(a, b) >= 8) and log1m. float64 throughout (conftest enables x64).

Compilation dominates the run time, so values and gradients for every point are
computed by one jitted vmap(value_and_grad) call, shared by the tests below.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sc

from jaxmle._special import betaln, log1m

# (a, b, log B(a, b), digamma(a) - digamma(a+b), digamma(b) - digamma(a+b)), mpmath, 50 digits.
REFERENCE = [
    (23.4, 14.7, -25.58098722969377, -0.4958171805406804, -0.9735850943542527),
    (0.001, 1000000.0, 6.893363375325389, -1014.3910819907745, -1.0000004995001662e-09),
    (1000000.0, 0.001, 6.893363375325389, -1.0000004995001662e-09, -1014.3910819907745),
    (1000000.0, 1000000.0, -1386300.003362921, -0.6931474305600078, -0.6931474305600078),
    (0.5, 0.5, 1.1447298858494002, -1.3862943611198906, -1.3862943611198906),
    (8.0, 8.0, -10.848948661710063, -0.7253718503718504, -0.7253718503718504),
    (7.999, 8.001, -10.848948528573047, -0.7255049962371123, -0.7252387222061578),
    (100.0, 0.001, 6.902578718506049, -1.0050116161172019e-05, -1005.1757438346646),
    (3.5, 100000.0, -39.094309274611234, -10.40979882387916, -3.4999562508749807e-05),
    (30.0, 30.5, -42.36840768200044, -0.7099180030481037, -0.6931124667719675),
    (0.3, 38.0, 0.007290084932431191, -7.134862482439782, -0.007967701319515949),
    (12.5, 1000.0, -67.68418268507362, -4.434488239256875, -0.012428694882974775),
    (0.001, 0.001, 7.600900817008347, -500.0016413354569, -500.0016413354569),
    (2.0, 3.0, -2.4849066497880004, -1.0833333333333333, -0.5833333333333334),
    (7.9, 1000000.0, -100.81829479484173, -11.813279470373365, -7.899972745134457e-06),
    (15.2, 99.1, -45.172526027717346, -2.0464055801418977, -0.14337019168132858),
]
A_REF, B_REF, V_REF, GA_REF, GB_REF = (np.array(c) for c in zip(*REFERENCE))
N_REF = len(REFERENCE)

_G = np.geomspace(1e-3, 1e6, 28)                       # log grid, both orders, ties
A_GRID, B_GRID = (g.ravel() for g in np.meshgrid(_G, _G))
GRID = slice(N_REF, N_REF + A_GRID.size)

# a, b, expected value: 0 -> inf like scipy; negative or NaN -> NaN; +inf -> -inf.
EDGES = [(0.0, 1.0, np.inf), (0.0, 0.0, np.inf), (2.0, 0.0, np.inf), (-1.0, 2.0, np.nan),
         (2.0, -0.5, np.nan), (np.inf, 1.0, -np.inf), (np.inf, np.inf, -np.inf),
         (np.nan, 1.0, np.nan), (1e-300, 1e300, np.log(1e300))]
EDGE = slice(GRID.stop, GRID.stop + len(EDGES))

A_ALL = np.concatenate([A_REF, A_GRID, [e[0] for e in EDGES]])
B_ALL = np.concatenate([B_REF, B_GRID, [e[1] for e in EDGES]])

_value_and_grads = jax.jit(jax.vmap(jax.value_and_grad(betaln, argnums=(0, 1))))


@pytest.fixture(scope="module")
def f64():
    v, (ga, gb) = _value_and_grads(A_ALL, B_ALL)
    return np.asarray(v), np.asarray(ga), np.asarray(gb)


def _err(got, ref):
    """Error relative to max(1, |ref|): relative where |betaln| >= 1, absolute below."""
    return np.abs(np.asarray(got, np.float64) - ref) / np.maximum(1.0, np.abs(ref))


def test_why_this_module_exists(f64):
    # jax's betaln (0.10.2) is 3.8e-8 off at (23.4, 14.7), so 32 beta observations
    # lose 1.2e-6 of log-likelihood (issue #12 item 6). Ours is within 1e-13.
    assert (A_REF[0], B_REF[0]) == (23.4, 14.7)
    theirs = jax.jit(jax.scipy.special.betaln)(A_REF, B_REF)
    assert abs(float(theirs[0]) - V_REF[0]) > 1e-8, "jax fixed betaln: _special.betaln may be retired"
    assert abs(f64[0][0] - V_REF[0]) < 1e-13


def test_reference_points(f64):
    assert _err(f64[0][:N_REF], V_REF).max() < 1e-14


def test_matches_scipy_on_log_grid(f64):
    # scipy (Cephes lbeta) is itself up to ~1e-9 off for very unequal arguments
    # (it falls back to a log-gamma difference; 3.4e-14 already at b/a = 100),
    # so compare where b/a <= 10; mpmath covers the rest.
    keep = np.maximum(A_GRID, B_GRID) / np.minimum(A_GRID, B_GRID) <= 10
    got = f64[0][GRID][keep]
    assert _err(got, sc.betaln(A_GRID[keep], B_GRID[keep])).max() < 1e-14


def test_matches_mpmath_on_wide_grid(f64):
    mp = pytest.importorskip("mpmath")
    with mp.workdps(40):
        ref = np.array([float(mp.loggamma(x) + mp.loggamma(y) - mp.loggamma(mp.mpf(x) + y))
                        for x, y in zip(A_GRID.tolist(), B_GRID.tolist())])
    assert _err(f64[0][GRID], ref).max() < 1e-14


def test_gradient_reference_points(f64):
    np.testing.assert_allclose(f64[1][:N_REF], GA_REF, rtol=1e-12)
    np.testing.assert_allclose(f64[2][:N_REF], GB_REF, rtol=1e-12)


def test_gradient_matches_digamma(f64):
    s = sc.digamma(A_GRID + B_GRID)
    for g, x in ((f64[1][GRID], A_GRID), (f64[2][GRID], B_GRID)):
        ref = sc.digamma(x) - s
        # scipy's difference itself carries ulp(digamma) of cancellation: scale by its terms.
        assert (np.abs(g - ref) / np.maximum(np.abs(ref), np.abs(s))).max() < 1e-13


def test_gradient_relative_accuracy_mpmath(f64):
    mp = pytest.importorskip("mpmath")
    pick = np.arange(0, A_GRID.size, 5)
    a, b = A_GRID[pick].tolist(), B_GRID[pick].tolist()
    with mp.workdps(40):
        ref_a = np.array([float(mp.digamma(x) - mp.digamma(mp.mpf(x) + y)) for x, y in zip(a, b)])
        ref_b = np.array([float(mp.digamma(y) - mp.digamma(mp.mpf(x) + y)) for x, y in zip(a, b)])
    np.testing.assert_allclose(f64[1][GRID][pick], ref_a, rtol=1e-12)
    np.testing.assert_allclose(f64[2][GRID][pick], ref_b, rtol=1e-12)


def test_edge_values(f64):
    v, ga, gb = (x[EDGE] for x in f64)
    np.testing.assert_allclose(v, [e[2] for e in EDGES], rtol=1e-15)   # NaN == NaN here
    assert not np.isnan(ga[:7]).any() and not np.isnan(gb[:7]).any()  # NaN-free gradients
    assert np.isfinite(f64[1][:EDGE.start]).all() and np.isfinite(f64[2][:EDGE.start]).all()


def test_second_derivative_at_a_tie():
    # min/max would split the derivative 50/50 at a == b and corrupt the Hessian
    # (jax's own betaln gives 0.0386 for every entry at (2, 2)). Forward-over-forward
    # compiles twice as fast as grad-of-grad.
    def d2(t):
        first = lambda s: jax.jvp(lambda u: betaln(2.0 + u, 2.0), (s,), (1.0,))[1]
        return jax.jvp(first, (t,), (1.0,))[1]
    np.testing.assert_allclose(jax.jit(d2)(0.0), sc.polygamma(1, 2.0) - sc.polygamma(1, 4.0), rtol=1e-12)


def test_jit_vmap_broadcast(f64):
    # Plain (jitted, broadcasting) call vs the vmap(value_and_grad) fixture.
    full = betaln(_G[:6, None], _G[None, -4:])
    assert full.shape == (6, 4)
    idx = (np.arange(_G.size - 4, _G.size)[None, :] * _G.size + np.arange(6)[:, None]).ravel()
    assert (A_GRID[idx] == np.repeat(_G[:6], 4)).all() and (B_GRID[idx] == np.tile(_G[-4:], 6)).all()
    np.testing.assert_allclose(full.ravel(), f64[0][GRID][idx], rtol=1e-15)
    assert betaln(2, 3).dtype == jnp.float64                     # ints promote to float
    np.testing.assert_allclose(betaln(2, 3), np.log(1 / 12), rtol=1e-15)


def test_float32():
    # (Gradients are NaN-free in float32 too; not compiled here to keep this file fast.)
    a, b = A_GRID.astype(np.float32), B_GRID.astype(np.float32)
    v = betaln(a, b)
    assert v.dtype == jnp.float32 and np.isfinite(v).all()
    ref = sc.betaln(a.astype(np.float64), b.astype(np.float64))   # same inputs, exactly
    assert _err(v, ref).max() < 3e-6


def test_log1m():
    # XLA's CPU log1p is up to ~126 ulp off for arguments in about [-0.414, -0.360].
    x = np.concatenate([np.linspace(-2.0, 0.99, 300), [0.36, 0.3867, 0.414]])
    v, g = jax.jit(jax.vmap(jax.value_and_grad(log1m)))(x)
    np.testing.assert_allclose(v, np.log1p(-x), rtol=4e-16, atol=0)
    np.testing.assert_allclose(g, -1 / (1 - x), rtol=1e-15)
    assert float(log1m(1.0)) == -np.inf and np.isnan(float(log1m(1.5)))
