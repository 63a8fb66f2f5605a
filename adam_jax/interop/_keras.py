"""Keras 3: ``keras.optimizers.Adam``/``AdamW``/``Nadam`` variables <-> adam_jax.

Keras' Adam is adam_jax's ``convention="keras"`` (the "epsilon hat" form): its
optimizer variables ``iteration``, ``<var>_momentum``, ``<var>_velocity`` and
(AMSGrad) ``<var>_velocity_hat`` are ``count``, ``mu``, ``nu`` and ``nu_max``,
the maximum of the raw second moment. Keras' Nadam is ``adam_jax.nadam(...,
convention="keras")``, its ``u_product`` the state's ``mu_product``. Keras
applies weight decay decoupled, as AdamW, scaled by the learning rate; variables
excluded from it
(``exclude_from_weight_decay``) form a second param group without decay.

Keras is imported only inside the functions that need it; any backend works,
the tests use JAX's.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from adam_jax import _conventions
from adam_jax._spec import AdamSpec
from adam_jax._transform import ScaleByAdamState
from adam_jax.interop import _groups, _tree
from adam_jax.interop._groups import Converted, ParamGroup

SLOTS = {"mu": "_momentums", "nu": "_velocities", "nu_max": "_velocity_hats"}
SLOT_NAMES = {"mu": "momentum", "nu": "velocity", "nu_max": "velocity_hat"}
# Options of Keras' base optimizer that change the update and are not converted.
UNSUPPORTED = (
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "gradient_accumulation_steps",
    "loss_scale_factor",
)


def _check_optimizer(optimizer) -> None:
    import keras

    if type(optimizer) not in (
        keras.optimizers.Adam,
        keras.optimizers.AdamW,
        keras.optimizers.Nadam,
    ):
        raise TypeError(
            "optimizer must be a keras.optimizers.Adam, AdamW or Nadam, got "
            f"{type(optimizer).__name__}."
        )
    for option in UNSUPPORTED:
        value = getattr(optimizer, option, None)
        if value not in (None, False):
            raise ValueError(
                f"the Keras optimizer has {option}={value!r}, which adam_jax.adam does not do; "
                "only plain Adam/AdamW runs convert."
            )
    if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        raise ValueError(
            "the Keras optimizer's learning rate is a schedule, which is not converted: "
            "build the adam_jax optimizer with the same schedule of the step count instead."
        )
    if not optimizer.built:
        raise ValueError("the Keras optimizer is not built: call optimizer.build(variables).")


def _spec(optimizer, weight_decay: float) -> AdamSpec:
    nadam = not hasattr(optimizer, "amsgrad")
    return AdamSpec(
        learning_rate=float(np.asarray(optimizer.learning_rate)),
        b1=float(optimizer.beta_1),
        b2=float(optimizer.beta_2),
        eps=float(optimizer.epsilon),
        weight_decay=weight_decay,
        decoupled_weight_decay=True,
        amsgrad=bool(getattr(optimizer, "amsgrad", False)),
        nesterov=nadam,
        convention="keras",
    )


def from_keras(
    optimizer, variables: Sequence[Any], name_map: Mapping[str, Any], *, dtype=None
) -> Converted:
    """A Keras 3 run (variables and a built ``Adam``/``AdamW``) as an adam_jax run.

    Args:
      optimizer: a built ``keras.optimizers.Adam`` or ``AdamW`` (no schedule,
        clipping, EMA or gradient accumulation).
      variables: the Keras variables it updates (``model.trainable_variables``).
      name_map: variable ``path`` -> params path or
        :class:`adam_jax.interop.Leaf`; every variable must be mapped.
      dtype: cast the weights to this dtype; None keeps Keras'.

    Returns:
      A :class:`adam_jax.interop.Converted` in convention ``"keras"``: one
      param group, or two when some variables are excluded from weight decay.

    Raises:
      ValueError/TypeError: naming the first variable not mapped or not tracked
        by the optimizer, a shape that does not fit, or an unsupported option.

    Examples:
      >>> import os; _ = os.environ.setdefault("KERAS_BACKEND", "jax")
      >>> import keras, numpy as np, adam_jax.interop as interop
      >>> w = keras.Variable(np.ones(2, "float32"), name="w")
      >>> opt = keras.optimizers.Adam(0.1, amsgrad=True)
      >>> opt.apply([np.ones(2, "float32")], [w])
      >>> run = interop.from_keras(opt, [w], {"w": "w"})
      >>> int(run.opt_state[0].count), run.groups[0].spec.convention
      (1, 'keras')

    References:
      Keras, `Adam <https://keras.io/api/optimizers/adam/>`_, 2024.
    """
    _check_optimizer(optimizer)
    names = _tree.normalize_name_map(name_map)
    by_name = {}
    for v in variables:
        if v.path not in names:
            raise ValueError(f"Keras variable '{v.path}' is not in name_map.")
        by_name[v.path] = v
    for name in names:
        if name not in by_name:
            raise ValueError(f"name_map's '{name}' is not among the Keras variables.")
    params = _tree.nested(
        {
            names[n].path: _tree.to_jax(
                names[n].to_jax_layout(np.asarray(v.value), n), f"'{n}'", dtype
            )
            for n, v in by_name.items()
        }
    )
    weight_decay = float(optimizer.weight_decay or 0.0)
    decayed = [v.path for v in variables if weight_decay and optimizer._use_weight_decay(v)]
    plain = [v.path for v in variables if v.path not in decayed]
    groups, members = [], []
    for wd, group_names in ((weight_decay, decayed), (0.0, plain)):
        if group_names:
            spec = _spec(optimizer, wd)
            groups.append(ParamGroup(spec, tuple(names[n].path for n in group_names)))
            members.append(group_names)
    count = int(np.asarray(optimizer.iterations))
    amsgrad = groups[0].spec.amsgrad
    fields = ("mu", "nu", "nu_max") if amsgrad else ("mu", "nu")
    mu_product = None
    if groups[0].spec.nesterov:
        mu_product = np.asarray(optimizer._u_product.value)
    moments = []
    for group_names in members:
        arrays: dict[str, dict[_tree.Path, np.ndarray]] = {f: {} for f in fields}
        for n in group_names:
            try:
                index = optimizer._get_variable_index(by_name[n])
            except KeyError:
                raise ValueError(f"Keras variable '{n}' is not tracked by the optimizer.") from None
            for f in fields:
                slot = getattr(optimizer, SLOTS[f])[index]
                what = f"Keras' {slot.path}"
                arrays[f][names[n].path] = names[n].to_jax_layout(np.asarray(slot.value), what)
        moments.append(
            _tree.Moments(count, arrays["mu"], arrays["nu"], arrays.get("nu_max"), mu_product)
        )
    optimizer_jax = _groups.build_optimizer(groups, params)
    find = _tree.match_groups([frozenset(g.paths) for g in groups], "Keras weight decay group")
    by_path = {leaf.path: n for n, leaf in names.items()}

    def describe(field, path):
        return f"Keras' {SLOT_NAMES[field]} of '{by_path[path]}'" if path else "Keras' u_product"

    opt_state = _tree.write_moments(
        optimizer_jax.init(params), (ScaleByAdamState,), lambda p: moments[find(p)], describe
    )
    return Converted(params, optimizer_jax, opt_state, groups)


def to_keras(
    params,
    opt_state,
    groups: Sequence[ParamGroup],
    variables: Sequence[Any],
    name_map: Mapping[str, Any],
):
    """An adam_jax run into Keras variables and a new, built ``keras.optimizers.AdamW``/``Adam``.

    Assigns the params to ``variables`` and returns an optimizer whose variables
    hold the run's step count and moments. Keras has one set of
    hyperparameters: the groups may differ only in weight decay, one of them
    without decay (its variables are excluded from weight decay).

    Args:
      params: the params tree.
      opt_state: the state of the optimizer built for ``groups``.
      groups: the :class:`adam_jax.interop.ParamGroup` list.
      variables: the Keras variables to assign (``model.trainable_variables``).
      name_map: variable ``path`` -> params path or ``Leaf``.

    Returns:
      A built ``keras.optimizers.AdamW`` (``Adam`` without weight decay).

    Raises:
      ValueError: when a group's convention would make Keras a different
        optimizer, groups differ in more than weight decay, ``maximize`` or
        ``eps_root`` is set, or the steps or shapes do not fit.

    Examples:
      >>> import os; _ = os.environ.setdefault("KERAS_BACKEND", "jax")
      >>> import jax.numpy as jnp, keras, numpy as np, adam_jax, adam_jax.interop as interop
      >>> spec = adam_jax.AdamSpec(0.1, eps=1e-7, convention="keras")
      >>> groups = [interop.ParamGroup(spec, (("w",),))]
      >>> params = {"w": jnp.ones(2)}
      >>> opt = interop.build_optimizer(groups, params)
      >>> _, state = opt.update({"w": jnp.ones(2)}, opt.init(params), params)
      >>> w = keras.Variable(np.zeros(2, "float32"), name="w")
      >>> k_opt = interop.to_keras(params, state, groups, [w], {"w": "w"})
      >>> int(k_opt.iterations), w.numpy()
      (1, array([1., 1.], dtype=float32))

    References:
      Keras, `AdamW <https://keras.io/api/optimizers/adamw/>`_, 2024.
    """
    import keras

    names = _tree.normalize_name_map(name_map)
    base = groups[0].spec
    for i, group in enumerate(groups):
        spec = group.spec
        _check_spec(spec, i)
        same = dataclasses.replace(spec, weight_decay=0.0, decoupled_weight_decay=True)
        if same != dataclasses.replace(base, weight_decay=0.0, decoupled_weight_decay=True):
            raise ValueError(
                f"param group {i} differs from group 0 in more than weight decay; a Keras "
                "optimizer has one set of hyperparameters."
            )
    decays = sorted({float(g.spec.weight_decay) for g in groups if g.spec.weight_decay})
    if len(decays) > 1:
        raise ValueError(f"Keras has one weight decay, the groups have {decays}.")
    by_name = {v.path: v for v in variables}
    leaves = _tree.leaves_by_path(params)
    for name, leaf in names.items():
        if name not in by_name:
            raise ValueError(f"name_map's '{name}' is not among the Keras variables.")
        if leaf.path not in leaves:
            raise ValueError(
                f"name_map's '{name}' -> '{_tree.path_str(leaf.path)}' is not in params."
            )
    by_path = {leaf.path: n for n, leaf in names.items()}
    found = _tree.read_moments(opt_state, (ScaleByAdamState,))
    find = _tree.match_groups([frozenset(g.paths) for g in groups], "param group of `groups`")
    counts = {m.count for m in found}
    if len(counts) != 1:
        raise ValueError(
            f"Keras keeps one iteration count, the groups are at steps {sorted(counts)}."
        )

    kwargs = {"weight_decay": decays[0]} if decays else {}
    if base.nesterov:
        optimizer = keras.optimizers.Nadam
    else:
        optimizer = keras.optimizers.AdamW if decays else keras.optimizers.Adam
        kwargs["amsgrad"] = base.amsgrad
    optimizer = optimizer(
        learning_rate=float(np.asarray(base.learning_rate)),
        beta_1=float(np.asarray(base.b1)),
        beta_2=float(np.asarray(base.b2)),
        epsilon=float(np.asarray(base.eps)),
        **kwargs,
    )
    undecayed = [by_name[by_path[p]] for g in groups if not g.spec.weight_decay for p in g.paths]
    if decays and undecayed:
        optimizer.exclude_from_weight_decay(var_list=undecayed)
    keras_vars = [by_name[by_path[p]] for g in groups for p in g.paths]
    for v in keras_vars:
        value = names[v.path].from_jax_layout(np.asarray(leaves[names[v.path].path]), v.path)
        _assign(v, value, f"'{v.path}'")
    optimizer.build(keras_vars)
    optimizer.iterations.assign(counts.pop())
    if base.nesterov:
        _assign(optimizer._u_product, np.asarray(found[0].mu_product), "Keras' u_product")
    for m in found:
        find(frozenset(m.mu))
        if (m.nu_max is not None) != base.amsgrad:
            raise ValueError(f"amsgrad={base.amsgrad} does not match the optimizer state.")
        for f, arrays in (("mu", m.mu), ("nu", m.nu), ("nu_max", m.nu_max)):
            for path, x in (arrays or {}).items():
                v = by_name[by_path[path]]
                slot = getattr(optimizer, SLOTS[f])[optimizer._get_variable_index(v)]
                what = f"the {SLOT_NAMES[f]} of '{v.path}'"
                _assign(slot, names[v.path].from_jax_layout(x, v.path), what)
    return optimizer


def _check_spec(spec: AdamSpec, index: int) -> None:
    """Raises unless a Keras optimizer runs ``spec`` exactly."""
    for name in ("learning_rate", "weight_decay"):
        if callable(getattr(spec, name)):
            raise ValueError(
                f"param group {index}: {name} is a schedule, which is not converted; pass a "
                "spec with the current value."
            )
    if spec.maximize or spec.eps_root != 0 or spec.mask is not None:
        raise ValueError(
            f"param group {index}: Keras' optimizers have no maximize, eps_root or mask, got "
            f"maximize={spec.maximize}, eps_root={spec.eps_root}, mask={spec.mask!r}."
        )
    if spec.weight_decay and not spec.decoupled_weight_decay:
        raise ValueError(
            f"param group {index}: Keras applies weight decay decoupled (AdamW), got coupled "
            f"weight_decay={spec.weight_decay}."
        )
    if spec.nesterov:
        keras_psi = _conventions.CONVENTIONS["keras"].nadam_momentum_decay
        if spec.nadam_momentum_decay != keras_psi:
            raise ValueError(
                f"param group {index}: Keras' Nadam has the momentum schedule psi={keras_psi}, "
                f"the spec psi={spec.nadam_momentum_decay} (convention {spec.convention!r})."
            )
        return
    _groups.check_same_optimizer(spec.convention, "keras", spec.amsgrad, "to keras.optimizers.Adam")


def _assign(variable, value: np.ndarray, what: str) -> None:
    """``variable.assign(value)``, refusing a shape that differs or a cast that rounds."""
    if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(f"{what} has shape {tuple(variable.shape)}, the params {value.shape}.")
    if not np.can_cast(value.dtype, np.dtype(variable.dtype), "safe"):
        raise ValueError(
            f"{what} is {variable.dtype} in Keras and would round adam_jax's {value.dtype}; "
            "set keras.config.set_floatx to the params' dtype first."
        )
    variable.assign(value)
