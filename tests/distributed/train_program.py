"""A small sharded training run, for the distributed tests (run as a subprocess).

The seed's problem at a chosen size: an MLP (default 1000 -> 100 -> ReLU -> 10),
sum-of-squares loss on a fixed batch of 64 random rows, ``adam_jax.amsgrad``.
Params and data come from NumPy with a fixed seed, so every run and every
process starts from the same values. One jitted ``lax.scan`` runs ``--chunk``
steps; an orbax checkpoint is written after each chunk with ``--save``.

    python train_program.py --run single --run dp:8 --run fsdp:8 --out losses.json
    python train_program.py --run fsdp:8 --steps 50 --save DIR          # DIR/fsdp-8
    python train_program.py --run dp:2 --restore DIR/fsdp-8 --steps 100  # another layout
    python scripts/launch.py -n 2 --cpu-devices 2 -- python train_program.py \\
        --distributed --run dp:4 --out losses.json

Each ``--run`` is ``single`` (plain jit on one device, no mesh), ``reversed``
(the same with the batch rows in reverse order: only the summation order
changes) or ``LAYOUT:N`` (``dp`` or ``fsdp`` on a mesh of the first N devices). ``--out``
receives, from process 0, ``{run: {"losses": [...], "params_sha256": ...,
"start_sha256": ..., "bytes_per_device": {...}}}``: all losses since step 0
(restored ones included), hashes of the params at the end and at the start.
"""

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time

import numpy as np

# What one run computes; everything else is how it is laid out.
BATCH = 64
LEARNING_RATE = 1e-3
SEED = 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", action="append", required=True, help="single, reversed, dp:N or fsdp:N"
    )
    parser.add_argument("--sizes", default="1000,100,10", help="layer widths")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=25, help="steps per jitted scan")
    parser.add_argument("--save", help="save after every chunk to SAVE/<run> (orbax)")
    parser.add_argument("--restore", help="start every run from the newest checkpoint here")
    parser.add_argument("--out", help="JSON file for the losses (process 0)")
    parser.add_argument("--distributed", action="store_true", help="adam_jax initialize()")
    parser.add_argument("--heartbeat-timeout", type=int, default=100)
    parser.add_argument("--die-at", type=int, help="os._exit(3) before this step's chunk")
    parser.add_argument("--die-process", type=int, default=1, help="which process dies")
    parser.add_argument("--hang-at", type=int, help="sleep forever before this step's chunk")
    parser.add_argument("--watchdog", type=float, help="Watchdog timeout (s)")
    return parser.parse_args(argv)


def init_values(sizes, dtype):
    """Params (He-scaled normal) and the fixed batch, as NumPy."""
    rng = np.random.default_rng(SEED)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        params[f"w{i}"] = (rng.normal(size=(fan_in, fan_out)) * np.sqrt(2 / fan_in)).astype(dtype)
        params[f"b{i}"] = np.zeros(fan_out, dtype)
    x = rng.normal(size=(BATCH, sizes[0])).astype(dtype)
    y = rng.normal(size=(BATCH, sizes[-1])).astype(dtype)
    return params, (x, y)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from adam_jax.training import distributed

    if args.distributed:
        distributed.initialize(heartbeat_timeout_s=args.heartbeat_timeout)
    import jax

    jax.config.update("jax_enable_x64", args.dtype == "float64")
    import jax.numpy as jnp
    import optax

    import adam_jax

    sizes = [int(s) for s in args.sizes.split(",")]
    host_params, (x, y) = init_values(sizes, np.dtype(args.dtype))
    tx = adam_jax.amsgrad(LEARNING_RATE)
    results = {}

    for run in args.run:
        layout, _, n = run.partition(":")
        mesh = None if layout in ("single", "reversed") else distributed.make_mesh(int(n))

        def loss_fn(params, x, y, layout=layout):
            if layout == "fsdp":
                params = distributed.gather(params)
            h = x
            for i in range(len(sizes) - 1):
                h = h @ params[f"w{i}"] + params[f"b{i}"]
                if i < len(sizes) - 2:
                    h = jax.nn.relu(h)
            return jnp.sum((h - y) ** 2)

        def chunk(state, x, y):
            def train_step(state, _):
                loss, grads = jax.value_and_grad(loss_fn)(state["params"], x, y)
                updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
                params = optax.apply_updates(state["params"], updates)
                return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, loss

            return jax.lax.scan(train_step, state, length=args.chunk)

        run_chunk = jax.jit(chunk, donate_argnums=0)

        def initial_state():
            params = jax.tree.map(jnp.asarray, host_params)
            return {
                "step": jnp.zeros((), jnp.int32),
                "params": params,
                "opt_state": tx.init(params),
            }

        shapes = jax.eval_shape(initial_state)
        if mesh is None:
            shardings = jax.tree.map(
                lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), shapes
            )
            rows = slice(None, None, -1 if layout == "reversed" else 1)
            batch = (jnp.asarray(x[rows]), jnp.asarray(y[rows]))
        else:
            make = (
                distributed.fsdp_shardings if layout == "fsdp" else distributed.replicated_shardings
            )
            shardings = make(shapes, mesh)
            rows = slice_for_process(BATCH, jax.process_index(), jax.process_count())
            batch = distributed.shard_batch((x[rows], y[rows]), mesh)

        manager = None
        if args.save:
            manager = checkpoint_manager(os.path.join(args.save, run.replace(":", "-")))
        losses = []
        if args.restore:
            import orbax.checkpoint as ocp

            restorer = checkpoint_manager(args.restore)
            step = restorer.latest_step()
            target = distributed.checkpoint_target(shapes, shardings)
            restored = restorer.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), losses=ocp.args.JsonRestore()
                ),
            )
            state, losses = restored.state, list(restored.losses)
        else:
            host_state = jax.tree.map(np.asarray, jax.device_get(initial_state()))
            state = distributed.place(host_state, shardings) if mesh else jax.device_put(host_state)

        start_sha256 = params_sha256(state["params"])
        context = jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
        watchdog = (
            distributed.Watchdog(args.watchdog) if args.watchdog else contextlib.nullcontext()
        )
        with context, watchdog:
            while int(state["step"]) < args.steps:
                step = int(state["step"])
                if args.die_at is not None and step >= args.die_at:
                    if jax.process_index() == args.die_process:
                        print(f"process {jax.process_index()} dies at step {step}", flush=True)
                        os._exit(3)
                if args.hang_at is not None and step >= args.hang_at:
                    if jax.process_index() == args.die_process:
                        print(f"process {jax.process_index()} hangs at step {step}", flush=True)
                        time.sleep(3600)
                state, chunk_losses = run_chunk(state, *batch)
                losses.extend(np.asarray(chunk_losses).tolist())  # the host sync of each chunk
                if args.watchdog:
                    watchdog.beat(int(state["step"]))
                if manager is not None:
                    save(manager, state, losses)

        results[run] = {
            "losses": losses,
            "params_sha256": params_sha256(state["params"]),
            "start_sha256": start_sha256,
            "bytes_per_device": distributed.bytes_per_device((state["params"], state["opt_state"])),
        }
    if args.out and jax.process_index() == 0:
        with open(args.out, "w") as f:
            json.dump(results, f)
    return 0


def slice_for_process(rows: int, index: int, count: int) -> slice:
    """This process's consecutive share of the batch rows (process 0 the first)."""
    per = rows // count
    return slice(index * per, (index + 1) * per)


def params_sha256(params) -> str:
    """SHA-256 of every param's bytes, in key order: equal hashes are equal bits."""
    host = gathered(params)
    return hashlib.sha256(b"".join(host[k].tobytes() for k in sorted(host))).hexdigest()


def gathered(tree):
    """Every array of ``tree`` whole on the host, also across processes."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def checkpoint_manager(directory: str):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager, state, losses) -> None:
    import orbax.checkpoint as ocp

    items = ocp.args.Composite(state=ocp.args.StandardSave(state), losses=ocp.args.JsonSave(losses))
    manager.save(int(state["step"]), args=items)


if __name__ == "__main__":
    sys.exit(main())
