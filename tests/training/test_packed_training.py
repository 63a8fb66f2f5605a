"""train.py --packed: the same bits as the unpacked run, on every task, optimizer and option.

The reference is the unpacked run of the same flags (itself tested against NumPy and PyTorch
in tests/test_train.py and tests/training/test_init_from_torch.py). Equal runs have equal
``metrics.jsonl`` lines (losses, learning rates, epsilon metric, held-out scores) and equal
checkpoint checksums: the SHA-256 of every array of the saved state, so equal checksums are
bitwise equal params and optimizer states, in the tree form (a packed state has other shapes).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("flax", reason="adam_jax.training needs the train extra")
pytest.importorskip("orbax.checkpoint", reason="checkpoints need the train extra")

from adam_jax.training import cli, config, optimizers  # noqa: E402
from adam_jax.training.tasks import lm  # noqa: E402
from tests.helpers import checkpoint_checksum, metrics_rows, read_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MASKED = ["--weight-decay-mask", "matrices"]
# name -> flags: the CLI's wiring of --packed with a schedule, a mask, decoupled decay, 16-bit
# params (plain and compensated), a loss scale, and three tasks. Every optimizer and convention
# is checked packed == unpacked at the step itself (tests/test_packed.py); the CLI passes them
# through the same code, so one optimizer of each kind here is enough.
CASES = {
    "seed amsgrad": ["--steps", "9"],
    "seed adamw masked warmup-cosine": ["--steps", "9", "--optimizer", "adamw", *MASKED]
    + ["--weight-decay", "0.5", "--schedule", "warmup-cosine", "--warmup-steps", "3"],
    "seed bfloat16 params": ["--steps", "9", "--param-dtype", "bfloat16"],
    "seed bfloat16 params, compensated": ["--steps", "9", "--param-dtype", "bfloat16"]
    + ["--compensated-rounding"],
    "seed float16 compute, loss scale": ["--steps", "9", "--compute-dtype", "float16"]
    + ["--loss-scale", "64"],
    "digits adam": ["--task", "digits", "--steps", "30", "--log-every", "10"],
    "lm adamw masked": ["--task", "lm", "--steps", "3", "--log-every", "3", "--batch-size", "2"]
    + MASKED,
}


def train(*argv) -> int:
    return cli.main([*map(str, argv), "--quiet"])


@pytest.mark.parametrize("case", CASES)
def test_packed_run_is_bitwise_the_unpacked_run(tmp_path, case):
    flags = CASES[case]
    steps = int(flags[flags.index("--steps") + 1])
    assert train(*flags, "--out", tmp_path / "tree") == 0
    assert train(*flags, "--packed", "--out", tmp_path / "packed") == 0
    tree, packed = metrics_rows(tmp_path / "tree"), metrics_rows(tmp_path / "packed")
    assert [r["step"] for r in tree] == list(range(1, steps + 1))
    assert packed == tree
    assert checkpoint_checksum(tmp_path / "packed", steps) == checkpoint_checksum(
        tmp_path / "tree", steps
    )
    assert read_json(tmp_path / "packed" / "config.json")["args"]["packed"] is True


RESUMED = ["--optimizer", "adamw", *MASKED, "--schedule", "warmup-cosine", "--decay-steps", "16"]
RESUMED += ["--log-every", "5"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """16 unpacked steps of AdamW, masked, with a schedule: the reference of the resumes."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert train(*RESUMED, "--steps", 16, "--out", out) == 0
    return out


@pytest.mark.parametrize("first,then", [("--packed", None), (None, "--packed")])
def test_a_run_resumes_across_forms_bitwise(straight, tmp_path, first, then):
    """8 steps in one form, resumed in the other to 16: the 16 straight unpacked steps."""
    out = tmp_path / "run"
    assert train(*RESUMED, *filter(None, [first]), "--steps", 8, "--out", out) == 0
    assert train("--resume", out, "--steps", 16, *filter(None, [then])) == 0
    assert metrics_rows(out) == metrics_rows(straight)
    assert checkpoint_checksum(out, 16) == checkpoint_checksum(straight, 16)
    history = read_json(out / "config.json")
    assert history["args"]["packed"] is (then == "--packed")  # this command's layout


def test_weight_decay_mask_matrices_decays_weights_and_embeddings_only():
    dtypes = {"param_dtype": np.float32, "dtype": np.float32}
    _, params = lm.init_lm("flax", 0, dtypes)
    mask = optimizers.decay_matrices(params)
    named = {  # the nnx.State's paths end in ".value"
        jax.tree_util.keystr(p).removesuffix(".value"): m
        for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]
    }
    decayed = sorted(k for k, m in named.items() if m)
    assert decayed and all(k.endswith(("['kernel']", "['embedding']")) for k in decayed)
    kept = sorted(k for k, m in named.items() if not m)
    assert kept and all(k.endswith(("['bias']", "['scale']")) for k in kept)
    assert len(named) == 53


def test_weight_decay_mask_reaches_the_optimizer(tmp_path):
    """Biases decayed or not: the losses part after the first step (the step before any
    update is the same)."""
    flags = ["--optimizer", "adamw", "--weight-decay", "5", "--lr", "1e-2", "--steps", "4"]
    assert train(*flags, "--out", tmp_path / "all") == 0
    assert train(*flags, *MASKED, "--out", tmp_path / "matrices") == 0
    every, matrices = metrics_rows(tmp_path / "all"), metrics_rows(tmp_path / "matrices")
    assert every[0]["loss"] == matrices[0]["loss"]
    assert all(a["loss"] != b["loss"] for a, b in zip(every[1:], matrices[1:], strict=True))


def test_a_config_json_without_the_new_settings_resumes(tmp_path):
    """A run written before --packed and --weight-decay-mask existed resumes unpacked and
    undecayed-by-mask, as it ran."""
    out = tmp_path / "run"
    assert train("--steps", 2, "--log-every", 1, "--out", out) == 0
    with open(out / "config.json") as f:
        saved = json.load(f)
    for name in ("packed", "weight_decay_mask"):
        del saved["args"][name]
    with open(out / "config.json", "w") as f:
        json.dump(saved, f)
    resumed = config.resume(str(out), {"steps": 3})
    assert resumed.weight_decay_mask == "all" and resumed.packed is False


MESH_RUNNER = """
import json, shutil, sys
from adam_jax.training import cli
runs, resumes = json.loads(sys.argv[1])
codes = {name: cli.main(argv) for name, argv in runs.items()}
for name, (source, argv) in resumes.items():
    shutil.copytree(source, argv[1])
    codes[name] = cli.main(argv)
print(json.dumps(codes))
"""


def test_fsdp_packed_is_bitwise_fsdp_and_resumes_across_forms_and_meshes(tmp_path):
    """On 8 CPU devices, --fsdp: the packed buffers are split over the devices (unpack
    gathers them in the loss) and give the unpacked FSDP run's bits; a packed FSDP run saved
    at step 6 resumes unpacked on the same mesh bitwise, and packed on one device (float64:
    one device sums the batch in another order, within 1e-12)."""
    base = ["--log-every", "3", "--ckpt-every", "6", "--quiet", "--dtype", "float64", *RESUMED[:4]]
    fsdp = ["--mesh", "8", "--fsdp"]
    dirs = {name: str(tmp_path / name) for name in ("tree", "packed", "half", "back", "one")}
    runs = {
        "tree": [*base, "--steps", "12", *fsdp, "--out", dirs["tree"]],
        "packed": [*base, "--steps", "12", *fsdp, "--packed", "--out", dirs["packed"]],
        "half": [*base, "--steps", "6", *fsdp, "--packed", "--out", dirs["half"]],
    }
    resume = ["--steps", "12", "--quiet"]
    resumes = {
        "back": (dirs["half"], ["--resume", dirs["back"], *resume, *fsdp]),
        "one": (dirs["half"], ["--resume", dirs["one"], *resume, "--packed"]),
    }
    env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    done = subprocess.run(
        [sys.executable, "-c", MESH_RUNNER, json.dumps([runs, resumes])],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    assert codes == dict.fromkeys(codes, 0), codes
    reference = metrics_rows(dirs["tree"])
    assert len(reference) == 12
    for name in ("packed", "back"):
        assert metrics_rows(dirs[name]) == reference, name
        assert checkpoint_checksum(dirs[name], 12) == checkpoint_checksum(dirs["tree"], 12), name
    one = [r["loss"] for r in metrics_rows(dirs["one"])]
    losses = [r["loss"] for r in reference]
    assert one[:6] == losses[:6]  # saved on 8 devices; then one device sums the batch alone
    np.testing.assert_allclose(one, losses, rtol=1e-12)
