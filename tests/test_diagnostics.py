"""``epsilon_report`` against values computed by hand, in every convention and wrapper."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax

# A crafted state at step t = 2 with b2 = 0.5, so c2 = 1 - 0.5**2 = 0.75.
B2, COUNT = 0.5, 2
BASE = np.array([0.0, 1e-9, 1e-7, 1.0, 2.0])  # sqrt(v / c2)
NU = 0.75 * BASE**2
NU_MAX = 4 * NU  # raw running maximum (pytorch, keras, paper); optax's is bias-corrected

# The square-root term of each convention, by hand: sqrt(r / c2), sqrt(r), ...
HALF_ROOT3 = math.sqrt(0.75)  # sqrt(v) = sqrt(0.75) * BASE
EXPECTED = {
    ("pytorch", False): BASE,
    ("pytorch", True): 2 * BASE,  # sqrt(4 v / c2)
    ("optax", False): BASE,
    ("optax", True): 2 * HALF_ROOT3 * BASE,  # sqrt(nu_max), nu_max already corrected
    ("keras", False): HALF_ROOT3 * BASE,  # sqrt(v): the epsilon-hat form
    ("keras", True): 2 * HALF_ROOT3 * BASE,
    ("paper", False): BASE,  # Kingma & Ba's Algorithm 1
    ("paper", True): 2 * HALF_ROOT3 * BASE,  # Reddi et al.'s Algorithm 2: no correction
}


def _crafted_state(amsgrad: bool, dtype=jnp.float32):
    return adam_jax.ScaleByAdamState(
        count=jnp.asarray(COUNT, jnp.int32),
        mu=jnp.zeros(5, dtype),
        nu=jnp.asarray(NU, dtype),
        nu_max=jnp.asarray(NU_MAX, dtype) if amsgrad else None,
    )


def _expected_report(terms, eps):
    q01, q50, q99 = np.quantile(terms, [0.01, 0.5, 0.99])
    return {
        "dominated_fraction": np.mean(eps >= terms),
        "zero_fraction": np.mean(terms == 0),
        "sqrt_term_q01": q01,
        "sqrt_term_q50": q50,
        "sqrt_term_q99": q99,
    }


def _assert_report(report, expected):
    assert set(report) >= set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(float(report[key]), value, rtol=1e-6, atol=0, err_msg=key)


@pytest.mark.parametrize("convention", sorted(adam_jax.CONVENTIONS))
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("eps", [0.0, 1e-8, 1.5e-7, 1.8])
def test_crafted_state_every_convention(convention, amsgrad, eps):
    spec = adam_jax.AdamSpec(eps=eps, b2=B2, amsgrad=amsgrad, convention=convention)
    report = adam_jax.epsilon_report(_crafted_state(amsgrad), spec)
    _assert_report(report, _expected_report(EXPECTED[convention, amsgrad], eps))


def test_dominated_fraction_by_hand():
    # Spelled out for one case: terms 0, 1e-9, 1e-7, 1, 2 against eps = 1e-8.
    report = adam_jax.epsilon_report(_crafted_state(False), adam_jax.AdamSpec(b2=B2))
    assert float(report["dominated_fraction"]) == pytest.approx(2 / 5)
    assert float(report["sqrt_term_q50"]) == pytest.approx(1e-7, rel=1e-6)


def test_eps_root_is_inside_the_root():
    report = adam_jax.epsilon_report(
        _crafted_state(False), adam_jax.AdamSpec(eps=1.5, b2=B2, eps_root=1.0)
    )
    _assert_report(report, _expected_report(np.sqrt(BASE**2 + 1.0), 1.5))


def test_float64_state(x64):
    report = adam_jax.epsilon_report(
        _crafted_state(True, jnp.float64), adam_jax.AdamSpec(b2=B2, amsgrad=True)
    )
    assert report["sqrt_term_q50"].dtype == jnp.float64
    np.testing.assert_allclose(float(report["sqrt_term_q50"]), 2e-7, rtol=1e-14)


def test_before_the_first_step_every_coordinate_is_dominated():
    optimizer = adam_jax.adam(1e-3)
    report = optimizer.epsilon_report(optimizer.init({"w": jnp.ones((2, 3))}))
    assert float(report["dominated_fraction"]) == 1.0
    assert float(report["zero_fraction"]) == 1.0
    assert float(report["sqrt_term_q99"]) == 0.0


# At step 1 pytorch's term is sqrt(v / c2) = |g|, whatever b2.
GRADS = {"w": jnp.array([[0.0, 1e-9], [-1e-7, 1.0]]), "b": jnp.array([-2.0, 3.0])}
TERMS = np.array([2.0, 3.0, 0.0, 1e-9, 1e-7, 1.0])  # |g|, leaves in key order b, w


def _wrapped(name):
    """(the optimizer, what epsilon_report is given as the optimizer)"""
    adam = adam_jax.amsgrad(1e-3, b2=0.99)
    if name == "inject_hyperparams":  # b2 = 0.99 is read from the injected hyperparams
        return optax.inject_hyperparams(adam_jax.amsgrad)(1e-3, b2=0.99), adam_jax.amsgrad(1e-3)
    if name == "atan2":
        atan2 = adam_jax.adam_atan2(1e-3, b2=0.99, amsgrad=True)
        return atan2, adam_jax.AdamSpec(b2=0.99, amsgrad=True)
    return {
        "adam": adam,
        "chain": optax.chain(optax.clip(10.0), adam, optax.scale(0.5)),
        "multi_steps": optax.MultiSteps(adam, every_k_schedule=2),
        "apply_if_finite": optax.apply_if_finite(adam, max_consecutive_errors=3),
        "nested": optax.MultiSteps(optax.apply_if_finite(adam, 3), every_k_schedule=1),
    }[name], adam


@pytest.mark.parametrize(
    "name",
    ["adam", "chain", "inject_hyperparams", "multi_steps", "apply_if_finite", "nested", "atan2"],
)
def test_finds_the_state_inside_wrappers(name):
    optimizer, reported = _wrapped(name)
    params = jax.tree.map(jnp.zeros_like, GRADS)
    state = optimizer.init(params)
    steps = 2 if name == "multi_steps" else 1  # MultiSteps updates every second call
    for _ in range(steps):
        _, state = optimizer.update(GRADS, state, params)
    report = jax.jit(lambda s: adam_jax.epsilon_report(s, reported))(state)
    _assert_report(report, _expected_report(TERMS, 1e-8))


def test_per_leaf():
    optimizer = adam_jax.adam(1e-3)
    params = jax.tree.map(jnp.zeros_like, GRADS)
    _, state = optimizer.update(GRADS, optimizer.init(params), params)
    report = adam_jax.epsilon_report(state, optimizer, per_leaf=True)
    assert set(report["per_leaf"]) == {"b", "w"}  # the params' tree, a report per leaf
    _assert_report(report["per_leaf"]["b"], _expected_report(np.array([2.0, 3.0]), 1e-8))
    _assert_report(
        report["per_leaf"]["w"], _expected_report(np.array([0.0, 1e-9, 1e-7, 1.0]), 1e-8)
    )
    _assert_report(report, _expected_report(TERMS, 1e-8))


def test_jit_with_traced_eps():
    state = _crafted_state(True)
    spec = adam_jax.AdamSpec(convention="keras", b2=B2, amsgrad=True)
    report = jax.jit(lambda s, eps: adam_jax.epsilon_report(s, spec, eps=eps))(state, 1.5e-7)
    _assert_report(report, _expected_report(EXPECTED["keras", True], 1.5e-7))


def test_vmap_over_eps():
    state = _crafted_state(False)
    eps = jnp.array([0.0, 1e-8, 1.5e-7, 1.8])
    spec = adam_jax.AdamSpec(b2=B2)
    fractions = jax.vmap(lambda e: adam_jax.epsilon_report(state, spec, eps=e))(eps)
    np.testing.assert_allclose(fractions["dominated_fraction"], [0.2, 0.4, 0.6, 0.8])


@pytest.mark.parametrize(
    "state, found",
    [
        (optax.adam(1e-3).init(jnp.zeros(3)), 0),
        (optax.chain(adam_jax.adam(), adam_jax.adam()).init(jnp.zeros(3)), 2),
        ({}, 0),
    ],
    ids=["optax-adam", "two-adam-states", "empty"],
)
def test_clear_error_without_exactly_one_adam_state(state, found):
    with pytest.raises(ValueError, match=rf"exactly one adam_jax ScaleByAdamState.*found {found}"):
        adam_jax.epsilon_report(state, adam_jax.adam())


def test_settings_come_from_the_optimizer():
    """A keras state read with the keras optimizer's own settings: no silent mismatch."""
    optimizer = adam_jax.adam(1e-3, b2=B2, eps=1e-8, convention="keras")
    report = optimizer.epsilon_report(_crafted_state(False))
    _assert_report(report, _expected_report(EXPECTED["keras", False], 1e-8))
    with pytest.raises(TypeError, match="needs the adam_jax optimizer that made the state"):
        adam_jax.epsilon_report(_crafted_state(False), 1e-8)
    with pytest.raises(TypeError, match="needs the adam_jax optimizer"):
        adam_jax.epsilon_report(_crafted_state(False), optax.adam(1e-3))


DIGITS_TEST_IMAGES = 359  # 20% of the 1,797 digits (docs/training.md)


def test_eps_sweep_smoke(tmp_path):
    """scripts/benchmarks/eps_sweep.py end to end with minimal settings: JSON and plots."""
    pytest.importorskip("sklearn", reason="the digits task needs scikit-learn")
    pytest.importorskip("matplotlib", reason="the sweep draws plots")
    from scripts.benchmarks import eps_sweep as sweep  # needs flax (the train extra)

    argv = ["--tasks", "digits", "--optimizers", "adam", "--seeds", "1", "--steps", "20"]
    argv += ["--eps", "0,1", "--out", str(tmp_path), "--img-dir", str(tmp_path)]
    assert sweep.main(argv) == 0
    result = json.loads((tmp_path / "eps_sweep.json").read_text())
    runs = result["runs"]
    assert len(runs) == 2 * len(sweep.sweep_settings("digits")["lrs"])
    for run in runs:
        assert len(run["dominated_fraction"]) == 20 // sweep.REPORT_EVERY
        correct = run["test_accuracy"] * DIGITS_TEST_IMAGES  # a whole number of test images
        assert correct == pytest.approx(round(correct), abs=1e-3) and correct >= 1
        assert math.isfinite(run["final_loss"])
        if run["eps"] == 0:  # eps = 0 dominates exactly the zero terms
            assert run["dominated_fraction"] == run["zero_fraction"]
        else:  # eps = 1 dominates the digits' small gradients everywhere
            assert min(run["dominated_fraction"]) > 0.9
    assert {p.name for p in tmp_path.glob("eps_*.png")} == {"eps_final.png", "eps_dominated.png"}
