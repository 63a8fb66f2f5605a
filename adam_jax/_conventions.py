"""The epsilon and AMSGrad conventions of Adam, as one table.

Every convention shares the moment recursions

.. math::

  m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) g_t, \\qquad
  v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) |g_t|^2,

with bias corrections :math:`c_1 = 1 - \\beta_1^t` and :math:`c_2 = 1 - \\beta_2^t`.
They differ in three places, which are the three columns of the table:

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

Resulting step :math:`s_t` (the update is :math:`-\\eta_t s_t`), with
:math:`r_t` the second moment used (:math:`v_t`, or the AMSGrad maximum):

- ``pytorch``: :math:`(m_t / c_1) / (\\sqrt{r_t / c_2 + \\bar\\epsilon} + \\epsilon)`,
  maximum over the raw moment.
- ``optax``: :math:`(m_t / c_1) / (\\sqrt{r_t + \\bar\\epsilon} + \\epsilon)`, with
  :math:`r_t` bias-corrected before the maximum.
- ``keras``: :math:`\\sqrt{c_2}/c_1 \\cdot m_t / (\\sqrt{r_t + \\bar\\epsilon} + \\epsilon)`,
  maximum over the raw moment.
- ``paper``: Adam as ``pytorch``; AMSGrad
  :math:`m_t / (\\sqrt{r_t + \\bar\\epsilon} + \\epsilon)`.

Without AMSGrad, ``pytorch``, ``optax`` and ``paper`` are the same optimizer.
"""

from typing import NamedTuple

import jax.numpy as jnp


class Convention(NamedTuple):
    """One row of the conventions table (see the module docstring)."""

    name: str
    max_of_corrected: bool
    epsilon_hat: bool
    amsgrad_bias_correction: bool
    reference: str


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention("pytorch", False, False, True, "torch.optim.Adam / AdamW"),
        Convention("optax", True, False, True, "optax.adam / amsgrad / adamw"),
        Convention("keras", False, True, True, "keras.optimizers.Adam / AdamW"),
        Convention(
            "paper",
            False,
            False,
            False,
            "Kingma & Ba (2015) Alg. 1; Reddi et al. (2018) Alg. 2",
        ),
    )
}


def get_convention(name: str) -> Convention:
    """Returns the row of ``CONVENTIONS`` called ``name``; raises ValueError."""
    try:
        return CONVENTIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"convention must be one of {sorted(CONVENTIONS)}, got {name!r}."
        ) from None


class StepCoefficients(NamedTuple):
    """Scalars of one step: ``step = numerator * m / (sqrt(r * inside + eps_root) + eps)``.

    ``before_max`` scales :math:`v_t` before AMSGrad's maximum (1 or 1/c2).
    """

    numerator: jnp.ndarray
    inside: jnp.ndarray
    before_max: jnp.ndarray


def step_coefficients(
    convention: Convention, amsgrad: bool, bc1: jnp.ndarray, bc2: jnp.ndarray
) -> StepCoefficients:
    """The scalar coefficients of a step, computed once per step.

    Args:
      convention: a row of ``CONVENTIONS``.
      amsgrad: whether the second moment is AMSGrad's running maximum.
      bc1: :math:`1 - \\beta_1^t`, in float32 or wider.
      bc2: :math:`1 - \\beta_2^t`, in float32 or wider.

    Returns:
      The ``StepCoefficients`` of this step, scalars of ``bc1``'s dtype.
    """
    one = jnp.ones_like(bc1)
    if amsgrad and not convention.amsgrad_bias_correction:
        return StepCoefficients(one, one, one)
    if convention.epsilon_hat:
        return StepCoefficients(jnp.sqrt(bc2) / bc1, one, one)
    if amsgrad and convention.max_of_corrected:
        return StepCoefficients(1 / bc1, one, 1 / bc2)
    return StepCoefficients(1 / bc1, 1 / bc2, one)
