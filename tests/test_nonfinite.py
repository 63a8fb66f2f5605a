"""NaN and inf gradients are never hidden; only a zero denominator gives a zero step.

Before the fix, ``adam(0.1).update([nan, 1.0])`` returned ``-0.0`` for the NaN
coordinate (``where(denominator > 0, ...)`` is false for NaN) while ``mu``/``nu``
stayed NaN for good: the parameter silently stopped training.
"""

import itertools

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax

DTYPES = ("float16", "bfloat16", "float32")
FACTORIES = {
    "adam_atan2": lambda convention: adam_jax.adam_atan2(0.1),  # atan2(inf, inf) is finite
    "adam": lambda **kw: adam_jax.adam(0.1, **kw),
    "amsgrad": lambda **kw: adam_jax.amsgrad(0.1, **kw),
    "nadam": lambda **kw: adam_jax.nadam(0.1, **kw),
}
CASES = list(itertools.product(FACTORIES, sorted(adam_jax.CONVENTIONS), DTYPES))
# A static eps > 0 divides plainly; eps = 0 and an injected (traced) eps go through the safe
# division, which must not hide a NaN either.
EPS = {"static": {}, "zero": {"eps": 0.0}, "injected": None}


def _optimizer(name, convention, eps):
    if name == "adam_atan2" or EPS[eps] is not None:
        return FACTORIES[name](convention=convention, **(EPS[eps] or {}))
    # float32 hyperparameters: in bfloat16, b2 = 0.999 would round to 1 (and be refused)
    return optax.inject_hyperparams(getattr(adam_jax, name), hyperparam_dtype=jnp.float32)(
        learning_rate=0.1, eps=1e-8, convention=convention
    )


@pytest.mark.parametrize("eps", sorted(EPS))
@pytest.mark.parametrize("name,convention,dtype", CASES)
def test_nonfinite_gradient_gives_nonfinite_update(name, convention, dtype, eps):
    if name == "adam_atan2" and eps != "static":
        pytest.skip("Adam-atan2 has no eps")
    tx = _optimizer(name, convention, eps)
    params = jnp.zeros(5, dtype)
    grads = jnp.asarray([np.nan, np.inf, -np.inf, 1.0, 0.0], dtype)
    updates, _ = tx.update(grads, tx.init(params), params)
    if eps != "injected":  # an injected float32 learning rate promotes the updates (optax)
        assert updates.dtype == jnp.dtype(dtype)
    assert np.isnan(np.asarray(updates[:3], np.float32)).all(), updates
    assert np.isfinite(np.asarray(updates[3:], np.float32)).all()


def test_apply_if_finite_sees_it():
    tx = optax.apply_if_finite(adam_jax.adam(0.1), max_consecutive_errors=2)
    params = jnp.zeros(2)
    updates, state = tx.update(jnp.asarray([np.nan, 1.0]), tx.init(params), params)
    assert not bool(state.last_finite)
    assert np.all(np.asarray(updates) == 0)


@pytest.mark.parametrize("convention", sorted(adam_jax.CONVENTIONS))
def test_nan_stays_visible_on_later_steps(convention):
    """A NaN in the moments keeps giving NaN steps (as torch): never a silent freeze."""
    tx = adam_jax.adam(0.1, convention=convention, amsgrad=True)
    params = jnp.zeros(2)
    state = tx.init(params)
    _, state = tx.update(jnp.asarray([np.nan, 1.0]), state, params)
    for _ in range(3):
        updates, state = tx.update(jnp.asarray([1.0, 1.0]), state, params)
        assert np.isnan(updates[0]) and np.isfinite(updates[1])


def test_matches_torch_on_nan(x64):
    torch = pytest.importorskip("torch")
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.tensor([float("nan"), 1.0], dtype=torch.float64)
    opt.step()
    tx = adam_jax.adam(0.1)
    params = jnp.zeros(2, jnp.float64)
    updates, _ = tx.update(jnp.asarray([np.nan, 1.0]), tx.init(params), params)
    np.testing.assert_array_equal(np.asarray(optax.apply_updates(params, updates)), p.detach())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", sorted(adam_jax.CONVENTIONS))
def test_zero_denominator_is_a_zero_step(dtype, convention):
    """With eps = 0, a coordinate that never saw a gradient does not move (0/0 -> 0)."""
    tx = adam_jax.amsgrad(0.1, eps=0.0, convention=convention)
    params = jnp.zeros(2, dtype)
    updates, _ = tx.update(jnp.asarray([0.0, 1.0], dtype), tx.init(params), params)
    assert float(updates[0]) == 0.0 and np.isfinite(float(updates[1]))
