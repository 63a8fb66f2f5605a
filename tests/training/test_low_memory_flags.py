"""train.py's low-memory flags: --state-dtype, --quant-block-size, --quant-min-size,
--quant-rounding, --stochastic-rounding, --compensated-rounding (docs/memory.md).

The reference is adam_jax's factories called directly with the arguments the flags stand
for (themselves tested against a float64 NumPy model and bitsandbytes in
tests/test_quantize.py and tests/test_lowmem_bitsandbytes.py).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax", reason="adam_jax.training needs the train extra")
pytest.importorskip("orbax.checkpoint", reason="checkpoints need the train extra")

import adam_jax  # noqa: E402
from adam_jax.training import checkpoint, cli, config, flags, loop, metrics, optimizers  # noqa: E402
from adam_jax.training.rundir import read_config  # noqa: E402
from adam_jax.training.tasks import TASKS  # noqa: E402
from tests.helpers import checkpoint_checksum, full_batch_steps, metrics_rows, read_json  # noqa: E402

FACTORIES = {
    "adam": adam_jax.adam,
    "amsgrad": adam_jax.amsgrad,
    "adamw": adam_jax.adamw,
    "nadam": adam_jax.nadam,
}
# flags -> the factory's keyword arguments they stand for (--rng-seed 0: rounding seed 2**31).
MOMENT_SEED = 2**30  # --quant-rounding stochastic's seed at --rng-seed 0
LOW_MEMORY = [
    (["--state-dtype", "8bit"], {"quantized_state": adam_jax.BlockQuantization(seed=MOMENT_SEED)}),
    (
        ["--state-dtype", "8bit", "--quant-block-size", "64", "--quant-min-size", "0"],
        {
            "quantized_state": adam_jax.BlockQuantization(
                block_size=64, min_size=0, seed=MOMENT_SEED
            )
        },
    ),
    (
        ["--state-dtype", "8bit", "--quant-rounding", "stochastic"],
        {"quantized_state": adam_jax.BlockQuantization(rounding="stochastic", seed=MOMENT_SEED)},
    ),
    (["--state-dtype", "bfloat16"], {"mu_dtype": "bfloat16", "nu_dtype": "bfloat16"}),
    (
        ["--param-dtype", "bfloat16", "--stochastic-rounding"],
        {"param_rounding": "stochastic", "rounding_seed": 2**31},
    ),
    (["--param-dtype", "float16", "--compensated-rounding"], {"param_rounding": "compensated"}),
    (
        ["--state-dtype", "8bit", "--param-dtype", "bfloat16", "--compensated-rounding"],
        {
            "quantized_state": adam_jax.BlockQuantization(seed=MOMENT_SEED),
            "param_rounding": "compensated",
        },
    ),
]


def settings(argv) -> config.RunConfig:
    given, _ = flags.parse([*argv, "--out", "never-written"])
    return config.resolve(given)


def make_problem(run: config.RunConfig):
    """The task's problem with the dtypes train.py gives it."""
    dtypes = {"param_dtype": jnp.dtype(run.param_dtype), "dtype": jnp.dtype(run.compute_dtype)}
    return TASKS[run.task].make_problem(run, dtypes)


def train(*argv) -> int:
    return cli.main([*map(str, argv), "--quiet"])


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize(("argv", "kwargs"), LOW_MEMORY)
def test_flags_build_the_factorys_optimizer(name, argv, kwargs):
    run = settings(["--optimizer", name, "--lr", "0.01", *argv])
    built = optimizers.make_optimizer(run)
    assert built.spec == FACTORIES[name](0.01, **kwargs).spec


def test_a_run_is_the_factory_stepped_directly_bit_for_bit(tmp_path):
    """4 steps of the seed through train.py against adam_jax.adamw(..., quantized_state=...,
    param_rounding=...) stepped by hand: the same params and optimizer state, bit for bit."""
    out = tmp_path / "run"
    argv = ["--optimizer", "adamw", "--lr", "1e-3", "--state-dtype", "8bit"]
    argv += ["--quant-block-size", "128", "--param-dtype", "bfloat16", "--stochastic-rounding"]
    assert train(*argv, "--steps", 4, "--log-every", 4, "--out", out) == 0

    problem = make_problem(settings(argv))
    opt = adam_jax.adamw(
        1e-3,
        quantized_state=adam_jax.BlockQuantization(block_size=128, seed=MOMENT_SEED),
        param_rounding="stochastic",
        rounding_seed=2**31,
    )
    params, opt_state, losses = full_batch_steps(problem, opt, 4)
    assert [row["loss"] for row in metrics_rows(out)] == losses
    like = loop.TrainState(jnp.asarray(4, jnp.int32), params, opt_state, loop.data_key(0))
    restored = checkpoint.restore(str(out), like).state
    for ours, theirs in zip(
        jax.tree.leaves((restored.params, restored.opt_state)),
        jax.tree.leaves((params, opt_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_resume_is_bitwise_with_8bit_state_and_stochastic_rounding(tmp_path):
    """8 steps straight against 4 steps and --resume to 8: the codes, the scales and the
    rounding key come back from the checkpoint, so every loss and array is equal."""
    argv = ["--state-dtype", "8bit", "--param-dtype", "bfloat16", "--stochastic-rounding"]
    argv += ["--log-every", "2", "--ckpt-every", "4"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(*argv, "--steps", 8, "--out", straight) == 0
    assert train(*argv, "--steps", 4, "--out", resumed) == 0
    assert train("--resume", resumed, "--steps", 8) == 0
    assert metrics_rows(resumed) == metrics_rows(straight)
    assert checkpoint_checksum(resumed, 8) == checkpoint_checksum(straight, 8)
    args = read_json(resumed / "config.json")["args"]
    assert (args["state_dtype"], args["stochastic_rounding"]) == ("8bit", True)

    # The summary's bytes per param: the state's arrays, counted here from a fresh init.
    problem = make_problem(settings(argv))
    state = adam_jax.amsgrad(
        1e-4,
        quantized_state=adam_jax.BlockQuantization(),
        param_rounding="stochastic",
        rounding_seed=2**31,
    ).init(problem.params)
    size = sum(np.asarray(p).size for p in jax.tree.leaves(problem.params))
    expected = sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)) / size
    summary = read_json(resumed / "summary.json")
    assert summary["opt_state_bytes_per_param"] == expected < 3.3  # float32 AMSGrad: 12


def test_a_config_json_without_the_new_keys_resumes_with_their_defaults(tmp_path):
    run = settings(["--task", "digits"])
    args = run.to_json()
    for name in config.ADDED:  # every setting added since the first config.json files
        del args[name]
    (tmp_path / "config.json").write_text(json.dumps({"args": args}))
    assert read_config(str(tmp_path / "config.json"))["args"] == args
    resumed = config.resume(str(tmp_path), {})
    assert resumed.state_dtype is None and resumed.quant_block_size is None
    assert resumed.stochastic_rounding is False and resumed.compensated_rounding is False
    assert optimizers.make_optimizer(resumed).spec == optimizers.make_optimizer(run).spec


@pytest.mark.parametrize("task", sorted(TASKS))
def test_each_task_takes_the_flags_and_the_state_shrinks(task):
    """AdamW with 8-bit moments and bfloat16 params on each task's model, its state measured
    from its arrays: on the lm task at most the 2.1 B/param asked (float32 moments: 8);
    digits and the seed have more of their params in small leaves kept in float32."""
    argv = ["--task", task, "--optimizer", "adamw", "--state-dtype", "8bit"]
    argv += ["--param-dtype", "bfloat16", "--stochastic-rounding"]
    run = settings(argv)
    params = make_problem(run).params
    state = optimizers.make_optimizer(run).init(params)
    quantized = [x for x in jax.tree.leaves(state, is_leaf=_is_quantized) if _is_quantized(x)]
    assert quantized and all(q.codes.dtype == np.uint8 for q in quantized)
    assert metrics.bytes_per_param(state, params) <= {"lm": 2.1, "seed": 2.2, "digits": 3.0}[task]


def _is_quantized(x) -> bool:
    return isinstance(x, adam_jax.QuantizedArray)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--state-dtype", "int8"], ["--state-dtype"]),
        (["--state-dtype", "bfloat16", "--nu-dtype", "float32"], ["--state-dtype", "--nu-dtype"]),
        (["--state-dtype", "8bit", "--mu-dtype", "float32"], ["--state-dtype", "--mu-dtype"]),
        (["--state-dtype", "8bit", "--quant-block-size", "100"], ["--quant-block-size"]),
        (["--state-dtype", "8bit", "--quant-block-size", "16"], ["--quant-block-size"]),
        (["--state-dtype", "8bit", "--quant-min-size", "-1"], ["--quant-min-size"]),
        (["--quant-block-size", "256"], ["--quant-block-size", "--state-dtype"]),
        (["--state-dtype", "float16", "--quant-min-size", "0"], ["--quant-min-size"]),
        (["--quant-rounding", "stochastic"], ["--quant-rounding", "--state-dtype"]),
        (["--stochastic-rounding"], ["--stochastic-rounding", "--param-dtype"]),
        (
            ["--param-dtype", "float32", "--compensated-rounding"],
            ["--compensated-rounding", "--param-dtype"],
        ),
        (
            ["--param-dtype", "bfloat16", "--stochastic-rounding", "--compensated-rounding"],
            ["--compensated-rounding", "--stochastic-rounding"],
        ),
        (["--dtype", "float64", "--state-dtype", "8bit"], ["--state-dtype", "--param-dtype"]),
        (["--optimizer", "adam_atan2", "--state-dtype", "8bit"], ["--state-dtype"]),
        (
            ["--optimizer", "adam_atan2", "--param-dtype", "bfloat16", "--stochastic-rounding"],
            ["--stochastic-rounding"],
        ),
        (["--packed", "--state-dtype", "8bit"], ["--packed", "--state-dtype"]),
        (
            ["--packed", "--param-dtype", "bfloat16", "--stochastic-rounding"],
            ["--packed", "--stochastic-rounding"],
        ),
    ],
)
def test_bad_low_memory_flags_exit_2_naming_them(tmp_path, capsys, argv, named):
    out = tmp_path / "run"
    assert cli.main([*argv, "--steps", "1", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("train.py: error: argument "), err
    assert all(flag in err for flag in named), err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--state-dtype", "8bit"], ["--compensated-rounding"]])
def test_a_pytorch_checkpoint_refuses_them(tmp_path, argv):
    """--init-from FILE.pt goes on with PyTorch's float32 state: the flags cannot apply."""
    torch = pytest.importorskip("torch")
    pt = tmp_path / "run.pt"
    group = {"amsgrad": True, "lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8}
    saved = {"model": {}, "optimizer": {"state": {}, "param_groups": [group]}}
    torch.save(saved | {"x": torch.zeros(64, 1000), "y": torch.zeros(64, 10)}, pt)
    given, _ = flags.parse(["--init-from", str(pt), *argv, "--out", str(tmp_path / "never")])
    with pytest.raises(config.ConfigError, match=f"argument {argv[0]}: .* continues PyTorch"):
        config.resolve(given)
