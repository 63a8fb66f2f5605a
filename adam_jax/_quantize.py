"""Block-wise 8-bit quantization with the dynamic code maps of Dettmers et al. (2022).

An array is cut into blocks of at most ``block_size`` elements, each keeping one
float32 scale, its absolute maximum ``N``, and each element one uint8 code: the
index of the code-map value nearest to ``x / N``. The blocks, for an array whose
rows (its last axis) have ``n`` elements:

- Long rows, ``n >= block_size``: ``block_size`` consecutive elements of a row (a
  row's tail is a shorter block). The scales have shape
  ``(*shape[:-1], ceil(n / block_size))``.
- Short rows, ``0 < n < block_size``, of an array of two or more dimensions: ``k``
  whole consecutive rows of one matrix (the second-to-last axis, of length ``m``),
  ``k`` the largest power of two with ``k * n <= block_size``; a matrix's last block
  may hold fewer rows. The scales have shape ``(*shape[:-2], ceil(m / k), 1)``.
- A 1-D array is one row; a 0-d array is one block of 1, with scales of shape ``()``.

The scales keep the codes' rank (:func:`scales_shape`). A block never crosses a
matrix of the leading axes, nor, with long rows, a row: codes and scales follow the
array's sharding along every axis but the last two with no communication; along
the second-to-last axis too when rows are long, or when each shard holds a multiple
of ``k`` rows (why ``k`` is a power of two: shards of ``2**j`` rows take whole
blocks); along the last axis when a shard holds whole blocks. A sharding by
explicit mesh axes that would cut a block is refused with the reason; under Auto
axes XLA lays such blocks out itself, communicating.

The quantizer, exactly (the float64 NumPy model in ``tests/quantize_reference.py``
follows these rules and agrees bit for bit):

1. Inputs of magnitude below the smallest normal float32 (``2**-126``) count as
   zeros of their sign. XLA's CPU backend flushes them anyway; flushing them on
   purpose makes every backend agree.
2. ``N = max |x|`` over the block. A block holding a NaN or an infinity (or, for
   the unsigned map, a negative value) gets ``N = NaN``: every element of that
   block then dequantizes to NaN, so a NaN cannot hide inside a block.
3. ``y = x / N``, one float32 division (``x`` itself where ``N = 0``, so an
   all-zero block has no ``0 / 0``).
4. The code is the index of the nearest value of the sorted code map ``c``; a value
   exactly halfway between two codes takes the lower one. Equivalently the code
   is the number of thresholds ``t_j < y``, where ``t_j`` is the exact midpoint
   ``(c_j + c_{j+1}) / 2`` rounded down to float32 (so the float32 comparison is
   exact). A NaN ``y`` gets code 0.
5. Dequantization is ``c[code] * N`` in float32, with results below ``2**-126``
   in magnitude flushed to zeros of their sign, as in step 1.

Negative zero quantizes to the code of 0 and comes back as +0.

Stochastic rounding (``random_bits`` given; Gupta et al., 2015) replaces step 4's
nearest code by one of the two codes around ``y``, chosen so that the code's value is
``y`` on average:

4'. With ``l`` the last code at or below ``y`` (``l = 0`` below ``c_0``), the float32
    fraction ``f = (y - c_l) * w_l``, ``w_l`` the reciprocal of the gap ``c_{l+1} - c_l``
    (both rounded to float32; ``w_255 = 1``), and the element's 32 random bits ``r``,
    the code is ``l + 1`` when ``(r >> 8) * 2**-24 < f`` and ``l`` otherwise: ``l + 1``
    with probability ``f`` (24 bits of it). A ``y`` below ``2**-126`` in magnitude counts
    as 0 (as in step 1); a NaN ``y`` gets code 0. For the unsigned
    map a positive ``y`` never gets code 0, but code 1 at least: a second moment stored
    as 0 would make the step ``m / eps``.
"""

import dataclasses
import functools
import math
from typing import Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_SMALLEST_NORMAL = float(np.finfo(np.float32).smallest_normal)  # 2**-126
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ACCEPTED_DTYPES = ("float16", "bfloat16", "float32")

MomentRounding = Literal["nearest", "stochastic"]


class QuantizedArray(NamedTuple):
    """An array stored as 8-bit codes with one float32 scale per block.

    ``codes``: uint8, the array's shape; each an index into ``code_map(signed)``.
    ``scales``: float32, ``scales_shape(codes.shape, block_size)``; each block's
    absolute maximum, or NaN for a block that held a NaN, an infinity or (unsigned)
    a negative value.
    """

    codes: jax.Array
    scales: jax.Array


@dataclasses.dataclass(frozen=True)
class BlockQuantization:
    """How an optimizer stores its moments in 8 bits: ``quantized_state=`` of the factories.

    Every real float moment leaf of at least ``min_size`` elements is kept as a
    :class:`adam_jax.QuantizedArray` (uint8 codes, one float32 scale per block: ``block_size``
    consecutive elements of a row, or, where rows are shorter, as many whole rows of
    a matrix as fit, a power of two): the first moment with the signed dynamic map, the
    second moment and AMSGrad's maximum with the unsigned one. Smaller leaves (and
    complex ones) keep float32 moments: below a block, a leaf's scale costs as much as
    its codes save.

    The defaults differ from bitsandbytes' 8-bit Adam in two measured ways (docs/memory.md):
    new codes are rounded stochastically, which keeps the stored moments on the float32
    curve where rounding to the nearest code lets them drift (held-out perplexity of the
    lm task 1.6-2.1% away from float32's with nearest rounding), and leaves from 256
    elements are quantized, not from 4096 (AMSGrad's state on the lm task: 3.08 B/param,
    3.12 with 4096). ``BlockQuantization(min_size=4096, rounding="nearest")`` is
    bitsandbytes' choice, code for code.

    Attributes:
      block_size: the most elements per block, a power of two >= 32. Smaller blocks
        follow outliers more closely and cost more scales: ``4 / block_size`` bytes per
        param and quantized moment for full blocks, under twice that for any layout
        (a block holds more than ``block_size / 2`` elements, except at a row's or a
        matrix's end).
      min_size: leaves with fewer elements keep float32 moments; an int >= 0.
      chunk_size: the most elements of a leaf a step dequantizes, updates and requantizes at
        a time (an int >= 1; at least one block is taken): the step's float32 temporaries are
        one chunk's, not the leaf's. The results do not depend on it (chunks are whole
        blocks); leaves that may be sharded are stepped whole (``adam_jax._chunked``).
      rounding: how new moments get their codes. ``"stochastic"``: one of the two codes
        around the value, at random, exact on average (``adam_jax._quantize.quantize``'s
        ``random_bits``), and a positive second moment never stored as 0 (its step would
        be ``m / eps``). ``"nearest"``: the nearest code, as bitsandbytes does; it loses
        every change of a moment smaller than half a code's gap (a step moves ``v`` by
        ``1 - b2`` of itself, 0.1%, against gaps of 0.7-7% of the value above a tenth of
        the block's maximum), so the stored second moments drift from the float32 ones.
        Stochastic rounding costs a step 1.4-1.8 times the time on CPU (hashing and two
        more table reads per element).
      seed: the random bits' seed for ``"stochastic"``, an int in [0, 2**32). Each step
        splits ``fold_in(jax.random.key(seed), count)`` into three keys per leaf (in the
        tree's leaf order), for m, v and AMSGrad's maximum; an element's bits are
        ``_quantize.position_bits`` of its flat position under that moment's key. A resumed
        run draws the same bits, and the results do not depend on ``chunk_size`` or the
        params' sharding.

    References:
      Dettmers et al, `8-bit Optimizers via Block-wise Quantization
      <https://arxiv.org/abs/2110.02861>`_, 2022 (ICLR).
      Gupta et al, `Deep Learning with Limited Numerical Precision
      <https://arxiv.org/abs/1502.02551>`_, 2015 (ICML).
    """

    block_size: int = 256
    min_size: int = 256
    chunk_size: int = 16384
    rounding: MomentRounding = "stochastic"
    seed: int = 0

    def __post_init__(self):
        check_block_size(self.block_size)
        for name, least in (("min_size", 0), ("chunk_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int >= {least}, got {value!r}.")
            if value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}.")
        if self.rounding not in get_args(MomentRounding):
            raise ValueError(
                f"rounding must be one of {list(get_args(MomentRounding))}, got {self.rounding!r}."
            )
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int in [0, 2**32), got {seed!r}.")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}.")

    def applies_to(self, leaf) -> bool:
        """Whether a moment of ``leaf`` (a param or gradient) is stored quantized."""
        dtype = jnp.result_type(leaf)
        return jnp.issubdtype(dtype, jnp.floating) and np.size(leaf) >= self.min_size


def check_block_size(block_size) -> None:
    """Raises unless ``block_size`` is a power of two of at least 32.

    Raises:
      TypeError: if it is not an int (bools included).
      ValueError: if it is an int that is not a power of two >= 32.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise TypeError(f"block_size must be an int (a power of two >= 32), got {block_size!r}.")
    if block_size < 32 or block_size & (block_size - 1):
        raise ValueError(
            "block_size must be a power of two >= 32 (32, 64, 128, 256, ..., 2048, ...), "
            f"got {block_size!r}."
        )


def rows_per_block(shape: tuple[int, ...], block_size: int) -> int:
    """How many whole rows a block of an array of ``shape`` holds; 1 when rows are long.

    For rows of ``0 < n < block_size`` elements in an array of two or more
    dimensions: the largest power of two ``k`` with ``k * n <= block_size``.
    Otherwise 1 (blocks run along the row).
    """
    n = shape[-1] if shape else 1
    if len(shape) < 2 or not 0 < n < block_size:
        return 1
    return 1 << ((block_size // n).bit_length() - 1)


def scales_shape(shape: tuple[int, ...], block_size: int) -> tuple[int, ...]:
    """The shape of the scales of an array of ``shape``; it has the same rank.

    Long rows (``shape[-1] >= block_size``, and 1-D arrays):
    ``(*shape[:-1], ceil(shape[-1] / block_size))``. Short rows, grouped ``k`` at a
    time (:func:`rows_per_block`): ``(*shape[:-2], ceil(shape[-2] / k), 1)``. A 0-d
    array has one scale, of shape ``()``.
    """
    if not shape:
        return ()
    k = rows_per_block(shape, block_size)
    if k > 1:
        return (*shape[:-2], -(-shape[-2] // k), 1)
    return (*shape[:-1], -(-shape[-1] // block_size))


def _block_layout(shape: tuple[int, ...], block_size: int) -> tuple[tuple, tuple, tuple]:
    """An array of ``shape`` (1-D or more) grown to whole blocks, and that viewed as blocks.

    Returns ``(padded, split, blocked)``: ``shape`` with a row's tail, or a matrix's last
    group of rows, padded to a whole block; ``padded`` with the blocks' axis split off
    (short rows: ``(..., groups, k, n)``); and ``(..., blocks, elements per block)``.
    Reshaping through ``split`` moves no sharded axis, which JAX's explicit sharding
    can follow (one reshape from ``(m, n)`` to ``(m / k, k n)`` it refuses).
    """
    k = rows_per_block(shape, block_size)
    if k > 1:
        *lead, rows, n = shape
        groups = -(-rows // k)
        return (*lead, groups * k, n), (*lead, groups, k, n), (*lead, groups, k * n)
    length = min(shape[-1], block_size) or block_size
    blocks = -(-shape[-1] // length)
    blocked = (*shape[:-1], blocks, length)
    return (*shape[:-1], blocks * length), blocked, blocked


def _check_blocks_fit_explicit_shards(x: jax.Array, block_size: int) -> None:
    """Raises if explicit mesh axes cut a block: every shard must hold whole blocks. Auto
    axes are XLA's to lay out (with collectives where blocks cross shards)."""
    k = rows_per_block(x.shape, block_size)
    length = _block_layout(x.shape, block_size)[2][-1]
    if k > 1:
        blocks = f"{k} whole rows of {x.shape[-1]}"
        per_shard = {x.ndim - 2: k, x.ndim - 1: x.shape[-1]}  # rows; the last axis unsharded
    else:
        blocks = f"{length} elements of a row"
        per_shard = {x.ndim - 1: length}
    sharding = jax.typeof(x).sharding
    spec = tuple(sharding.spec) + (None,) * x.ndim
    for axis, multiple in per_shard.items():
        names = spec[axis] or ()
        names = (names,) if isinstance(names, str) else tuple(names)
        shards = math.prod(sharding.mesh.shape[name] for name in names)
        if shards > 1 and (x.shape[axis] // shards) % multiple:
            raise ValueError(
                f"quantized state of a param of shape {x.shape} sharded {shards} ways along "
                f"axis {axis} by explicit mesh axes {names!r}: its blocks of {blocks} "
                f"(block_size={block_size}) would cross shards, which need a multiple of "
                f"{multiple} along axis {axis} each. Shard it so, use Auto mesh axes (XLA then "
                "communicates), or keep its moments in float32 (a larger min_size)."
            )


def _to_blocks(x: jax.Array, block_size: int) -> jax.Array:
    """``x`` (1-D or more) as ``(..., blocks, elements per block)``, zero-padded (zeros change
    no block's max)."""
    _check_blocks_fit_explicit_shards(x, block_size)
    padded, split, blocked = _block_layout(x.shape, block_size)
    if padded != x.shape:
        x = jnp.pad(x, [(0, whole - length) for whole, length in zip(padded, x.shape, strict=True)])
    return x.reshape(split).reshape(blocked)


def _from_blocks(blocks: jax.Array, shape: tuple[int, ...], block_size: int) -> jax.Array:
    """The array of ``shape`` that ``_to_blocks`` made ``blocks`` of: the padding dropped."""
    padded, split, _ = _block_layout(shape, block_size)
    whole = blocks.reshape(split).reshape(padded)
    return whole if padded == shape else lax.slice(whole, (0,) * len(shape), shape)


def _look_up(table: np.ndarray, indices: jax.Array) -> jax.Array:
    """``table[indices]``, sharded like ``indices`` (JAX's explicit sharding cannot infer it
    for a constant table)."""
    return jnp.asarray(table).at[indices].get(out_sharding=jax.typeof(indices).sharding)


def _linspace_float32(start: float, stop: float, num: int) -> np.ndarray:
    """``torch.linspace(start, stop, num, dtype=torch.float32)`` on x86, bit for bit.

    PyTorch computes ``fma(step, i, start)`` for the first half and
    ``fma(-step, num - 1 - i, stop)`` for the second, with ``step`` in float32. Here
    the products and sums are exact in float64 (at most 32 significant bits), so
    one rounding to float32 gives the fused result.
    """
    first, last = np.float32(start), np.float32(stop)
    step = np.float64((last - first) / np.float32(num - 1))
    i = np.arange(num)
    from_start = step * i + np.float64(first)
    from_stop = np.float64(last) - step * (num - 1 - i)
    return np.where(i < num // 2, from_start, from_stop).astype(np.float32)


@functools.cache
def _dynamic_map(signed: bool) -> np.ndarray:
    values = [np.zeros(1, np.float32), np.ones(1, np.float32)]
    for exponent in range(7):  # the decade 10**(exponent - 6)
        bins = 2**exponent if signed else 2 ** (exponent + 1)
        edges = _linspace_float32(0.1, 1.0, bins + 1)
        midpoints = (edges[:-1] + edges[1:]) / np.float32(2)
        magnitudes = midpoints * np.float32(10.0 ** (exponent - 6))
        values += [magnitudes, -magnitudes] if signed else [magnitudes]
    code = np.sort(np.concatenate(values))
    code.flags.writeable = False
    return code


def code_map(signed: bool) -> np.ndarray:
    """The dynamic ("dynamic tree") 8-bit code map: 256 sorted float32 values in [-1, 1].

    The code of Dettmers (2016), as the block-wise 8-bit optimizers use it (Dettmers
    et al., 2022): a value is ``± 10**-e * f``, where the exponent ``e = 0 .. 6`` is
    coded by the number of leading zero bits and the fraction ``f`` is the midpoint of
    one of ``2**(6 - e)`` equal bins of [0.1, 1] (the bits after the indicator bit).
    Signed: a sign bit and ``2**(6 - e)`` bins per decade, 127 values of each sign,
    plus 0 and 1. Unsigned (for second moments): the sign bit becomes one more
    fraction bit, ``2**(7 - e)`` bins per decade, 254 positive values, 0 and 1.
    The smallest nonzero magnitudes are 5.5e-7 (signed) and 3.25e-7 (unsigned).

    The values are bit-identical to ``bitsandbytes.functional.create_dynamic_map``
    (which builds them in float32 with ``torch.linspace``); ``1.0`` is the only value
    of the signed map without its negative.

    Args:
      signed: the signed map (first moments) or the unsigned one (second moments).

    Returns:
      A read-only float32 array of shape ``(256,)``, sorted ascending.

    Examples:
      >>> import adam_jax._quantize as q
      >>> signed = q.code_map(signed=True)
      >>> signed.shape, signed[0].item(), signed[127].item(), signed[255].item()
      ((256,), -0.992968738079071, 0.0, 1.0)

    References:
      Dettmers et al, `8-bit Optimizers via Block-wise Quantization
      <https://arxiv.org/abs/2110.02861>`_, 2022 (ICLR).
      Dettmers, `8-Bit Approximations for Parallelism in Deep Learning
      <https://arxiv.org/abs/1511.04561>`_, 2016 (ICLR).
    """
    _check_signed(signed)
    return _dynamic_map(signed)


@functools.cache
def _prefix_ranges() -> tuple[np.ndarray, np.ndarray]:
    """The smallest and the largest float32 of each 16-bit prefix (sign, exponent, 7 fraction
    bits), in prefix order."""
    prefixes = np.arange(2**16, dtype=np.uint32) << np.uint32(16)
    negative = prefixes >> np.uint32(31) == 1
    smallest = np.where(negative, prefixes | np.uint32(0xFFFF), prefixes).view(np.float32)
    largest = np.where(negative, prefixes, prefixes | np.uint32(0xFFFF)).view(np.float32)
    return smallest, largest


@functools.cache
def _lookup_tables(signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds (with +inf appended) and the first code of each 16-bit float32 prefix.

    For every value of the top 16 bits of a float32 (sign, exponent, 7 fraction
    bits), ``first_code`` holds the code of the smallest float32 with that prefix.
    No prefix spans two thresholds of either map (the closest thresholds are 7%
    apart, a prefix spans 0.8%), so the code of ``y`` is
    ``first_code + (threshold[first_code] < y)``: two table reads instead of a
    search. Prefixes of infinities and NaNs map to code 0.
    """
    code = _dynamic_map(signed).astype(np.float64)
    midpoints = (code[:-1] + code[1:]) / 2  # exact: float32 values, halved in float64
    thresholds = midpoints.astype(np.float32)
    rounded_up = thresholds.astype(np.float64) > midpoints
    thresholds[rounded_up] = np.nextafter(thresholds[rounded_up], np.float32(-np.inf))
    smallest, _ = _prefix_ranges()
    first_code = np.searchsorted(thresholds, smallest, side="left")
    first_code[~np.isfinite(smallest)] = 0
    return np.append(thresholds, np.float32(np.inf)), first_code.astype(np.uint8)


def _lowbias32(x: jax.Array) -> jax.Array:
    """Wellons' ``lowbias32`` integer hash of uint32 ``x``: a bijection whose output bits each
    flip with probability close to 1/2 when any input bit flips."""
    x = x ^ lax.shift_right_logical(x, jnp.uint32(16))
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ lax.shift_right_logical(x, jnp.uint32(15))
    x = x * jnp.uint32(0x846CA68B)
    return x ^ lax.shift_right_logical(x, jnp.uint32(16))


def position_bits(key: jax.Array, positions: jax.Array) -> jax.Array:
    """32 random bits for each element, a function of its position alone under ``key``.

    ``lowbias32(lowbias32(position ^ k0) ^ k1)`` with ``(k0, k1)`` = ``key``, two uint32 words
    (the data of a JAX PRNG key): counter-based, so any slice of an array gets the bits the
    whole array would (chunks, shards), and 7x cheaper per element than Threefry on CPU.

    Args:
      key: a uint32 array of shape ``(2,)``.
      positions: uint32 positions, any shape.

    Returns:
      uint32 bits of ``positions``' shape.
    """
    return _lowbias32(_lowbias32(positions ^ key[0]) ^ key[1])


@functools.cache
def _inverse_gaps(signed: bool) -> np.ndarray:
    """``1 / (c_{j+1} - c_j)`` in float32, the gap rounded to float32 first; 1 for the last."""
    code = _dynamic_map(signed)
    gaps = np.append(code[1:] - code[:-1], np.float32(1))
    return (np.float32(1) / gaps).astype(np.float32)


@functools.cache
def _stochastic_tables(signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each 16-bit float32 prefix, the last code at or below the prefix's smallest value
    (0 below ``c_0`` and for infinities and NaNs); and each code's successor (+inf after the
    last). No prefix spans more than one code (checked), so the code below ``y`` is
    ``first + (successor[first] <= y)``: two table reads instead of a search."""
    code = _dynamic_map(signed)
    smallest, largest = _prefix_ranges()
    finite = np.isfinite(smallest) & np.isfinite(largest)
    first, last = (np.searchsorted(code, x[finite], side="right") - 1 for x in (smallest, largest))
    assert np.all(last - first <= 1), "a 16-bit prefix spans two codes"
    first_lower = np.zeros(smallest.shape, np.uint8)
    first_lower[finite] = np.maximum(first, 0)
    return first_lower, np.append(code[1:], np.float32(np.inf))


def _round_stochastically(normalized: jax.Array, random_bits: jax.Array, signed: bool) -> jax.Array:
    """Rule 4' of the module docstring: the code below or above ``normalized``, at random."""
    first_lower, successor = _stochastic_tables(signed)
    y = _flush_subnormals(normalized)  # on every backend, as in rule 1
    prefix = lax.shift_right_logical(lax.bitcast_convert_type(y, jnp.uint32), jnp.uint32(16))
    first = _look_up(first_lower, prefix.astype(jnp.int32)).astype(jnp.int32)
    lower = first + (_look_up(successor, first) <= y).astype(jnp.int32)
    fraction = (y - _look_up(_dynamic_map(signed), lower)) * _look_up(_inverse_gaps(signed), lower)
    uniform = lax.shift_right_logical(random_bits, jnp.uint32(8)).astype(jnp.float32)
    codes = lower + (uniform * jnp.float32(2.0**-24) < fraction).astype(jnp.int32)
    if not signed:  # a positive second moment stored as 0 would step m / eps
        codes = jnp.where((codes == 0) & (y > 0), 1, codes)
    return codes.astype(jnp.uint8)


def _flush_subnormals(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.abs(x) < _SMALLEST_NORMAL, jnp.copysign(jnp.float32(0), x), x)


@functools.partial(jax.jit, static_argnames=("signed", "block_size"))
def _quantize(
    x: jax.Array, signed: bool, block_size: int, random_bits: jax.Array | None = None
) -> QuantizedArray:
    blocks = _to_blocks(x.astype(jnp.float32).reshape(x.shape or (1,)), block_size)
    blocks = _flush_subnormals(blocks)
    # NaN (and, unsigned, a negative value) enters the max as +inf: XLA's CPU max does not
    # reliably propagate NaN. A block whose max is +inf gets the scale NaN.
    poisoned = jnp.isnan(blocks) if signed else jnp.isnan(blocks) | (blocks < 0)
    magnitudes = jnp.where(poisoned, jnp.float32(jnp.inf), jnp.abs(blocks))
    absmax = jnp.max(magnitudes, axis=-1, keepdims=True)
    scales = jnp.where(absmax <= _FLOAT32_MAX, absmax, jnp.float32(jnp.nan))
    divisors = jnp.where(scales == 0, jnp.float32(1), scales)
    # The divisor depends on x (0 * x is 0, or NaN in blocks already NaN): divided by a
    # broadcast, XLA's CPU backend multiplies by a rounded reciprocal instead, which is
    # not x / N (and is 0 for N > 2**126).
    normalized = blocks / (divisors + 0 * blocks)
    if random_bits is None:
        thresholds, first_code = _lookup_tables(signed)
        prefix = lax.shift_right_logical(
            lax.bitcast_convert_type(normalized, jnp.uint32), jnp.uint32(16)
        )
        first = _look_up(first_code, prefix.astype(jnp.int32))
        above = _look_up(thresholds, first.astype(jnp.int32)) < normalized
        blocked_codes = first + above.astype(jnp.uint8)
    else:
        bits = _to_blocks(random_bits.reshape(x.shape or (1,)), block_size)
        blocked_codes = _round_stochastically(normalized, bits, signed)
    codes = _from_blocks(blocked_codes, x.shape or (1,), block_size)
    return QuantizedArray(codes.reshape(x.shape), scales.reshape(scales_shape(x.shape, block_size)))


@functools.partial(jax.jit, static_argnames=("signed", "block_size"))
def _dequantize(codes: jax.Array, scales: jax.Array, signed: bool, block_size: int) -> jax.Array:
    shape = codes.shape or (1,)
    blocks = _to_blocks(codes.reshape(shape), block_size)
    per_block = scales.reshape(blocks.shape[:-1] + (1,))
    values = _look_up(_dynamic_map(signed), blocks.astype(jnp.int32)) * per_block
    return _from_blocks(_flush_subnormals(values), shape, block_size).reshape(codes.shape)


def _check_signed(signed) -> None:
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be True or False, got {signed!r}.")


def quantize(
    x: jax.typing.ArrayLike,
    *,
    signed: bool,
    block_size: int,
    random_bits: jax.typing.ArrayLike | None = None,
) -> QuantizedArray:
    r"""Block-wise 8-bit quantization of ``x`` with the dynamic code map.

    For each block :math:`b` (``block_size`` consecutive elements of a row, or whole
    rows of a matrix when its rows are shorter: the module docstring's layout) with
    absolute maximum :math:`N_b`, and the code map :math:`c` of ``code_map(signed)``:

    .. math::

      \mathrm{scale}_b = N_b = \max_{i \in b} |x_i|, \qquad
      \mathrm{code}_i = \arg\min_j \left| c_j - x_i / N_b \right|

    with the exact rules of this module's docstring: subnormal inputs count as zero,
    ties take the lower code, and a block holding a NaN or an infinity (or, unsigned,
    a negative value) gets a NaN scale so that it dequantizes to NaN. Pure and
    elementwise apart from one max per block; jittable, vmappable.

    With ``random_bits``, the code is rounded stochastically instead (rule 4' of the
    module docstring): with :math:`c_l \le y < c_{l+1}` the codes around
    :math:`y = x_i / N_b`, the code is :math:`l + 1` with probability
    :math:`(y - c_l) / (c_{l+1} - c_l)`, so that :math:`\mathbb{E}[c_{\mathrm{code}_i}] = y`
    (unsigned: a positive :math:`y` gets code 1 at least).

    Args:
      x: a float32, bfloat16 or float16 array (converted exactly to float32), of any
        shape. float64 is refused: it would be rounded silently.
      signed: the signed map (values in [-1, 1], first moments) or the unsigned one
        ([0, 1], second moments and AMSGrad's maximum). With ``signed=False`` a
        negative value raises ``ValueError`` when ``x`` is concrete; under ``jit`` it
        turns its block's scale into NaN.
      block_size: the most elements per block, a power of two >= 32.
      random_bits: None (nearest rounding), or a uint32 array of ``x.shape``: each
        element's random bits for stochastic rounding (the top 24 are used).

    Returns:
      A :class:`QuantizedArray`: uint8 ``codes`` of ``x.shape`` and float32 ``scales``
      of ``scales_shape(x.shape, block_size)``.

    Raises:
      TypeError: for a dtype other than float32, bfloat16 or float16, or a
        ``block_size`` that is not an int.
      ValueError: for a bad ``block_size``, (unsigned) concrete negative values, or
        ``random_bits`` of another shape or dtype than ``x.shape`` and uint32.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from adam_jax._quantize import quantize, dequantize
      >>> x = jnp.array([[0.5, -1.0, 3e-3, 0.0], [2.0, 0.0, 0.0, 0.0]])
      >>> q = quantize(x, signed=True, block_size=32)  # rows of 4: 8 rows to a block
      >>> q.codes.dtype, q.codes.shape, q.scales.tolist()
      (dtype('uint8'), (2, 4), [[2.0]])
      >>> np.asarray(dequantize(q, signed=True, block_size=32), float).round(5).tolist()
      [[0.49531, -1.00156, 0.00256, 0.0], [2.0, 0.0, 0.0, 0.0]]
      >>> quantize(jnp.ones((3, 100)), signed=True, block_size=32).scales.shape  # long rows
      (3, 4)

    References:
      Dettmers et al, `8-bit Optimizers via Block-wise Quantization
      <https://arxiv.org/abs/2110.02861>`_, 2022 (ICLR), Section 2.1.
    """
    _check_signed(signed)
    check_block_size(block_size)
    dtype = np.dtype(x.dtype) if hasattr(x, "dtype") else jnp.result_type(x)
    if dtype.name not in _ACCEPTED_DTYPES:
        raise TypeError(
            f"quantize takes {list(_ACCEPTED_DTYPES)} arrays, got dtype {dtype.name}"
            + (": float64 would be rounded to float32 silently." if dtype == np.float64 else ".")
        )
    if not signed and not isinstance(x, jax.core.Tracer):
        smallest = float(jnp.min(jnp.asarray(x, jnp.float32), initial=0.0))
        if smallest < 0:
            raise ValueError(
                "quantize(signed=False) holds values in [0, 1] times a scale; x has negative "
                f"values (the smallest is {smallest!r}). Use signed=True."
            )
    if random_bits is not None:
        random_bits = jnp.asarray(random_bits)
        if random_bits.dtype != jnp.uint32 or random_bits.shape != jnp.shape(x):
            raise ValueError(
                f"random_bits must be a uint32 array of x's shape {jnp.shape(x)}, got "
                f"{random_bits.dtype} of shape {random_bits.shape}."
            )
    return _quantize(jnp.asarray(x), signed, int(block_size), random_bits)


def dequantize(q: QuantizedArray, *, signed: bool, block_size: int) -> jax.Array:
    r"""The float32 array a :class:`QuantizedArray` stands for.

    .. math:: y_i = c_{\mathrm{code}_i} \cdot \mathrm{scale}_b

    computed in float32, with results below ``2**-126`` in magnitude flushed to
    zeros of their sign. An all-zero block gives exact zeros; a block with a NaN
    scale gives NaN everywhere.

    Args:
      q: the codes and scales from :func:`quantize`.
      signed: the code map ``q`` was quantized with.
      block_size: the block size ``q`` was quantized with.

    Returns:
      A float32 array of ``q.codes.shape``.

    Raises:
      TypeError: if the codes are not uint8 or the scales not float32.
      ValueError: if the scales' shape does not fit the codes' shape and ``block_size``
        (for instance, state quantized with another block size).

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from adam_jax._quantize import quantize, dequantize
      >>> q = quantize(jnp.array([4.0, 1.0, 0.0]), signed=False, block_size=64)
      >>> np.asarray(dequantize(q, signed=False, block_size=64), float).round(5).tolist()
      [4.0, 1.00469, 0.0]

    References:
      Dettmers et al, `8-bit Optimizers via Block-wise Quantization
      <https://arxiv.org/abs/2110.02861>`_, 2022 (ICLR), Section 2.1.
    """
    _check_signed(signed)
    check_block_size(block_size)
    codes, scales = q
    if codes.dtype != jnp.uint8 or scales.dtype != jnp.float32:
        raise TypeError(
            f"QuantizedArray needs uint8 codes and float32 scales, got {codes.dtype} and "
            f"{scales.dtype}."
        )
    expected = scales_shape(codes.shape, block_size)
    if scales.shape != expected:
        raise ValueError(
            f"scales of shape {scales.shape} do not fit codes of shape {codes.shape} in blocks "
            f"of block_size={block_size}, which need {expected}; was it quantized with another "
            "block_size, or in another layout (one scale per row shorter than a block)?"
        )
    return _dequantize(codes, scales, signed, int(block_size))
