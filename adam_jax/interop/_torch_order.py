"""Which torch name each of a ``torch.optim`` optimizer's parameter indices is.

torch numbers an optimizer's parameters 0, 1, ... through its param groups (group 0's in the
order they were given to the optimizer, then group 1's, ...), and its state dict keeps the
numbers, not the names. The names come, the surest first, from:

1. each group's ``param_names``, which torch writes when the optimizer was built from
   ``model.named_parameters()``, or which :func:`adam_jax.interop.named_optimizer_state_dict`
   adds, matching the live parameters by identity;
2. ``param_names=`` written by hand, or, for one group, the model's state-dict order.

An order from 2 is checked against every signal the state dicts hold: the groups' sizes, the
moments' shapes at each index, the model's order within each group (the order of an optimizer
built from ``model.parameters()``, filtered), and that no two params of one shape sit in
groups that differ (hyperparameters or step), where a swap would go through unseen.
"""

from collections.abc import Mapping, Sequence
from typing import Any

Shape = tuple[int, ...]
SEARCH_LIMIT = 1_000_000  # dead states the search for another order may visit (see _fitting)
# Param group keys that choose torch's code path or belong to a scheduler: no effect on the maths.
IGNORED_GROUP_KEYS = frozenset(
    {"foreach", "fused", "capturable", "differentiable", "initial_lr", "params", "param_names"}
)


def named_optimizer_state_dict(model, optimizer) -> dict:
    """``optimizer.state_dict()`` with each param group's ``param_names``, read from ``model``.

    torch writes ``param_names`` only for an optimizer built from ``model.named_parameters()``;
    this finds the name of every parameter of ``optimizer`` in ``model.named_parameters()`` by
    identity, so that :func:`adam_jax.interop.from_torch` needs no ``param_names=``.

    Args:
      model: the ``torch.nn.Module`` whose parameters the optimizer updates.
      optimizer: the ``torch.optim.Adam``/``AdamW``/``NAdam`` (any ``torch.optim.Optimizer``).

    Returns:
      The optimizer's state dict, its groups' ``param_names`` set.

    Raises:
      ValueError: naming the param group and index of a parameter that is not ``model``'s, or
        when the groups already hold other names.

    Examples:
      >>> import torch
      >>> from adam_jax import interop
      >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
      >>> optimizer = torch.optim.Adam(
      ...     [{"params": [model[1].weight, model[0].weight]},
      ...      {"params": [model[0].bias, model[1].bias], "lr": 0.1}])
      >>> state = interop.named_optimizer_state_dict(model, optimizer)
      >>> [group["param_names"] for group in state["param_groups"]]
      [['1.weight', '0.weight'], ['0.bias', '1.bias']]

    References:
      PyTorch, `torch.optim.Optimizer.state_dict
      <https://pytorch.org/docs/stable/generated/torch.optim.Optimizer.state_dict.html>`_, 2024.
    """
    name_of = {id(p): name for name, p in model.named_parameters()}
    state = optimizer.state_dict()
    for index, (live, saved) in enumerate(
        zip(optimizer.param_groups, state["param_groups"], strict=True)
    ):
        names = []
        for position, param in enumerate(live["params"]):
            if id(param) not in name_of:
                raise ValueError(
                    f"param group {index}'s parameter {position} (shape {tuple(param.shape)}) "
                    "is not one of the model's named_parameters()."
                )
            names.append(name_of[id(param)])
        if "param_names" in saved and list(saved["param_names"]) != names:
            raise ValueError(
                f"param group {index} holds the names {list(saved['param_names'])}, but its "
                f"parameters are the model's {names}."
            )
        saved["param_names"] = names
    return state


def _hyperparameters(group: Mapping[str, Any]) -> dict:
    return {k: v for k, v in group.items() if k not in IGNORED_GROUP_KEYS}


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The hyperparameters in which two torch param groups differ, as ``key a/b``."""
    ha, hb = _hyperparameters(a), _hyperparameters(b)
    return [
        f"{k} {ha.get(k)}/{hb.get(k)}" for k in sorted(set(ha) | set(hb)) if ha.get(k) != hb.get(k)
    ]


def _step(group: Mapping[str, Any], state: Mapping[int, Any]) -> float | None:
    entries = [state[i] for i in group["params"] if i in state]
    return float(entries[0]["step"]) if entries and "step" in entries[0] else None


def _moment_shape(entry: Mapping[str, Any]) -> Shape | None:
    moment = entry.get("exp_avg")
    return None if moment is None else tuple(moment.shape)


def _misfit(groups, state, model_shapes, rank, membership) -> str | None:
    """Why ``membership`` (the names of each group, in index order) cannot be the optimizer's:
    a moment's shape that is not its param's, or a group out of the model's order; or None."""
    for g, (group, names) in enumerate(zip(groups, membership, strict=True)):
        for index, name in zip(group["params"], names, strict=True):
            shape = _moment_shape(state.get(index, {}))
            if shape is not None and shape != model_shapes[name]:
                return (
                    f"torch's parameter {index} (param group {g}) has exp_avg of shape {shape}, "
                    f"the name given for it, '{name}', is {model_shapes[name]} in the model"
                )
        if [rank[n] for n in names] != sorted(rank[n] for n in names):
            return f"param group {g}'s names {names} are not in the model's order"
    return None


def _fitting(groups, state, model_shapes, names, classes=None, given_class=None):
    """A membership that fits the groups' sizes and moment shapes, each group in the model's
    order, or None. With ``classes`` (an id per group, equal for groups that run alike) and
    ``given_class`` (name -> the class of its given group), one that moves some name into a
    group of another class: the proof that the given order cannot be told from another.

    A depth-first search over the names in the model's order, each placed in the next free slot
    of a group; the dead states (progress per group, moved or not) are remembered.
    """
    slots = [[_moment_shape(state.get(i, {})) for i in g["params"]] for g in groups]
    wanted = classes is not None

    def children(node):
        progress, moved = node
        name = names[sum(progress)]
        for g, slot in enumerate(slots):
            k = progress[g]
            if k < len(slot) and slot[k] in (None, model_shapes[name]):
                now = moved or (wanted and classes[g] != given_class[name])
                yield g, ((*progress[:g], k + 1, *progress[g + 1 :]), now)

    root = (tuple(0 for _ in groups), False)
    stack, chosen, dead = [(root, children(root))], [], set()
    while stack:
        node, options = stack[-1]
        done = sum(node[0]) == len(names)
        if done and (node[1] or not wanted):
            membership: list[list[str]] = [[] for _ in groups]
            for name, g in zip(names, chosen, strict=True):
                membership[g].append(name)
            return membership
        step = None if done else next(options, None)
        if step is None:
            dead.add(node)
            if len(dead) > SEARCH_LIMIT:
                raise ValueError(
                    "param_names: too many params of the same shapes to check the order; pass "
                    "interop.named_optimizer_state_dict(model, optimizer) instead."
                )
            stack.pop()
            if chosen:
                chosen.pop()
            continue
        g, child = step
        if child not in dead:
            chosen.append(g)
            stack.append((child, children(child)))
    return None


def _classes(groups, state) -> list[int]:
    """An id per group, equal for groups with the same hyperparameters and step."""
    keys = [(sorted(_hyperparameters(g).items(), key=str), _step(g, state)) for g in groups]
    return [keys.index(key) for key in keys]


def _group_of(membership: Sequence[Sequence[str]], name: str) -> int:
    return next(g for g, names in enumerate(membership) if name in names)


def _other_membership(groups, state, model_shapes, rank, membership) -> str | None:
    """Why the state dicts cannot tell ``membership`` from another that runs differently."""
    classes = _classes(groups, state)
    names = sorted((n for group in membership for n in group), key=rank.__getitem__)
    given_class = {n: classes[_group_of(membership, n)] for n in names}
    other = _fitting(groups, state, model_shapes, names, classes, given_class)
    if other is None:
        return None
    moved = next(n for n in names if classes[_group_of(other, n)] != given_class[n])
    i, j = _group_of(membership, moved), _group_of(other, moved)
    differ = _differences(groups[i], groups[j])
    steps = _step(groups[i], state), _step(groups[j], state)
    if steps[0] != steps[1]:
        differ.append(f"step {steps[0]}/{steps[1]}")
    return (
        f"'{moved}' (param group {i}) could as well be in param group {j}: the groups' sizes, "
        f"the moments' shapes and the model's order fit {membership} and {other} alike, and "
        f"the groups differ ({', '.join(differ)})"
    )


def param_order(
    groups: Sequence[Mapping[str, Any]],
    state: Mapping[int, Any],
    model_state_dict: Mapping[str, Any],
    param_names: Sequence[str] | None,
    mapped: Sequence[str],
) -> list[list[str]]:
    """The torch names of each group's parameter indices, checked.

    Args:
      groups: the optimizer state dict's ``param_groups``.
      state: its ``state``.
      model_state_dict: the model's state dict (its order and shapes are signals).
      param_names: the names given by hand, or None.
      mapped: the names the name map maps, for the one-group default.

    Raises:
      ValueError: saying what does not fit and the expected order.
    """
    named = all("param_names" in g for g in groups)
    if named:
        saved = [list(g["param_names"]) for g in groups]
        if param_names is not None and list(param_names) != [n for g in saved for n in g]:
            raise ValueError(
                f"param_names={list(param_names)} differs from the names the optimizer state "
                f"dict's groups hold, {saved}: leave param_names out."
            )
        return saved
    if param_names is None:
        if len(groups) > 1:
            raise ValueError(
                "the optimizer state dict has several param groups and no 'param_names' (torch "
                "writes them when the optimizer is built from model.named_parameters()): pass "
                "interop.named_optimizer_state_dict(model, optimizer), or param_names=[...], "
                "the torch names of group 0's params in the optimizer's order, then group 1's, ..."
            )
        # One group built from model.parameters(): the model's order.
        param_names = [n for n in model_state_dict if n in set(mapped)]
    given = list(param_names)
    sizes = [len(g["params"]) for g in groups]
    how = (
        "param_names lists the optimizer's parameters as torch numbers them: param group 0's in "
        "the order they were given to the optimizer, then group 1's, ... (group sizes "
        f"{sizes}). Surer: build the optimizer from model.named_parameters(), or pass "
        "interop.named_optimizer_state_dict(model, optimizer)."
    )
    for name in given:
        if name not in model_state_dict:
            raise ValueError(f"param_names' '{name}' is not in the model state dict. {how}")
    if len(set(given)) != len(given):
        twice = sorted({n for n in given if given.count(n) > 1})
        raise ValueError(f"param_names names {twice} more than once. {how}")
    if sum(sizes) != len(given):
        raise ValueError(
            f"the optimizer's param groups hold {sum(sizes)} parameters, but {len(given)} names "
            f"were given (or mapped): {given}. {how}"
        )
    rank = {name: i for i, name in enumerate(model_state_dict)}
    model_shapes = {name: tuple(model_state_dict[name].shape) for name in given}
    starts = [sum(sizes[:g]) for g in range(len(groups))]
    membership = [given[s : s + n] for s, n in zip(starts, sizes, strict=True)]
    reason = _misfit(groups, state, model_shapes, rank, membership)
    if reason is None:
        reason = _other_membership(groups, state, model_shapes, rank, membership)
        if reason is None:
            return membership
        raise ValueError(f"param_names cannot be told from another order: {reason}. {how}")
    fits = _fitting(groups, state, model_shapes, sorted(given, key=rank.__getitem__))
    expected = (
        " Expected (the groups' sizes and shapes, each group in the model's order): "
        f"{[n for names in fits for n in names]}."
        if fits is not None
        else ""
    )
    raise ValueError(
        f"param_names does not fit the optimizer state dict: {reason}.{expected} {how}"
    )
