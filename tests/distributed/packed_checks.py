"""Checks of a sharded ``PackedLayout`` (FSDP-style buffers) on 8 CPU devices.

Run by tests/test_packed.py in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``. For Explicit and Auto mesh axes and
each optimizer: the buffers, their gradient and the optimizer state are split over the 8
devices (padded to a multiple of 8), the compiled optimizer step has no collective, the
padding stays exactly 0, and three training steps (the loss reading ``layout.unpack``) give
the bits of the same steps on one device. Prints one JSON object: the checks run, the cases,
and every failure, each ``{"case": ..., "check": ..., "detail": ...}``.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_jax
from adam_jax import PackedLayout

COLLECTIVE = re.compile(r"all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter")
SHAPES = {"embed": (5, 3), "w": (3, 4), "b": (4,), "out": (4, 2), "scale": ()}  # 42 params
MASK = {"embed": True, "w": True, "b": False, "out": True, "scale": False}
STEPS = 3
OPTIMIZERS = {
    "amsgrad": lambda mask: adam_jax.amsgrad(1e-2),
    "adamw": lambda mask: adam_jax.adamw(1e-2, weight_decay=0.1, mask=mask),
    "nadam": lambda mask: adam_jax.nadam(1e-2, weight_decay=0.1, mask=mask),
}
if adam_jax.fused_available():
    OPTIMIZERS["fused_adam"] = lambda mask: adam_jax.fused_adam(
        1e-2, amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True, mask=mask
    )

failures: list = []
cases: list = []
checks = 0


def check(case: str, name: str, ok: bool, detail: str = "") -> None:
    global checks
    checks += 1
    if not ok:
        failures.append({"case": case, "check": name, "detail": detail})


def loss(params, x):
    hidden = jnp.tanh(x @ params["embed"] @ params["w"] + params["b"])
    return jnp.sum((hidden @ params["out"]) ** 2) * params["scale"] ** 2


def train_step(layout, tx):
    """One jitted step: the gradient through ``layout.unpack``, then the optimizer."""
    fused = isinstance(tx, adam_jax.FusedAdam)

    def step(buffers, state, x):
        grads = jax.grad(lambda b: loss(layout.unpack(b), x))(buffers)
        if fused:
            buffers, state = tx.step(buffers, grads, state)
        else:
            updates, state = tx.update(grads, state, buffers)
            buffers = optax.apply_updates(buffers, updates)
        return buffers, state, grads

    return jax.jit(step)


def optimizer_step(tx):
    if isinstance(tx, adam_jax.FusedAdam):
        return jax.jit(tx.step)

    def step(buffers, grads, state):
        updates, state = tx.update(grads, state, buffers)
        return optax.apply_updates(buffers, updates), state

    return jax.jit(step)


def run_case(axis_type, name, params, x):
    case = f"{axis_type.name} {name}"
    cases.append(case)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    sharded = NamedSharding(mesh, P("data"))
    layout = PackedLayout.from_params(params, mask=MASK, sharding=sharded)
    single = PackedLayout.from_params(params, mask=MASK)
    check(case, "padded to 8", layout.sizes == {"float32/decayed": 40, "float32/undecayed": 8})
    tx, tx_single = OPTIMIZERS[name](layout.mask), OPTIMIZERS[name](single.mask)

    step_single = train_step(single, tx_single)
    ref = single.pack(params)
    ref = (ref, tx_single.init(ref))
    for _ in range(STEPS):
        ref = step_single(ref[0], ref[1], x)[:2]
    with jax.set_mesh(mesh):
        run_sharded(
            case, mesh, layout, tx, params, x, single.unpack(ref[0]), single.unpack_state(ref[1])
        )


def run_sharded(case, mesh, layout, tx, params, x, expected_params, expected_state):
    sharded = layout.sharding
    buffers = layout.pack(params)
    # Eagerly: each moment is built like its buffer (under jit, Auto axes would need
    # out_shardings, as adam_jax.training.distributed.opt_state_shardings gives).
    state = tx.init(buffers)
    x_rep = jax.device_put(x, NamedSharding(mesh, P()))

    def is_split(a):
        return a.sharding.is_equivalent_to(sharded, 1) and a.addressable_shards[0].data.shape == (
            a.shape[0] // 8,
        )

    check(case, "buffers split", all(is_split(b) for b in buffers.values()))
    moments = [a for a in jax.tree.leaves(state) if a.ndim]
    check(case, "state split", all(map(is_split, moments)), str([a.sharding for a in moments]))

    grads = jax.tree.map(jnp.ones_like, buffers)
    text = optimizer_step(tx).lower(buffers, grads, state).compile().as_text()
    found = sorted(set(COLLECTIVE.findall(text)))
    check(case, "no collective in the optimizer step", not found, str(found))

    step = train_step(layout, tx)
    for _ in range(STEPS):
        buffers, state, grads = step(buffers, state, x_rep)
    check(case, "gradient split", all(is_split(g) for g in grads.values()))
    check(
        case,
        "params and state stay split",
        all(map(is_split, [*buffers.values(), *(a for a in jax.tree.leaves(state) if a.ndim)])),
    )
    real = {"float32/decayed": 35, "float32/undecayed": 7}
    for path, a in jax.tree_util.tree_flatten_with_path((buffers, state))[0]:
        if a.ndim:  # a buffer of params or of a moment, keyed by its buffer
            tail = np.asarray(a)[real[path[-1].key] :]
            where = jax.tree_util.keystr(path)
            check(case, f"padding of {where} stays 0", not np.any(tail), str(tail))
    for what, got, want in (
        ("params", layout.unpack(buffers), expected_params),
        ("state", layout.unpack_state(state), expected_state),
    ):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
            same = (
                a.dtype == b.dtype
                and a.shape == b.shape
                and np.array_equal(a.view(np.uint8), b.view(np.uint8))
            )
            check(case, f"{what} bitwise those of one device", same, f"{a} vs {b}")


def main():
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    params["scale"] = np.float32(1.5)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    for axis_type in (AxisType.Explicit, AxisType.Auto):
        for name in OPTIMIZERS:
            run_case(axis_type, name, params, x)
    print(json.dumps({"checks": checks, "cases": cases, "failures": failures}))


if __name__ == "__main__":
    main()
