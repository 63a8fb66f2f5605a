"""optax <-> adam_jax: runs converted mid-way continue on the uninterrupted trajectory."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from adam_jax import interop

from . import _runs

BEFORE, AFTER = 15, 50
# name: (the real optax optimizer, adam_jax's equal, whose spec is the run's hyperparameters)
CASES = {
    "adam": (lambda: optax.adam(1e-2), lambda: adam_jax.adam(1e-2, convention="optax")),
    "amsgrad": (
        lambda: optax.amsgrad(1e-2, eps_root=1e-6),
        lambda: adam_jax.amsgrad(1e-2, eps_root=1e-6, convention="optax"),
    ),
    "adamw": (
        lambda: optax.adamw(1e-2, weight_decay=0.1),
        lambda: adam_jax.adamw(1e-2, weight_decay=0.1, convention="optax"),
    ),
    "nadam": (lambda: optax.nadam(1e-2), lambda: adam_jax.nadam(1e-2, convention="optax")),
}


@pytest.fixture
def params(x64):
    return _runs.initial_params("float64")


@pytest.mark.parametrize("case", list(CASES))
def test_optax_run_continues_in_adam_jax(case, params, x64):
    make_tx, make_ours = CASES[case]
    tx = make_tx()
    uninterrupted, *_ = _runs.run_optax(params, tx, tx.init(params), BEFORE + AFTER, "float64")
    before, mid_params, state = _runs.run_optax(params, tx, tx.init(params), BEFORE, "float64")

    optimizer, ours = interop.from_optax(state, make_ours().spec, mid_params)
    after, *_ = _runs.run_optax(mid_params, optimizer, ours, AFTER, "float64")
    restarted, *_ = _runs.run_optax(
        mid_params, optimizer, optimizer.init(mid_params), AFTER, "float64"
    )

    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]
    assert _runs.relative(restarted, uninterrupted[BEFORE:]) > 1e-6  # the state matters


@pytest.mark.parametrize("case", list(CASES))
def test_adam_jax_run_continues_in_optax(case, params, x64):
    make_tx, make_ours = CASES[case]
    tx = make_tx()
    uninterrupted, *_ = _runs.run_optax(params, tx, tx.init(params), BEFORE + AFTER, "float64")
    optimizer = make_ours()
    before, mid_params, ours = _runs.run_optax(
        params, optimizer, optimizer.init(params), BEFORE, "float64"
    )

    _, theirs = interop.to_optax(ours, optimizer, mid_params)
    assert jax.tree.structure(theirs) == jax.tree.structure(tx.init(params))
    after, *_ = _runs.run_optax(mid_params, tx, theirs, AFTER, "float64")  # the real optax

    assert _runs.relative(before, uninterrupted[:BEFORE]) <= _runs.TOLERANCE["float64"]
    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]


def test_pytorch_amsgrad_into_optax_is_refused():
    optimizer = adam_jax.amsgrad(1e-2, convention="pytorch")
    state = optimizer.init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="raw second moment.*cannot be recovered.*larger steps"):
        interop.to_optax(state, optimizer)


def test_pytorch_nadam_into_optax_is_refused():
    optimizer = adam_jax.nadam(1e-2)
    with pytest.raises(ValueError, match="NAdam .* mu_t = b1.*psi=0.004"):
        interop.to_optax(optimizer.init({"w": jnp.ones(3)}), optimizer)


def test_optax_amsgrad_into_pytorch_is_refused():
    tx = optax.amsgrad(1e-2)
    state = tx.init({"w": jnp.ones(3)})
    spec = adam_jax.AdamSpec(1e-2, amsgrad=True, convention="pytorch")
    with pytest.raises(ValueError, match="bias-corrected.*upper bound.*smaller steps"):
        interop.from_optax(state, spec)


def test_optax_adam_continues_in_pytorch_convention(x64):
    """Without AMSGrad optax's Adam is PyTorch's: the state moves to ``"pytorch"`` too."""
    tx = optax.adam(1e-2)
    params = {"w": jnp.arange(3.0)}
    _, state = tx.update({"w": jnp.ones(3)}, tx.init(params))
    _, ours = interop.from_optax(state, adam_jax.AdamSpec(1e-2), params)
    np.testing.assert_array_equal(ours[0].nu["w"], state[0].nu["w"])


def test_amsgrad_mismatch_names_it():
    state = optax.adam(1e-2).init({"w": jnp.ones(3)})
    spec = adam_jax.AdamSpec(1e-2, amsgrad=True, convention="optax")
    with pytest.raises(ValueError, match="AMSGrad does not match"):
        interop.from_optax(state, spec)
