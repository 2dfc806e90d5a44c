"""Hard, published, certified problems for ``benchmarks/robustness.py``.

Each problem is a :class:`Problem`: the jaxmle ``jm.Model`` a new user would write,
its data, the published start values, the published (certified) answer, and what
scipy needs to attack the same problem from the same starts (the same negative
log-likelihood in the same unconstrained coordinates, and for least-squares
problems the residual vector).

Sources
-------
* NIST Statistical Reference Datasets (StRD), nonlinear regression, all 27 problems:
  https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml ; each data file is
  https://www.itl.nist.gov/div898/strd/nls/data/LINKS/DATA/<Name>.dat . The 27 files
  are shipped verbatim in ``benchmarks/data/nist/`` (public domain; copied from the
  NIST_STRD folder of the lmfit 1.3.4 source distribution on PyPI, which vendors
  the NIST files unchanged). Data, both starts, certified values, certified
  standard deviations and residual sums of squares are parsed from those files,
  never retyped; ``verify()`` in robustness.py re-derives the certified RSS and
  standard deviations from them.
* J. J. Moré, B. S. Garbow and K. E. Hillstrom, "Testing unconstrained optimization
  software", ACM Transactions on Mathematical Software 7(1):17-41, 1981 (MGH):
  functions 1-20 with their standard starts x0 (and 10*x0) and the minima the
  paper lists. The paper prints minimum values to about 6 digits; the start
  values of ||r(x0)|| are cross-checked against the MINPACK-1 test drivers
  (netlib minpack/ex/file22, the lmder tests). Gulf research uses m = 99 and the
  paper's "mi" read as a minus sign (a known misprint).
* statsmodels.datasets (star98, cpunish, scotland), the GLMs of the statsmodels
  GLM documentation; reference estimates and standard errors are statsmodels'
  own, computed at run time.
* A zero-inflated Poisson fitted to plain Poisson(3) data (no inflation), and a
  beta-distribution fit to 32 draws from Beta(23.4, 14.7): simulated with fixed
  seeds; references from closed forms and ``scipy.stats.beta.fit``.
"""

from __future__ import annotations

import functools
import itertools
import re
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle as jm

NIST_DIR = Path(__file__).resolve().parent / "data" / "nist"

# NIST's own order: lower, average, higher level of difficulty.
NIST_NAMES = [
    "Misra1a", "Chwirut2", "Chwirut1", "Lanczos3", "Gauss1", "Gauss2", "DanWood", "Misra1b",
    "Kirby2", "Hahn1", "Nelson", "MGH17", "Lanczos1", "Lanczos2", "Gauss3", "Misra1c",
    "Misra1d", "Roszman1", "ENSO",
    "MGH09", "Thurber", "BoxBOD", "Rat42", "MGH10", "Eckerle4", "Rat43", "Bennett5",
]
GLM_NAMES = ["star98 binomial", "cpunish Poisson", "scotland gamma"]
ZIP_NAME, BETA_NAME = "ZIP on Poisson data", "beta fit (n=32)"


@dataclass
class Minimum:
    """A minimum of an MGH sum of squares F(x) = sum r_i(x)^2 as the paper prints it."""

    value: str                         # as printed, e.g. "8.21487e-3" (its digits set the match tolerance)
    is_global: bool = True
    at_infinity: bool = False          # approached only as some parameters run off to +-inf
    x: tuple | None = None             # the minimiser, where the paper gives it exactly

    @property
    def f(self) -> float:
        return float(self.value)

    @property
    def printed_tol(self) -> float:
        """One unit in the last printed digit (the paper truncates: Bard's 8.2148773e-3 is printed 8.21487e-3)."""
        return float(Decimal(1).scaleb(Decimal(self.value).as_tuple().exponent))


@dataclass
class Problem:
    """One benchmark problem.

    ``to_z``/``from_z`` map natural-scale parameters (a dict like ``res.params``) to
    the flat unconstrained vector that scipy optimises, where ``negll(z, data)`` is
    minus the log-likelihood, i.e. the same function jaxmle maximises. For least
    squares, ``residuals(b, data)`` is the residual vector in the regression
    parameters ``b`` (``b_of``/``with_b`` convert to and from natural parameters).
    """

    name: str
    family: str                                    # "NIST", "MGH", "GLM", "boundary", "distribution"
    source: str
    model: jm.Model | None
    data: dict
    starts: list[tuple[str, dict]]                 # (label, natural-scale start values)
    to_z: Callable[[dict], np.ndarray]
    from_z: Callable[[np.ndarray], dict]
    negll: Callable                                # negll(z, data) -> scalar, jax
    rule: str                                      # how "solved" is judged: lre | mgh | boundary | loglik
    certified: dict = field(default_factory=dict)  # name -> certified value (judged parameters)
    certified_se: dict = field(default_factory=dict)
    certified_rss: float | None = None
    residuals: Callable | None = None              # residuals(b, data) -> r, jax
    b_of: Callable[[dict], np.ndarray] | None = None
    with_b: Callable[[np.ndarray], dict] | None = None
    minima: list[Minimum] = field(default_factory=list)
    check_params: bool = False                     # MGH: also require the minimiser to 6 digits
    expected_status: str = "CONVERGED"
    difficulty: str = ""
    notes: str = ""
    reference: dict = field(default_factory=dict)  # run-time references (statsmodels, scipy, closed forms)
    equivalents: list[dict] = field(default_factory=list)  # certified values under exact symmetries
    fit: Callable | None = None                    # fit(method, start) -> FitResult; default jm.fit
    accurate_loglik: Callable | None = None        # loglik(params) in numpy/scipy, for the loglik rule
    residual_model: Callable | None = None         # () -> (Model with .residuals, data), for method="lm"
    minpack_start_norm: dict = field(default_factory=dict)  # start label -> ||r(x0)|| from MINPACK


# --------------------------------------------------------------------------- NIST
def _nist_mean_functions():
    pi = jnp.pi
    exp = jnp.exp

    def lanczos(b, x):
        return b[0] * exp(-b[1] * x) + b[2] * exp(-b[3] * x) + b[4] * exp(-b[5] * x)

    def gauss(b, x):
        return (b[0] * exp(-b[1] * x) + b[2] * exp(-((x - b[3]) ** 2) / b[4] ** 2)
                + b[5] * exp(-((x - b[6]) ** 2) / b[7] ** 2))

    def cubic_ratio(b, x):
        return (b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3) / (1 + b[4] * x + b[5] * x**2 + b[6] * x**3)

    def chwirut(b, x):
        return exp(-b[0] * x) / (b[1] + b[2] * x)

    def misra1a(b, x):
        return b[0] * (1 - exp(-b[1] * x))

    return {
        "Misra1a": misra1a,
        "Chwirut2": chwirut,
        "Chwirut1": chwirut,
        "Lanczos3": lanczos,
        "Gauss1": gauss,
        "Gauss2": gauss,
        "DanWood": lambda b, x: b[0] * x ** b[1],
        "Misra1b": lambda b, x: b[0] * (1 - (1 + b[1] * x / 2) ** (-2)),
        "Kirby2": lambda b, x: (b[0] + b[1] * x + b[2] * x**2) / (1 + b[3] * x + b[4] * x**2),
        "Hahn1": cubic_ratio,
        # log(y) = b1 - b2*x1 * exp(-b3*x2): the response stored for Nelson is log(y).
        "Nelson": lambda b, x: b[0] - b[1] * x[:, 0] * exp(-b[2] * x[:, 1]),
        "MGH17": lambda b, x: b[0] + b[1] * exp(-x * b[3]) + b[2] * exp(-x * b[4]),
        "Lanczos1": lanczos,
        "Lanczos2": lanczos,
        "Gauss3": gauss,
        "Misra1c": lambda b, x: b[0] * (1 - (1 + 2 * b[1] * x) ** (-0.5)),
        "Misra1d": lambda b, x: b[0] * b[1] * x * ((1 + b[1] * x) ** (-1)),
        "Roszman1": lambda b, x: b[0] - b[1] * x - jnp.arctan(b[2] / (x - b[3])) / pi,
        "ENSO": lambda b, x: (b[0] + b[1] * jnp.cos(2 * pi * x / 12) + b[2] * jnp.sin(2 * pi * x / 12)
                              + b[4] * jnp.cos(2 * pi * x / b[3]) + b[5] * jnp.sin(2 * pi * x / b[3])
                              + b[7] * jnp.cos(2 * pi * x / b[6]) + b[8] * jnp.sin(2 * pi * x / b[6])),
        "MGH09": lambda b, x: b[0] * (x**2 + x * b[1]) / (x**2 + x * b[2] + b[3]),
        "Thurber": cubic_ratio,
        "BoxBOD": misra1a,
        "Rat42": lambda b, x: b[0] / (1 + exp(b[1] - b[2] * x)),
        "MGH10": lambda b, x: b[0] * exp(b[1] / (x + b[2])),
        "Eckerle4": lambda b, x: (b[0] / b[1]) * exp(-0.5 * ((x - b[2]) / b[1]) ** 2),
        "Rat43": lambda b, x: b[0] / ((1 + exp(b[1] - b[2] * x)) ** (1 / b[3])),
        "Bennett5": lambda b, x: b[0] * (b[1] + x) ** (-1 / b[2]),
    }


NIST_MEAN = _nist_mean_functions()

# Exact symmetries of the NIST mean functions: relabellings that give the same fitted
# curve, so a fit that lands on one of them has found the certified solution.
# terms: interchangeable groups of parameter indices; term_flips: positions inside a
# term whose signs flip together (a squared width, a period with its sine coefficient);
# global_flips: index groups whose signs flip together.
NIST_SYMMETRIES = {
    **{n: {"terms": [(0, 1), (2, 3), (4, 5)]} for n in ("Lanczos1", "Lanczos2", "Lanczos3")},
    **{n: {"terms": [(2, 3, 4), (5, 6, 7)], "term_flips": [(2,)]} for n in ("Gauss1", "Gauss2", "Gauss3")},
    "ENSO": {"terms": [(3, 4, 5), (6, 7, 8)], "term_flips": [(0, 2)]},
    "MGH17": {"terms": [(1, 3), (2, 4)]},
    "Eckerle4": {"global_flips": [(0, 1)]},
}


def equivalent_solutions(name: str, b: np.ndarray) -> list[np.ndarray]:
    """The certified vector and its images under the model's exact symmetries (itself if none)."""
    sym = NIST_SYMMETRIES.get(name)
    if sym is None:
        return [np.asarray(b, float)]
    b = np.asarray(b, float)
    terms = sym.get("terms", [])
    flips = [(t, pos) for t in range(len(terms)) for pos in sym.get("term_flips", [])]
    flips += [(None, g) for g in sym.get("global_flips", [])]
    out = []
    for perm in itertools.permutations(range(len(terms))) if terms else [()]:
        base = b.copy()
        for slot, src in enumerate(perm):
            base[list(terms[slot])] = b[list(terms[src])]
        for mask in itertools.product((False, True), repeat=len(flips)):
            v = base.copy()
            for on, (t, group) in zip(mask, flips):
                if on:
                    idx = [terms[t][i] for i in group] if t is not None else list(group)
                    v[idx] = -v[idx]
            out.append(v)
    return out


def parse_nist(path: Path) -> dict:
    """Read one NIST StRD nonlinear-regression .dat file, using the line ranges in its header."""
    lines = path.read_text().splitlines()
    text = "\n".join(lines)

    def span(label):
        m = re.search(label + r"\s+\(lines\s+(\d+)\s+to\s+(\d+)\)", text)
        return int(m.group(1)), int(m.group(2))

    s0, s1 = span("Starting Values")
    _, c1 = span("Certified Values")
    d0, d1 = span("Data")
    names, start1, start2, cert, sd = [], [], [], [], []
    for line in lines[s0 - 1: s1]:
        name, rest = line.split("=")
        v = rest.split()
        names.append(name.strip())
        start1.append(float(v[0]))
        start2.append(float(v[1]))
        cert.append(float(v[2]))
        sd.append(float(v[3]))
    stats = {}
    for line in lines[s1: c1]:
        m = re.match(r"\s*(Residual Sum of Squares|Residual Standard Deviation|Degrees of Freedom|"
                     r"Number of Observations):\s+(\S+)", line)
        if m:
            stats[m.group(1)] = float(m.group(2))
    rows = np.array([[float(t) for t in line.split()] for line in lines[d0 - 1: d1]])
    level = re.search(r"(Lower|Average|Higher) Level of Difficulty", text).group(1)
    return {
        "names": names, "start1": np.array(start1), "start2": np.array(start2),
        "certified": np.array(cert), "certified_sd": np.array(sd),
        "rss": stats["Residual Sum of Squares"], "n_obs": int(stats["Number of Observations"]),
        "dof": int(stats["Degrees of Freedom"]), "y": rows[:, 0],
        "x": rows[:, 1] if rows.shape[1] == 2 else rows[:, 1:], "difficulty": level,
    }


def sigma_start(f, b, x, y) -> float:
    """The sigma start used for every NIST problem: the RMS residual at the start's b.

    That is sqrt(RSS(b_start)/n), the maximiser over sigma with b held at its start;
    where it is not finite and positive, the standard deviation of y.
    """
    r = np.asarray(y - jax.jit(f)(tuple(jnp.asarray(b)), jnp.asarray(x)))
    s = float(np.sqrt(np.mean(r**2)))
    return s if np.isfinite(s) and s > 0 else float(np.std(y))


def nist_problem(name: str) -> Problem:
    """A NIST StRD nonlinear regression, recast as a Gaussian likelihood with unknown sigma."""
    d = parse_nist(NIST_DIR / f"{name}.dat")
    f = NIST_MEAN[name]
    names = d["names"]
    k = len(names)
    y = np.log(d["y"]) if name == "Nelson" else d["y"]
    data = {"x": jnp.asarray(d["x"]), "y": jnp.asarray(y)}

    def mean(p, x):
        return f(tuple(p[n] for n in names), x)

    def loglik(p, dd):
        return jax.scipy.stats.norm.logpdf(dd["y"], mean(p, dd["x"]), p["sigma"])

    starts = []
    for label, b in (("start1", d["start1"]), ("start2", d["start2"])):
        init = {n: float(v) for n, v in zip(names, b)}
        init["sigma"] = sigma_start(f, b, d["x"], y)
        starts.append((label, init))
    spec = {n: starts[0][1][n] for n in names}
    spec["sigma"] = jm.Positive(starts[0][1]["sigma"])
    model = jm.Model(loglik, spec, name=name)

    @functools.cache                     # one Model per problem: jaxmle compiles once per model and method
    def residual_model():
        """The same likelihood written with jm.models.nonlinear_regression (what method="lm" needs)."""
        m = jm.models.nonlinear_regression(mean, {n: spec[n] for n in names}, name=name)
        return m, data

    def residuals(b, dd):
        return dd["y"] - f(tuple(b[i] for i in range(k)), dd["x"])

    def negll(z, dd):
        return -jnp.sum(jax.scipy.stats.norm.logpdf(dd["y"], f(tuple(z[i] for i in range(k)), dd["x"]),
                                                    jnp.exp(z[k])))

    def with_b(b):
        r = np.asarray(residuals(jnp.asarray(b), data))
        out = {n: float(v) for n, v in zip(names, b)}
        out["sigma"] = float(np.sqrt(np.mean(r**2)))
        return out

    return Problem(
        name=name, family="NIST", difficulty=d["difficulty"].lower(),
        source=f"NIST StRD nonlinear regression, https://www.itl.nist.gov/div898/strd/nls/data/LINKS/DATA/{name}.dat",
        model=model, data=data, starts=starts,
        to_z=lambda p: np.array([p[n] for n in names] + [np.log(p["sigma"])], float),
        from_z=lambda z: {**{n: float(z[i]) for i, n in enumerate(names)}, "sigma": float(np.exp(z[k]))},
        negll=negll, rule="lre",
        certified=dict(zip(names, d["certified"].tolist())),
        equivalents=[dict(zip(names, v.tolist())) for v in equivalent_solutions(name, d["certified"])[1:]],
        certified_se=dict(zip(names, d["certified_sd"].tolist())),
        certified_rss=d["rss"], residuals=residuals,
        b_of=lambda p: np.array([p[n] for n in names], float), with_b=with_b,
        notes="response is log(y)" if name == "Nelson" else "",
        reference={"n_obs_header": d["n_obs"], "dof": d["dof"], "n_rows": len(y)},
        residual_model=residual_model if hasattr(jm.models, "nonlinear_regression") else None,
    )


# --------------------------------------------------------------------------- MGH
def _mgh_definitions():
    """(name, m, x0, residual function r(x, i) with i = 1..m as floats, minima, extras)."""
    e = jnp.exp
    out = []

    def add(name, m, x0, r, minima, check_params=False, minpack=None, notes="", scales=(1.0, 10.0)):
        out.append(dict(name=name, m=m, x0=x0, r=r, minima=minima, check_params=check_params,
                        minpack=minpack or {}, notes=notes, scales=scales))

    add("Rosenbrock", 2, [-1.2, 1.0],
        lambda x, i: jnp.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]]),
        [Minimum("0", x=(1.0, 1.0))], True, {"x0": np.sqrt(24.2), "10x0": np.sqrt(1795769.0)})
    add("Freudenstein-Roth", 2, [0.5, -2.0],
        lambda x, i: jnp.stack([-13 + x[0] + ((5 - x[1]) * x[1] - 2) * x[1],
                                -29 + x[0] + ((x[1] + 1) * x[1] - 14) * x[1]]),
        [Minimum("0", x=(5.0, 4.0)), Minimum("48.9842", is_global=False)], True,
        {"x0": 20.0124960961895, "10x0": 12432.833948863}, "local minimum 48.9842 at (11.41..., -0.8968...)")
    add("Powell badly scaled", 2, [0.0, 1.0],
        lambda x, i: jnp.stack([1e4 * x[0] * x[1] - 1, e(-x[0]) + e(-x[1]) - 1.0001]),
        [Minimum("0")], notes="minimiser (1.098e-5, 9.106) printed to 4 digits only: objective rule")
    add("Brown badly scaled", 3, [1.0, 1.0],
        lambda x, i: jnp.stack([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2]),
        [Minimum("0", x=(1e6, 2e-6))], True)
    beale_y = jnp.array([1.5, 2.25, 2.625])
    add("Beale", 3, [1.0, 1.0], lambda x, i: beale_y - x[0] * (1 - x[1] ** i),
        [Minimum("0", x=(3.0, 0.5))], True)
    add("Jennrich-Sampson", 10, [0.3, 0.4], lambda x, i: 2 + 2 * i - (e(i * x[0]) + e(i * x[1])),
        [Minimum("124.362")], minpack={"x0": 64.5856498144943},
        notes="m=10; minimiser x1=x2=0.2578 (printed to 4 digits)")

    def helical(x, i):
        safe = jnp.where(x[0] == 0, 1.0, x[0])
        q = jnp.arctan(x[1] / safe) / (2 * jnp.pi) + jnp.where(x[0] < 0, 0.5, 0.0)
        theta = jnp.where(x[0] == 0, jnp.where(x[1] >= 0, 0.25, -0.25), q)
        return jnp.stack([10 * (x[2] - 10 * theta), 10 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1), x[2]])

    add("Helical valley", 3, [-1.0, 0.0, 0.0], helical, [Minimum("0", x=(1.0, 0.0, 0.0))], True,
        {"x0": 50.0, "10x0": 102.95630140987})
    bard_y = jnp.array([0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39])
    add("Bard", 15, [1.0, 1.0, 1.0],
        lambda x, i: bard_y - (x[0] + i / ((16 - i) * x[1] + jnp.minimum(i, 16 - i) * x[2])),
        [Minimum("8.21487e-3"), Minimum("17.4286", is_global=False, at_infinity=True)],
        minpack={"x0": 6.45613629515967, "10x0": 36.1418531596785},
        notes="local minimum 17.4286 at (0.8406..., -inf, -inf)")
    gauss_y = jnp.array([0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989,
                         0.3521, 0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009])
    add("Gaussian", 15, [0.4, 1.0, 0.0],
        lambda x, i: x[0] * e(-x[1] * ((8 - i) / 2 - x[2]) ** 2 / 2) - gauss_y, [Minimum("1.12793e-8")])
    meyer_y = jnp.array([34780., 28610., 23650., 19630., 16370., 13720., 11540., 9744., 8261., 7030.,
                         6005., 5147., 4427., 3820., 3307., 2872.])
    add("Meyer", 16, [0.02, 4000.0, 250.0], lambda x, i: x[0] * e(x[1] / (45 + 5 * i + x[2])) - meyer_y,
        [Minimum("87.9458")], minpack={"x0": 41153.4665543031, "10x0": 4168216.89130846})

    def gulf(x, i):
        t = i / 100
        y = 25 + (-50 * jnp.log(t)) ** (2 / 3)
        return e(-(jnp.abs(y - x[1]) ** x[2]) / x[0]) - t

    add("Gulf research", 99, [5.0, 2.5, 0.15], gulf, [Minimum("0", x=(50.0, 25.0, 1.5))], True,
        notes="m=99; the paper's 'mi' is a minus sign; 10*x0 is the minimiser itself, so one start",
        scales=(1.0,))
    add("Box 3-D", 10, [0.0, 10.0, 20.0],
        lambda x, i: e(-0.1 * i * x[0]) - e(-0.1 * i * x[1]) - x[2] * (e(-0.1 * i) - e(-i)),
        [Minimum("0")], minpack={"x0": 32.1115837449572},
        notes="non-isolated: F=0 at (1,10,1), (10,1,-1) and on the line x1=x2, x3=0")
    add("Powell singular", 4, [3.0, -1.0, 0.0, 1.0],
        lambda x, i: jnp.stack([x[0] + 10 * x[1], jnp.sqrt(5.0) * (x[2] - x[3]), (x[1] - 2 * x[2]) ** 2,
                                jnp.sqrt(10.0) * (x[0] - x[3]) ** 2]),
        [Minimum("0", x=(0.0, 0.0, 0.0, 0.0))], minpack={"x0": 14.6628782986152, "10x0": 1270.9838708654},
        notes="singular Hessian at the minimiser (x converges like F^(1/4)): objective rule")
    add("Wood", 6, [-3.0, -1.0, -3.0, -1.0],
        lambda x, i: jnp.stack([10 * (x[1] - x[0] ** 2), 1 - x[0], jnp.sqrt(90.0) * (x[3] - x[2] ** 2),
                                1 - x[2], jnp.sqrt(10.0) * (x[1] + x[3] - 2), (x[1] - x[3]) / jnp.sqrt(10.0)]),
        [Minimum("0", x=(1.0, 1.0, 1.0, 1.0))], True)
    ko_u = jnp.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])
    ko_y = jnp.array([0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246])
    add("Kowalik-Osborne", 11, [0.25, 0.39, 0.415, 0.39],
        lambda x, i: ko_y - x[0] * (ko_u**2 + ko_u * x[1]) / (ko_u**2 + ko_u * x[2] + x[3]),
        [Minimum("3.07505e-4"), Minimum("1.02734e-3", is_global=False, at_infinity=True)],
        minpack={"x0": 0.0728915102882945, "10x0": 2.97937007555202},
        notes="local minimum 1.02734e-3 at (+inf, -14.07..., -inf, -inf)")

    def brown_dennis(x, i):
        t = i / 5
        return (x[0] + t * x[1] - e(t)) ** 2 + (x[2] + x[3] * jnp.sin(t) - jnp.cos(t)) ** 2

    add("Brown-Dennis", 20, [25.0, 5.0, -5.0, -1.0], brown_dennis, [Minimum("85822.2")],
        minpack={"x0": 2815.43839161816, "10x0": 555073.354173069}, notes="m=20")
    osb1_y = jnp.array([0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751, 0.718,
                        0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490, 0.478, 0.467,
                        0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406])
    add("Osborne 1", 33, [0.5, 1.5, -1.0, 0.01, 0.02],
        lambda x, i: osb1_y - (x[0] + x[1] * e(-10 * (i - 1) * x[3]) + x[2] * e(-10 * (i - 1) * x[4])),
        [Minimum("5.46489e-5")], minpack={"x0": 0.937564021037838})

    def biggs(x, i):
        t = 0.1 * i
        y = e(-t) - 5 * e(-10 * t) + 3 * e(-4 * t)
        return x[2] * e(-t * x[0]) - x[3] * e(-t * x[1]) + x[5] * e(-t * x[4]) - y

    add("Biggs EXP6", 13, [1.0, 2.0, 1.0, 1.0, 1.0, 1.0], biggs,
        [Minimum("0", x=(1.0, 10.0, 1.0, 5.0, 4.0, 3.0)), Minimum("5.65565e-3", is_global=False)],
        notes="m=13; F=0 also at (4,10,3,5,1,1) (the two positive terms swapped): objective rule")
    osb2_y = jnp.array([1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746, 0.679,
                        0.608, 0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649, 0.694, 0.644,
                        0.624, 0.661, 0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395, 0.375, 0.372, 0.391,
                        0.396, 0.405, 0.428, 0.429, 0.523, 0.562, 0.607, 0.653, 0.672, 0.708, 0.633, 0.668,
                        0.645, 0.632, 0.591, 0.559, 0.597, 0.625, 0.739, 0.710, 0.729, 0.720, 0.636, 0.581,
                        0.428, 0.292, 0.162, 0.098, 0.054])

    def osborne2(x, i):
        t = (i - 1) / 10
        return osb2_y - (x[0] * e(-t * x[4]) + x[1] * e(-((t - x[8]) ** 2) * x[5])
                         + x[2] * e(-((t - x[9]) ** 2) * x[6]) + x[3] * e(-((t - x[10]) ** 2) * x[7]))

    add("Osborne 2", 65, [1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5], osborne2,
        [Minimum("4.01377e-2")], minpack={"x0": 1.44686540984712})

    def watson(x, i):
        t = i[:29] / 29
        j = jnp.arange(x.shape[0])
        s1 = jnp.sum(j[1:] * x[1:] * t[:, None] ** (j[1:] - 1), axis=1)
        s2 = jnp.sum(x * t[:, None] ** j, axis=1)
        return jnp.concatenate([s1 - s2**2 - 1, jnp.stack([x[0], x[1] - x[0] ** 2 - 1])])

    add("Watson", 31, [0.0] * 6, watson, [Minimum("2.28767e-3")],
        minpack={"x0": 5.47722557505166}, notes="n=6, m=31; 10*x0 = x0 = 0, so one start")
    return out


def mgh_problem(defn: dict, scales=(1.0, 10.0)) -> Problem:
    """An MGH sum of squares recast as a likelihood with known unit variance."""
    r = defn["r"]
    m = defn["m"]
    x0 = np.array(defn["x0"], float)
    data = {"i": jnp.arange(1.0, m + 1.0)}

    def loglik(p, d):
        return -0.5 * jnp.sum(r(p["x"], d["i"]) ** 2)

    starts = []
    for s in scales:
        if s != 1.0 and (s not in defn["scales"] or not np.any(x0)):
            continue  # 10*x0 adds nothing when x0 = 0 (Watson) or is the minimiser (Gulf)
        starts.append(("x0" if s == 1.0 else f"{s:g}x0", {"x": x0 * s}))
    model = jm.Model(loglik, {"x": jnp.asarray(x0)}, name=defn["name"])

    @functools.cache
    def residual_model():
        """0 = -r(x) + e with sigma = 1 known: the same likelihood up to a constant, for method="lm"."""
        m_ = jm.models.nonlinear_regression(lambda p, i: -r(p["x"], i), {"x": jnp.asarray(x0)}, sigma=1.0,
                                            name=defn["name"])
        return m_, {"x": data["i"], "y": jnp.zeros(m)}

    minima = defn["minima"]
    certified = {}
    if defn["check_params"]:
        certified = {"x": np.array(next(mm.x for mm in minima if mm.is_global), float)}
    return Problem(
        name=defn["name"], family="MGH", difficulty="",
        source="More, Garbow & Hillstrom (1981), ACM TOMS 7(1):17-41",
        model=model, data=data, starts=starts,
        to_z=lambda p: np.asarray(p["x"], float).ravel(),
        from_z=lambda z: {"x": np.asarray(z, float)},
        negll=lambda z, d: 0.5 * jnp.sum(r(z, d["i"]) ** 2),
        rule="mgh", certified=certified, residuals=lambda b, d: r(b, d["i"]),
        b_of=lambda p: np.asarray(p["x"], float).ravel(), with_b=lambda b: {"x": np.asarray(b, float)},
        minima=minima, check_params=defn["check_params"], notes=defn["notes"],
        minpack_start_norm=defn["minpack"],
        residual_model=residual_model if hasattr(jm.models, "nonlinear_regression") else None,
    )


# --------------------------------------------------------------------------- GLMs
def _binomial_ll(p, d):
    eta = d["X"] @ p["beta"]
    return (d["k"] * eta - d["n"] * jnp.logaddexp(0.0, eta)
            + jax.scipy.special.gammaln(d["n"] + 1) - jax.scipy.special.gammaln(d["k"] + 1)
            - jax.scipy.special.gammaln(d["n"] - d["k"] + 1))


def _poisson_ll(p, d):
    eta = d["X"] @ p["beta"]
    return d["y"] * eta - jnp.exp(eta) - jax.scipy.special.gammaln(d["y"] + 1)


def _gamma_inverse_ll(p, d):
    mu = 1.0 / (d["X"] @ p["beta"])
    k = p["shape"]
    return (k * jnp.log(k / mu) + (k - 1) * jnp.log(d["y"]) - k * d["y"] / mu
            - jax.scipy.special.gammaln(k))


def glm_problem(name: str) -> Problem:
    """star98 (binomial, logit), cpunish (Poisson, log) or scotland (gamma, inverse link).

    The design matrices are statsmodels' (``sm.add_constant(..., prepend=False)``,
    cpunish with log(VC100k96) as in the statsmodels GLM docs); the references are
    filled in by ``glm_references`` at run time.
    """
    import statsmodels.api as sm

    if name == "star98 binomial":
        star = sm.datasets.star98.load()
        X = np.asarray(sm.add_constant(star.exog, prepend=False), float)
        endog = np.asarray(star.endog, float)          # columns NABOVE (successes), NBELOW (failures)
        data = {"X": jnp.asarray(X), "k": jnp.asarray(endog[:, 0]), "n": jnp.asarray(endog.sum(1))}
        return _glm(name, _binomial_ll, data, {"beta": np.zeros(X.shape[1])},
                    "statsmodels.datasets.star98: GLM(endog=[NABOVE, NBELOW], add_constant(exog), Binomial())",
                    sm.GLM(endog, X, family=sm.families.Binomial()))
    if name == "cpunish Poisson":
        cp = sm.datasets.cpunish.load()
        exog = np.asarray(cp.exog, float).copy()
        exog[:, 3] = np.log(exog[:, 3])
        X = np.asarray(sm.add_constant(exog, prepend=False), float)
        y = np.asarray(cp.endog, float)
        return _glm(name, _poisson_ll, {"X": jnp.asarray(X), "y": jnp.asarray(y)},
                    {"beta": np.zeros(X.shape[1])},
                    "statsmodels.datasets.cpunish: GLM(EXECUTIONS, add_constant(exog, log VC100k96), Poisson())",
                    sm.GLM(y, X, family=sm.families.Poisson()))
    if name == "scotland gamma":
        sc = sm.datasets.scotland.load()
        X = np.asarray(sm.add_constant(sc.exog, prepend=False), float)
        y = np.asarray(sc.endog, float)
        beta0 = np.zeros(X.shape[1])
        beta0[-1] = 1.0 / y.mean()                      # intercept-only fit: 1/mean(y) under the inverse link
        shape0 = float(y.mean() ** 2 / y.var())         # method of moments
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")             # statsmodels' DomainWarning on the inverse link
            sm_model = sm.GLM(y, X, family=sm.families.Gamma())
        return _glm(name, _gamma_inverse_ll, {"X": jnp.asarray(X), "y": jnp.asarray(y)},
                    {"beta": beta0, "shape": shape0},
                    "statsmodels.datasets.scotland: GLM(YES, add_constant(exog), Gamma()) (inverse link)",
                    sm_model)
    raise KeyError(name)


def _glm(name, ll, data, start, source, sm_model) -> Problem:
    k = len(start["beta"])
    has_shape = "shape" in start
    spec = {"beta": jnp.asarray(start["beta"])}
    if has_shape:
        spec["shape"] = jm.Positive(start["shape"])

    def negll(z, d):
        p = {"beta": z[:k]}
        if has_shape:
            p["shape"] = jnp.exp(z[k])
        return -jnp.sum(ll(p, d))

    def to_z(p):
        z = list(np.asarray(p["beta"], float))
        return np.array(z + ([np.log(p["shape"])] if has_shape else []), float)

    def from_z(z):
        p = {"beta": np.asarray(z[:k], float)}
        if has_shape:
            p["shape"] = float(np.exp(z[k]))
        return p

    return Problem(
        name=name, family="GLM", source=source, model=jm.Model(ll, spec, name=name), data=data,
        starts=[("start", {kk: np.asarray(v, float) for kk, v in start.items()})],
        to_z=to_z, from_z=from_z, negll=negll, rule="lre",
        reference={"statsmodels_model": sm_model},
        notes="beta start " + ("0" if not has_shape else "(0, ..., 0, 1/mean y); shape start mean^2/var"),
    )


def glm_references(prob: Problem) -> None:
    """statsmodels' estimates and SEs (IRLS to tol 1e-13) as the certified values.

    For the gamma GLM statsmodels estimates the dispersion by Pearson's chi2; the
    reference shape is the MLE of the shape given statsmodels' means (scipy
    root-finding on its score), and the reference SEs are statsmodels' with the scale
    fixed at 1/shape, which is what the full MLE's information gives.
    """
    from scipy import optimize, special

    sm_model = prob.reference["statsmodels_model"]
    res = sm_model.fit(tol=1e-13, maxiter=1000)
    beta = np.asarray(res.params, float)
    prob.certified = {"beta": beta}
    prob.certified_se = {"beta": np.asarray(res.bse, float)}
    prob.reference["statsmodels_llf"] = float(res.llf)
    if "shape" in prob.model.spec.leaf_names:
        y = np.asarray(sm_model.endog, float)
        mu = np.asarray(res.fittedvalues, float)
        c = np.mean(np.log(y / mu) - y / mu)        # score: log k - digamma(k) + 1 + c = 0
        shape = optimize.brentq(lambda kk: np.log(kk) - special.digamma(kk) + 1 + c, 1e-3, 1e8, xtol=1e-14, rtol=1e-15)
        res_s = sm_model.fit(tol=1e-13, maxiter=1000, scale=1.0 / shape)
        prob.certified["shape"] = shape
        prob.certified_se = {"beta": np.asarray(res_s.bse, float)}


# --------------------------------------------------------------------------- ZIP and beta
def zip_problem(n: int = 500, rate: float = 3.0) -> Problem:
    """Zero-inflated Poisson fitted to plain Poisson data: the MLE of the inflation is 0.

    Seeds are tried from 0 upwards until the sample has fewer zeros than its own
    Poisson fit predicts (n0 < n exp(-ybar)): then the score for the inflation at
    pi = 0 is negative, the supremum sits on the boundary pi = 0 (logit -> -inf) and
    equals the Poisson log-likelihood at lambda = ybar.
    """
    from scipy.special import gammaln

    for seed in range(100):
        y = np.random.default_rng(seed).poisson(rate, n).astype(float)
        if np.sum(y == 0) < n * np.exp(-y.mean()):
            break
    ybar = y.mean()
    sup = float(np.sum(y * np.log(ybar) - ybar - gammaln(y + 1)))

    def loglik(p, d):
        lam = jnp.exp(p["log_rate"])
        log_pi = jax.nn.log_sigmoid(p["logit_pi"])
        log_1mpi = jax.nn.log_sigmoid(-p["logit_pi"])
        pois = d["y"] * p["log_rate"] - lam - jax.scipy.special.gammaln(d["y"] + 1)
        return jnp.where(d["y"] == 0, jnp.logaddexp(log_pi, log_1mpi - lam), log_1mpi + pois)

    starts = [("pi=0.5", {"log_rate": float(np.log(ybar)), "logit_pi": 0.0}),
              ("pi=0.05", {"log_rate": float(np.log(ybar)), "logit_pi": float(np.log(0.05 / 0.95))})]
    model = jm.Model(loglik, dict(starts[0][1]), name="zip")
    return Problem(
        name=ZIP_NAME, family="boundary",
        source=f"simulated: numpy default_rng({seed}).poisson(3, {n})", model=model,
        data={"y": jnp.asarray(y)}, starts=starts,
        to_z=lambda p: np.array([p["log_rate"], p["logit_pi"]], float),
        from_z=lambda z: {"log_rate": float(z[0]), "logit_pi": float(z[1])},
        negll=lambda z, d: -jnp.sum(loglik({"log_rate": z[0], "logit_pi": z[1]}, d)),
        rule="boundary", certified={"log_rate": float(np.log(ybar))}, expected_status="AT_BOUNDARY",
        reference={"sup_loglik": sup, "seed": seed, "n_zero": int(np.sum(y == 0)),
                   "expected_zeros": float(n * np.exp(-ybar))},
        notes="no interior optimum: sup at inflation 0 (logit -> -inf)",
    )


def beta_problem(n: int = 32, a: float = 23.4, b: float = 14.7, seed: int = 0) -> Problem:
    """``jm.fit_distribution('beta', x)`` on 32 draws from Beta(23.4, 14.7).

    The reference is ``scipy.stats.beta.fit(x, floc=0, fscale=1)``. jaxmle starts
    where ``fit_distribution`` starts; scipy's minimisers start from the method of
    moments, in (log a, log b). Every estimate is scored by scipy.stats' log-density,
    independent of JAX's special functions (``jax.scipy.special.betaln`` is off by
    ~5e-10 relative at a ~ 30, b ~ 20: ~5e-7 on this log-likelihood), and jaxmle's
    own reported log-likelihood is compared with it.
    """
    from scipy import stats

    x = np.random.default_rng(seed).beta(a, b, n)
    ra, rb, _, _ = stats.beta.fit(x, floc=0, fscale=1)
    ref_ll = float(np.sum(stats.beta.logpdf(x, ra, rb)))
    mean, var = x.mean(), x.var()
    common = mean * (1 - mean) / var - 1
    mom = {"a": float(mean * common), "b": float((1 - mean) * common)}

    def negll(z, d):
        return -jnp.sum(jax.scipy.stats.beta.logpdf(d["x"], jnp.exp(z[0]), jnp.exp(z[1])))

    return Problem(
        name=BETA_NAME, family="distribution",
        source=f"simulated: numpy default_rng({seed}).beta({a}, {b}, {n}); reference scipy.stats.beta.fit",
        model=None, data={"x": jnp.asarray(x)}, starts=[("default", mom)],
        to_z=lambda p: np.log([p["a"], p["b"]]), from_z=lambda z: {"a": float(np.exp(z[0])), "b": float(np.exp(z[1]))},
        negll=negll, rule="loglik", certified={"a": float(ra), "b": float(rb)},
        reference={"loglik": ref_ll},
        fit=lambda method, start: jm.fit_distribution("beta", x, method=method, warn=False),
        accurate_loglik=lambda p: float(np.sum(stats.beta.logpdf(x, p["a"], p["b"]))),
        notes="jaxmle uses fit_distribution's own start; scipy starts at the method of moments; "
              "log-likelihoods judged with scipy.stats.beta.logpdf",
    )


# --------------------------------------------------------------------------- the suite
QUICK_NIST = ["Misra1a", "Lanczos1", "MGH17", "MGH09", "MGH10", "Eckerle4", "Rat43", "Bennett5"]
QUICK_MGH = ["Rosenbrock", "Freudenstein-Roth", "Powell badly scaled", "Brown badly scaled", "Bard", "Meyer",
             "Osborne 2"]


def problem_names(quick: bool = False, only: list[str] | None = None) -> list[str]:
    """Problem names in table order. ``quick``: 8 hard NIST, 7 MGH, star98, ZIP, beta.

    ``only``: keep names containing one of these substrings (case-insensitive).
    """
    mgh = [d["name"] for d in _mgh_definitions()]
    try:
        import statsmodels  # noqa: F401
        glm = GLM_NAMES
    except ImportError:
        glm = []                                   # statsmodels not installed: no GLM problems
    if quick:
        names = QUICK_NIST + QUICK_MGH + glm[:1]
    else:
        names = NIST_NAMES + mgh + glm
    names = names + [ZIP_NAME, BETA_NAME]
    if only:
        keys = [o.lower() for o in only]
        names = [n for n in names if any(k in n.lower() for k in keys)]
    return names


def build(name: str, quick: bool = False) -> Problem:
    """One problem by name (``quick``: MGH problems from x0 only)."""
    if name in NIST_MEAN:
        return nist_problem(name)
    for d in _mgh_definitions():
        if d["name"] == name:
            return mgh_problem(d, (1.0,) if quick else (1.0, 10.0))
    if name in GLM_NAMES:
        return glm_problem(name)
    if name == ZIP_NAME:
        return zip_problem()
    if name == BETA_NAME:
        return beta_problem()
    raise KeyError(name)
