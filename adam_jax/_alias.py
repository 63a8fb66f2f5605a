"""The optimizers users call: ``adam``, ``amsgrad``, ``adamw``."""

from typing import Any

import jax
import optax

from adam_jax import _validation
from adam_jax._chain import optimizer_chain
from adam_jax._transform import scale_by_adam


def adam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    amsgrad: bool = False,
    convention: str = "pytorch",
    weight_decay: jax.typing.ArrayLike = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Adam, AMSGrad and AdamW, in the epsilon convention of your choice.

    With :math:`\eta_t` = ``learning_rate`` (a float or an optax schedule of the
    step count), :math:`\lambda` = ``weight_decay`` and :math:`s_t` the step of
    :func:`adam_jax.scale_by_adam` (whose docstring gives each convention):

    .. math::

      g_t &\leftarrow -g_t \quad \text{if maximize} \\
      g_t &\leftarrow g_t + \lambda p_{t-1}
        \quad \text{(coupled weight decay, as torch.optim.Adam)} \\
      u_t &= -\eta_t s_t \;-\; \eta_t \lambda p_{t-1}
        \quad \text{(last term: decoupled weight decay only, as AdamW)}

    The updates :math:`u_t` are added with ``optax.apply_updates``. The default
    ``convention="pytorch"`` is ``torch.optim.Adam(..., amsgrad=amsgrad)``.

    Args:
      learning_rate: :math:`\eta`, >= 0, or a schedule ``count -> lr``.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator's square root; finite, >= 0.
      eps_root: added inside the square root; >= 0.
      amsgrad: use AMSGrad's running maximum of the second moment.
      convention: ``"pytorch"``, ``"optax"``, ``"keras"`` or ``"paper"``.
      weight_decay: :math:`\lambda`, >= 0.
      decoupled_weight_decay: apply :math:`\lambda` as AdamW (Loshchilov &
        Hutter) instead of adding it to the gradient.
      maximize: ascend the objective instead of descending it.
      mu_dtype: storage dtype of the first moment.
      nu_dtype: storage dtype of the second moment.

    Returns:
      An ``optax.GradientTransformation``; updates need ``params`` when
      ``weight_decay > 0``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, adam_jax
      >>> opt = adam_jax.adam(learning_rate=0.1, amsgrad=True)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = opt.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum(p**2))(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> optax.apply_updates(params, updates)
      Array([ 0.9, -1.9], dtype=float32)

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015.

      Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, ICLR 2018.

      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019.
    """
    _validation.check_optimizer(learning_rate, weight_decay)
    direction = scale_by_adam(
        b1,
        b2,
        eps,
        eps_root,
        amsgrad=amsgrad,
        convention=convention,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )
    return optimizer_chain(
        direction,
        learning_rate,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )


def amsgrad(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    convention: str = "pytorch",
    weight_decay: jax.typing.ArrayLike = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""AMSGrad: :func:`adam_jax.adam` with ``amsgrad=True``.

    The second moment in the denominator is the running maximum
    :math:`r_t = \max(r_{t-1}, v_t)`, so the effective step size never grows.
    With the default ``convention="pytorch"`` the maximum is over the raw
    moment and bias correction follows, as ``torch.optim.Adam(amsgrad=True)``;
    ``"optax"`` takes it over the bias-corrected moment, ``"paper"`` drops the
    bias correction. Arguments as :func:`adam_jax.adam`.

    Examples:
      >>> import jax.numpy as jnp, adam_jax
      >>> opt = adam_jax.amsgrad(1e-4, eps=1e-8)
      >>> state = opt.init(jnp.zeros(2))
      >>> state[0].nu_max
      Array([0., 0.], dtype=float32)

    References:
      Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, ICLR 2018.
    """
    return adam(
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        amsgrad=True,
        convention=convention,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )


def adamw(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    weight_decay: jax.typing.ArrayLike = 1e-2,
    amsgrad: bool = False,
    convention: str = "pytorch",
    maximize: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""AdamW: :func:`adam_jax.adam` with decoupled weight decay.

    :math:`u_t = -\eta_t (s_t + \lambda p_{t-1})`, with ``weight_decay``
    :math:`\lambda` = 1e-2 by default, as ``torch.optim.AdamW``. Arguments as
    :func:`adam_jax.adam`.

    Examples:
      >>> import jax.numpy as jnp, optax, adam_jax
      >>> opt = adam_jax.adamw(0.1, weight_decay=0.5)
      >>> params = jnp.array([2.0])
      >>> updates, _ = opt.update(jnp.array([0.0]), opt.init(params), params)
      >>> updates
      Array([-0.1], dtype=float32)

    References:
      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019.
    """
    return adam(
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        amsgrad=amsgrad,
        convention=convention,
        weight_decay=weight_decay,
        decoupled_weight_decay=True,
        maximize=maximize,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )
