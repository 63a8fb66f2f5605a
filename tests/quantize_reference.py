"""Float64 NumPy model of block-wise 8-bit quantization (Dettmers et al., 2022), from the paper.

Independent of adam_jax (it must not import it). The paper's quantizer: per block,
N = max |x|; each element becomes the index of the code-map value nearest to x / N;
dequantization is c[index] * N. The model adds the rules adam_jax states for the
cases the paper leaves open (documented in adam_jax/_quantize.py): subnormal float32
inputs and outputs count as zeros of their sign, a block with a NaN, an infinity or
(unsigned) a negative value has scale NaN, ties go to the lower code, and a NaN
normalized value has code 0. Arithmetic is float64, rounded to float32 where the
definition rounds (x / N and c * N are each one correctly rounded float32 operation,
which a float64 operation on float32 operands followed by one rounding reproduces).
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


def _blocks(length, block_size):
    return [slice(start, min(start + block_size, length)) for start in range(0, length, block_size)]


def quantize(x, code, *, signed, block_size):
    """Returns (codes uint8 of x's shape, scales float32 of (*shape[:-1], blocks))."""
    x = np.asarray(x, np.float32)
    rows = _flush(x.reshape(x.shape or (1,)).astype(np.float64))
    code = np.asarray(code, np.float64)
    codes = np.zeros(rows.shape, np.uint8)
    blocks = _blocks(rows.shape[-1], block_size)
    scales = np.zeros((*rows.shape[:-1], len(blocks)), np.float32)
    for index in np.ndindex(rows.shape[:-1]):
        for b, block in enumerate(blocks):
            values = rows[index][block]
            poisoned = ~np.all(np.isfinite(values)) or (not signed and np.any(values < 0))
            scale = np.nan if poisoned else np.max(np.abs(values))
            scales[index][b] = scale
            normalized = np.float32(values / (scale if scale != 0 else 1.0)).astype(np.float64)
            # argmin takes the first of equal distances (the lower code), and 0 for NaN;
            # the distances are exact wherever two of them are close to equal.
            codes[index][block] = np.argmin(np.abs(normalized[:, None] - code), axis=1)
    return codes.reshape(x.shape), scales.reshape(scales.shape if x.shape else ())


def dequantize(codes, scales, code, *, block_size):
    """Returns float32 values c[code] * scale of the element's block."""
    codes = np.asarray(codes)
    rows = codes.reshape(codes.shape or (1,))
    per_block = np.asarray(scales, np.float64).reshape(*rows.shape[:-1], -1)
    per_element = np.repeat(per_block, block_size, axis=-1)[..., : rows.shape[-1]]
    values = np.float32(np.asarray(code, np.float64)[rows] * per_element)
    return _flush(values).astype(np.float32).reshape(codes.shape)
