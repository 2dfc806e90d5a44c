"""Ready models: each a plain ``jm.Model`` usable with fit, fit_batch and the inference tools."""

from .regression import linear, logistic, poisson, probit, softmax
from .mixture import gaussian_mixture
from .survival import cox
from .nonlinear import nonlinear_regression
from .hmm import HMM, hmm
from .naive_bayes import NaiveBayes, bernoulli_nb, gaussian_nb, multinomial_nb

__all__ = ["linear", "logistic", "probit", "poisson", "softmax", "cox", "gaussian_mixture",
           "nonlinear_regression", "hmm", "HMM", "gaussian_nb", "bernoulli_nb", "multinomial_nb",
           "NaiveBayes"]
