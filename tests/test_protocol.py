"""The optimizer protocol: a toy method plugged in through the registry, typed states,
methods reporting their own failure, evaluation counts, and the no-retrace guarantee."""

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import jaxmle as jm
from jaxmle import cli
from jaxmle.optimizers import Optimizer, StepInfo, info
from helpers import normal_model

X = jnp.array([240.0, 255.0, 261.0, 248.0, 271.0])


class ToyState(NamedTuple):
    z: jax.Array
    f: jax.Array
    grad: jax.Array


@dataclasses.dataclass(frozen=True)
class Toy(Optimizer):
    """Fixed-step gradient descent: the smallest complete method."""

    learning_rate: float = 0.5
    name = "toy"
    default_max_iter = 5000

    def init(self, objective, z0, data):
        f, g = jax.value_and_grad(objective)(z0, data)
        return ToyState(z0, f, g), info(1, 1, 0)

    def step(self, objective, state, data, active=True):
        z = state.z - self.learning_rate * state.grad
        f, g = jax.value_and_grad(objective)(z, data)
        return ToyState(z, f, g), info(1, 1, 0)


@pytest.fixture
def toy_registered():
    jm.optimizers.register("toy", Toy)       # the one registry line a new method needs
    yield
    del jm.optimizers.METHODS["toy"]


def test_toy_method_through_the_registry(toy_registered):
    x = jnp.array([240.0, 255.0, 261.0, 248.0, 271.0])
    model = jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], 10.0), {"mu": 0.0})
    res = jm.fit(model, x, method="toy")
    assert res.method == "toy" and res.status == jm.Status.CONVERGED
    np.testing.assert_allclose(res.params["mu"], 255.0, rtol=1e-7)   # |grad| <= 10 gtol |f|
    # The driver adds up what each step reports: one f and one gradient per call.
    assert res.evals.tolist() == [int(res.n_iter) + 1, int(res.n_iter) + 1, 0]
    batch = jm.fit_batch(model, jnp.stack([x, x + 1.0]), method="toy")
    np.testing.assert_allclose(batch.params["mu"], [255.0, 256.0], rtol=1e-7)
    # bench and the CLI read the same registry.
    assert "toy" in jm.optimizers.general_methods()
    table = jm.bench.compare(model, x, methods=None, repeats=1)
    assert "toy" in [r["method"] for r in table.rows]
    parser = cli.build_parser()
    assert parser.parse_args(["demo", "--method", "toy"]).method == "toy"


def test_register_rejects_non_optimizers():
    with pytest.raises(TypeError, match="Optimizer subclass"):
        jm.optimizers.register("bad", object)
    with pytest.raises(ValueError, match="reserved"):
        jm.optimizers.register("auto", Toy)


@dataclasses.dataclass(frozen=True)
class Quitter(Toy):
    """Gives up at once with a code of its own choosing."""

    name = "quitter"

    def step(self, objective, state, data, active=True):
        new, _ = super().step(objective, state, data, active)
        return new, info(1, 1, 0, failure=jm.Status.NONFINITE)


def test_a_method_reports_its_own_failure():
    model, x = normal_model(), X
    with pytest.warns(jm.ConvergenceWarning, match="NONFINITE"):
        res = jm.fit(model, x, method=Quitter())
    assert res.status == jm.Status.NONFINITE and int(res.n_iter) == 1


@pytest.mark.parametrize("name", ["newton", "bfgs", "lbfgs", "adam", "gd"])
def test_every_method_follows_the_protocol(name):
    model, x = normal_model(), X
    opt = jm.optimizers.resolve(name, model.n_free, model)
    spec = model.spec
    z0 = spec.to_z(spec.natural_leaves(None), jnp.float64)
    bundle = jm.optimizers.FitData([], x, None)

    def objective(z, d):
        return -model.logpost(spec.to_params(z, d.fixed), d.data) / x.shape[0]

    state, inf = opt.init(objective, z0, bundle)
    assert state._fields[:3] == ("z", "f", "grad") and isinstance(inf, StepInfo)
    new, inf = jax.jit(lambda s: opt.step(objective, s, bundle, True))(state)
    assert type(new) is type(state) and isinstance(inf, StepInfo)
    assert inf.evals.shape == (3,) and inf.evals.dtype == jnp.int32 and inf.failure.shape == ()
    assert float(new.f) < float(state.f)
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)


def test_em_needs_a_model_with_an_update():
    model, x = normal_model(), X
    with pytest.raises(ValueError, match="em_step"):
        jm.fit(model, x, method="em")


def _fit_rounds(loglik, rounds):
    model = jm.Model(loglik, {"mu": 0.0, "sigma": jm.Positive(1.0)})
    key = jax.random.key(3)
    for i in range(rounds):
        xs = jax.random.normal(jax.random.fold_in(key, i), (50, 20)) + i
        jm.fit_batch(model, xs)
        jm.fit(model, xs[0])


def test_no_retrace_for_new_data_of_the_same_shape():
    # Count the traces of one round (the output check, the batched stages, the single
    # fit); then four rounds of new data of the same shapes may not trace once more.
    count = []

    def counted(p, x):
        count.append(1)
        return stats.norm.logpdf(x, p["mu"], p["sigma"])

    _fit_rounds(counted, 1)

    @chex.assert_max_traces(n=len(count))
    def loglik(p, x):
        return stats.norm.logpdf(x, p["mu"], p["sigma"])

    _fit_rounds(loglik, 4)
    assert len(count) < 40            # a bounded number of traces per compiled program


def test_results_are_immutable():
    res = jm.fit(normal_model(), X)
    with pytest.raises(AttributeError, match="immutable"):
        res.status = 0


def _start_model():
    return jm.Model(lambda p, x: stats.norm.logpdf(x, p["mu"], p["sigma"]), {"mu": 0.0, "sigma": jm.Positive(1.0)})


def test_newton_starts_inside_its_loop_with_init_s_results():
    # The trust region makes its start from the loop's first evaluation (folds_start);
    # the line-search variant starts from init. Both must agree with the start that
    # init gives: a start that is already the optimum stops at once, with one pass.
    model = _start_model()
    best = jm.fit(model, X)
    for method in ("newton", jm.optimizers.Newton(globalization="line-search")):
        again = jm.fit(model, X, init=best.params, method=method)
        assert again.converged and int(again.n_iter) == 0
        np.testing.assert_array_equal(np.asarray(again.evals), [1, 1, 1])
    # max_trials=0: no step can be tried, but the start is still evaluated, so the fit
    # fails honestly instead of reporting the placeholder as an optimum.
    res = jm.fit(model, X, method=jm.optimizers.Newton(max_trials=0))
    assert res.status == jm.Status.LINESEARCH_FAILED and int(res.n_iter) == 1
    np.testing.assert_array_equal(np.asarray(res.evals), [1, 1, 1])
    np.testing.assert_allclose(float(res.loglik), float(jnp.sum(stats.norm.logpdf(X, 0.0, 1.0))), rtol=1e-12)


def test_a_newton_subclass_keeps_its_own_init_and_step():
    @dataclasses.dataclass(frozen=True)
    class BigStart(jm.optimizers.Newton):
        def init(self, objective, z0, data):
            state, inf = super().init(objective, z0, data)
            return state._replace(radius=1e6 * state.radius), inf

    @dataclasses.dataclass(frozen=True)
    class Logged(jm.optimizers.Newton):
        def step(self, objective, state, data, active=True):       # the documented signature
            return super().step(objective, state, data, active)

    model = _start_model()
    plain = jm.fit(model, X)
    logged = jm.fit(model, X, method=Logged())
    assert logged.converged and int(logged.n_iter) == int(plain.n_iter)
    np.testing.assert_allclose(float(logged.loglik), float(plain.loglik), rtol=1e-12)
    big = jm.fit(model, X, method=BigStart())
    assert big.converged and int(big.n_iter) != int(plain.n_iter)     # its init was used
    np.testing.assert_allclose(float(big.loglik), float(plain.loglik), rtol=1e-10)
