"""``fused_adam``: an opt-in Adam step that updates params and moments in one pass (CPU).

XLA's CPU backend compiles a pure-JAX Adam step into three loops per array, which stream
40 bytes per float32 param (see docs/performance.md). The C++ kernel in ``csrc/adam_step.cc``
reads params, gradients and moments once and writes params and moments once, in place:
28 bytes per param (36 with AMSGrad). It is compiled when adam_jax is installed (the optional
extension ``adam_jax._adam_step``, see setup.py) and called through ``jax.ffi``; importing
adam_jax and tracing a step never run a compiler. ``adam_jax.adam`` stays the reference and
the default: ``fused_adam`` is the same optimizer, with the same state, bit for bit.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adam_jax import _ffi, _numerics, _validation
from adam_jax._alias import from_spec
from adam_jax._conventions import ConventionName, get_convention, step_coefficients
from adam_jax._quantize import BlockQuantization
from adam_jax._rounding import ParamRounding
from adam_jax._spec import AdamSpec
from adam_jax._transform import ScaleByAdamState


def fused_available() -> bool:
    """Whether :func:`adam_jax.fused_adam` can run: its kernel was built at install time.

    The kernel is a C++ extension compiled when adam_jax is installed. An install on a
    machine without a C++17 compiler succeeds without it; :func:`adam_jax.adam` (the same
    optimizer, in pure JAX) needs none.

    Returns:
      True when the compiled kernel can be loaded.

    Examples:
      >>> import adam_jax
      >>> isinstance(adam_jax.fused_available(), bool)
      True

    References:
      JAX, `Foreign function interface (FFI)
      <https://docs.jax.dev/en/latest/ffi.html>`_, 2024.
    """
    return _ffi.kernel_module() is not None


class FusedAdam(NamedTuple):
    """A fused Adam optimizer: ``init(params) -> state``, ``step(params, grads, state)``.

    ``spec`` is the ``AdamSpec`` it is derived from, the same as that of the pure-JAX
    optimizer ``adam_jax.from_spec(spec)``, whose state it shares.
    """

    init: Callable[[optax.Params], optax.OptState]
    step: Callable[[optax.Params, optax.Updates, optax.OptState], tuple[optax.Params, Any]]
    spec: AdamSpec

    @property
    def update(self):
        """Not an optax ``update``: raises, pointing to ``step`` (:func:`adam_jax.fused_adam`)."""
        raise TypeError(
            "fused_adam(...) is not an optax GradientTransformation: it applies the update to "
            "the params itself, so optax.chain, optax.MultiSteps or flax.nnx.Optimizer cannot "
            "call it. Call its .step(params, grads, state) under jax.jit (it returns the new "
            "params and state), or use adam_jax.adam(...), the same optimizer as an optax "
            "transformation."
        )


def fused_adam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike | None = None,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    amsgrad: bool = False,
    convention: ConventionName = "pytorch",
    weight_decay: optax.ScalarOrSchedule = 0.0,
    decoupled_weight_decay: bool = False,
    mask: Any = None,
    maximize: bool = False,
    mu_dtype: jax.typing.DTypeLike | None = None,
    nu_dtype: jax.typing.DTypeLike | None = None,
    quantized_state: BlockQuantization | None = None,
    param_rounding: ParamRounding | None = None,
    rounding_seed: int | None = None,
) -> FusedAdam:
    r"""Adam or AMSGrad as one fused CPU kernel that also applies the update (opt-in).

    The same optimizer as :func:`adam_jax.adam` with the same arguments, followed by
    ``optax.apply_updates``: with :math:`s_t` the step of :func:`adam_jax.scale_by_adam`
    in the chosen ``convention``,

    .. math::

      g_t &\leftarrow -g_t \quad \text{if maximize}, \qquad
      g_t \leftarrow g_t + \lambda p_{t-1} \quad \text{(coupled weight decay)} \\
      p_t &= p_{t-1} - \eta_t s_t \;-\; \eta_t \lambda p_{t-1}
        \quad \text{(last term: decoupled weight decay only)}

    but computed by one C++ loop that reads params, gradients and moments once and writes
    params and moments once, in place (28 bytes per param, 36 with AMSGrad, where XLA's
    CPU code for ``adam_jax.adam`` streams 40 and 52). Under ``jax.jit`` on the CPU the
    results are bitwise those of ``adam_jax.adam`` + ``optax.apply_updates`` (the kernel
    makes the fused multiply-adds XLA makes), NaN and inf included, and the state is
    ``adam_jax.adam``'s own: ``init`` returns what ``adam(...).init`` returns, so a run can
    switch between the two at any step. It is not an ``optax.GradientTransformation``:
    those must return updates that ``optax.apply_updates`` then reads back. Use it under
    ``jax.jit`` with params and state donated, so that the in-place update needs no copy.
    Sharded params (``jax.sharding.NamedSharding``) stay sharded: each device updates its
    own shard, with no communication.

    Only float32 params, gradients and moments, and only on the CPU (XLA already fuses the
    step on GPUs: use :func:`adam_jax.adam` there). The kernel is compiled when adam_jax is
    installed; without it (no C++ compiler then) this raises, and
    :func:`adam_jax.fused_available` is False.

    Args:
      learning_rate: :math:`\eta`, >= 0, or a schedule ``count -> lr``.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator's square root; finite, >= 0; None for the
        convention's framework default (1e-7 for ``"keras"``, else 1e-8).
      eps_root: added inside the square root; >= 0.
      amsgrad: use AMSGrad's running maximum of the second moment.
      convention: ``"pytorch"``, ``"optax"``, ``"keras"`` or ``"paper"``.
      weight_decay: :math:`\lambda`, >= 0, or a schedule.
      decoupled_weight_decay: apply :math:`\lambda` as AdamW instead of adding it to the
        gradient.
      mask: which params are decayed, as for :func:`adam_jax.adam` (a tree of bools or a
        callable of the params); the kernel runs once for the decayed leaves and once for
        the others.
      maximize: ascend the objective instead of descending it.
      mu_dtype: storage dtype of the first moment: None or float32.
      nu_dtype: storage dtype of the second moment: None or float32.
      quantized_state: must be None: the kernel keeps float32 moments (use
        :func:`adam_jax.adam` for 8-bit state).
      param_rounding: must be None: the kernel updates float32 params only.
      rounding_seed: must be None.

    Returns:
      A ``FusedAdam``: ``init(params)`` gives the state of
      ``adam_jax.adam(...same arguments...)``, ``step(params, grads, state)`` gives the
      new ``(params, state)``, and ``spec`` is the ``AdamSpec`` both are derived from
      (``adam_jax.from_spec(spec)`` is the pure-JAX optimizer with the same state).

    Examples:
      >>> import jax, jax.numpy as jnp, adam_jax
      >>> opt = adam_jax.fused_adam(learning_rate=0.1, amsgrad=True)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = opt.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum(p**2))(params)
      >>> step = jax.jit(opt.step, donate_argnums=(0, 2))
      >>> params, state = step(params, grads, state)
      >>> params
      Array([ 0.9, -1.9], dtype=float32)

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015.

      Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, ICLR 2018.

      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019.
    """
    # The one description, validated once (the arguments, as they are, before any other
    # local); its optax optimizer gives the state.
    spec = AdamSpec(**locals())
    module = _ffi.kernel_module()
    if module is None:
        raise RuntimeError(
            "fused_adam's kernel was not built when adam_jax was installed (no working C++17 "
            "compiler then), so adam_jax.fused_available() is False. Reinstall adam_jax with "
            "a compiler (g++ or clang++) on the PATH to get it, or use adam_jax.adam: the same "
            "optimizer in pure JAX."
        )
    _ffi.register(module)
    reference = from_spec(spec)
    for name in ("quantized_state", "param_rounding", "rounding_seed"):
        if getattr(spec, name) is not None:
            raise ValueError(
                f"fused_adam does not take {name}={getattr(spec, name)!r}: its kernel reads and "
                "writes float32 params and float32 moments in one pass. Use adam_jax.adam with "
                f"{name}=... (the same optimizer in pure JAX) for low-memory state or 16-bit "
                "params."
            )
    for name, dtype in (("mu_dtype", mu_dtype), ("nu_dtype", nu_dtype)):
        if dtype is not None and np.dtype(dtype) != np.float32:
            raise TypeError(
                f"fused_adam stores its moments in float32 only, got {name}={dtype!r}; "
                "use None or float32, or adam_jax.adam for other dtypes."
            )
    decays = spec.decays_weights

    def init_fn(params):
        _check_float32("params", jax.tree.leaves(params))
        return reference.init(params)

    def step_fn(params, grads, state):
        treedef = jax.tree.structure(params)
        links = _LinkStates(state)
        adam_state = links.adam
        for name, tree in (("grads", grads), ("mu", adam_state.mu), ("nu", adam_state.nu)):
            if jax.tree.structure(tree) != treedef:
                raise ValueError(
                    f"{name}'s tree does not match the params' tree: got "
                    f"{jax.tree.structure(tree)}, expected {treedef}."
                )
        if spec.amsgrad and adam_state.nu_max is None:
            raise ValueError(
                "amsgrad=True needs a state with nu_max; use this optimizer's init (or "
                "adam_jax.adam's with amsgrad=True)."
            )
        trees = [params, grads, adam_state.mu, adam_state.nu]
        trees += [adam_state.nu_max] if spec.amsgrad else []
        names = ("params", "grads", "mu", "nu", "nu_max")
        arrays = [treedef.flatten_up_to(t) for t in trees]
        _check_platform(arrays[0])
        for name, leaves in zip(names, arrays, strict=False):
            _check_float32(name, leaves)
            for x, p in zip(leaves, arrays[0], strict=True):
                if jnp.shape(x) != jnp.shape(p):
                    raise ValueError(
                        f"{name} has a leaf of shape {jnp.shape(x)} where params has "
                        f"{jnp.shape(p)}."
                    )
        arrays = [[jnp.asarray(x) for x in leaves] for leaves in arrays]

        f32 = jnp.float32
        count = _numerics.safe_increment(adam_state.count)
        k = step_coefficients(
            get_convention(spec.convention),
            spec.amsgrad,
            _numerics.bias_correction(spec.b1, count, f32),
            _numerics.bias_correction(spec.b2, count, f32),
        )
        # As optax.scale_by_learning_rate: -1 * lr, the schedule at its own count.
        if callable(spec.learning_rate):
            neg_lr = -1 * spec.learning_rate(links.lr_count)
        else:
            neg_lr = -1 * spec.learning_rate
        if callable(spec.weight_decay):
            wd = spec.weight_decay(links.wd_count)
        else:
            wd = spec.weight_decay if decays else 0.0
        c = lambda x: jnp.asarray(x, f32)  # noqa: E731
        scalars = jnp.stack(
            [
                c(neg_lr),
                c(k.numerator),
                c(k.inside),
                c(k.before_max),
                c(spec.b1),
                1 - c(spec.b1),
                c(spec.b2),
                1 - c(spec.b2),
                c(spec.eps),
                c(spec.eps_root),
                c(wd) if not spec.decoupled_weight_decay else c(0.0),
                c(wd) if spec.decoupled_weight_decay else c(0.0),
                c(-1.0 if spec.maximize else 1.0),
            ]
        )
        n = len(arrays[0])
        decayed = _decayed_leaves(spec.mask, params, treedef) if decays else [False] * n
        outputs = [[None] * n for _ in range(len(arrays) - 1)]  # p, m, v (, v_max)
        for decay in sorted(set(decayed)):  # one kernel call per kind of leaf
            idx = [i for i in range(n) if decayed[i] == decay]
            options = _ffi.KernelOptions(
                amsgrad=spec.amsgrad,
                coupled=decay and not spec.decoupled_weight_decay,
                decoupled=decay and spec.decoupled_weight_decay,
            )
            leaves_of_kind = [[leaves[i] for i in idx] for leaves in arrays]
            part = _ffi.call_kernel(scalars, leaves_of_kind, options)
            for kind, out in enumerate(outputs):
                for j, i in enumerate(idx):
                    out[i] = part[kind * len(idx) + j]
        new_p, new_m, new_v = (treedef.unflatten(out) for out in outputs[:3])
        new_adam = adam_state._replace(
            count=count,
            mu=new_m,
            nu=new_v,
            nu_max=treedef.unflatten(outputs[3]) if spec.amsgrad else None,
        )
        return new_p, links.advance(new_adam)

    return FusedAdam(init_fn, step_fn, spec)


def _decayed_leaves(mask, params, treedef) -> list[bool]:
    """Per leaf of ``params``, whether weight decay applies (``mask`` as optax's)."""
    if mask is None:
        return [True] * treedef.num_leaves
    tree = _validation.checked_mask(mask)(params) if callable(mask) else mask
    flags = treedef.flatten_up_to(jax.tree.broadcast(tree, params))
    for flag in flags:
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(
                f"fused_adam's mask must give Python bools (static), got {flag!r}; a traced "
                "mask would need a kernel per element."
            )
    return [bool(f) for f in flags]


# optax exports no name for the state of a weight-decay schedule: take its type.
# Under eval_shape, so that importing adam_jax starts no XLA backend (jax.distributed.initialize
# must run before any computation).
_WeightDecaySchedule = type(
    jax.eval_shape(lambda: optax.add_decayed_weights(lambda count: 0.0).init(None))
)
_COUNTED = (ScaleByAdamState, optax.ScaleByScheduleState, _WeightDecaySchedule)


class _LinkStates:
    """The states in ``adam_jax.adam``'s chain state that a step reads and advances.

    Found by type, so the chain's order and its stateless links do not matter: the
    direction's ``ScaleByAdamState``, the learning-rate schedule's count
    (``ScaleByScheduleState``) and the weight-decay schedule's (``WeightDecaySchedule``).
    """

    def __init__(self, state):
        is_counted = lambda x: isinstance(x, _COUNTED)  # noqa: E731
        self._state = state
        found = [x for x in jax.tree.leaves(state, is_leaf=is_counted) if is_counted(x)]
        adam = [x for x in found if isinstance(x, ScaleByAdamState)]
        if len(adam) != 1:
            raise ValueError(
                "state must be the state of fused_adam's init (the optax chain state of "
                f"adam_jax.adam), with one ScaleByAdamState; got {type(state).__name__}."
            )
        self.adam = adam[0]
        lr = [x for x in found if isinstance(x, optax.ScaleByScheduleState)]
        wd = [x for x in found if isinstance(x, _WeightDecaySchedule)]
        self.lr_count = lr[0].count if lr else None
        self.wd_count = wd[0].count if wd else None

    def advance(self, new_adam):
        """The chain state after one step, with ``new_adam`` as the direction's state."""

        def advance(x):
            if isinstance(x, ScaleByAdamState):
                return new_adam
            if isinstance(x, _COUNTED):
                return x._replace(count=_numerics.safe_increment(x.count))
            return x

        is_counted = lambda x: isinstance(x, _COUNTED)  # noqa: E731
        return jax.tree.map(advance, self._state, is_leaf=is_counted)


def _check_float32(name: str, leaves) -> None:
    for x in leaves:
        if jnp.result_type(x) != jnp.float32:
            raise TypeError(
                f"fused_adam supports float32 only, but {name} has a leaf of dtype "
                f"{jnp.result_type(x)}; use adam_jax.adam for other dtypes."
            )


def _check_platform(leaves) -> None:
    platforms = {
        d.platform
        for x in leaves
        if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
        for d in x.devices()
    }
    if not platforms:
        platforms = {jax.default_backend()}
    if platforms != {"cpu"}:
        raise RuntimeError(
            f"fused_adam runs on the CPU only, got arrays on {sorted(platforms)}; use "
            "adam_jax.adam, which XLA already compiles into fused loops on GPUs and TPUs."
        )
