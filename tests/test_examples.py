"""Every example runs and prints what its story promises.

The printed numbers are checked against independent references: the tutorial's worked
numbers (/work/shared/seed-mle-tutorial.txt: 7 heads in 10 flips, reaction times 240-271 ms,
36 calls in 8 hours, the credit-default log-likelihood -4.266), closed forms (k/n, the mean
and the divisor-n variance, the Poisson rate and its standard error, likelihood-ratio
intervals solved with scipy), and statsmodels / scipy fits of the same data (the data of
the simulated examples are regenerated here from the same seeds).
"""

import math
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import optimize, stats

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

EXPECT = {
    "naive_bayes.py": ["closed form", "count ratios", "cross-entropy"],
    "coin.py": ["p_hat = 0.7000"],
    "reaction_times.py": ["mu_hat = 255.0 ms", "sigma_hat^2 = 113.2"],
    "call_centre.py": ["rate = 4.500 calls/hour"],
    "credit_default.py": ["-4.268", "AT_BOUNDARY", "odds ratio"],
    "star_counts.py": ["fitted 5,000 stars", "CONVERGED"],
    "mixture.py": ["em", "newton", "adam", "random starts as one batch"],
    "map_vs_mle.py": ["MLE", "MAP"],
    "survival.py": ["ties = breslow", "ties = efron", "hazard ratios"],
    "sharded_batch.py": ["process 0 of 1", "stars fitted", "CONVERGED"],
    "hmm_detector.py": ["channels fitted by EM", "CONVERGED", "Viterbi decoding matches"],
}


# Run (at a small size) by another test file rather than here.
ELSEWHERE = {"neural_regression.py": "tests/test_neural.py::test_neural_regression_example_runs_small"}


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted([*EXPECT, *ELSEWHERE])


# hmm_detector: ~30 s (400 channels); tests/test_hmm.py covers the HMM itself. survival:
# ~55 s, nearly all compiling the two Cox programs (n = 400 risk sets, measured 32 s for
# one at this session's start too); tests/test_models.py checks Cox against statsmodels.
SLOW = {"hmm_detector.py", "survival.py"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(EXPECT)])
def test_example_runs(name):
    out = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for text in EXPECT[name]:
        assert text in out.stdout, f"{text!r} missing from {name} output:\n{out.stdout[-1500:]}"
    if name in NUMBERS:
        NUMBERS[name](out.stdout)


# -- the printed numbers against independent references ------------------------------------

def _floats(pattern, text):
    """The numbers captured by ``pattern`` (one match) in the printed output."""
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in output:\n{text[-1500:]}"
    return [float(g) for g in m.groups()]


def _row(name, text):
    """estimate, std err of a summary row ``name``."""
    return _floats(rf"\n\s*{re.escape(name)}\s+(\S+)\s+(\S+)\s", text)


def _printed(value, got, digits):
    """``got`` is ``value`` printed to ``digits`` decimals."""
    assert abs(got - value) <= 0.5 * 10.0 ** -digits + 1e-12, (got, value)


def _lr_interval(loglik, mle, lo, hi, level=0.95):
    """The likelihood-ratio interval {t: 2 (l(mle) - l(t)) <= chi2_1(level)}, by brentq."""
    drop = lambda t: 2 * (loglik(mle) - loglik(t)) - stats.chi2.ppf(level, 1)  # noqa: E731
    return optimize.brentq(drop, lo, mle), optimize.brentq(drop, mle, hi)


def check_coin(out):
    k, n = 7, 10                                           # tutorial: 7 heads in 10 flips
    p = k / n
    _printed(p, *_floats(r"p_hat = (\S+) \(closed form k/n = (?:\S+)\)", out), 4)
    est, se = _row("p", out)
    _printed(p, est, 4)
    _printed(math.sqrt(p * (1 - p) / n), se, 5)
    _printed(k * math.log(p) + (n - k) * math.log(1 - p), *_floats(r"loglik: (\S+)", out), 5)
    ll = lambda t: k * math.log(t) + (n - k) * math.log(1 - t)  # noqa: E731
    for got, want in zip(_floats(r"profile interval: \[(\S+), (\S+)\]", out), _lr_interval(ll, p, 1e-9, 1 - 1e-9)):
        _printed(want, got, 3)


def check_reaction_times(out):
    x = np.array([240.0, 255.0, 261.0, 248.0, 271.0])      # tutorial
    n, mu, var = x.size, x.mean(), x.var()
    got = _floats(r"mu_hat = (\S+) ms, sigma_hat\^2 = (\S+) ms\^2 .*n-1 version is (\S+)\)", out)
    for g, want in zip(got, [mu, var, x.var(ddof=1)]):
        _printed(want, g, 1)
    _printed(math.sqrt(var / n), _row("mu", out)[1], 4)
    _printed(math.sqrt(var / (2 * n)), _row("sigma", out)[1], 4)
    # Delta method for cv = sigma / mu with var(mu) = s^2/n, var(sigma) = s^2/(2n), independent.
    cv = math.sqrt(var) / mu
    se = cv * math.sqrt(cv ** 2 / n + 1 / (2 * n))
    for g, want in zip(_floats(r"coefficient of variation: (\S+) \+/- (\S+)", out), [cv, se]):
        _printed(want, g, 4)


def check_call_centre(out):
    x = np.array([3, 5, 2, 8, 4, 6, 3, 5])                 # tutorial: 36 calls in 8 hours
    assert x.sum() == 36
    rate, n = x.sum() / x.size, x.size
    se = math.sqrt(rate / n)
    for g, want in zip(_floats(r"rate = (\S+) calls/hour; std err sqrt\(rate/n\) = (\S+)", out), [rate, se]):
        _printed(want, g, 3)
    z = stats.norm.ppf(0.975)
    for g, want in zip(_floats(r"95% Wald\s*: \[(\S+) (\S+)\]", out), [rate - z * se, rate + z * se]):
        _printed(want, g, 2)
    ll = lambda t: x.sum() * math.log(t) - n * t  # noqa: E731
    for g, want in zip(_floats(r"95% profile : \[(\S+) (\S+)\]", out), _lr_interval(ll, rate, 1e-6, 50.0)):
        _printed(want, g, 3)


def _logit_ll(beta, X, y):
    eta = X @ beta
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def check_credit_default(out):
    X3, y3 = np.array([[1.0, 50.0], [1.0, 80.0], [1.0, 40.0]]), np.array([1.0, 0.0, 1.0])
    ll = _logit_ll(np.array([-4.0, 0.06]), X3, y3)
    got = _floats(r"log-likelihood at beta = \(-4, 0.06\): (\S+)", out)[0]
    _printed(ll, got, 3)
    assert abs(got - -4.266) <= 0.0025                    # the tutorial's, from rounded probabilities
    # Income separates the three perfectly (every defaulter earns less than every other).
    assert X3[y3 == 1, 1].max() < X3[y3 == 0, 1].min() and "status AT_BOUNDARY" in out
    # The 500 simulated applicants, regenerated as the example draws them, fitted by statsmodels.
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(7)
    income = rng.uniform(20, 120, 500)
    p = 1 / (1 + np.exp(-(2.0 - 0.05 * income)))
    X, y = np.column_stack([np.ones(500), income]), (rng.uniform(size=500) < p).astype(float)
    ref = sm.Logit(y, X).fit(disp=0, method="newton", tol=1e-12)
    for i in range(2):
        est, se = _row(f"beta[{i}]", out)
        np.testing.assert_allclose([est, se], [ref.params[i], ref.bse[i]], rtol=5e-4)
    _printed(ref.llf, *_floats(r"n_obs: 500\s+loglik: (\S+)", out), 3)
    odds = math.exp(10 * ref.params[1])
    for g, want in zip(_floats(r"odds ratio per \+10k income: (\S+) \+/- (\S+)", out), [odds, 10 * odds * ref.bse[1]]):
        _printed(want, g, 3)
    # MAP with N(0, 1) priors on the three applicants: scipy minimises -loglik + |beta|^2 / 2.
    fit = optimize.minimize(lambda b: -_logit_ll(b, X3, y3) + 0.5 * b @ b, np.zeros(2), method="BFGS",
                            options={"gtol": 1e-10})
    got = _floats(r"three applicants: beta = \[\s*(\S+)\s+(\S+)\]", out)
    for g, want in zip(got, fit.x):
        _printed(want, g, 3)


def check_survival(out):
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(5)                        # the example's data, regenerated
    n = 400
    X = np.column_stack([rng.normal(size=n), rng.binomial(1, 0.5, n)])
    t_event = rng.exponential(1 / np.exp(X @ np.array([0.7, -0.5])))
    t_cens = rng.exponential(1.5, n)
    time = np.ceil(np.minimum(t_event, t_cens) * 10) / 10
    event = (t_event <= t_cens).astype(float)
    blocks = out.split("ties = ")[1:]
    assert [b.split(":")[0] for b in blocks] == ["breslow", "efron"]
    for ties, block in zip(["breslow", "efron"], blocks):
        ref = sm.PHReg(time, X, status=event, ties=ties).fit()
        for i in range(2):
            est, se = _row(f"beta[{i}]", block)
            np.testing.assert_allclose([est, se], [ref.params[i], ref.bse[i]], rtol=5e-4)
        hr = _floats(r"hazard ratios: \[\s*(\S+)\s+(\S+)\s*\] \+/- \[\s*(\S+)\s+(\S+)\s*\]", block)
        for g, want in zip(hr, [*np.exp(ref.params), *(np.exp(ref.params) * ref.bse)]):
            _printed(want, g, 3)


def check_map_vs_mle(out):
    # The example's data regenerated; MLE by statsmodels, MAP (N(0, 1) on every coefficient)
    # by scipy; the printed error against the truth and test log-likelihood per observation.
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(3)
    k, truth = 6, np.array([0.5, 1.0, -1.0, 0.0, 0.0, 0.5])

    def sample(n):
        X = np.column_stack([np.ones(n), rng.normal(size=(n, k - 1))])
        return X, (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ truth))).astype(float)

    (X, y), (Xt, yt) = sample(40), sample(20_000)
    mle = sm.Logit(y, X).fit(disp=0, method="newton", tol=1e-12).params
    map_ = optimize.minimize(lambda b: -_logit_ll(b, X, y) + 0.5 * b @ b, np.zeros(k), method="BFGS",
                             options={"gtol": 1e-10}).x
    for name, beta in [("MLE", mle), ("MAP", map_)]:
        err, test_ll = _floats(rf"\n\s*{name}\s+(\S+)\s+(\S+)\s+\(CONVERGED\)", out)
        _printed(np.linalg.norm(beta - truth), err, 3)
        _printed(_logit_ll(beta, Xt, yt) / 20_000, test_ll, 4)


NUMBERS = {
    "coin.py": check_coin,
    "reaction_times.py": check_reaction_times,
    "call_centre.py": check_call_centre,
    "credit_default.py": check_credit_default,
    "survival.py": check_survival,
    "map_vs_mle.py": check_map_vs_mle,
}


def test_number_checks_can_fail():
    """The checks above reject a wrong printed number (here: 0.7001 heads, a rate of 4.6)."""
    with pytest.raises(AssertionError):
        check_coin("p_hat = 0.7001 (closed form k/n = 0.7000)")
    with pytest.raises(AssertionError):
        check_call_centre("rate = 4.600 calls/hour; std err sqrt(rate/n) = 0.750")
