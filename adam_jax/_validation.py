"""Construction-time checks of static hyperparameters.

Every check names the argument, the value it got and what is allowed. A wrong
type (a string, ``None``, a bool where a number belongs) raises ``TypeError``;
a number outside its range raises ``ValueError``. Values that are traced
(inside ``jit``, or injected by ``optax.inject_hyperparams``) and schedules are
not checked: they are not known when the optimizer is built.
"""

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def _expected(schedule_ok: bool) -> str:
    return "a real number" + (
        " or a schedule (a callable of the step count)" if schedule_ok else ""
    )


def static_value(name: str, value, *, schedule_ok: bool = False) -> float | None:
    """``value`` as a Python float; None when it is traced or (if allowed) a schedule.

    Raises:
      TypeError: for anything that is not a real number, a real scalar array,
        or (with ``schedule_ok``) a callable; bools included.
      ValueError: for an array that is not a scalar.
    """
    if _is_traced(value):
        return None
    expected = _expected(schedule_ok)
    if callable(value):
        if not schedule_ok:
            raise TypeError(f"{name} must be {expected}, got the callable {value!r}.")
        return None  # a schedule: check_range checks its value at step 0
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be {expected}, got {value!r}.")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        dtype = np.dtype(value.dtype)
        real = np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
        if not real and dtype != jnp.bfloat16:
            raise TypeError(f"{name} must be {expected}, got an array of dtype {dtype}.")
        if np.shape(value) != ():
            raise ValueError(f"{name} must be a scalar, got an array of shape {np.shape(value)}.")
        return float(np.asarray(value, np.float64))
    raise TypeError(f"{name} must be {expected}, got {value!r} of type {type(value).__name__}.")


def _schedule_at_zero(name: str, schedule) -> float | None:
    """A schedule's value at step 0 (None when traced), called once.

    A callable that cannot take a step count, or gives no real number, is refused here
    rather than at the first step.
    """
    expected = _expected(schedule_ok=True)
    try:
        value = schedule(0)
    except Exception as e:  # noqa: BLE001 - any failure means it is not a schedule
        raise TypeError(
            f"{name} must be {expected}; calling {schedule!r} with step 0 raised {e!r}."
        ) from None
    try:
        return static_value(f"{name}(0)", value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be {expected}; {e}") from None


def check_range(
    name: str,
    value,
    *,
    low: float = 0.0,
    high: float = math.inf,
    high_inclusive: bool = False,
    schedule_ok: bool = False,
) -> float | None:
    """Raises unless ``low <= value <= high`` (or ``< high``), NaN excluded.

    The default range is ``[0, inf)``: finite and non-negative. A schedule's value at
    step 0 is checked in its place. Returns the value as a float (None when traced or a
    schedule), for the checks that follow.
    """
    x = static_value(name, value, schedule_ok=schedule_ok)
    if x is None and callable(value) and not _is_traced(value):
        at_zero = _schedule_at_zero(name, value)
        if at_zero is not None:
            _check_interval(f"{name}(0)", at_zero, at_zero, low, high, high_inclusive)
        return None
    if x is not None:
        _check_interval(name, value, x, low, high, high_inclusive)
    return x


def _check_interval(name: str, value, x: float, low, high, high_inclusive) -> None:
    closing = "]" if high_inclusive else ")"
    inside = low <= x and (x <= high if high_inclusive else x < high)
    if not inside:  # NaN compares false, so it lands here too
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{closing}, got {value!r}.")
    if math.isfinite(x) and abs(x) > float(np.finfo(np.float32).max):
        raise ValueError(
            f"{name}={value!r} overflows float32 (max {float(np.finfo(np.float32).max):.4g}), "
            "where 16- and 32-bit params compute; use a smaller value."
        )


def check_decay(name: str, value) -> None:
    """A moment's decay: in [0, 1), and below 1 once rounded to float32.

    ``1 - decay`` must not vanish in the float32 arithmetic of 16- and 32-bit
    params: 0.99999999 is 1.0 in float32, and every step would be ``0/0``.
    """
    x = check_range(name, value, high=1.0)
    if x is not None and np.float32(x) >= 1:
        raise ValueError(
            f"{name}={value!r} rounds to 1.0 in float32, so 1 - {name} = 0; use at most "
            f"{float(np.nextafter(np.float32(1), np.float32(0))):.9g}."
        )


def check_eps(name: str, value) -> None:
    """Raises unless ``value`` is finite, >= 0 and nonzero in float32."""
    x = check_range(name, value)
    if x is not None and x > 0 and np.float32(x) == 0:
        raise ValueError(
            f"{name}={value!r} rounds to 0 in float32; use 0 or a value of at "
            f"least {np.finfo(np.float32).smallest_subnormal:g}."
        )


def check_positive(name: str, value) -> None:
    """Raises unless ``0 < value < inf``."""
    x = static_value(name, value)
    if x is not None and not 0 < x < math.inf:
        raise ValueError(f"{name} must be in (0, inf), got {value!r}.")
    check_range(name, value)  # and finite in float32


def check_bool(name: str, value) -> None:
    """Raises TypeError unless ``value`` is a bool (a static flag).

    ``maximize="no"`` would otherwise count as true.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")


def check_dtype(name: str, value) -> None:
    """A moment's storage dtype: None (the default rule) or a real floating dtype."""
    if value is None:
        return
    allowed = f"None or one of {list(_FLOAT_DTYPES)}"
    if isinstance(value, (numbers.Number, np.ndarray, np.generic, jax.Array)):
        raise TypeError(f"{name} must be {allowed} (a dtype, not a value), got {value!r}.")
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(
            f"{name} must be None or one of {list(_FLOAT_DTYPES)}, got {value!r}."
        ) from None
    if dtype.name not in _FLOAT_DTYPES:
        raise ValueError(f"{name} must be None or one of {list(_FLOAT_DTYPES)}, got {value!r}.")


def checked_mask(mask):
    """``mask`` as given, or, for a callable, one that checks what it returns.

    A callable mask can only be checked once it has the params (at ``init``): a
    failing call, or a result that is not a tree of bools, raises there, naming
    ``mask``, instead of an error from deep inside optax.
    """
    if not callable(mask):
        return mask

    def call(params):
        try:
            tree = mask(params)
        except Exception as e:  # noqa: BLE001 - any failure of the user's callable
            raise TypeError(
                f"mask must be a callable params -> tree of bools; mask(params) raised {e!r}."
            ) from None
        if tree is None or not jax.tree.leaves(tree):
            raise TypeError(f"mask(params) must return a tree of bools, got {tree!r}.")
        check_mask(tree)
        return tree

    return call


def check_mask(value) -> None:
    """``mask`` for weight decay: None, a callable of the params, or a tree of bools."""
    if value is None or callable(value):
        return
    for leaf in jax.tree.leaves(value):
        if not isinstance(leaf, (bool, np.bool_)):
            raise TypeError(
                "mask must be None, a callable params -> tree of bools, or a tree of bools; "
                f"got a tree with the leaf {leaf!r}."
            )


def is_static_zero(value) -> bool:
    """True only for a Python number equal to 0.

    Arrays count as nonzero even when they hold 0, so that a chain has the same
    structure whether ``optax.inject_hyperparams`` passes a concrete or a traced value.
    """
    return isinstance(value, (int, float)) and value == 0
