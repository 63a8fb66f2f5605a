"""A convention brings its framework's defaults: eps, AdamW's weight decay, NAdam's
learning rate, read from the real torch, optax and Keras signatures."""

import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax

os.environ.setdefault("KERAS_BACKEND", "jax")
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")


def default(factory, name):
    return inspect.signature(factory).parameters[name].default


FRAMEWORK_DEFAULTS = {
    "pytorch": {
        "eps": default(torch.optim.Adam, "eps"),
        "adamw_weight_decay": default(torch.optim.AdamW, "weight_decay"),
        "nadam_learning_rate": default(torch.optim.NAdam, "lr"),
    },
    "optax": {
        "eps": default(optax.adam, "eps"),
        "adamw_weight_decay": default(optax.adamw, "weight_decay"),
        # optax.nadam has no default learning rate: adam_jax uses PyTorch's.
        "nadam_learning_rate": default(torch.optim.NAdam, "lr"),
    },
    "keras": {
        "eps": default(keras.optimizers.Adam, "epsilon"),
        "adamw_weight_decay": default(keras.optimizers.AdamW, "weight_decay"),
        "nadam_learning_rate": default(keras.optimizers.Nadam, "learning_rate"),
    },
    "paper": {  # the papers give eps; for the rest adam_jax uses PyTorch's
        "eps": 1e-8,
        "adamw_weight_decay": default(torch.optim.AdamW, "weight_decay"),
        "nadam_learning_rate": default(torch.optim.NAdam, "lr"),
    },
}


def test_optax_has_no_default_nadam_learning_rate():
    assert default(optax.nadam, "learning_rate") is inspect.Parameter.empty


@pytest.mark.parametrize("convention", sorted(adam_jax.CONVENTIONS))
def test_the_table_holds_the_frameworks_defaults(convention):
    row = adam_jax.CONVENTIONS[convention]
    expected = FRAMEWORK_DEFAULTS[convention]
    assert row.default_eps == expected["eps"]
    assert row.default_adamw_weight_decay == expected["adamw_weight_decay"]
    assert row.default_nadam_learning_rate == expected["nadam_learning_rate"]


@pytest.mark.parametrize("convention", sorted(adam_jax.CONVENTIONS))
def test_factories_take_the_conventions_defaults(convention):
    expected = FRAMEWORK_DEFAULTS[convention]
    assert adam_jax.adam(convention=convention).spec.eps == expected["eps"]
    assert adam_jax.amsgrad(convention=convention).spec.eps == expected["eps"]
    adamw = adam_jax.adamw(convention=convention).spec
    assert (adamw.eps, adamw.weight_decay) == (expected["eps"], expected["adamw_weight_decay"])
    assert adam_jax.adam(convention=convention).spec.weight_decay == 0.0
    nadam = adam_jax.nadam(convention=convention).spec
    assert nadam.learning_rate == expected["nadam_learning_rate"]
    assert adam_jax.adam(convention=convention).spec.learning_rate == 1e-3


def test_an_explicit_value_wins_over_the_convention():
    spec = adam_jax.adamw(0.1, eps=1e-3, weight_decay=0.5, convention="keras").spec
    assert (spec.eps, spec.weight_decay) == (1e-3, 0.5)


def _run(optimizer, steps=5):
    params = {"w": jnp.array([10.0, -3.0, 0.5]), "b": jnp.array(2.0)}
    state = optimizer.init(params)
    for t in range(steps):
        grads = jax.tree.map(lambda p, t=t: jnp.cos(p * (t + 1)), params)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_adamw_with_optax_convention_is_optax_adamw():
    ours = _run(adam_jax.adamw(0.1, convention="optax"))
    theirs = _run(optax.adamw(0.1))
    # The distance moved: 1e-2 (PyTorch's weight decay) instead of optax's 1e-4 would move
    # w[0] by 0.05 more; float32 rounding through param-dependent gradients, ~4e-6.
    start = {"w": jnp.array([10.0, -3.0, 0.5]), "b": jnp.array(2.0)}
    moved = lambda p: jax.tree.map(lambda x, s: x - s, p, start)  # noqa: E731
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5),
        moved(ours),
        moved(theirs),
    )


def test_adamw_with_pytorch_convention_is_torch_adamw():
    start = np.array([10.0, -3.0, 0.5], np.float32)
    w = torch.tensor(start.copy(), requires_grad=True)
    torch_opt = torch.optim.AdamW([w], lr=0.1)
    params = jnp.asarray(start)
    optimizer = adam_jax.adamw(0.1)
    state = optimizer.init(params)
    for t in range(5):
        grad = np.cos(np.asarray(w.detach()) * (t + 1)).astype(np.float32)
        w.grad = torch.tensor(grad)
        torch_opt.step()
        updates, state = optimizer.update(jnp.asarray(grad), state, params)
        params = optax.apply_updates(params, updates)
    # the distance moved (w[2] ends near 0, where a relative error of the value means little)
    np.testing.assert_allclose(params - start, w.detach().numpy() - start, rtol=1e-4, atol=2e-6)
