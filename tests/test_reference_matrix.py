"""adam_jax against the float64 NumPy reference, every configuration, 300 steps."""

import itertools

import pytest

import adam_jax
from tests.helpers import max_relative_error, random_problem, run_optax, run_reference
from tests.reference import ReferenceAdam, ReferenceNAdam

STEPS = 300
LR, WD = 1e-2, 0.1
WEIGHT_DECAY = {"none": (0.0, False), "coupled": (WD, False), "decoupled": (WD, True)}
CASES = list(
    itertools.product(sorted(adam_jax.CONVENTIONS), [False, True], WEIGHT_DECAY, [False, True])
)
NADAM_CASES = list(itertools.product(sorted(adam_jax.CONVENTIONS), WEIGHT_DECAY, [False, True]))


@pytest.fixture(scope="module")
def problem():
    return random_problem(STEPS, seed=1)


@pytest.mark.parametrize("convention,amsgrad,decay,maximize", CASES)
def test_matches_float64_reference(x64, problem, convention, amsgrad, decay, maximize):
    weight_decay, decoupled = WEIGHT_DECAY[decay]
    kwargs = dict(
        lr=LR,
        eps=1e-8,
        amsgrad=amsgrad,
        convention=convention,
        weight_decay=weight_decay,
        maximize=maximize,
    )
    optimizer = adam_jax.adam(
        LR,
        eps=1e-8,
        amsgrad=amsgrad,
        convention=convention,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled,
        maximize=maximize,
    )
    params, grads = problem
    actual = run_optax(optimizer, params, grads)
    expected = run_reference(
        lambda shape: ReferenceAdam(shape, decoupled=decoupled, **kwargs), params, grads
    )
    assert max_relative_error(actual, expected) <= 1e-12


@pytest.mark.parametrize("convention", sorted(adam_jax.CONVENTIONS))
@pytest.mark.parametrize("amsgrad", [False, True])
def test_eps_root_and_betas_match_reference(x64, problem, convention, amsgrad):
    hp = dict(b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-4, amsgrad=amsgrad, convention=convention)
    params, grads = problem
    actual = run_optax(adam_jax.adam(3e-3, **hp), params, grads)
    expected = run_reference(lambda shape: ReferenceAdam(shape, lr=3e-3, **hp), params, grads)
    assert max_relative_error(actual, expected) <= 1e-12


def test_schedule_matches_reference(x64, problem):
    import optax

    schedule = optax.cosine_decay_schedule(1e-2, decay_steps=STEPS, alpha=0.1)
    params, grads = problem
    actual = run_optax(adam_jax.amsgrad(schedule), params, grads)
    expected = run_reference(
        lambda shape: ReferenceAdam(shape, lr=lambda t: float(schedule(t)), amsgrad=True),
        params,
        grads,
    )
    assert max_relative_error(actual, expected) <= 1e-12


def test_conventions_are_different_optimizers(x64, problem):
    """AMSGrad's trajectories differ by convention: the tests above could fail.

    eps is large here, so that Keras' epsilon hat differs visibly from PyTorch's.
    """
    params, grads = problem
    runs = {
        c: run_optax(adam_jax.amsgrad(LR, eps=0.1, convention=c), params, grads)
        for c in adam_jax.CONVENTIONS
    }
    for a, b in itertools.combinations(runs, 2):
        assert max_relative_error(runs[a], runs[b]) > 1e-4, (a, b)


@pytest.mark.parametrize("convention,decay,maximize", NADAM_CASES)
def test_nadam_matches_float64_reference(x64, problem, convention, decay, maximize):
    weight_decay, decoupled = WEIGHT_DECAY[decay]
    kwargs = dict(convention=convention, weight_decay=weight_decay, maximize=maximize)
    optimizer = adam_jax.nadam(LR, eps=1e-8, decoupled_weight_decay=decoupled, **kwargs)
    params, grads = problem
    actual = run_optax(optimizer, params, grads)
    expected = run_reference(
        lambda shape: ReferenceNAdam(shape, lr=LR, eps=1e-8, decoupled=decoupled, **kwargs),
        params,
        grads,
    )
    assert max_relative_error(actual, expected) <= 1e-12


@pytest.mark.parametrize(
    "convention,momentum_decay",
    [("pytorch", 0.02), ("keras", 0.3), ("paper", 0.0), ("optax", None)],
)
def test_nadam_hyperparameters_match_reference(x64, problem, convention, momentum_decay):
    """Non-default betas, eps, eps_root and momentum_decay (psi = 0: mu_t = b1 / 2)."""
    hp = dict(b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-4, convention=convention)
    hp["momentum_decay"] = momentum_decay
    params, grads = problem
    actual = run_optax(adam_jax.nadam(3e-3, **hp), params, grads)
    expected = run_reference(lambda shape: ReferenceNAdam(shape, lr=3e-3, **hp), params, grads)
    assert max_relative_error(actual, expected) <= 1e-12


def test_nadam_schedule_matches_reference(x64, problem):
    import optax

    schedule = optax.cosine_decay_schedule(1e-2, decay_steps=STEPS, alpha=0.1)
    params, grads = problem
    actual = run_optax(adam_jax.nadam(schedule, weight_decay=WD), params, grads)
    expected = run_reference(
        lambda shape: ReferenceNAdam(shape, lr=lambda t: float(schedule(t)), weight_decay=WD),
        params,
        grads,
    )
    assert max_relative_error(actual, expected) <= 1e-12


def test_nadam_conventions_are_different_optimizers(x64, problem):
    """NAdam's four momentum schedules give four trajectories: the tests above could fail."""
    params, grads = problem
    runs = {
        c: run_optax(adam_jax.nadam(LR, convention=c), params, grads) for c in adam_jax.CONVENTIONS
    }
    for a, b in itertools.combinations(runs, 2):
        if {a, b} == {"pytorch", "paper"}:
            assert max_relative_error(runs[a], runs[b]) == 0.0  # the same schedule, psi = 0.004
        else:
            assert max_relative_error(runs[a], runs[b]) > 1e-4, (a, b)
