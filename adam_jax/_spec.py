"""``AdamSpec``: the one validated description of an Adam-family optimizer.

Every backend and tool is derived from it: the optax chain
(:func:`adam_jax.adam` and friends), the direction
(:func:`adam_jax.scale_by_adam`), the fused CPU kernel
(:func:`adam_jax.fused_adam`), the diagnostics
(:func:`adam_jax.epsilon_report`) and the interop converters. The public
factories keep explicit signatures (``optax.inject_hyperparams`` reads them);
a test checks that each matches the fields below.
"""

import dataclasses
from typing import Any

import jax
import optax

from adam_jax import _conventions, _validation
from adam_jax._conventions import Convention, ConventionName


@dataclasses.dataclass(frozen=True)
class AdamSpec:
    """Hyperparameters, convention and options of one Adam-family optimizer.

    Validated once, at construction: a wrong type raises ``TypeError``, a value
    out of range ``ValueError``, each naming the argument, its value and what is
    allowed. Traced values and schedules are accepted unchecked. The fields mean
    what the arguments of :func:`adam_jax.adam` and :func:`adam_jax.nadam` mean.
    """

    learning_rate: optax.ScalarOrSchedule = 1e-3
    b1: jax.typing.ArrayLike = 0.9
    b2: jax.typing.ArrayLike = 0.999
    eps: jax.typing.ArrayLike = 1e-8
    eps_root: jax.typing.ArrayLike = 0.0
    amsgrad: bool = False
    nesterov: bool = False
    momentum_decay: jax.typing.ArrayLike | None = None
    convention: ConventionName = "pytorch"
    weight_decay: optax.ScalarOrSchedule = 0.0
    decoupled_weight_decay: bool = False
    mask: Any = None
    maximize: bool = False
    mu_dtype: Any = None
    nu_dtype: Any = None

    def __post_init__(self):
        _validation.check_range("learning_rate", self.learning_rate, schedule_ok=True)
        _validation.check_decay("b1", self.b1)
        _validation.check_decay("b2", self.b2)
        _validation.check_eps("eps", self.eps)
        _validation.check_range("eps_root", self.eps_root)
        for flag in ("amsgrad", "nesterov", "decoupled_weight_decay", "maximize"):
            _validation.check_bool(flag, getattr(self, flag))
        _conventions.get_convention(self.convention)
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
            if self.row.nadam_momentum_decay is None:
                raise ValueError(
                    f"momentum_decay must be None with convention={self.convention!r} "
                    "(optax's Nesterov Adam keeps mu_t = b1), got "
                    f"{self.momentum_decay!r}."
                )
        if self.nesterov and self.amsgrad:
            raise ValueError(
                "amsgrad=True with nesterov=True: NAdam has no AMSGrad variant in PyTorch, "
                "optax or Keras; choose one."
            )

    @property
    def row(self) -> Convention:
        """The convention's row of ``adam_jax.CONVENTIONS``."""
        return _conventions.CONVENTIONS[self.convention]

    @property
    def nadam_momentum_decay(self):
        """NAdam's :math:`\\psi`: ``momentum_decay``, or the convention's default."""
        if self.momentum_decay is not None:
            return self.momentum_decay
        return self.row.nadam_momentum_decay

    @property
    def decays_weights(self) -> bool:
        """Whether the chain has a weight-decay link.

        False only for a Python number equal to 0; arrays count as nonzero even
        when they hold 0, so that the chain has the same structure whether
        ``optax.inject_hyperparams`` passes a concrete or a traced value.
        """
        return is_nonzero(self.weight_decay)

    def replace(self, **changes) -> "AdamSpec":
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)

    def optimizer(self) -> "Optimizer":
        """The optax optimizer this spec describes (what :func:`adam_jax.adam` returns)."""
        from adam_jax._chain import adam_optimizer  # the chain is built on this module

        return adam_optimizer(self)


def is_nonzero(value) -> bool:
    """False only for a Python number equal to 0 (see ``AdamSpec.decays_weights``)."""
    return not (isinstance(value, (int, float)) and value == 0)


class Optimizer(optax.GradientTransformationExtraArgs):
    """An ``optax.GradientTransformationExtraArgs`` that knows its ``AdamSpec``.

    It is the optax transformation (``init``, ``update``) that
    :func:`adam_jax.adam`, ``amsgrad``, ``adamw`` and ``nadam`` return; it also
    carries ``spec``, from which :func:`adam_jax.epsilon_report` reads the
    settings (pass the optimizer, never eps or the convention by hand).
    """

    spec: AdamSpec  # set by ``with_spec``; instances of this NamedTuple subclass have a __dict__

    def epsilon_report(self, opt_state, *, per_leaf: bool = False) -> dict:
        """:func:`adam_jax.epsilon_report` of ``opt_state`` for this optimizer."""
        from adam_jax._diagnostics import epsilon_report

        return epsilon_report(opt_state, self, per_leaf=per_leaf)


def with_spec(tx: optax.GradientTransformation, spec: AdamSpec) -> Optimizer:
    """``tx`` as an ``Optimizer`` carrying ``spec``."""
    optimizer = Optimizer(tx.init, tx.update)
    optimizer.spec = spec
    return optimizer
