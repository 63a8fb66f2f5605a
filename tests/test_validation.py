"""Bad hyperparameters raise ValueError at construction, naming the argument."""

import math

import jax
import jax.numpy as jnp
import optax
import pytest

import adam_jax

BAD = [
    ("learning_rate", -1e-3, r"learning_rate must be in \[0, inf\]"),
    ("b1", 1.0, r"b1 must be in \[0, 1\)"),
    ("b1", -0.1, r"b1 must be in \[0, 1\)"),
    ("b2", 1.0, r"b2 must be in \[0, 1\)"),
    ("b2", math.nan, r"b2 must be in \[0, 1\)"),
    ("eps", -1e-8, r"eps must be in \[0, inf\)"),
    ("eps", math.inf, r"eps must be in \[0, inf\)"),
    ("eps", math.nan, r"eps must be in \[0, inf\)"),
    ("eps", 1e-50, r"eps=1e-50 rounds to 0 in float32"),
    ("eps_root", -1.0, r"eps_root must be in \[0, inf\]"),
    ("weight_decay", -0.1, r"weight_decay must be in \[0, inf\]"),
    ("convention", "tensorflow", r"convention must be one of \['keras', 'optax', 'paper'"),
]


@pytest.mark.parametrize("name,value,message", BAD)
@pytest.mark.parametrize("factory", [adam_jax.adam, adam_jax.amsgrad, adam_jax.adamw])
def test_bad_hyperparameter_raises(factory, name, value, message):
    with pytest.raises(ValueError, match=message):
        factory(**{name: value})


def test_scale_by_adam_checks_too():
    with pytest.raises(ValueError, match="b2 must be"):
        adam_jax.scale_by_adam(b2=1.5)
    with pytest.raises(ValueError, match="amsgrad must be a bool"):
        adam_jax.scale_by_adam(amsgrad="yes")


def test_good_edge_values_are_accepted():
    adam_jax.adam(0.0, b1=0.0, b2=0.0, eps=0.0, eps_root=0.0, weight_decay=0.0)
    adam_jax.adam(eps=float(jnp.finfo(jnp.float32).smallest_subnormal))


def test_schedules_and_traced_values_are_not_checked_eagerly():
    adam_jax.adam(optax.linear_schedule(1.0, 0.0, 10))

    @jax.jit
    def build_and_step(lr):
        tx = adam_jax.adam(lr)
        return tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))[0]

    assert build_and_step(jnp.asarray(-1.0)).shape == (2,)
