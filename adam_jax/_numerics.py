"""Dtype rules and safe arithmetic shared by the transforms."""

import jax
import jax.numpy as jnp

_INT32_MAX = jnp.iinfo(jnp.int32).max


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1`` for an int32 step count, saturating at the int32 maximum."""
    return jnp.where(count < _INT32_MAX, count + 1, count).astype(jnp.int32)


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype arithmetic runs in: ``dtype`` promoted to float32 or wider.

    float16 and bfloat16 are promoted to float32; float64 (with
    ``jax_enable_x64``) stays float64; complex dtypes keep their width.
    """
    return jnp.promote_types(dtype, jnp.float32)


def moment_dtype(param: jax.Array, requested) -> jnp.dtype:
    """The dtype a moment of ``param`` is stored in.

    ``requested`` (a real floating dtype) wins when given, made complex of its
    width for complex params; otherwise 16-bit params get float32 moments and
    wider params keep their own dtype.
    """
    dtype = jnp.result_type(param)
    if requested is None:
        return compute_dtype(dtype)
    requested = jnp.dtype(requested)
    if jnp.issubdtype(dtype, jnp.complexfloating):  # a real width for a complex param
        return jnp.promote_types(requested, jnp.complex64)
    return requested


def widest_compute_dtype(tree) -> jnp.dtype:
    """The real dtype bias corrections are computed in: float32, or float64 if
    any leaf of ``tree`` computes in float64."""
    dtypes = [real_dtype(compute_dtype(jnp.result_type(x))) for x in jax.tree.leaves(tree)]
    return max(dtypes, key=lambda d: d.itemsize, default=jnp.dtype(jnp.float32))


def real_dtype(dtype) -> jnp.dtype:
    """The real dtype of the same width (``complex64`` -> ``float32``)."""
    return jnp.finfo(dtype).dtype


def bias_correction(decay, count: jax.Array, dtype) -> jax.Array:
    """``1 - decay**count`` in ``dtype`` (float32 or wider).

    Computed before any cast to a 16-bit dtype, where ``1 - 0.999`` rounds to
    1 and the correction would divide by zero.
    """
    decay = jnp.asarray(decay, dtype)
    return 1 - decay ** count.astype(dtype)


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator``, and 0 where the denominator is exactly 0.

    In Adam a zero denominator (only possible with ``eps = 0``) means the second
    moment is zero: the gradient has always been zero, or its square underflowed.
    The coordinate then does not move, instead of taking ``0/0 = nan``. A NaN or
    infinite denominator or numerator is not hidden: it gives NaN (or the
    quotient), as in PyTorch and optax, so loss monitors and
    ``optax.apply_if_finite`` see it.
    """
    quotient = numerator / denominator
    # lax.select, not jnp.where: no nested jit per leaf, which a 10,000-leaf tree compiles.
    return jax.lax.select(denominator == 0, jnp.zeros_like(quotient), quotient)
