"""The optimizers users call: ``adam``, ``amsgrad``, ``adamw``, ``nadam``.

Each is :func:`from_spec` of one ``AdamSpec``: an explicit signature
(``optax.inject_hyperparams`` reads it) whose arguments are passed on, as they
are, to the spec (``**locals()`` at the top of the body: the arguments and
nothing else). ``from_spec`` is one ``optax.chain``: the sign flip, weight decay,
the direction of :func:`adam_jax.scale_by_adam`, and the learning rate last.
``tests/test_spec.py`` checks that every argument is a field of the spec with
the same default, unless the factory's docstring says otherwise.
"""

from collections.abc import Callable
from typing import TypeAlias

import jax
import optax

from adam_jax import _diagnostics, _validation
from adam_jax._conventions import ConventionName
from adam_jax._quantize import BlockQuantization
from adam_jax._rounding import ParamRounding, rounded_updates
from adam_jax._spec import AdamSpec
from adam_jax._transform import scale_by_spec

Mask: TypeAlias = optax.Params | Callable[[optax.Params], optax.Params] | None


class Optimizer(optax.GradientTransformationExtraArgs):
    """An ``optax.GradientTransformationExtraArgs`` that knows its ``AdamSpec``.

    It is the optax transformation (``init``, ``update``) that
    :func:`adam_jax.adam`, ``amsgrad``, ``adamw`` and ``nadam`` return; it also
    carries ``spec``, from which :func:`adam_jax.epsilon_report` reads the
    settings (pass the optimizer, never eps or the convention by hand).
    """

    spec: AdamSpec  # set by ``from_spec``; instances of this NamedTuple subclass have a __dict__

    def _replace(self, **changes) -> "Optimizer":
        """As ``NamedTuple._replace``, keeping ``spec``."""
        replaced = Optimizer(**{**self._asdict(), **changes})
        replaced.spec = self.spec
        return replaced

    def epsilon_report(self, opt_state, *, per_leaf: bool = False) -> dict:
        """:func:`adam_jax.epsilon_report` of ``opt_state`` for this optimizer."""
        return _diagnostics.epsilon_report(opt_state, self.spec, per_leaf=per_leaf)


def optimizer_chain(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: optax.ScalarOrSchedule,
    decoupled_weight_decay: bool,
    maximize: bool,
    mask: Mask = None,
    decays_weights: bool = True,
    rounding: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    """``direction`` between the sign flip, weight decay and learning rate.

    ``chain(scale(-1) if maximize, add_decayed_weights if coupled, direction,
    add_decayed_weights if decoupled, scale_by_learning_rate, rounding)``:
    coupled decay is added to the gradient (as ``torch.optim.Adam``), decoupled
    decay to the step (as ``torch.optim.AdamW``), the learning rate is the last
    link of the update, and ``rounding`` (16-bit params, ``param_rounding``)
    turns it into exact differences of rounded params. ``mask`` (a tree of bools
    or a callable of the params, as optax's) leaves the params where it is False
    undecayed.
    """
    decay = optax.add_decayed_weights(weight_decay, _validation.checked_mask(mask))
    return optax.chain(
        *([optax.scale(-1.0)] if maximize else []),
        *([decay] if decays_weights and not decoupled_weight_decay else []),
        direction,
        *([decay] if decays_weights and decoupled_weight_decay else []),
        optax.scale_by_learning_rate(learning_rate),
        *([rounding] if rounding is not None else []),
    )


def from_spec(spec: AdamSpec) -> Optimizer:
    r"""The optax optimizer that ``spec`` describes, carrying ``spec``.

    What :func:`adam_jax.adam` and friends return for the same arguments:
    ``adam_jax.from_spec(adam_jax.adam(...).spec)`` is the same optimizer. With
    :math:`s_t` the direction of :func:`adam_jax.scale_by_adam` for the spec,
    :math:`\eta_t` = ``spec.learning_rate`` and :math:`\lambda` =
    ``spec.weight_decay``, the chain is

    .. math::

      u_t = -\eta_t \big(s_t(\pm g_t + \lambda_c p_{t-1}) + \lambda_d p_{t-1}\big)

    where :math:`\pm` is the sign flip of ``maximize``, and :math:`\lambda`
    is :math:`\lambda_c` (coupled, added to the gradient) or :math:`\lambda_d`
    (decoupled, AdamW) as ``spec.decoupled_weight_decay`` says.

    Args:
      spec: the validated description.

    Returns:
      An :class:`adam_jax.Optimizer`: ``optax.chain`` of the sign flip, weight
      decay, the direction and ``optax.scale_by_learning_rate``, carrying ``spec``.

    Examples:
      >>> import adam_jax
      >>> spec = adam_jax.AdamSpec(learning_rate=0.1, amsgrad=True, convention="optax")
      >>> adam_jax.from_spec(spec).spec == spec
      True

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015.

      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019.
    """
    tx = optimizer_chain(
        scale_by_spec(spec),
        spec.learning_rate,
        weight_decay=spec.weight_decay,
        decoupled_weight_decay=spec.decoupled_weight_decay,
        maximize=spec.maximize,
        mask=spec.mask,
        decays_weights=spec.decays_weights,
        rounding=(
            None
            if spec.param_rounding is None
            else rounded_updates(spec.param_rounding, spec.rounding_seed)
        ),
    )
    optimizer = Optimizer(tx.init, tx.update)
    optimizer.spec = spec
    return optimizer


def adam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike | None = None,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    amsgrad: bool = False,
    convention: ConventionName = "pytorch",
    weight_decay: optax.ScalarOrSchedule = 0.0,
    decoupled_weight_decay: bool = False,
    mask: Mask = None,
    maximize: bool = False,
    mu_dtype: jax.typing.DTypeLike | None = None,
    nu_dtype: jax.typing.DTypeLike | None = None,
    quantized_state: BlockQuantization | None = None,
    param_rounding: ParamRounding | None = None,
    rounding_seed: int | None = None,
) -> Optimizer:
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
    ``convention="pytorch"`` is ``torch.optim.Adam(..., amsgrad=amsgrad)``. A
    convention brings its framework's defaults too: ``eps`` left as None is
    1e-7 with ``"keras"`` (``keras.optimizers.Adam``) and 1e-8 otherwise.

    Args:
      learning_rate: :math:`\eta`, finite, >= 0, or a schedule ``count -> lr``.
      b1: decay of the first moment, in [0, 1) (and below 1 in float32).
      b2: decay of the second moment, in [0, 1) (and below 1 in float32).
      eps: added to the denominator's square root; finite, >= 0; None for the
        convention's framework default (1e-7 for ``"keras"``, else 1e-8).
      eps_root: added inside the square root; finite, >= 0.
      amsgrad: use AMSGrad's running maximum of the second moment.
      convention: ``"pytorch"``, ``"optax"``, ``"keras"`` or ``"paper"``.
      weight_decay: :math:`\lambda`, finite, >= 0, or a schedule.
      decoupled_weight_decay: apply :math:`\lambda` as AdamW (Loshchilov &
        Hutter) instead of adding it to the gradient.
      mask: which params are decayed: a tree of bools shaped like the params
        (or a prefix of it), or a callable ``params -> that tree``, as optax's
        ``add_decayed_weights``; None decays all. Biases and norms are usually
        left out.
      maximize: ascend the objective instead of descending it.
      mu_dtype: storage dtype of the first moment (a real float dtype).
      nu_dtype: storage dtype of the second moment (a real float dtype).
      quantized_state: an ``adam_jax.BlockQuantization`` to store the moments of
        large leaves in 8 bits (2 bytes per param for Adam's two moments instead
        of 8; see :func:`adam_jax.scale_by_adam`); None keeps float moments.
      param_rounding: for bfloat16/float16 params, keep updates smaller than half
        an ulp instead of rounding them away: ``"stochastic"`` (stochastic
        rounding, keyed from ``rounding_seed``, the key kept in the state) or
        ``"compensated"`` (Kahan summation with an error buffer in the params'
        dtype in the state); the updates of 16-bit params are then float32 exact
        differences, so ``optax.apply_updates`` lands on the rounded params. None
        (default): ``apply_updates`` rounds to nearest.
      rounding_seed: the PRNG seed of ``param_rounding="stochastic"``, an int.

    Returns:
      An :class:`adam_jax.Optimizer` (an ``optax.GradientTransformationExtraArgs``
      that carries its ``AdamSpec``); updates need ``params`` when
      ``weight_decay > 0``.

    Raises:
      TypeError, ValueError: at construction, for an argument of the wrong type
        or out of range; the message names it.

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
    return from_spec(AdamSpec(**locals()))


def amsgrad(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike | None = None,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    convention: ConventionName = "pytorch",
    weight_decay: optax.ScalarOrSchedule = 0.0,
    decoupled_weight_decay: bool = False,
    mask: Mask = None,
    maximize: bool = False,
    mu_dtype: jax.typing.DTypeLike | None = None,
    nu_dtype: jax.typing.DTypeLike | None = None,
    quantized_state: BlockQuantization | None = None,
    param_rounding: ParamRounding | None = None,
    rounding_seed: int | None = None,
) -> Optimizer:
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
    return from_spec(AdamSpec(amsgrad=True, **locals()))


def adamw(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike | None = None,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    weight_decay: optax.ScalarOrSchedule | None = None,
    amsgrad: bool = False,
    convention: ConventionName = "pytorch",
    mask: Mask = None,
    maximize: bool = False,
    mu_dtype: jax.typing.DTypeLike | None = None,
    nu_dtype: jax.typing.DTypeLike | None = None,
    quantized_state: BlockQuantization | None = None,
    param_rounding: ParamRounding | None = None,
    rounding_seed: int | None = None,
) -> Optimizer:
    r"""AdamW: :func:`adam_jax.adam` with decoupled weight decay.

    :math:`u_t = -\eta_t (s_t + \lambda p_{t-1})`. ``weight_decay``
    :math:`\lambda` left as None is the convention's framework default: 1e-2
    (``"pytorch"``, ``torch.optim.AdamW``; and ``"paper"``), 1e-4 (``"optax"``,
    ``optax.adamw``) or 4e-3 (``"keras"``, ``keras.optimizers.AdamW``), so that
    ``adamw(lr, convention=c)`` is that framework's ``AdamW(lr)``. Other
    arguments as :func:`adam_jax.adam`.

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
    return from_spec(AdamSpec(decoupled_weight_decay=True, **locals()))


def nadam(
    learning_rate: optax.ScalarOrSchedule | None = None,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike | None = None,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    momentum_decay: jax.typing.ArrayLike | None = None,
    convention: ConventionName = "pytorch",
    weight_decay: optax.ScalarOrSchedule = 0.0,
    decoupled_weight_decay: bool = False,
    mask: Mask = None,
    maximize: bool = False,
    mu_dtype: jax.typing.DTypeLike | None = None,
    nu_dtype: jax.typing.DTypeLike | None = None,
    quantized_state: BlockQuantization | None = None,
    param_rounding: ParamRounding | None = None,
    rounding_seed: int | None = None,
) -> Optimizer:
    r"""NAdam: Adam with Nesterov momentum (Dozat, 2016), in each framework's convention.

    With :math:`s_t` the NAdam step of :func:`adam_jax.scale_by_adam`
    (``nesterov=True``), the update is that of :func:`adam_jax.adam`:
    :math:`u_t = -\eta_t s_t` (and :math:`-\eta_t \lambda p_{t-1}` with decoupled
    decay). The conventions differ in the momentum schedule
    :math:`\mu_t = \beta_1 (1 - \frac12 0.96^{t\psi})`:

    - ``"pytorch"`` (default): ``torch.optim.NAdam``, :math:`\psi` =
      ``momentum_decay`` = 0.004 by default, ``decoupled_weight_decay`` as
      torch's (NAdamW).
    - ``"keras"``: ``keras.optimizers.Nadam``, :math:`\psi = 1`.
    - ``"optax"``: ``optax.nadam`` / ``optax.adam(nesterov=True)``, no schedule
      (:math:`\mu_t = \beta_1`); ``momentum_decay`` must be None.
    - ``"paper"``: Dozat's :math:`\psi = 0.004` (:math:`0.96^{t/250}`), as PyTorch.

    ``learning_rate`` left as None is the convention's framework default: 2e-3
    (``torch.optim.NAdam``, and ``"paper"`` and ``"optax"``, whose ``optax.nadam``
    has none) or 1e-3 (``keras.optimizers.Nadam``). The other arguments are
    :func:`adam_jax.adam`'s (there is no AMSGrad NAdam).

    Examples:
      >>> import jax.numpy as jnp, optax, adam_jax
      >>> opt = adam_jax.nadam(0.1)
      >>> params = jnp.array([1.0])
      >>> updates, _ = opt.update(jnp.array([2.0]), opt.init(params), params)
      >>> updates.round(5)  # m and g weighted (0.565, 1.0), over sqrt(v / c2) = 2
      Array([-0.10565], dtype=float32)

    References:
      Dozat, `Incorporating Nesterov Momentum into Adam
      <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_, ICLR 2016 workshop.
    """
    return from_spec(AdamSpec(nesterov=True, **locals()))
