"""Keras 3 (JAX backend) <-> adam_jax: runs converted mid-way continue on the same trajectory."""

import functools

import jax
import numpy as np
import pytest

from adam_jax import interop

from . import _runs

keras = pytest.importorskip("keras", reason="the Keras interop tests need keras")

BEFORE, AFTER = 15, 50
NAME_MAP = {k.replace("/", "_"): k for k in _runs.initial_weights("float64")}
# name: (optimizer class, options, variable names excluded from weight decay)
CASES = {
    "adam": ("Adam", {"learning_rate": 1e-2}, None),
    "amsgrad": ("Adam", {"learning_rate": 1e-2, "amsgrad": True, "epsilon": 1e-6}, None),
    "adamw_exclude_bias": (
        "AdamW",
        {"learning_rate": 1e-2, "weight_decay": 0.1, "amsgrad": True},
        ["bias"],
    ),
    "nadam": ("Nadam", {"learning_rate": 1e-2, "weight_decay": 0.05}, ["bias"]),
}


@pytest.fixture
def float64(x64):
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(floatx)


def _variables(seed_weights=True):
    weights = _runs.initial_weights("float64")
    return [
        keras.Variable(v if seed_weights else np.zeros_like(v), name=k.replace("/", "_"))
        for k, v in weights.items()
    ]


def _optimizer(case, variables):
    name, kwargs, excluded = CASES[case]
    optimizer = getattr(keras.optimizers, name)(**kwargs)
    if excluded:
        optimizer.exclude_from_weight_decay(var_names=excluded)
    optimizer.build(variables)
    return optimizer


def _run_keras(optimizer, variables, steps):
    """The real Keras update (``optimizer.apply``); the loss before each step."""
    x, y = _runs.data("float64")

    def loss(values):
        return _runs.jax_loss(interop_tree(values), x, y)

    grad = jax.jit(jax.value_and_grad(loss))
    losses = []
    for _ in range(steps):
        value, grads = grad([v.value for v in variables])
        losses.append(float(value))
        optimizer.apply(grads, variables)
    return np.asarray(losses)


def interop_tree(values):
    """Keras variable values in ``_variables`` order as the params tree of ``_runs.jax_loss``."""
    keys = list(_runs.initial_weights("float64"))
    flat = dict(zip(keys, values, strict=True))
    return {
        layer: {leaf: flat[f"{layer}/{leaf}"] for leaf in ("kernel", "bias")}
        for layer in ("hidden", "out")
    }


@functools.cache
def _uninterrupted(case):
    """Keras' own run of BEFORE + AFTER steps (float64, under the ``float64`` fixture)."""
    variables = _variables()
    return _run_keras(_optimizer(case, variables), variables, BEFORE + AFTER)


@pytest.mark.parametrize("case", list(CASES))
def test_keras_run_continues_in_adam_jax(case, float64):
    uninterrupted = _uninterrupted(case)
    variables = _variables()
    optimizer = _optimizer(case, variables)
    _run_keras(optimizer, variables, BEFORE)

    run = interop.from_keras(optimizer, variables, NAME_MAP)
    after, *_ = _runs.run_optax(run.params, run.optimizer, run.opt_state, AFTER, "float64")

    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]
    assert len(run.groups) == (2 if CASES[case][2] else 1)


@pytest.mark.parametrize("case", list(CASES))
def test_adam_jax_run_continues_in_keras(case, float64):
    uninterrupted = _uninterrupted(case)
    variables = _variables()
    start = interop.from_keras(_optimizer(case, variables), variables, NAME_MAP)
    optimizer = interop.build_optimizer(start.groups, start.params)
    before, params, opt_state = _runs.run_optax(
        start.params, optimizer, optimizer.init(start.params), BEFORE, "float64"
    )

    fresh = _variables(seed_weights=False)
    keras_optimizer = interop.to_keras(params, opt_state, start.groups, fresh, NAME_MAP)
    after = _run_keras(keras_optimizer, fresh, AFTER)

    assert _runs.relative(before, uninterrupted[:BEFORE]) <= _runs.TOLERANCE["float64"]
    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]


def test_keras_into_pytorch_is_refused(float64):
    variables = _variables()
    run = interop.from_keras(_optimizer("adam", variables), variables, NAME_MAP)
    with pytest.raises(ValueError, match="convention 'keras'.*different optimizer"):
        interop.spec_to_torch(run.groups[0].spec)


def test_unsupported_options_are_named(float64):
    variables = _variables()
    optimizer = keras.optimizers.Adam(1e-2, clipnorm=1.0)
    optimizer.build(variables)
    with pytest.raises(ValueError, match="clipnorm=1.0"):
        interop.from_keras(optimizer, variables, NAME_MAP)


def test_unmapped_variable_is_named(float64):
    variables = _variables()
    with pytest.raises(ValueError, match="'out_bias' is not in name_map"):
        interop.from_keras(
            _optimizer("adam", variables),
            variables,
            {k: v for k, v in NAME_MAP.items() if k != "out_bias"},
        )


def test_pytorch_nadam_into_keras_is_refused(float64):
    variables = _variables()
    run = interop.from_keras(_optimizer("nadam", variables), variables, NAME_MAP)
    torch_like = [
        interop.ParamGroup(g.spec.replace(convention="pytorch"), g.paths) for g in run.groups
    ]
    with pytest.raises(ValueError, match="Keras' Nadam has the momentum schedule psi=1"):
        interop.to_keras(run.params, run.opt_state, torch_like, variables, NAME_MAP)
