"""Block-wise 8-bit quantization against the float64 model of the paper and bitsandbytes."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from adam_jax import _quantize
from adam_jax._quantize import QuantizedArray, code_map, dequantize, quantize, scales_shape
from tests import quantize_reference as reference

SIGNS = [True, False]


def _canonical_bits(x) -> np.ndarray:
    """float32 bits, with every NaN as one pattern (IEEE leaves a NaN's sign and payload open)."""
    x = np.asarray(x, np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), x).view(np.uint32)


def _assert_matches_reference(x, *, signed, block_size, random_bits=None):
    """quantize and dequantize equal the float64 model bit for bit; returns the result."""
    q = quantize(x, signed=signed, block_size=block_size, random_bits=random_bits)
    code = code_map(signed)
    codes, scales = reference.quantize(
        np.asarray(x, np.float32),
        code,
        signed=signed,
        block_size=block_size,
        random_bits=random_bits,
    )
    assert q.codes.dtype == np.uint8 and q.codes.shape == np.shape(x)
    assert q.scales.dtype == np.float32 and q.scales.shape == scales.shape
    np.testing.assert_array_equal(np.asarray(q.codes), codes)
    np.testing.assert_array_equal(_canonical_bits(q.scales), _canonical_bits(scales))
    values = dequantize(q, signed=signed, block_size=block_size)
    expected = reference.dequantize(codes, scales, code, block_size=block_size)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(_canonical_bits(values), _canonical_bits(expected))
    return q, np.asarray(values)


# -- the code maps -------------------------------------------------------------------------------


def _torch_dynamic_map(signed):
    """bitsandbytes.functional.create_dynamic_map (max_exponent_bits=7, total_bits=8), in torch."""
    data = [0.0, 1.0]
    for i in range(7):
        items = 2**i + 1 if signed else 2 ** (i + 1) + 1
        boundaries = torch.linspace(0.1, 1, items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-6 + i)) * means).tolist()
    return np.array(sorted(data), np.float32)


@pytest.mark.parametrize("signed", SIGNS)
def test_code_map_has_the_papers_structure(signed):
    code = code_map(signed)
    assert code.shape == (256,) and code.dtype == np.float32
    assert np.all(np.diff(code) > 0)  # sorted, 256 distinct values
    assert code[-1] == 1.0 and 0.0 in code
    assert code[0] == (-code[-2] if signed else 0.0)
    if signed:  # symmetric: every value but 1.0 has its negative
        assert code[127] == 0.0
        np.testing.assert_array_equal(code[:127], -code[128:255][::-1])
    else:
        assert np.all(code >= 0)
    # Decade 10**-e holds 2**(6-e) (signed) or 2**(7-e) values per sign, the midpoints of
    # equal bins of [0.1, 1]; float32 arithmetic puts each within 2 ulp of the exact value.
    positive = code[code > 0][:-1]
    for e in range(7):
        in_decade = positive[(positive >= 0.1 * 10.0**-e) & (positive < 10.0**-e)]
        assert len(in_decade) == (2 ** (6 - e) if signed else 2 ** (7 - e))
    exact = reference.dynamic_map(signed)
    assert np.max(np.abs(code - exact) / np.spacing(code)) <= 2


@pytest.mark.parametrize("signed", SIGNS)
def test_code_map_is_bitsandbytes_map_bit_for_bit(signed):
    np.testing.assert_array_equal(
        code_map(signed).view(np.uint32), _torch_dynamic_map(signed).view(np.uint32)
    )
    if importlib.util.find_spec("bitsandbytes"):
        import bitsandbytes.functional as bnb_functional

        bnb_map = bnb_functional.create_dynamic_map(signed=signed).numpy()
        np.testing.assert_array_equal(code_map(signed).view(np.uint32), bnb_map.view(np.uint32))


def test_code_map_is_read_only():
    with pytest.raises(ValueError):
        code_map(True)[0] = 0.0


# -- the nearest code, exhaustively at every boundary ---------------------------------------------


def _boundary_values(signed) -> np.ndarray:
    """Every float32 where the lookup could go wrong: both ends of each 16-bit prefix, and
    each midpoint between codes with its float32 neighbours."""
    prefixes = np.arange(2**16, dtype=np.uint32) << np.uint32(16)
    ends = np.concatenate([prefixes, prefixes | np.uint32(0xFFFF)]).view(np.float32)
    code = code_map(signed).astype(np.float64)
    midpoints = ((code[:-1] + code[1:]) / 2).astype(np.float32)
    near_midpoints = np.concatenate(
        [
            midpoints,
            np.nextafter(midpoints, np.float32(np.inf)),
            np.nextafter(midpoints, np.float32(-np.inf)),
            code.astype(np.float32),
        ]
    )
    values = np.concatenate([ends, near_midpoints])
    low = -1.0 if signed else 0.0
    return values[np.isfinite(values) & (values >= low) & (values <= 1.0)]


def _boundary_blocks(signed, block=32) -> np.ndarray:
    """``_boundary_values`` in rows of one block, each led by 1.0: every block's absmax is 1,
    so x / N = x exactly."""
    values = _boundary_values(signed)
    body = np.zeros((-(-len(values) // (block - 1)), block - 1), np.float32)
    body.reshape(-1)[: len(values)] = values
    return np.concatenate([np.ones((len(body), 1), np.float32), body], axis=1)


def test_boundary_blocks_hold_every_boundary_value():
    for signed in SIGNS:
        values = _boundary_values(signed)
        x = _boundary_blocks(signed)
        assert np.all(x[:, 0] == 1)
        np.testing.assert_array_equal(x[:, 1:].ravel()[: len(values)], values)


@pytest.mark.parametrize("signed", SIGNS)
def test_every_boundary_value_gets_the_nearest_code(signed):
    _assert_matches_reference(_boundary_blocks(signed), signed=signed, block_size=32)


# -- random blocks, bit for bit -------------------------------------------------------------------


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize(
    ("shape", "block_size"),
    [
        ((4096,), 256),
        ((7, 300), 64),
        ((3, 5, 33), 32),
        ((2, 2048), 2048),
        ((5, 100), 128),
        ((1000,), 32),
        ((3, 0), 32),
        ((0,), 64),
    ],
)
def test_random_arrays_match_the_reference(signed, shape, block_size):
    rng = np.random.default_rng(sum(shape) + block_size)
    x = rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape[:-1] + (1,))
    x *= rng.random(shape) < 0.9  # some exact zeros
    x = np.float32(x if signed else np.abs(x))
    _assert_matches_reference(x, signed=signed, block_size=block_size)


def _rows_per_block(n, block_size):
    """The largest power of two k with k * n <= block_size; 1 for rows of a block or more."""
    return 2 ** int(np.log2(block_size // n)) if n < block_size else 1


def _short_rows_cases():
    """Rows of n < block_size elements, grouped k at a time; the matrices' row counts are not
    multiples of k (the last block holds fewer rows), in 2-D and 3-D."""
    for n in (1, 3, 100, 128, 255):
        for block_size in (32, 256, 2048):
            k = _rows_per_block(n, block_size)
            yield (2 * k + 3, n), block_size
            yield (3, k + 1, n), block_size


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize(("shape", "block_size"), list(_short_rows_cases()))
def test_short_rows_match_the_reference(signed, shape, block_size):
    rng = np.random.default_rng(shape[-1] + block_size)
    x = rng.standard_normal(shape) * 10.0 ** rng.integers(-20, 20, shape[:-1] + (1,))
    x *= rng.random(shape) < 0.9
    x = np.float32(x if signed else np.abs(x))
    q, _ = _assert_matches_reference(x, signed=signed, block_size=block_size)
    n, k = shape[-1], _rows_per_block(shape[-1], block_size)
    expected = (-(-shape[-2] // k), 1) if k > 1 else (shape[-2], -(-n // block_size))
    assert q.scales.shape == (*shape[:-2], *expected)


_FLOATS = st.one_of(
    st.floats(-1e4, 1e4, width=32),
    st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([0.0, -0.0, 1e-45, -1e-40, 1.2e-38, 3.4e38]),
)


@settings(max_examples=40, deadline=None, database=None, derandomize=True)
@given(
    x=hnp.arrays(
        np.float32, hnp.array_shapes(min_dims=0, max_dims=3, max_side=70), elements=_FLOATS
    ),
    block_size=st.sampled_from([32, 64]),
    signed=st.booleans(),
)
def test_any_array_matches_the_reference(x, block_size, signed):
    if not signed:
        x = np.abs(x)
    _assert_matches_reference(x, signed=signed, block_size=block_size)


# -- stochastic rounding ------------------------------------------------------------------------


def _random_bits(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**32, shape, dtype=np.uint32)


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("bits", ["random", "all zeros", "all ones"])
def test_stochastic_rounding_at_every_boundary_matches_the_reference(signed, bits):
    """Bits of all zeros draw 0, below every fraction: each value not on a code takes the code
    above it. All ones draw 1 - 2**-24: each value takes the code below it (the code 1 for a
    positive value under the unsigned map's first nonzero code), and the code above only where
    the value is within 2**-23 of a gap below it."""
    block = 32
    x = _boundary_blocks(signed, block)
    random_bits = {
        "random": _random_bits(x.shape),
        "all zeros": np.zeros(x.shape, np.uint32),
        "all ones": np.full(x.shape, 2**32 - 1, np.uint32),
    }[bits]
    _, got = _assert_matches_reference(x, signed=signed, block_size=block, random_bits=random_bits)
    code = code_map(signed).astype(np.float64)
    y = np.where(np.abs(x) < np.finfo(np.float32).smallest_normal, 0.0, x).astype(np.float64)
    lower = np.clip(np.searchsorted(code, y, side="right") - 1, 0, 255)
    gap = np.append(np.diff(code), 1.0)[lower]
    fraction = (y - code[lower]) / gap
    if bits == "all zeros":
        up = (fraction > 0) & (y >= code[0])
        expected = code[np.where(up, lower + 1, lower)]
        np.testing.assert_array_equal(got, np.float32(expected))
    elif bits == "all ones":
        down = code[np.where((lower == 0) & (y > 0) & (not signed), 1, lower)]
        up = fraction >= 1  # within float64 rounding of the next code (tiny negative values)
        expected = np.where(up, code[np.minimum(lower + 1, 255)], down)
        # Between, float32 rounding of the fraction decides (the reference check above).
        decided = up | (fraction < 1 - 2.0**-23)
        np.testing.assert_array_equal(got[decided], np.float32(expected[decided]))


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize(
    ("shape", "block_size"), [((4096,), 256), ((3, 5, 33), 32), ((7, 300), 64)]
)
def test_stochastic_random_arrays_match_the_reference(signed, shape, block_size):
    rng = np.random.default_rng(sum(shape) + block_size)
    x = rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape[:-1] + (1,))
    x *= rng.random(shape) < 0.9
    x = np.float32(x if signed else np.abs(x))
    _assert_matches_reference(
        x, signed=signed, block_size=block_size, random_bits=_random_bits(shape, 1)
    )


@settings(max_examples=30, deadline=None, database=None, derandomize=True)
@given(
    x=hnp.arrays(
        np.float32, hnp.array_shapes(min_dims=0, max_dims=3, max_side=70), elements=_FLOATS
    ),
    signed=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_stochastic_any_array_matches_the_reference(x, signed, seed):
    if not signed:
        x = np.abs(x)
    _assert_matches_reference(
        x, signed=signed, block_size=32, random_bits=_random_bits(x.shape, seed)
    )


@pytest.mark.parametrize("signed", SIGNS)
def test_stochastic_rounding_is_exact_on_average(signed):
    """Each value lies between two codes; over 2**14 draws the mean of its dequantized values
    is the value, within 5 standard errors (one draw's deviation is at most half the gap)."""
    code = code_map(signed).astype(np.float64)
    rng = np.random.default_rng(5)
    values = rng.uniform(-1 if signed else 0, 1, 31) * 10.0 ** -rng.integers(0, 6, 31)
    draws = 2**14
    x = np.zeros((draws, 32), np.float32)
    x[:, 0] = 1.0  # absmax 1: x / N = x
    x[:, 1:] = np.float32(values)
    q = quantize(x, signed=signed, block_size=32, random_bits=_random_bits(x.shape, 2))
    got = np.asarray(dequantize(q, signed=signed, block_size=32), np.float64)[:, 1:]
    lower = np.searchsorted(code, np.float32(values), side="right") - 1
    gap = code[np.minimum(lower + 1, 255)] - code[lower]
    error = np.abs(got.mean(axis=0) - np.float32(values))
    assert np.all(error <= 5 * gap / 2 / np.sqrt(draws) + 1e-12)
    nearest = np.asarray(
        dequantize(quantize(x[:1], signed=signed, block_size=32), signed=signed, block_size=32)
    )[0, 1:]
    assert np.mean(np.abs(nearest - np.float32(values)) > 10 * error) > 0.5  # a real gain


def test_stochastic_rounding_never_stores_a_positive_second_moment_as_zero():
    x = np.float32([1.0, 1e-7, 3e-8, 1e-30, 0.0, -0.0] + [0.0] * 26)  # 1e-7: below code 1
    for seed in range(8):
        q = quantize(x, signed=False, block_size=32, random_bits=_random_bits(x.shape, seed))
        codes = np.asarray(q.codes)
        assert codes[1:4].tolist() == [1, 1, 1] and codes[4:].max() == 0


def test_random_bits_must_be_uint32_of_x_shape():
    with pytest.raises(ValueError, match=r"random_bits must be a uint32 array of x's shape \(4,\)"):
        quantize(jnp.ones(4), signed=True, block_size=32, random_bits=jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match=r"got uint32 of shape \(5,\)"):
        quantize(jnp.ones(4), signed=True, block_size=32, random_bits=jnp.zeros(5, jnp.uint32))


# -- the cases the paper leaves open --------------------------------------------------------------


@pytest.mark.parametrize("signed", SIGNS)
def test_an_all_zero_block_dequantizes_to_exact_zeros(signed):
    x = np.zeros((2, 64), np.float32)
    x[1, :32] = -0.0
    x[1, 40] = 3.0
    q, values = _assert_matches_reference(x, signed=signed, block_size=32)
    assert np.asarray(q.scales).tolist() == [[0.0, 0.0], [0.0, 3.0]]
    assert np.all(values[0].view(np.uint32) == 0) and np.all(values[1, :32].view(np.uint32) == 0)
    assert values[1, 40] == 3.0


def test_negative_zero_comes_back_as_positive_zero():
    _, values = _assert_matches_reference(np.float32([-0.0, 1.0, -0.0]), signed=True, block_size=32)
    assert values.view(np.uint32)[[0, 2]].tolist() == [0, 0]


@pytest.mark.parametrize("signed", SIGNS)
def test_one_huge_value_keeps_the_others_within_the_papers_bound(signed):
    x = np.full(256, 1e-3, np.float32)
    x[17] = 3e38
    q, values = _assert_matches_reference(x, signed=signed, block_size=256)
    assert float(q.scales[0]) == np.float32(3e38) and values[17] == np.float32(3e38)
    assert np.all(values[x < 1] == 0)  # 1e-3 / 3e38 is below the smallest code


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nonfinite_value_makes_its_whole_block_nan(signed, bad):
    x = np.linspace(0.0, 2.0, 96, dtype=np.float32).reshape(1, 96)
    x[0, 40] = bad
    if not signed and bad < 0:
        pytest.skip("a negative value in an unsigned block: see the test below")
    q, values = _assert_matches_reference(x, signed=signed, block_size=32)
    assert np.isnan(np.asarray(q.scales)).tolist() == [[False, True, False]]
    assert np.all(np.isnan(values[0, 32:64]))
    assert np.all(np.isfinite(values[0, :32])) and np.all(np.isfinite(values[0, 64:]))


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_short_rows_blocks_keep_the_rules_of_the_paper_left_open(signed, bad):
    """Rows of 24, blocks of 64: rows 0-1, 2-3, 4-5 and 6 are the blocks."""
    x = np.float32(np.random.default_rng(4).random((7, 24)) + 0.5)
    x[0, 3], x[1, 20] = 1e-40, -0.0 if signed else 0.0  # a subnormal, a negative zero
    x[3, 5] = bad  # poisons rows 2 and 3
    x[4:6] = 0.0  # an all-zero block
    x[6, :] = -0.0 if signed else 0.0
    x[6, 7] = 2.0  # the last block: one row
    q, values = _assert_matches_reference(x, signed=signed, block_size=64)
    scales = np.asarray(q.scales)
    assert scales.shape == (4, 1) and np.isnan(scales[:, 0]).tolist() == [0, 1, 0, 0]
    assert np.all(np.isnan(values[2:4])) and np.all(np.isfinite(values[[0, 1, 4, 5, 6]]))
    assert values[0, 3] == 0 and values[1, 20].view(np.uint32) == 0  # flushed; +0
    assert np.all(values[4:6].view(np.uint32) == 0) and scales[2, 0] == 0.0
    assert scales[3, 0] == 2.0 and values[6, 7] == 2.0 and np.sum(values[6] != 0) == 1


def test_unsigned_negative_raises_when_concrete_and_poisons_its_block_under_jit():
    x = jnp.tile(jnp.asarray([[0.5, 0.25, -0.0]]), (16, 1)).at[2, 1].set(-0.25)
    with pytest.raises(ValueError, match=r"signed=False.*-0\.25"):
        quantize(x, signed=False, block_size=32)
    q = jax.jit(lambda x: quantize(x, signed=False, block_size=32))(x)
    values = dequantize(q, signed=False, block_size=32)
    # Rows of 3 go 8 to a block of 32: rows 0-7 are one block, rows 8-15 the next.
    assert np.all(np.isnan(values[:8])) and np.all(np.isfinite(values[8:]))


def test_subnormals_are_zeros_on_the_way_in_and_out():
    """Explicit, so every backend agrees with XLA's CPU, which flushes them anyway."""
    tiny = np.finfo(np.float32).smallest_normal
    x = np.zeros((3, 32), np.float32)  # rows of a whole block: one block each
    x[:, :2] = [[1e-40, -1e-45], [tiny, tiny / 2], [6.7e-33, 1.2e-38]]
    q, values = _assert_matches_reference(x, signed=True, block_size=32)
    assert np.asarray(q.scales).ravel().tolist() == [0.0, tiny, np.float32(6.7e-33)]
    assert values[0, :4].view(np.uint32).tolist() == [0, 0, 0, 0]  # -1e-45 flushed to +0
    assert values[1, 0] == tiny and values[1, 1] == 0
    # 1.2e-38 / 6.7e-33 = 1.8e-6 takes the code 5.5e-7, whose product with 6.7e-33 is
    # subnormal: flushed.
    assert values[2, 1] == 0.0 and int(q.codes[2, 1]) != int(q.codes[2, 2])


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((), ()),
        ((5,), (1,)),
        ((2, 3, 40), (2, 3, 2)),
        ((4, 5), (1, 1)),  # 4 rows of 5 in a block of 32 (8 rows would be 40)
        ((3, 7, 5), (3, 2, 1)),  # per matrix: rows 0-3, then 4-6
        ((9, 17), (9, 1)),  # 2 rows of 17 would be 34: one row per block
        ((6, 10), (3, 1)),  # 2 rows to a block (32 // 10 = 3 is not a power of two)
        ((3, 0), (3, 0)),
        ((0, 5), (0, 1)),
    ],
)
def test_layout_0d_1d_and_short_rows(signed, shape, expected):
    x = np.float32(np.abs(np.random.default_rng(0).standard_normal(shape)))
    q, _ = _assert_matches_reference(x, signed=signed, block_size=32)
    assert q.scales.shape == expected == scales_shape(shape, 32)
    if shape == ():
        assert float(q.scales) == np.float32(x) and int(q.codes) == 255  # x / x = 1


def test_blocks_stay_in_their_row():
    x = np.zeros((2, 48), np.float32)
    x[0, 47], x[1, 0] = 100.0, 1.0  # a flat layout would put both in one block
    q = quantize(x, signed=True, block_size=32)
    assert np.asarray(q.scales).tolist() == [[0.0, 100.0], [1.0, 0.0]]


def test_short_rows_share_blocks_within_their_matrix():
    x = np.zeros((2, 5, 8), np.float32)  # rows of 8, block 32: 4 rows to a block
    x[0, 3, 7], x[0, 4, 0], x[1, 0, 0], x[1, 4, 2] = 4.0, 2.0, 3.0, 5.0
    q = quantize(x, signed=True, block_size=32)
    assert np.asarray(q.scales).tolist() == [[[4.0], [2.0]], [[3.0], [5.0]]]


# -- the paper's error bound ----------------------------------------------------------------------


@pytest.mark.parametrize("signed", SIGNS)
def test_round_trip_error_is_half_a_code_gap_of_the_absmax(signed):
    """|dequantize(quantize(x)) - x| <= N * (gap between the two codes around x/N) / 2."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 512)) * np.exp(rng.normal(0, 3, (64, 1)))
    x = np.float32(x if signed else x**2)
    values = np.asarray(
        dequantize(quantize(x, signed=signed, block_size=256), signed=signed, block_size=256),
        np.float64,
    )
    code = code_map(signed).astype(np.float64)
    absmax = np.repeat(np.max(np.abs(x).reshape(64, 2, 256), axis=-1), 256, axis=-1)
    normalized = x / absmax
    above = np.clip(np.searchsorted(code, normalized), 1, 255)
    half_gap = (code[above] - code[above - 1]) / 2
    error = np.abs(values - x)
    assert np.all(error <= absmax * half_gap * (1 + 2**-20) + np.spacing(np.float32(absmax)))
    # Above 0.1 the map has 64 (signed) or 128 (unsigned) equal bins over [0.1, 1]: half a
    # bin is at most 7.1% (3.6%) of the value.
    large = np.abs(normalized) > 0.1
    assert np.max(error[large] / np.abs(x[large])) < (0.071 if signed else 0.036)


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [16, 100, 0, -64, 1])
def test_block_size_must_be_a_power_of_two_of_at_least_32(block_size):
    with pytest.raises(ValueError, match=rf"block_size must be a power of two >= 32.*{block_size}"):
        quantize(jnp.ones(4), signed=True, block_size=block_size)


@pytest.mark.parametrize("block_size", [True, 64.0, "64", None])
def test_block_size_must_be_an_int(block_size):
    with pytest.raises(TypeError, match="block_size must be an int"):
        quantize(jnp.ones(4), signed=True, block_size=block_size)


@pytest.mark.parametrize("x", [np.ones(3, np.float64), np.ones(3, np.int32), np.ones(3, bool)])
def test_only_float32_and_16_bit_floats_are_quantized(x):
    with pytest.raises(TypeError, match=f"got dtype {x.dtype}"):
        quantize(x, signed=True, block_size=32)


def test_16_bit_inputs_quantize_as_their_exact_float32_values():
    x = jnp.asarray([0.3, -1.5, 2e-3], jnp.bfloat16)
    a, b = (
        quantize(x, signed=True, block_size=32),
        quantize(x.astype(jnp.float32), signed=True, block_size=32),
    )
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.scales, b.scales)


def test_signed_must_be_a_bool():
    with pytest.raises(TypeError, match="signed must be True or False"):
        quantize(jnp.ones(4), signed=1, block_size=32)


def test_dequantize_refuses_scales_of_another_block_size_or_layout():
    q = quantize(jnp.ones((4, 1000)), signed=True, block_size=256)
    with pytest.raises(ValueError, match=r"\(4, 4\).*block_size=128.*\(4, 8\)"):
        dequantize(q, signed=True, block_size=128)
    # One scale per row of 128 (a state made before short rows were grouped).
    codes = quantize(jnp.ones((256, 128)), signed=True, block_size=256).codes
    per_row = QuantizedArray(codes, jnp.ones((256, 1), jnp.float32))
    with pytest.raises(ValueError, match=r"\(256, 1\).*\(256, 128\).*\(128, 1\).*layout"):
        dequantize(per_row, signed=True, block_size=256)
    with pytest.raises(TypeError, match="uint8 codes and float32 scales"):
        dequantize(QuantizedArray(q.codes.astype(jnp.int32), q.scales), signed=True, block_size=256)


def test_quantize_is_jittable_and_vmappable():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 4, 70)), jnp.float32)
    eager = quantize(x, signed=True, block_size=32)
    jitted = jax.jit(lambda x: quantize(x, signed=True, block_size=32))(x)
    mapped = jax.vmap(lambda x: quantize(x, signed=True, block_size=32))(x)
    for q in (jitted, mapped):
        assert np.array_equal(q.codes, eager.codes) and np.array_equal(q.scales, eager.scales)


def test_lookup_needs_no_search():
    """The jitted quantizer holds no sort, no while loop and no per-block Python loop."""
    for shape in ((8, 4096), (4096, 128), (1000, 100)):
        hlo = jax.jit(lambda x: _quantize._quantize(x, True, 256)).lower(jnp.ones(shape)).as_text()
        assert "stablehlo.sort" not in hlo and "stablehlo.while" not in hlo


# -- bitsandbytes, where it is installed ----------------------------------------------------------


@pytest.mark.skipif(not importlib.util.find_spec("bitsandbytes"), reason="bitsandbytes absent")
@pytest.mark.parametrize("signed", SIGNS)
def test_bitsandbytes_blockwise_agrees_where_its_cpu_lookup_is_exact(signed):
    """Same layout (rows a multiple of the block). bitsandbytes' CPU quantizer looks x/N up in
    a table of 65536 equal bins of [-1, 1] (width 3e-5), coarser than the codes below ~1e-4:
    there it may pick a farther code, and near a midpoint a neighbour. Ours is always at least
    as near; above 1e-3 at most a neighbour apart, in under 1% of the elements."""
    import bitsandbytes.functional as bnb_functional

    rng = np.random.default_rng(3)
    x = np.float32(rng.standard_normal((16, 1024)) * np.exp(rng.normal(0, 2, (16, 1))))
    x = x if signed else x**2
    code = torch.from_numpy(code_map(signed).copy())
    bnb_codes, bnb_state = bnb_functional.quantize_blockwise(
        torch.from_numpy(x), code=code, blocksize=256
    )
    q = quantize(x, signed=signed, block_size=256)
    np.testing.assert_array_equal(np.asarray(q.scales).ravel(), bnb_state.absmax.numpy())
    ours, theirs = np.asarray(q.codes, np.int64), bnb_codes.numpy().astype(np.int64)
    normalized = x.astype(np.float64) / np.repeat(np.asarray(q.scales), 256, axis=-1)
    c = code_map(signed).astype(np.float64)
    assert np.all(np.abs(c[ours] - normalized) <= np.abs(c[theirs] - normalized))
    large = np.abs(normalized) > 1e-3
    assert (
        np.all(np.abs(ours - theirs)[large] <= 1) and np.mean(ours[large] != theirs[large]) < 0.01
    )
    # Dequantization is the same float32 product.
    bnb_state.absmax = torch.from_numpy(np.asarray(q.scales).ravel().copy())
    theirs_values = bnb_functional.dequantize_blockwise(
        torch.from_numpy(ours.astype(np.uint8)), bnb_state
    ).numpy()
    np.testing.assert_array_equal(
        np.asarray(dequantize(q, signed=signed, block_size=256)), theirs_values
    )
