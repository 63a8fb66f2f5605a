"""Weight decay's ``mask=``: the masked-out params are not decayed, the others are, as
``optax.adamw(mask=...)`` (a tree of bools or a callable)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from tests.helpers import pulled_problem


@pytest.mark.parametrize("as_callable", [False, True])
def test_masked_params_are_not_decayed_as_in_optax(x64, as_callable):
    """Masked params are not decayed, as optax.adamw(mask=...); the others are (decoupled)."""
    p0, noise = pulled_problem()
    params = {"w": jnp.asarray(p0), "b": jnp.asarray(p0[::-1].copy())}
    mask = {"w": True, "b": False}
    mask_arg = (lambda p: mask) if as_callable else mask

    def run(tx):
        state = tx.init(params)
        p = params
        for n in noise:
            grads = {"w": jnp.asarray(n), "b": jnp.asarray(n)}
            updates, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, updates)
        return p

    actual = run(adam_jax.adamw(0.05, weight_decay=0.5, mask=mask_arg))
    expected = run(optax.adamw(0.05, weight_decay=0.5, mask=mask))
    for k in params:
        np.testing.assert_allclose(actual[k], expected[k], rtol=1e-12, atol=1e-14)
    undecayed = run(adam_jax.adam(0.05))
    np.testing.assert_allclose(actual["b"], undecayed["b"], rtol=1e-12)
    assert np.max(np.abs(np.asarray(actual["w"] - undecayed["w"]))) > 1e-3
