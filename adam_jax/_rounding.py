"""16-bit params that keep every update: stochastic rounding and a compensated (Kahan) sum.

An Adam step smaller than half an ulp of a bfloat16 weight (2**-9 of its value) is
rounded away by ``param + update``: pure-bf16 training stalls where float32 keeps
learning. Two cures keep the update without a float32 master copy:

- :func:`stochastic_round` rounds up or down at random, with the probability that
  makes the result exact on average;
- :func:`compensated_add` carries what rounding lost in a 16-bit error buffer and adds
  it to the next update (Kahan's compensated summation).
"""

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

_SIXTEEN_BIT = ("bfloat16", "float16")


def _check_16_bit(name: str, dtype) -> jnp.dtype:
    dtype = jnp.dtype(dtype)
    if dtype.name not in _SIXTEEN_BIT:
        raise TypeError(f"{name} must be one of {list(_SIXTEEN_BIT)}, got {dtype.name}.")
    return dtype


def _check_float32(name: str, x: jax.Array) -> None:
    if x.dtype != jnp.float32:
        raise TypeError(f"{name} must be a float32 array, got dtype {x.dtype}.")


def _round_bfloat16(x: jax.Array, random: jax.Array) -> jax.Array:
    """bfloat16 is float32's top 16 bits: add 16 random bits below them, then truncate.

    The carry reaches bit 16 with probability (low 16 bits) / 2**16, the distance to the
    lower neighbour in units of the gap; in every binade, subnormals and the step to
    infinity above the largest bfloat16 included.
    """
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    rounded = lax.shift_right_logical(
        bits + lax.shift_right_logical(random, jnp.uint32(16)), jnp.uint32(16)
    )
    result = lax.bitcast_convert_type(rounded.astype(jnp.uint16), jnp.bfloat16)
    return jnp.where(jnp.isnan(x), x.astype(jnp.bfloat16), result)  # a NaN's payload may carry


def _round_float16(x: jax.Array, random: jax.Array) -> jax.Array:
    """Between the float16 neighbours below and above |x|, chosen from 24 random bits."""
    magnitude = jnp.abs(x)
    # The barrier keeps XLA from folding float32 -> float16 -> float32 into a no-op.
    nearest = lax.optimization_barrier(magnitude.astype(jnp.float16))
    below = jnp.where(
        nearest.astype(jnp.float32) > magnitude, jnp.nextafter(nearest, jnp.float16(0)), nearest
    )
    above = jnp.nextafter(below, jnp.float16(jnp.inf))
    largest = jnp.finfo(jnp.float16).max
    gap = jnp.where(
        below == largest,
        jnp.float32(2.0**5),  # the ulp of 65504; above it is inf
        above.astype(jnp.float32) - below.astype(jnp.float32),
    )
    # (|x| - below) / gap is exact (a power-of-two gap), in units of 2**-24.
    threshold = (magnitude - below.astype(jnp.float32)) / gap * jnp.float32(2.0**24)
    uniform = lax.shift_right_logical(random, jnp.uint32(8)).astype(jnp.float32)
    rounded = jnp.where(uniform < threshold, above, below)
    result = jnp.where(jnp.signbit(x), -rounded, rounded)
    return jnp.where(jnp.isfinite(x), result, x.astype(jnp.float16))


def stochastic_round(x: jax.Array, key: jax.Array, dtype) -> jax.Array:
    r"""Rounds float32 ``x`` to ``dtype`` up or down at random, exact on average.

    With :math:`\lfloor x \rfloor` and :math:`\lceil x \rceil` the neighbouring values
    of ``dtype`` around :math:`x` (the same value when :math:`x` is exact):

    .. math::

      \mathrm{SR}(x) = \begin{cases}
        \lceil x \rceil & \text{with probability }
          p = \dfrac{x - \lfloor x \rfloor}{\lceil x \rceil - \lfloor x \rfloor} \\
        \lfloor x \rfloor & \text{with probability } 1 - p
      \end{cases}
      \qquad \mathbb{E}[\mathrm{SR}(x)] = x

    so updates far below half an ulp still move a 16-bit weight on average. For
    bfloat16, ``p`` is drawn exactly (16 random bits; every gap of bfloat16 holds
    2**16 float32 values). For float16, ``p`` is compared with 24 random bits: exact
    for :math:`|x| \geq 2^{-25}`, and rounded up to a multiple of :math:`2^{-24}`
    below that. Values beyond the largest finite value round to it or to infinity,
    as if infinity were the next value; NaN and infinities pass through; exact
    values, signed zeros included, never change.

    Args:
      x: a float32 array.
      key: a JAX PRNG key. The same key gives the same bits; each element uses 32
        bits of ``jax.random.bits(key, x.shape, jnp.uint32)``.
      dtype: ``jnp.bfloat16`` or ``jnp.float16``.

    Returns:
      An array of ``x.shape`` and ``dtype``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from adam_jax._rounding import stochastic_round
      >>> x = jnp.full(10_000, 1 + 2.0**-9)  # a quarter of the way from 1 to the next bf16
      >>> y = stochastic_round(x, jax.random.key(0), jnp.bfloat16).astype(jnp.float32)
      >>> sorted(set(y.tolist())), bool(abs(jnp.mean(y) - x[0]) < 1e-4)
      ([1.0, 1.0078125], True)

    References:
      Gupta et al, `Deep Learning with Limited Numerical Precision
      <https://arxiv.org/abs/1502.02551>`_, 2015 (ICML).
      Zamirai et al, `Revisiting BFloat16 Training <https://arxiv.org/abs/2010.06192>`_, 2020.
    """
    dtype = _check_16_bit("dtype", dtype)
    x = jnp.asarray(x)
    _check_float32("x", x)
    random = jax.random.bits(key, x.shape, jnp.uint32)
    if dtype == jnp.bfloat16:
        return _round_bfloat16(x, random)
    return _round_float16(x, random)


def compensated_add(
    param: jax.Array, update: jax.Array, error: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""``param + update`` in 16 bits, carrying what rounding loses to the next call.

    Kahan's compensated summation, with float32 arithmetic and the param's rounding
    (round to nearest even) written :math:`\mathrm{rn}`:

    .. math::

      y &= u + e \\
      p' &= \mathrm{rn}(p + y) \\
      e' &= \mathrm{rn}_e\!\left(y - (p' - p)\right)

    where :math:`p` is ``param``, :math:`u` the ``update`` and :math:`e` the ``error``
    buffer, each operation one float32 operation. An update below half an ulp of the
    param leaves :math:`p' = p` but stays in :math:`e'`, and moves the param once the
    error has grown to half an ulp: the sum of the updates is kept to about the
    error buffer's precision (2**-9 of the error, in bfloat16), not the param's.

    Args:
      param: the bfloat16 or float16 params.
      update: the float32 update to add, ``param``'s shape.
      error: the error buffer, ``param``'s shape, bfloat16, float16 or float32; start
        it at zeros. A NaN update makes the param and the buffer NaN.

    Returns:
      ``(new_param, new_error)``, of the dtypes of ``param`` and ``error``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from adam_jax._rounding import compensated_add
      >>> p, e = jnp.ones(1, jnp.bfloat16), jnp.zeros(1, jnp.bfloat16)
      >>> plain = jnp.ones(1, jnp.bfloat16)
      >>> for _ in range(1000):  # 1000 updates of 1e-4, each below half an ulp (2**-8)
      ...     p, e = compensated_add(p, jnp.full(1, 1e-4), e)
      ...     plain = (plain + 1e-4).astype(jnp.bfloat16)
      >>> float(p[0]), float(plain[0])
      (1.1015625, 1.0)

    References:
      Kahan, `Further remarks on reducing truncation errors
      <https://doi.org/10.1145/363707.363723>`_, 1965 (Communications of the ACM).
      Zamirai et al, `Revisiting BFloat16 Training <https://arxiv.org/abs/2010.06192>`_, 2020.
    """
    _check_16_bit("param's dtype", param.dtype)
    _check_float32("update", update)
    if error.dtype.name not in (*_SIXTEEN_BIT, "float32"):
        raise TypeError(f"error must be bfloat16, float16 or float32, got dtype {error.dtype}.")
    if not param.shape == update.shape == error.shape:
        raise ValueError(
            f"param, update and error must have one shape, got {param.shape}, {update.shape} "
            f"and {error.shape}."
        )
    old = param.astype(jnp.float32)
    compensated = update + error.astype(jnp.float32)
    # The barrier keeps XLA from folding float32 -> 16 bits -> float32 into a no-op.
    new_param = lax.optimization_barrier((old + compensated).astype(param.dtype))
    new_error = compensated - (new_param.astype(jnp.float32) - old)
    return new_param, new_error.astype(error.dtype)


ParamRounding = Literal["stochastic", "compensated"]


class RoundedUpdatesState(NamedTuple):
    """State of :func:`rounded_updates`.

    Attributes:
      key: ``"stochastic"``: the raw data (uint32) of the PRNG key of the next step;
        None otherwise.
      error: ``"compensated"``: the params' tree of error buffers, in each 16-bit
        param's dtype (an empty array for the other params); None otherwise.
    """

    key: jax.Array | None
    error: optax.Params | None


def _is_16_bit(x) -> bool:
    return jnp.result_type(x).name in _SIXTEEN_BIT


def rounded_updates(mode: ParamRounding, seed: int | None = None) -> optax.GradientTransformation:
    r"""The last link of a chain for 16-bit params: updates that keep every step.

    For each bfloat16 or float16 param :math:`p` and incoming update :math:`u`, the
    new param is :math:`p' = \mathrm{SR}(p + u)` (``"stochastic"``, see
    :func:`stochastic_round`) or Kahan's :math:`p'` of :func:`compensated_add`
    (``"compensated"``, with the error buffer in the state), and the returned update
    is the float32 difference :math:`p' - p`, exact, so that
    ``optax.apply_updates`` (which adds in float32 and casts back) lands on
    :math:`p'` exactly. Other params' updates pass through unchanged.

    Args:
      mode: ``"stochastic"`` or ``"compensated"``.
      seed: the PRNG seed of ``"stochastic"`` (an int); the key lives in the state
        and is split every step, so a resumed run draws the same bits.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """

    def init_fn(params):
        if mode == "stochastic":
            return RoundedUpdatesState(key=jax.random.key_data(jax.random.key(seed)), error=None)
        error = jax.tree.map(
            lambda p: jnp.zeros_like(p) if _is_16_bit(p) else jnp.zeros((0,), jnp.result_type(p)),
            params,
        )
        return RoundedUpdatesState(key=None, error=error)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                f"param_rounding={mode!r} needs the params: call update(grads, state, params)."
            )
        leaves, treedef = jax.tree.flatten(updates)
        old = treedef.flatten_up_to(params)
        if mode == "stochastic":
            key, step_key = jax.random.split(jax.random.wrap_key_data(state.key))
            new_params = [
                stochastic_round(
                    p.astype(jnp.float32) + u.astype(jnp.float32),
                    jax.random.fold_in(step_key, i),
                    p.dtype,
                )
                if _is_16_bit(p)
                else None
                for i, (p, u) in enumerate(zip(old, leaves, strict=True))
            ]
            new_state = RoundedUpdatesState(key=jax.random.key_data(key), error=None)
        else:
            errors = treedef.flatten_up_to(state.error)
            pairs = [
                compensated_add(p, u.astype(jnp.float32), e) if _is_16_bit(p) else (None, e)
                for p, u, e in zip(old, leaves, errors, strict=True)
            ]
            new_params = [pair[0] for pair in pairs]
            new_state = RoundedUpdatesState(
                key=None, error=treedef.unflatten([pair[1] for pair in pairs])
            )
        out = [
            u if new is None else new.astype(jnp.float32) - p.astype(jnp.float32)
            for p, u, new in zip(old, leaves, new_params, strict=True)
        ]
        return treedef.unflatten(out), new_state

    return optax.GradientTransformation(init_fn, update_fn)
