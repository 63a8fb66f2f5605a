"""The pacing of the compiled chunk's calls: one step first, then about ``target_s`` each."""

import time

import pytest

from adam_jax.training.pacing import Pacer


def test_first_call_is_one_step_then_about_target_seconds():
    pacer = Pacer(target_s=0.05)
    assert pacer.steps(room=100) == 1 and pacer.seconds_left() is None
    pacer.start(1)
    time.sleep(0.02)
    pacer.finish()
    assert 0.02 <= pacer.seconds_per_step < 0.2
    assert pacer.steps(room=100) == int(0.05 / pacer.seconds_per_step) <= 2
    pacer.seconds_per_step = 1e-4  # fast steps: up to the boundary, never past it
    assert pacer.steps(room=100) == 100 and pacer.steps(room=7) == 7
    pacer.seconds_per_step = 10.0  # a step slower than the target: still one step
    assert pacer.steps(room=100) == 1


def test_seconds_left_counts_down_the_call_in_flight():
    pacer = Pacer(target_s=1.0)
    pacer.seconds_per_step = 0.5
    pacer.start(4)
    left = pacer.seconds_left()
    assert left is not None and 1.9 < left <= 2.0
    pacer.finish()
    assert pacer.seconds_left() is None


def test_fixed_pacing_runs_to_the_boundary():
    pacer = Pacer(adaptive=False)
    assert pacer.steps(room=37) == 37
    with pytest.raises(ValueError, match="target_s"):
        Pacer(target_s=0)
