"""The flags of ``scripts/train.py``: argparse reads the command line into settings.

argparse checks the syntax (an integer, a number, one of the choices); the values' ranges
and relations are checked by :class:`~adam_jax.training.config.RunConfig`, the same code
that checks a ``config.json`` on ``--resume``. Every flag ``--name-x`` sets the setting
``name_x`` (``config.flag`` maps the one to the other); a flag not given reads ``None``.
"""

import argparse
from typing import Any

import adam_jax
from adam_jax.training import config, optimizers
from adam_jax.training.tasks import TASKS

PROG = "train.py"
DESCRIPTION = """Train with adam_jax on a registered task (see docs/training.md).

    train.py                                     # the seed's run
    train.py --task digits                       # >= 95% test accuracy
    train.py --optimizer adam --convention optax --steps 100
    train.py --init-from seed_torch.npz          # PyTorch's weights and data
    train.py --compute-dtype bfloat16            # mixed precision
    train.py --resume runs/seed-20261125-101500 --steps 1000
    train.py --mesh 8 --fsdp                     # 8 devices, params and state sharded
    train.py --task lm --packed                  # params and state as flat buffers
    train.py --task lm --state-dtype 8bit --param-dtype bfloat16 --stochastic-rounding
                                                 # 8-bit moments, bfloat16 params
    train.py --init-from run.pt --dtype float64  # continue a PyTorch run (seed task)

Exit codes: 0 done; 1 stopped early (non-finite loss or state, a failed write);
2 bad input (one line on stderr, nothing written); 70 --watchdog fired; 130 Ctrl-C.
"""


class UsageError(Exception):
    """Bad command-line syntax or value, as argparse words it (it names the flag)."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _task_defaults(name: str) -> str:
    return ", ".join(f"{task_name} {task.defaults[name]}" for task_name, task in TASKS.items())


def build_parser() -> Parser:
    """The parser; every default is ``None`` (unset: ``config.resolve`` fills it in)."""
    p = Parser(
        prog=PROG,
        description=DESCRIPTION,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = config.DEFAULTS

    def switch(group, name: str, text: str):  # absent: None, like every other flag
        group.add_argument(config.flag(name), action="store_true", default=None, help=text)

    task = p.add_argument_group("task")
    task.add_argument(
        "--task",
        choices=sorted(TASKS),
        help="; ".join(f"{name}: {t.summary}" for name, t in TASKS.items()).replace("%", "%%")
        + f" (default {defaults['task']})",
    )
    task.add_argument(
        "--steps", type=int, metavar="N", help=f"optimizer steps ({_task_defaults('steps')})"
    )
    task.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"samples per step ({_task_defaults('batch_size')})",
    )
    task.add_argument(
        "--rng-seed",
        type=int,
        metavar="S",
        help="PRNG seed of weights, data, split and minibatch order, "
        f"0 to 2**31 - 1 ({defaults['rng_seed']})",
    )
    task.add_argument("--init", choices=config.INITS, help="weight init (torch)")
    task.add_argument(
        "--init-from",
        help="seed task: .npz (weights, data) or .pt (a PyTorch run to continue) "
        "of scripts/seed_pytorch.py",
    )
    opt = p.add_argument_group("optimizer")
    opt.add_argument(
        "--optimizer",
        choices=sorted(optimizers.OPTIMIZERS),
        help=f"({_task_defaults('optimizer')})",
    )
    opt.add_argument(
        "--convention", choices=sorted(adam_jax.CONVENTIONS), help="epsilon convention (pytorch)"
    )
    opt.add_argument("--lr", type=float, help=f"peak learning rate ({_task_defaults('lr')})")
    opt.add_argument("--schedule", choices=config.SCHEDULES, help="(constant)")
    opt.add_argument("--warmup-steps", type=int, metavar="N", help="default: 10%% of the steps")
    opt.add_argument(
        "--decay-steps", type=int, metavar="N", help="schedule length; default --steps"
    )
    opt.add_argument("--b1", type=float, help=f"({defaults['b1']})")
    opt.add_argument("--b2", type=float, help=f"({defaults['b2']})")
    opt.add_argument("--eps", type=float, help=f"Adam's epsilon ({defaults['eps']})")
    opt.add_argument("--eps-root", type=float, help=f"({defaults['eps_root']})")
    opt.add_argument("--weight-decay", type=float, help="default: the optimizer's")
    opt.add_argument(
        "--weight-decay-mask",
        choices=optimizers.WEIGHT_DECAY_MASKS,
        help="which params weight decay applies to: all, or matrices (params of 2 or more "
        f"axes; biases and norms not decayed) ({defaults['weight_decay_mask']})",
    )
    opt.add_argument(
        "--momentum-decay",
        type=float,
        help="nadam's momentum schedule psi; default: the convention's "
        "(pytorch and paper 0.004, keras 1, optax none)",
    )
    prec = p.add_argument_group("precision")
    prec.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help="data, master params and loss (default float32, or the --init-from file's)",
    )
    prec.add_argument(
        "--param-dtype", choices=config.FLOAT_DTYPES, help="params' storage (default --dtype)"
    )
    prec.add_argument(
        "--compute-dtype",
        choices=config.FLOAT_DTYPES,
        help="forward and backward passes (default --param-dtype)",
    )
    prec.add_argument(
        "--mu-dtype", choices=config.FLOAT_DTYPES, help="first moment (adam_jax's default)"
    )
    prec.add_argument("--nu-dtype", choices=config.FLOAT_DTYPES, help="second moment")
    prec.add_argument(
        "--state-dtype",
        choices=config.STATE_DTYPES,
        help="both moments' storage, instead of --mu-dtype and --nu-dtype; 8bit: block-wise "
        "quantized moments (adam_jax.BlockQuantization, docs/memory.md)",
    )
    block = adam_jax.BlockQuantization()
    prec.add_argument(
        "--quant-block-size",
        type=int,
        metavar="N",
        help=f"--state-dtype 8bit: elements per block, a power of two >= 32 ({block.block_size})",
    )
    prec.add_argument(
        "--quant-min-size",
        type=int,
        metavar="N",
        help="--state-dtype 8bit: leaves of fewer elements keep float32 moments "
        f"({block.min_size})",
    )
    prec.add_argument(
        "--quant-rounding",
        choices=config.QUANT_ROUNDINGS,
        help="--state-dtype 8bit: how new moments take their codes; stochastic: exact on "
        f"average, keyed from --rng-seed ({block.rounding})",
    )
    switch(
        prec,
        "stochastic_rounding",
        "16-bit --param-dtype: round each new param stochastically, keyed from --rng-seed "
        "(the key lives in the optimizer state)",
    )
    switch(
        prec,
        "compensated_rounding",
        "16-bit --param-dtype: Kahan-compensated params (an error buffer in the params' dtype)",
    )
    prec.add_argument(
        "--loss-scale",
        type=float,
        help="static loss scale S: gradients of S*loss, divided by S (1: off)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", help="run directory (default runs/<task>-<timestamp>)")
    switch(out, "overwrite", "replace the run files in --out")
    resumable = ", ".join(config.flag(name) for name in config.RESUMABLE)
    out.add_argument(
        "--resume",
        metavar="DIR",
        help=f"continue the run in DIR up to --steps; only {resumable} "
        "and the device and process flags may be given with it",
    )
    out.add_argument(
        "--log-every",
        type=int,
        metavar="N",
        help="steps between metrics writes and evaluations; the compiled chunk's length "
        f"({_task_defaults('log_every')})",
    )
    out.add_argument(
        "--ckpt-every",
        type=int,
        metavar="N",
        help=f"checkpoint period ({defaults['ckpt_every']})",
    )
    switch(out, "quiet", "no progress bar")
    switch(
        out,
        "print_loss",
        "print 't loss' every step, as the seed does, instead of the progress bar",
    )
    dist = p.add_argument_group("devices and processes (docs/distributed.md)")
    dist.add_argument(
        "--mesh",
        type=int,
        metavar="N",
        help="data parallel over N devices (0, the default: one device, no mesh)",
    )
    switch(dist, "fsdp", "with --mesh: params and optimizer state sharded too")
    switch(
        dist,
        "packed",
        "params, gradients and optimizer state as one flat buffer per dtype "
        "(adam_jax.PackedLayout): a step of a few kernels; the same bits",
    )
    dist.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="process 0's address: a multi-process run (also from JAX_COORDINATOR_ADDRESS)",
    )
    dist.add_argument("--num-processes", type=int, metavar="P")
    dist.add_argument("--process-id", type=int, metavar="I")
    dist.add_argument(
        "--watchdog",
        type=float,
        metavar="S",
        help="exit with status 70 when no chunk of steps finishes in S seconds (a peer "
        "process hung); off by default",
    )
    return p


def parse(argv: list[str]) -> tuple[dict[str, Any], str | None]:
    """The settings the command line gives (``None``: not given) and ``--resume``'s DIR.

    Raises:
      UsageError: argparse's message (it names the flag).
      SystemExit: for ``--help``, after printing it.
    """
    given = vars(build_parser().parse_args(argv))
    resume_dir = given.pop("resume")
    return given, resume_dir
