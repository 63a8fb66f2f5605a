"""The ``--optimizer`` registry, built from adam_jax's public factories.

Each entry maps the run's configuration (its flags) to one adam_jax optimizer.
Add an entry to ``OPTIMIZERS`` and it is a ``--optimizer`` choice. The low-memory flags
(``--state-dtype``, ``--quant-block-size``, ``--quant-min-size``, ``--stochastic-rounding``,
``--compensated-rounding``) become the factories' ``mu_dtype``/``nu_dtype``,
``quantized_state``, ``param_rounding`` and ``rounding_seed`` (docs/memory.md).
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
# The factories' low-memory arguments, checked apart (``check_low_memory``): their flags'
# relations to each other and to --param-dtype come first.
LOW_MEMORY_ARGUMENTS = ("quantized_state", "param_rounding", "rounding_seed")
SIXTEEN_BIT = ("bfloat16", "float16")
# --stochastic-rounding's seed is --rng-seed + this: never an int the weights' init takes
# (--rng-seed < 2**31), so the rounding's key is a stream apart from theirs.
ROUNDING_SEED_OFFSET = 2**31
# --quant-rounding stochastic's seed: --rng-seed + this, a third stream.
MOMENT_ROUNDING_SEED_OFFSET = 2**30


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
    """How to build one ``--optimizer`` choice.

    Attributes:
      factory: the adam_jax factory.
      has_epsilon: whether ``--eps``, ``--eps-root`` and ``--convention`` apply
        (and ``eps_dominated`` is logged).
      has_momentum_decay: whether ``--momentum-decay`` applies (NAdam's schedule).
      has_low_memory: whether the factory takes ``quantized_state`` and ``param_rounding``
        (``--state-dtype 8bit``, the rounding flags).
    """

    factory: Callable[..., optax.GradientTransformation]
    has_epsilon: bool
    has_momentum_decay: bool = False
    has_low_memory: bool = True

    def absent_flags(self) -> tuple[str, ...]:
        """The flags of hyperparameters this optimizer does not have (refused when given)."""
        missing = () if self.has_epsilon else ("--eps", "--eps-root", "--convention")
        return missing + (() if self.has_momentum_decay else ("--momentum-decay",))

    def kwargs(self, config, learning_rate, mask: Any = None) -> dict:
        """The factory's keyword arguments from ``config``; unset flags keep its defaults.
        ``mask``: the weight-decay mask (a tree of bools or a callable), None decays all."""
        kwargs = {"learning_rate": learning_rate, "b1": config.b1, "b2": config.b2}
        float_state = config.state_dtype not in (None, "8bit")
        kwargs["mu_dtype"] = config.state_dtype if float_state else config.mu_dtype
        kwargs["nu_dtype"] = config.state_dtype if float_state else config.nu_dtype
        if config.state_dtype == "8bit":
            kwargs["quantized_state"] = block_quantization(config)
        if config.stochastic_rounding:
            kwargs["param_rounding"] = "stochastic"
            kwargs["rounding_seed"] = ROUNDING_SEED_OFFSET + config.rng_seed
        elif config.compensated_rounding:
            kwargs["param_rounding"] = "compensated"
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
    # Everett et al. (2024)
    "adam_atan2": OptimizerEntry(adam_jax.adam_atan2, False, has_low_memory=False),
}


def get_entry(name: str) -> OptimizerEntry:
    """The entry of ``--optimizer name``; ``ConfigError`` naming the flag if unknown."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ConfigError(
            "--optimizer", f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}"
        ) from None


def block_quantization(config) -> adam_jax.BlockQuantization:
    """``--state-dtype 8bit``'s ``BlockQuantization``: ``--quant-block-size``,
    ``--quant-min-size`` and ``--quant-rounding``, the library's defaults where unset; the
    stochastic rounding's seed is ``--rng-seed`` + ``MOMENT_ROUNDING_SEED_OFFSET``."""
    given = {
        "block_size": config.quant_block_size,
        "min_size": config.quant_min_size,
        "rounding": config.quant_rounding,
    }
    seed = MOMENT_ROUNDING_SEED_OFFSET + config.rng_seed
    return adam_jax.BlockQuantization(
        **{k: v for k, v in given.items() if v is not None}, seed=seed
    )


def check_low_memory(config) -> None:
    """Checks the low-memory flags against each other, ``--param-dtype`` and the optimizer.

    Raises:
      ConfigError: naming the flag at fault (and the one it conflicts with), or
        ``--quant-block-size``/``--quant-min-size`` with ``BlockQuantization``'s message.
    """
    state = config.state_dtype
    for moment in ("mu_dtype", "nu_dtype"):
        given = getattr(config, moment)
        if state is not None and given is not None:
            flag = "--" + moment.replace("_", "-")
            raise ConfigError(
                "--state-dtype",
                f"{state} sets both moments' storage; it conflicts with {flag} {given} "
                f"(give --state-dtype or {flag}, not both)",
            )
    for name in ("block_size", "min_size", "rounding"):
        value = getattr(config, f"quant_{name}")
        if value is None:
            continue
        flag = f"--quant-{name.replace('_', '-')}"
        if state != "8bit":
            raise ConfigError(flag, f"applies only with --state-dtype 8bit, got {state or 'none'}")
        try:
            adam_jax.BlockQuantization(**{name: value})
        except (ValueError, TypeError) as e:
            raise ConfigError(flag, str(e)) from e
    switches = {
        "--stochastic-rounding": config.stochastic_rounding,
        "--compensated-rounding": config.compensated_rounding,
    }
    rounding = [flag for flag, given in switches.items() if given]
    if len(rounding) == 2:
        raise ConfigError(rounding[1], f"not allowed with {rounding[0]}: choose one rounding")
    low_memory = (["--state-dtype"] if state == "8bit" else []) + rounding
    if low_memory and not get_entry(config.optimizer).has_low_memory:
        value = "8bit " if low_memory[0] == "--state-dtype" else ""
        raise ConfigError(
            low_memory[0],
            f"{value}does not apply to --optimizer {config.optimizer} (its factory has no "
            "quantized_state or param_rounding); use adam, amsgrad, adamw or nadam",
        )
    if config.packed and (state == "8bit" or config.stochastic_rounding):
        raise ConfigError(
            "--packed",
            "cannot take --state-dtype 8bit (adam_jax.PackedLayout packs moments as flat "
            "buffers, not an 8-bit state's per-param codes and scales)"
            if state == "8bit"
            else "cannot take --stochastic-rounding: the rounding draws one key per array, "
            "so packed buffers would round with other bits than the tree (--packed promises "
            "the same bits); --compensated-rounding packs",
        )
    if state == "8bit" and config.param_dtype == "float64":
        raise ConfigError(
            "--state-dtype",
            "8bit quantizes float32 moments; it does not take --param-dtype float64 params",
        )
    if rounding and config.param_dtype not in SIXTEEN_BIT:
        raise ConfigError(
            rounding[0],
            f"rounds 16-bit params (--param-dtype bfloat16 or float16), got --param-dtype "
            f"{config.param_dtype}: {config.param_dtype} params take every update as they are "
            "(adam_jax would pass their updates through unchanged)",
        )


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

    The low-memory flags are checked first (:func:`check_low_memory`). Each
    hyperparameter is then passed alone (the others at the factory's
    defaults), so the flag at fault is known from which call fails, not read
    from the message; a combination that fails only together is reported
    against ``--optimizer``.
    """
    entry = get_entry(config.optimizer)
    check_low_memory(config)
    mask = weight_decay_mask(config)
    full = entry.kwargs(config, config.lr, mask)
    for name, value in full.items():
        if value is None or name in LOW_MEMORY_ARGUMENTS:
            continue
        flag = HYPERPARAMETER_FLAGS["lr" if name == "learning_rate" else name]
        if name in ("mu_dtype", "nu_dtype") and config.state_dtype is not None:
            flag = "--state-dtype"
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
