"""convention="pytorch" (and "paper") against the real torch.optim.Adam, AdamW and NAdam."""

import pytest

from tests.parity import harness as h

torch = pytest.importorskip(
    "torch", reason="the PyTorch parity tests need torch: pip install -e '.[test]'"
)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("code_path", list(h.TORCH_CODE_PATHS))
@pytest.mark.parametrize("case", h.cases("torch"), ids=lambda c: c.id)
def test_matches_torch_after_every_step(case, code_path, dtype):
    reason = h.torch_code_path_unsupported(code_path, dtype, case.reference[0])
    if reason is not None:
        pytest.skip(reason)
    err = h.compare(case, dtype, code_path=code_path)
    assert err.max() <= h.TOLERANCE[dtype], (
        f"relative error {err.max():.3g} at step {err.argmax() + 1} of {len(err)}"
    )


@pytest.mark.parametrize("convention", ["optax", "keras", "paper"])
def test_other_conventions_are_not_torch_amsgrad(convention):
    """The comparison can fail: the other conventions' AMSGrad is not torch's."""
    case = next(c for c in h.cases("torch") if c.reference == ("Adam", {"amsgrad": True}))
    err = h.compare(case, "float64", ours={**case.ours, "convention": convention})
    assert err.max() > 1e3 * h.TOLERANCE["float64"]


@pytest.mark.parametrize("convention", ["optax", "keras"])
def test_other_conventions_are_not_torch_nadam(convention):
    """The comparison can fail: optax's constant momentum and Keras' psi = 1 are not torch's."""
    case = next(c for c in h.cases("torch") if c.reference == ("NAdam", {}) and not c.schedule)
    ours = {k: v for k, v in case.ours.items() if k != "momentum_decay"}
    err = h.compare(case, "float64", ours={**ours, "convention": convention})
    assert err.max() > 1e3 * h.TOLERANCE["float64"]


def test_unmasked_decay_is_not_torch_param_groups():
    """The comparison can fail: decaying every array is not torch's weight_decay=0 group."""
    case = next(c for c in h.cases("torch") if c.mask is not None)
    err = h.compare(case, "float64", ours={**case.ours, "mask": None})
    assert err.max() > 1e3 * h.TOLERANCE["float64"]


def test_torch_nadam_keeps_its_momentum_product_in_the_default_dtype():
    """Why the float64 runs set torch's default dtype: with float64 params and the
    default float32, torch rounds NAdam's ``mu_product`` to float32 every step, and
    its trajectory leaves exact float64 NAdam (adam_jax, the NumPy reference) by
    about 1e-10 relative; float64 scalars bring it to rounding (the tests above)."""
    case = next(c for c in h.cases("torch") if c.reference == ("NAdam", {}) and not c.schedule)
    steps = h.STEPS["float64"]
    theirs = h.run_torch(case, h.make_problem(steps), steps, "float64", float64_scalars=False)
    err = h.relative_error(h._ours(case.id, steps, "float64"), theirs)
    assert 1e-12 < err.max() < 1e-8
