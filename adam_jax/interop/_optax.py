"""optax: ``optax.adam``/``adamw``/``amsgrad`` states <-> adam_jax.

``optax.adam`` and ``optax.amsgrad`` are adam_jax's ``convention="optax"``:
optax's ``ScaleByAdamState``/``ScaleByAmsgradState`` hold ``count``, ``mu``,
``nu`` and (AMSGrad) ``nu_max``, the maximum of the *bias-corrected* second
moment, exactly as adam_jax's state does in that convention. Without AMSGrad,
optax's Adam is also PyTorch's, so its state continues in any of
``"pytorch"``, ``"optax"`` and ``"paper"``; with AMSGrad, only in ``"optax"``.

optax states carry no hyperparameters (they live in the closures), so each
conversion takes the run's ``adam_jax.AdamSpec``, or an adam_jax optimizer
(which carries its ``spec``). ``optax.nadam`` is adam_jax's ``nadam`` in
convention ``"optax"`` (no momentum schedule).
"""

import optax

from adam_jax._alias import from_spec
from adam_jax._spec import AdamSpec
from adam_jax._transform import ScaleByAdamState
from adam_jax.interop import _groups, _tree

OPTAX_STATES = (optax.ScaleByAdamState, optax.ScaleByAmsgradState)
FIELDS = {"mu": "mu", "nu": "nu", "nu_max": "nu_max"}


def _single(moments: list[_tree.Moments], what: str) -> _tree.Moments:
    if len(moments) != 1:
        raise ValueError(
            f"{what} holds {len(moments)} Adam states; these conversions take one optimizer "
            "(for param groups, convert each optax.partition branch on its own)."
        )
    return moments[0]


def _spec(spec_or_optimizer) -> AdamSpec:
    spec = getattr(spec_or_optimizer, "spec", spec_or_optimizer)
    if not isinstance(spec, AdamSpec):
        raise TypeError(
            "expected an adam_jax.AdamSpec or an adam_jax optimizer (which carries .spec), "
            f"got {type(spec_or_optimizer).__name__}."
        )
    return spec


def _check(spec: AdamSpec, where: str) -> None:
    """Raises unless a run of ``spec`` and one of optax are the same optimizer.

    ``where`` is ``"to optax"`` or ``"from optax"``: the direction of the conversion.
    """
    if spec.nesterov:
        if spec.nadam_momentum_decay is not None:
            raise ValueError(
                f"cannot convert NAdam {where} exactly: optax's Nesterov Adam keeps "
                f"mu_t = b1, this spec has the momentum schedule psi="
                f"{spec.nadam_momentum_decay} (convention {spec.convention!r})."
            )
        return
    source, target = (
        (spec.convention, "optax") if where == "to optax" else ("optax", spec.convention)
    )
    _groups.check_same_optimizer(source, target, spec.amsgrad, where)


def optax_optimizer(spec: AdamSpec) -> optax.GradientTransformation:
    """The optax optimizer of ``spec``: ``optax.adam``/``adamw``/``amsgrad``/``nadam``'s chain.

    ``chain(scale_by_adam (nesterov) or scale_by_amsgrad, [add_decayed_weights],
    scale_by_learning_rate)``, which is what ``optax.adam``, ``optax.adamw``
    (``mask`` included), ``optax.amsgrad`` and ``optax.nadam`` build, so its
    state has their structure; coupled weight decay goes before the direction
    and ``maximize`` adds ``optax.scale(-1)`` first.

    Args:
      spec: an ``adam_jax.AdamSpec`` (or an adam_jax optimizer).

    Returns:
      The optax ``GradientTransformation``.

    Raises:
      ValueError: when ``spec``'s convention would make optax a different optimizer.
    """
    spec = _spec(spec)
    _check(spec, "to optax")
    if spec.amsgrad:
        direction = optax.scale_by_amsgrad(spec.b1, spec.b2, spec.eps, spec.eps_root)
    else:
        direction = optax.scale_by_adam(
            spec.b1, spec.b2, spec.eps, spec.eps_root, nesterov=spec.nesterov
        )
    decay = optax.add_decayed_weights(spec.weight_decay, spec.mask)
    decays = spec.decays_weights
    return optax.chain(
        *([optax.scale(-1.0)] if spec.maximize else []),
        *([decay] if decays and not spec.decoupled_weight_decay else []),
        direction,
        *([decay] if decays and spec.decoupled_weight_decay else []),
        optax.scale_by_learning_rate(spec.learning_rate),
    )


def from_optax(
    opt_state: optax.OptState, spec: AdamSpec, params=None
) -> tuple[optax.GradientTransformation, optax.OptState]:
    """An ``optax.adam``/``adamw``/``amsgrad`` state as an adam_jax optimizer and state.

    Args:
      opt_state: the optax optimizer's state (one ``ScaleByAdamState`` or
        ``ScaleByAmsgradState`` anywhere inside it).
      spec: the optax optimizer's hyperparameters as an ``adam_jax.AdamSpec``, in
        convention ``"optax"`` (or, without AMSGrad, ``"pytorch"``/``"paper"``,
        the same Adam); or an adam_jax optimizer, which carries its spec.
      params: the params, for the state's dtypes; by default the moments' tree.

    Returns:
      ``(the adam_jax optimizer of spec, its state)`` with optax's count and moments.

    Raises:
      ValueError: when ``spec`` would continue as a different optimizer
        (an AMSGrad state in convention ``"pytorch"``: the message says why and
        what an approximation would change), or the trees do not match.

    Examples:
      >>> import jax.numpy as jnp, optax, adam_jax, adam_jax.interop as interop
      >>> tx = optax.amsgrad(0.1)
      >>> params = {"w": jnp.ones(2)}
      >>> _, state = tx.update({"w": jnp.ones(2)}, tx.init(params))
      >>> spec = adam_jax.AdamSpec(0.1, amsgrad=True, convention="optax")
      >>> opt, ours = interop.from_optax(state, spec)
      >>> int(ours[0].count), ours[0].nu_max["w"].round(4)  # v_1 / (1 - b2) = g^2
      (1, Array([1., 1.], dtype=float32))

    References:
      DeepMind, `optax.amsgrad
      <https://optax.readthedocs.io/en/latest/api/optimizers.html#optax.amsgrad>`_, 2024.
    """
    spec = _spec(spec)
    _check(spec, "from optax")
    source = _single(_tree.read_moments(opt_state, OPTAX_STATES), "the optax state")
    optimizer = from_spec(spec)
    if params is None:
        params = _tree.find_states(opt_state, OPTAX_STATES)[0].mu
    template = optimizer.init(params)
    paths = frozenset(source.mu)
    find = _tree.match_groups([paths], "tree of the optax state")

    def source_for(state_paths):
        find(state_paths)
        return source

    def describe(field, path):
        return f"optax's {FIELDS[field]} of '{_tree.path_str(path)}'"

    return optimizer, _tree.write_moments(template, (ScaleByAdamState,), source_for, describe)


def to_optax(
    opt_state: optax.OptState, spec: AdamSpec, params=None
) -> tuple[optax.GradientTransformation, optax.OptState]:
    """An adam_jax state as the matching optax optimizer and its state.

    The optimizer is :func:`adam_jax.interop.optax_optimizer`'s.

    Args:
      opt_state: the adam_jax optimizer's state (one ``ScaleByAdamState``).
      spec: its ``adam_jax.AdamSpec``, or the adam_jax optimizer itself.
      params: the params, for the state's dtypes; by default the moments' tree.

    Returns:
      ``(optax optimizer, its state)``; the state also fits ``optax.adam``,
      ``optax.adamw`` or ``optax.amsgrad`` built with the same hyperparameters.

    Raises:
      ValueError: for an AMSGrad state in convention ``"pytorch"`` or ``"keras"``
        (the raw maximum: optax keeps the bias-corrected one, see the message),
        for Keras' epsilon, or when the trees do not match.

    Examples:
      >>> import jax.numpy as jnp, adam_jax, adam_jax.interop as interop
      >>> opt = adam_jax.adam(0.1, convention="optax")
      >>> params = {"w": jnp.ones(2)}
      >>> _, state = opt.update({"w": jnp.ones(2)}, opt.init(params), params)
      >>> tx, theirs = interop.to_optax(state, opt)
      >>> int(theirs[0].count)
      1

    References:
      DeepMind, `optax.adam
      <https://optax.readthedocs.io/en/latest/api/optimizers.html#optax.adam>`_, 2024.
    """
    tx = optax_optimizer(spec)
    source = _single(_tree.read_moments(opt_state, (ScaleByAdamState,)), "the adam_jax state")
    if params is None:
        params = _tree.find_states(opt_state, (ScaleByAdamState,))[0].mu
    template = tx.init(params)
    find = _tree.match_groups([frozenset(source.mu)], "tree of the adam_jax state")

    def source_for(state_paths):
        find(state_paths)
        return source

    def describe(field, path):
        return f"adam_jax's {FIELDS[field]} of '{_tree.path_str(path)}'"

    return tx, _tree.write_moments(template, OPTAX_STATES, source_for, describe)
