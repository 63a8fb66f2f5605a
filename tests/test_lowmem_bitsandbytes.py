"""One 8-bit Adam step against bitsandbytes' own (``Adam8bit``'s update), from the same state.

bitsandbytes (Dettmers et al., 2022) is the reference implementation of block-wise 8-bit
Adam. Its CPU backend (0.50: ``backends/cpu/ops.py``) dequantizes both moments, takes
PyTorch's Adam step in float32 and quantizes the new moments in blocks of 256 of the
flattened tensor; with rows a multiple of 256 those are our blocks. Both steps start from
the same codes, scales, params, gradients and step count, and bitsandbytes uses its own code
maps (``create_dynamic_map``). Skipped where bitsandbytes is not installed (it is not a
dependency; ``pip install bitsandbytes`` gives the CPU backend).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adam_jax
from adam_jax._quantize import dequantize, quantize

bnb_functional = pytest.importorskip("bitsandbytes.functional")
torch = pytest.importorskip("torch")

SHAPE = (16, 1024)  # rows a multiple of the block: bitsandbytes' flat blocks are ours
BLOCK = 256
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
STEP = 10  # the step taken: the state has seen 9


def with_moments(state, count, mu, nu):
    """``state`` with its ``ScaleByAdamState``'s count and moments replaced."""
    is_adam = lambda x: isinstance(x, adam_jax.ScaleByAdamState)  # noqa: E731
    return jax.tree.map(
        lambda x: x._replace(count=count, mu=mu, nu=nu) if is_adam(x) else x,
        state,
        is_leaf=is_adam,
    )


def moments_of(state):
    is_adam = lambda x: isinstance(x, adam_jax.ScaleByAdamState)  # noqa: E731
    (adam,) = [x for x in jax.tree.leaves(state, is_leaf=is_adam) if is_adam(x)]
    return adam.mu, adam.nu


def bitsandbytes_step(p, g, mu, nu):
    """bitsandbytes' 8-bit blockwise Adam update on copies: ``(params, mu, nu)`` as NumPy."""
    as_torch = lambda x: torch.from_numpy(np.array(x))  # noqa: E731
    param, codes1, codes2 = as_torch(p), as_torch(mu.codes), as_torch(nu.codes)
    absmax1, absmax2 = as_torch(mu.scales).ravel(), as_torch(nu.scales).ravel()
    bnb_functional.optimizer_update_8bit_blockwise(
        "adam", as_torch(g), param, codes1, codes2, B1, B2, 0.0, 0.0, EPS, STEP, LR,
        bnb_functional.create_dynamic_map(signed=True),
        bnb_functional.create_dynamic_map(signed=False),
        absmax1, absmax2, 0.0, gnorm_scale=1.0,
    )  # fmt: skip
    return (
        param.numpy(),
        (codes1.numpy(), absmax1.numpy().reshape(mu.scales.shape)),
        (codes2.numpy(), absmax2.numpy().reshape(nu.scales.shape)),
    )


def test_one_step_agrees_with_bitsandbytes():
    rng = np.random.default_rng(0)
    p = rng.standard_normal(SHAPE, dtype=np.float32)
    g = rng.standard_normal(SHAPE, dtype=np.float32) * np.float32(1e-2)
    # Moments of various magnitudes per row, as after a few steps.
    m = rng.standard_normal(SHAPE, dtype=np.float32) * np.float32(1e-3)
    m *= np.exp(rng.normal(0, 2, (SHAPE[0], 1))).astype(np.float32)
    v = np.square(rng.standard_normal(SHAPE, dtype=np.float32) * np.float32(1e-3))
    mu, nu = quantize(m, signed=True, block_size=BLOCK), quantize(v, signed=False, block_size=BLOCK)

    nearest = adam_jax.BlockQuantization(rounding="nearest")  # bitsandbytes' rounding
    tx = adam_jax.adam(LR, b1=B1, b2=B2, eps=EPS, quantized_state=nearest)
    state = with_moments(tx.init(jnp.asarray(p)), jnp.asarray(STEP - 1, jnp.int32), mu, nu)
    updates, new_state = jax.jit(tx.update)(jnp.asarray(g), state, jnp.asarray(p))
    ours_p = np.asarray(jnp.asarray(p) + updates)
    ours_mu, ours_nu = moments_of(new_state)
    theirs_p, theirs_mu, theirs_nu = bitsandbytes_step(p, g, mu, nu)

    # The params: the same float32 step, up to the order of its roundings (sqrt(v)/sqrt(c2)
    # and one fused addcdiv there, sqrt(v/c2) and a rounded update added here): within 1e-5
    # of the step and two ulps of the param.
    step = np.abs(theirs_p.astype(np.float64) - p)
    assert np.all(np.abs(ours_p - theirs_p) <= 1e-5 * step + 2 * np.spacing(np.abs(p)))
    for ours, (codes, scales), signed in ((ours_mu, theirs_mu, True), (ours_nu, theirs_nu, False)):
        # The new moments' block maxima: the same float32 moment update, up to the order of
        # its roundings (torch's m.mul_(b1).add_(g, alpha=1 - b1) there); measured: m 4 ulps
        # (2.7e-7), v 9 ulps (1.0e-6).
        np.testing.assert_allclose(np.asarray(ours.scales), scales, rtol=2e-6)
        # The codes: bitsandbytes' CPU quantizer looks x/N up in 65536 equal bins of [-1, 1],
        # coarser than the codes below ~1e-4 (tests/test_quantize.py): above 1e-3 the two
        # pick the same code but for a neighbour near a midpoint, in under 1% of the elements.
        ours_codes, codes = np.asarray(ours.codes, np.int64), codes.astype(np.int64)
        normalized = np.asarray(dequantize(ours, signed=signed, block_size=BLOCK)) / np.repeat(
            np.asarray(ours.scales), BLOCK, axis=-1
        )
        large = np.abs(normalized) > 1e-3
        differ = ours_codes != codes
        assert np.all(np.abs(ours_codes - codes)[large] <= 1)
        assert np.mean(differ[large]) < 0.01
