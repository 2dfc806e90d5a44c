"""Naive Bayes and a bigram language model: maximum likelihood by counting.

The tutorial's table: naive Bayes is fitted by "empirical frequency estimates", and a
language model maximises sum log P(token | context). Both MLEs are closed forms (class
frequencies, class means and variances, count ratios), so ``model.fit`` returns them
with standard errors in milliseconds, compiling nothing.
"""

import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import jaxmle as jm  # noqa: E402

# -- Gaussian naive Bayes: three species, four measurements --------------------------
rng = np.random.default_rng(0)
centres = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
y = rng.integers(0, 3, 300)
X = rng.normal(centres[y], 0.5)

model = jm.models.gaussian_nb(n_features=4, n_classes=3)
model.fit({"X": X, "y": y})                     # first call imports and warms NumPy paths
t = time.perf_counter()
res = model.fit({"X": X, "y": y})
ms = 1e3 * (time.perf_counter() - t)
print(f"Gaussian naive Bayes fitted in closed form in {ms:.1f} ms (status {res.status})")
print(f"class priors = {np.round(res.params['priors'], 3)}")
print(f"means[0] = {np.round(res.params['means'][0], 3)} +/- {np.round(res.stderr['means'][0], 3)}")
proba = model.predict_proba(res.params, {"X": X[:3]})
print("posteriors of the first three flowers:\n", np.round(proba, 4))
accuracy = np.mean(model.predict(res.params, {"X": X}) == y)
print(f"training accuracy = {accuracy:.3f}")
try:
    from sklearn.naive_bayes import GaussianNB
except ImportError:
    pass
else:
    sk = GaussianNB(var_smoothing=0.0).fit(X, y)
    gap = np.abs(model.predict_proba(res.params, {"X": X}) - sk.predict_proba(X)).max()
    print(f"max |posterior - sklearn GaussianNB| = {gap:.1e}")

# -- A bigram language model: P(next | previous) = count ratios -------------------------
text = ("<s> the cat sat on the mat </s> <s> the dog sat on the log </s> "
        "<s> the cat saw the dog </s> <s> a dog sat on a mat </s>").split()
prev_vocab = sorted(set(text[:-1]) - {"</s>"})
next_vocab = sorted(set(text[1:]) - {"<s>"})
pairs = [(a, b) for a, b in zip(text[:-1], text[1:]) if a != "</s>"]
prev = np.array([prev_vocab.index(a) for a, _ in pairs])
nxt = np.eye(len(next_vocab))[[next_vocab.index(b) for _, b in pairs]]   # one-hot next token

# A bigram model is a multinomial naive Bayes with the previous token as the class:
# each class's feature probabilities are the transition probabilities.
lm = jm.models.multinomial_nb(n_features=len(next_vocab), n_classes=len(prev_vocab))
probs = np.stack(lm.closed_form({"X": nxt, "y": prev})["probs"])
the = prev_vocab.index("the")
counts = np.array([sum(1 for a, b in pairs if a == "the" and b == w) for w in next_vocab])
print("P(next | 'the'):", {w: round(float(p), 3) for w, p in zip(next_vocab, probs[the]) if p > 0})
assert np.allclose(probs[the], counts / counts.sum())   # count ratios, exactly
cross_entropy = -np.mean(np.log(probs[prev, nxt.argmax(1)]))
print(f"bigram MLE = count ratios; training cross-entropy = {cross_entropy:.3f} nats/token")
# Unseen bigrams get probability 0 (the MLE sits on the simplex edge): add-one smoothing.
lm_smooth = jm.models.multinomial_nb(len(next_vocab), len(prev_vocab), alpha=1.0)
res_lm = lm_smooth.fit({"X": nxt, "y": prev})
p_smooth = np.stack(res_lm.params["probs"])
print(f"add-one smoothing: P('log' | 'cat') = {p_smooth[prev_vocab.index('cat'), next_vocab.index('log')]:.3f} "
      f"(MLE {probs[prev_vocab.index('cat'), next_vocab.index('log')]:.0f}); status {res_lm.status}")
