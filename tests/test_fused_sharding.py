"""``fused_adam`` on 8 virtual CPU devices: sharded in, sharded out, no communication."""

import os
import subprocess
import sys
import textwrap

import jax
import pytest

import adam_jax

pytestmark = [
    pytest.mark.skipif(
        not adam_jax.fused_available(),
        reason="fused_adam's kernel was not built at install time (no C++ compiler)",
    ),
    pytest.mark.skipif(jax.default_backend() != "cpu", reason="fused_adam runs on the CPU only"),
]

# Runs in a fresh interpreter with 8 host devices. For each mesh, axis type and layout: the
# step's outputs keep the inputs' shardings, the compiled program has no collective, and the
# values are the bits of the same step on one device.
SCRIPT = textwrap.dedent(
    """
    import re
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import adam_jax

    COLLECTIVE = re.compile(r"all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter")
    SHAPES = {"w": (8, 12), "x": (64,), "b": (3,)}
    rng = np.random.default_rng(0)
    HOST = [{k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
            for _ in range(3)]  # params, then two gradients

    def check(mesh, specs, **kwargs):
        fused = adam_jax.fused_adam(1e-2, **kwargs)
        put = lambda t: {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in t.items()}
        params, *grads = map(put, HOST)
        state = fused.init(params)
        step = jax.jit(fused.step)
        found = set(COLLECTIVE.findall(step.lower(params, grads[0], state).compile().as_text()))
        assert not found, (mesh, specs, found)
        new = (params, state)
        for g in grads:
            new = step(new[0], g, new[1])
        moments = lambda s: [x for x in jax.tree.leaves(s) if x.ndim]  # not the step counts
        for a, b in zip(jax.tree.leaves(new[0]) + moments(new[1]),
                        jax.tree.leaves(params) + moments(state)):
            assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (a.sharding, b.sharding)
        one = lambda t: jax.device_put(t, jax.devices()[0])
        ref = (one(HOST[0]), fused.init(one(HOST[0])))
        for g in HOST[1:]:
            ref = jax.jit(fused.step)(ref[0], one(g), ref[1])
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref)):
            assert np.array_equal(np.asarray(a), np.asarray(b))

    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((8,), ("d",), axis_types=(axis_type,))
        check(mesh, {"w": P("d"), "x": P("d"), "b": P()}, amsgrad=True)
        mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
        check(mesh, {"w": P("data", "model"), "x": P("model"), "b": P()},
                         weight_decay=0.1)
        check(mesh, {"w": P(None, "model"), "x": P(("data", "model")), "b": P()},
                         amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True)
    print("ok")
    """
)


def test_sharded_step_stays_sharded_without_collectives():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1] == "ok"
