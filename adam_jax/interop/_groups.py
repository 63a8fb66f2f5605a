"""Param groups: one description, from which the optax optimizer and each framework's follow."""

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import optax

from adam_jax import _conventions
from adam_jax._alias import from_spec
from adam_jax._spec import AdamSpec
from adam_jax._transform import ScaleByAdamState
from adam_jax.interop._tree import Path, find_states, key_str, leaves_by_path, path_str


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """Params that share hyperparameters, as a framework's param group.

    Attributes:
      spec: the group's ``adam_jax.AdamSpec`` (the arguments of
        :func:`adam_jax.adam`); the learning rate is a constant, as frameworks
        keep a schedule's state outside the optimizer's (``torch.optim.lr_scheduler``),
        so a converted run continues with the group's current learning rate.
      paths: the params in the group, as paths of the params tree, in the
        framework's order (``torch.optim``'s parameter indices follow it).
    """

    spec: AdamSpec
    paths: tuple[Path, ...]


def group_label(index: int) -> str:
    """The ``optax.partition`` label of the ``index``-th group."""
    return f"group{index}"


def build_optimizer(groups: Sequence[ParamGroup], params) -> optax.GradientTransformation:
    """One optax optimizer for every group: ``adam_jax.adam``, or ``optax.partition`` of them.

    Args:
      groups: the param groups; every leaf of ``params`` must be in exactly one.
      params: the params tree the optimizer will update.

    Returns:
      The group's ``adam_jax.adam`` when there is one group, else
      ``optax.partition`` of one ``adam_jax.adam`` per group, labelled
      ``"group0"``, ``"group1"``, ... by params path.

    Raises:
      ValueError: naming the first params leaf in no group or in two, or a
        group's path that is not in ``params``.
    """
    if not groups:
        raise ValueError("there must be at least one param group.")
    label_of: dict[Path, str] = {}
    for i, group in enumerate(groups):
        for path in group.paths:
            if path in label_of:
                raise ValueError(
                    f"'{path_str(path)}' is in param group {label_of[path]} and in "
                    f"{group_label(i)}."
                )
            label_of[path] = group_label(i)
    leaves = set(leaves_by_path(params))
    for path in label_of:
        if path not in leaves:
            raise ValueError(f"param group path '{path_str(path)}' is not in the params tree.")
    for path in leaves:
        if path not in label_of:
            raise ValueError(f"params leaf '{path_str(path)}' is in no param group.")
    if len(groups) == 1:
        return from_spec(groups[0].spec)

    def labels(tree):
        return jax.tree_util.tree_map_with_path(
            lambda kp, _: label_of[tuple(key_str(k) for k in kp)], tree
        )

    transforms = {group_label(i): from_spec(g.spec) for i, g in enumerate(groups)}
    return optax.partition(transforms, labels)


def check_same_optimizer(source: str, target: str, amsgrad: bool, where: str) -> None:
    """Raises unless a run in convention ``source`` continues exactly in ``target``.

    Derived from the conventions table: with AMSGrad the maximum must mean the
    same thing in both (``max_of_corrected``), and the step must be the same
    (``epsilon_hat``, and with AMSGrad ``amsgrad_bias_correction``).

    Args:
      source: the convention of the state being converted.
      target: the convention it would continue in.
      amsgrad: whether the run keeps AMSGrad's maximum.
      where: the conversion, for the message (``"to torch.optim.Adam"``).
    """
    ours = _conventions.get_convention(source)
    theirs = _conventions.get_convention(target)
    if amsgrad and ours.max_of_corrected != theirs.max_of_corrected:
        if ours.max_of_corrected:
            what, approx = (
                "the maximum of the bias-corrected second moment, max_s v_s / (1 - b2^s)",
                "nu_max * (1 - b2^t) is an upper bound of the raw maximum max_s v_s (equal only "
                "if the maximum was reached at the last step t), so the continued run would "
                "divide by a larger denominator and take smaller steps until v_t overtakes it",
            )
        else:
            what, approx = (
                "the maximum of the raw second moment, max_s v_s",
                "nu_max / (1 - b2^t) is a lower bound of the corrected maximum "
                "max_s v_s / (1 - b2^s) (early steps have small 1 - b2^s), so the continued "
                "run would take larger steps than the original would have",
            )
        raise ValueError(
            f"cannot convert an AMSGrad state {where} exactly: convention {source!r} keeps "
            f"{what}, convention {target!r} the other maximum, which cannot be recovered "
            f"from it. An approximate conversion would change the trajectory: {approx}."
        )
    if ours.epsilon_hat != theirs.epsilon_hat or (
        amsgrad and ours.amsgrad_bias_correction != theirs.amsgrad_bias_correction
    ):
        raise ValueError(
            f"a run in convention {source!r} would continue {where} as a different optimizer, "
            f"convention {target!r} (see adam_jax.CONVENTIONS): the state would convert, the "
            "trajectory would not. Pass a spec in the framework's convention to accept "
            "that change on purpose."
        )


class Converted(NamedTuple):
    """A run converted into adam_jax.

    Attributes:
      params: the params tree (nested dicts, by the name map's paths).
      optimizer: the optax optimizer (``adam_jax.adam``, or ``optax.partition``
        of one per group), see :func:`adam_jax.interop.build_optimizer`.
      opt_state: its state, holding the framework's steps and moments.
      groups: the :class:`adam_jax.interop.ParamGroup` list, to convert back.
    """

    params: Any
    optimizer: optax.GradientTransformation
    opt_state: optax.OptState
    groups: list[ParamGroup]


def step_counts(opt_state: optax.OptState) -> dict[str, int]:
    """The step count of each param group, read from an adam_jax optimizer's state.

    Args:
      opt_state: the state of :func:`adam_jax.interop.build_optimizer`'s optimizer
        (a converted run's ``opt_state``): ``optax.partition`` of one adam_jax
        optimizer per group, or one adam_jax optimizer's state for one group.

    Returns:
      ``{group label: steps taken}``, labels ``"group0"``, ``"group1"``, ... as
      :func:`adam_jax.interop.build_optimizer` gives them; ``{"group0": t}`` for
      a state of one group.

    Raises:
      ValueError: when a group's state (or the state) holds no Adam state, or
        more than one.

    Examples:
      >>> import jax.numpy as jnp, adam_jax
      >>> from adam_jax import interop
      >>> params = {"w": jnp.ones(2), "b": jnp.zeros(2)}
      >>> groups = [interop.ParamGroup(adam_jax.AdamSpec(0.1), (("w",),)),
      ...           interop.ParamGroup(adam_jax.AdamSpec(0.01), (("b",),))]
      >>> opt = interop.build_optimizer(groups, params)
      >>> _, state = opt.update(params, opt.init(params), params)
      >>> interop.step_counts(state)
      {'group0': 1, 'group1': 1}

    References:
      DeepMind, `optax.partition
      <https://optax.readthedocs.io/en/latest/api/combining_optimizers.html#optax.partition>`_,
      2024.
    """

    def count(state, where: str) -> int:
        found = find_states(state, (ScaleByAdamState,))
        if len(found) != 1:
            raise ValueError(f"{where} holds {len(found)} adam_jax Adam states, expected one.")
        return int(found[0].count)

    if isinstance(opt_state, optax.transforms.PartitionState):
        return {
            label: count(inner, f"param group {label!r}")
            for label, inner in opt_state.inner_states.items()
        }
    return {group_label(0): count(opt_state, "the optimizer state")}
