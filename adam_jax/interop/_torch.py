"""PyTorch: ``nn.Module`` and ``torch.optim.Adam``/``AdamW``/``NAdam`` state dicts <-> adam_jax.

``torch.optim.Adam`` is adam_jax's ``convention="pytorch"``: the state dicts'
``step``, ``exp_avg``, ``exp_avg_sq`` and ``max_exp_avg_sq`` are its
``count``, ``mu``, ``nu`` and ``nu_max`` (the raw maximum), and NAdam's
``mu_product`` its ``mu_product``, so a run converts exactly, both ways. torch
is imported only inside the functions that need it.
"""

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optax

from adam_jax._spec import AdamSpec
from adam_jax._transform import ScaleByAdamState
from adam_jax.interop import _groups, _torch_layouts, _torch_order, _tree
from adam_jax.interop._groups import Converted, ParamGroup

ADAM_GROUP_KEYS = frozenset(
    {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"}
)
NADAM_GROUP_KEYS = frozenset(
    {"lr", "betas", "eps", "weight_decay", "momentum_decay", "maximize", "decoupled_weight_decay"}
)
STATE_FIELDS = {
    "mu": "exp_avg",
    "nu": "exp_avg_sq",
    "nu_max": "max_exp_avg_sq",
    "mu_product": "mu_product",
}


def _numpy(tensor, name: str) -> np.ndarray:
    if not hasattr(tensor, "detach"):
        raise TypeError(f"'{name}' must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.is_complex():
        raise ValueError(
            f"'{name}' is complex: torch.optim.Adam keeps the moments of the real and "
            "imaginary parts apart (view_as_real), adam_jax keeps |g|^2, so the states differ."
        )
    return tensor.detach().cpu().numpy()


def _tensor(x: np.ndarray):
    """A CPU tensor owning a copy of ``x`` (JAX's NumPy views are read-only)."""
    import torch

    return torch.from_numpy(np.array(x, copy=True, order="C"))


def params_from_torch(
    model_state_dict: Mapping[str, Any],
    name_map: Mapping[str, Any],
    *,
    template=None,
    skip: Sequence[str] = (),
    dtype=None,
):
    """A params tree from an ``nn.Module.state_dict()``, by an explicit name map.

    torch stores an ``nn.Linear`` weight as (out, in) and a convolution's as
    (out, in, *kernel); Flax's kernels are (in, out) and (*kernel, in, out). An
    ``nn.Embedding``'s (num, dim) weight and a norm's 1-D weight and bias keep
    their layout. A weight whose shape reads the same in both layouts (a square
    ``nn.Linear`` weight) must be mapped with ``linear``/``conv`` or declared
    kept with ``as_is``: a plain path is refused, since an untransposed square
    weight would load without any error and train on the wrong weights.

    Args:
      model_state_dict: ``module.state_dict()``.
      name_map: torch name -> params path (``"dense1/bias"``) or
        :class:`adam_jax.interop.Leaf`: ``interop.linear("dense1/kernel")``
        transposes an ``nn.Linear`` weight into a ``flax.nnx.Linear`` kernel,
        ``interop.conv(path, n)`` a convolution's, ``interop.as_is(path)``
        keeps the layout on purpose.
      template: the JAX params the result must match, by path and shape: a
        params tree or ``jax.eval_shape`` of one (``ShapeDtypeStruct`` leaves),
        e.g. ``nnx.to_pure_dict(nnx.state(nnx.eval_shape(make_model), nnx.Param))``;
        None checks only the layouts the name map must declare.
      skip: torch names to leave out on purpose (buffers such as BatchNorm's
        running statistics); every other key must be mapped.
      dtype: cast every tensor to this dtype; None keeps torch's (float64 needs
        ``jax_enable_x64``).

    Returns:
      Nested dicts of JAX arrays, in JAX's layout.

    Raises:
      ValueError: naming the first key missing from the state dict, the first
        key neither mapped nor skipped, every square weight whose layout the
        map leaves unsaid, or a tensor whose shape does not fit its map entry
        or the template (with the entry that fits).

    Examples:
      >>> import jax, jax.numpy as jnp, torch
      >>> from adam_jax import interop
      >>> layer = torch.nn.Linear(4, 4)
      >>> template = {"kernel": jax.ShapeDtypeStruct((4, 4), jnp.float32),
      ...             "bias": jax.ShapeDtypeStruct((4,), jnp.float32)}
      >>> interop.params_from_torch(layer.state_dict(), {"weight": "kernel", "bias": "bias"})
      Traceback (most recent call last):
      ValueError: the name map neither transposes nor declares kept these torch weights, ...
      >>> params = interop.params_from_torch(
      ...     layer.state_dict(), {"weight": interop.linear("kernel"), "bias": "bias"},
      ...     template=template)
      >>> bool((params["kernel"] == layer.weight.detach().numpy().T).all())
      True

    References:
      PyTorch, `torch.nn.Linear
      <https://pytorch.org/docs/stable/generated/torch.nn.Linear.html>`_, 2024.
    """
    names = _tree.normalize_name_map(name_map)
    for name in names:
        if name not in model_state_dict:
            raise ValueError(f"the model state dict has no '{name}' (named in name_map).")
    for name in model_state_dict:
        if name not in names and name not in skip:
            raise ValueError(
                f"the model state dict's '{name}' is not in name_map; map it, or pass "
                "skip=[...] to leave it out on purpose."
            )
    arrays = {name: _numpy(model_state_dict[name], name) for name in names}
    shapes = {name: tuple(x.shape) for name, x in arrays.items()}
    _torch_layouts.check_declared(shapes, names)
    if template is not None:
        _torch_layouts.check_template(shapes, names, template)
    leaves = {
        leaf.path: _tree.to_jax(leaf.to_jax_layout(arrays[name], name), f"'{name}'", dtype)
        for name, leaf in names.items()
    }
    return _tree.nested(leaves)


def params_to_torch(params, name_map: Mapping[str, Any]) -> dict:
    """An ``nn.Module`` state dict (``load_state_dict``-ready) from a params tree.

    Args:
      params: the params tree.
      name_map: as :func:`adam_jax.interop.params_from_torch`; every params
        leaf must be mapped.

    Returns:
      torch name -> CPU tensor, in the name map's order and torch's layout.

    Raises:
      ValueError: naming a params leaf no entry maps, an entry not in params, or
        every square weight whose layout the map leaves unsaid (see
        :func:`adam_jax.interop.params_from_torch`).
    """
    names = _tree.normalize_name_map(name_map)
    leaves = _tree.leaves_by_path(params)
    mapped = {leaf.path for leaf in names.values()}
    for path in leaves:
        if path not in mapped:
            raise ValueError(f"params leaf '{_tree.path_str(path)}' is in no name_map entry.")
    out = {}
    for name, leaf in names.items():
        if leaf.path not in leaves:
            raise ValueError(
                f"name_map's '{name}' -> '{_tree.path_str(leaf.path)}' is not in params."
            )
        out[name] = leaf.from_jax_layout(np.asarray(leaves[leaf.path]), name)
    _torch_layouts.check_declared({name: tuple(x.shape) for name, x in out.items()}, names)
    return {name: _tensor(x) for name, x in out.items()}


def spec_from_torch(
    group: Mapping[str, Any], index: int, decoupled_weight_decay: bool | None = None
) -> AdamSpec:
    """The ``adam_jax.AdamSpec`` of one ``torch.optim.Adam``/``AdamW``/``NAdam`` param group.

    Args:
      group: an entry of ``state_dict()["param_groups"]``.
      index: its position, for errors.
      decoupled_weight_decay: True for AdamW (or NAdamW); None reads the group's
        ``decoupled_weight_decay`` (torch >= 2.6 writes it; AdamW is Adam with it).

    Returns:
      The spec in convention ``"pytorch"``; NAdam's has ``nesterov=True`` and
      torch's ``momentum_decay``.
    """
    nadam = "momentum_decay" in group
    known = NADAM_GROUP_KEYS if nadam else ADAM_GROUP_KEYS
    unknown = set(group) - known - _torch_order.IGNORED_GROUP_KEYS
    if unknown:
        raise ValueError(
            f"param group {index} has keys {sorted(unknown)} that torch.optim."
            f"{'NAdam' if nadam else 'Adam/AdamW'} does not have: another optimizer?"
        )
    for key in sorted(known - {"decoupled_weight_decay"}):
        if key not in group:
            raise ValueError(f"param group {index} has no '{key}'.")
    decoupled = group.get("decoupled_weight_decay", decoupled_weight_decay)
    if decoupled is None:
        raise ValueError(
            f"param group {index} does not say whether its weight decay is decoupled (no "
            "'decoupled_weight_decay', torch < 2.6): pass decoupled_weight_decay=."
        )
    if decoupled_weight_decay is not None and bool(decoupled) != decoupled_weight_decay:
        raise ValueError(
            f"param group {index} has decoupled_weight_decay={decoupled}, but "
            f"decoupled_weight_decay={decoupled_weight_decay} was passed."
        )
    b1, b2 = (float(b) for b in group["betas"])
    return AdamSpec(
        learning_rate=float(group["lr"]),
        b1=b1,
        b2=b2,
        eps=float(group["eps"]),
        weight_decay=float(group["weight_decay"]),
        decoupled_weight_decay=bool(decoupled),
        amsgrad=bool(group.get("amsgrad", False)),
        maximize=bool(group["maximize"]),
        convention="pytorch",
        nesterov=nadam,
        momentum_decay=float(group["momentum_decay"]) if nadam else None,
    )


def spec_to_torch(spec: AdamSpec) -> dict:
    """The ``torch.optim.Adam``/``AdamW``/``NAdam`` param group keys (without ``params``).

    Args:
      spec: an ``adam_jax.AdamSpec`` (``optimizer.spec`` of an adam_jax optimizer).

    Returns:
      The group's hyperparameters as torch writes them; NAdam's when
      ``spec.nesterov``.

    Raises:
      ValueError: when torch would run a different optimizer: a schedule, a
        mask, ``eps_root``, optax's NAdam (no momentum schedule), or a convention
        whose step or AMSGrad maximum differs (the message says why).
    """
    where = "to torch.optim"
    _check_plain(spec, "torch.optim")
    if spec.nesterov:
        psi = spec.nadam_momentum_decay
        if psi is None:
            raise ValueError(
                "optax's Nesterov Adam keeps mu_t = b1, torch.optim.NAdam always has the "
                "schedule mu_t = b1 (1 - 0.96^(t psi) / 2): no momentum_decay reproduces it."
            )
        return {
            "lr": float(np.asarray(spec.learning_rate)),
            "betas": (float(np.asarray(spec.b1)), float(np.asarray(spec.b2))),
            "eps": float(np.asarray(spec.eps)),
            "weight_decay": float(np.asarray(spec.weight_decay)),
            "momentum_decay": float(np.asarray(psi)),
            "decoupled_weight_decay": spec.decoupled_weight_decay,
            "maximize": spec.maximize,
            "foreach": None,
            "capturable": False,
            "differentiable": False,
        }
    _groups.check_same_optimizer(spec.convention, "pytorch", spec.amsgrad, where)
    return {
        "lr": float(np.asarray(spec.learning_rate)),
        "betas": (float(np.asarray(spec.b1)), float(np.asarray(spec.b2))),
        "eps": float(np.asarray(spec.eps)),
        "weight_decay": float(np.asarray(spec.weight_decay)),
        "amsgrad": spec.amsgrad,
        "maximize": spec.maximize,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "decoupled_weight_decay": spec.decoupled_weight_decay,
    }


def _check_plain(spec: AdamSpec, framework: str) -> None:
    """Raises for what ``framework``'s optimizer state cannot hold: schedules, masks, eps_root."""
    for name in ("learning_rate", "weight_decay"):
        if callable(getattr(spec, name)):
            raise ValueError(
                f"{name} is a schedule; {framework} keeps schedules outside the optimizer's "
                "state: pass a spec with the current value, and rebuild the schedule there."
            )
    if spec.mask is not None:
        raise ValueError(
            f"the spec has a weight-decay mask; {framework} has param groups instead: put the "
            "masked params in a ParamGroup with weight_decay=0."
        )
    if spec.eps_root != 0:
        raise ValueError(f"{framework} has no eps_root, got eps_root={spec.eps_root}.")


def _group_moments(index, group, torch_names, state, names, spec, dtype) -> _tree.Moments:
    """The ``Moments`` of one torch param group, checked; cast to ``dtype`` unless None."""
    cast = (lambda x: x) if dtype is None else (lambda x: np.asarray(x, dtype))  # noqa: E731
    fields = ("mu", "nu", "nu_max") if spec.amsgrad else ("mu", "nu")
    scalars = ("step", "mu_product") if spec.nesterov else ("step",)
    present = [(i, n) for i, n in zip(group["params"], torch_names, strict=True) if i in state]
    if not present:  # torch creates a parameter's state at its first step
        return _tree.Moments(0, {}, {}, {} if spec.amsgrad else None)
    if len(present) != len(torch_names):
        missing = next(
            n for i, n in zip(group["params"], torch_names, strict=True) if i not in state
        )
        raise ValueError(
            f"'{missing}' (param group {index}) has no optimizer state while others have: torch "
            "creates it at the parameter's first gradient, so it would restart at step 1 "
            "where one optax step count per group cannot follow. Give it its own param group."
        )
    moments: dict[str, dict[_tree.Path, np.ndarray]] = {f: {} for f in fields}
    first = {}  # scalar -> (its value, the first param's name)
    for i, name in present:
        entry = state[i]
        expected = {*scalars, *(STATE_FIELDS[f] for f in fields)}
        if set(entry) != expected:
            raise ValueError(
                f"the optimizer state of '{name}' (param group {index}, amsgrad={spec.amsgrad}, "
                f"nesterov={spec.nesterov}) has keys {sorted(entry)}, expected {sorted(expected)}."
            )
        step = float(entry["step"])
        if step != int(step) or step < 0:
            raise ValueError(f"the step of '{name}' is {step}, not a whole number >= 0.")
        for key in scalars:
            value = _numpy(entry[key], f"{key} of '{name}'")
            if key not in first:
                first[key] = value, name
            elif value != first[key][0]:
                raise ValueError(
                    f"'{name}' has {key} {value} but '{first[key][1]}' {first[key][0]}, in "
                    f"param group {index}: one optax state per group holds one {key}."
                )
        leaf = names[name]
        for f in fields:
            what = f"{STATE_FIELDS[f]} of '{name}'"
            x = leaf.to_jax_layout(_numpy(entry[STATE_FIELDS[f]], what), what)
            moments[f][leaf.path] = cast(x)
    mu_product = cast(first["mu_product"][0]) if spec.nesterov else None
    count = int(first["step"][0])
    return _tree.Moments(count, moments["mu"], moments["nu"], moments.get("nu_max"), mu_product)


def from_torch(
    model_state_dict: Mapping[str, Any],
    optimizer_state_dict: Mapping[str, Any],
    name_map: Mapping[str, Any],
    *,
    template=None,
    param_names: Sequence[str] | None = None,
    decoupled_weight_decay: bool | None = None,
    skip: Sequence[str] = (),
    dtype=None,
) -> Converted:
    r"""A PyTorch run (model and ``torch.optim.Adam``/``AdamW``/``NAdam`` state) as an adam_jax run.

    Each param group becomes an ``adam_jax.adam(..., convention="pytorch")``
    (``adam_jax.nadam`` for NAdam) with its hyperparameters; several groups are
    combined with ``optax.partition``. Its state holds torch's ``step`` as
    ``count``, ``exp_avg``, ``exp_avg_sq`` and ``max_exp_avg_sq`` as ``mu``,
    ``nu`` and ``nu_max`` (NAdam's ``mu_product`` as ``mu_product``), moved
    into JAX's layout as the weights are. Continuing with
    ``optimizer.update`` takes the steps torch would have taken.

    Args:
      model_state_dict: ``module.state_dict()``.
      optimizer_state_dict: ``optimizer.state_dict()`` of a ``torch.optim.Adam``,
        ``AdamW`` or ``NAdam``.
      name_map: torch name -> params path or :class:`adam_jax.interop.Leaf`
        (``linear``, ``conv``, ``as_is``), see :func:`adam_jax.interop.params_from_torch`.
      template: the JAX params to match by path and shape (a params tree or
        ``jax.eval_shape`` of one), see :func:`adam_jax.interop.params_from_torch`.
      param_names: the torch names of the optimizer's parameters in its order:
        param group 0's in the order they were given to the optimizer, then
        group 1's, ... (e.g. ``["fc1.weight", "fc2.weight", "fc1.bias",
        "fc2.bias"]`` for the groups weights, biases). By default the groups'
        ``param_names`` (an optimizer built from ``model.named_parameters()``,
        or :func:`adam_jax.interop.named_optimizer_state_dict`), or for one group
        the order of the model state dict (an optimizer built from
        ``module.parameters()``). An order given here is checked against the
        groups' sizes, the moments' shapes, the model's order within each
        group, and refused where two params of one shape in groups that differ
        could be swapped unseen.
      decoupled_weight_decay: True for AdamW; by default read from the groups.
      skip: model state dict keys to leave out (buffers).
      dtype: cast the weights and the optimizer state to this dtype (rounding
        float64 to float32 on purpose, say); None keeps torch's.

    Returns:
      A :class:`adam_jax.interop.Converted`: ``params``, ``optimizer``,
      ``opt_state`` and ``groups``.

    Raises:
      ValueError: naming the first key or tensor that does not fit: a missing
        key, a wrong shape, a square weight whose layout the map leaves unsaid,
        a ``param_names`` order that does not fit (with the expected one),
        steps that differ within a group, a group whose parameters are not
        mapped. Nothing is zero-filled.

    Examples:
      >>> import torch, adam_jax.interop as interop
      >>> model = torch.nn.Linear(3, 2)
      >>> opt = torch.optim.AdamW(model.parameters(), lr=0.1, amsgrad=True)
      >>> model(torch.ones(1, 3)).sum().backward(); opt.step()
      >>> run = interop.from_torch(
      ...     model.state_dict(), opt.state_dict(),
      ...     {"weight": interop.linear("kernel"), "bias": "bias"})
      >>> run.params["kernel"].shape, int(run.opt_state[0].count)
      ((3, 2), 1)

    References:
      PyTorch, `torch.optim.Adam
      <https://pytorch.org/docs/stable/generated/torch.optim.Adam.html>`_, 2024.
    """
    names = _tree.normalize_name_map(name_map)
    for key in ("state", "param_groups"):
        if key not in optimizer_state_dict:
            raise ValueError(f"the optimizer state dict has no '{key}'.")
    params = params_from_torch(model_state_dict, names, template=template, skip=skip, dtype=dtype)
    torch_groups = optimizer_state_dict["param_groups"]
    state = optimizer_state_dict["state"]
    order = _torch_order.param_order(
        torch_groups, state, model_state_dict, param_names, list(names)
    )
    groups, moments = [], []
    for index, (group, torch_names) in enumerate(zip(torch_groups, order, strict=True)):
        for name in torch_names:
            if name not in names:
                raise ValueError(
                    f"param group {index} holds '{name}', which name_map does not map."
                )
        spec = spec_from_torch(group, index, decoupled_weight_decay)
        groups.append(ParamGroup(spec, tuple(names[n].path for n in torch_names)))
        moments.append(_group_moments(index, group, torch_names, state, names, spec, dtype))
    optimizer = _groups.build_optimizer(groups, params)
    template = optimizer.init(params)
    find = _tree.match_groups((frozenset(g.paths) for g in groups), "torch param group")
    by_path = {leaf.path: name for name, leaf in names.items()}

    def source_for(paths):
        i = find(paths)
        if not moments[i].mu:  # a fresh group: torch has no state yet, zeros are torch's init
            return _fresh(template, paths, moments[i])
        return moments[i]

    def describe(field, path):
        return f"{STATE_FIELDS[field]} of '{by_path[path]}'" if path else STATE_FIELDS[field]

    opt_state = _tree.write_moments(template, (ScaleByAdamState,), source_for, describe)
    return Converted(params, optimizer, opt_state, groups)


def _fresh(template, paths, moments: _tree.Moments) -> _tree.Moments:
    """A group before its first step: the state's own initial values (zeros)."""
    for state in _tree.find_states(template, (ScaleByAdamState,)):
        if frozenset(_tree.leaves_by_path(state.mu)) == paths:
            read = lambda t: {p: np.asarray(x) for p, x in _tree.leaves_by_path(t).items()}  # noqa: E731
            nu_max = None if state.nu_max is None else read(state.nu_max)
            mu_product = None if state.mu_product is None else np.asarray(state.mu_product)
            return _tree.Moments(0, read(state.mu), read(state.nu), nu_max, mu_product)
    raise AssertionError("unreachable: source_for matched these paths")  # pragma: no cover


def to_torch(
    params, opt_state: optax.OptState, groups: Sequence[ParamGroup], name_map: Mapping[str, Any]
) -> tuple[dict, dict]:
    """An adam_jax run as ``nn.Module`` and ``torch.optim.Adam``/``AdamW``/``NAdam`` state dicts.

    Args:
      params: the params tree.
      opt_state: the state of the optimizer built for ``groups`` (by
        :func:`adam_jax.interop.from_torch` or :func:`adam_jax.interop.build_optimizer`).
      groups: the :class:`adam_jax.interop.ParamGroup` list; the torch optimizer
        loading the result must have the same groups, in the same order.
      name_map: as :func:`adam_jax.interop.from_torch`.

    Returns:
      ``(model_state_dict, optimizer_state_dict)`` for ``module.load_state_dict``
      and ``optimizer.load_state_dict``; the optimizer's param groups carry
      ``param_names`` and every hyperparameter.

    Raises:
      ValueError: when a group's convention would make torch a different
        optimizer (optax's AMSGrad maximum; Keras' epsilon), or the state does
        not match the groups.

    Examples:
      >>> import jax.numpy as jnp, torch, adam_jax, adam_jax.interop as interop
      >>> spec = adam_jax.AdamSpec(learning_rate=0.1)
      >>> groups = [interop.ParamGroup(spec, (("w",),))]
      >>> params = {"w": jnp.ones(2)}
      >>> opt = interop.build_optimizer(groups, params)
      >>> _, state = opt.update({"w": jnp.ones(2)}, opt.init(params), params)
      >>> model_sd, opt_sd = interop.to_torch(params, state, groups, {"w": "w"})
      >>> float(opt_sd["state"][0]["step"]), opt_sd["param_groups"][0]["param_names"]
      (1.0, ['w'])

    References:
      PyTorch, `torch.optim.Optimizer.load_state_dict
      <https://pytorch.org/docs/stable/generated/torch.optim.Optimizer.load_state_dict.html>`_,
      2024.
    """
    import torch

    names = _tree.normalize_name_map(name_map)
    model_state_dict = params_to_torch(params, names)
    by_path = {leaf.path: name for name, leaf in names.items()}
    found = _tree.read_moments(opt_state, (ScaleByAdamState,))
    find = _tree.match_groups((frozenset(g.paths) for g in groups), "param group of `groups`")
    moments_of = {}
    for m in found:
        moments_of[find(frozenset(m.mu))] = m
    torch_groups, state, index = [], {}, 0
    for i, group in enumerate(groups):
        if i not in moments_of:
            raise ValueError(f"param group {i} has no adam_jax state in opt_state.")
        m = moments_of[i]
        torch_group = spec_to_torch(group.spec)
        if (m.nu_max is not None) != group.spec.amsgrad:
            raise ValueError(f"param group {i}: amsgrad does not match the state.")
        indices, group_names = [], []
        for path in group.paths:
            if path not in by_path:
                raise ValueError(f"'{_tree.path_str(path)}' (param group {i}) is not in name_map.")
            name = by_path[path]
            leaf = names[name]
            if m.count > 0:  # torch keeps no state before a parameter's first step
                scalar = torch.get_default_dtype()  # torch's dtype for step and mu_product
                entry = {"step": torch.tensor(float(m.count), dtype=scalar)}
                if m.mu_product is not None:
                    entry["mu_product"] = torch.tensor(float(m.mu_product), dtype=scalar)
                for f in ("mu", "nu", "nu_max"):
                    arrays = getattr(m, f)
                    if arrays is not None:
                        x = leaf.from_jax_layout(arrays[path], name)
                        entry[STATE_FIELDS[f]] = _tensor(x)
                state[index] = entry
            indices.append(index)
            group_names.append(name)
            index += 1
        torch_groups.append({**torch_group, "params": indices, "param_names": group_names})
    return model_state_dict, {"state": state, "param_groups": torch_groups}


def load_torch_checkpoint(
    path: str | os.PathLike,
    name_map: Mapping[str, Any],
    *,
    model_key: str = "model",
    optimizer_key: str = "optimizer",
    **kwargs,
) -> Converted:
    """Reads ``torch.save({"model": ..., "optimizer": ...}, path)`` as an adam_jax run.

    Args:
      path: the checkpoint, loaded with ``torch.load(weights_only=True)`` on the CPU.
      name_map: as :func:`adam_jax.interop.from_torch`.
      model_key: the key of the model's state dict in the file.
      optimizer_key: the key of the optimizer's state dict in the file.
      **kwargs: passed to :func:`adam_jax.interop.from_torch`
        (``template``, ``param_names``, ``skip``, ``dtype``, ``decoupled_weight_decay``).

    Returns:
      :func:`adam_jax.interop.from_torch`'s :class:`adam_jax.interop.Converted`.

    Examples:
      >>> import os, tempfile, torch, adam_jax.interop as interop
      >>> model = torch.nn.Linear(2, 1)
      >>> opt = torch.optim.Adam(model.parameters())
      >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
      >>> torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
      >>> run = interop.load_torch_checkpoint(path, {"weight": interop.linear("w"), "bias": "b"})
      >>> sorted(run.params), int(run.opt_state[0].count)
      (['b', 'w'], 0)

    References:
      PyTorch, `Saving and loading a general checkpoint
      <https://pytorch.org/tutorials/recipes/recipes/saving_and_loading_a_general_checkpoint.html>`_,
      2024.
    """
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in (model_key, optimizer_key):
        if not isinstance(checkpoint, Mapping) or key not in checkpoint:
            raise ValueError(f"{os.fspath(path)} holds no '{key}' entry.")
    return from_torch(checkpoint[model_key], checkpoint[optimizer_key], name_map, **kwargs)


def save_torch_checkpoint(
    path: str | os.PathLike,
    params,
    opt_state: optax.OptState,
    groups: Sequence[ParamGroup],
    name_map: Mapping[str, Any],
    *,
    model_key: str = "model",
    optimizer_key: str = "optimizer",
) -> None:
    """Writes the state dicts of :func:`adam_jax.interop.to_torch` with ``torch.save``.

    Args:
      path: the file to write.
      params: as :func:`adam_jax.interop.to_torch`.
      opt_state: as :func:`adam_jax.interop.to_torch`.
      groups: as :func:`adam_jax.interop.to_torch`.
      name_map: as :func:`adam_jax.interop.to_torch`.
      model_key: the key of the model's state dict in the file.
      optimizer_key: the key of the optimizer's state dict in the file.
    """
    import torch

    model_state_dict, optimizer_state_dict = to_torch(params, opt_state, groups, name_map)
    torch.save({model_key: model_state_dict, optimizer_key: optimizer_state_dict}, path)
