"""Construction-time checks of static hyperparameters.

Values that are traced (inside ``jit``, or injected by
``optax.inject_hyperparams``) and schedules are not checked: they are not known
when the optimizer is built.
"""

import math

import jax
import numpy as np


def _static_value(value):
    """``value`` as a Python float, or None when it is traced or a schedule."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return None
    array = np.asarray(value)
    if array.shape != ():
        raise ValueError(f"expected a scalar hyperparameter, got shape {array.shape}.")
    return float(array)


def check_range(
    name: str,
    value,
    *,
    low: float = 0.0,
    high: float = math.inf,
    high_inclusive: bool = True,
) -> None:
    """Raises ValueError unless ``low <= value <= high`` (or ``< high``)."""
    x = _static_value(value)
    if x is None:
        return
    closing = "]" if high_inclusive else ")"
    allowed = f"[{low:g}, {high:g}{closing}"
    inside = low <= x and (x <= high if high_inclusive else x < high)
    if not inside or math.isnan(x):
        raise ValueError(f"{name} must be in {allowed}, got {value!r}.")


def check_eps(name: str, value) -> None:
    """Raises ValueError unless ``value`` is finite, >= 0 and nonzero in float32."""
    check_range(name, value, high=math.inf, high_inclusive=False)
    x = _static_value(value)
    if x is not None and x > 0 and np.float32(x) == 0:
        raise ValueError(
            f"{name}={value!r} rounds to 0 in float32; use 0 or a value of at "
            f"least {np.finfo(np.float32).smallest_subnormal:g}."
        )


def check_positive(name: str, value) -> None:
    """Raises ValueError unless ``0 < value < inf``."""
    x = _static_value(value)
    if x is not None and not 0 < x < math.inf:
        raise ValueError(f"{name} must be in (0, inf), got {value!r}.")


def check_bool(name: str, value) -> None:
    """Raises ValueError unless ``value`` is a bool (a static flag)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}.")


def check_moments(b1, b2, amsgrad) -> None:
    """The arguments every Adam-type direction shares."""
    check_range("b1", b1, high=1.0, high_inclusive=False)
    check_range("b2", b2, high=1.0, high_inclusive=False)
    check_bool("amsgrad", amsgrad)


def check_epsilons(eps, eps_root) -> None:
    """Adam's ``eps`` (outside the square root) and ``eps_root`` (inside)."""
    check_eps("eps", eps)
    check_range("eps_root", eps_root)


def check_optimizer(learning_rate, weight_decay) -> None:
    """The arguments every optimizer (direction, decay, learning rate) shares."""
    check_range("learning_rate", learning_rate)
    check_range("weight_decay", weight_decay)
