"""``train.py --init-from run.pt``: a PyTorch run of the seed, saved at step 250, continued in JAX.

The reference is PyTorch itself: the seed's PyTorch program's uninterrupted
500 steps (``scripts.seed_pytorch.seed_pytorch``). The checkpoint is
written by ``scripts/seed_pytorch.py --save-at 250`` in the same process
(``torch.save`` of the model's and ``torch.optim.Adam``'s state dicts, and the
data).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from adam_jax.training import cli
from tests.helpers import metrics_rows

pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED_PYTORCH = os.path.join(ROOT, "scripts", "seed_pytorch.py")
SAVE_AT, STEPS = 250, 500


def losses(run_dir) -> tuple[list, np.ndarray]:
    rows = metrics_rows(run_dir)
    return [r["step"] for r in rows], np.asarray([r["loss"] for r in rows])


@pytest.fixture(scope="module", params=["float64", "float32"])
def torch_run(request, tmp_path_factory):
    """(dtype, the .pt at step 250, PyTorch's uninterrupted losses), from one PyTorch process
    (one thread: torch's thread pool on a busy 2-core machine is 8 times slower)."""
    dtype = request.param
    base = tmp_path_factory.mktemp(f"torch-{dtype}")
    pt, npz = base / "run.pt", base / "run.npz"
    done = subprocess.run(
        [sys.executable, SEED_PYTORCH, "--dtype", dtype, "--steps", str(STEPS)]
        + ["--save-at", str(SAVE_AT), "--pt", str(pt), "--out", str(npz), "--quiet"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(npz) as saved:
        return dtype, pt, saved["losses"]


def test_continues_on_pytorchs_trajectory(torch_run, tmp_path):
    dtype, pt, reference = torch_run
    out = tmp_path / "run"
    assert cli.main(["--init-from", pt, "--out", out, "--quiet", "--log-every", "50"]) == 0
    steps, continued = losses(out)
    assert steps == list(range(SAVE_AT + 1, STEPS + 1))  # the step counter goes on from 250
    config = json.load(open(out / "config.json"))["args"]
    assert (config["dtype"], config["optimizer"], config["lr"]) == (dtype, "amsgrad", 1e-4)
    error = np.abs(continued - reference[SAVE_AT:]) / np.abs(reference[SAVE_AT:])
    if dtype == "float64":
        assert error.max() <= 1e-10, error.max()
    else:
        # XLA's and PyTorch's float32 matmuls and sums round differently: the first loss
        # (from the converted state) is 2.5e-7 apart, then the gap grows as in any two float32
        # runs (seed 0: 1.5e-5 by step 300, 3.0e-4 by step 500, where the loss is 2.7e-6).
        assert error[0] <= 1e-6, error[0]
        assert error[:50].max() <= 1e-4, error[:50].max()
        assert error.max() <= 1e-3, error.max()


def test_resume_of_a_continued_run(torch_run, tmp_path):
    """A run continued from PyTorch checkpoints and resumes as any other, bit for bit."""
    _, pt, _ = torch_run
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli.main(["--init-from", pt, "--out", straight, "--quiet"]) == 0
    assert cli.main(["--init-from", pt, "--out", split, "--quiet", "--steps", "300"]) == 0
    assert cli.main(["--resume", split, "--steps", STEPS, "--quiet"]) == 0
    np.testing.assert_array_equal(losses(split)[1], losses(straight)[1])


@pytest.mark.parametrize(
    ("flags", "flag", "words"),
    [
        (["--lr", "0.01"], "--lr", "continues with 0.0001"),
        (["--optimizer", "adam"], "--optimizer", "continues with amsgrad"),
        (["--convention", "optax"], "--convention", "continues with pytorch"),
        (["--batch-size", "32"], "--batch-size", "holds N=64"),
    ],
)
def test_flags_that_contradict_the_file(torch_run, tmp_path, capsys, flags, flag, words):
    _, pt, _ = torch_run
    out = tmp_path / "run"
    assert cli.main(["--init-from", pt, "--out", out, "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"argument {flag}: " in err and words in err, err
    assert not out.exists()


def test_not_a_seed_checkpoint(tmp_path, capsys):
    import torch

    pt = tmp_path / "model-only.pt"
    torch.save({"model": torch.nn.Linear(2, 1).state_dict()}, pt)
    assert cli.main(["--init-from", pt, "--out", tmp_path / "run", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "argument --init-from: cannot read" in err and "'optimizer'" in err
    assert not (tmp_path / "run").exists()


def test_a_continued_run_packed_is_bitwise_the_unpacked_run(torch_run, tmp_path):
    """The converted PyTorch state packs like any other (``--packed``): the same losses and
    the same final checkpoint (checksum of every saved array, in the tree form)."""
    _, pt, _ = torch_run
    flags = ["--init-from", pt, "--steps", SAVE_AT + 20, "--log-every", "10", "--quiet"]
    for name, packed in (("tree", []), ("packed", ["--packed"])):
        assert cli.main([*map(str, flags), *packed, "--out", str(tmp_path / name)]) == 0
    assert metrics_rows(tmp_path / "packed") == metrics_rows(tmp_path / "tree")
    checksum = os.path.join("checkpoints", str(SAVE_AT + 20), "checksum", "metadata")
    sums = [json.load(open(tmp_path / name / checksum)) for name in ("tree", "packed")]
    assert sums[0] == sums[1]
