"""Reference optima of the ``jm.bench`` problems, computed without jaxmle's optimizers.

Every problem's data come from ``jaxmle._bench_problems.DATA`` (seeded NumPy arrays);
the optimum log-likelihood is a closed form or a fit by statsmodels / scikit-learn
polished with scipy.optimize at tight tolerance, with the gradient at the optimum
checked. The values are stored as constants in ``jaxmle/_bench_problems.py``
(``REFERENCES``), so the library needs no scipy at run time.

    python benchmarks/bench_references.py            # print the REFERENCES dict to paste
    python benchmarks/bench_references.py --check    # compare with the stored constants

``tests/test_bench_cli.py`` calls :func:`compute` to recheck each stored value.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

# Relative agreement required between a recomputed reference and the stored constant:
# the fits below reach the optimum to ~1e-15 relative; BLAS summation order differs by machine.
RTOL = 1e-11


def _normal(x):
    from scipy import stats

    return float(np.sum(stats.norm.logpdf(x, x.mean(), x.std()))), "closed form (mean, biased sd; scipy.stats)"


def _banana(d):
    from scipy import stats

    # t1 = mean(u); t2 - t1^2 = mean(v): both terms at their own normal-mean MLE.
    u, v = d["u"], d["v"]
    ll = np.sum(stats.norm.logpdf(u, u.mean(), 1.0)) + np.sum(stats.norm.logpdf(v, v.mean(), 0.1))
    return float(ll), "closed form (scipy.stats)"


def _check_score(name, score, tol=1e-7):
    g = float(np.max(np.abs(score)))
    if not g < tol:
        raise RuntimeError(f"{name}: the reference fit's score is {g:.2e}, not below {tol:g}: not at the optimum")


def _poisson_glm(d):
    import statsmodels.api as sm

    m = sm.Poisson(d["y"], d["X"])
    r = m.fit(method="newton", tol=1e-14, maxiter=100, disp=0)
    _check_score("poisson_glm", m.score(r.params))
    return float(r.llf), "statsmodels Poisson, Newton, tol 1e-14"


def _logit(name, d):
    import statsmodels.api as sm

    m = sm.Logit(d["y"], d["X"])
    r = m.fit(method="newton", tol=1e-14, maxiter=200, disp=0)
    _check_score(name, m.score(r.params))
    return float(r.llf), "statsmodels Logit, Newton, tol 1e-14"


def _cox(d):
    import statsmodels.api as sm

    m = sm.PHReg(d["time"], d["X"], status=d["event"], ties="breslow")
    r = m.fit(method="newton", gtol=1e-12, maxiter=200, disp=0)
    _check_score("cox", m.score(r.params))
    return float(m.loglike(r.params)), "statsmodels PHReg (Breslow), Newton, gtol 1e-12"


def _mixture_loglik(theta, x, grad=False):
    """The two-component normal mixture's log-likelihood (and with ``grad`` its
    analytic gradient) at theta = (logit w1, mu0, mu1, log s0, log s1): unconstrained,
    weights (1 - w1, w1)."""
    from scipy.special import expit, logsumexp

    lw = np.array([-np.logaddexp(0.0, theta[0]), -np.logaddexp(0.0, -theta[0])])
    mu, s = theta[1:3], np.exp(theta[3:5])
    z = (x[:, None] - mu) / s
    terms = lw - 0.5 * z * z - np.log(s) - 0.5 * np.log(2 * np.pi)
    per = logsumexp(terms, axis=1)
    ll = float(np.sum(per))
    if not grad:
        return ll
    r = np.exp(terms - per[:, None])            # responsibilities
    g = np.empty(5)
    g[0] = np.sum(r[:, 1]) - len(x) * expit(theta[0])
    g[1:3] = np.sum(r * z / s, axis=0)
    g[3:5] = np.sum(r * (z * z - 1.0), axis=0)
    return ll, g


def _mixture(d):
    from scipy import optimize
    from sklearn.mixture import GaussianMixture

    x = d["x"]
    gm = GaussianMixture(2, tol=1e-12, max_iter=100_000, n_init=20, random_state=0).fit(x[:, None])
    order = np.argsort(gm.means_.ravel())
    w, mu, s = gm.weights_[order], gm.means_.ravel()[order], np.sqrt(gm.covariances_.ravel()[order])
    theta0 = np.array([np.log(w[1] / w[0]), *mu, *np.log(s)])

    def neg(t):
        ll, g = _mixture_loglik(t, x, grad=True)
        return -ll, -g

    # EM converges linearly: finish with BFGS on the smooth objective and its analytic
    # gradient (finite differences stopped it with a score of ~1e-4, "precision loss").
    res = optimize.minimize(neg, theta0, jac=True, method="BFGS", options={"gtol": 1e-9})
    ll = -float(res.fun)
    ll_sklearn = float(gm.score(x[:, None]) * len(x))
    if not (ll >= ll_sklearn - 1e-9 * abs(ll) and abs(ll - ll_sklearn) < 1e-6 * abs(ll)):
        raise RuntimeError(f"mixture: BFGS polish {ll!r} disagrees with sklearn EM {ll_sklearn!r}")
    _check_score("mixture", _mixture_loglik(res.x, x, grad=True)[1], tol=1e-6)
    return ll, "sklearn GaussianMixture (20 inits, tol 1e-12) + scipy BFGS polish (analytic gradient)"


def compute(name: str) -> tuple[float, str]:
    """The optimum log-likelihood of problem ``name`` and how it was obtained."""
    from jaxmle import _bench_problems as bp

    d = bp.DATA[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "normal":
            return _normal(d)
        if name == "banana":
            return _banana(d)
        if name == "poisson_glm":
            return _poisson_glm(d)
        if name in ("logistic_illcond", "logistic_1000"):
            return _logit(name, d)
        if name == "cox":
            return _cox(d)
        if name == "mixture":
            return _mixture(d)
    raise ValueError(f"no reference recipe for problem {name!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the stored REFERENCES; exit 1 on a mismatch")
    ap.add_argument("problems", nargs="*", help="default: all")
    args = ap.parse_args()
    from jaxmle import _bench_problems as bp

    names = args.problems or list(bp.PROBLEMS)
    bad = 0
    lines = []
    for n in names:
        ll, kind = compute(n)
        lines.append(f"    {n!r}: ({ll!r}, {kind!r}),")
        if args.check:
            stored = bp.REFERENCES.get(n, (float("nan"), ""))[0]
            ok = abs(ll - stored) <= RTOL * abs(ll)
            bad += not ok
            print(f"{n:18s} computed {ll!r:24s} stored {stored!r:24s} {'ok' if ok else 'MISMATCH'}")
    if not args.check:
        print("REFERENCES: dict[str, tuple[float, str]] = {")
        print("\n".join(lines))
        print("}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
