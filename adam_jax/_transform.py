"""``scale_by_adam``: the Adam, AMSGrad and NAdam update equations, in one place.

Read top to bottom: the state, the public transform and its docstring (the
equations), ``scale_by_spec`` (the step of one leaf, in three lines), then the
machinery every Adam-type direction shares (``scale_by_moments``: the moments,
AMSGrad's maximum, the count, dtypes and complex params). The step's scalars
come from the conventions table (``_conventions.step_coefficients``).
"""

import functools
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import jax
import jax.numpy as jnp
import optax

from adam_jax import _chunked, _numerics, _quantize, _validation
from adam_jax._conventions import (
    ConventionName,
    StepCoefficients,
    get_convention,
    nadam_coefficients,
    nadam_momentum,
    step_coefficients,
)
from adam_jax._spec import AdamSpec


class ScaleByAdamState(NamedTuple):
    """State of ``scale_by_adam``.

    Attributes:
      count: number of steps taken, int32 scalar, saturating at the int32 max.
      mu: first moment :math:`m`, the params' tree in ``mu_dtype`` (complex for
        complex params).
      nu: second moment :math:`v`, the params' tree in ``nu_dtype``: real, or
        complex for complex params in a ``complex_as_real`` convention, whose
        real and imaginary parts are the moments of the gradient's parts.
      nu_max: AMSGrad's running maximum of the second moment, raw or
        bias-corrected as the convention says, like ``nu``; None without AMSGrad.
      mu_product: NAdam's :math:`\\prod_{i \\le t} \\mu_i` with a momentum
        schedule, a float32 (or float64) scalar; None otherwise.
    """

    count: jax.Array  # type: ignore[assignment]  # shape=(), int32; shadows tuple.count
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None
    mu_product: jax.Array | None = None


def scale_by_adam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike | None = None,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    amsgrad: bool = False,
    nesterov: bool = False,
    momentum_decay: jax.typing.ArrayLike | None = None,
    convention: ConventionName = "pytorch",
    mu_dtype: jax.typing.DTypeLike | None = None,
    nu_dtype: jax.typing.DTypeLike | None = None,
    quantized_state: _quantize.BlockQuantization | None = None,
) -> optax.GradientTransformation:
    r"""Rescales gradients into the Adam (or AMSGrad, or NAdam) direction.

    No learning rate and no sign flip: chain with
    ``optax.scale_by_learning_rate`` (or use :func:`adam_jax.adam`).

    With :math:`\beta_1, \beta_2` = ``b1, b2``, :math:`\epsilon` = ``eps`` and
    :math:`\bar\epsilon` = ``eps_root``, for each element and step
    :math:`t = 1, 2, \dots`:

    .. math::

      m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
      v_t &= \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2 \\
      c_1 &= 1 - \beta_1^t, \quad c_2 = 1 - \beta_2^t

    then, by ``convention`` (:math:`r_t = v_t` without AMSGrad):

    - ``"pytorch"`` (``torch.optim.Adam``): AMSGrad keeps
      :math:`r_t = \max(r_{t-1}, v_t)`;
      :math:`s_t = (m_t / c_1) / (\sqrt{r_t / c_2 + \bar\epsilon} + \epsilon)`.
    - ``"optax"`` (``optax.amsgrad``): AMSGrad keeps
      :math:`r_t = \max(r_{t-1}, v_t / c_2)`, else :math:`r_t = v_t / c_2`;
      :math:`s_t = (m_t / c_1) / (\sqrt{r_t + \bar\epsilon} + \epsilon)`.
    - ``"keras"`` (``keras.optimizers.Adam``): :math:`r_t = \max(r_{t-1}, v_t)`;
      :math:`s_t = \sqrt{c_2}/c_1 \cdot m_t / (\sqrt{r_t + \bar\epsilon} + \epsilon)`,
      the "epsilon hat" form of Kingma & Ba, section 2.
    - ``"paper"``: Adam as ``"pytorch"``; AMSGrad as Reddi et al.'s Algorithm 2,
      without bias correction: :math:`s_t = m_t / (\sqrt{r_t + \bar\epsilon} + \epsilon)`.

    With ``nesterov=True`` (NAdam, Dozat 2016), with the momentum schedule
    :math:`\mu_t = \beta_1 (1 - \frac12 0.96^{t\psi})` (:math:`\psi` =
    ``momentum_decay``, by default the convention's: 0.004 for ``"pytorch"``
    and ``"paper"``, 1 for ``"keras"``; ``"optax"`` keeps :math:`\mu_t = \beta_1`):

    .. math::

      s_t = \Big(\frac{\mu_{t+1}\, m_t}{1 - \prod_{i \le t+1} \mu_i}
        + \frac{(1 - \mu_t)\, g_t}{1 - \prod_{i \le t} \mu_i}\Big)
        \Big/ \big(\sqrt{v_t / c_2 + \bar\epsilon} + \epsilon\big)

    Complex params: ``"pytorch"`` keeps separate moments for the real and
    imaginary parts, as ``torch.optim.Adam`` does (``view_as_real``); the other
    conventions use :math:`|g_t|^2`, as optax does.

    The output is :math:`s_t`. Arithmetic runs in float32 or wider, and the
    output is cast back to the gradient's dtype. A zero denominator (only
    possible with ``eps = 0``) gives a zero step, not ``0/0``; a NaN or infinite
    gradient gives a NaN step, as in PyTorch and optax.

    Args:
      b1: decay of the first moment, in [0, 1) (and below 1 in float32).
      b2: decay of the second moment, in [0, 1) (and below 1 in float32).
      eps: added to the square root in the denominator; finite, >= 0; None for
        the convention's framework default (1e-7 for ``"keras"``, else 1e-8).
      eps_root: added inside the square root; finite, >= 0.
      amsgrad: use AMSGrad's running maximum of the second moment.
      nesterov: NAdam's Nesterov momentum (no AMSGrad).
      momentum_decay: NAdam's :math:`\psi`, finite, >= 0; None for the
        convention's.
      convention: ``"pytorch"``, ``"optax"``, ``"keras"`` or ``"paper"``; see
        ``adam_jax.CONVENTIONS``.
      mu_dtype: storage dtype of :math:`m` (a real float dtype, made complex for
        complex params); default float32 for 16-bit params, else the params'.
      nu_dtype: storage dtype of :math:`v` (and the AMSGrad maximum); default as
        for ``mu_dtype``.
      quantized_state: an ``adam_jax.BlockQuantization`` to keep :math:`m`,
        :math:`v` and the AMSGrad maximum of every large real leaf as 8-bit codes
        with a float32 scale per block (Dettmers et al.): each step dequantizes them,
        runs the equations above in float32 and quantizes the new moments (rounded
        stochastically by default: its ``rounding``); the step itself is computed
        before requantizing. None (default) keeps floats.

    Returns:
      An ``optax.GradientTransformation`` whose state is a ``ScaleByAdamState``
      (with ``adam_jax.QuantizedArray`` leaves where moments are quantized).

    Examples:
      >>> import jax.numpy as jnp, adam_jax
      >>> tx = adam_jax.scale_by_adam()
      >>> params = {"w": jnp.zeros(3)}
      >>> state = tx.init(params)
      >>> step, state = tx.update({"w": jnp.array([1.0, -2.0, 0.0])}, state)
      >>> step["w"]
      Array([ 1., -1.,  0.], dtype=float32)

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015.

      Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, ICLR 2018.

      Dozat, `Incorporating Nesterov Momentum into Adam
      <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_, ICLR 2016 workshop.
    """
    spec = AdamSpec(
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        amsgrad=amsgrad,
        nesterov=nesterov,
        momentum_decay=momentum_decay,
        convention=convention,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        quantized_state=quantized_state,
    )
    return scale_by_spec(spec)


def scale_by_spec(spec: AdamSpec) -> optax.GradientTransformation:
    """The direction ``spec`` describes (see :func:`scale_by_adam` for the equations)."""
    convention = get_convention(spec.convention)
    psi = spec.nadam_momentum_decay
    static_eps = _validation.static_value("eps", spec.eps)  # None when traced (injected)
    eps_is_positive = static_eps is not None and static_eps > 0

    def coefficients(corrections: BiasCorrections) -> StepCoefficients:
        if spec.nesterov:
            return nadam_coefficients(
                spec.b1,
                psi,
                corrections.step_count,
                corrections.mu_product,
                corrections.first,
                corrections.second,
            )
        return step_coefficients(convention, spec.amsgrad, corrections.first, corrections.second)

    def step(moments: LeafMoments, k: StepCoefficients) -> jax.Array:
        numerator = k.numerator * moments.first
        if k.gradient is not None:  # NAdam
            numerator = numerator + k.gradient * moments.gradient
        real = moments.second.dtype  # m and g may be complex; r never is
        inside = moments.second * k.inside
        if not _validation.is_static_zero(spec.eps_root):  # r * inside >= 0: + 0 changes nothing
            inside = inside + jnp.asarray(spec.eps_root, real)
        denominator = jnp.sqrt(inside) + jnp.asarray(spec.eps, real)
        if eps_is_positive:  # the denominator is >= eps > 0 (or NaN): never 0 / 0
            return numerator / denominator
        return _numerics.safe_divide(numerator, denominator)

    momentum_schedule = None
    if spec.nesterov and psi is not None:

        def momentum_schedule(count: jax.Array, dtype) -> jax.Array:
            return nadam_momentum(spec.b1, psi, count, dtype)

    return scale_by_moments(
        spec.b1,
        spec.b2,
        Direction(coefficients, step),
        amsgrad=spec.amsgrad,
        mu_dtype=spec.mu_dtype,
        nu_dtype=spec.nu_dtype,
        momentum_schedule=momentum_schedule,
        complex_as_real=convention.complex_as_real,
        quantization=spec.quantized_state,
    )


# --- the machinery every Adam-type direction shares --------------------------------


class BiasCorrections(NamedTuple):
    """What a step's scalars are computed from, once per step, in float32 or wider."""

    first: jax.Array  # c_1 = 1 - b1^t
    second: jax.Array  # c_2 = 1 - b2^t
    step_count: jax.Array  # t, int32
    mu_product: jax.Array | None  # NAdam's prod_{i <= t} mu_i with a schedule, else None


class LeafMoments(NamedTuple):
    """One real leaf after this step's moment updates, in its compute dtype."""

    first: jax.Array  # m_t
    second: jax.Array  # r_t: v_t, or AMSGrad's running maximum
    gradient: jax.Array  # g_t


class ScalesMaximum(Protocol):
    """A step's scalars carry the factor applied to :math:`v_t` before AMSGrad's maximum."""

    @property
    def before_max(self) -> jax.Array: ...


Scalars = TypeVar("Scalars", bound=ScalesMaximum)


class Direction(NamedTuple, Generic[Scalars]):
    """How a direction turns the moments into a step.

    ``coefficients`` computes the step's scalars once per step; the machinery
    casts each to the leaf's compute dtype and passes them to ``step``, which maps
    one leaf's moments to :math:`s_t`.
    """

    coefficients: Callable[[BiasCorrections], Scalars]
    step: Callable[[LeafMoments, Scalars], jax.Array]


def scale_by_moments(
    b1,
    b2,
    direction: Direction,
    *,
    amsgrad: bool,
    mu_dtype,
    nu_dtype,
    momentum_schedule: Callable[[jax.Array, Any], jax.Array] | None = None,
    complex_as_real: bool = False,
    quantization: _quantize.BlockQuantization | None = None,
) -> optax.GradientTransformation:
    """The moments, AMSGrad's maximum and the count, around ``direction``.

    Keeps :math:`m_t`, :math:`v_t` and, with AMSGrad,
    :math:`r_t = \\max(r_{t-1}, k \\cdot v_t)` (:math:`k` the scalars'
    ``before_max``) in a ``ScaleByAdamState``, with the dtype rules of
    :func:`scale_by_adam`, and returns ``direction.step`` of each leaf
    (:math:`r_t = v_t` without AMSGrad) cast to the gradient's dtype.

    Args:
      b1, b2: the moments' decays (validated by the caller).
      direction: the step's scalars and the step of one leaf.
      amsgrad: keep the running maximum.
      mu_dtype, nu_dtype: storage dtypes, as for :func:`scale_by_adam`.
      momentum_schedule: ``(t, dtype) -> mu_t``: keep NAdam's
        :math:`\\prod_{i \\le t} \\mu_i` in the state's ``mu_product``.
      complex_as_real: complex leaves are stepped as pairs of real numbers, with
        a complex ``nu`` holding the moments of the real and imaginary parts.
      quantization: store the moments of large real leaves in 8 bits
        (``quantized_state`` of :func:`scale_by_adam`); None keeps them in floats.
    """

    def init_fn(params):
        _check_quantizable(params, quantization)

        def zeros(requested, second_moment):
            def make(p):
                dtype = _numerics.moment_dtype(p, requested)
                if second_moment and not (complex_as_real and _is_complex(p)):
                    dtype = _numerics.real_dtype(dtype)
                # zeros_like keeps the param's sharding (and memory kind); zeros(shape) would not.
                zeros = jnp.zeros_like(p, dtype)
                if quantization is not None and quantization.applies_to(p):
                    return _quantize.quantize(
                        zeros, signed=not second_moment, block_size=quantization.block_size
                    )
                return zeros

            return jax.tree.map(make, params)

        mu_product = None
        if momentum_schedule is not None:
            mu_product = jnp.ones([], _numerics.widest_compute_dtype(params))
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=zeros(mu_dtype, second_moment=False),
            nu=zeros(nu_dtype, second_moment=True),
            nu_max=zeros(nu_dtype, second_moment=True) if amsgrad else None,
            mu_product=mu_product,
        )

    def load(stored, *, signed: bool):
        """A moment as an array: dequantized (float32) when it is stored in 8 bits."""
        if isinstance(stored, _quantize.QuantizedArray):
            assert quantization is not None  # _check_layout made sure
            return _quantize.dequantize(stored, signed=signed, block_size=quantization.block_size)
        return stored

    def store(value, like, *, signed: bool, random_bits=None):
        """``value`` in the storage of ``like``: its dtype, or its 8-bit codes (rounded
        stochastically with ``random_bits``)."""
        if isinstance(like, _quantize.QuantizedArray):
            assert quantization is not None
            return _quantize.quantize(
                value.astype(jnp.float32),
                signed=signed,
                block_size=quantization.block_size,
                random_bits=random_bits,
            )
        return value.astype(like.dtype)

    def update_fn(updates, state, params=None):
        del params
        count = _numerics.safe_increment(state.count)
        scalar_dtype = _numerics.widest_compute_dtype(updates)
        mu_product = None
        if momentum_schedule is not None:
            mu_product = state.mu_product * momentum_schedule(count, state.mu_product.dtype)
        scalars = direction.coefficients(
            BiasCorrections(
                first=_numerics.bias_correction(b1, count, scalar_dtype),
                second=_numerics.bias_correction(b2, count, scalar_dtype),
                step_count=count,
                mu_product=mu_product,
            )
        )

        @functools.cache
        def constants(dtype) -> tuple:
            """Per compute dtype, once per step: the decays, their complements, the scalars."""
            decay1, decay2 = jnp.asarray(b1, dtype), jnp.asarray(b2, dtype)
            leaf_scalars = jax.tree.map(lambda x: jnp.asarray(x, dtype), scalars)
            return decay1, 1 - decay1, decay2, 1 - decay2, leaf_scalars

        def real_leaf(g, m, v, v_max, leaf_constants):
            """One real leaf in its compute dtype: the new (step, m, v, r)."""
            decay1, rest1, decay2, rest2, leaf_scalars = leaf_constants
            m_new = decay1 * m + rest1 * g
            v_new = decay2 * v + rest2 * _abs_sq(g)
            r = v_new
            if v_max is not None:
                r = jnp.maximum(v_max, v_new * leaf_scalars.before_max)
            return direction.step(LeafMoments(m_new, r, g), leaf_scalars), m_new, v_new, r

        def leaf(g, stored_m, stored_v, stored_max, leaf_constants, random_bits=(None,) * 3):
            """One leaf's step, in the gradient's dtype, and new moments, stored as the old
            (``random_bits``: each moment's, for stochastic rounding of its codes)."""
            m = load(stored_m, signed=True)
            v, v_max = (
                None if x is None else load(x, signed=False) for x in (stored_v, stored_max)
            )
            dtype = _numerics.compute_dtype(jnp.result_type(g))
            real = _numerics.real_dtype(dtype)
            if complex_as_real and _is_complex(g):  # torch's view_as_real: each part alone
                as_pair = lambda z: jnp.stack([z.real, z.imag], -1).astype(real)  # noqa: E731
                pairs = [None if x is None else as_pair(x) for x in (g, m, v, v_max)]
                out = [
                    jax.lax.complex(x[..., 0], x[..., 1]) for x in real_leaf(*pairs, leaf_constants)
                ]
            else:  # real leaves; complex leaves with a real v of |g|^2, as optax
                cast = lambda x, d: None if x is None else x.astype(d)  # noqa: E731
                out = real_leaf(
                    jnp.asarray(g, dtype),
                    cast(m, dtype),
                    cast(v, real),
                    cast(v_max, real),
                    leaf_constants,
                )
            step, m_new, v_new, r = out
            bits_m, bits_v, bits_max = random_bits
            return (
                step.astype(jnp.result_type(g)),
                store(m_new, stored_m, signed=True, random_bits=bits_m),
                store(v_new, stored_v, signed=False, random_bits=bits_v),
                None
                if stored_max is None
                else store(r, stored_max, signed=False, random_bits=bits_max),
            )

        def stepped(index, g, stored_m, stored_v, stored_max):
            """``leaf``, over chunks of whole blocks where the moments are quantized."""
            _check_layout(g, stored_m, quantization)
            real = _numerics.real_dtype(_numerics.compute_dtype(jnp.result_type(g)))
            leaf_constants = constants(real)  # outside the chunks' loop: traced once
            if not isinstance(stored_m, _quantize.QuantizedArray):
                return leaf(g, stored_m, stored_v, stored_max, leaf_constants)
            assert quantization is not None
            keys = None if leaf_keys is None else leaf_keys[index]  # m's, v's, the maximum's

            def chunk_step(chunk, positions):
                if keys is None:
                    return leaf(*chunk, leaf_constants)
                at = positions()  # without AMSGrad, XLA drops the maximum's unused bits
                bits = tuple(_quantize.position_bits(k, at) for k in keys)
                return leaf(*chunk, leaf_constants, bits)

            return _chunked.in_chunks(
                chunk_step,
                (jnp.asarray(g), stored_m, stored_v, stored_max),
                block_size=quantization.block_size,
                chunk_size=quantization.chunk_size,
            )

        grads, treedef = jax.tree.flatten(updates)
        leaf_keys = None
        if quantization is not None and quantization.rounding == "stochastic":
            # One split for every leaf: a Threefry per leaf would multiply the compile time.
            step_key = jax.random.fold_in(jax.random.key(quantization.seed), count)
            leaf_keys = jax.random.key_data(jax.random.split(step_key, (len(grads), 3)))
        mus = _moments_like(treedef, state.mu)
        nus = _moments_like(treedef, state.nu)
        maxes = _moments_like(treedef, state.nu_max) if amsgrad else [None] * len(grads)
        out = [stepped(i, *args) for i, args in enumerate(zip(grads, mus, nus, maxes, strict=True))]
        new_state = ScaleByAdamState(
            count=count,
            mu=treedef.unflatten([o[1] for o in out]),
            nu=treedef.unflatten([o[2] for o in out]),
            nu_max=treedef.unflatten([o[3] for o in out]) if amsgrad else None,
            mu_product=mu_product,
        )
        return treedef.unflatten([o[0] for o in out]), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def _is_complex(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.complexfloating)


def _abs_sq(x: jax.Array) -> jax.Array:
    """``|x|**2`` as a real array."""
    if jnp.iscomplexobj(x):
        return jnp.real(x * jnp.conj(x))
    return x * x


def _moments_like(treedef, moments) -> list:
    """The moments' leaves, one per gradient leaf (a quantized moment is one leaf)."""
    try:
        return treedef.flatten_up_to(moments)
    except (ValueError, TypeError):
        raise ValueError(
            "the gradients' tree does not match the optimizer state's tree: got "
            f"{treedef}, expected the params' tree of {jax.tree.structure(moments)}. "
            "Initialise the optimizer with params of the same structure."
        ) from None


def _check_layout(gradient, moment, quantization) -> None:
    """A gradient must have its param's shape ((1,) for (3,) would broadcast silently), and
    its moment the storage this optimizer keeps for it (float or 8-bit)."""
    if jnp.shape(gradient) != jnp.shape(_stored_array(moment)):
        raise ValueError(
            f"a gradient of shape {jnp.shape(gradient)} was given for a param of shape "
            f"{jnp.shape(_stored_array(moment))}; gradients must have their params' shapes "
            "(no broadcasting)."
        )
    quantized = isinstance(moment, _quantize.QuantizedArray)
    expected = quantization is not None and quantization.applies_to(gradient)
    if quantized != expected:
        layouts = {True: "8-bit quantized", False: "float"}
        raise ValueError(
            f"the optimizer state holds {layouts[quantized]} moments for a param of shape "
            f"{jnp.shape(gradient)}, but this optimizer keeps {layouts[expected]} ones "
            f"(quantized_state={quantization!r}): a state of one layout cannot be resumed "
            "into an optimizer of the other. Build the optimizer the state was made with."
        )


def _stored_array(moment) -> jax.Array:
    return moment.codes if isinstance(moment, _quantize.QuantizedArray) else moment


def _check_quantizable(params, quantization) -> None:
    if quantization is None:
        return
    for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
        if quantization.rounding == "stochastic" and jnp.size(p) >= 2**32:
            raise ValueError(
                f"rounding='stochastic' draws each element's bits from its uint32 position; "
                f"the leaf {jax.tree_util.keystr(path)} has {jnp.size(p)} >= 2**32 elements. "
                "Split it, or use rounding='nearest'."
            )
        if jnp.result_type(p) == jnp.float64:
            raise ValueError(
                f"quantized_state with float64 params (the leaf {jax.tree_util.keystr(path)}): "
                "8-bit moments would round float64 arithmetic silently; use float32 or 16-bit "
                "params, or quantized_state=None."
            )
