"""The lm task with adam, amsgrad, adamw and adam_atan2: loss curves, speed, perplexity, epsilon.

Trains the lm task's transformer (adam_jax/training/tasks/lm.py) once per
optimizer, same init, same batches, same schedule, in jitted ``lax.scan`` chunks
of ``--chunk`` steps; after each chunk it evaluates the held-out metrics and
``adam_jax.epsilon_report`` (per leaf). Writes docs/bench/lm_study.json and
docs/img/lm_loss.png; docs/training.md and docs/epsilon.md report them.

    python -m scripts.benchmarks.lm_study  # 800 steps each: 2 to 14 min each on 2 cores, by load
    python -m scripts.benchmarks.lm_study --steps 200 --out /tmp/lm   # a quick look
"""

import argparse
import json
import os
import time
import types
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import adam_jax
from adam_jax.training.tasks import lm
from scripts.benchmarks import common

OPTIMIZERS = ("adam", "amsgrad", "adamw", "adam_atan2")
EPS = 1e-8  # PyTorch's default, convention "pytorch"
WARMUP = 100  # linear warmup steps before the cosine decay to 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800, help="steps per optimizer")
    parser.add_argument("--chunk", type=int, default=100, help="steps per jitted call")
    parser.add_argument("--lr", type=float, default=lm.TASK.defaults["lr"], help="peak lr")
    parser.add_argument("--batch-size", type=int, default=lm.TASK.defaults["batch_size"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS))
    parser.add_argument("--out", default="docs", help="writes bench/lm_study.json, img/lm_loss.png")
    args = parser.parse_args(argv)
    for flag in ("steps", "chunk", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"argument --{flag.replace('_', '-')}: must be a positive integer")
    if args.steps % args.chunk:
        parser.error(f"argument --steps: a multiple of --chunk={args.chunk}, got {args.steps}")
    if args.steps <= WARMUP:
        parser.error(f"argument --steps: more than the {WARMUP} warmup steps, got {args.steps}")
    return args


def make_optimizer(name: str, schedule):
    if name == "adam_atan2":
        return adam_jax.adam_atan2(schedule)
    return getattr(adam_jax, name)(schedule, eps=EPS)


def run(name: str, problem, args) -> dict:
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, WARMUP, args.steps)
    optimizer = make_optimizer(name, schedule)
    graphdef, data_key = problem.graphdef, jax.random.key(args.seed)
    with_eps = name != "adam_atan2"  # adam_atan2 has no epsilon

    def loss_fn(params, x, y):
        return problem.loss(nnx.merge(graphdef, params)(x).astype(jnp.float32), y)[0]

    def step(carry, i):
        params, opt_state = carry
        x, y = problem.batch(problem.train, data_key, i)
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @partial(jax.jit, donate_argnums=0)
    def chunk(carry, start):
        carry, losses = jax.lax.scan(step, carry, start + jnp.arange(args.chunk))
        params, opt_state = carry
        logits = nnx.merge(graphdef, params)(problem.test["x"]).astype(jnp.float32)
        test = problem.test_metrics(logits, problem.test["y"])
        report = adam_jax.epsilon_report(opt_state, optimizer, per_leaf=True) if with_eps else None
        return carry, losses, test, report

    params = jax.tree.map(jnp.copy, problem.params)  # the chunk donates its carry
    carry = (params, optimizer.init(params))
    losses, tests, eps_rows, chunk_s = [], [], [], []
    for start in range(0, args.steps, args.chunk):
        t0 = time.perf_counter()
        carry, chunk_losses, test, report = chunk(carry, start)
        chunk_losses = np.asarray(chunk_losses)  # waits for the chunk
        chunk_s.append(time.perf_counter() - t0)
        losses.extend(chunk_losses.tolist())
        step_done = start + args.chunk
        tests.append({"step": step_done, **{k: float(v) for k, v in test.items()}})
        if report is not None:
            eps_rows.append({"step": step_done, **summarise_eps(report)})
        dominated = f"  eps-dominated {eps_rows[-1]['all']:.4f}" if report is not None else ""
        print(
            f"{name:>10} step {step_done:5d}  train {chunk_losses[-20:].mean():.3f}"
            f"  test {tests[-1]['loss']:.3f} (ppl {tests[-1]['perplexity']:.2f})"
            f"  {chunk_s[-1]:.1f} s{dominated}",
            flush=True,
        )
    timed = chunk_s[1:]  # the first chunk includes the compilation
    tokens_per_step = args.batch_size * lm.CONTEXT
    return {
        "train_loss": losses,
        "test": tests,
        "eps": eps_rows,
        "seconds": sum(chunk_s),
        "first_chunk_s": chunk_s[0],
        "tokens_per_s": tokens_per_step * args.chunk * len(timed) / sum(timed),
        "final_test_loss": tests[-1]["loss"],
        "final_test_perplexity": tests[-1]["perplexity"],
    }


def summarise_eps(report) -> dict:
    """Overall dominated and zero fractions, and per leaf (keyed by its path)."""
    leaves = jax.tree_util.tree_leaves_with_path(
        report["per_leaf"], is_leaf=lambda x: isinstance(x, dict) and "dominated_fraction" in x
    )
    per_leaf = {
        jax.tree_util.keystr(path).replace(".value", ""): {
            "dominated": float(r["dominated_fraction"]),
            "zero": float(r["zero_fraction"]),
        }
        for path, r in leaves
    }
    return {
        "all": float(report["dominated_fraction"]),
        "zero": float(report["zero_fraction"]),
        "sqrt_term_q01": float(report["sqrt_term_q01"]),
        "sqrt_term_q50": float(report["sqrt_term_q50"]),
        "per_leaf": per_leaf,
    }


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (name, r) in enumerate(result["runs"].items()):
        color = f"C{i}"
        loss = np.asarray(r["train_loss"])
        smooth = np.convolve(loss, np.ones(50) / 50, mode="valid")
        ax.plot(np.arange(50, len(loss) + 1), smooth, color=color, lw=1, alpha=0.6)
        steps = [t["step"] for t in r["test"]]
        ax.plot(steps, [t["loss"] for t in r["test"]], "o-", color=color, ms=3, label=name)
    baseline = np.log(result["unigram_perplexity"])
    ax.axhline(baseline, color="k", ls="--", lw=1, label="unigram baseline")
    ax.set(
        xlabel="step",
        ylabel="nats per byte",
        ylim=(0.8, 3.6),
        title="lm task: held-out loss (dots), train loss (50-step mean, faint)",
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    args = parse_args(argv)
    load_start = os.getloadavg()
    config = types.SimpleNamespace(
        rng_seed=args.seed, batch_size=args.batch_size, dtype="float32", init="flax", init_from=None
    )
    problem = lm.make_problem(config, {"param_dtype": jnp.float32, "dtype": jnp.float32})
    corpus = lm.load_corpus()
    params = jax.tree.leaves(problem.params)
    result = {
        "machine": common.machine(),
        "config": {**vars(args), "eps": EPS, "warmup": WARMUP, "schedule": "warmup-cosine"},
        "model": {
            "context": lm.CONTEXT,
            "d_model": lm.D_MODEL,
            "n_heads": lm.N_HEADS,
            "n_layers": lm.N_LAYERS,
            "mlp_ratio": lm.MLP_RATIO,
            "arrays": len(params),
            "params": int(sum(p.size for p in params)),
        },
        "corpus": {
            "python": corpus.python,
            "files": len(corpus.train_files) + len(corpus.test_files),
            "test_files": len(corpus.test_files),
            "bytes": corpus.n_bytes,
            "train_bytes": len(corpus.train),
            "test_bytes": len(corpus.test),
            "sha256": corpus.sha256,
            "bytes_never_in_train": int(np.sum(np.bincount(corpus.train, minlength=256) == 0)),
            "test_tokens_scored": int(problem.test["y"].size),
        },
        "unigram_perplexity": float(lm.unigram_perplexity(corpus.train, problem.test["y"])),
        "runs": {},
    }
    for name in args.optimizers:
        result["runs"][name] = run(name, problem, args)
    result["machine"]["loadavg_start"] = load_start
    result["machine"]["loadavg_end"] = os.getloadavg()
    os.makedirs(os.path.join(args.out, "bench"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "img"), exist_ok=True)
    with open(os.path.join(args.out, "bench", "lm_study.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.join(args.out, "img", "lm_loss.png"))
    print(f"\nunigram baseline perplexity {result['unigram_perplexity']:.2f}")
    print(f"{'optimizer':>10} {'test ppl':>9} {'test loss':>10} {'tokens/s':>9} {'eps-dom':>8}")
    for name, r in result["runs"].items():
        dominated = f"{r['eps'][-1]['all']:.4f}" if r["eps"] else "-"
        print(
            f"{name:>10} {r['final_test_perplexity']:9.2f} {r['final_test_loss']:10.3f}"
            f" {r['tokens_per_s']:9.0f} {dominated:>8}"
        )


if __name__ == "__main__":
    main()
