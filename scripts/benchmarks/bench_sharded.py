"""Sharded Adam: bytes per device and step time, data parallel vs FSDP, on N = 1, 2, 4, 8.

The params of a GPT-like stack (``common.transformer_shapes``, every axis divisible by 8) and
``adam_jax.adam``'s state are placed on a one-axis mesh of the first N devices:

1. Bytes per device of params + optimizer state, summed over each array's
   ``addressable_shards``: data parallel (everything replicated) holds the whole on every device,
   FSDP (``fsdp_shardings``) 1/N of it.
2. Time of one jitted, donated optimizer step (``tx.update`` + ``optax.apply_updates``, the
   gradients given) sharded vs unsharded (one device, no mesh), round-robin over repetitions
   (``common.interleaved``); median and p10-p90, and the ratio to unsharded.

Without a GPU, the devices are virtual: ``--xla_force_host_platform_device_count=8`` splits
this machine's CPU into 8 XLA devices that share its cores and memory. Bytes per device are
exact (they are what each device would hold anywhere); times only show the cost of the
partitioned program on the same cores, not the speedup of more hardware.

    python -m scripts.benchmarks.bench_sharded   # docs/bench/sharded.json, docs/img/sharded.png
    python -m scripts.benchmarks.bench_sharded --reps 10 --json /tmp/s.json --png /tmp/s.png
"""

import argparse
import os
import sys

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import adam_jax  # noqa: E402
from adam_jax.training import distributed  # noqa: E402
from scripts.benchmarks import common

DEVICE_COUNTS = (1, 2, 4, 8)
LAYOUTS = ("dp", "fsdp")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256, help="model width (multiple of 8)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--reps", type=int, default=40, help="timed repetitions")
    parser.add_argument("--json", default="docs/bench/sharded.json")
    parser.add_argument("--png", default="docs/img/sharded.png", help="where each part lives")
    return parser.parse_args(argv)


def make_tree(shapes):
    rng = np.random.default_rng(0)
    return {f"p{i:03d}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    shapes = common.transformer_shapes(width=args.width, layers=args.layers)
    host_params = make_tree(shapes)
    host_grads = {k: np.cos(v) for k, v in host_params.items()}
    tx = adam_jax.adam(1e-3)
    n_params = sum(v.size for v in host_params.values())

    @jax.jit
    def init(params):
        return tx.init(params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    unsharded = jax.tree.map(jnp.asarray, host_params)
    state0 = jax.eval_shape(tx.init, unsharded)
    total = distributed.bytes_per_device((unsharded, init(unsharded)))
    total_bytes = next(iter(total.values()))

    memory, runners, layout_of = [], {}, {}
    local = {"params": unsharded, "state": init(unsharded)}
    grads_local = jax.tree.map(jnp.asarray, host_grads)

    def run_local():
        local["params"], local["state"] = step(local["params"], local["state"], grads_local)

    runners["unsharded"] = (run_local, lambda: jax.block_until_ready(local["params"]))
    for n in DEVICE_COUNTS:
        mesh = distributed.make_mesh(n)
        for layout in LAYOUTS:
            make = (
                distributed.fsdp_shardings if layout == "fsdp" else distributed.replicated_shardings
            )
            param_shardings = make(host_params, mesh)
            state_shardings = make(state0, mesh)
            with jax.set_mesh(mesh):
                params = distributed.place(host_params, param_shardings)
                state = jax.jit(tx.init)(params)
                grads = distributed.place(host_grads, param_shardings)
            assert jax.tree.all(
                jax.tree.map(
                    lambda x, s: x.sharding.is_equivalent_to(s, x.ndim), state, state_shardings
                )
            ), "the state does not follow the params"
            held = distributed.bytes_per_device((params, state))
            if n == 4:  # for the picture: each device's bytes of params, m and v
                adam_state = state[0]
                layout_of[layout] = {
                    part: distributed.bytes_per_device(tree)
                    for part, tree in (
                        ("params", params),
                        ("m (mu)", adam_state.mu),
                        ("v (nu)", adam_state.nu),
                    )
                }
            memory.append(
                {
                    "devices": n,
                    "layout": layout,
                    "bytes_per_device_max": max(held.values()),
                    "bytes_per_device_min": min(held.values()),
                    "fraction_of_whole": max(held.values()) / total_bytes,
                }
            )
            box = {"params": params, "state": state}

            def run(box=box, grads=grads, mesh=mesh):
                with jax.set_mesh(mesh):
                    box["params"], box["state"] = step(box["params"], box["state"], grads)

            runners[f"{layout}:{n}"] = (run, lambda box=box: jax.block_until_ready(box["params"]))

    times = common.interleaved(runners, reps=args.reps)
    base = times["unsharded"]
    timing = {
        name: {"seconds": common.summary(t), "ratio_to_unsharded": common.ratio(t, base)}
        for name, t in times.items()
    }

    print(f"{n_params:,} params, adam_jax.adam (float32), {len(jax.devices())} CPU devices")
    print(f"whole params + state: {total_bytes / 2**20:.2f} MiB")
    print(
        f"{'layout':<8}{'N':>3}  {'MiB/device':>11}  {'of whole':>8}  {'step (median)':>14}"
        f"  {'p10-p90':>22}  {'vs unsharded':>12}"
    )
    for row in memory:
        name = f"{row['layout']}:{row['devices']}"
        s, r = timing[name]["seconds"], timing[name]["ratio_to_unsharded"]
        print(
            f"{row['layout']:<8}{row['devices']:>3}  {row['bytes_per_device_max'] / 2**20:>11.3f}"
            f"  {row['fraction_of_whole']:>8.4f}  {common.fmt_time(s['median']):>14}"
            f"  {common.fmt_time(s['p10']) + ' - ' + common.fmt_time(s['p90']):>22}"
            f"  {r['median']:>11.2f}x"
        )
    s = timing["unsharded"]["seconds"]
    print(
        f"unsharded (1 device, no mesh): {common.fmt_time(s['median'])} "
        f"({common.fmt_time(s['p10'])} - {common.fmt_time(s['p90'])})"
    )
    result = {
        "machine": common.machine(),
        "model": {
            "shapes": "transformer_shapes",
            "width": args.width,
            "layers": args.layers,
            "params": n_params,
            "optimizer": "adam_jax.adam(1e-3)",
            "dtype": "float32",
        },
        "reps": args.reps,
        "whole_bytes": total_bytes,
        "memory": memory,
        "timing": timing,
    }
    result["picture_bytes_n4"] = layout_of
    common.save(args, result, lambda path: draw(layout_of, path))
    return 0


def draw(layout_of: dict, path: str) -> None:
    """Stacked bars: each of 4 devices' MiB of params, m and v, data parallel vs FSDP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    colors = {"params": "#4c72b0", "m (mu)": "#dd8452", "v (nu)": "#55a868"}
    titles = {
        "dp": "data parallel: all of it on every device",
        "fsdp": "FSDP: each device holds 1/4",
    }
    for ax, layout in zip(axes, LAYOUTS, strict=True):
        parts = layout_of[layout]
        devices = sorted(next(iter(parts.values())))
        bottom = np.zeros(len(devices))
        for part, held in parts.items():
            mib = np.array([held[d] / 2**20 for d in devices])
            ax.bar(
                [f"device {d}" for d in devices], mib, bottom=bottom, color=colors[part], label=part
            )
            bottom += mib
        ax.set_title(titles[layout], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("MiB per device (from addressable_shards)")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.suptitle(
        'adam_jax.adam on a mesh of 4 devices, axis "data"; the batch is split over "data" in both',
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
