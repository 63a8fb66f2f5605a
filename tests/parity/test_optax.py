"""convention="optax" (and "paper") against the real optax.adam, amsgrad, adamw and nadam(w)."""

import inspect

import optax
import pytest

from tests.parity import harness as h


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", h.cases("optax"), ids=lambda c: c.id)
def test_matches_optax_after_every_step(case, dtype):
    name, kwargs = case.reference
    missing = set(kwargs) - set(inspect.signature(getattr(optax, name)).parameters)
    if missing:
        pytest.skip(f"optax {optax.__version__}'s {name} has no {sorted(missing)}")
    err = h.compare(case, dtype)
    assert err.max() <= h.TOLERANCE[dtype], (
        f"relative error {err.max():.3g} at step {err.argmax() + 1} of {len(err)}"
    )


@pytest.mark.parametrize("convention", ["pytorch", "keras", "paper"])
def test_other_conventions_are_not_optax_amsgrad(convention):
    """The comparison can fail: the other conventions' AMSGrad is not optax's."""
    case = next(c for c in h.cases("optax") if c.reference == ("amsgrad", {}))
    err = h.compare(case, "float64", ours={**case.ours, "convention": convention})
    assert err.max() > 1e3 * h.TOLERANCE["float64"]


@pytest.mark.parametrize("convention", ["pytorch", "keras", "paper"])
def test_other_conventions_are_not_optax_nadam(convention):
    """The comparison can fail: the momentum schedules are not optax's constant mu = b1."""
    case = next(c for c in h.cases("optax") if c.reference == ("nadam", {}))
    err = h.compare(case, "float64", ours={**case.ours, "convention": convention})
    assert err.max() > 1e3 * h.TOLERANCE["float64"]


def test_unmasked_decay_is_not_optax_mask():
    """The comparison can fail: without the mask, adam_jax decays every array."""
    case = next(c for c in h.cases("optax") if c.mask == "tree" and c.optimizer == "adam")
    err = h.compare(case, "float64", ours={**case.ours, "mask": None})
    assert err.max() > 1e3 * h.TOLERANCE["float64"]
