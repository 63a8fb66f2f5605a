"""The command line of ``scripts/train.py``: its flags, their checks, and the run.

Every flag is checked where it is parsed (its argparse type or choices) or by
the code that owns it (the task's ``make_problem``, the optimizer's factory,
the run directory's ``claim``), which raises a
:class:`~adam_jax.training.tasks.base.ConfigError` naming it. ``main`` prints
one line for each and returns 2, having written nothing.
"""

import argparse
import concurrent.futures
import contextlib
import datetime
import math
import os
import platform
import signal
import sys
import time
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

import adam_jax
from adam_jax.training import checkpoint, distributed, loop, metrics, optimizers, plots
from adam_jax.training.rundir import (
    MetricsFile,
    RunDir,
    now,
    read_config,
    write_config,
    write_json,
)
from adam_jax.training.tasks import TASKS, ConfigError, get_task

PROG = "train.py"
FLOAT_DTYPES = ("float64", "float32", "bfloat16", "float16")
SEED_MAX = 2**31 - 1  # seeds are int32 inside jit
# Flags --resume accepts: they change what is written or how far the run goes,
# never a step's arithmetic (a checkpoint chunk is the same compiled program).
RESUME_FLAGS = ("--resume", "--steps", "--quiet", "--print-loss", "--ckpt-every")
RUN_DIR_DESTS = ("resume", "out", "overwrite")  # where a run is, not what it computes
# Where a run's arrays and processes live, and its watchdog: this command's, never the saved
# run's (a run saved on 8 devices resumes on any number); float32 sums may round differently
# on another mesh.
PLACEMENT_DESTS = ("mesh", "fsdp", "coordinator", "num_processes", "process_id", "watchdog")
PLACEMENT_FLAGS = (
    "--mesh",
    "--fsdp",
    "--coordinator",
    "--num-processes",
    "--process-id",
    "--watchdog",
)
EXIT_STOPPED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
DESCRIPTION = """Train with adam_jax on a registered task (see docs/training.md).

    train.py                                     # the seed's run
    train.py --task digits                       # >= 95% test accuracy
    train.py --optimizer adam --convention optax --steps 100
    train.py --init-from seed_torch.npz          # PyTorch's weights and data
    train.py --compute-dtype bfloat16            # mixed precision
    train.py --resume runs/seed-20261125-101500 --steps 1000
    train.py --mesh 8 --fsdp                     # 8 devices, params and state sharded
    train.py --init-from run.pt --dtype float64  # continue a PyTorch run (seed task)

Exit codes: 0 done; 1 stopped early (non-finite loss or state, a failed write);
2 bad input (one line on stderr, nothing written); 70 --watchdog fired; 130 Ctrl-C.
"""


class UsageError(Exception):
    """Bad command-line syntax or value, as argparse words it (it names the flag)."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def int_in(low: int, high: float = math.inf):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            top = "" if math.isinf(high) else f" and <= {high}"
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}{top}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def float_in(low: float, high: float, *, high_open: bool = False, low_open: bool = False):
    """An argparse type: a finite float in [low, high] (ends open as asked)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = float(text)
        inside = (low < value if low_open else low <= value) and (
            value < high if high_open else value <= high
        )
        if not (inside and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def _task_defaults(flag: str) -> str:
    return ", ".join(f"{name} {task.defaults[flag]}" for name, task in TASKS.items())


def build_parser() -> Parser:
    p = Parser(
        prog=PROG,
        description=DESCRIPTION,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    task = p.add_argument_group("task")
    task.add_argument(
        "--task",
        choices=sorted(TASKS),
        default="seed",
        help="; ".join(f"{name}: {t.summary}" for name, t in TASKS.items()).replace("%", "%%"),
    )
    task.add_argument(
        "--steps", type=int_in(1), metavar="N", help=f"optimizer steps ({_task_defaults('steps')})"
    )
    task.add_argument(
        "--batch-size",
        type=int_in(1),
        metavar="N",
        help=f"samples per step ({_task_defaults('batch_size')})",
    )
    task.add_argument(
        "--seed",
        type=int_in(0, SEED_MAX),
        default=0,
        help="PRNG seed of weights, data and split",
    )
    task.add_argument("--init", choices=["torch", "flax"], default="torch", help="weight init")
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
    opt.add_argument("--convention", choices=sorted(adam_jax.CONVENTIONS), default="pytorch")
    opt.add_argument(
        "--lr", type=float_in(0, math.inf), help=f"peak learning rate ({_task_defaults('lr')})"
    )
    opt.add_argument(
        "--schedule", choices=["constant", "cosine", "warmup-cosine"], default="constant"
    )
    opt.add_argument(
        "--warmup-steps", type=int_in(0), metavar="N", help="default: 10%% of the steps"
    )
    opt.add_argument(
        "--decay-steps", type=int_in(1), metavar="N", help="schedule length; default --steps"
    )
    opt.add_argument("--b1", type=float_in(0, 1, high_open=True), default=0.9)
    opt.add_argument("--b2", type=float_in(0, 1, high_open=True), default=0.999)
    opt.add_argument("--eps", type=float_in(0, math.inf), default=1e-8, help="Adam's epsilon")
    opt.add_argument("--eps-root", type=float_in(0, math.inf), default=0.0)
    opt.add_argument("--weight-decay", type=float_in(0, math.inf), help="default: the optimizer's")
    prec = p.add_argument_group("precision")
    prec.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help="data, master params and loss (default float32, or the --init-from file's)",
    )
    prec.add_argument(
        "--param-dtype", choices=FLOAT_DTYPES, help="params' storage (default --dtype)"
    )
    prec.add_argument(
        "--compute-dtype",
        choices=["float64", "float32", "bfloat16", "float16"],
        help="forward and backward passes (default --param-dtype)",
    )
    prec.add_argument("--mu-dtype", choices=FLOAT_DTYPES, help="first moment (adam_jax's default)")
    prec.add_argument("--nu-dtype", choices=FLOAT_DTYPES, help="second moment")
    prec.add_argument(
        "--loss-scale",
        type=float_in(0, math.inf, low_open=True),
        default=1.0,
        help="static loss scale S: gradients of S*loss, divided by S (1: off)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", help="run directory (default runs/<task>-<timestamp>)")
    out.add_argument("--overwrite", action="store_true", help="replace the run files in --out")
    out.add_argument(
        "--resume",
        metavar="DIR",
        help=f"continue the run in DIR up to --steps; only {', '.join(RESUME_FLAGS[1:])} "
        "and the device and process flags may be given with it",
    )
    out.add_argument(
        "--log-every",
        type=int_in(1),
        metavar="N",
        help=f"steps per jitted chunk ({_task_defaults('log_every')})",
    )
    out.add_argument(
        "--ckpt-every", type=int_in(1), metavar="N", default=1000, help="checkpoint period"
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    out.add_argument(
        "--print-loss",
        action="store_true",
        help="print 't loss' every step, as the seed does, instead of the progress bar",
    )
    dist = p.add_argument_group("devices and processes (docs/distributed.md)")
    dist.add_argument(
        "--mesh",
        type=int_in(0),
        default=0,
        metavar="N",
        help="data parallel over N devices (0: one device, no mesh)",
    )
    dist.add_argument(
        "--fsdp", action="store_true", help="with --mesh: params and optimizer state sharded too"
    )
    dist.add_argument(
        "--coordinator",
        type=host_port,
        metavar="HOST:PORT",
        help="process 0's address: a multi-process run (also from JAX_COORDINATOR_ADDRESS)",
    )
    dist.add_argument("--num-processes", type=int_in(1), metavar="P")
    dist.add_argument("--process-id", type=int_in(0), metavar="I")
    dist.add_argument(
        "--watchdog",
        type=float_in(0, math.inf, low_open=True),
        metavar="S",
        help="exit with status 70 when no chunk of steps finishes in S seconds (a peer "
        "process hung); off by default",
    )
    return p


def host_port(text: str) -> str:
    """An argparse type: ``HOST:PORT`` with a port in [1, 65535]."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT with a port in [1, 65535], got {text}")
    return text


def check_placement(config) -> None:
    """Checks the layout flags against each other and the batch (not the devices, which
    are counted only once JAX has started)."""
    process_flags = {
        "--coordinator": config.coordinator,
        "--num-processes": config.num_processes,
        "--process-id": config.process_id,
    }
    given = [flag for flag, value in process_flags.items() if value is not None]
    if given and len(given) < len(process_flags):
        missing = next(flag for flag, value in process_flags.items() if value is None)
        raise ConfigError(missing, f"is needed with {given[0]} (give all three or none)")
    if given and config.process_id >= config.num_processes:
        raise ConfigError(
            "--process-id",
            f"must be < --num-processes {config.num_processes}, got {config.process_id}",
        )
    if config.fsdp and config.mesh == 0:
        raise ConfigError("--fsdp", "needs --mesh N (the devices to shard over)")
    if config.mesh and config.batch_size % config.mesh:
        raise ConfigError("--mesh", f"{config.mesh} must divide the batch size {config.batch_size}")


def _given_flags(argv: list) -> set:
    return {a.split("=", 1)[0] for a in argv if a.startswith("--")}


def parse_args(argv: list) -> argparse.Namespace:
    """The run's configuration from the command line, every flag checked and filled in."""
    config = build_parser().parse_args(argv)
    if config.resume is not None:
        return resume_config(config, _given_flags(argv))
    return complete(config, _given_flags(argv))


def complete(config: argparse.Namespace, given: set, *, new_run: bool = True):
    """Fills in the task's defaults and derived flags, and checks what argparse cannot."""
    task = get_task(config.task)
    if config.init_from is not None:
        if task.read_init_from is None:
            raise ConfigError("--init-from", f"--task {config.task} does not start from a file")
        task.read_init_from(config)
    for flag, value in task.defaults.items():
        if getattr(config, flag, None) is None:
            setattr(config, flag, value)
    config.dtype = config.dtype or "float32"
    config.param_dtype = config.param_dtype or config.dtype
    config.compute_dtype = config.compute_dtype or config.param_dtype
    config.decay_steps = config.decay_steps or config.steps
    if config.warmup_steps is None:
        config.warmup_steps = config.decay_steps // 10 if config.schedule == "warmup-cosine" else 0
    if config.warmup_steps >= config.decay_steps:
        raise ConfigError("--warmup-steps", f"must be < --decay-steps {config.decay_steps}")
    if not optimizers.get_entry(config.optimizer).has_epsilon:
        for flag in ("--eps", "--eps-root", "--convention"):
            if flag in given:
                raise ConfigError(flag, f"does not apply to --optimizer {config.optimizer}")
    optimizers.check(config)
    check_placement(config)
    if new_run:
        if config.out is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            config.out = os.path.join("runs", f"{config.task}-{stamp}")
        if os.path.exists(config.out) and not config.overwrite:
            raise ConfigError("--out", f"{config.out} exists; pass --overwrite to replace its run")
    return config


def _as_argv(saved: dict, parser: Parser) -> list:
    """Command-line flags that reproduce ``saved`` (values equal to the defaults left out)."""
    defaults = vars(parser.parse_args([]))
    by_dest = {a.dest: a for a in parser._actions if a.option_strings}
    unknown = sorted(set(saved) - set(by_dest))
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}")
    missing = sorted(
        set(by_dest) - set(saved) - set(RUN_DIR_DESTS) - set(PLACEMENT_DESTS) - {"help"}
    )
    if missing:
        raise ValueError(f"missing setting {missing[0]!r}")
    argv = []
    for dest, value in saved.items():
        if dest in RUN_DIR_DESTS or dest in PLACEMENT_DESTS or value == defaults[dest]:
            continue
        flag = by_dest[dest].option_strings[0]
        if isinstance(by_dest[dest], argparse._StoreTrueAction):
            if value is not True:
                raise ValueError(f"{dest} must be true or false, got {value!r}")
            argv.append(flag)
        else:
            if isinstance(value, bool | list | dict):
                raise ValueError(f"{dest} = {value!r} is not a flag value")
            argv += [flag, str(value)]
    return argv


def resume_config(given: argparse.Namespace, flags: set) -> argparse.Namespace:
    """The flags of the run in ``--resume DIR``, checked again as on its first day, with the
    I/O flags of ``RESUME_FLAGS`` from this command line."""
    allowed = RESUME_FLAGS[1:] + PLACEMENT_FLAGS
    extra = sorted(flags - set(RESUME_FLAGS) - set(PLACEMENT_FLAGS))
    if extra:
        raise ConfigError(
            extra[0],
            "cannot change on --resume: config.json fixes the run's arithmetic "
            f"(only {', '.join(allowed)} may be given)",
        )
    path = os.path.join(given.resume, "config.json")
    saved = read_config(path)["args"]
    parser = build_parser()
    try:
        argv = _as_argv(saved, parser)
        config = complete(parser.parse_args(argv), _given_flags(argv), new_run=False)
    except (UsageError, ConfigError, ValueError) as e:
        raise ConfigError("--resume", f"{path} does not describe a valid run: {e}") from e
    config.resume, config.out, config.overwrite = given.resume, given.resume, False
    for dest in PLACEMENT_DESTS:
        setattr(config, dest, getattr(given, dest))
    check_placement(config)
    config.quiet, config.print_loss = given.quiet, given.print_loss
    if given.steps is not None:
        config.steps = given.steps
    if "--ckpt-every" in flags:
        config.ckpt_every = given.ckpt_every
    return config


# --- the run -----------------------------------------------------------------------
def versions() -> dict:
    names = ("jax", "jaxlib", "optax", "flax", "orbax-checkpoint", "numpy")
    found = {name: metadata.version(name) for name in names}
    return found | {"adam_jax": adam_jax.__version__, "python": platform.python_version()}


def device() -> dict:
    d = jax.devices()[0]
    return {
        "platform": d.platform,
        "kind": d.device_kind,
        "count": jax.device_count(),
        "processes": jax.process_count(),
    }


class Interrupt:
    """Ctrl-C: the first asks the run to stop at the next chunk boundary, the second
    (the default handler, restored by the first) stops the process at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.requested = True
        signal.signal(signum, signal.SIG_DFL)
        print(
            f"{PROG}: interrupted: stopping after this chunk; Ctrl-C again to stop at once",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)


def train(config, argv: list) -> int:
    """Sets up and checks (``ConfigError`` before anything is written), then runs.

    Returns 0, 1 when the run stopped early (a non-finite loss or state, a
    failed write), or 130 when Ctrl-C stopped it.
    """
    mesh = None
    if config.mesh:
        try:
            mesh = distributed.make_mesh(config.mesh)
        except ValueError:
            raise ConfigError(
                "--mesh", f"{config.mesh} devices asked for; {jax.device_count()} available"
            ) from None
    task = get_task(config.task)
    dtypes = {
        "param_dtype": jnp.dtype(config.param_dtype),
        "dtype": jnp.dtype(config.compute_dtype),
    }
    problem = task.make_problem(config, dtypes)
    if problem.start is None:
        optimizer, opt_state = optimizers.make_optimizer(config), None
    else:
        optimizer, opt_state = problem.start
    state = loop.init_state(problem, optimizer, config.seed, opt_state)
    like = state
    if mesh is not None:
        layout = distributed.fsdp_shardings if config.fsdp else distributed.replicated_shardings
        # The data key's two words are one key: never split.
        key_sharding = distributed.replicated_shardings(state.data_key, mesh)
        shardings = layout(state, mesh)._replace(data_key=key_sharding)
        state = distributed.place(state, shardings)
        like = distributed.checkpoint_target(state, shardings)
        data = (problem.train, problem.test)  # whole on every device; steps split the batch
        train, test = distributed.place(data, distributed.replicated_shardings(data, mesh))
        problem = problem._replace(train=train, test=test)
    primary = jax.process_index() == 0  # the one that writes the run's files
    rows, skipped = [], {}  # metrics rows, as in metrics.jsonl; damaged checkpoints
    if not primary:
        run_dir = RunDir(config.out, None)
    elif config.resume is not None:
        run_dir = RunDir.claim(config.out, flag="--resume", new=False)
    else:
        run_dir = RunDir.claim(config.out, flag="--out", new=True, overwrite=config.overwrite)
    if jax.process_count() > 1:  # the others wait until process 0 holds the directory
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("train.py: run directory claimed")
    if config.resume is not None:
        try:
            restored = checkpoint.restore(config.out, like)
            if restored.step >= config.steps:
                raise ConfigError(
                    "--steps",
                    f"the run in {config.out} is at step {restored.step}; ask for more than that",
                )
        except BaseException:
            run_dir.release()
            raise
        state, rows, skipped = restored.state, restored.rows, restored.skipped
        for step, why in skipped.items() if primary else ():
            print(f"{PROG}: checkpoint {step} is damaged ({why}); set aside", file=sys.stderr)
        if skipped and primary:
            print(f"{PROG}: resuming from checkpoint {restored.step}", file=sys.stderr)
    try:
        with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
            return _run(config, argv, run_dir, problem, optimizer, state, rows, skipped, primary)
    finally:
        run_dir.release()


def _run(config, argv, run_dir, problem, optimizer, state, rows, skipped, primary) -> int:
    """The run proper, in a directory it owns: from here on, it writes (process 0 the run's
    files; every process its part of the checkpoints)."""
    start = int(state.step)
    status, checkpoint_step, metrics_file = "completed", None, None
    try:
        if primary:
            checkpoint.set_aside(config.out, skipped)
            invocation = {"command": argv, "started": now(), "start_step": start}
            write_config(
                run_dir, vars(config), invocation | {"versions": versions(), "device": device()}
            )
            metrics_file = MetricsFile(run_dir.file("metrics.jsonl"), rows)
        checkpoints = checkpoint.manager(config.out)
    except OSError as e:
        print(f"{PROG}: error: cannot write the run in {config.out}: {e}", file=sys.stderr)
        return EXIT_STOPPED

    train_step = loop.make_train_step(
        problem,
        optimizer,
        loss_dtype=config.dtype,
        learning_rate=optimizers.learning_rate(config),
        loss_scale=config.loss_scale,
        epsilon_report=optimizers.epsilon_report(config, optimizer),
        split_batch=config.mesh > 0,
        gather_params=config.fsdp,
    )
    t0 = time.perf_counter()
    jitted_chunk = loop.make_run_chunk(train_step, config.log_every)
    run_chunk = jitted_chunk.lower(state, problem.train, np.int32(0)).compile()
    jitted_evaluate = loop.make_evaluate(problem, config.dtype, gather_params=config.fsdp)
    evaluate = None
    if jitted_evaluate is not None:
        evaluate = jitted_evaluate.lower(state.params, problem.test).compile()
    compile_s = time.perf_counter() - t0

    from tqdm import tqdm

    step, t0 = start, time.perf_counter()
    # The host waits for each chunk in a helper thread: the main thread stays
    # free to take Ctrl-C at once, even during a long chunk.
    watchdog = distributed.Watchdog(config.watchdog) if config.watchdog else None
    with (
        Interrupt() as interrupt,
        concurrent.futures.ThreadPoolExecutor(1) as waiter,
        watchdog or contextlib.nullcontext(),
    ):
        bar = tqdm(
            total=config.steps,
            initial=start,
            disable=config.quiet or config.print_loss or not primary,
            unit="step",
            file=sys.stderr,
            ncols=90,
        )
        try:
            while step < config.steps:
                stop = loop.next_stop(step, config.steps, config.log_every, config.ckpt_every)
                state, chunk, finite = run_chunk(state, problem.train, np.int32(stop - step))
                chunk, finite = waiter.submit(jax.device_get, (chunk, finite)).result()
                if watchdog is not None:
                    watchdog.beat(stop)
                new = metrics.chunk_rows(step, chunk, stop - step, problem.steps_per_epoch)
                if not math.isfinite(new[-1]["loss"]):
                    status = f"the loss is {new[-1]['loss']} at step {new[-1]['step']}"
                elif not finite:
                    status = f"the params or optimizer state hold NaN or inf after step {stop}"
                elif evaluate is not None:
                    scores = waiter.submit(jax.device_get, evaluate(state.params, problem.test))
                    new[-1] |= {k: float(v) for k, v in scores.result().items()}
                if metrics_file is not None:
                    metrics_file.append(new)
                rows += new
                step = new[-1]["step"]
                if config.print_loss and primary:  # the seed's "t loss" lines, t from 0
                    for row in new:
                        print(row["step"] - 1, row["loss"])
                bar.update(len(new))
                bar.set_postfix(loss=f"{new[-1]['loss']:.4g}", refresh=False)
                if status != "completed":
                    break
                if interrupt.requested or step % config.ckpt_every == 0 or step == config.steps:
                    with _stderr_to_devnull():  # orbax's threads, if the write fails
                        checkpoint.save(checkpoints, state, rows)
                if interrupt.requested and step < config.steps:
                    status = f"interrupted at step {step}"
                    break
        except OSError as e:
            bar.close()  # before the message, so that it stands on its own line
            own_stderr = _own_stderr()
            kept = checkpoints.latest_step()
            kept = f"checkpoint of step {kept} kept" if kept is not None else "no checkpoint"
            checkpoint.close(checkpoints)
            print(
                f"{PROG}: error: stopped at step {step}: cannot write: {e}; {kept}",
                file=own_stderr,
                flush=True,
            )
            return EXIT_STOPPED
        finally:
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
    wall_s = time.perf_counter() - t0
    checkpoint_step = checkpoints.latest_step()
    checkpoint.close(checkpoints)

    summary = metrics.summary(config.task, status, rows, start, wall_s, compile_s, checkpoint_step)
    if not primary:
        return exit_code(status)
    try:
        write_json(run_dir.file("summary.json"), summary)
        plots.plot_run(rows, run_dir.file("loss.png"), title=f"{config.task}: {config.optimizer}")
    except OSError as e:
        print(f"{PROG}: error: cannot write the summary in {config.out}: {e}", file=sys.stderr)
        return EXIT_STOPPED
    _print_summary(config, summary)
    print(f"run written to {config.out}")
    return exit_code(status)


def exit_code(status: str) -> int:
    """The exit code of a run that ended with ``status``."""
    if status.startswith("interrupted"):
        return EXIT_INTERRUPTED
    return 0 if status == "completed" else EXIT_STOPPED


def _print_summary(config, summary: dict) -> None:
    scores = "".join(
        f", {k.replace('_', ' ')} {v:.4g}" for k, v in summary.items() if k.startswith("test_")
    )
    print(
        f"{config.task}: {summary['steps_run']} steps in {summary['wall_s']:.2f} s "
        f"({summary['steps_per_s']:.0f} steps/s), compile {summary['compile_s']:.2f} s; "
        f"final loss {summary['final_loss']:.6g}{scores}"
    )
    if summary["status"] != "completed":
        step = summary["checkpoint_step"]
        kept = "no checkpoint saved yet" if step is None else f"checkpoint of step {step} kept"
        print(f"{PROG}: stopped: {summary['status']}; {kept}", file=sys.stderr)


def start_processes(config) -> None:
    """Joins a multi-process run (``--coordinator``, or the environment of
    ``scripts/launch.py``/SLURM); before anything else touches JAX's backend."""
    if config.coordinator is None and not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return
    try:
        distributed.initialize(config.coordinator, config.num_processes, config.process_id)
    except ValueError as e:
        raise ConfigError("--coordinator", str(e)) from e


_real_stderr_fd: int | None = None  # fd 2 as it was, while _stderr_to_devnull holds it


@contextlib.contextmanager
def _stderr_to_devnull():
    """Discards what is written to stderr (fd 2) inside; restores it unless that raised.

    A checkpoint write that fails (a full disk) cuts off orbax's writer threads, which print
    asyncio "Event loop is closed" tracebacks before and after the error reaches the
    program; the program reports the failure itself, in one line (``_own_stderr``), and stops.
    """
    global _real_stderr_fd
    sys.stderr.flush()
    _real_stderr_fd = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    except OSError:
        raise  # a failed write: fd 2 stays silenced, the writer threads go on until the exit
    except BaseException:
        _restore_stderr()
        raise
    _restore_stderr()


def _restore_stderr() -> None:
    global _real_stderr_fd
    if _real_stderr_fd is not None:
        sys.stderr.flush()
        os.dup2(_real_stderr_fd, 2)
        os.close(_real_stderr_fd)
        _real_stderr_fd = None


def _own_stderr():
    """A stream to the real stderr, also after a failed ``_stderr_to_devnull`` block."""
    if _real_stderr_fd is None:
        return sys.stderr
    return os.fdopen(os.dup(_real_stderr_fd), "w")


def main(argv=None) -> int:
    """Runs the program; returns its exit code (2 for bad input, nothing written)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        config = parse_args(argv)
        start_processes(config)
        dtypes = (config.dtype, config.param_dtype, config.mu_dtype, config.nu_dtype)
        with jax.enable_x64("float64" in dtypes):
            return train(config, argv)
    except (UsageError, ConfigError) as e:
        message = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    except KeyboardInterrupt:  # Ctrl-C outside the loop (loading, compiling, summarizing)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
