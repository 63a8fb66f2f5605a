"""Checks that every optimizer's state follows the params' sharding, on 8 CPU devices.

Run by tests/test_sharding.py in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the device count is
fixed when JAX starts). Prints one JSON object: the number of checks run and every
failure, each ``{"case": ..., "check": ..., "detail": ...}``.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_jax
from adam_jax.training import distributed

# name -> (factory, handles 16-bit params); fused_adam only takes float32 and is
# checked for init alone (its step belongs to the fused kernel's tests).
OPTIMIZERS = {
    "adam": (lambda: adam_jax.adam(1e-2), True),
    "amsgrad": (lambda: adam_jax.amsgrad(1e-2), True),
    "adamw": (lambda: adam_jax.adamw(1e-2, weight_decay=0.1), True),
    "adam_atan2": (lambda: adam_jax.adam_atan2(1e-2), True),
    "scale_by_adam": (lambda: adam_jax.scale_by_adam(amsgrad=True), True),
    "fused_adam": (lambda: adam_jax.fused_adam(1e-2, amsgrad=True), False),
}
MESHES = {"(8,)": ((8,), ("data",)), "(2, 4)": ((2, 4), ("data", "model"))}
SPECS = {
    "(8,)": [P("data")],
    "(2, 4)": [P(None, "model"), P("data", "model"), P()],
}
STEPS = 3

failures: list = []
checks = 0


ulp_seen: dict = {}
# Largest difference to the unsharded scan, in ulps: the moments bitwise (sqrt and division
# are correctly rounded); params and atan2 within measured bounds (docs/distributed.md).
ALLOWED_ULPS = {"state": 0, "params": 1, "atan2": 4}


def check(case: str, name: str, ok: bool, detail: str = "") -> None:
    global checks
    checks += 1
    if not ok:
        failures.append({"case": case, "check": name, "detail": detail})


def make_params(mesh, spec, low_precision: bool):
    """Two matrices (one bfloat16 when allowed) with ``spec``, a vector with its first axis."""
    rng = np.random.default_rng(0)
    vector_spec = P(spec[0]) if len(spec) else P()
    values = {
        "w": (rng.normal(size=(8, 16)).astype(np.float32), spec),
        "h": (rng.normal(size=(16, 8)).astype(np.float32), spec),
        "b": (rng.normal(size=(16,)).astype(np.float32), vector_spec),
    }
    params = {
        k: jax.device_put(jnp.asarray(v), NamedSharding(mesh, s)) for k, (v, s) in values.items()
    }
    if low_precision:
        params["h"] = params["h"].astype(jnp.bfloat16)
    return params


def moment_trees(state):
    """The param-shaped trees in ``state`` (mu, nu, nu_max) of any adam_jax optimizer."""
    found = []

    def visit(node):
        if isinstance(node, adam_jax.ScaleByAdamState):
            found.extend(t for t in (node.mu, node.nu, node.nu_max) if t is not None)
        elif isinstance(node, tuple):
            for child in node:
                visit(child)

    visit(state)
    return found


def same_sharding(a, b, ndim: int) -> bool:
    """Same device layout; an abstract mesh (from eval_shape) matches by axis sizes and spec."""
    if a is None or b is None:
        return False
    if isinstance(a.mesh, jax.sharding.AbstractMesh):
        spec = lambda s: tuple(s.spec) + (None,) * (ndim - len(s.spec))  # noqa: E731
        return a.mesh.shape_tuple == b.mesh.shape_tuple and spec(a) == spec(b)
    return a.is_equivalent_to(b, ndim)


def check_follows(case: str, name: str, params, state, *, abstract: bool = False) -> None:
    moments = moment_trees(state)
    check(case, f"{name}: has moments", len(moments) >= 2, f"found {len(moments)}")
    for tree in moments:
        for (path, p), m in zip(
            jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(tree), strict=True
        ):
            where = f"{name} {jax.tree_util.keystr(path)}"
            check(case, where, same_sharding(m.sharding, p.sharding, p.ndim), f"{m.sharding}")
            want = jnp.float32 if p.dtype == jnp.bfloat16 else p.dtype
            check(case, f"{where} dtype", m.dtype == want, f"{m.dtype} for {p.dtype}")
            if not abstract:
                check(case, f"{where} zeros", not np.any(np.asarray(m)), "")


def grads_for(params, step):
    """A gradient per step, in each param's dtype (traceable), by + and * only: correctly
    rounded on any shard (XLA's vectorised transcendentals, cos included, may round
    differently on arrays of different lengths)."""
    scale = 1.0 - 0.25 * jnp.asarray(step, jnp.float32)
    return jax.tree.map(lambda p: (p.astype(jnp.float32) * scale + 0.01).astype(p.dtype), params)


def run_case(mesh_name: str, axis_type, spec) -> None:
    """Every optimizer on one mesh, axis type and spec, in a few jitted programs."""
    shape, names = MESHES[mesh_name]
    mesh = jax.make_mesh(shape, names, axis_types=(axis_type,) * len(shape))
    case = f"mesh={mesh_name} {axis_type.name} spec={spec}"
    txs = {name: factory() for name, (factory, _) in OPTIMIZERS.items()}
    params = {
        name: make_params(mesh, spec, low_precision)
        for name, (_, low_precision) in OPTIMIZERS.items()
    }
    explicit = axis_type == AxisType.Explicit

    def init_all(params):
        return {name: tx.init(params[name]) for name, tx in txs.items()}

    def check_all(label, params, states, *, abstract=False):
        for name in txs:
            check_follows(f"{name} {case}", label, params[name], states[name], abstract=abstract)

    # Eagerly, outside and inside the mesh context.
    check_all("eager init", params, init_all(params))
    with jax.set_mesh(mesh):
        check_all("eager init in mesh", params, init_all(params))
        if explicit:
            states = jax.jit(init_all)(params)
            check_all("jit init", params, states)
            check_all("eval_shape init", params, jax.eval_shape(init_all, params), abstract=True)
        else:  # Auto: jit picks its own output layout unless told; the recipe tells it
            shardings = {
                name: distributed.opt_state_shardings(
                    tx, params[name], jax.tree.map(lambda p: p.sharding, params[name]), mesh
                )
                for name, tx in txs.items()
            }
            states = jax.jit(init_all, out_shardings=shardings)(params)
            check_all("jit init with out_shardings", params, states)

    # The rest needs an optax update: fused_adam's step is the fused kernel's.
    del txs["fused_adam"], params["fused_adam"], states["fused_adam"]

    def update_all(params, states):
        return {
            name: tx.update(grads_for(params[name], 0), states[name], params[name])
            for name, tx in txs.items()
        }

    # update under jit keeps every sharding.
    with jax.set_mesh(mesh):
        results = jax.jit(update_all)(params, states)
    for name in txs:
        updates, new_state = results[name]
        where = f"{name} {case}"
        for (path, p), u in zip(
            jax.tree_util.tree_leaves_with_path(params[name]),
            jax.tree.leaves(updates),
            strict=True,
        ):
            key = f"update {jax.tree_util.keystr(path)}"
            check(where, key, same_sharding(u.sharding, p.sharding, p.ndim), f"{u.sharding}")
            check(where, f"{key} dtype", u.dtype == p.dtype, f"{u.dtype}")
        check_follows(where, "state after update", params[name], new_state, abstract=True)
        for old, new in zip(jax.tree.leaves(states[name]), jax.tree.leaves(new_state), strict=True):
            ok = same_sharding(new.sharding, old.sharding, old.ndim)
            check(where, "state keeps sharding", ok, f"{new.sharding} from {old.sharding}")
    if not explicit:
        return

    # lax.scan over steps, Explicit axes: shardings kept, values as unsharded.
    def run_all(params, states):
        def body(carry, step):
            out = {}
            for name, tx in txs.items():
                p, s = carry[name]
                u, s = tx.update(grads_for(p, step), s, p)
                out[name] = (optax.apply_updates(p, u), s)
            return out, None

        carry = {name: (params[name], states[name]) for name in txs}
        return jax.lax.scan(body, carry, jnp.arange(STEPS))[0]

    with jax.set_mesh(mesh):
        out = jax.jit(run_all)(params, states)
    local = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), (params, states))
    want = _run_unsharded(run_all, local)
    for name in txs:
        where = f"{name} {case}"
        out_params, out_state = out[name]
        check_follows(where, "scan", out_params, out_state, abstract=True)
        for p, q in zip(jax.tree.leaves(params[name]), jax.tree.leaves(out_params), strict=True):
            check(where, "scan params keep sharding", same_sharding(q.sharding, p.sharding, p.ndim))
        # Elementwise arithmetic, so the shard's length should not matter. It can, by an ulp:
        # XLA compiles each shard's program anew, and its vectorised atan2, and where it
        # contracts p + (-lr) * s into one fused multiply-add, depend on the shapes.
        for part, got, ref in (
            ("state", out_state, want[name][1]),
            ("params", out_params, want[name][0]),
        ):
            ulps = max(
                _ulp_distance(a, b)
                for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True)
            )
            allowed = ALLOWED_ULPS[part] if name != "adam_atan2" else ALLOWED_ULPS["atan2"]
            check(where, f"scan {part} = unsharded", ulps <= allowed, f"{ulps} ulp")
            key = f"{name} {part}"
            ulp_seen[key] = max(ulp_seen.get(key, 0), ulps)


_unsharded_cache: dict = {}


def _run_unsharded(run_all, local):
    """The same scan on one device (compiled once: the arguments' layout is the same)."""
    if "run" not in _unsharded_cache:
        _unsharded_cache["run"] = jax.jit(run_all)
    return _unsharded_cache["run"](*local)


def _ulp_distance(a, b) -> int:
    """Largest distance in units in the last place between two same-dtype arrays."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind != "f" and a.dtype != jnp.bfloat16:
        return 0 if np.array_equal(a, b) else 2**31
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
    ia, ib = a.view(bits).astype(np.int64), b.view(bits).astype(np.int64)
    # Map sign-magnitude to a monotone integer line, so -0.0 and 0.0 are 0 apart.
    sign = np.int64(1) << (8 * a.dtype.itemsize - 1)
    ia = np.where(ia < 0, -(ia + sign), ia)
    ib = np.where(ib < 0, -(ib + sign), ib)
    return int(np.max(np.abs(ia - ib), initial=0))


def check_memory_kind() -> None:
    """Params in host memory: eager init keeps the memory kind; under jit, JAX puts outputs
    in device memory unless ``out_shardings`` say otherwise, and opt_state_shardings does."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
    sharding = NamedSharding(mesh, P("data"), memory_kind="pinned_host")
    params = {"w": jax.device_put(jnp.ones((16, 4)), sharding)}
    for name, (factory, _) in OPTIMIZERS.items():
        tx = factory()
        eager = tx.init(params)
        with jax.set_mesh(mesh):
            shardings = distributed.opt_state_shardings(tx, params, {"w": sharding}, mesh)
            jitted = jax.jit(tx.init, out_shardings=shardings)(params)
        for label, state in (("eager", eager), ("jit with out_shardings", jitted)):
            for tree in moment_trees(state):
                kind = tree["w"].sharding.memory_kind
                check(f"{name} pinned_host", label, kind == "pinned_host", f"{kind}")


def main() -> None:
    if len(jax.devices()) != 8:
        sys.exit(f"needs XLA_FLAGS=--xla_force_host_platform_device_count=8, got {jax.devices()}")
    for mesh_name in MESHES:
        for axis_type in (AxisType.Explicit, AxisType.Auto):
            for spec in SPECS[mesh_name]:
                try:
                    run_case(mesh_name, axis_type, spec)
                except Exception as e:  # one failing case must not hide the others
                    case = f"mesh={mesh_name} {axis_type.name} spec={spec}"
                    check(case, "raised", False, f"{type(e).__name__}: {e}"[:500])
    check_memory_kind()
    summary = {"checks": checks, "failures": failures, "max_ulps_vs_unsharded": ulp_seen}
    json.dump(summary, sys.stdout)


if __name__ == "__main__":
    main()
