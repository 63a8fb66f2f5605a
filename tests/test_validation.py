"""Bad hyperparameters raise at construction, naming the argument, value and range.

A wrong type is a TypeError, a value out of range a ValueError. Every case runs
against every optimizer that takes the argument.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax

FACTORIES = {
    "adam": adam_jax.adam,
    "amsgrad": adam_jax.amsgrad,
    "adamw": adam_jax.adamw,
    "nadam": adam_jax.nadam,
    "adam_atan2": adam_jax.adam_atan2,
    "scale_by_adam": adam_jax.scale_by_adam,
    "scale_by_adam_atan2": adam_jax.scale_by_adam_atan2,
    "AdamSpec": adam_jax.AdamSpec,
}

BAD = [
    # (argument, value, exception, message)
    ("learning_rate", -1e-3, ValueError, r"learning_rate must be in \[0, inf\), got -0.001"),
    ("learning_rate", math.inf, ValueError, r"learning_rate must be in \[0, inf\), got inf"),
    ("learning_rate", math.nan, ValueError, r"learning_rate must be in \[0, inf\), got nan"),
    ("learning_rate", True, TypeError, r"learning_rate must be a real number or a schedule"),
    ("learning_rate", "0.1", TypeError, r"learning_rate must be a real number .*got '0.1'"),
    ("learning_rate", None, TypeError, r"learning_rate must be a real number .*got None"),
    ("learning_rate", np.ones(2), ValueError, r"learning_rate must be a scalar, got .* \(2,\)"),
    ("learning_rate", 1e300, ValueError, r"learning_rate=1e\+300 overflows float32"),
    ("learning_rate", lambda: 1.0, TypeError, r"learning_rate must be .*calling .* with step 0"),
    ("learning_rate", lambda t: None, TypeError, r"learning_rate\(0\) must be a real number"),
    ("learning_rate", lambda t: -1.0, ValueError, r"learning_rate\(0\) must be in \[0, inf\)"),
    ("b1", 1.0, ValueError, r"b1 must be in \[0, 1\), got 1.0"),
    ("b1", -0.1, ValueError, r"b1 must be in \[0, 1\)"),
    ("b1", 0.99999999, ValueError, r"b1=0.99999999 rounds to 1.0 in float32"),
    ("b1", "0.9", TypeError, r"b1 must be a real number, got '0.9'"),
    ("b2", 1.0, ValueError, r"b2 must be in \[0, 1\)"),
    ("b2", math.nan, ValueError, r"b2 must be in \[0, 1\)"),
    ("b2", 0.999999999, ValueError, r"b2=0.999999999 rounds to 1.0 in float32"),
    ("b2", "0.9", TypeError, r"b2 must be a real number, got '0.9'"),
    ("b2", False, TypeError, r"b2 must be a real number, got False"),
    ("eps", -1e-8, ValueError, r"eps must be in \[0, inf\)"),
    ("eps", math.inf, ValueError, r"eps must be in \[0, inf\)"),
    ("eps", math.nan, ValueError, r"eps must be in \[0, inf\)"),
    ("eps", 1e-50, ValueError, r"eps=1e-50 rounds to 0 in float32"),
    ("eps", True, TypeError, r"eps must be a real number, got True"),
    ("eps_root", -1.0, ValueError, r"eps_root must be in \[0, inf\)"),
    ("eps_root", math.inf, ValueError, r"eps_root must be in \[0, inf\), got inf"),
    ("weight_decay", -0.1, ValueError, r"weight_decay must be in \[0, inf\)"),
    ("weight_decay", math.inf, ValueError, r"weight_decay must be in \[0, inf\), got inf"),
    ("weight_decay", "1e-2", TypeError, r"weight_decay must be a real number"),
    ("weight_decay", print, TypeError, r"weight_decay\(0\) must be a real number, got None"),
    ("convention", "tensorflow", ValueError, r"convention must be one of \['keras', 'optax'"),
    ("convention", None, ValueError, r"convention must be one of .*got None"),
    ("amsgrad", "yes", TypeError, r"amsgrad must be True or False, got 'yes'"),
    ("amsgrad", 1, TypeError, r"amsgrad must be True or False, got 1"),
    ("maximize", "no", TypeError, r"maximize must be True or False, got 'no'"),
    ("decoupled_weight_decay", "no", TypeError, r"decoupled_weight_decay must be True or False"),
    ("mu_dtype", "int8", ValueError, r"mu_dtype must be None or one of .*got 'int8'"),
    ("mu_dtype", "bogus", TypeError, r"mu_dtype must be None or one of .*got 'bogus'"),
    ("mu_dtype", np.float32(0.9), TypeError, r"mu_dtype must be .*a dtype, not a value"),
    ("nu_dtype", jnp.int32, ValueError, r"nu_dtype must be None or one of"),
    ("nu_dtype", "complex64", ValueError, r"nu_dtype must be None or one of"),
    ("mask", {"w": "yes"}, TypeError, r"mask must be None, a callable"),
    ("quantized_state", 8, TypeError, r"quantized_state must be None or adam_jax.Block"),
    ("param_rounding", "nearest", ValueError, r"param_rounding must be one of"),
    ("rounding_seed", 3, ValueError, r"rounding_seed=3 is for param_rounding='stochastic'"),
    ("momentum_decay", -1.0, ValueError, r"momentum_decay must be in \[0, inf\)"),
    ("a", 0.0, ValueError, r"a must be in \(0, inf\)"),
    ("a", 1e300, ValueError, r"a=1e\+300 overflows float32"),
    ("b", math.inf, ValueError, r"b must be in \(0, inf\)"),
]


def _takes(factory, name, value) -> bool:
    """Whether ``factory`` has the argument and ``value`` is not its documented default
    (None is the default of nadam's learning_rate: the convention's)."""
    import inspect

    parameters = inspect.signature(factory).parameters
    return name in parameters and not (value is None and parameters[name].default is None)


CASES = [
    pytest.param(factory, name, value, error, message, id=f"{fname}-{name}-{value!r}")
    for fname, factory in FACTORIES.items()
    for name, value, error, message in BAD
    if _takes(factory, name, value)
]


@pytest.mark.parametrize("factory,name,value,error,message", CASES)
def test_bad_hyperparameter_raises(factory, name, value, error, message):
    with pytest.raises(error, match=message):
        factory(**{name: value})


def test_every_argument_of_every_factory_is_tried():
    """A new argument cannot skip the table: each one appears in BAD or is exempt."""
    import inspect

    tried = {name for name, *_ in BAD}
    for name, factory in FACTORIES.items():
        missing = set(inspect.signature(factory).parameters) - tried - {"nesterov"}
        assert not missing, f"{name} has untested arguments {missing}"


def test_nadam_specific_combinations():
    with pytest.raises(ValueError, match="momentum_decay must be None with convention='optax'"):
        adam_jax.nadam(momentum_decay=4e-3, convention="optax")
    with pytest.raises(ValueError, match="momentum_decay=0.004 is NAdam's; it needs nesterov"):
        adam_jax.AdamSpec(momentum_decay=4e-3)
    with pytest.raises(ValueError, match="amsgrad=True with nesterov=True"):
        adam_jax.scale_by_adam(amsgrad=True, nesterov=True)


def test_good_edge_values_are_accepted():
    adam_jax.adam(0.0, b1=0.0, b2=0.0, eps=0.0, eps_root=0.0, weight_decay=0.0)
    adam_jax.adam(eps=float(jnp.finfo(jnp.float32).smallest_subnormal))
    adam_jax.adam(b1=float(np.nextafter(np.float32(1), np.float32(0))))
    adam_jax.adam(np.float32(1e-3), b1=np.float64(0.9), b2=jnp.asarray(0.99), eps=np.int64(0))
    adam_jax.adam(mu_dtype="bfloat16", nu_dtype=jnp.float32, mask=lambda p: p)
    adam_jax.adam(weight_decay=optax.linear_schedule(0.1, 0.0, 10))


def test_schedules_and_traced_values_are_not_checked_eagerly():
    adam_jax.adam(optax.linear_schedule(1.0, 0.0, 10))

    @jax.jit
    def build_and_step(lr):
        tx = adam_jax.adam(lr)
        return tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))[0]

    assert build_and_step(jnp.asarray(-1.0)).shape == (2,)


def test_gradient_of_another_shape_raises_instead_of_broadcasting():
    tx = adam_jax.adam(0.1)
    state = tx.init(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"gradient of shape \(1,\) .* param of shape \(3,\)"):
        tx.update(jnp.ones(1), state)


def test_python_float_params():
    tx = adam_jax.adam(0.1)
    params = 1.0
    updates, _ = tx.update(2.0, tx.init(params), params)
    assert float(optax.apply_updates(params, updates)) == pytest.approx(0.9)


def test_empty_state_report_names_the_problem():
    tx = adam_jax.adam()
    with pytest.raises(ValueError, match="at least one coordinate"):
        adam_jax.epsilon_report(tx.init({}), tx)
