"""Every example runs and prints what its story promises."""

import pathlib
import subprocess
import sys

import pytest

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


SLOW = {"hmm_detector.py"}   # ~30 s (400 channels); tests/test_hmm.py covers the HMM itself


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(EXPECT)])
def test_example_runs(name):
    out = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for text in EXPECT[name]:
        assert text in out.stdout, f"{text!r} missing from {name} output:\n{out.stdout[-1500:]}"
