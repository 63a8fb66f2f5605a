"""Running a configured job: set-up, the chunk loop on the host, checkpoints, metrics, summary.

The device runs the compiled chunk (``loop.make_run_chunk``); the host, between two calls,
writes the metrics, evaluates, checkpoints and answers Ctrl-C. Calls are paced by wall time
(``pacing.Pacer``), so the host looks in about every half second however slow a step is,
and where a call ends never changes a bit of the results.
"""

import concurrent.futures
import contextlib
import math
import os
import platform
import sys
import time
from functools import partial
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

import adam_jax
from adam_jax import PackedLayout
from adam_jax.training import checkpoint, distributed, loop, metrics, optimizers, plots
from adam_jax.training.config import RunConfig
from adam_jax.training.flags import PROG
from adam_jax.training.interrupt import Interrupt
from adam_jax.training.pacing import Pacer
from adam_jax.training.quiet_stderr import discarded, real_stderr
from adam_jax.training.rundir import MetricsFile, RunDir, now, write_config, write_json
from adam_jax.training.tasks import ConfigError, get_task

EXIT_STOPPED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


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


def start_processes(config: RunConfig) -> None:
    """Joins a multi-process run (``--coordinator``, or the environment of
    ``scripts/launch.py``/SLURM); before anything else touches JAX's backend."""
    if config.coordinator is None and not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return
    try:
        distributed.initialize(config.coordinator, config.num_processes, config.process_id)
    except ValueError as e:
        raise ConfigError("--coordinator", str(e)) from e


def train(config: RunConfig, argv: list, *, resume: bool) -> int:
    """Sets up and checks (``ConfigError`` before anything is written), then runs.

    Args:
      config: the run's settings.
      argv: the command line, recorded in ``config.json``'s history.
      resume: continue the run in ``config.out`` from its newest sound checkpoint.

    Returns:
      0, 1 when the run stopped early (a non-finite loss or state, a failed write), or
      130 when Ctrl-C stopped it.
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
    layout, mask = None, optimizers.weight_decay_mask(config)
    if config.packed:
        # Under --fsdp each buffer is split over the devices, and unpack gathers it.
        sharding = None
        if config.fsdp and mesh is not None:
            sharding = NamedSharding(mesh, PartitionSpec(distributed.DATA_AXIS))
        layout = PackedLayout.from_params(problem.params, mask=mask, sharding=sharding)
    if problem.start is None:
        # A packed layout packs the mask too: one bool per buffer.
        optimizer = optimizers.make_optimizer(config, mask if layout is None else layout.mask)
        opt_state = None
    else:
        optimizer, opt_state = problem.start
    if layout is not None:
        problem = problem._replace(params=layout.pack(problem.params))
        opt_state = None if opt_state is None else layout.pack_state(opt_state)
    state = loop.init_state(problem, optimizer, config.rng_seed, opt_state)
    # Checkpoints hold the tree form: a packed run restores the tree, then packs it.
    like = state if layout is None else loop.tree_form(state, layout)
    if mesh is not None:
        placement = distributed.fsdp_shardings if config.fsdp else distributed.replicated_shardings
        # The data key's two words are one key: never split.
        key_sharding = distributed.replicated_shardings(state.data_key, mesh)
        shardings = placement(state, mesh)._replace(data_key=key_sharding)
        state = distributed.place(state, shardings)
        like = jax.eval_shape(lambda s: s, like)
        tree_shardings = placement(like, mesh)._replace(data_key=key_sharding)
        like = distributed.checkpoint_target(like, tree_shardings)
        data = (problem.train, problem.test)  # whole on every device; steps split the batch
        train_data, test = distributed.place(data, distributed.replicated_shardings(data, mesh))
        problem = problem._replace(train=train_data, test=test)
    if mesh is not None and config.fsdp and config.state_dtype == "8bit":
        # adam_jax refuses quantized state whose blocks the params' shards would cut: trace
        # one update now, so that it is a flag error before anything is written.
        with jax.set_mesh(mesh):
            try:
                jax.eval_shape(optimizer.update, state.params, state.opt_state, state.params)
            except ValueError as e:
                message = (
                    f"with --state-dtype 8bit: {e} (here: --quant-block-size, --quant-min-size)"
                )
                raise ConfigError("--fsdp", message) from e
    primary = jax.process_index() == 0  # the one that writes the run's files
    rows, skipped = [], {}  # metrics rows, as in metrics.jsonl; damaged checkpoints
    if not primary:
        run_dir = RunDir(config.out, None)
    elif resume:
        run_dir = RunDir.claim(config.out, flag="--resume", new=False)
    else:
        run_dir = RunDir.claim(config.out, flag="--out", new=True, overwrite=config.overwrite)
    if jax.process_count() > 1:  # the others wait until process 0 holds the directory
        multihost_utils.sync_global_devices("train.py: run directory claimed")
    if resume:
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
        if layout is not None:
            state = loop.packed_form(state, layout)
            if mesh is not None:
                state = distributed.place(state, shardings)
        for step, why in skipped.items() if primary else ():
            print(f"{PROG}: checkpoint {step} is damaged ({why}); set aside", file=sys.stderr)
        if skipped and primary:
            print(f"{PROG}: resuming from checkpoint {restored.step}", file=sys.stderr)
    try:
        with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
            return _run(
                config, argv, run_dir, problem, optimizer, layout, state, rows, skipped, primary
            )
    finally:
        run_dir.release()


def _run(config, argv, run_dir, problem, optimizer, layout, state, rows, skipped, primary) -> int:
    """The run proper, in a directory it owns: from here on, it writes (process 0 the run's
    files; every process its part of the checkpoints). ``layout``: the ``PackedLayout`` of a
    ``--packed`` run's state, or None."""
    start = int(state.step)
    status, metrics_file = "completed", None
    try:
        if primary:
            checkpoint.set_aside(config.out, skipped)
            invocation = {"command": argv, "started": now(), "start_step": start}
            write_config(
                run_dir, config.to_json(), invocation | {"versions": versions(), "device": device()}
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
        layout=layout,
    )
    t0 = time.perf_counter()
    jitted_chunk = loop.make_run_chunk(train_step, config.log_every)
    run_chunk = jitted_chunk.lower(state, problem.train, np.int32(0)).compile()
    jitted_evaluate = loop.make_evaluate(
        problem, config.dtype, gather_params=config.fsdp, layout=layout
    )
    # Checkpoints hold the params and the optimizer state as trees, packed or not.
    saved_form = (
        (lambda s: s) if layout is None else jax.jit(partial(loop.tree_form, layout=layout))
    )
    evaluate = None
    if jitted_evaluate is not None:
        evaluate = jitted_evaluate.lower(state.params, problem.test).compile()
    compile_s = time.perf_counter() - t0

    tree = state if layout is None else jax.eval_shape(saved_form, state)
    state_bytes_per_param = metrics.bytes_per_param(tree.opt_state, tree.params)
    step, t0 = start, time.perf_counter()
    # Every process must run the same steps per call: pacing by one process's clock is for
    # single-process runs.
    pacer = Pacer(adaptive=jax.process_count() == 1)
    in_flight = {"end": step}  # the step the call in flight ends at, for Ctrl-C's notice
    save_s: list[float] = []  # the checkpoints' write times, for Ctrl-C's notice

    def notice() -> str:
        left = pacer.seconds_left()
        steps = "" if left is None else f" in about {left:.1f} s"
        save = "" if not save_s else f" (the last took {save_s[-1]:.1f} s)"
        return (
            f"{PROG}: interrupted: stopping after step {in_flight['end']}{steps}, then saving "
            f"a checkpoint{save}; Ctrl-C again to stop at once"
        )

    # The host waits for each call in a helper thread: the main thread stays free to take
    # Ctrl-C at once.
    watchdog = distributed.Watchdog(config.watchdog) if config.watchdog else None
    with (
        Interrupt(notice, lambda line: tqdm.write(line, file=sys.stderr)) as interrupt,
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
            miniters=1,  # every call shows (tqdm would otherwise learn to skip updates)
        )
        unwritten: list[dict] = []  # rows not yet in metrics.jsonl: written at boundaries
        try:
            while step < config.steps and not interrupt.requested:
                boundary = loop.next_stop(step, config.steps, config.log_every, config.ckpt_every)
                n = pacer.steps(boundary - step)
                in_flight["end"] = step + n
                pacer.start(n)
                state, chunk, finite = run_chunk(state, problem.train, np.int32(n))
                chunk, finite = waiter.submit(jax.device_get, (chunk, finite)).result()
                pacer.finish()
                if watchdog is not None:
                    watchdog.beat(step + n)
                new = metrics.chunk_rows(step, chunk, n, problem.steps_per_epoch)
                step = new[-1]["step"]
                if not math.isfinite(new[-1]["loss"]):
                    status = f"the loss is {new[-1]['loss']} at step {step}"
                elif not finite:
                    status = f"the params or optimizer state hold NaN or inf after step {step}"
                elif step == boundary and evaluate is not None:
                    scores = waiter.submit(jax.device_get, evaluate(state.params, problem.test))
                    new[-1] |= {k: float(v) for k, v in scores.result().items()}
                rows += new
                unwritten += new
                if config.print_loss and primary:  # the seed's "t loss" lines, t from 0
                    for row in new:
                        print(row["step"] - 1, row["loss"])
                bar.update(len(new))
                bar.set_postfix(loss=f"{new[-1]['loss']:.4g}", refresh=False)
                if status != "completed" or step == boundary:
                    unwritten = _append(metrics_file, unwritten)
                if status != "completed":
                    break
                if step % config.ckpt_every == 0 or step == config.steps:
                    _save(checkpoints, saved_form(state), rows, save_s)
            if status == "completed" and step < config.steps:  # Ctrl-C
                status = f"interrupted at step {step}"
                unwritten = _append(metrics_file, unwritten)
                if checkpoints.latest_step() != step:
                    _save(checkpoints, saved_form(state), rows, save_s)
        except OSError as e:
            bar.close()  # before the message, so that it stands on its own line
            own_stderr = real_stderr()
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

    summary = metrics.summary(
        config.task, status, rows, start, wall_s, compile_s, checkpoint_step, state_bytes_per_param
    )
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


def _append(metrics_file: MetricsFile | None, rows: list) -> list:
    """Writes ``rows`` to ``metrics.jsonl`` (process 0 only); returns the rows still unwritten."""
    if metrics_file is not None:
        metrics_file.append(rows)
    return []


def _save(checkpoints, state: loop.TrainState, rows: list, durations: list) -> None:
    """Saves a checkpoint; appends the seconds it took to ``durations``."""
    started = time.perf_counter()
    with discarded():  # orbax's threads, if the write fails
        checkpoint.save(checkpoints, state, rows)
    durations.append(time.perf_counter() - started)


def exit_code(status: str) -> int:
    """The exit code of a run that ended with ``status``."""
    if status.startswith("interrupted"):
        return EXIT_INTERRUPTED
    return 0 if status == "completed" else EXIT_STOPPED


def _print_summary(config: RunConfig, summary: dict) -> None:
    scores = "".join(
        f", {k.replace('_', ' ')} {v:.4g}" for k, v in summary.items() if k.startswith("test_")
    )
    print(
        f"{config.task}: {summary['steps_run']} steps in {summary['wall_s']:.2f} s "
        f"({summary['steps_per_s']:.0f} steps/s), compile {summary['compile_s']:.2f} s; "
        f"final loss {summary['final_loss']:.6g}{scores}; optimizer state "
        f"{summary['opt_state_bytes_per_param']:.3f} B/param"
    )
    if summary["status"] != "completed":
        step = summary["checkpoint_step"]
        kept = "no checkpoint saved yet" if step is None else f"checkpoint of step {step} kept"
        print(f"{PROG}: stopped: {summary['status']}; {kept}", file=sys.stderr)
