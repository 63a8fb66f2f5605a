"""8-bit Adam's state follows row-sharded params with no communication, on 8 CPU devices.

The checks run in one subprocess (tests/distributed/quantized_sharding_checks.py),
since the number of CPU devices is fixed when JAX starts: params sharded along axis
0 with rows shorter than a block (grouped k rows to a block), rows of several blocks
and a stack of matrices; Auto and Explicit axes, each with blocks of 256 and 2048, Adam
in one and AMSGrad in the other. The jitted step's HLO has no collective, codes and
scales keep the rows' sharding, and two steps equal the unsharded run bit for bit. A
sharding that cuts blocks is refused under Explicit axes, and left to XLA under Auto ones.
"""

import pytest

from tests.helpers import run_on_8_cpu_devices


@pytest.fixture(scope="module")
def summary():
    return run_on_8_cpu_devices("quantized_sharding_checks.py")


def test_quantized_state_follows_row_sharded_params_without_collectives(summary):
    failures = "\n".join(f"{f['case']}: {f['check']}: {f['detail']}" for f in summary["failures"])
    assert not summary["failures"], f"{len(summary['failures'])} failures:\n{failures}"
    # 2 axis types x 2 block sizes, Adam (2 moments) in one and AMSGrad (3) in the other, each
    # with 4 params (2 x 45 + 2 x 65 checks), and 12 on blocks that would cross shards.
    assert len(summary["collectives"]) == 4 and summary["checks"] == 232, summary["checks"]
    assert not any(summary["collectives"].values()), summary["collectives"]
