"""Adam-atan2 against a float64 NumPy reference, and its scale invariance."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from tests.helpers import random_problem, run_optax, run_reference


class ReferenceAdamAtan2:
    """Everett et al. (2024)'s Adam-atan2 for one array, in float64 NumPy."""

    def __init__(self, shape, *, lr, b1, b2, a, b, amsgrad, wd, decoupled, maximize):
        self.lr, self.b1, self.b2, self.a, self.b = lr, b1, b2, a, b
        self.amsgrad, self.wd, self.decoupled, self.maximize = amsgrad, wd, decoupled, maximize
        self.t = 0
        self.m, self.v, self.v_max = np.zeros(shape), np.zeros(shape), np.zeros(shape)

    def step(self, p, g):
        self.t += 1
        g = -g if self.maximize else g
        if self.wd and not self.decoupled:
            g = g + self.wd * p
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        self.v_max = np.maximum(self.v_max, self.v)
        r = self.v_max if self.amsgrad else self.v
        m_hat = self.m / (1 - self.b1**self.t)
        v_hat = r / (1 - self.b2**self.t)
        new_p = p - self.lr * self.a * np.arctan2(m_hat, self.b * np.sqrt(v_hat))
        if self.wd and self.decoupled:
            new_p = new_p - self.lr * self.wd * p
        return new_p


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize(
    "weight_decay, decoupled, maximize",
    [(0.0, False, False), (0.1, False, True), (0.1, True, False)],
    ids=["plain", "coupled-maximize", "decoupled"],
)
def test_matches_float64_reference(x64, amsgrad, weight_decay, decoupled, maximize):
    hp = dict(b1=0.8, b2=0.99, a=1.1, b=0.7, amsgrad=amsgrad)
    params, grads = random_problem(300, seed=1)
    optimizer = adam_jax.adam_atan2(
        1e-2,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled,
        maximize=maximize,
        **hp,
    )
    actual = run_optax(optimizer, params, grads)

    def reference(shape):
        return ReferenceAdamAtan2(
            shape, lr=1e-2, wd=weight_decay, decoupled=decoupled, maximize=maximize, **hp
        )

    expected = run_reference(reference, params, grads)
    for k, e in expected.items():
        # Relative to the leaf's scale over the run: a scalar param crossing 0 would
        # make a per-step relative error meaningless.
        assert np.max(np.abs(actual[k] - e)) <= 1e-12 * np.max(np.abs(e)), k


def _updates(optimizer, grads):
    """The updates of ``optimizer`` along a sequence of gradients (leading axis)."""

    def step(state, g):
        updates, state = optimizer.update(g, state)
        return state, updates

    return jax.jit(lambda gs: jax.lax.scan(step, optimizer.init(gs[0]), gs)[1])(grads)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_invariant_to_gradient_scale_where_adam_is_not(amsgrad):
    grads = jax.random.normal(jax.random.key(0), (20, 50), jnp.float32)
    grads = grads * jnp.linspace(3.0, 0.5, 20)[:, None]  # shrinking, so AMSGrad's max acts
    atan2 = adam_jax.scale_by_adam_atan2(amsgrad=amsgrad)
    adam = adam_jax.scale_by_adam(eps=1e-8, amsgrad=amsgrad)
    for scale in (1e-15, 1e15):
        np.testing.assert_allclose(
            _updates(atan2, grads * scale), _updates(atan2, grads), rtol=1e-5, atol=1e-6
        )
    # Adam's eps takes over at 1e-15 (steps ~1e-7 instead of ~1).
    adam_small = np.asarray(_updates(adam, grads * 1e-15))
    assert np.max(np.abs(adam_small)) < 1e-6
    assert np.max(np.abs(np.asarray(_updates(adam, grads)))) > 0.1


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_zero_gradient_gives_zero_step(x64, dtype, amsgrad):
    tx = adam_jax.adam_atan2(0.1, amsgrad=amsgrad)
    params = jnp.ones(5, dtype)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(jnp.zeros(5, dtype), state, params)
        assert updates.dtype == dtype
        np.testing.assert_array_equal(np.asarray(updates, np.float64), 0.0)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_16_bit_steps_are_finite_and_float32_inside(dtype):
    tiny = float(jnp.finfo(dtype).smallest_subnormal)
    huge = float(jnp.finfo(dtype).max)
    extreme = [1e-15, -1e15] if dtype == jnp.bfloat16 else []  # beyond float16's range
    grads = jnp.array([0.0, tiny, -tiny, 1e-3, -1.0, huge, -huge, *extreme], dtype)
    tx = adam_jax.scale_by_adam_atan2(amsgrad=True)
    state = tx.init(grads)
    assert {x.dtype for x in jax.tree.leaves(state) if x.ndim} == {jnp.dtype(jnp.float32)}
    for scale in (1.0, 0.5, 0.0):
        step, state = jax.jit(tx.update)(grads * jnp.asarray(scale, dtype), state)
        assert step.dtype == dtype
        assert np.all(np.isfinite(np.asarray(step, np.float32)))
        assert np.all(np.abs(np.asarray(step, np.float32)) <= 1.27 * math.pi / 2 + 1e-2)
    # At step 1 a gradient steps by a * pi / 4 whatever its size, as long as (1 - b2) g^2
    # is a normal float32 (always so for float16; bfloat16 reaches beyond).
    first, _ = tx.update(grads, tx.init(grads))
    g = np.asarray(grads, np.float32)
    in_range = (np.abs(g) > 1e-17) & (np.abs(g) < 1e19)
    assert np.sum(in_range) == (6 if dtype == jnp.float16 else 4)
    np.testing.assert_allclose(
        np.asarray(first, np.float32)[in_range],
        np.sign(g[in_range]) * 1.27 * math.pi / 4,
        rtol=1e-2,
    )


def test_inject_hyperparams_vmap_and_jit_agree():
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros(3)}
    grads = jax.tree.map(
        lambda p: jax.random.normal(jax.random.key(1), (10, *p.shape)) + p[None], params
    )

    def run(optimizer, params):
        def step(carry, g):
            p, state = carry
            updates, state = optimizer.update(g, state, p)
            return (optax.apply_updates(p, updates), state), None

        return jax.lax.scan(step, (params, optimizer.init(params)), grads)[0][0]

    kwargs = dict(a=1.5, b=2.0, weight_decay=0.1, decoupled_weight_decay=True)
    plain = run(adam_jax.adam_atan2(0.05, **kwargs), params)
    injected = optax.inject_hyperparams(adam_jax.adam_atan2)(learning_rate=0.05, **kwargs)
    chex.assert_trees_all_close(jax.jit(run, static_argnums=0)(injected, params), plain, rtol=1e-6)
    # vmap over learning rates: each row is the run with that learning rate.
    lrs = jnp.array([0.0, 0.05])
    batched = jax.vmap(
        lambda lr: run(optax.inject_hyperparams(adam_jax.adam_atan2)(lr, **kwargs), params)
    )(lrs)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[1], batched), plain, rtol=1e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], batched), params)


def test_state_is_adam_state_and_epsilon_report_reads_it():
    tx = adam_jax.adam_atan2(1e-3, amsgrad=True)
    params = jnp.zeros(4)
    _, state = tx.update(jnp.array([2.0, -2.0, 1e-3, 0.0]), tx.init(params), params)
    adam_state = state[0]
    assert isinstance(adam_state, adam_jax.ScaleByAdamState)
    report = adam_jax.epsilon_report(state, adam_jax.AdamSpec(amsgrad=True))
    # sqrt(v / (1 - b2)) = |g| at step 1; eps dominates only the zero coordinate.
    assert float(report["dominated_fraction"]) == 0.25
    np.testing.assert_allclose(float(report["sqrt_term_q50"]), (2.0 + 1e-3) / 2, rtol=1e-5)


def test_complex_params_raise():
    with pytest.raises(ValueError, match="real params"):
        adam_jax.scale_by_adam_atan2().init(jnp.zeros(2, jnp.complex64))
