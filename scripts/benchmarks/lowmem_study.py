"""Low-memory Adam against float32, side by side: 8-bit state and 16-bit params on three tasks.

Each task is trained once per configuration, in one process, from the same initial weights
(bfloat16 params are the float32 ones rounded), on the same batches, with the same schedule and
seed, through the training package's own step and chunked loop (``adam_jax.training.loop``):

- ``float32``: float32 params and moments (the reference);
- ``8-bit state``: ``quantized_state=adam_jax.BlockQuantization()`` (the library's defaults, or
  ``--block-size``, ``--min-size``, ``--moment-rounding``), float32 params;
- ``bf16 params``: bfloat16 params and ``optax.apply_updates``'s plain round to nearest: an update
  under half an ulp of its weight is lost (no cure, to show the gap);
- ``bf16 + stochastic``, ``bf16 + compensated``: bfloat16 params with ``param_rounding=``
  ``"stochastic"`` (``rounding_seed``: the run's seed) or ``"compensated"`` (an error buffer);
- ``8-bit + bf16 + compensated``: both, the smallest state that keeps every update.

The forward and backward passes compute in float32 in every configuration (bfloat16 params are
cast up in the model; their gradients come back in bfloat16), so only the storage differs. The
tasks keep their defaults (``adam_jax/training/tasks``): the lm task with AdamW, peak lr 2e-3,
100 warmup steps then cosine decay to 0, GPT-2 init; digits with Adam, lr 1e-3, PyTorch's init;
the seed with AMSGrad, lr 1e-4, PyTorch's init, full batch. After every chunk it evaluates the
held-out metrics and ``adam_jax.epsilon_report``. Writes ``<out>/bench/lowmem_study.json`` and
``<out>/img/lowmem_<task>.png``.

    python -m scripts.benchmarks.lowmem_study            # 800 lm steps: ~30 min on 2 loaded cores
    python -m scripts.benchmarks.lowmem_study --quick --out /tmp/lowmem   # a smoke run, ~3 min
    python -m scripts.benchmarks.lowmem_study --tasks lm --configs float32 --seed 1 --out /tmp/s1

``--seed`` draws the initial weights, the batches' order and the stochastic rounding (the held-out
split is fixed); ``--lr-scale`` multiplies every task's peak learning rate.
"""

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_jax
from adam_jax.training import config as run_config
from adam_jax.training import loop
from adam_jax.training.tasks import get_task
from scripts.benchmarks import common


@dataclasses.dataclass(frozen=True)
class Storage:
    """How params and optimizer state are stored: the params' dtype and the optimizer's options."""

    param_dtype: str
    quantized: bool = False
    rounding: str | None = None


CONFIGS = {
    "float32": Storage("float32"),
    "8-bit state": Storage("float32", quantized=True),
    "bf16 params": Storage("bfloat16"),
    "bf16 + stochastic": Storage("bfloat16", rounding="stochastic"),
    "bf16 + compensated": Storage("bfloat16", rounding="compensated"),
    "8-bit + bf16 + compensated": Storage("bfloat16", quantized=True, rounding="compensated"),
}
# The comparisons of the targets: configuration -> the reference it must match.
COMPARED_WITH = {
    "8-bit state": "float32",
    "bf16 + stochastic": "float32",
    "bf16 + compensated": "float32",
    "8-bit + bf16 + compensated": "float32",
    "bf16 params": "float32",  # shown, not required: the gap the cures close
}
REQUIRED = ("8-bit state", "bf16 + stochastic", "bf16 + compensated")


@dataclasses.dataclass(frozen=True)
class Study:
    """One task's settings and its acceptance: the final metric and how close it must be."""

    steps: int
    chunk: int
    init: str
    warmup: int  # 0: a constant learning rate
    metric: str  # "test_perplexity", "test_accuracy" or "loss" (the last train loss)
    tolerance: float  # relative for perplexity and loss, absolute points for accuracy
    quick_steps: int


STUDIES = {
    "lm": Study(800, 100, "flax", 100, "test_perplexity", 0.02, 200),
    "digits": Study(2000, 100, "torch", 0, "test_accuracy", 0.5, 200),
    "seed": Study(500, 50, "torch", 0, "loss", 0.02, 100),
}


def make_problem(task_name: str, study: Study, seed: int):
    """The task's problem with float32 params and compute, and its defaults: the settings
    ``train.py --task task_name --rng-seed seed --init ...`` resolves to (``overwrite``: no
    check of a run directory, none is written)."""
    task = get_task(task_name)
    config = run_config.resolve(
        {"task": task_name, "rng_seed": seed, "overwrite": True, "init": study.init}
    )
    problem = task.make_problem(config, {"param_dtype": jnp.float32, "dtype": jnp.float32})
    return problem, task.defaults


def make_optimizer(
    name: str,
    learning_rate,
    storage: Storage,
    seed: int,
    quantization: adam_jax.BlockQuantization,
):
    """The task's optimizer (``adam_jax.<name>``) with the storage's options; ``quantization``
    is the 8-bit rows' ``quantized_state``."""
    kwargs = {}
    if storage.quantized:
        kwargs["quantized_state"] = quantization
    if storage.rounding is not None:
        kwargs["param_rounding"] = storage.rounding
    if storage.rounding == "stochastic":
        kwargs["rounding_seed"] = seed
    return getattr(adam_jax, name)(learning_rate, **kwargs)


def train(
    task_name: str,
    config_name: str,
    study: Study,
    steps: int,
    seed: int,
    quantization: adam_jax.BlockQuantization,
    lr_scale: float,
) -> dict:
    """One run: losses every step, held-out metrics and the epsilon report after every chunk.

    ``quantization``: the 8-bit rows' layout; ``lr_scale``: multiplies the task's peak learning
    rate (1: the task's default)."""
    storage = CONFIGS[config_name]
    problem, defaults = make_problem(task_name, study, seed)
    dtype = jnp.dtype(storage.param_dtype)
    problem = problem._replace(params=jax.tree.map(lambda p: p.astype(dtype), problem.params))
    peak_lr = defaults["lr"] * lr_scale
    lr = peak_lr
    if study.warmup:
        lr = optax.warmup_cosine_decay_schedule(0.0, peak_lr, study.warmup, steps)
    optimizer = make_optimizer(defaults["optimizer"], lr, storage, seed, quantization)
    step = loop.make_train_step(problem, optimizer, loss_dtype=jnp.float32, learning_rate=lr)
    run_chunk = loop.make_run_chunk(step, study.chunk)
    evaluate = loop.make_evaluate(problem, jnp.float32)
    report = jax.jit(lambda s: adam_jax.epsilon_report(s, optimizer, per_leaf=True))
    state = loop.init_state(problem, optimizer, seed)
    losses, evals, chunk_s = [], [], []
    for start in range(0, steps, study.chunk):
        t0 = time.perf_counter()
        state, metrics, _ = run_chunk(state, problem.train, min(study.chunk, steps - start))
        chunk_losses = np.asarray(metrics["loss"])[: steps - start]  # waits for the chunk
        chunk_s.append(time.perf_counter() - t0)
        losses += chunk_losses.tolist()
        row = {"step": int(state.step), "train_loss_mean": float(chunk_losses.mean())}
        if evaluate is not None:
            row |= {k: float(v) for k, v in evaluate(state.params, problem.test).items()}
        eps = report(state.opt_state)
        row |= {"eps_dominated": float(eps["dominated_fraction"])}
        row |= {"eps_zero": float(eps["zero_fraction"])}
        evals.append(row)
        shown = f"  {study.metric} {row[study.metric]:.4f}" if study.metric in row else ""
        print(
            f"{task_name:>6} {config_name:>27} step {row['step']:5d}  train "
            f"{row['train_loss_mean']:.4f}{shown}  eps-dom {row['eps_dominated']:.4f}"
            f"  {chunk_s[-1]:.1f} s",
            flush=True,
        )
    final = evals[-1][study.metric] if study.metric != "loss" else losses[-1]
    timed = chunk_s[1:] or chunk_s  # the first chunk compiles
    per_leaf = jax.tree_util.tree_leaves_with_path(
        eps["per_leaf"], is_leaf=lambda x: isinstance(x, dict) and "dominated_fraction" in x
    )
    return {
        "final": final,
        "train_loss": losses,
        "evals": evals,
        "eps_per_leaf_final": {
            jax.tree_util.keystr(path).replace(".value", ""): float(r["dominated_fraction"])
            for path, r in per_leaf
        },
        "seconds": sum(chunk_s),
        "ms_per_step": 1e3 * sum(timed) / (study.chunk * len(timed)),
    }


def compare(study: Study, runs: dict) -> dict:
    """Each configuration against its reference: the difference and whether it is within bound."""
    out = {}
    for name, reference in COMPARED_WITH.items():
        if name not in runs or reference not in runs:
            continue
        ours, ref = runs[name]["final"], runs[reference]["final"]
        if study.metric == "test_accuracy":
            difference = 100 * (ours - ref)  # points
        else:
            difference = ours / ref - 1  # relative
        out[name] = {
            "reference": reference,
            "difference": difference,
            "unit": "points" if study.metric == "test_accuracy" else "relative",
            "tolerance": study.tolerance,
            "within": bool(abs(difference) <= study.tolerance),
            "required": name in REQUIRED,
        }
    return out


def plot(task_name: str, study: Study, runs: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    window = max(1, min(50, len(next(iter(runs.values()))["train_loss"]) // 20))
    reference = np.asarray(runs["float32"]["train_loss"]) if "float32" in runs else None
    for i, (name, r) in enumerate(runs.items()):
        style = {"color": f"C{i}", "lw": 1.2, "label": name, "ls": "--" if i % 2 else "-"}
        loss = np.asarray(r["train_loss"])
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        axes[0].plot(np.arange(window, len(loss) + 1), smooth, **style)
        if study.metric != "loss":
            steps = [e["step"] for e in r["evals"]]
            axes[1].plot(steps, [e[study.metric] for e in r["evals"]], "o", ms=3, **style)
        elif reference is not None:  # full batch: the loss itself, step by step, over float32's
            axes[1].plot(np.arange(1, len(loss) + 1), loss / reference, **style)
    axes[0].set(xlabel="step", ylabel=f"train loss ({window}-step mean)", yscale="log")
    if study.metric == "loss":
        axes[1].set(xlabel="step", ylabel="train loss / float32's", yscale="log")
    else:
        axes[1].set(xlabel="step", ylabel=study.metric.replace("_", " "))
    if study.metric == "test_perplexity":
        axes[1].set_yscale("log")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{task_name}: float32 vs 8-bit state vs bfloat16 params, same data and seed")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", choices=list(STUDIES), default=list(STUDIES))
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument(
        "--seed", type=int, default=0, help="the initial weights, the batches' order, the rounding"
    )
    library = adam_jax.BlockQuantization()
    parser.add_argument(
        "--block-size", type=int, default=library.block_size, help="the 8-bit rows' block size"
    )
    parser.add_argument(
        "--min-size",
        type=int,
        default=library.min_size,
        help="the 8-bit rows' smallest quantized leaf",
    )
    parser.add_argument(
        "--moment-rounding",
        choices=("nearest", "stochastic"),
        default=library.rounding,
        help="how the 8-bit rows' moments are rounded to codes (seeded by --seed)",
    )
    parser.add_argument(
        "--lr-scale", type=float, default=1.0, help="multiplies each task's peak learning rate"
    )
    parser.add_argument("--quick", action="store_true", help="each task's quick_steps only")
    parser.add_argument(
        "--out", default="docs", help="writes bench/lowmem_study.json, img/lowmem_<task>.png"
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    quantization = adam_jax.BlockQuantization(
        args.block_size, args.min_size, rounding=args.moment_rounding, seed=args.seed
    )
    result = {"machine": common.machine(), "configs": {}, "tasks": {}}
    result["options"] = {
        "seed": args.seed,
        "block_size": args.block_size,
        "min_size": args.min_size,
        "moment_rounding": args.moment_rounding,
        "lr_scale": args.lr_scale,
    }
    result["configs"] = {name: dataclasses.asdict(CONFIGS[name]) for name in args.configs}
    load_start = os.getloadavg()
    os.makedirs(os.path.join(args.out, "bench"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "img"), exist_ok=True)
    for task_name in args.tasks:
        study = STUDIES[task_name]
        steps = study.quick_steps if args.quick else study.steps
        runs = {
            name: train(task_name, name, study, steps, args.seed, quantization, args.lr_scale)
            for name in args.configs
        }
        result["tasks"][task_name] = {
            "settings": {**dataclasses.asdict(study), "steps": steps},
            "runs": runs,
            "comparisons": compare(study, runs),
        }
        plot(task_name, study, runs, os.path.join(args.out, "img", f"lowmem_{task_name}.png"))
    result["machine"]["loadavg_start"] = load_start
    result["machine"]["loadavg_end"] = os.getloadavg()
    common.write_json(os.path.join(args.out, "bench", "lowmem_study.json"), result)
    for task_name, t in result["tasks"].items():
        metric = STUDIES[task_name].metric
        print(f"\n{task_name}: final {metric}, ms/step, epsilon-dominated fraction at the end")
        for name, r in t["runs"].items():
            c = t["comparisons"].get(name)
            versus = ""
            if c is not None:
                unit = " points" if c["unit"] == "points" else ""
                difference = c["difference"] if unit else 100 * c["difference"]
                bound = c["tolerance"] if unit else 100 * c["tolerance"]
                verdict = ("met" if c["within"] else "NOT met") if c["required"] else "shown"
                versus = f"  {difference:+.3f}{unit or '%'} vs float32 (bound {bound}): {verdict}"
            print(
                f"  {name:>27} {r['final']:10.4f} {r['ms_per_step']:7.2f} "
                f"{r['evals'][-1]['eps_dominated']:.4f}{versus}"
            )
    return result


if __name__ == "__main__":
    main()
