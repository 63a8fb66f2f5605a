"""``AdamSpec``: the one validated description of an Adam-family optimizer.

Every backend and tool reads it: the optax chain (:func:`adam_jax.from_spec`,
behind :func:`adam_jax.adam` and friends), the direction
(:func:`adam_jax.scale_by_adam`), the fused CPU kernel
(:func:`adam_jax.fused_adam`), the diagnostics (:func:`adam_jax.epsilon_report`)
and the interop converters. It is plain data: it imports nothing above the
conventions table and the checks. The public factories keep explicit signatures
(``optax.inject_hyperparams`` reads them); a test checks that each matches the
fields below.
"""

import dataclasses
from typing import Any

import jax
import optax

from adam_jax import _validation
from adam_jax._conventions import ConventionName, get_convention
from adam_jax._quantize import BlockQuantization
from adam_jax._rounding import ParamRounding


@dataclasses.dataclass(frozen=True)
class AdamSpec:
    """Hyperparameters, convention and options of one Adam-family optimizer.

    Validated once, at construction: a wrong type raises ``TypeError``, a value
    out of range ``ValueError``, each naming the argument, its value and what is
    allowed. Traced values and schedules are accepted unchecked. The fields mean
    what the arguments of :func:`adam_jax.adam` and :func:`adam_jax.nadam` mean.

    ``None`` for ``eps``, ``weight_decay`` or (NAdam's) ``learning_rate`` takes
    the convention's framework default when the spec is built (the row of
    ``adam_jax.CONVENTIONS``: ``default_eps``; ``default_adamw_weight_decay`` with
    decoupled weight decay, else 0; ``default_nadam_learning_rate``); the spec
    then holds the number.
    """

    learning_rate: optax.ScalarOrSchedule | None = 1e-3
    b1: jax.typing.ArrayLike = 0.9
    b2: jax.typing.ArrayLike = 0.999
    eps: jax.typing.ArrayLike | None = None
    eps_root: jax.typing.ArrayLike = 0.0
    amsgrad: bool = False
    nesterov: bool = False
    momentum_decay: jax.typing.ArrayLike | None = None
    convention: ConventionName = "pytorch"
    weight_decay: optax.ScalarOrSchedule | None = 0.0
    decoupled_weight_decay: bool = False
    mask: Any = None
    maximize: bool = False
    mu_dtype: Any = None
    nu_dtype: Any = None
    quantized_state: BlockQuantization | None = None
    param_rounding: ParamRounding | None = None
    rounding_seed: int | None = None

    def __post_init__(self):
        convention = get_convention(self.convention)
        for flag in ("amsgrad", "nesterov", "decoupled_weight_decay", "maximize"):
            _validation.check_bool(flag, getattr(self, flag))
        if self.learning_rate is None and self.nesterov:
            object.__setattr__(self, "learning_rate", convention.default_nadam_learning_rate)
        if self.eps is None:
            object.__setattr__(self, "eps", convention.default_eps)
        if self.weight_decay is None:
            default = convention.default_adamw_weight_decay if self.decoupled_weight_decay else 0.0
            object.__setattr__(self, "weight_decay", default)
        _validation.check_range("learning_rate", self.learning_rate, schedule_ok=True)
        _validation.check_decay("b1", self.b1)
        _validation.check_decay("b2", self.b2)
        _validation.check_eps("eps", self.eps)
        _validation.check_range("eps_root", self.eps_root)
        _validation.check_range("weight_decay", self.weight_decay, schedule_ok=True)
        _validation.check_mask(self.mask)
        _validation.check_dtype("mu_dtype", self.mu_dtype)
        _validation.check_dtype("nu_dtype", self.nu_dtype)
        if self.momentum_decay is not None:
            _validation.check_range("momentum_decay", self.momentum_decay)
            if not self.nesterov:
                raise ValueError(
                    f"momentum_decay={self.momentum_decay!r} is NAdam's; it needs nesterov=True "
                    "(adam_jax.nadam)."
                )
            if convention.nadam_momentum_decay is None:
                raise ValueError(
                    f"momentum_decay must be None with convention={self.convention!r} "
                    "(optax's Nesterov Adam keeps mu_t = b1), got "
                    f"{self.momentum_decay!r}."
                )
        self._check_low_memory()
        if self.nesterov and self.amsgrad:
            raise ValueError(
                "amsgrad=True with nesterov=True: NAdam has no AMSGrad variant in PyTorch, "
                "optax or Keras; choose one."
            )

    @property
    def nadam_momentum_decay(self):
        """NAdam's :math:`\\psi`: ``momentum_decay``, or the convention's default."""
        if self.momentum_decay is not None:
            return self.momentum_decay
        return get_convention(self.convention).nadam_momentum_decay

    @property
    def decays_weights(self) -> bool:
        """Whether the chain has a weight-decay link: False only for a Python 0
        (see ``_validation.is_static_zero``)."""
        return not _validation.is_static_zero(self.weight_decay)

    def replace(self, **changes) -> "AdamSpec":
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)

    def _check_low_memory(self) -> None:
        """``quantized_state``, ``param_rounding`` and ``rounding_seed``."""
        if self.quantized_state is not None:
            if not isinstance(self.quantized_state, BlockQuantization):
                raise TypeError(
                    "quantized_state must be None or adam_jax.BlockQuantization(block_size=..., "
                    f"min_size=...), got {self.quantized_state!r}."
                )
            for name in ("mu_dtype", "nu_dtype"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} with quantized_state: quantized moments "
                        f"are 8-bit codes (small leaves keep float32); leave {name} as None."
                    )
        allowed = (None, "stochastic", "compensated")
        if self.param_rounding not in allowed:
            raise ValueError(
                f"param_rounding must be one of {allowed}, got {self.param_rounding!r}."
            )
        if self.param_rounding == "stochastic":
            seed = self.rounding_seed
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
                raise TypeError(
                    "param_rounding='stochastic' needs rounding_seed, an int in [0, 2**32) "
                    f"(the key source: the key then lives in the state), got {seed!r}."
                )
        elif self.rounding_seed is not None:
            raise ValueError(
                f"rounding_seed={self.rounding_seed!r} is for param_rounding='stochastic', "
                f"got param_rounding={self.param_rounding!r}."
            )
