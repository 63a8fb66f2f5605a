"""adam_jax in the JAX and Optax machinery: jit, scan, vmap, wrappers, Flax."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from tests.helpers import gradient, random_problem, run_optax, trajectory

STEPS = 20


def _params_and_grads(seed=0):
    params, grads = random_problem(STEPS, seed=seed, dtype=np.float32)
    return jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, grads)


def _python_loop(optimizer, params, grads, update):
    state = optimizer.init(params)
    trajectory = []
    for t in range(STEPS):
        raw = jax.tree.map(lambda g, t=t: g[t], grads)
        updates, state = update(gradient(raw, params), state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
    return jax.tree.map(lambda *xs: np.stack(xs), *trajectory), state


class VariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_same_with_and_without_jit(self):
        optimizer = adam_jax.amsgrad(1e-2, weight_decay=0.1)
        params, grads = _params_and_grads()
        update = self.variant(optimizer.update)
        trajectory, state = _python_loop(optimizer, params, grads, update)
        scanned = run_optax(optimizer, params, grads)
        chex.assert_trees_all_close(trajectory, scanned, rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, optimizer.init(params))


def test_vmap_over_independent_problems():
    optimizer = adam_jax.adam(1e-2, amsgrad=True, convention="optax")
    problems = [_params_and_grads(seed) for seed in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *problems)
    batched = jax.vmap(lambda p, g: trajectory(optimizer, p, g))(*stacked)
    for i, (params, grads) in enumerate(problems):
        single = run_optax(optimizer, params, grads)
        chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], batched), single, rtol=1e-6)


@pytest.mark.parametrize("factory", [adam_jax.adam, adam_jax.amsgrad, adam_jax.adamw])
def test_inject_hyperparams_traced_values(factory):
    params, grads = _params_and_grads()
    hp = dict(learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6)
    injected = optax.inject_hyperparams(factory)(**hp)
    expected = run_optax(factory(**hp), params, grads)
    chex.assert_trees_all_close(run_optax(injected, params, grads), expected, rtol=1e-6)

    # Changing an injected value changes the trajectory, without recompiling.
    state = injected.init(params)
    state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    raw = jax.tree.map(lambda g: g[0], grads)
    updates, _ = jax.jit(injected.update)(gradient(raw, params), state, params)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))


def test_multisteps_accumulates():
    params, grads = _params_and_grads()
    every = 2
    optimizer = optax.MultiSteps(adam_jax.amsgrad(1e-2), every_k_schedule=every)
    state = optimizer.init(params)
    reference = adam_jax.amsgrad(1e-2)
    ref_state = reference.init(params)
    g = [jax.tree.map(lambda x, t=t: x[t], grads) for t in range(every)]
    for t in range(every):
        updates, state = jax.jit(optimizer.update)(g[t], state, params)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, *g)
    expected, _ = reference.update(mean, ref_state, params)
    chex.assert_trees_all_close(updates, expected, rtol=1e-6)


def test_apply_if_finite_skips_nan_steps():
    params, grads = _params_and_grads()
    adam = adam_jax.adam(1e-2)
    optimizer = optax.apply_if_finite(adam, max_consecutive_errors=5)
    state = optimizer.init(params)
    bad = jax.tree.map(lambda g: jnp.full_like(g[0], jnp.nan), grads)
    updates, state = jax.jit(optimizer.update)(bad, state, params)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
    assert int(adam.epsilon_report(state)["dominated_fraction"]) == 1
    good = jax.tree.map(lambda g: g[0], grads)
    updates, state = jax.jit(optimizer.update)(good, state, params)
    assert all(bool(jnp.any(u != 0)) for u in jax.tree.leaves(updates))


def test_flax_nnx_optimizer():
    nnx = pytest.importorskip("flax.nnx", reason="flax is in the test extra")
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    tx = adam_jax.amsgrad(1e-2)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.sum((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(50)]
    assert losses[-1] < 0.5 * losses[0]
    report = adam_jax.epsilon_report(optimizer.opt_state, tx)
    assert 0.0 <= float(report["dominated_fraction"]) <= 1.0


def test_jitted_update_does_not_recompile():
    optimizer = adam_jax.amsgrad(1e-2)
    params, grads = _params_and_grads()
    update = jax.jit(optimizer.update)
    state = optimizer.init(params)
    for t in range(3):
        raw = jax.tree.map(lambda g, t=t: g[t], grads)
        _, state = update(raw, state, params)
    assert update._cache_size() == 1


def test_state_structure_and_dtypes():
    params = {"a": jnp.ones((2, 3), jnp.float16), "b": jnp.ones(4, jnp.bfloat16)}
    state = adam_jax.scale_by_adam(amsgrad=True).init(params)
    assert state.count.dtype == jnp.int32 and state.count.shape == ()
    for tree in (state.mu, state.nu, state.nu_max):
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(tree))
    state = adam_jax.scale_by_adam(mu_dtype=jnp.bfloat16, nu_dtype=jnp.float16).init(params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state.mu))
    assert all(x.dtype == jnp.float16 for x in jax.tree.leaves(state.nu))
    assert state.nu_max is None
    assert jax.tree.structure(state.mu) == jax.tree.structure(params)


def test_float64_state_with_x64(x64):
    params = jnp.ones(3, jnp.float64)
    tx = adam_jax.scale_by_adam(amsgrad=True)
    step, state = tx.update(jnp.ones(3, jnp.float64), tx.init(params))
    assert step.dtype == state.mu.dtype == state.nu_max.dtype == jnp.float64


def test_count_saturates_instead_of_wrapping():
    tx = adam_jax.scale_by_adam()
    params = jnp.ones(2)
    state = tx.init(params)._replace(count=jnp.asarray(jnp.iinfo(jnp.int32).max, jnp.int32))
    step, state = tx.update(jnp.ones(2), state)
    assert int(state.count) == jnp.iinfo(jnp.int32).max
    assert bool(jnp.all(jnp.isfinite(step)))


def test_tree_mismatch_raises():
    tx = adam_jax.adam()
    state = tx.init({"a": jnp.ones(2)})
    with pytest.raises(ValueError, match="tree does not match"):
        tx.update({"b": jnp.ones(2)}, state, {"b": jnp.ones(2)})
