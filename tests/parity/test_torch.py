"""convention="pytorch" (and "paper") against the real torch.optim.Adam and AdamW."""

import pytest

from . import _harness as h

torch = pytest.importorskip(
    "torch", reason="the PyTorch parity tests need torch: pip install -e '.[test]'"
)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("code_path", list(h.TORCH_CODE_PATHS))
@pytest.mark.parametrize("case", h.cases("torch"), ids=lambda c: c.id)
def test_matches_torch_after_every_step(case, code_path, dtype):
    reason = h.torch_code_path_unsupported(code_path, dtype)
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
