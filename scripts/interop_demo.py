"""The seed's run moved between frameworks half way, on the uninterrupted trajectory.

The seed's PyTorch program (as ``scripts/seed_pytorch.py``: a 1000 -> 100 ->
ReLU -> 10 MLP, sum-of-squares loss on 64 random inputs, ``torch.optim.Adam(
lr=1e-4, amsgrad=True, eps=1e-8)``, torch seed 0) runs ``--before`` steps, is
saved with ``torch.save`` (model and optimizer), read back with
``adam_jax.interop.load_torch_checkpoint`` and continued in JAX for
``--after`` steps; and the reverse, adam_jax first and PyTorch after
``to_torch``. The same with the real ``optax.amsgrad`` and Keras'
``Adam(amsgrad=True)`` (each its own trajectory: optax's AMSGrad is another
optimizer, Keras' epsilon another form). Every continued curve is compared with
its framework's uninterrupted one.

    python -m scripts.interop_demo                 # 250 + 250 steps, float64 and float32
    python -m scripts.interop_demo --plot docs/img/interop_seed.png --json interop.json

Prints a table: per run and dtype, the largest relative loss difference over
the continued steps, and (float32) that of adam_jax run from scratch, for scale.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras reads its backend at its first import

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import adam_jax
from adam_jax import interop
from scripts.seed_pytorch import SEED_EPS, SEED_LR, seed_program, seed_torch_steps

CONVENTION = {"PyTorch": "pytorch", "optax": "optax", "Keras": "keras"}
NAME_MAP = {
    "0.weight": interop.linear("hidden/kernel"),
    "0.bias": "hidden/bias",
    "2.weight": interop.linear("out/kernel"),
    "2.bias": "out/bias",
}


# --- JAX ------------------------------------------------------------------------------------------


def loss_fn(params, x, y):
    hidden = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"][None])
    return jnp.sum((hidden @ params["out"]["kernel"] + params["out"]["bias"][None] - y) ** 2)


def jax_steps(params, tx, opt_state, x, y, steps: int):
    """``steps`` steps of ``tx`` in one jitted ``lax.scan``; the losses, params and state."""

    def step(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    run = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), length=steps))
    (params, opt_state), losses = run(params, opt_state)
    return np.asarray(losses, np.float64), params, opt_state


# --- the runs -------------------------------------------------------------------------------------


def torch_runs(dtype: str, before: int, after: int, workdir: str) -> dict:
    """PyTorch uninterrupted, PyTorch -> JAX through a checkpoint, JAX -> PyTorch."""
    model, optimizer, x, y = seed_program(0, dtype)
    uninterrupted = seed_torch_steps(model, optimizer, x, y, before + after)

    model, optimizer, x, y = seed_program(0, dtype)
    first = seed_torch_steps(model, optimizer, x, y, before)
    path = os.path.join(workdir, f"seed_{dtype}.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    run = interop.load_torch_checkpoint(path, NAME_MAP)
    xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
    then, *_ = jax_steps(run.params, run.optimizer, run.opt_state, xj, yj, after)
    torch_to_jax = np.concatenate([first, then])

    model, optimizer, x, y = seed_program(0, dtype)
    start = interop.from_torch(model.state_dict(), optimizer.state_dict(), NAME_MAP)
    state = start.optimizer.init(start.params)
    first, params, state = jax_steps(start.params, start.optimizer, state, xj, yj, before)
    model_sd, opt_sd = interop.to_torch(params, state, start.groups, NAME_MAP)
    model.load_state_dict(model_sd)
    optimizer.load_state_dict(opt_sd)
    jax_to_torch = np.concatenate([first, seed_torch_steps(model, optimizer, x, y, after)])

    scratch, *_ = jax_steps(
        start.params, start.optimizer, start.optimizer.init(start.params), xj, yj, before + after
    )
    return {
        "reference": uninterrupted,
        "continued": {"PyTorch -> adam_jax": torch_to_jax, "adam_jax -> PyTorch": jax_to_torch},
        "scratch": scratch,
        "params": start.params,
        "data": (xj, yj),
    }


def optax_runs(params, data, before: int, after: int) -> dict:
    """``optax.amsgrad`` uninterrupted, and continued in adam_jax (convention "optax") and back."""
    x, y = data
    opt = adam_jax.amsgrad(SEED_LR, eps=SEED_EPS, convention="optax")
    tx = optax.amsgrad(SEED_LR, eps=SEED_EPS)
    uninterrupted, *_ = jax_steps(params, tx, tx.init(params), x, y, before + after)
    first, mid, state = jax_steps(params, tx, tx.init(params), x, y, before)
    ours_tx, ours = interop.from_optax(state, opt.spec, mid)
    then, *_ = jax_steps(mid, ours_tx, ours, x, y, after)
    optax_to_jax = np.concatenate([first, then])
    first, mid, ours = jax_steps(params, opt, opt.init(params), x, y, before)
    _, theirs = interop.to_optax(ours, opt, mid)
    then, *_ = jax_steps(mid, tx, theirs, x, y, after)
    scratch, *_ = jax_steps(params, opt, opt.init(params), x, y, before + after)
    return {
        "reference": uninterrupted,
        "continued": {
            "optax -> adam_jax": optax_to_jax,
            "adam_jax -> optax": np.concatenate([first, then]),
        },
        "scratch": scratch,
    }


def keras_runs(params, data, before: int, after: int, dtype: str) -> dict:
    """Keras' ``Adam(amsgrad=True)`` uninterrupted, and continued in adam_jax and back."""
    import keras

    x, y = data
    keys = [("hidden", "kernel"), ("hidden", "bias"), ("out", "kernel"), ("out", "bias")]
    name_map = {f"{a}_{b}": f"{a}/{b}" for a, b in keys}

    def tree(values):
        return {
            "hidden": dict(zip(("kernel", "bias"), values[:2], strict=True)),
            "out": dict(zip(("kernel", "bias"), values[2:], strict=True)),
        }

    grad = jax.jit(jax.value_and_grad(lambda values: loss_fn(tree(values), x, y)))

    def variables():
        return [keras.Variable(np.asarray(params[a][b]), name=f"{a}_{b}") for a, b in keys]

    def steps(optimizer, variables, n):
        losses = []
        for _ in range(n):
            value, grads = grad([v.value for v in variables])
            losses.append(float(value))
            optimizer.apply(grads, variables)
        return np.asarray(losses)

    def optimizer():
        return keras.optimizers.Adam(SEED_LR, epsilon=SEED_EPS, amsgrad=True)

    floatx = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        v = variables()
        uninterrupted = steps(optimizer(), v, before + after)
        v, opt = variables(), optimizer()
        first = steps(opt, v, before)
        run = interop.from_keras(opt, v, name_map)
        then, *_ = jax_steps(run.params, run.optimizer, run.opt_state, x, y, after)
        keras_to_jax = np.concatenate([first, then])
        v, opt = variables(), optimizer()  # a fresh Keras run's groups; adam_jax steps first
        opt.build(v)
        start = interop.from_keras(opt, v, name_map)
        first, mid, state = jax_steps(
            start.params, start.optimizer, start.optimizer.init(start.params), x, y, before
        )
        v = variables()
        k_opt = interop.to_keras(mid, state, start.groups, v, name_map)
        jax_to_keras = np.concatenate([first, steps(k_opt, v, after)])
        state = start.optimizer.init(start.params)
        scratch, *_ = jax_steps(start.params, start.optimizer, state, x, y, before + after)
    finally:
        keras.config.set_floatx(floatx)
    return {
        "reference": uninterrupted,
        "continued": {"Keras -> adam_jax": keras_to_jax, "adam_jax -> Keras": jax_to_keras},
        "scratch": scratch,
    }


# --- report ---------------------------------------------------------------------------------------


def relative(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.abs(ours - reference) / np.abs(reference)


def run_all(dtype: str, before: int, after: int, workdir: str) -> dict:
    with jax.enable_x64(dtype == "float64"):
        runs = {"PyTorch": torch_runs(dtype, before, after, workdir)}
        params, data = runs["PyTorch"].pop("params"), runs["PyTorch"].pop("data")
        runs["optax"] = optax_runs(params, data, before, after)
        runs["Keras"] = keras_runs(params, data, before, after, dtype)
    return runs


def table(results: dict, before: int) -> list[dict]:
    rows = []
    for dtype, runs in results.items():
        for framework, run in runs.items():
            for name, losses in run["continued"].items():
                err = relative(losses, run["reference"])
                rows.append(
                    {
                        "dtype": dtype,
                        "run": name,
                        "reference": f"{framework} uninterrupted",
                        "loss_at_end": float(losses[-1]),
                        "reference_loss_at_end": float(run["reference"][-1]),
                        "max_rel_diff_continued": float(err[before:].max()),
                    }
                )
            if "scratch" in run:
                err = relative(run["scratch"], run["reference"])
                rows.append(
                    {
                        "dtype": dtype,
                        "run": f"adam_jax from scratch ({CONVENTION[framework]!r})",
                        "reference": f"{framework} uninterrupted",
                        "loss_at_end": float(run["scratch"][-1]),
                        "reference_loss_at_end": float(run["reference"][-1]),
                        "max_rel_diff_continued": float(err[before:].max()),
                    }
                )
    return rows


def plot(results: dict, before: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(results)
    fig, axes = plt.subplots(2, len(dtypes), figsize=(6.5 * len(dtypes), 8), squeeze=False)
    colors = {"PyTorch": "C0", "optax": "C1", "Keras": "C2"}
    for col, dtype in enumerate(dtypes):
        top, bottom = axes[0, col], axes[1, col]
        for framework, run in results[dtype].items():
            c = colors[framework]
            steps = np.arange(1, len(run["reference"]) + 1)
            top.plot(
                steps,
                run["reference"],
                color=c,
                lw=3,
                alpha=0.35,
                label=f"{framework}, uninterrupted",
            )
            for i, (name, losses) in enumerate(run["continued"].items()):
                ls = ("--", ":")[i]
                top.plot(
                    steps[before:],
                    losses[before:],
                    color=c,
                    ls=ls,
                    lw=1.2,
                    label=f"{name} (continued)",
                )
                bottom.semilogy(
                    steps[before:],
                    np.maximum(relative(losses, run["reference"])[before:], 1e-17),
                    color=c,
                    ls=ls,
                    lw=1,
                    label=name,
                )
        top.axvline(before, color="0.5", lw=0.8)
        top.set_yscale("log")
        top.set_title(f"the seed, {dtype}: converted at step {before}")
        top.set_ylabel("loss")
        top.legend(fontsize=7)
        bottom.set_xlabel("step")
        bottom.set_ylabel("|continued - uninterrupted| / uninterrupted")
        bottom.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--before", type=int, default=250, help="steps before the conversion")
    p.add_argument("--after", type=int, default=250, help="steps after it")
    p.add_argument("--dtype", choices=["float64", "float32", "both"], default="both")
    p.add_argument("--plot", help="write the loss curves to this .png")
    p.add_argument("--json", help="write the table to this .json")
    args = p.parse_args(argv)
    if args.before <= 0 or args.after <= 0:
        p.error("--before and --after must be positive")
    torch.set_num_threads(1)  # small problem: more threads only contend on a shared machine
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    with tempfile.TemporaryDirectory() as workdir:
        results = {d: run_all(d, args.before, args.after, workdir) for d in dtypes}
    rows = table(results, args.before)
    print(
        f"| dtype | run | against | loss at step {args.before + args.after} "
        "| largest relative difference, continued steps |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['run']} | {r['reference']} | {r['loss_at_end']:.6g} "
            f"| {r['max_rel_diff_continued']:.1e} |"
        )
    if args.plot:
        plot(results, args.before, args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.processor() or platform.machine(),
            "versions": {
                "adam_jax": adam_jax.__version__,
                "jax": jax.__version__,
                "torch": torch.__version__,
                "optax": optax.__version__,
            },
            "before": args.before,
            "after": args.after,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
