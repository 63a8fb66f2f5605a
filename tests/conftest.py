"""Shared test setup: rank promotion raises, so silent broadcasting fails."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Runs the test with ``jax_enable_x64`` on, restoring it afterwards."""
    with jax.enable_x64(True):
        yield
