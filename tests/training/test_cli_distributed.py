"""train.py on a mesh and across processes: losses, checkpoints across layouts, flag errors.

The runs go through the command line (``adam_jax.training.cli.main``, what
``scripts/train.py`` calls) in one subprocess with 8 virtual CPU devices, and
through ``scripts/launch.py`` as 2 processes x 2 devices. The reference is
always the single-device run of the same flags, read from ``metrics.jsonl``.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from adam_jax.training import cli
from tests.helpers import metrics_rows

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(ROOT, "scripts", "launch.py")
TRAIN = os.path.join(ROOT, "scripts", "train.py")
SEED_PYTORCH = os.path.join(ROOT, "scripts", "seed_pytorch.py")
STEPS, HALF = 100, 50
# PyTorch's run saved at step TORCH_SAVED, continued to TORCH_END by train.py on 8 devices
# (tests/training/test_init_from_torch.py continues it to 500 on one device).
TORCH_SAVED, TORCH_END = 250, 300
SEED = ["--steps", str(STEPS), "--log-every", "25", "--quiet"]
# 8-bit moments in blocks of 128 (one row of the seed's (1000, 100) weight each): a shard of
# 125 rows holds whole blocks.
EIGHT_BIT = ["--steps", "20", "--log-every", "10", "--quiet", "--state-dtype", "8bit"]
EIGHT_BIT += ["--quant-block-size", "128"]
# Runs in one process, in order: name -> argv (--out added). The resumed runs start from a
# copy of "saved" (float64, FSDP on 8 devices, stopped at step 50).
RUNS = {
    "single64": [*SEED, "--dtype", "float64"],
    "dp8_64": [*SEED, "--dtype", "float64", "--mesh", "8"],
    "fsdp8_64": [*SEED, "--dtype", "float64", "--mesh", "8", "--fsdp"],
    "fsdp4_64": [*SEED, "--dtype", "float64", "--mesh", "4", "--fsdp"],
    "single32": SEED,
    "dp8_32": [*SEED, "--mesh", "8"],
    "fsdp8_32": [*SEED, "--mesh", "8", "--fsdp"],
    "saved": ["--steps", str(HALF), *SEED[2:], "--dtype", "float64", "--mesh", "8", "--fsdp"],
    "digits8": ["--task", "digits", "--steps", "300", "--quiet", "--mesh", "8", "--fsdp"],
    "lm_single": ["--task", "lm", "--steps", "3", "--quiet"],
    # 2 of the 8 devices: the lookup needs batch-split tokens, not 8 of them (3x the time).
    "lm_fsdp2": ["--task", "lm", "--steps", "3", "--quiet", "--mesh", "2", "--fsdp"],
    "single_8bit": EIGHT_BIT,
    "dp8_8bit": [*EIGHT_BIT, "--mesh", "8"],
    "fsdp8_8bit": [*EIGHT_BIT, "--mesh", "8", "--fsdp"],
    # Blocks of 256 hold 2 rows of the seed's (1000, 100) weight; 8 shards of 125 rows cut them.
    "fsdp8_8bit_cut": [*EIGHT_BIT[:-2], "--mesh", "8", "--fsdp"],
}
REFUSED = {"fsdp8_8bit_cut": 2}  # runs whose exit code is not 0
RESUMED = {  # name -> placement flags of the resumed half
    "resumed_fsdp8": ["--mesh", "8", "--fsdp"],
    "resumed_dp4": ["--mesh", "4"],
    "resumed_fsdp2": ["--mesh", "2", "--fsdp"],
    "resumed_mesh1": ["--mesh", "1"],
    "resumed_single": [],
}
RUNNER = """
import json, shutil, sys
from adam_jax.training import cli
runs, resumed, saved, steps = json.loads(sys.argv[1])
codes = {name: cli.main(argv) for name, argv in runs.items()}
for name, (path, flags) in resumed.items():
    shutil.copytree(saved, path)
    codes[name] = cli.main(["--resume", path, "--steps", str(steps), "--quiet", *flags])
print(json.dumps(codes))
"""


def environment(devices: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def losses(run_dir) -> np.ndarray:
    return np.asarray([row["loss"] for row in metrics_rows(run_dir)])


def relative(a, b) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of RUNS and RESUMED in one 8-device process: name -> run directory."""
    base = tmp_path_factory.mktemp("mesh")
    dirs = {name: str(base / name) for name in (*RUNS, *RESUMED, "torch8")}
    argvs = {name: [*argv, "--out", dirs[name]] for name, argv in RUNS.items()}
    # PyTorch's run of the seed saved at step TORCH_SAVED, continued with FSDP on 8 devices.
    pt, npz = base / "run.pt", base / "run.npz"
    pytorch = [sys.executable, SEED_PYTORCH, "--dtype", "float64", "--steps", str(TORCH_END)]
    pytorch += ["--save-at", str(TORCH_SAVED), "--pt", str(pt), "--out", str(npz), "--quiet"]
    done = subprocess.run(
        pytorch, capture_output=True, text=True, env=environment(None) | {"OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    argvs["torch8"] = ["--init-from", str(pt), "--steps", str(TORCH_END), "--quiet"]
    argvs["torch8"] += ["--mesh", "8", "--fsdp"]
    argvs["torch8"] += ["--out", dirs["torch8"]]
    resumed = {name: (dirs[name], flags) for name, flags in RESUMED.items()}
    payload = json.dumps([argvs, resumed, dirs["saved"], STEPS])
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, payload],
        capture_output=True,
        text=True,
        env=environment(8),
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    assert codes == dict.fromkeys(codes, 0) | REFUSED, codes
    dirs["pytorch_losses"] = str(npz)
    return dirs


@pytest.mark.parametrize("layout", ["dp8", "fsdp8", "fsdp4"])
def test_float64_losses_equal_single_device(runs, layout):
    single = losses(runs["single64"])
    sharded = losses(runs[f"{layout}_64"])
    assert len(sharded) == STEPS
    assert relative(sharded, single) <= 1e-12


@pytest.mark.parametrize("layout", ["dp8", "fsdp8"])
def test_float32_losses_within_reduction_order(runs, layout):
    """The batch's sum splits into 8 partial sums: float32 rounds them differently."""
    single, sharded = losses(runs["single32"]), losses(runs[f"{layout}_32"])
    assert relative(sharded, single) <= 1.5e-5


@pytest.mark.parametrize("layout", ["dp8", "fsdp8"])
def test_8bit_state_on_8_devices(runs, layout):
    """The quantized moments follow the params' shards; the losses differ from one device's
    only by the batch sum's order (float32)."""
    single, sharded = losses(runs["single_8bit"]), losses(runs[f"{layout}_8bit"])
    assert len(sharded) == 20 and relative(sharded, single) <= 1.5e-5
    assert not os.path.exists(runs["fsdp8_8bit_cut"])  # refused before anything was written


def test_run_files_record_the_mesh(runs):
    config = json.load(open(os.path.join(runs["fsdp8_64"], "config.json")))
    assert config["args"]["mesh"] == 8 and config["args"]["fsdp"] is True
    assert config["device"]["count"] == 8 and config["device"]["processes"] == 1


def test_digits_on_8_devices(runs):
    summary = json.load(open(os.path.join(runs["digits8"], "summary.json")))
    assert summary["status"] == "completed"
    assert summary["test_accuracy"] >= 0.95


def test_lm_on_a_mesh(runs):
    """The token embedding's lookup of batch-split tokens (it needs its output sharding)."""
    single, sharded = losses(runs["lm_single"]), losses(runs["lm_fsdp2"])
    assert len(sharded) == 3
    assert relative(sharded, single) <= 1e-5


def test_pytorch_run_continued_on_8_devices(runs):
    """--init-from a torch.save checkpoint of step 250 with --mesh 8 --fsdp: PyTorch's own
    steps 251 to 300."""
    with np.load(runs["pytorch_losses"]) as saved:
        reference = saved["losses"][TORCH_SAVED:]
    continued = losses(runs["torch8"])
    assert len(continued) == TORCH_END - TORCH_SAVED
    assert relative(continued, reference) <= 1e-10


def test_resume_on_the_same_mesh_is_bitwise(runs):
    np.testing.assert_array_equal(losses(runs["resumed_fsdp8"]), losses(runs["fsdp8_64"]))


@pytest.mark.parametrize(
    "name", ["resumed_dp4", "resumed_fsdp2", "resumed_mesh1", "resumed_single"]
)
def test_resume_on_another_mesh(runs, name):
    """Saved on 8 devices, resumed on 4, 2, 1 and none: the first half is the saved run's,
    the second differs from the 8-device run only by the batch sum's order."""
    resumed, straight = losses(runs[name]), losses(runs["fsdp8_64"])
    np.testing.assert_array_equal(resumed[:HALF], straight[:HALF])
    assert relative(resumed, straight) <= 1e-12
    np.testing.assert_array_equal(losses(runs["saved"]), straight[:HALF])


def test_two_processes_equal_one(runs, tmp_path):
    """2 processes x 2 devices (gloo on loopback) against 1 process x 4 devices."""
    out = tmp_path / "two"
    argv = [*SEED, "--dtype", "float64", "--mesh", "4", "--fsdp", "--out", str(out)]
    launch = [sys.executable, LAUNCH, "-n", "2", "--cpu-devices", "2", "--timeout", "300"]
    done = subprocess.run(
        [*launch, "--", sys.executable, TRAIN, *argv],
        capture_output=True,
        text=True,
        env=environment(None),
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "[p0] run written to" in done.stdout and "[p1] run written" not in done.stdout
    config = json.load(open(out / "config.json"))
    assert config["device"] == config["device"] | {"count": 4, "processes": 2}
    # Gloo's cross-process sums add in another order than one process's: not bitwise.
    assert relative(losses(out), losses(runs["fsdp4_64"])) <= 1e-12
    assert sorted(os.listdir(out / "checkpoints")) == [str(STEPS)]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--fsdp"], "--fsdp"),
        (["--mesh", "3"], "--mesh"),  # 64 rows do not split over 3
        (["--mesh", "-1"], "--mesh"),
        (["--mesh", "64"], "--mesh"),  # more devices than there are
        (["--coordinator", "localhost"], "--coordinator"),
        (["--coordinator", "localhost:0"], "--coordinator"),
        (["--coordinator", "localhost:1234"], "--num-processes"),
        (["--num-processes", "2", "--process-id", "0"], "--coordinator"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id"),
        (["--task", "digits", "--batch-size", "60", "--mesh", "8"], "--mesh"),
    ],
)
def test_bad_placement_flags(tmp_path, capsys, argv, flag):
    out = tmp_path / "run"
    assert cli.main([*argv, "--steps", "1", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"argument {flag}" in err, err
    assert not out.exists()


def test_resume_takes_this_commands_placement(tmp_path, capsys):
    """--mesh on --resume is allowed (a layout), other arithmetic flags are not."""
    out = tmp_path / "run"
    assert cli.main(["--steps", "2", "--log-every", "1", "--quiet", "--out", str(out)]) == 0
    saved = tmp_path / "copy"
    shutil.copytree(out, saved)
    assert cli.main(["--resume", str(saved), "--steps", "3", "--quiet", "--lr", "1"]) == 2
    assert "argument --lr: cannot change on --resume" in capsys.readouterr().err
    assert cli.main(["--resume", str(out), "--steps", "3", "--quiet", "--mesh", "1"]) == 0
    assert len(losses(out)) == 3


def _process(marker: str, process_id: int) -> int | None:
    """The pid of the train.py process ``process_id`` whose command line holds ``marker``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        ours = marker in cmdline and "train.py" in cmdline
        if ours and f"JAX_PROCESS_ID={process_id}" in environ:
            return int(pid)
    return None


def _launch_until_checkpoint(out, *flags):
    """A long 2 x 2 run of train.py into ``out``, once its checkpoint of step 25 is written:
    (the launcher, the pid of train.py process 1)."""
    argv = ["--steps", "100000", "--log-every", "25", "--ckpt-every", "25", "--quiet"]
    argv += ["--dtype", "float64", "--mesh", "4", "--fsdp", "--out", str(out), *flags]
    launch = [sys.executable, LAUNCH, "-n", "2", "--cpu-devices", "2", "--timeout", "300"]
    launcher = subprocess.Popen(
        [*launch, "--", sys.executable, TRAIN, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(None),
    )
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "25").is_dir() and time.monotonic() < deadline:
        if launcher.poll() is not None:
            raise AssertionError(launcher.communicate())
        time.sleep(0.1)
    victim = _process(str(out), 1)
    assert victim is not None
    return launcher, victim


def test_a_dead_process_stops_the_run_which_resumes_elsewhere(runs, tmp_path):
    """Process 1 of 2 is killed after the first checkpoint: launch.py stops process 0 and
    names the dead one; the run resumes from its newest checkpoint on one device (this
    process's)."""
    out = tmp_path / "killed"
    launcher, victim = _launch_until_checkpoint(out)
    try:
        os.kill(victim, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert "launch.py: process 1 of 2 exited with status -9" in stderr, stderr[-2000:]
    kept = max(int(s) for s in os.listdir(out / "checkpoints") if s.isdigit())
    assert 25 <= kept < STEPS, kept
    assert cli.main(["--resume", out, "--steps", STEPS, "--quiet"]) == 0
    resumed = losses(out)
    assert len(resumed) == STEPS
    assert relative(resumed, losses(runs["fsdp4_64"])) <= 1e-12


def test_watchdog_stops_a_run_whose_peer_hangs(tmp_path):
    """Process 1 stopped (SIGSTOP) sends no heartbeats, but JAX waits 100 s to say so;
    process 0's --watchdog 10 ends it sooner, with one line, and launch.py the run."""
    out = tmp_path / "hung"
    launcher, victim = _launch_until_checkpoint(out, "--watchdog", "10")
    started = time.monotonic()
    try:
        os.kill(victim, signal.SIGSTOP)
        stdout, stderr = launcher.communicate(timeout=90)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert time.monotonic() - started < 60
    assert "launch.py: process 0 of 2 exited with status 70" in stderr, stderr[-2000:]
    assert "[p0] adam_jax watchdog: process 0 finished no step for" in stdout, stdout[-2000:]
