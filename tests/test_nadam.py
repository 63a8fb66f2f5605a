"""``adam_jax.nadam`` against the real ``torch.optim.NAdam`` and ``optax.nadam`` (float64).

Small and fast: one array pulled towards 0, 25 steps. NAdam's momentum schedule, its look-ahead
momentum and optax's Nesterov correction each change these trajectories; ``tests/parity/``
compares more cases over 300 steps.
"""

import numpy as np
import optax
import pytest

import adam_jax
from tests.helpers import pulled_problem, run_pulled, run_pulled_torch


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum_decay": 0.05}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled": True}],
    ids=["default", "psi", "coupled", "decoupled"],
)
def test_nadam_matches_torch(x64, kwargs):
    torch = pytest.importorskip("torch")
    p0, noise = pulled_problem()
    wd = kwargs.get("weight_decay", 0.0)
    decoupled = kwargs.get("decoupled", False)
    psi = kwargs.get("momentum_decay", 4e-3)
    expected = run_pulled_torch(
        lambda ps: torch.optim.NAdam(
            ps, lr=0.05, weight_decay=wd, momentum_decay=psi, decoupled_weight_decay=decoupled
        ),
        p0,
        noise,
    )
    ours = adam_jax.nadam(
        0.05,
        momentum_decay=kwargs.get("momentum_decay"),
        weight_decay=wd,
        decoupled_weight_decay=decoupled,
    )
    np.testing.assert_allclose(run_pulled(ours, p0, noise), expected, rtol=1e-12, atol=1e-14)


def test_nadam_matches_optax(x64):
    p0, noise = pulled_problem()
    expected = run_pulled(optax.nadam(0.05), p0, noise)
    actual = run_pulled(adam_jax.nadam(0.05, convention="optax"), p0, noise)
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14)
