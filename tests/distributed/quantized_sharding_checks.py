"""8-bit Adam on row-sharded params needs no communication: checks on 8 CPU devices.

Run by tests/test_quantized_sharding.py in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the device count is fixed
when JAX starts). Params sharded along axis 0 with rows of 128 (two to a block of
256, sixteen to a block of 2048), of 80 (two to a block of 256), of 1024 (four
blocks a row) and a stack of matrices; Auto and Explicit axes, each with blocks of 256 and of
2048, Adam in one and AMSGrad in the other.
For each: the jitted step's compiled HLO holds no collective, the codes keep the
param's sharding, the scales are sharded along axis 0 too, and two steps give the
unsharded run's codes and scales bit for bit. Where a shard would cut a block
(65 rows a shard for blocks of 16 rows; rows of 128 split across columns), Explicit
axes refuse with the reason and Auto axes quantize as unsharded. Prints one JSON
object: the number of checks, every failure, and the collectives seen.
"""

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_jax
from adam_jax._quantize import QuantizedArray, quantize

SHAPES = {"rows of 128": (256, 128), "rows of 80": (256, 80), "rows of 1024": (64, 1024)}
STACK = {"stack of matrices": (8, 64, 128)}
COLLECTIVES = re.compile(r"\b(all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)")
STEPS = 2
# Each axis type with each block size (how rows group into blocks, so what sharding must
# keep); AMSGrad's maximum, a third moment quantized as the second, alternates across them,
# so it meets each axis type and each block size once.
CASES = [
    (AxisType.Explicit, False, 256),
    (AxisType.Explicit, True, 2048),
    (AxisType.Auto, True, 256),
    (AxisType.Auto, False, 2048),
]

failures: list = []
checks = 0
collectives_seen: dict = {}


def check(case: str, name: str, ok: bool, detail: str = "") -> None:
    global checks
    checks += 1
    if not ok:
        failures.append({"case": case, "check": name, "detail": detail})


def make_params(mesh):
    rng = np.random.default_rng(0)
    sharding = NamedSharding(mesh, P("data"))
    return {
        name: jax.device_put(jnp.asarray(rng.normal(size=shape), jnp.float32), sharding)
        for name, shape in (SHAPES | STACK).items()
    }


def grads_for(params, step):
    """Traceable gradients by + and * only, so every shard rounds as the whole array."""
    scale = 0.5 - 0.25 * jnp.asarray(step, jnp.float32)
    return jax.tree.map(lambda p: p * scale + 0.01, params)


def quantized_moments(state):
    """(label, QuantizedArray tree) for mu, nu and AMSGrad's maximum."""
    adam_state = state[0]
    moments = {"mu": adam_state.mu, "nu": adam_state.nu, "nu_max": adam_state.nu_max}
    return [(label, tree) for label, tree in moments.items() if tree is not None]


def run_case(axis_type, amsgrad: bool, block_size: int) -> None:
    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    case = f"{axis_type.name} amsgrad={amsgrad} block_size={block_size}"
    quantization = adam_jax.BlockQuantization(block_size=block_size)
    tx = adam_jax.adam(1e-2, amsgrad=amsgrad, quantized_state=quantization)

    def run(params, state):
        for step in range(STEPS):
            updates, state = tx.update(grads_for(params, step), state, params)
            params = optax.apply_updates(params, updates)
        return params, state

    with jax.set_mesh(mesh):
        params = make_params(mesh)
        state = tx.init(params)
        compiled = jax.jit(run).lower(params, state).compile()
        found = sorted(set(COLLECTIVES.findall(compiled.as_text())))
        check(case, "no collectives in the compiled step", not found, ", ".join(found))
        collectives_seen[case] = found
        new_params, new_state = compiled(params, state)

    unsharded = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), (params, state))
    want_params, want_state = jax.jit(run)(*unsharded)
    for label, tree in quantized_moments(new_state):
        for name, p in params.items():
            where = f"{label}[{name!r}]"
            q = tree[name]
            check(case, f"{where} is quantized", isinstance(q, adam_jax.QuantizedArray))
            check(
                case,
                f"{where} codes keep the param's sharding",
                q.codes.sharding.is_equivalent_to(p.sharding, p.ndim),
                f"{q.codes.sharding.spec} for {p.sharding.spec}",
            )
            spec = tuple(q.scales.sharding.spec)
            check(case, f"{where} scales sharded along axis 0", spec[:1] == ("data",), str(spec))
            want = dict(quantized_moments(want_state))[label][name]
            check(case, f"{where} codes = unsharded", np.array_equal(q.codes, want.codes))
            check(
                case,
                f"{where} scales = unsharded",
                np.array_equal(np.asarray(q.scales), np.asarray(want.scales), equal_nan=True),
            )
    for name in params:
        check(
            case,
            f"params[{name!r}] = unsharded",
            np.array_equal(np.asarray(new_params[name]), np.asarray(want_params[name])),
        )


def check_blocks_that_would_cross_shards() -> None:
    """Explicit axes that cut a block are refused with the reason; Auto axes let XLA
    communicate, with the unsharded result."""
    for axis_type in (AxisType.Explicit, AxisType.Auto):
        mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
        # 65 rows a shard for blocks of 16 rows of 16; rows of 128 cut across columns.
        for shape, spec in (((520, 16), P("data")), ((64, 128), P(None, "data"))):
            case = f"{axis_type.name} {shape} {spec}"
            x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
            with jax.set_mesh(mesh):
                sharded = jax.device_put(jnp.asarray(x), NamedSharding(mesh, spec))
                tx = adam_jax.adam(1e-2, quantized_state=adam_jax.BlockQuantization())
                try:
                    state = tx.init({"w": sharded})
                except ValueError as e:
                    refused = "would cross shards" in str(e) and str(shape) in str(e)
                    check(case, "refused with the reason", axis_type == AxisType.Explicit, str(e))
                    check(case, "the error names the shape and the reason", refused, str(e))
                    continue
                check(case, "Auto axes quantize", axis_type == AxisType.Auto, "not refused")
                check(case, "Auto: quantized", isinstance(state[0].mu["w"], QuantizedArray))
                got = jax.jit(lambda x: quantize(x, signed=True, block_size=256))(sharded)
            want = quantize(jnp.asarray(x), signed=True, block_size=256)
            check(case, "codes = unsharded", np.array_equal(got.codes, want.codes))
            check(case, "scales = unsharded", np.array_equal(got.scales, want.scales))


def main() -> None:
    if len(jax.devices()) != 8:
        sys.exit(f"needs XLA_FLAGS=--xla_force_host_platform_device_count=8, got {jax.devices()}")
    for axis_type, amsgrad, block_size in CASES:
        try:
            run_case(axis_type, amsgrad, block_size)
        except Exception as e:  # one failing case must not hide the others
            case = f"{axis_type.name} amsgrad={amsgrad} block_size={block_size}"
            check(case, "raised", False, f"{type(e).__name__}: {e}"[:500])
    check_blocks_that_would_cross_shards()
    summary = {"checks": checks, "failures": failures, "collectives": collectives_seen}
    json.dump(summary, sys.stdout)


if __name__ == "__main__":
    main()
