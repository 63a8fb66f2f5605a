"""``RunConfig``: every setting of a run, frozen and validated; saved as ``config.json``.

A run's settings come from the command line (``flags.py``) or, on ``--resume DIR``, from
``DIR/config.json``: both go through :func:`resolve`, which fills in the task's defaults and
the derived settings and builds a :class:`RunConfig`, whose construction checks every value
(type and range), their relations and the optimizer's factory. An error is a
:class:`~adam_jax.training.tasks.base.ConfigError` naming the flag the value belongs to.
"""

import dataclasses
import datetime
import math
import os
from collections.abc import Mapping
from typing import Any

import adam_jax
from adam_jax.training import optimizers
from adam_jax.training.rundir import read_config
from adam_jax.training.tasks import TASKS, ConfigError, get_task

RNG_SEED_MAX = 2**31 - 1  # seeds are int32 inside jit
FLOAT_DTYPES = ("float64", "float32", "bfloat16", "float16")
STATE_DTYPES = ("float32", "bfloat16", "float16", "8bit")  # --state-dtype: both moments' storage
QUANT_ROUNDINGS = ("stochastic", "nearest")  # --quant-rounding: BlockQuantization's rounding
SCHEDULES = ("constant", "cosine", "warmup-cosine")
INITS = ("torch", "flax")
# Settings a resumed run may change: they change what is written or how far the run goes,
# never a step's arithmetic (every chunk is the same compiled program).
RESUMABLE = ("steps", "ckpt_every", "quiet", "print_loss")
# Where a run's arrays and processes live and how they are laid out, and its watchdog: always
# this command's, never the saved run's (a run saved on 8 devices resumes on any number; float32
# sums may round differently on another mesh; checkpoints hold the params as a tree, so a packed
# run resumes unpacked and back, bitwise).
PLACEMENT = ("mesh", "fsdp", "packed", "coordinator", "num_processes", "process_id", "watchdog")
RUN_DIRECTORY = ("out", "overwrite")  # where the run is written: --resume DIR's
# Keys of config.json files written before a rename: old key -> the setting it is now.
RENAMED = {"seed": "rng_seed"}
# Settings added since the first config.json files: their value in a file that lacks them.
ADDED = {
    "weight_decay_mask": "all",
    "state_dtype": None,
    "quant_block_size": None,
    "quant_min_size": None,
    "quant_rounding": None,
    "stochastic_rounding": False,
    "compensated_rounding": False,
}
DROPPED = ("resume",)  # keys older config.json files hold that are no settings


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of a run, one field per flag (``rng_seed`` is ``--rng-seed``).

    Construct it with :func:`resolve` (which fills in the task's defaults); the constructor
    checks every value and raises ``ConfigError`` naming the flag of the first bad one.
    """

    task: str
    steps: int
    batch_size: int
    rng_seed: int
    init: str
    init_from: str | None
    optimizer: str
    convention: str
    lr: float
    schedule: str
    warmup_steps: int
    decay_steps: int
    b1: float
    b2: float
    eps: float
    eps_root: float
    weight_decay: float | None  # None: the optimizer's default
    weight_decay_mask: str
    momentum_decay: float | None  # nadam; None: the convention's schedule
    dtype: str
    param_dtype: str
    compute_dtype: str
    mu_dtype: str | None
    nu_dtype: str | None
    state_dtype: str | None  # None: --mu-dtype and --nu-dtype (adam_jax's defaults)
    quant_block_size: int | None  # --state-dtype 8bit; None: the library's default
    quant_min_size: int | None
    quant_rounding: str | None
    stochastic_rounding: bool
    compensated_rounding: bool
    loss_scale: float
    out: str
    overwrite: bool
    log_every: int
    ckpt_every: int
    quiet: bool
    print_loss: bool
    mesh: int
    fsdp: bool
    packed: bool
    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    watchdog: float | None

    def __post_init__(self):
        check_values(dataclasses.asdict(self), complete=True)
        if self.warmup_steps >= self.decay_steps:
            raise ConfigError("--warmup-steps", f"must be < --decay-steps {self.decay_steps}")
        check_placement(self)
        optimizers.check(self)

    def to_json(self) -> dict[str, Any]:
        """The settings as ``config.json``'s ``args``."""
        return dataclasses.asdict(self)


SETTINGS = tuple(field.name for field in dataclasses.fields(RunConfig))
# The values a setting takes when neither the command line nor the task sets it; the task's
# defaults (``Task.defaults``) and the derived settings are filled in by ``resolve``.
DEFAULTS: dict[str, Any] = dict.fromkeys(SETTINGS) | {
    "task": "seed",
    "rng_seed": 0,
    "init": "torch",
    "convention": "pytorch",
    "schedule": "constant",
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "eps_root": 0.0,
    "weight_decay_mask": "all",
    "stochastic_rounding": False,
    "compensated_rounding": False,
    "loss_scale": 1.0,
    "overwrite": False,
    "ckpt_every": 1000,
    "quiet": False,
    "print_loss": False,
    "mesh": 0,
    "fsdp": False,
    "packed": False,
}
OPTIONAL = (
    "init_from",
    "weight_decay",
    "momentum_decay",
    "mu_dtype",
    "nu_dtype",
    "state_dtype",
    "quant_block_size",
    "quant_min_size",
    "quant_rounding",
    "coordinator",
    "num_processes",
    "process_id",
    "watchdog",
)


def flag(name: str) -> str:
    """The command-line flag of setting ``name``: ``rng_seed`` is ``--rng-seed``."""
    return "--" + name.replace("_", "-")


def _integer(low: int, high: float = math.inf):
    def check(value) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return None
        top = "" if math.isinf(high) else f" and <= {high}"
        return f"must be an integer >= {low}{top}, got {value!r}"

    return check


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False):
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(value) -> str | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            above = low < value if low_open else low <= value
            below = value < high if high_open else value <= high
            if above and below and math.isfinite(value):
                return None
        return f"must be a finite number in {interval}, got {value!r}"

    return check


def _choice(choices):
    def check(value) -> str | None:
        if isinstance(value, str) and value in choices:
            return None
        return f"must be one of {', '.join(sorted(choices))}, got {value!r}"

    return check


def _int(value) -> str | None:  # its range is the library's to check (optimizers.check)
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    return f"must be an integer, got {value!r}"


def _text(value) -> str | None:
    return None if isinstance(value, str) and value else f"must be a path, got {value!r}"


def _switch(value) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


def _host_port(value) -> str | None:
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if host and port.isdigit() and 1 <= int(port) <= 65535:
        return None
    return f"must be HOST:PORT with a port in [1, 65535], got {value!r}"


CHECKS = {
    "task": _choice(TASKS),
    "steps": _integer(1),
    "batch_size": _integer(1),
    "rng_seed": _integer(0, RNG_SEED_MAX),
    "init": _choice(INITS),
    "init_from": _text,
    "optimizer": _choice(optimizers.OPTIMIZERS),
    "convention": _choice(adam_jax.CONVENTIONS),
    "lr": _number(0, math.inf),
    "schedule": _choice(SCHEDULES),
    "warmup_steps": _integer(0),
    "decay_steps": _integer(1),
    "b1": _number(0, 1, high_open=True),
    "b2": _number(0, 1, high_open=True),
    "eps": _number(0, math.inf),
    "eps_root": _number(0, math.inf),
    "weight_decay": _number(0, math.inf),
    "weight_decay_mask": _choice(optimizers.WEIGHT_DECAY_MASKS),
    "momentum_decay": _number(0, math.inf),
    "dtype": _choice(("float32", "float64")),
    "param_dtype": _choice(FLOAT_DTYPES),
    "compute_dtype": _choice(FLOAT_DTYPES),
    "mu_dtype": _choice(FLOAT_DTYPES),
    "nu_dtype": _choice(FLOAT_DTYPES),
    "state_dtype": _choice(STATE_DTYPES),
    "quant_block_size": _int,
    "quant_min_size": _int,
    "quant_rounding": _choice(QUANT_ROUNDINGS),
    "stochastic_rounding": _switch,
    "compensated_rounding": _switch,
    "loss_scale": _number(0, math.inf, low_open=True),
    "out": _text,
    "overwrite": _switch,
    "log_every": _integer(1),
    "ckpt_every": _integer(1),
    "quiet": _switch,
    "print_loss": _switch,
    "mesh": _integer(0),
    "fsdp": _switch,
    "packed": _switch,
    "coordinator": _host_port,
    "num_processes": _integer(1),
    "process_id": _integer(0),
    "watchdog": _number(0, math.inf, low_open=True),
}


def check_values(values: Mapping[str, Any], *, complete: bool = False) -> None:
    """Checks each value's type and range; ``None`` is unset (allowed unless ``complete``,
    where only the ``OPTIONAL`` settings may be unset).

    Raises:
      ConfigError: naming the flag of the first bad value.
    """
    for name, value in values.items():
        if value is None:
            if complete and name not in OPTIONAL:
                raise ConfigError(flag(name), "must be set")
            continue
        problem = CHECKS[name](value)
        if problem is not None:
            raise ConfigError(flag(name), problem)


def check_placement(config: RunConfig) -> None:
    """Checks the layout settings against each other and the batch (not the devices, which
    are counted only once JAX has started)."""
    process_flags = {
        "--coordinator": config.coordinator,
        "--num-processes": config.num_processes,
        "--process-id": config.process_id,
    }
    given = [name for name, value in process_flags.items() if value is not None]
    if given and len(given) < len(process_flags):
        missing = next(name for name, value in process_flags.items() if value is None)
        raise ConfigError(missing, f"is needed with {given[0]} (give all three or none)")
    if config.process_id is not None and config.num_processes is not None:
        if config.process_id >= config.num_processes:
            raise ConfigError(
                "--process-id",
                f"must be < --num-processes {config.num_processes}, got {config.process_id}",
            )
    if config.fsdp and config.mesh == 0:
        raise ConfigError("--fsdp", "needs --mesh N (the devices to shard over)")
    if config.mesh and config.batch_size % config.mesh:
        raise ConfigError("--mesh", f"{config.mesh} must divide the batch size {config.batch_size}")


def resolve(given: Mapping[str, Any], *, new_run: bool = True) -> RunConfig:
    """The run's configuration from the settings ``given`` (the others unset or absent).

    Fills in ``DEFAULTS``, what an ``--init-from`` file fixes, the task's defaults and the
    derived settings (dtypes, the schedule's length and warmup, ``out``), then builds the
    ``RunConfig`` (which checks everything).

    Args:
      given: settings by name; an absent or ``None`` one takes its default.
      new_run: for a new run (settings from a command line, not a resumed run's), a
        hyperparameter the optimizer does not have may not be given, and ``out`` defaults
        to ``runs/<task>-<timestamp>`` and must not exist unless ``overwrite``.

    Raises:
      ConfigError: naming the flag of a bad or contradictory value, or one the optimizer does
        not have (``--eps`` for ``adam_atan2``).
    """
    check_values(given)
    set_here = {name for name, value in given.items() if value is not None}
    values = DEFAULTS | {name: given[name] for name in set_here}
    task = get_task(values["task"])
    if values["init_from"] is not None:
        if task.read_init_from is None:
            raise ConfigError("--init-from", f"--task {task.name} does not start from a file")
        values |= task.read_init_from(values["init_from"], values)
    values |= {name: value for name, value in task.defaults.items() if values[name] is None}
    values["dtype"] = values["dtype"] or "float32"
    values["param_dtype"] = values["param_dtype"] or values["dtype"]
    values["compute_dtype"] = values["compute_dtype"] or values["param_dtype"]
    values["decay_steps"] = values["decay_steps"] or values["steps"]
    if values["warmup_steps"] is None:
        warmup = values["schedule"] == "warmup-cosine"
        values["warmup_steps"] = values["decay_steps"] // 10 if warmup else 0
    if new_run:
        for absent in optimizers.get_entry(values["optimizer"]).absent_flags():
            if absent.removeprefix("--").replace("-", "_") in set_here:
                raise ConfigError(absent, f"does not apply to --optimizer {values['optimizer']}")
        if values["out"] is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            values["out"] = os.path.join("runs", f"{task.name}-{stamp}")
        if os.path.exists(values["out"]) and not values["overwrite"]:
            raise ConfigError(
                "--out", f"{values['out']} exists; pass --overwrite to replace its run"
            )
    return RunConfig(**values)


def resume(run_dir: str, given: Mapping[str, Any]) -> RunConfig:
    """The configuration of the run in ``run_dir``, from its ``config.json``, checked again as
    on its first day, with this command's ``RESUMABLE`` and ``PLACEMENT`` settings ``given``.

    Raises:
      ConfigError: naming ``--resume`` (an unreadable file, or one that does not describe a
        valid run), or the flag of a given setting that may not change or is bad.
    """
    set_here = {name for name, value in given.items() if value is not None}
    fixed = sorted(set_here - set(RESUMABLE) - set(PLACEMENT), key=SETTINGS.index)
    if fixed:
        allowed = ", ".join(flag(name) for name in RESUMABLE + PLACEMENT)
        raise ConfigError(
            flag(fixed[0]),
            f"cannot change on --resume: config.json fixes the run's arithmetic "
            f"(only {allowed} may be given)",
        )
    path = os.path.join(run_dir, "config.json")
    args = read_config(path)["args"]
    try:
        base = resolve(
            saved_settings(args) | dict.fromkeys(PLACEMENT) | {"out": run_dir, "overwrite": False},
            new_run=False,
        )
    except ValueError as e:  # ConfigError included: the saved value's flag, in the message
        raise ConfigError("--resume", f"{path} does not describe a valid run: {e}") from e
    this_command = {name: _given_or_default(given, name) for name in PLACEMENT}
    this_command |= {name: bool(given.get(name)) for name in ("quiet", "print_loss")}
    this_command |= {name: given[name] for name in ("steps", "ckpt_every") if name in set_here}
    return dataclasses.replace(base, **this_command)


def _given_or_default(given: Mapping[str, Any], name: str):
    value = given.get(name)
    return DEFAULTS[name] if value is None else value


def saved_settings(args: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json``'s ``args`` as settings: renamed keys read under their new names, and
    settings added since the file was written at their ``ADDED`` value.

    Raises:
      ValueError: for an unknown or a missing setting.
    """
    settings = {RENAMED.get(key, key): value for key, value in args.items() if key not in DROPPED}
    settings = ADDED | settings
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}")
    needed = set(SETTINGS) - set(RUN_DIRECTORY) - set(PLACEMENT)
    missing = sorted(needed - set(settings), key=SETTINGS.index)
    if missing:
        raise ValueError(f"missing setting {missing[0]!r}")
    return settings
