"""``scripts/benchmarks/lowmem_probe.py`` measures what docs/memory.md says it does.

Its sums are checked against a float64 NumPy evaluation of the pytorch-convention step
written from the equations, its 8-bit step against the library's own quantized step, and
the probe against the run it watches: the updates with the probe are those without it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adam_jax
from scripts.benchmarks import lowmem_probe

QUANTIZATION = adam_jax.BlockQuantization(block_size=256, min_size=1024)
SHAPES = {"kernel": (64, 128), "bias": (128,)}  # quantized, and kept in float32


def random_tree(rng, scale=1.0):
    return {k: jnp.asarray(scale * rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}


def numpy_sums(g, m32, v32, m8, v8, t) -> dict:
    """The probe's sums from the equations, in float64."""
    g, m32, v32, m8, v8 = (np.asarray(x, np.float64) for x in (g, m32, v32, m8, v8))
    b1, b2, eps = lowmem_probe.B1, lowmem_probe.B2, lowmem_probe.EPS
    c1, c2 = 1 - b1**t, 1 - b2**t

    def step(m, v):
        return ((b1 * m + (1 - b1) * g) / c1) / (np.sqrt((b2 * v + (1 - b2) * g * g) / c2) + eps)

    s32, s8 = step(m32, v32), step(m8, v8)
    return {"f32_sq": np.sum(s32**2), "q_sq": np.sum(s8**2), "dot": np.sum(s8 * s32)}


def test_sums_match_a_float64_evaluation_of_the_step():
    rng = np.random.default_rng(0)
    g = jnp.asarray(1e-3 * rng.standard_normal((64, 128)), jnp.float32)
    m32 = jnp.asarray(1e-3 * rng.standard_normal((64, 128)), jnp.float32)
    v32 = jnp.asarray(1e-6 * rng.random((64, 128)) ** 4, jnp.float32)  # a wide range
    m8 = lowmem_probe.round_trip(m32, True, QUANTIZATION)
    v8 = lowmem_probe.round_trip(v32, False, QUANTIZATION)
    summed = np.asarray(lowmem_probe.leaf_sums(g, m32, v32, m8, v8, 7))
    sums = dict(zip(lowmem_probe.SUMS, summed, strict=True))
    expected = numpy_sums(g, m32, v32, m8, v8, 7)
    for name, value in expected.items():
        np.testing.assert_allclose(sums[name], value, rtol=1e-4, err_msg=name)  # float32 sums
    assert sums["v_pos"] == np.sum(np.asarray(v32) > 0)
    assert sums["v_zero"] == np.sum((np.asarray(v32) > 0) & (np.asarray(v8) == 0)) > 0
    ratios = lowmem_probe.ratios(np.asarray(lowmem_probe.leaf_sums(g, m32, v32, m32, v32, 7)))
    assert ratios["rms_ratio"] == ratios["cosine"] == 1.0  # the same moments: the same step


@pytest.mark.parametrize("eight_bit", [False, True])
def test_the_probe_changes_no_update_and_its_8_bit_step_is_the_library_s(eight_bit):
    rng = np.random.default_rng(1)
    params = random_tree(rng)
    kwargs = {"quantized_state": QUANTIZATION} if eight_bit else {}
    inner = adam_jax.adamw(
        1e-3, b1=lowmem_probe.B1, b2=lowmem_probe.B2, eps=lowmem_probe.EPS, **kwargs
    )
    probed = lowmem_probe.probed(inner, QUANTIZATION, eight_bit)
    direction = adam_jax.scale_by_adam(
        lowmem_probe.B1, lowmem_probe.B2, lowmem_probe.EPS, quantized_state=QUANTIZATION
    )
    state, probe_state = inner.init(params), probed.init(params)
    direction_state = direction.init(params)
    for _ in range(4):
        grads = random_tree(rng, 1e-2)
        sums_before = probe_state.sums
        updates, state = inner.update(grads, state, params)
        probed_updates, probe_state = probed.update(grads, probe_state, params)
        for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(probed_updates), strict=True):
            np.testing.assert_array_equal(a, b)
        steps, direction_state = direction.update(grads, direction_state)
    if eight_bit:  # the optimizer's 8-bit moments, and the step they give, are the library's
        q_sq = probe_state.sums["kernel"] - sums_before["kernel"]
        q_sq = q_sq[lowmem_probe.SUMS.index("q_sq")]
        np.testing.assert_allclose(q_sq, jnp.sum(steps["kernel"] ** 2), rtol=1e-6)
    else:  # the float32 copy is the optimizer's moments
        moments = lowmem_probe.adam_moments(state)
        for a, b in zip(
            jax.tree.leaves((moments.mu, moments.nu)),
            jax.tree.leaves((probe_state.mu, probe_state.nu)),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
