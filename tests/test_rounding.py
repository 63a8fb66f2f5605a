"""Stochastic rounding and compensated addition against NumPy (ml_dtypes) and float64 models."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from adam_jax._rounding import compensated_add, stochastic_round

DTYPES = {"bfloat16": (jnp.bfloat16, ml_dtypes.bfloat16), "float16": (jnp.float16, np.float16)}


def _neighbours(x: np.ndarray, np_dtype) -> tuple[np.ndarray, np.ndarray]:
    """The representable values of np_dtype just below and just above |x| (equal when exact),
    by NumPy's own rounding and nextafter; infinity is the value above the largest."""
    magnitude = np.abs(x.astype(np.float64))
    with np.errstate(over="ignore"):  # beyond the largest value: infinity
        nearest = np.abs(x).astype(np_dtype)
        nearest_wide = nearest.astype(np.float64)
        zero, inf = np.array(0, np_dtype), np.array(np.inf, np_dtype)
        below = np.where(nearest_wide > magnitude, np.nextafter(nearest, zero), nearest)
        above = np.where(nearest_wide < magnitude, np.nextafter(nearest, inf), nearest)
    return below.astype(np.float64), above.astype(np.float64)


def _test_values(np_dtype, rng) -> np.ndarray:
    finfo = ml_dtypes.finfo(np_dtype)
    tiny = float(finfo.smallest_subnormal)
    x = np.concatenate(
        [
            rng.standard_normal(4000) * 10.0 ** rng.integers(-6, 5, 4000),
            rng.uniform(0, 8 * tiny, 500),  # the subnormals of the 16-bit type
            rng.uniform(float(finfo.max) * 0.99, float(finfo.max) * 1.003, 200),
        ]
    )
    x = np.float32(x * np.where(rng.random(x.size) < 0.5, -1, 1))
    return x[np.isfinite(x)]


@pytest.mark.parametrize("name", DTYPES)
def test_result_is_always_one_of_the_two_neighbours(name):
    jax_dtype, np_dtype = DTYPES[name]
    x = _test_values(np_dtype, np.random.default_rng(0))
    below, above = _neighbours(x, np_dtype)
    for seed in range(3):
        y = np.asarray(stochastic_round(jnp.asarray(x), jax.random.key(seed), jax_dtype))
        assert y.dtype == np_dtype
        magnitude = np.abs(y.astype(np.float64))
        assert np.all((magnitude == below) | (magnitude == above))
        assert np.all(np.signbit(y) == np.signbit(x))
    # Both neighbours do occur where they differ.
    inexact = below != above
    assert np.mean(magnitude[inexact] == above[inexact]) > 0.2


@pytest.mark.parametrize("name", DTYPES)
def test_exact_values_nan_and_infinity_are_unchanged(name):
    jax_dtype, np_dtype = DTYPES[name]
    bits = np.arange(2**16, dtype=np.uint16)  # every value of the 16-bit type
    values = bits.view(np_dtype)
    y = np.asarray(
        stochastic_round(jnp.asarray(values.astype(np.float32)), jax.random.key(1), jax_dtype)
    )
    finite = ~np.isnan(values.astype(np.float32))
    np.testing.assert_array_equal(y.view(np.uint16)[finite], bits[finite])
    assert np.all(np.isnan(y.astype(np.float32)[~finite]))


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("fraction", [1 / 16, 0.25, 0.5, 0.875])
def test_mean_over_keys_is_x(name, fraction):
    """The number of round-ups over N keys is Binomial(N, p): within 5 standard deviations."""
    jax_dtype, np_dtype = DTYPES[name]
    lows = np.array([1.0, -3.0, 1e-3, 6e-6 if name == "float16" else 1e-38], np_dtype)
    gaps = np.nextafter(np.abs(lows), np.array(np.inf, np_dtype)).astype(np.float64) - np.abs(
        lows
    ).astype(np.float64)
    x = np.float32(lows.astype(np.float64) + np.sign(lows.astype(np.float64)) * fraction * gaps)
    assert np.all((np.abs(x) - np.abs(lows.astype(np.float64))) / gaps == fraction)  # exact
    n = 20_000
    keys = jax.random.split(jax.random.key(7), n)
    y = jax.vmap(lambda key: stochastic_round(jnp.asarray(x), key, jax_dtype))(keys)
    ups = np.sum(np.abs(np.asarray(y, np.float64)) > np.abs(lows.astype(np.float64)), axis=0)
    bound = 5 * np.sqrt(n * fraction * (1 - fraction))
    assert np.all(np.abs(ups - n * fraction) <= bound), (ups, n * fraction)


@pytest.mark.parametrize("name", DTYPES)
def test_same_key_same_bits_and_other_keys_other_bits(name):
    jax_dtype, _ = DTYPES[name]
    x = jnp.asarray(np.random.default_rng(2).standard_normal(1000), jnp.float32)
    first = stochastic_round(x, jax.random.key(3), jax_dtype)
    again = jax.jit(stochastic_round, static_argnums=2)(x, jax.random.key(3), jax_dtype)
    other = stochastic_round(x, jax.random.key(4), jax_dtype)
    assert np.array_equal(np.asarray(first).view(np.uint16), np.asarray(again).view(np.uint16))
    assert np.sum(np.asarray(first) != np.asarray(other)) > 100


# -- compensated addition ------------------------------------------------------------------------


def _compensated_model(param, update, error, param_dtype, error_dtype):
    """Kahan's recursion, every float32 operation done in float64 and rounded to float32."""

    def f32(v):
        return np.float32(v).astype(np.float64)

    old = param.astype(np.float64)
    compensated = f32(update.astype(np.float64) + error.astype(np.float64))
    new_param = f32(old + compensated).astype(np.float32).astype(param_dtype)
    new_error = f32(compensated - f32(new_param.astype(np.float64) - old))
    return new_param, np.float32(new_error).astype(error_dtype)


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("error_name", ["same", "float32"])
def test_compensated_add_equals_the_float64_model_bit_for_bit(name, error_name):
    jax_dtype, np_dtype = DTYPES[name]
    error_dtype = np_dtype if error_name == "same" else np.float32
    rng = np.random.default_rng(5)
    param = np.float32(rng.standard_normal(2000)).astype(np_dtype)
    error = np.zeros(2000, error_dtype)
    step = jax.jit(compensated_add)
    p, e = jnp.asarray(param), jnp.asarray(error)
    for _ in range(20):
        update = np.float32(rng.standard_normal(2000) * 10.0 ** rng.integers(-7, -1, 2000))
        param, error = _compensated_model(param, update, error, np_dtype, error_dtype)
        p, e = step(p, jnp.asarray(update), e)
        np.testing.assert_array_equal(np.asarray(p).view(np.uint16), param.view(np.uint16))
        np.testing.assert_array_equal(np.asarray(e), error)
    assert np.any(error != 0)


def test_small_updates_are_kept_by_compensation_and_stochastic_rounding():
    """1000 updates of 1e-4 to a bfloat16 weight of 1 (ulp 2**-7): plain addition rounds each
    away; both cures reach 1.1."""
    steps, update = 1000, jnp.full(64, 1e-4, jnp.float32)
    start = jnp.ones(64, jnp.bfloat16)

    def plain(p, _):
        return (p.astype(jnp.float32) + update).astype(jnp.bfloat16), None

    def compensated(carry, _):
        p, e = carry
        return compensated_add(p, update, e), None

    def stochastic(p, key):
        return stochastic_round(p.astype(jnp.float32) + update, key, jnp.bfloat16), None

    keys = jax.random.split(jax.random.key(0), steps)
    plain_end, _ = jax.lax.scan(plain, start, None, length=steps)
    (comp_end, _), _ = jax.lax.scan(
        compensated, (start, jnp.zeros(64, jnp.bfloat16)), None, length=steps
    )
    sr_end, _ = jax.lax.scan(stochastic, start, keys)
    assert np.all(np.asarray(plain_end, np.float32) == 1.0)
    assert np.all(np.abs(np.asarray(comp_end, np.float32) - 1.1) <= 2**-7)  # one ulp
    # 64 chains of 1000 steps: each step's variance is p(1-p) ulp**2, p = 1e-4 / 2**-7.
    sr = np.asarray(sr_end, np.float64)
    p_up = 1e-4 / 2**-7
    std_of_mean = np.sqrt(steps * p_up * (1 - p_up)) * 2**-7 / np.sqrt(64)
    assert abs(sr.mean() - 1.1) < 5 * std_of_mean and np.all(sr > 1.0)


# -- validation ----------------------------------------------------------------------------------


def test_bad_arguments_are_refused():
    x = jnp.ones(3)
    with pytest.raises(
        TypeError, match=r"dtype must be one of \['bfloat16', 'float16'\], got float32"
    ):
        stochastic_round(x, jax.random.key(0), jnp.float32)
    with pytest.raises(TypeError, match="x must be a float32 array, got dtype bfloat16"):
        stochastic_round(x.astype(jnp.bfloat16), jax.random.key(0), jnp.bfloat16)
    p, e = jnp.ones(3, jnp.bfloat16), jnp.zeros(3, jnp.bfloat16)
    with pytest.raises(TypeError, match="param's dtype must be one of"):
        compensated_add(x, x, e)
    with pytest.raises(TypeError, match="update must be a float32 array"):
        compensated_add(p, p, e)
    with pytest.raises(ValueError, match=r"one shape, got \(3,\), \(4,\)"):
        compensated_add(p, jnp.ones(4), e)
