"""16-bit params: float32 arithmetic inside, where PyTorch and optax give NaN."""

import jax.numpy as jnp
import numpy as np
import pytest

import adam_jax
from tests.reference import ReferenceAdam


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("convention", sorted(adam_jax.CONVENTIONS))
def test_16bit_steps_equal_the_float64_reference_rounded(dtype, convention):
    """eps = 1e-8 rounds to 0 in float16; the step must still be the true one, rounded."""
    grads = np.array([[0.0, 1e-7, 6e-8, 3e-3, -1.0, 6e4], [0.0, -2e-7, 1e-6, 0.0, 2.0, -1e4]])
    grads = np.asarray(jnp.asarray(grads, dtype), np.float64)  # exactly representable
    opt = adam_jax.amsgrad(1e-3, eps=1e-8, convention=convention)
    params = jnp.zeros(grads.shape[1], dtype)
    state = opt.init(params)
    ref = ReferenceAdam(grads.shape[1:], lr=1e-3, eps=1e-8, amsgrad=True, convention=convention)
    p_ref = np.zeros(grads.shape[1])
    for g in grads:
        updates, state = opt.update(jnp.asarray(g, dtype), state, params)
        new_ref = ref.step(p_ref, g)
        expected = np.asarray(jnp.asarray(new_ref - p_ref, dtype), np.float64)
        p_ref = new_ref
        assert updates.dtype == dtype
        # Two roundings to 16 bits (the step, then lr * step): within 2 ulp.
        rtol = 2 * float(jnp.finfo(dtype).eps)
        np.testing.assert_allclose(np.asarray(updates, np.float64), expected, rtol=rtol, atol=0)
    assert np.asarray(updates, np.float64)[0] == 0.0


def test_eps_zero_leaves_always_zero_coordinates_in_place():
    opt = adam_jax.amsgrad(1e-2, eps=0.0)
    params = jnp.zeros(3, jnp.float16)
    state = opt.init(params)
    for g in ([0.0, 1.0, -1e-4], [0.0, 0.0, 1e-7], [0.0, -3.0, 0.0]):
        updates, state = opt.update(jnp.asarray(g, jnp.float16), state, params)
        assert float(updates[0]) == 0.0
        assert np.all(np.isfinite(np.asarray(updates, np.float32)))
        assert np.all(np.asarray(updates[1:], np.float32) != 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_params_keep_float32_moments(dtype):
    state = adam_jax.amsgrad(0.1).init(jnp.zeros(3, dtype))[0]
    assert state.mu.dtype == state.nu.dtype == state.nu_max.dtype == jnp.float32
