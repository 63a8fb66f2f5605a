"""The optimizer state follows the params' sharding: every optimizer, on 8 CPU devices.

The checks run in one subprocess (tests/distributed/sharding_checks.py), since
the number of CPU devices is fixed when JAX starts: meshes (8,) and (2, 4),
Explicit and Auto axes, specs P("data"), P(None, "model"), P("data", "model")
and replicated, float32 and bfloat16 params (float32 moments). For each
optimizer: init eagerly (outside and inside the mesh context) and under jit
(Explicit: by propagation; Auto: with ``opt_state_shardings`` as
``out_shardings``), ``jax.eval_shape(tx.init)``, a jitted update, and a jitted
``lax.scan`` of steps whose results equal the unsharded run.
"""

import pytest

from tests.helpers import run_on_8_cpu_devices


@pytest.fixture(scope="module")
def summary():
    return run_on_8_cpu_devices("sharding_checks.py")


def test_state_follows_params_for_every_optimizer(summary):
    failures = "\n".join(f"{f['case']}: {f['check']}: {f['detail']}" for f in summary["failures"])
    assert not summary["failures"], f"{len(summary['failures'])} failures:\n{failures}"
    # Every case ran: 5 optax optimizers x 4 Explicit cases with a scan, plus fused init.
    assert summary["checks"] > 5000, summary["checks"]
    names = ("adam", "amsgrad", "adamw", "adam_atan2", "scale_by_adam")
    assert set(summary["max_ulps_vs_unsharded"]) == {
        f"{name} {part}" for name in names for part in ("state", "params")
    }


def test_sharded_moments_are_bitwise_the_unsharded_ones(summary):
    """sqrt and division are correctly rounded: sharding changes no bit of Adam's state."""
    ulps = summary["max_ulps_vs_unsharded"]
    for name in ("adam", "amsgrad", "adamw", "scale_by_adam"):
        assert ulps[f"{name} state"] == 0, ulps
