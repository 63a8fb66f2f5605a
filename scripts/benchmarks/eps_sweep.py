"""Sweep Adam's epsilon over registered tasks (seed and digits by default); write JSON and plots.

For each task, optimizer (Adam, AMSGrad: PyTorch convention; Adam-atan2, which
has no epsilon), learning rate, epsilon and seed, it trains the task's model
from the task registry (``adam_jax.training.tasks``: the same data, split,
init and minibatch order as ``scripts/train.py --task T --rng-seed S``) and
records the final training loss, the task's held-out metrics (test accuracy
on digits) and, every ``REPORT_EVERY`` steps, ``adam_jax.epsilon_report``'s
``dominated_fraction``. All runs of one task and optimizer are one jitted
``vmap`` over the grid of (learning rate, epsilon, seed), stepped by
``lax.scan`` with the training package's ``train_step``.

    python -m scripts.benchmarks.eps_sweep  # the full sweep, a few minutes on 2 CPU cores
    python -m scripts.benchmarks.eps_sweep --tasks digits --optimizers adam --seeds 1 --steps 20 \
        --eps 0,1e-8 --out /tmp/sweep --img-dir /tmp/sweep    # a quick check
"""

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from adam_jax.training import config as run_config
from adam_jax.training import loop, optimizers
from adam_jax.training.tasks import TASKS, get_task

# --- the sweep ---------------------------------------------------------------------------
EPSILONS = (0.0, 1e-16, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0)
OPTIMIZERS = ("adam", "amsgrad", "adam_atan2")
SEEDS = 5  # seeds 0..SEEDS-1: the task's --rng-seed (weights, data, split, batches)
REPORT_EVERY = 10  # steps between two epsilon reports
# Steps and learning rates swept per task; a task not listed gets its defaults.
SWEEP = {
    "seed": {"steps": 500, "lrs": (1e-4, 1e-3, 1e-2)},
    "digits": {"steps": 1000, "lrs": (1e-3, 1e-2, 3e-2)},
}
DOMINATED_PLOT = {"seed": ("amsgrad", 1e-4), "digits": ("adam", 1e-2)}  # the seed's optimizer
DTYPES = {"param_dtype": jnp.float32, "dtype": jnp.float32}
# -----------------------------------------------------------------------------------------


def sweep_settings(task: str) -> dict:
    defaults = get_task(task).defaults
    return SWEEP.get(task, {"steps": defaults["steps"], "lrs": (defaults["lr"],)})


def task_config(task: str, seed: int) -> run_config.RunConfig:
    """The settings ``scripts/train.py --task task --rng-seed seed --init torch`` resolves to
    (float32, no file; ``overwrite``: no check of a run directory, none is written)."""
    return run_config.resolve({"task": task, "rng_seed": seed, "overwrite": True, "init": "torch"})


def problems(task: str, seeds: int):
    """The task's problem for seed 0, and params, data and data key of every seed, stacked."""
    made = [get_task(task).make_problem(task_config(task, s), DTYPES) for s in range(seeds)]

    def stack(*trees):
        return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)

    stacked = {
        "params": stack(*(p.params for p in made)),
        "train": stack(*(p.train for p in made)),
        "test": stack(*(p.test for p in made)) if made[0].test is not None else None,
        "data_key": jnp.stack([loop.data_key(s) for s in range(seeds)]),
    }
    return made[0], stacked


def optimizer_config(name: str, lr, eps) -> SimpleNamespace:
    """``--optimizer name --lr lr --eps eps``, the other flags at train.py's defaults (the
    settings added since the first runs at ``run_config.ADDED``'s, as an old config.json gets)."""
    return SimpleNamespace(
        **run_config.ADDED,
        optimizer=name,
        lr=lr,
        schedule="constant",
        b1=0.9,
        b2=0.999,
        eps=eps,
        eps_root=0.0,
        convention="pytorch",
        weight_decay=None,
        mu_dtype=None,
        nu_dtype=None,
    )


def make_run(problem, name: str, steps: int):
    """``run(lr, eps, params, train, test, data_key) -> dict of results``, pure and vmappable."""
    loss_fn = loop.make_loss_fn(problem, jnp.float32)

    def run(lr, eps, params, train, test, data_key):
        config = optimizer_config(name, lr, eps)
        optimizer = optimizers.make_optimizer(config)
        report = optimizers.epsilon_report(config, optimizer)
        this = problem._replace(params=params)
        train_step = loop.make_train_step(this, optimizer, loss_dtype=jnp.float32, learning_rate=lr)

        def step(state, _):
            state, metrics = train_step(state, train)
            return state, metrics["loss"]

        def report_interval(state, _):
            state, losses = jax.lax.scan(step, state, length=REPORT_EVERY)
            if report is None:  # no epsilon: report only the loss
                return state, (losses, {})
            return state, (losses, report(state.opt_state))

        state = loop.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), data_key)
        state, (losses, reports) = jax.lax.scan(
            report_interval, state, length=steps // REPORT_EVERY
        )
        out = {
            "loss": losses.reshape(-1),
            "final_loss": loss_fn(state.params, (train["x"], train["y"]))[0],
        } | {
            k: reports[k]
            for k in ("dominated_fraction", "zero_fraction", "sqrt_term_q50")
            if k in reports
        }
        if test is not None and problem.test_metrics is not None:
            pred = nnx.merge(problem.graphdef, state.params)(test["x"]).astype(jnp.float32)
            out |= {f"test_{k}": v for k, v in problem.test_metrics(pred, test["y"]).items()}
        return out

    return run


def sweep_one(task, name, lrs, epsilons, seeds, steps):
    """All runs of one task and optimizer, as a list of JSON-ready dicts."""
    problem, stacked = problems(task, seeds)
    eps_grid = epsilons if name != "adam_atan2" else (0.0,)  # atan2 has no eps
    grid = [(lr, eps, s) for lr in lrs for eps in eps_grid for s in range(seeds)]
    lr, eps, seed = (np.asarray(c) for c in zip(*grid, strict=True))
    per_run = {k: v for k, v in stacked.items() if v is not None}
    per_run = jax.tree.map(lambda x: x[seed], per_run)  # each run's seed's params and data
    run = make_run(problem, name, steps)

    @jax.jit
    def run_all(lr, eps, runs):
        return jax.vmap(run)(
            lr, eps, runs["params"], runs["train"], runs.get("test"), runs["data_key"]
        )

    out = run_all(jnp.asarray(lr, jnp.float32), jnp.asarray(eps, jnp.float32), per_run)
    out = jax.tree.map(np.asarray, out)
    records = []
    for i, (lr_i, eps_i, seed_i) in enumerate(grid):
        record = {
            "task": task,
            "optimizer": name,
            "lr": lr_i,
            "eps": None if name == "adam_atan2" else eps_i,
            "seed": seed_i,
            "final_loss": float(out["final_loss"][i]),
            "loss_every_50": _short(out["loss"][i, ::50]),
        }
        for key in ("dominated_fraction", "zero_fraction", "sqrt_term_q50"):
            record[key] = _short(out[key][i]) if key in out else None  # atan2: no eps
        record |= {k: float(out[k][i]) for k in out if k.startswith("test_")}
        records.append(record)
    return records


def _short(values) -> list:
    """A curve for the JSON, to 4 significant digits."""
    return [float(f"{v:.4g}") for v in np.asarray(values, np.float64)]


def median_by(records, key, **match):
    """Median of ``key`` over seeds for the runs matching ``match``."""
    values = [r[key] for r in records if all(r[k] == v for k, v in match.items())]
    return float(np.median(values)) if values else math.nan


def eps_position(eps):
    """x-coordinate of an epsilon on the log axis; 0 sits at 1e-18."""
    return 1e-18 if eps == 0 else eps


def plot(records, epsilons, img_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in records))
    xs = [eps_position(e) for e in epsilons]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 5.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        metric = "test_accuracy" if task == "digits" else "final_loss"
        for j, lr in enumerate(sweep_settings(task)["lrs"]):
            color = f"C{j}"
            for name, style in (("adam", "-o"), ("amsgrad", "--s")):
                ys = [
                    median_by(records, metric, task=task, optimizer=name, lr=lr, eps=e)
                    for e in epsilons
                ]
                ax.plot(xs, ys, style, color=color, ms=4, label=f"{name} lr={lr:g}")
            y_atan2 = median_by(records, metric, task=task, optimizer="adam_atan2", lr=lr)
            if not math.isnan(y_atan2):
                ax.axhline(y_atan2, color=color, ls=":", label=f"adam_atan2 lr={lr:g}")
        ax.set_xscale("log")
        if task == "seed":
            ax.set_yscale("log")
        ax.set_xticks(xs, ["0" if e == 0 else f"{e:g}" for e in epsilons], rotation=45)
        ax.set_xlabel("eps")
        ax.set_ylabel("test accuracy" if task == "digits" else "final loss (sum of squares)")
        ax.set_title(f"{task}: median over seeds")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(os.path.join(img_dir, "eps_final.png"), dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        name, lr = DOMINATED_PLOT.get(task, ("adam", sweep_settings(task)["lrs"][0]))

        def curves(eps, key, name=name, lr=lr, task=task):
            return [
                r[key]
                for r in records
                if (r["task"], r["optimizer"], r["lr"], r["eps"]) == (task, name, lr, eps)
            ]

        for k, eps in enumerate(epsilons):
            dominated = curves(eps, "dominated_fraction")
            if dominated:
                steps = REPORT_EVERY * np.arange(1, len(dominated[0]) + 1)
                color = plt.cm.viridis(k / max(len(epsilons) - 1, 1))
                ax.plot(steps, np.median(dominated, axis=0), color=color, label=f"eps={eps:g}")
        zero = curves(epsilons[0], "zero_fraction")
        if zero:
            steps = REPORT_EVERY * np.arange(1, len(zero[0]) + 1)
            ax.plot(steps, np.median(zero, axis=0), "k--", lw=1, label="sqrt term = 0")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("dominated fraction (eps >= sqrt term)")
        ax.set_title(f"{task}: {name}, lr={lr:g}, median over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(img_dir, "eps_dominated.png"), dpi=110)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", default="seed,digits", help=f"comma-separated, of {sorted(TASKS)}")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated")
    p.add_argument("--seeds", type=int, default=SEEDS, help="seeds per configuration")
    p.add_argument("--steps", type=int, default=None, help="steps (default: the task's)")
    p.add_argument("--eps", default=None, help="comma-separated epsilons (default: the sweep's)")
    p.add_argument("--out", default="docs/bench", help="directory for eps_sweep.json")
    p.add_argument("--img-dir", default="docs/img", help="directory for eps_*.png")
    p.add_argument("--replot", action="store_true", help="only redraw the plots from --out's JSON")
    args = p.parse_args(argv)
    args.tasks = args.tasks.split(",")
    for task in args.tasks:
        if task not in TASKS:
            p.error(f"--tasks: unknown task {task!r}; choose from {sorted(TASKS)}")
    args.optimizers = args.optimizers.split(",")
    for name in args.optimizers:
        if name not in OPTIMIZERS:
            p.error(f"--optimizers: unknown optimizer {name!r}; choose from {OPTIMIZERS}")
    args.eps = EPSILONS if args.eps is None else tuple(float(e) for e in args.eps.split(","))
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps is not None and (args.steps <= 0 or args.steps % REPORT_EVERY):
        p.error(f"--steps must be a positive multiple of {REPORT_EVERY}, got {args.steps}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.img_dir, exist_ok=True)
    if args.replot:
        with open(os.path.join(args.out, "eps_sweep.json")) as f:
            saved = json.load(f)
        plot(saved["runs"], saved["config"]["epsilons"], args.img_dir)
        return 0
    records, timings = [], {}
    start = time.perf_counter()
    for task in args.tasks:
        settings = sweep_settings(task)
        steps = args.steps or settings["steps"]
        for name in args.optimizers:
            t0 = time.perf_counter()
            records += sweep_one(task, name, settings["lrs"], args.eps, args.seeds, steps)
            timings[f"{task}/{name}"] = round(time.perf_counter() - t0, 1)
            print(f"{task:6s} {name:10s} {timings[f'{task}/{name}']:7.1f} s", flush=True)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "seconds": round(time.perf_counter() - start, 1),
        "seconds_by_run": timings,
        "config": {
            "epsilons": list(args.eps),
            "optimizers": args.optimizers,
            "seeds": args.seeds,
            "report_every": REPORT_EVERY,
            "tasks": {
                t: {
                    **sweep_settings(t),
                    "steps": args.steps or sweep_settings(t)["steps"],
                    "batch_size": get_task(t).defaults["batch_size"],
                    "data": "adam_jax.training.tasks registry, --rng-seed = the run's seed",
                }
                for t in args.tasks
            },
            "convention": "pytorch",
        },
        "runs": records,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "eps_sweep.json"), "w") as f:
        json.dump(result, f, separators=(",", ":"))
    plot(records, args.eps, args.img_dir)
    print(f"wrote {args.out}/eps_sweep.json and {args.img_dir}/eps_*.png in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
