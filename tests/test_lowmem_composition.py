"""Low-memory Adam composed with the rest: orbax checkpoints, optax wrappers, masks.

Each composition is compared with the same optimizer without it (or, for a checkpoint, with
the uninterrupted run), bit for bit where the arithmetic is the same.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax

ocp = pytest.importorskip("orbax.checkpoint")

QUANTIZED = adam_jax.BlockQuantization(block_size=64, min_size=256)


def _params(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(12, 200)), dtype),  # quantized moments
        "b": jnp.asarray(rng.normal(size=(7,)), dtype),  # small: float32 moments
    }


def _grads(params, step):
    return jax.tree.map(
        lambda p: jnp.sin(p.astype(jnp.float32) * (step + 1)).astype(p.dtype), params
    )


def _steps(optimizer, params, state, first, last):
    @jax.jit
    def step(params, state, t):
        updates, state = optimizer.update(_grads(params, t), state, params)
        return optax.apply_updates(params, updates), state

    for t in range(first, last):
        params, state = step(params, state, t)
    return params, state


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "param_rounding, dtype",
    [(None, jnp.float32), ("stochastic", jnp.bfloat16), ("compensated", jnp.bfloat16)],
)
def test_an_orbax_checkpoint_resumes_bit_for_bit(tmp_path, param_rounding, dtype):
    """8-bit moments (codes and scales), the rounding key or error buffer: saved, restored into
    the abstract state, and the run goes on as if it had never stopped."""
    seed = 3 if param_rounding == "stochastic" else None
    optimizer = adam_jax.adamw(
        1e-2, quantized_state=QUANTIZED, param_rounding=param_rounding, rounding_seed=seed
    )
    params = _params(dtype)
    uninterrupted = _steps(optimizer, params, optimizer.init(params), 0, 6)

    halfway = _steps(optimizer, params, optimizer.init(params), 0, 3)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", halfway)
    checkpointer.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, halfway)
    restored = checkpointer.restore(tmp_path / "ckpt", abstract)
    _assert_trees_equal(restored, halfway)
    resumed = _steps(optimizer, *restored, 3, 6)
    _assert_trees_equal(resumed, uninterrupted)
    assert not np.array_equal(np.asarray(uninterrupted[0]["w"]), np.asarray(halfway[0]["w"]))


def test_inject_hyperparams_gives_the_same_bits():
    params = _params()
    plain = adam_jax.adamw(1e-2, weight_decay=0.1, quantized_state=QUANTIZED)
    injected = optax.inject_hyperparams(adam_jax.adamw)(
        learning_rate=1e-2, weight_decay=0.1, quantized_state=QUANTIZED
    )
    new, _ = _steps(plain, params, plain.init(params), 0, 4)
    again, _ = _steps(injected, params, injected.init(params), 0, 4)
    _assert_trees_equal(new, again)


def test_a_weight_decay_mask_decays_only_the_masked_leaves():
    """Masked: each leaf steps as adamw (w) or as adam with no decay (b) does on its own."""
    params = _params()
    masked = adam_jax.adamw(
        1e-2, weight_decay=0.5, quantized_state=QUANTIZED, mask={"w": True, "b": False}
    )
    decayed = adam_jax.adamw(1e-2, weight_decay=0.5, quantized_state=QUANTIZED)
    undecayed = adam_jax.adamw(1e-2, weight_decay=0.0, quantized_state=QUANTIZED)
    new, _ = _steps(masked, params, masked.init(params), 0, 4)
    w, _ = _steps(decayed, params, decayed.init(params), 0, 4)
    b, _ = _steps(undecayed, params, undecayed.init(params), 0, 4)
    _assert_trees_equal(new, {"w": w["w"], "b": b["b"]})
    assert not np.array_equal(np.asarray(w["b"]), np.asarray(b["b"]))  # the mask mattered


def test_multi_steps_takes_one_step_on_the_mean_gradient():
    params = _params()
    inner = adam_jax.adam(1e-2, quantized_state=QUANTIZED)
    accumulated = optax.MultiSteps(inner, every_k_schedule=2)
    state = accumulated.init(params)
    for t in range(2):
        updates, state = accumulated.update(_grads(params, t), state, params)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, _grads(params, 0), _grads(params, 1))
    expected, _ = inner.update(mean, inner.init(params), params)
    for x, y in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)
    assert float(jnp.max(jnp.abs(updates["w"]))) > 1e-3
