"""Complex params: ``convention="pytorch"`` steps the real and imaginary parts apart, as
``torch.optim.Adam`` (``view_as_real``); ``convention="optax"`` keeps optax's real second moment
of |g|^2. Against the real optimizers, float64, 25 steps (``tests/parity/test_complex.py`` runs
the long comparison).
"""

import numpy as np
import optax
import pytest

import adam_jax
from tests.helpers import pulled_problem, run_pulled, run_pulled_torch


@pytest.mark.parametrize("amsgrad", [False, True])
def test_complex_params_match_torch(x64, amsgrad):
    """torch.optim.Adam steps the real and imaginary parts apart (view_as_real)."""
    torch = pytest.importorskip("torch")
    p0, noise = pulled_problem(dtype=np.complex128)
    expected = run_pulled_torch(
        lambda ps: torch.optim.Adam(ps, lr=0.05, amsgrad=amsgrad), p0, noise
    )
    actual = run_pulled(adam_jax.adam(0.05, amsgrad=amsgrad), p0, noise)
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14)


def test_complex_params_match_optax(x64):
    """optax keeps the real v of |g|^2 for a complex gradient."""
    p0, noise = pulled_problem(dtype=np.complex128)
    expected = run_pulled(optax.adam(0.05), p0, noise)
    actual = run_pulled(adam_jax.adam(0.05, convention="optax"), p0, noise)
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14)
