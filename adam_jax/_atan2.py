"""Adam-atan2: Adam without epsilon, ``scale_by_adam_atan2`` and ``adam_atan2``."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from adam_jax import _validation
from adam_jax._alias import optimizer_chain
from adam_jax._transform import BiasCorrections, Direction, LeafMoments, scale_by_moments


class Atan2Coefficients(NamedTuple):
    """The scalars of one Adam-atan2 step."""

    before_max: jax.Array  # 1: AMSGrad's maximum is over the raw v, as torch's
    bc1: jax.Array  # c_1 = 1 - b1^t
    bc2: jax.Array  # c_2 = 1 - b2^t


def scale_by_adam_atan2(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    *,
    a: jax.typing.ArrayLike = 1.27,
    b: jax.typing.ArrayLike = 1.0,
    amsgrad: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Rescales gradients into the Adam-atan2 direction: Adam with no epsilon.

    Adam's :math:`\hat m / (\sqrt{\hat v} + \epsilon)` is replaced by
    :math:`a \cdot \operatorname{atan2}(\hat m, b \sqrt{\hat v})`, which is
    bounded by :math:`a \pi / 2`, defined everywhere
    (:math:`\operatorname{atan2}(0, 0) = 0`) and invariant to the scale of the
    gradients, so there is no epsilon to choose (in float32 the invariance holds
    while :math:`(1 - \beta_2) g^2` neither underflows nor overflows, roughly
    :math:`10^{-17} \lesssim |g| \lesssim 10^{19}`, as for Adam). Where
    :math:`|\hat m| \ll b \sqrt{\hat v}` it is Adam's step (with
    :math:`\epsilon = 0`) times :math:`a / b`; ``a = 1.27``, ``b = 1`` are Everett
    et al.'s values.

    With :math:`\beta_1, \beta_2` = ``b1, b2``, for each element and step
    :math:`t = 1, 2, \dots`:

    .. math::

      m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
      v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
      r_t &= v_t \quad \text{or, with AMSGrad,} \quad r_t = \max(r_{t-1}, v_t) \\
      s_t &= a \cdot \operatorname{atan2}\big(m_t / (1 - \beta_1^t),\;
        b \sqrt{r_t / (1 - \beta_2^t)}\big)

    The bias correction and AMSGrad's maximum over the raw moment are
    ``torch.optim.Adam``'s (``convention="pytorch"`` of
    :func:`adam_jax.scale_by_adam`). The output is :math:`s_t`. Arithmetic runs
    in float32 or wider and the output is cast back to the gradient's dtype, so
    16-bit gradients give finite steps. Real params only.

    The state is a ``ScaleByAdamState``, whose fields mean what they mean for
    ``scale_by_adam(amsgrad=amsgrad, convention="pytorch")``: checkpoints and
    state tools treat both alike, and :func:`adam_jax.epsilon_report` with
    ``adam_jax.AdamSpec(amsgrad=amsgrad)`` reports the quantiles of
    :math:`\sqrt{r_t / (1 - \beta_2^t)}`.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      a: scale of the step, finite, > 0; steps lie in :math:`(-a\pi/2, a\pi/2)`.
      b: scale of the denominator, finite, > 0.
      amsgrad: use AMSGrad's running maximum of the raw second moment.
      mu_dtype: storage dtype of :math:`m`; default float32 for 16-bit params,
        else the params' dtype.
      nu_dtype: storage dtype of :math:`v` (and the AMSGrad maximum); default as
        for ``mu_dtype``.

    Returns:
      An ``optax.GradientTransformation`` whose state is a ``ScaleByAdamState``.

    Examples:
      >>> import jax.numpy as jnp, adam_jax
      >>> tx = adam_jax.scale_by_adam_atan2()
      >>> state = tx.init(jnp.zeros(3))
      >>> step, state = tx.update(jnp.array([1e-15, -1e15, 0.0]), state)
      >>> step.round(5)  # a * atan2(g, |g|) = 1.27 * pi / 4 at step 1, at any scale
      Array([ 0.99745995, -0.99745995,  0.        ], dtype=float32)

    References:
      Everett et al., `Scaling Exponents Across Parameterizations and Optimizers
      <https://arxiv.org/abs/2407.05872>`_, ICML 2024.

      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015.
    """
    _validation.check_decay("b1", b1)
    _validation.check_decay("b2", b2)
    _validation.check_bool("amsgrad", amsgrad)
    _validation.check_dtype("mu_dtype", mu_dtype)
    _validation.check_dtype("nu_dtype", nu_dtype)
    _validation.check_positive("a", a)
    _validation.check_positive("b", b)

    def coefficients(corrections: BiasCorrections) -> Atan2Coefficients:
        one = jnp.ones_like(corrections.first)
        return Atan2Coefficients(before_max=one, bc1=corrections.first, bc2=corrections.second)

    def step(moments: LeafMoments, k: Atan2Coefficients) -> jax.Array:
        m, r = moments.first, moments.second
        scale_a, scale_b = jnp.asarray(a, r.dtype), jnp.asarray(b, r.dtype)
        step = scale_a * jnp.arctan2(m / k.bc1, scale_b * jnp.sqrt(r / k.bc2))
        # atan2(inf, inf) = pi/4 would hide an infinite gradient: 0 * m is 0 for a
        # finite first moment and NaN for an infinite or NaN one, which it then shows.
        return step + 0 * m

    moments = scale_by_moments(
        b1,
        b2,
        Direction(coefficients, step),
        amsgrad=amsgrad,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )

    def init_fn(params):
        _check_real(params)
        return moments.init(params)

    def update_fn(updates, state, params=None):
        _check_real(updates)
        return moments.update(updates, state, params)

    return optax.GradientTransformation(init_fn, update_fn)


def adam_atan2(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    *,
    a: jax.typing.ArrayLike = 1.27,
    b: jax.typing.ArrayLike = 1.0,
    amsgrad: bool = False,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    decoupled_weight_decay: bool = False,
    mask: Any = None,
    maximize: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Adam-atan2 (Everett et al., 2024): Adam with no epsilon to tune.

    With :math:`\eta_t` = ``learning_rate``, :math:`\lambda` = ``weight_decay``
    and :math:`s_t` the step of :func:`adam_jax.scale_by_adam_atan2`:

    .. math::

      g_t &\leftarrow -g_t \quad \text{if maximize} \\
      g_t &\leftarrow g_t + \lambda p_{t-1}
        \quad \text{(coupled weight decay, as torch.optim.Adam)} \\
      u_t &= -\eta_t s_t \;-\; \eta_t \lambda p_{t-1}
        \quad \text{(last term: decoupled weight decay only, as AdamW)}

    The updates :math:`u_t` are added with ``optax.apply_updates``; the
    arguments mean what they mean for :func:`adam_jax.adam`, with ``a`` and
    ``b`` in place of ``eps`` and ``eps_root``.

    Args:
      learning_rate: :math:`\eta`, >= 0, or a schedule ``count -> lr``.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      a: scale of the step, finite, > 0.
      b: scale of the denominator, finite, > 0.
      amsgrad: use AMSGrad's running maximum of the raw second moment.
      weight_decay: :math:`\lambda`, >= 0.
      decoupled_weight_decay: apply :math:`\lambda` as AdamW (Loshchilov &
        Hutter) instead of adding it to the gradient.
      mask: which params are decayed, as for :func:`adam_jax.adam`.
      maximize: ascend the objective instead of descending it.
      mu_dtype: storage dtype of the first moment.
      nu_dtype: storage dtype of the second moment.

    Returns:
      An ``optax.GradientTransformation``; updates need ``params`` when
      ``weight_decay > 0``.

    Examples:
      >>> import jax.numpy as jnp, optax, adam_jax
      >>> opt = adam_jax.adam_atan2(learning_rate=0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.array([3e-15, -4e15]), state, params)
      >>> optax.apply_updates(params, updates)
      Array([ 0.9002544, -1.9002544], dtype=float32)

    References:
      Everett et al., `Scaling Exponents Across Parameterizations and Optimizers
      <https://arxiv.org/abs/2407.05872>`_, ICML 2024.

      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019.
    """
    _validation.check_range("learning_rate", learning_rate, schedule_ok=True)
    _validation.check_range("weight_decay", weight_decay, schedule_ok=True)
    _validation.check_bool("decoupled_weight_decay", decoupled_weight_decay)
    _validation.check_bool("maximize", maximize)
    _validation.check_mask(mask)
    return optimizer_chain(
        scale_by_adam_atan2(
            b1, b2, a=a, b=b, amsgrad=amsgrad, mu_dtype=mu_dtype, nu_dtype=nu_dtype
        ),
        learning_rate,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
        mask=mask,
        decays_weights=not _validation.is_static_zero(weight_decay),
    )


def _check_real(tree) -> None:
    for x in jax.tree.leaves(tree):
        if jnp.iscomplexobj(x):
            raise ValueError(
                f"Adam-atan2 needs real params and gradients, got dtype {x.dtype}; "
                "atan2 has no complex form."
            )
