"""The fused kernel's plumbing: loading it, registering it with XLA, and calling it.

``adam_jax._adam_step`` is the C++ extension built from ``csrc/adam_step.cc`` when
adam_jax is installed (setup.py). This module loads it, registers its handler as an
XLA FFI target, and calls it on every leaf at once, in place (its outputs alias its
inputs), shard by shard on sharded arrays: through ``custom_partitioning`` for Auto
mesh axes and ``shard_map`` for Explicit ones, with no communication. The public
optimizer around it is ``_fused.fused_adam``.
"""

import functools
import importlib
from typing import NamedTuple

import jax
from jax.experimental.custom_partitioning import (
    ArrayMapping,
    SdyShardingRule,
    custom_partitioning,
)
from jax.sharding import NamedSharding, PartitionSpec

_TARGET = "adam_jax_step"


@functools.cache
def kernel_module():
    """The extension module built at install time, or None where it was not built."""
    try:
        return importlib.import_module("adam_jax._adam_step")
    except ImportError:
        return None


@functools.cache
def register(module) -> None:
    """Registers the kernel with XLA, once per process."""
    jax.ffi.register_ffi_target(_TARGET, module.handler, platform="cpu")


class KernelOptions(NamedTuple):
    """The kernel's static attributes: the structure of ``adam_jax.adam``'s chain."""

    amsgrad: bool
    coupled: bool
    decoupled: bool


def _ffi_step(scalars, *arrays, options: KernelOptions):
    """One FFI call over every leaf; outputs (p, m, v[, v_max]) alias their inputs."""
    kinds = 5 if options.amsgrad else 4
    n = len(arrays) // kinds
    p, _, *state = (arrays[a * n : (a + 1) * n] for a in range(kinds))
    outs = [*p, *(x for leaves in state for x in leaves)]
    # Input 0 is the scalars; input 1 + a * n + i is array a of leaf i (a: p, g, m, v, v_max).
    aliases = {1 + i: i for i in range(n)}
    aliases.update(
        {1 + (a + 2) * n + i: (a + 1) * n + i for a in range(len(state)) for i in range(n)}
    )
    call = jax.ffi.ffi_call(
        _TARGET,
        [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in outs],
        input_output_aliases=aliases,
        vmap_method="sequential",
    )
    return tuple(call(scalars, *arrays, **options._asdict()))


def call_kernel(scalars, arrays, options: KernelOptions):
    """The kernel on every leaf; sharded leaves are updated shard by shard, in place."""
    flat = [x for leaves in arrays for x in leaves]
    mesh = _explicit_mesh(flat)
    if mesh is not None:
        return _shard_map_step(mesh, scalars, arrays, options)
    ranks = tuple(x.ndim for x in arrays[0])
    return list(_partitioned_step(options, ranks)(scalars, *flat))


def _explicit_mesh(flat):
    """The abstract mesh when an array's mesh has Explicit axes, else None (Auto axes)."""
    for x in flat:
        sharding = getattr(jax.typeof(x), "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        if mesh is not None and not mesh.empty and mesh.explicit_axes:
            return mesh
    return None


def _shard_map_step(mesh, scalars, arrays, options: KernelOptions):
    """Explicit axes: each leaf's arrays take the param's sharding; shard_map runs the kernel."""
    params = arrays[0]
    specs = [jax.typeof(p).sharding.spec for p in params]
    arrays = [
        [
            jax.sharding.reshard(x, NamedSharding(mesh, spec))
            for x, spec in zip(leaves, specs, strict=True)
        ]
        for leaves in arrays
    ]
    kinds = len(arrays)
    flat = [x for leaves in arrays for x in leaves]
    run = jax.shard_map(
        functools.partial(_ffi_step, options=options),
        mesh=mesh,
        in_specs=(PartitionSpec(), *specs * kinds),
        out_specs=tuple(specs * (kinds - 1)),
    )
    return list(run(scalars, *flat))


@functools.cache
def _partitioned_step(options: KernelOptions, ranks: tuple[int, ...]):
    """``_ffi_step`` under ``custom_partitioning``: each device runs it on its own shards.

    The update is elementwise, so a leaf partitions like its param, with no communication:
    every array of a leaf (and its outputs) takes the param's sharding, the scalars are
    replicated. With one device the kernel is called directly. ``ranks`` are the leaves'.
    """
    kinds = 5 if options.amsgrad else 4
    lower = functools.partial(_ffi_step, options=options)

    @custom_partitioning
    def step(scalars, *arrays):
        return lower(scalars, *arrays)

    def param_shardings(mesh, arg_shapes):
        return [_named(mesh, x.sharding, len(x.shape)) for x in arg_shapes[1 : 1 + len(ranks)]]

    def infer(mesh, arg_shapes, result_shape):
        del result_shape
        return tuple(param_shardings(mesh, arg_shapes) * (kinds - 1))

    def partition(mesh, arg_shapes, result_shape):
        del result_shape
        per_leaf = param_shardings(mesh, arg_shapes)
        replicated = NamedSharding(mesh, PartitionSpec())
        return mesh, lower, tuple(per_leaf * (kinds - 1)), (replicated, *per_leaf * kinds)

    # Shardy: dimension d of leaf i is factor "l{i}d{d}" in each of its arrays.
    leaves = [ArrayMapping(*(f"l{i}d{d}" for d in range(r))) for i, r in enumerate(ranks)]
    step.def_partition(
        partition=partition,
        infer_sharding_from_operands=infer,
        sharding_rule=SdyShardingRule(
            (ArrayMapping("scalar"), *leaves * kinds),
            tuple(leaves * (kinds - 1)),
            need_replication_factors=("scalar",),
        ),
    )

    # custom_partitioning has no batching rule: under jax.vmap, one kernel call per element.
    @jax.custom_batching.custom_vmap
    def batchable(scalars, *arrays):
        return step(scalars, *arrays)

    @batchable.def_vmap
    def _(axis_size, in_batched, scalars, *arrays):
        in_axes = [0 if batched else None for batched in in_batched]
        out = jax.vmap(lower, in_axes=in_axes, axis_size=axis_size)(scalars, *arrays)
        return out, (True,) * len(out)

    return batchable


def _named(mesh, sharding, ndim):
    """``sharding`` as a NamedSharding on ``mesh`` (replicated when unknown)."""
    if isinstance(sharding, NamedSharding):
        return sharding
    return NamedSharding(mesh, PartitionSpec(*([None] * ndim)))
