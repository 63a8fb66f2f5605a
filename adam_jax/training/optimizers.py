"""The ``--optimizer`` registry, built from adam_jax's public factories.

Each entry maps the run's configuration (its flags) to one adam_jax optimizer.
Add an entry to ``OPTIMIZERS`` and it is a ``--optimizer`` choice.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

import adam_jax
from adam_jax.training.tasks.base import ConfigError

# The optimizer's hyperparameter flags: config attribute -> flag. Their values
# are checked by the factory itself, one flag at a time (see ``check``).
HYPERPARAMETER_FLAGS = {
    "lr": "--lr",
    "b1": "--b1",
    "b2": "--b2",
    "eps": "--eps",
    "eps_root": "--eps-root",
    "weight_decay": "--weight-decay",
    "mu_dtype": "--mu-dtype",
    "nu_dtype": "--nu-dtype",
    "convention": "--convention",
    "momentum_decay": "--momentum-decay",
    "mask": "--weight-decay-mask",
}
WEIGHT_DECAY_MASKS = ("all", "matrices")  # --weight-decay-mask: which params are decayed


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
    """How to build one ``--optimizer`` choice.

    Attributes:
      factory: the adam_jax factory.
      has_epsilon: whether ``--eps``, ``--eps-root`` and ``--convention`` apply
        (and ``eps_dominated`` is logged).
      has_momentum_decay: whether ``--momentum-decay`` applies (NAdam's schedule).
    """

    factory: Callable[..., optax.GradientTransformation]
    has_epsilon: bool
    has_momentum_decay: bool = False

    def absent_flags(self) -> tuple[str, ...]:
        """The flags of hyperparameters this optimizer does not have (refused when given)."""
        missing = () if self.has_epsilon else ("--eps", "--eps-root", "--convention")
        return missing + (() if self.has_momentum_decay else ("--momentum-decay",))

    def kwargs(self, config, learning_rate, mask: Any = None) -> dict:
        """The factory's keyword arguments from ``config``; unset flags keep its defaults.
        ``mask``: the weight-decay mask (a tree of bools or a callable), None decays all."""
        kwargs = {"learning_rate": learning_rate, "b1": config.b1, "b2": config.b2}
        kwargs |= {"mu_dtype": config.mu_dtype, "nu_dtype": config.nu_dtype}
        if self.has_epsilon:
            kwargs |= {"eps": config.eps, "eps_root": config.eps_root}
            kwargs["convention"] = config.convention
        if config.weight_decay is not None:
            kwargs["weight_decay"] = config.weight_decay
        if self.has_momentum_decay:  # None: the convention's schedule
            kwargs["momentum_decay"] = config.momentum_decay
        if mask is not None:
            kwargs["mask"] = mask
        return kwargs


OPTIMIZERS = {
    "adam": OptimizerEntry(adam_jax.adam, True),
    "amsgrad": OptimizerEntry(adam_jax.amsgrad, True),
    "adamw": OptimizerEntry(adam_jax.adamw, True),
    "nadam": OptimizerEntry(adam_jax.nadam, True, has_momentum_decay=True),  # Dozat (2016)
    "adam_atan2": OptimizerEntry(adam_jax.adam_atan2, False),  # Everett et al. (2024)
}


def get_entry(name: str) -> OptimizerEntry:
    """The entry of ``--optimizer name``; ``ConfigError`` naming the flag if unknown."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ConfigError(
            "--optimizer", f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}"
        ) from None


def learning_rate(config) -> optax.ScalarOrSchedule:
    """``--lr`` as a float (``--schedule constant``) or an optax schedule of the step count."""
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.lr, config.decay_steps)
    return optax.warmup_cosine_decay_schedule(
        0.0, config.lr, config.warmup_steps, config.decay_steps, end_value=0.0
    )


def decay_matrices(params) -> Any:
    """``--weight-decay-mask matrices``: params of two or more axes (weights, embeddings) are
    decayed, vectors (biases, norms) are not, as in nanoGPT."""
    return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


def weight_decay_mask(config) -> Callable | None:
    """The mask of ``--weight-decay-mask`` as a callable of the params; None for ``all``."""
    return decay_matrices if config.weight_decay_mask == "matrices" else None


def make_optimizer(config, mask: Any = None) -> optax.GradientTransformation:
    """The optimizer of ``config.optimizer`` with the run's hyperparameters.

    ``mask``: its weight-decay mask, :func:`weight_decay_mask` of the run (or the packed
    layout's mask of it, one bool per buffer); None decays every param.
    """
    entry = get_entry(config.optimizer)
    return entry.factory(**entry.kwargs(config, learning_rate(config), mask))


def check(config) -> None:
    """Builds the optimizer; a value its factory rejects raises ``ConfigError`` naming its flag.

    Each hyperparameter is first passed alone (the others at the factory's
    defaults), so the flag at fault is known from which call fails, not read
    from the message; a combination that fails only together is reported
    against ``--optimizer``.
    """
    entry = get_entry(config.optimizer)
    mask = weight_decay_mask(config)
    full = entry.kwargs(config, config.lr, mask)
    for name, value in full.items():
        flag = HYPERPARAMETER_FLAGS["lr" if name == "learning_rate" else name]
        if value is None:
            continue
        try:
            entry.factory(**{name: value})
        except (ValueError, TypeError) as e:
            raise ConfigError(flag, str(e)) from e
    try:
        make_optimizer(config, mask)
    except (ValueError, TypeError) as e:
        raise ConfigError("--optimizer", f"{config.optimizer}: {e}") from e


def epsilon_report(config, optimizer) -> Callable | None:
    """``opt_state -> adam_jax.epsilon_report(opt_state, optimizer)``.

    ``None`` for optimizers without an epsilon. This is the training code's one
    call of ``adam_jax.epsilon_report``; ``optimizer`` may be built inside a
    trace from traced hyperparameters (the epsilon sweep vmaps over them).
    """
    if not get_entry(config.optimizer).has_epsilon:
        return None
    return lambda opt_state: adam_jax.epsilon_report(opt_state, optimizer)
