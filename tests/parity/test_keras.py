"""convention="keras" against the real keras.optimizers.Adam, AdamW and Nadam (JAX backend)."""

import os

import pytest

from tests.parity import harness as h

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip(
    "keras", reason="the Keras parity tests need keras: pip install -e '.[test]'"
)
if keras.backend.backend() != "jax":
    pytest.skip(
        f"the Keras parity tests need KERAS_BACKEND=jax, got {keras.backend.backend()!r}",
        allow_module_level=True,
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", h.cases("keras"), ids=lambda c: c.id)
def test_matches_keras_after_every_step(case, dtype):
    err = h.compare(case, dtype)
    assert err.max() <= h.TOLERANCE[dtype], (
        f"relative error {err.max():.3g} at step {err.argmax() + 1} of {len(err)}"
    )


@pytest.mark.parametrize("convention", ["pytorch", "optax", "paper"])
def test_other_conventions_are_not_keras_amsgrad(convention):
    """The comparison can fail: the other conventions' AMSGrad is not Keras'."""
    case = next(c for c in h.cases("keras") if c.reference == ("Adam", {"amsgrad": True}))
    err = h.compare(case, "float64", ours={**case.ours, "convention": convention})
    assert err.max() > 1e3 * h.TOLERANCE["float64"]


@pytest.mark.parametrize("convention", ["pytorch", "optax", "paper"])
def test_other_conventions_are_not_keras_nadam(convention):
    """The comparison can fail: Keras' momentum schedule 0.96**t is not the others'."""
    case = next(c for c in h.cases("keras") if c.reference == ("Nadam", {}) and not c.schedule)
    err = h.compare(case, "float64", ours={**case.ours, "convention": convention})
    assert err.max() > 1e3 * h.TOLERANCE["float64"]
