"""A quantized leaf's step in chunks of whole blocks, so that its float32 temporaries stay small.

A step of 8-bit Adam dequantizes a leaf's moments, updates them in float32 and requantizes them;
requantizing needs each block's maximum, a reduction that XLA's CPU backend does not fuse with
the update, so over a whole leaf it holds every float32 moment at once (16 B/param for Adam, more
than float32 Adam's whole state). :func:`in_chunks` runs the step over a few blocks at a time
instead, in a loop that reads each chunk from its arrays and writes the chunk's results: the
float32 temporaries are one chunk's, the new codes overwrite the old in place, and the step and
the new scales get buffers of their own (``_result_buffer`` says why).

A chunk is a run of whole blocks (``_quantize``'s layout), so every block sees exactly the
elements it sees unchunked and the results are the same bits. The leaf is viewed as
``(A, B)`` with long rows (``A`` rows of ``B = n`` elements, units of ``u = block_size``
elements) or ``(A, B, C)`` with short rows (``A`` matrices of ``B`` rows of ``C = n``, units of
``u = k`` rows). A chunk is either whole ``B`` slices, as many as fit, or, when one slice is
larger than a chunk, whole units of one slice (the slice's last chunk may be shorter: it holds
the row's, or the matrix's, last block).

The step also gets its chunk's element positions (row-major flat indices into the leaf), from
which stochastic rounding draws each element's random bits: the same bits, chunked or not.

Leaves that may be sharded are stepped whole: a loop of dynamic slices along a sharded axis
would make XLA gather it. A leaf is taken as possibly sharded when a mesh axis of more than one
device is in context (``jax.set_mesh``) and the leaf is sharded by it (Explicit axes) or its
sharding is not visible when tracing (Auto axes), or when it is a concrete array on more than one
device.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from adam_jax._quantize import QuantizedArray, rows_per_block, scales_shape


class _Region(NamedTuple):
    """``chunks`` chunks of ``extent`` (along A, along B); chunk ``i`` starts at ``start(i)``."""

    chunks: int
    start: Callable[[Any], tuple[Any, Any]]
    extent: tuple[int, int]


def in_chunks(step: Callable, leaf: tuple, *, block_size: int, chunk_size: int) -> tuple:
    """``step(leaf)``, computed over chunks of at most ``chunk_size`` elements of whole blocks.

    Args:
      step: ``step(arrays, positions)`` maps a tuple of same-shaped arrays and
        :class:`QuantizedArray` s (and Nones) to a tuple of the same structure, shapes and
        dtypes, elementwise except within blocks; ``positions()`` gives the elements' flat
        (row-major) indices in the leaf, uint32, of the arrays' shape.
      leaf: the tuple, every array of one shape (a :class:`QuantizedArray`'s codes too).
      block_size: the quantization's block size.
      chunk_size: the most elements per chunk (one unit of blocks at least).

    Returns:
      ``step(leaf)``, the same bits.
    """
    shape = _shape(leaf)
    size = math.prod(shape)
    if not shape or size <= chunk_size or any(_may_be_sharded(x) for x in _arrays(leaf)):
        like = _arrays(leaf)[0]
        return step(leaf, lambda: _positions(shape, (0,) * len(shape), shape, like))
    k = rows_per_block(shape, block_size)
    if k > 1:  # short rows: units of k rows of a matrix
        view: tuple[int, ...] = (math.prod(shape[:-2]), shape[-2], shape[-1])
        unit = k
    else:  # long rows (and 1-D arrays): units of one block of a row
        view = (math.prod(shape[:-1]), shape[-1])
        unit = block_size
    views = _as_views(leaf, view, unit)
    out = _map(_result_buffer, views)
    for region in _regions(view, unit, chunk_size):
        out = _run_region(step, views, out, region, view, unit, block_size)
    return _as_leaf(out, shape, block_size)


def _regions(view: tuple[int, ...], unit: int, chunk_size: int) -> list[_Region]:
    """The chunks covering the ``(A, B[, C])`` view: a uniform grid and its ragged end."""
    a, b = view[:2]
    c = math.prod(view[2:])
    if b * c <= chunk_size:  # whole (B, C) slices, as many as fit
        along_a = min(a, chunk_size // (b * c))
        whole, rest = divmod(a, along_a)
        regions = [_Region(whole, lambda i: (i * along_a, 0), (along_a, b))]
        if rest:
            regions.append(_Region(1, lambda i: (whole * along_a, 0), (rest, b)))
        return regions
    along_b = max(1, chunk_size // (unit * c)) * unit  # whole units of one slice
    per_slice, rest = divmod(b, along_b)
    regions = [
        _Region(a * per_slice, lambda i: (i // per_slice, i % per_slice * along_b), (1, along_b))
    ]
    if rest:
        regions.append(_Region(a, lambda i: (i, per_slice * along_b), (1, rest)))
    return regions


def _run_region(step, views, out, region: _Region, view, unit, block_size) -> tuple:
    """Steps every chunk of ``region`` from ``views`` (the leaf as ``(A, B[, C])``, its scales
    as ``(A, blocks along B)``) into ``out``."""
    extent_a, extent_b = region.extent
    chunk_shape = (extent_a, extent_b, *view[2:])
    scale_extent = (extent_a, -(-extent_b // unit))

    def one_chunk(i, out):
        a, b = region.start(i)
        starts = (a, b) + (0,) * len(view[2:])
        scale_starts = (a, b // unit)

        def read(x):
            if isinstance(x, QuantizedArray):
                scales = lax.dynamic_slice(x.scales, scale_starts, scale_extent)
                return QuantizedArray(
                    lax.dynamic_slice(x.codes, starts, chunk_shape),
                    scales.reshape(scales_shape(chunk_shape, block_size)),
                )
            return lax.dynamic_slice(x, starts, chunk_shape)

        def write(x, new):
            if isinstance(x, QuantizedArray):
                return QuantizedArray(
                    lax.dynamic_update_slice(x.codes, new.codes, starts),
                    lax.dynamic_update_slice(
                        x.scales, new.scales.reshape(scale_extent), scale_starts
                    ),
                )
            return lax.dynamic_update_slice(x, new, starts)

        sources = tuple(
            QuantizedArray(o.codes, x.scales) if isinstance(x, QuantizedArray) else x
            for x, o in zip(views, out, strict=True)
        )
        new = step(_map(read, sources), lambda: _positions(chunk_shape, starts, view))
        return tuple(None if x is None else write(x, y) for x, y in zip(out, new, strict=True))

    if region.chunks == 1:
        return one_chunk(0, out)
    return lax.fori_loop(0, region.chunks, one_chunk, out)


def _positions(shape: tuple[int, ...], starts: tuple, whole: tuple[int, ...], like=None):
    """The flat (row-major) indices in an array of shape ``whole`` of its ``shape`` slice at
    ``starts``, uint32 (sharded like ``like``)."""
    if not shape:
        return jnp.uint32(0)
    sharding = None if like is None else jax.typeof(like).sharding
    strides = [math.prod(whole[d + 1 :]) for d in range(len(whole))]
    total = jnp.uint32(0)
    for d, (start, stride) in enumerate(zip(starts, strides, strict=True)):
        along = lax.broadcasted_iota(jnp.uint32, shape, d, out_sharding=sharding)
        total = total + (along + jnp.asarray(start).astype(jnp.uint32)) * jnp.uint32(stride)
    return total


def _result_buffer(x):
    """Where a chunk's result goes: codes in place (each chunk's codes are read before they are
    written), scales and the other results to new buffers: XLA's CPU backend fuses a chunk's
    reads into several loops that it does not order before the write, and copies a buffer read
    and written in one iteration (in the loop, every iteration)."""
    if isinstance(x, QuantizedArray):
        return QuantizedArray(x.codes, jnp.zeros_like(x.scales))
    return jnp.zeros_like(x)


def _map(fn, leaf: tuple) -> tuple:
    return tuple(None if x is None else fn(x) for x in leaf)


def _arrays(leaf: tuple) -> list:
    out = []
    for x in leaf:
        if isinstance(x, QuantizedArray):
            out += [x.codes, x.scales]
        elif x is not None:
            out.append(x)
    return out


def _shape(leaf: tuple) -> tuple[int, ...]:
    first = next(x for x in leaf if x is not None)
    return tuple((first.codes if isinstance(first, QuantizedArray) else first).shape)


def _as_views(leaf: tuple, view: tuple[int, ...], unit: int) -> tuple:
    scales_view = (view[0], -(-view[1] // unit))

    def as_view(x):
        if isinstance(x, QuantizedArray):
            return QuantizedArray(x.codes.reshape(view), x.scales.reshape(scales_view))
        return x.reshape(view)

    return _map(as_view, leaf)


def _as_leaf(carry: tuple, shape: tuple[int, ...], block_size: int) -> tuple:
    def as_leaf(x):
        if isinstance(x, QuantizedArray):
            return QuantizedArray(
                x.codes.reshape(shape), x.scales.reshape(scales_shape(shape, block_size))
            )
        return x.reshape(shape)

    return _map(as_leaf, carry)


def _may_be_sharded(x) -> bool:
    if not isinstance(x, jax.core.Tracer):
        return isinstance(x, jax.Array) and len(x.sharding.device_set) > 1
    mesh = jax.sharding.get_abstract_mesh()
    return any(
        size > 1
        and (kind != jax.sharding.AxisType.Explicit or _uses_axis(jax.typeof(x).sharding, name))
        for name, size, kind in zip(mesh.axis_names, mesh.axis_sizes, mesh.axis_types, strict=True)
    )


def _uses_axis(sharding, name: str) -> bool:
    for entry in sharding.spec:
        names = (entry,) if isinstance(entry, str) else tuple(entry or ())
        if name in names:
            return True
    return False
