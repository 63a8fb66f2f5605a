"""Float64 NumPy model of block-wise 8-bit quantization (Dettmers et al., 2022), from the paper.

Independent of adam_jax (it must not import it). The paper's quantizer: per block,
N = max |x|; each element becomes the index of the code-map value nearest to x / N;
dequantization is c[index] * N. The model adds the rules adam_jax states for the
cases the paper leaves open (documented in adam_jax/_quantize.py): subnormal float32
inputs and outputs count as zeros of their sign, a block with a NaN, an infinity or
(unsigned) a negative value has scale NaN, ties go to the lower code, and a NaN
normalized value has code 0; and which elements share a block: ``block_size``
consecutive elements of a row when rows have at least ``block_size`` elements, else
the largest power-of-two number of whole rows of one matrix that fits in
``block_size`` elements. Arithmetic is float64, rounded to float32 where the
definition rounds (x / N and c * N are each one correctly rounded float32 operation,
which a float64 operation on float32 operands followed by one rounding reproduces).

Stochastic rounding (``random_bits`` given; Gupta et al., 2015), as adam_jax states it: of the
two codes ``c_l <= y < c_{l+1}`` around ``y = x / N`` (``l = 0`` below ``c_0``), take ``l + 1``
when ``(r >> 8) * 2**-24 < (y - c_l) * w_l`` (each operation one float32 rounding; ``w_l`` is
``1 / (c_{l+1} - c_l)`` with the gap and the quotient rounded to float32, ``w_255 = 1``), else
``l``; a subnormal ``y`` counts as 0, a NaN ``y`` takes code 0, and for the unsigned map a
positive ``y`` takes code 1 at least.
"""

import numpy as np

SMALLEST_NORMAL = np.finfo(np.float32).smallest_normal


def dynamic_map(signed):
    """The dynamic tree code values, in exact float64 arithmetic (no float32 rounding).

    Decade ``10**-e`` (e = 0..6) holds the midpoints of ``2**(6 - e)`` (signed, with
    both signs) or ``2**(7 - e)`` (unsigned) equal bins of [0.1, 1]; plus 0 and 1.
    """
    values = [0.0, 1.0]
    for e in range(7):
        bins = 2 ** (6 - e) if signed else 2 ** (7 - e)
        midpoints = 0.1 + 0.9 * (np.arange(bins) + 0.5) / bins
        values += list(10.0**-e * midpoints)
        if signed:
            values += list(-(10.0**-e) * midpoints)
    return np.sort(np.array(values))


def _flush(x):
    return np.where(np.abs(x) < SMALLEST_NORMAL, np.copysign(0.0, x), x)


def rows_per_block(shape, block_size):
    """Rows shorter than a block (in 2-D or more) go k at a time: k the largest power of two
    with k * row length <= block_size. 1 otherwise."""
    if len(shape) < 2 or not 0 < shape[-1] < block_size:
        return 1
    k = 1
    while 2 * k * shape[-1] <= block_size:
        k *= 2
    return k


def block_layout(shape, block_size):
    """(scales' shape, [(index of the block's scale, index of its elements), ...]) for an
    array of ``shape`` (1-D or more); each block's elements are a slice of the array."""
    k = rows_per_block(shape, block_size)
    if k > 1:
        rows = shape[-2]
        groups = range(0, rows, k)
        blocks = [
            ((*lead, g, 0), (*lead, slice(start, start + k), slice(None)))
            for lead in np.ndindex(shape[:-2])
            for g, start in enumerate(groups)
        ]
        return (*shape[:-2], len(groups), 1), blocks
    starts = range(0, shape[-1], block_size)
    blocks = [
        ((*lead, b), (*lead, slice(start, start + block_size)))
        for lead in np.ndindex(shape[:-1])
        for b, start in enumerate(starts)
    ]
    return (*shape[:-1], len(starts)), blocks


def _round_stochastically(normalized, code32, bits, signed):
    """The code below or above each float32 ``normalized`` value, from its random ``bits``."""
    y = np.float32(_flush(np.asarray(normalized, np.float32)))
    lower = np.searchsorted(code32, y, side="right") - 1  # the last code <= y
    lower = np.where(np.isnan(y), 0, np.maximum(lower, 0))
    gaps = np.append(np.float32(code32[1:] - code32[:-1]), np.float32(1))
    inverse = np.float32(np.float32(1) / gaps)
    with np.errstate(invalid="ignore"):
        fraction = np.float32(np.float32(y - code32[lower]) * inverse[lower])
        uniform = np.float32(np.asarray(bits, np.uint32) >> np.uint32(8)) * np.float32(2.0**-24)
        codes = lower + (uniform < fraction)
        if not signed:
            codes = np.where((codes == 0) & (y > 0), 1, codes)
    return codes


def quantize(x, code, *, signed, block_size, random_bits=None):
    """Returns (codes uint8 of x's shape, scales float32 of one value per block); with
    ``random_bits`` (uint32, x's shape), stochastically rounded codes."""
    x = np.asarray(x, np.float32)
    array = _flush(x.reshape(x.shape or (1,)).astype(np.float64))
    code32 = np.asarray(code, np.float32)
    code = np.asarray(code, np.float64)
    if random_bits is not None:
        random_bits = np.asarray(random_bits, np.uint32).reshape(array.shape)
    codes = np.zeros(array.shape, np.uint8)
    scales_shape, blocks = block_layout(array.shape, block_size)
    scales = np.zeros(scales_shape, np.float32)
    for scale_index, elements in blocks:
        values = array[elements]
        poisoned = ~np.all(np.isfinite(values)) or (not signed and np.any(values < 0))
        scale = np.nan if poisoned else np.max(np.abs(values))
        scales[scale_index] = scale
        normalized = np.float32(values / (scale if scale != 0 else 1.0)).astype(np.float64)
        # argmin takes the first of equal distances (the lower code), and 0 for NaN;
        # the distances are exact wherever two of them are close to equal.
        if random_bits is None:
            codes[elements] = np.argmin(np.abs(normalized[..., None] - code), axis=-1)
        else:
            codes[elements] = _round_stochastically(
                normalized, code32, random_bits[elements], signed
            )
    return codes.reshape(x.shape), scales.reshape(scales.shape if x.shape else ())


def dequantize(codes, scales, code, *, block_size):
    """Returns float32 values c[code] * scale of the element's block."""
    codes = np.asarray(codes)
    array = codes.reshape(codes.shape or (1,))
    scales_shape, blocks = block_layout(array.shape, block_size)
    scales = np.asarray(scales, np.float64).reshape(scales_shape)
    values = np.zeros(array.shape, np.float64)
    for scale_index, elements in blocks:
        values[elements] = np.asarray(code, np.float64)[array[elements]] * scales[scale_index]
    return _flush(np.float32(values)).astype(np.float32).reshape(codes.shape)
