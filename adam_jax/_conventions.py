"""The conventions of Adam, AMSGrad and NAdam, as one table.

Every convention shares the moment recursions

.. math::

  m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) g_t, \\qquad
  v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) |g_t|^2,

with bias corrections :math:`c_1 = 1 - \\beta_1^t` and :math:`c_2 = 1 - \\beta_2^t`.
They differ in five places, which are the five columns of the table:

``max_of_corrected``
  AMSGrad keeps :math:`\\hat v^{\\max}_t = \\max(\\hat v^{\\max}_{t-1}, v_t / c_2)`
  (the maximum of the bias-corrected moment, as optax does) instead of
  :math:`v^{\\max}_t = \\max(v^{\\max}_{t-1}, v_t)` (the raw moment, as PyTorch and
  Keras do). Early on :math:`c_2` is small, so the two maxima pick different
  steps, and the optimizers follow different trajectories.

``epsilon_hat``
  Kingma & Ba's "epsilon hat" form (section 2 of the paper, used by Keras and
  TensorFlow) moves the second bias correction out of the denominator:
  :math:`\\sqrt{c_2}/c_1 \\cdot m_t / (\\sqrt{v_t} + \\hat\\epsilon)`. It equals the
  PyTorch form with :math:`\\epsilon = \\hat\\epsilon / \\sqrt{c_2}`.

``amsgrad_bias_correction``
  Reddi, Kale & Kumar's Algorithm 2 has no bias correction at all.

``complex_as_real``
  For complex params, PyTorch keeps separate moments for the real and the
  imaginary parts (``torch.view_as_real``): :math:`v` is complex, holding
  :math:`(\\Re g)^2` and :math:`(\\Im g)^2` averages, and each part takes its own
  Adam step. The others keep the real :math:`v_t` of :math:`|g_t|^2` and scale
  the complex :math:`m_t` by it, as optax does.

``nadam_momentum_decay``
  NAdam's momentum schedule :math:`\\mu_t = \\beta_1 (1 - \\tfrac12 \\cdot
  0.96^{t \\psi})` (Dozat, 2016) with this default :math:`\\psi`
  (``momentum_decay``): :math:`\\psi = 0.004` in PyTorch and the paper,
  :math:`\\psi = 1` in Keras, and None for optax, whose Nesterov Adam keeps
  :math:`\\mu_t = \\beta_1`. NAdam's step puts the epsilon where PyTorch does in
  every convention (no framework uses "epsilon hat" for NAdam).

Resulting Adam step :math:`s_t` (the update is :math:`-\\eta_t s_t`), with
:math:`r_t` the second moment used (:math:`v_t`, or the AMSGrad maximum):

- ``pytorch``: :math:`(m_t / c_1) / (\\sqrt{r_t / c_2 + \\bar\\epsilon} + \\epsilon)`,
  maximum over the raw moment.
- ``optax``: :math:`(m_t / c_1) / (\\sqrt{r_t + \\bar\\epsilon} + \\epsilon)`, with
  :math:`r_t` bias-corrected before the maximum.
- ``keras``: :math:`\\sqrt{c_2}/c_1 \\cdot m_t / (\\sqrt{r_t + \\bar\\epsilon} + \\epsilon)`,
  maximum over the raw moment.
- ``paper``: Adam as ``pytorch``; AMSGrad
  :math:`m_t / (\\sqrt{r_t + \\bar\\epsilon} + \\epsilon)`.

Without AMSGrad, ``pytorch``, ``optax`` and ``paper`` are the same optimizer on
real params.
"""

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

ConventionName = Literal["pytorch", "optax", "keras", "paper"]


class Convention(NamedTuple):
    """One row of the conventions table (see the module docstring).

    The first five fields change the arithmetic; the ``default_*`` fields are the
    framework's defaults, which the factories use for arguments left as None.
    """

    name: str
    max_of_corrected: bool
    epsilon_hat: bool
    amsgrad_bias_correction: bool
    complex_as_real: bool
    nadam_momentum_decay: float | None
    default_eps: float
    default_adamw_weight_decay: float
    default_nadam_learning_rate: float
    reference: str


CONVENTIONS: dict[str, Convention] = {
    row.name: row
    for row in (
        Convention(
            name="pytorch",
            max_of_corrected=False,
            epsilon_hat=False,
            amsgrad_bias_correction=True,
            complex_as_real=True,
            nadam_momentum_decay=4e-3,
            default_eps=1e-8,
            default_adamw_weight_decay=1e-2,
            default_nadam_learning_rate=2e-3,
            reference="torch.optim.Adam / AdamW / NAdam",
        ),
        Convention(
            name="optax",
            max_of_corrected=True,
            epsilon_hat=False,
            amsgrad_bias_correction=True,
            complex_as_real=False,
            nadam_momentum_decay=None,
            default_eps=1e-8,
            default_adamw_weight_decay=1e-4,
            default_nadam_learning_rate=2e-3,  # optax.nadam has none: PyTorch's
            reference="optax.adam / amsgrad / adamw / nadam",
        ),
        Convention(
            name="keras",
            max_of_corrected=False,
            epsilon_hat=True,
            amsgrad_bias_correction=True,
            complex_as_real=False,
            nadam_momentum_decay=1.0,
            default_eps=1e-7,
            default_adamw_weight_decay=4e-3,
            default_nadam_learning_rate=1e-3,
            reference="keras.optimizers.Adam / AdamW / Nadam",
        ),
        Convention(
            name="paper",
            max_of_corrected=False,
            epsilon_hat=False,
            amsgrad_bias_correction=False,
            complex_as_real=False,
            nadam_momentum_decay=4e-3,
            default_eps=1e-8,
            default_adamw_weight_decay=1e-2,  # the papers give none: PyTorch's
            default_nadam_learning_rate=2e-3,
            reference="Kingma & Ba (2015) Alg. 1; Reddi et al. (2018) Alg. 2; Dozat (2016)",
        ),
    )
}


def get_convention(name: str) -> Convention:
    """Returns the row of ``CONVENTIONS`` called ``name``; raises ValueError."""
    if not isinstance(name, str) or name not in CONVENTIONS:
        raise ValueError(f"convention must be one of {sorted(CONVENTIONS)}, got {name!r}.")
    return CONVENTIONS[name]


class StepCoefficients(NamedTuple):
    """The scalars of one step, computed once per step in float32 or wider.

    ``step = (numerator * m + gradient * g) / (sqrt(r * inside + eps_root) + eps)``,
    where ``gradient`` is None (no term) except for NAdam, and ``before_max``
    scales :math:`v_t` before AMSGrad's maximum (1, or :math:`1/c_2` where the
    convention takes the maximum of the bias-corrected moment).
    """

    numerator: jax.Array
    inside: jax.Array
    before_max: jax.Array
    gradient: jax.Array | None = None


def step_coefficients(
    convention: Convention, amsgrad: bool, bc1: jax.Array, bc2: jax.Array
) -> StepCoefficients:
    """The scalar coefficients of an Adam or AMSGrad step.

    Args:
      convention: a row of ``CONVENTIONS``.
      amsgrad: whether the second moment is AMSGrad's running maximum.
      bc1: :math:`c_1 = 1 - \\beta_1^t`, in float32 or wider.
      bc2: :math:`c_2 = 1 - \\beta_2^t`, in float32 or wider.

    Returns:
      The ``StepCoefficients`` of this step, scalars of ``bc1``'s dtype.
    """
    one = jnp.ones_like(bc1)
    if amsgrad and not convention.amsgrad_bias_correction:
        return StepCoefficients(numerator=one, inside=one, before_max=one)
    if convention.epsilon_hat:
        return StepCoefficients(numerator=jnp.sqrt(bc2) / bc1, inside=one, before_max=one)
    if amsgrad and convention.max_of_corrected:
        return StepCoefficients(numerator=1 / bc1, inside=one, before_max=1 / bc2)
    return StepCoefficients(numerator=1 / bc1, inside=1 / bc2, before_max=one)


def nadam_momentum(b1, momentum_decay, count: jax.Array, dtype) -> jax.Array:
    """NAdam's :math:`\\mu_t = \\beta_1 (1 - \\frac12 \\cdot 0.96^{t \\psi})` in ``dtype``.

    With ``momentum_decay`` None (optax's Nesterov Adam), :math:`\\mu_t = \\beta_1`.
    """
    b1 = jnp.asarray(b1, dtype)
    if momentum_decay is None:
        return b1
    exponent = count.astype(dtype) * jnp.asarray(momentum_decay, dtype)
    return b1 * (1 - jnp.asarray(0.5, dtype) * jnp.asarray(0.96, dtype) ** exponent)


def nadam_coefficients(
    b1, momentum_decay, count: jax.Array, mu_product: jax.Array | None, bc1, bc2
) -> StepCoefficients:
    """The scalar coefficients of a NAdam step (Dozat, 2016).

    .. math::

      s_t = \\Big(\\frac{\\mu_{t+1}}{1 - \\prod_{i \\le t+1} \\mu_i} m_t
        + \\frac{1 - \\mu_t}{1 - \\prod_{i \\le t} \\mu_i} g_t\\Big)
        \\Big/ \\big(\\sqrt{v_t / c_2 + \\bar\\epsilon} + \\epsilon\\big)

    Args:
      b1: :math:`\\beta_1`.
      momentum_decay: :math:`\\psi` of the schedule, or None for :math:`\\mu_t = \\beta_1`.
      count: :math:`t`, int32.
      mu_product: :math:`\\prod_{i \\le t} \\mu_i` as kept in the state (None with a
        constant :math:`\\mu`, whose product is :math:`\\beta_1^t = 1 - c_1`).
      bc1, bc2: :math:`c_1, c_2` in float32 or wider.
    """
    dtype = bc1.dtype
    one = jnp.ones_like(bc1)
    mu = nadam_momentum(b1, momentum_decay, count, dtype)
    mu_next = nadam_momentum(b1, momentum_decay, count + 1, dtype)
    if mu_product is None:  # constant momentum: the products are powers of b1
        b1_ = jnp.asarray(b1, dtype)
        next_bc1 = 1 - b1_ ** (count.astype(dtype) + 1)
        return StepCoefficients(
            numerator=mu_next / next_bc1, inside=1 / bc2, before_max=one, gradient=(1 - mu) / bc1
        )
    return StepCoefficients(
        numerator=mu_next / (1 - mu_product * mu_next),
        inside=1 / bc2,
        before_max=one,
        gradient=(1 - mu) / (1 - mu_product),
    )


def step_latex(convention: Convention, amsgrad: bool) -> str:
    """The step :math:`s_t` of ``step_coefficients`` written as LaTeX, for the docs.

    Follows the same branches as :func:`step_coefficients`, with :math:`r_t` the
    second moment divided by (:math:`v_t`, or AMSGrad's maximum).
    """
    r = "r_t" if amsgrad else "v_t"
    if amsgrad and not convention.amsgrad_bias_correction:
        return f"\\dfrac{{m_t}}{{\\sqrt{{{r} + \\bar\\epsilon}} + \\epsilon}}"
    if convention.epsilon_hat:
        return (
            f"\\dfrac{{\\sqrt{{c_2}}}}{{c_1}} \\cdot "
            f"\\dfrac{{m_t}}{{\\sqrt{{{r} + \\bar\\epsilon}} + \\epsilon}}"
        )
    if amsgrad and convention.max_of_corrected:
        return f"\\dfrac{{m_t / c_1}}{{\\sqrt{{{r} + \\bar\\epsilon}} + \\epsilon}}"
    return f"\\dfrac{{m_t / c_1}}{{\\sqrt{{{r} / c_2 + \\bar\\epsilon}} + \\epsilon}}"
