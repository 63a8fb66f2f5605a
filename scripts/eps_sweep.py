"""Sweep Adam's epsilon on the seed's task and on digits; write JSON and plots.

For each task, optimizer (Adam, AMSGrad: PyTorch convention; Adam-atan2, which
has no epsilon), learning rate, epsilon and seed, it trains a small MLP and
records the final loss (and test accuracy on digits) and, every
``REPORT_EVERY`` steps, ``adam_jax.epsilon_report``'s ``dominated_fraction``.
All runs of one task and optimizer are one jitted ``vmap`` over the grid of
(learning rate, epsilon, seed), stepped by ``lax.scan``.

    python scripts/eps_sweep.py                   # the full sweep, a few minutes on 2 CPU cores
    python scripts/eps_sweep.py --tasks digits --optimizers adam --seeds 1 --steps 20 \
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

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_jax

# --- the sweep ---------------------------------------------------------------------------
EPSILONS = (0.0, 1e-16, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0)
OPTIMIZERS = ("adam", "amsgrad", "adam_atan2")
SEEDS = 5  # seeds 0..SEEDS-1: weights, data (seed task) and batches (digits)
REPORT_EVERY = 10  # steps between two epsilon reports
# --- the tasks ---------------------------------------------------------------------------
# seed: the seed's 1000 -> 100 -> ReLU -> 10 MLP, sum-of-squares loss, 64 random points.
# digits: sklearn's 8x8 digits, 64 -> 128 -> ReLU -> 10 MLP, mean cross-entropy, batches of 64.
TASKS = {
    "seed": {"sizes": (1000, 100, 10), "steps": 500, "lrs": (1e-4, 1e-3, 1e-2)},
    "digits": {"sizes": (64, 128, 10), "steps": 1000, "lrs": (1e-3, 1e-2, 3e-2), "batch": 64},
}
DIGITS_TEST = 360  # held-out digits, fixed split
DOMINATED_PLOT = {"seed": ("amsgrad", 1e-4), "digits": ("adam", 1e-2)}  # the seed's optimizer
# -----------------------------------------------------------------------------------------


def init_mlp(key, sizes):
    """``torch.nn.Linear``'s default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1 / math.sqrt(fan_in)
        params[f"w{i + 1}"] = jax.random.uniform(kw, (fan_in, fan_out), minval=-bound, maxval=bound)
        params[f"b{i + 1}"] = jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound)
    return params


def mlp(params, x):
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"][None])
    return hidden @ params["w2"] + params["b2"][None]


def load_digits():
    """Digits scaled to [0, 1], split once into train and test sets."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    x, y = (data.data[order] / 16).astype(np.float32), data.target[order].astype(np.int32)
    x, y = jnp.asarray(x), jnp.asarray(y)
    return (x[DIGITS_TEST:], y[DIGITS_TEST:]), (x[:DIGITS_TEST], y[:DIGITS_TEST])


def make_optimizer(name, lr, eps):
    """Built inside the traced function: ``lr`` and ``eps`` are traced."""
    if name == "adam_atan2":
        return adam_jax.adam_atan2(lr)
    return adam_jax.adam(lr, eps=eps, amsgrad=name == "amsgrad")


def make_run(task, name, steps, digits=None):
    """``run(lr, eps, seed) -> dict of results``, pure and vmappable."""
    sizes = TASKS[task]["sizes"]

    def problem(seed):
        key_model, key_x, key_y = jax.random.split(jax.random.key(seed), 3)
        params = init_mlp(key_model, sizes)
        if task == "seed":
            x = jax.random.normal(key_x, (64, sizes[0]))
            y = jax.random.normal(key_y, (64, sizes[-1]))

            def batch_loss(p, step):
                del step
                return jnp.sum((mlp(p, x) - y) ** 2)

            return params, batch_loss, lambda p: batch_loss(p, 0), None

        (x_train, y_train), (x_test, y_test) = digits

        def cross_entropy(p, x, y):
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(mlp(p, x), y))

        def batch_loss(p, step):
            idx = jax.random.randint(
                jax.random.fold_in(key_x, step), (TASKS["digits"]["batch"],), 0, len(y_train)
            )
            return cross_entropy(p, x_train[idx], y_train[idx])

        def accuracy(p):
            return jnp.mean(jnp.argmax(mlp(p, x_test), axis=-1) == y_test)

        return params, batch_loss, lambda p: cross_entropy(p, x_train, y_train), accuracy

    def run(lr, eps, seed):
        params, batch_loss, full_loss, accuracy = problem(seed)
        optimizer = make_optimizer(name, lr, eps)

        def step(carry, t):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(batch_loss)(params, t)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        def report_interval(carry, ts):
            carry, losses = jax.lax.scan(step, carry, ts)
            report = adam_jax.epsilon_report(carry[1], eps)
            return carry, (losses, report)

        ts = jnp.arange(steps).reshape(-1, REPORT_EVERY)
        carry = (params, optimizer.init(params))
        (params, _), (losses, report) = jax.lax.scan(report_interval, carry, ts)
        out = {
            "loss": losses.reshape(-1),
            "final_loss": full_loss(params),
            "dominated_fraction": report["dominated_fraction"],
            "zero_fraction": report["zero_fraction"],
            "sqrt_term_q50": report["sqrt_term_q50"],
        }
        if accuracy is not None:
            out["test_accuracy"] = accuracy(params)
        return out

    return run


def sweep_one(task, name, lrs, epsilons, seeds, steps, digits):
    """All runs of one task and optimizer, as a list of JSON-ready dicts."""
    eps_grid = epsilons if name != "adam_atan2" else (0.0,)  # atan2 has no eps
    grid = [(lr, eps, s) for lr in lrs for eps in eps_grid for s in range(seeds)]
    lr, eps, seed = (jnp.asarray(c) for c in zip(*grid, strict=True))
    run = jax.jit(jax.vmap(make_run(task, name, steps, digits)))
    out = jax.tree.map(np.asarray, run(lr.astype(jnp.float32), eps.astype(jnp.float32), seed))
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
            "dominated_fraction": _short(out["dominated_fraction"][i]),
            "zero_fraction": _short(out["zero_fraction"][i]),
            "sqrt_term_q50": _short(out["sqrt_term_q50"][i]),
        }
        if name == "adam_atan2":
            record["dominated_fraction"] = None  # no eps: the report's eps = 0 is meaningless
        if "test_accuracy" in out:
            record["test_accuracy"] = float(out["test_accuracy"][i])
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

    tasks = [t for t in TASKS if any(r["task"] == t for r in records)]
    xs = [eps_position(e) for e in epsilons]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 5.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        metric = "test_accuracy" if task == "digits" else "final_loss"
        for j, lr in enumerate(TASKS[task]["lrs"]):
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
        name, lr = DOMINATED_PLOT[task]

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
    p.add_argument("--tasks", default="seed,digits", help="comma-separated: seed, digits")
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
    digits = load_digits() if "digits" in args.tasks else None
    records, timings = [], {}
    start = time.perf_counter()
    for task in args.tasks:
        steps = args.steps or TASKS[task]["steps"]
        for name in args.optimizers:
            t0 = time.perf_counter()
            records += sweep_one(
                task, name, TASKS[task]["lrs"], args.eps, args.seeds, steps, digits
            )
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
                t: {**TASKS[t], "steps": args.steps or TASKS[t]["steps"]} for t in args.tasks
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
