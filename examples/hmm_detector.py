"""A detector that switches between a quiet and an active state: a two-state Poisson HMM.

Each of 400 detector channels counts events per minute for 5 to 10 hours. A channel is
quiet most of the time (a couple of background counts a minute) and now and then
active (a source flares: about ten counts a minute) for a while. Which state it is in
is hidden; the counts are what we see. One batched EM (Baum-Welch) fit estimates every
channel's rates and switching probabilities, Viterbi decoding says when each channel was
active, and the standard errors come from the exact forward-algorithm Hessian.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle as jm

jax.config.update("jax_enable_x64", True)

rng = np.random.default_rng(7)
n_channels = 400
quiet = rng.uniform(1.0, 3.0, n_channels)           # background counts / minute
active = rng.uniform(8.0, 14.0, n_channels)         # counts / minute during a flare
p_flare = rng.uniform(0.02, 0.05, n_channels)       # P(quiet -> active) per minute
p_calm = rng.uniform(0.05, 0.15, n_channels)        # P(active -> quiet) per minute

counts, states = [], []
for c in range(n_channels):
    T = int(rng.integers(300, 601))
    s = np.zeros(T, int)
    u = rng.random(T)
    for t in range(1, T):
        s[t] = (u[t] < p_flare[c]) if s[t - 1] == 0 else (u[t] >= p_calm[c])
    counts.append(rng.poisson(np.where(s == 1, active[c], quiet[c])))
    states.append(s)

# Ragged recordings: pad to the longest and mask the padding (skipped in the recursion).
x, mask = jm.pad(counts)
# With one recording per channel the MLE of the starting state is all-or-nothing (a
# boundary); holding it uniform keeps every fit an interior optimum with valid SEs.
model = jm.models.hmm(2, "poisson", start="uniform")
guess = {"rates": jnp.array([1.0, 10.0]), "trans": {"0": jnp.array([0.95, 0.05]), "1": jnp.array([0.1, 0.9])}}
t0 = time.perf_counter()
# EM crawls where a channel's two states are barely told apart (one that never flared):
# the cap ends such fits as MAX_ITER instead of letting the whole batch wait for them.
batch = jm.fit_batch(model, {"x": x}, method="em", mask=mask, init=guess, max_iter=500)
batch = model.sort_states(batch)        # state 0 = quiet, 1 = active in every channel
print(f"{n_channels} channels fitted by EM in {time.perf_counter() - t0:.1f} s (including compilation): "
      f"{batch.status_counts()}")

rates = np.asarray(batch.params["rates"])
print(f"quiet rate : median error {np.median(np.abs(rates[:, 0] - quiet)):.3f} counts/min, "
      f"median std err {np.nanmedian(np.asarray(batch.stderr['rates'])[:, 0]):.3f}")
print(f"active rate: median error {np.median(np.abs(rates[:, 1] - active)):.3f} counts/min, "
      f"median std err {np.nanmedian(np.asarray(batch.stderr['rates'])[:, 1]):.3f}")

paths = np.asarray(model.viterbi(batch))
m = np.asarray(mask)
agree = np.mean([np.mean(paths[c, m[c]] == states[c]) for c in range(n_channels)])
print(f"Viterbi decoding matches the true hidden state in {100 * agree:.1f}% of minutes")

print("\nchannel 0:")
print(batch[0].summary())
s0 = paths[0, m[0]]
starts = np.flatnonzero(np.diff(np.concatenate([[0], s0])) == 1)
ends = np.flatnonzero(np.diff(np.concatenate([s0, [0]])) == -1)
print(f"channel 0 was active in {len(starts)} episodes, {100 * s0.mean():.1f}% of its {len(s0)} minutes; "
      f"first ones (minutes): {[(int(a), int(b) + 1) for a, b in zip(starts[:4], ends[:4])]}")
A = np.asarray(model.transition_matrix(batch[0].params))
print(f"mean flare length from the fit: {1 / A[1, 0]:.1f} minutes (true {1 / p_calm[0]:.1f}); "
      f"mean quiet spell: {1 / A[0, 1]:.1f} minutes (true {1 / p_flare[0]:.1f})")
post = np.asarray(model.posterior(batch[0]))
print(f"P(active) at minute 0..9 of channel 0: {np.round(post[:10, 1], 3).tolist()}")
