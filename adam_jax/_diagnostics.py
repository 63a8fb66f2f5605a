"""``epsilon_report``: how often epsilon dominates Adam's denominator."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from adam_jax import _numerics
from adam_jax._conventions import StepCoefficients, get_convention, step_coefficients
from adam_jax._quantize import QuantizedArray, dequantize
from adam_jax._spec import AdamSpec
from adam_jax._transform import ScaleByAdamState

QUANTILES = (0.01, 0.5, 0.99)


def find_adam_state(opt_state) -> ScaleByAdamState:
    """The one ``ScaleByAdamState`` inside ``opt_state``.

    Looks through any pytree of states: ``optax.chain``,
    ``optax.inject_hyperparams``, ``optax.MultiSteps``, ``optax.apply_if_finite``
    and ``flax.nnx.Optimizer``'s ``opt_state`` included.

    Raises:
      ValueError: when there is no adam_jax state, or more than one.
    """
    is_adam = lambda x: isinstance(x, ScaleByAdamState)  # noqa: E731
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(x)]
    if len(found) != 1:
        raise ValueError(
            f"epsilon_report needs exactly one adam_jax ScaleByAdamState in the "
            f"optimizer state, found {len(found)}; pass the state of an "
            "adam_jax optimizer (adam_jax.adam, amsgrad, adamw or scale_by_adam)."
        )
    return found[0]


def sqrt_terms(state: ScaleByAdamState, spec: AdamSpec, *, b2=None, eps_root=None):
    """The square-root term of the denominator, per coordinate, as a tree.

    It is what ``eps`` is added to: :math:`\\sqrt{r_t/c_2 + \\bar\\epsilon}`
    (``"pytorch"``), :math:`\\sqrt{r_t + \\bar\\epsilon}` (``"keras"``), etc.; see
    :func:`adam_jax.scale_by_adam`. Before the first step it is
    :math:`\\sqrt{\\bar\\epsilon}`. Complex moments kept as pairs (PyTorch's
    convention) count as two coordinates. ``b2`` and ``eps_root`` override the
    spec's (values injected by ``optax.inject_hyperparams``).
    """
    b2 = spec.b2 if b2 is None else b2
    eps_root = spec.eps_root if eps_root is None else eps_root
    amsgrad = state.nu_max is not None
    second_moment = state.nu_max if amsgrad else state.nu
    dtype = _numerics.widest_compute_dtype(state.nu)
    count = jnp.maximum(state.count, 1)  # the moments are zero before step 1
    bc2 = _numerics.bias_correction(b2, count, dtype)
    one = jnp.ones_like(bc2)
    if spec.nesterov:
        coef = StepCoefficients(numerator=one, inside=1 / bc2, before_max=one)
    else:
        coef = step_coefficients(get_convention(spec.convention), amsgrad, one, bc2)

    def term(r):
        if isinstance(r, QuantizedArray):  # 8-bit state: the values it stands for
            assert spec.quantized_state is not None
            block_size = spec.quantized_state.block_size
            r = dequantize(r, signed=False, block_size=block_size)
        if jnp.iscomplexobj(r):  # the moments of the real and imaginary parts
            r = jnp.stack([r.real, r.imag], -1)
        r = r.astype(_numerics.compute_dtype(r.dtype))
        return jnp.sqrt(r * coef.inside.astype(r.dtype) + jnp.asarray(eps_root, r.dtype))

    is_quantized = lambda x: isinstance(x, QuantizedArray)  # noqa: E731
    return jax.tree.map(term, second_moment, is_leaf=is_quantized)


def _summary(terms: list, eps) -> dict:
    if not terms or sum(t.size for t in terms) == 0:
        raise ValueError(
            "epsilon_report needs a state with at least one coordinate; the optimizer "
            "state holds no moments (were the params an empty tree?)."
        )
    flat = jnp.concatenate([jnp.ravel(t) for t in terms])
    quantiles = jnp.quantile(flat, jnp.asarray(QUANTILES, flat.dtype))
    report = {
        "dominated_fraction": jnp.mean(jnp.asarray(eps, flat.dtype) >= flat),
        "zero_fraction": jnp.mean(flat == 0),
    }
    for q, value in zip(QUANTILES, quantiles, strict=True):
        report[f"sqrt_term_q{round(q * 100):02d}"] = value
    return report


def _spec_of(optimizer) -> AdamSpec:
    spec = optimizer if isinstance(optimizer, AdamSpec) else getattr(optimizer, "spec", None)
    if not isinstance(spec, AdamSpec):
        raise TypeError(
            "epsilon_report needs the adam_jax optimizer that made the state (what "
            "adam_jax.adam, amsgrad, adamw or nadam returned) or its AdamSpec, got "
            f"{type(optimizer).__name__}."
        )
    return spec


def _injected(opt_state) -> dict:
    """Hyperparameters injected by ``optax.inject_hyperparams``, found in ``opt_state``."""

    def is_injected(x):  # InjectHyperparamsState, or InjectStatefulHyperparamsState
        return isinstance(x, tuple) and hasattr(x, "hyperparams") and hasattr(x, "inner_state")

    for x in jax.tree.leaves(opt_state, is_leaf=is_injected):
        if is_injected(x):
            return dict(x.hyperparams)
    return {}


def epsilon_report(
    opt_state: optax.OptState,
    optimizer: Any,
    *,
    eps: jax.typing.ArrayLike | None = None,
    per_leaf: bool = False,
) -> dict:
    r"""How often epsilon dominates the denominator of Adam's step.

    Adam's step is :math:`\hat m / (\sqrt{\hat r} + \epsilon)`. Where
    :math:`\epsilon \ge \sqrt{\hat r}` (the convention's square-root term, see
    :func:`adam_jax.scale_by_adam`), epsilon takes over the denominator and the
    coordinate moves like momentum SGD with step :math:`\eta / \epsilon` rather
    than like Adam. The settings (eps, eps_root, b2, convention, NAdam) are read
    from ``optimizer``, so they cannot disagree with the state; values injected
    by ``optax.inject_hyperparams`` found in ``opt_state`` take precedence.
    Jittable; no host sync.

    Args:
      opt_state: a state holding one adam_jax ``ScaleByAdamState``, anywhere
        inside ``optax.chain``, ``inject_hyperparams``, ``MultiSteps`` or
        ``apply_if_finite`` states.
      optimizer: the adam_jax optimizer that made the state (an
        ``adam_jax.Optimizer``, a ``FusedAdam``: anything with its ``spec``), or
        that ``AdamSpec``.
      eps: a what-if epsilon to compare with instead of the optimizer's (e.g. to
        sweep epsilon over one state); None for the optimizer's.
      per_leaf: also return the same statistics for each leaf, under
        ``"per_leaf"``, as a tree shaped like the params.

    Returns:
      A dict of JAX scalars (float32, or float64 for float64 moments), keyed

      - ``dominated_fraction``: the fraction of coordinates where
        :math:`\epsilon \ge` the square-root term;
      - ``zero_fraction``: the fraction where the square-root term is 0
        (coordinates that have seen only zero gradients, or gradients whose
        square underflows); they count as dominated for every :math:`\epsilon`,
        0 included, so this is the floor of ``dominated_fraction``;
      - ``sqrt_term_q01``, ``sqrt_term_q50``, ``sqrt_term_q99``: the 1%, 50%
        and 99% quantiles of the square-root term;
      - ``per_leaf`` (with ``per_leaf=True``): the same dict for each leaf, in
        the params' tree.

    Raises:
      ValueError: when ``opt_state`` holds no adam_jax state, more than one, or
        no coordinate.
      TypeError: when ``optimizer`` is not an adam_jax optimizer or spec.

    Examples:
      >>> import jax.numpy as jnp, adam_jax
      >>> opt = adam_jax.adam(1e-3, eps=1e-8)
      >>> params = jnp.zeros(4)
      >>> _, state = opt.update(jnp.array([1.0, 1e-3, 1e-12, 0.0]), opt.init(params))
      >>> float(adam_jax.epsilon_report(state, opt)["dominated_fraction"])
      0.5

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015.
    """
    spec = _spec_of(optimizer)
    state = find_adam_state(opt_state)
    injected = _injected(opt_state)
    if eps is None:
        eps = injected.get("eps", spec.eps)
    terms = sqrt_terms(state, spec, b2=injected.get("b2"), eps_root=injected.get("eps_root"))
    leaves = jax.tree.leaves(terms)
    treedef: Any = jax.tree.structure(terms)
    report = _summary(leaves, eps)
    if per_leaf:
        report["per_leaf"] = treedef.unflatten([_summary([t], eps) for t in leaves])
    return report
