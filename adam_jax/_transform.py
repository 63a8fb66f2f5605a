"""``scale_by_adam``: the Adam and AMSGrad update equations, in one place."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from adam_jax import _conventions, _numerics, _validation


class ScaleByAdamState(NamedTuple):
    """State of ``scale_by_adam``.

    Attributes:
      count: number of steps taken, int32 scalar, saturating at the int32 max.
      mu: first moment :math:`m`, the params' tree in ``mu_dtype``.
      nu: second moment :math:`v`, the params' tree in ``nu_dtype`` (real).
      nu_max: AMSGrad's running maximum of the second moment, raw or
        bias-corrected as the convention says, in ``nu_dtype``; None without
        AMSGrad.
    """

    count: jax.Array  # shape=(), dtype=jnp.int32
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None


def scale_by_adam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    amsgrad: bool = False,
    convention: str = "pytorch",
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Rescales gradients into the Adam (or AMSGrad) direction.

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

    The output is :math:`s_t`. Arithmetic runs in float32 or wider, and the
    output is cast back to the gradient's dtype. A zero denominator (only
    possible with ``eps = 0``) gives a zero step, not ``0/0``.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the square root in the denominator; finite, >= 0.
      eps_root: added inside the square root; >= 0.
      amsgrad: use AMSGrad's running maximum of the second moment.
      convention: ``"pytorch"``, ``"optax"``, ``"keras"`` or ``"paper"``; see
        ``adam_jax.CONVENTIONS``.
      mu_dtype: storage dtype of :math:`m`; default float32 for 16-bit params,
        else the params' dtype.
      nu_dtype: storage dtype of :math:`v` (and the AMSGrad maximum); default as
        for ``mu_dtype``, real.

    Returns:
      An ``optax.GradientTransformation`` whose state is a ``ScaleByAdamState``.

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
    """
    _validation.check_moments(b1, b2, amsgrad)
    _validation.check_epsilons(eps, eps_root)
    conv = _conventions.get_convention(convention)

    def scalars(bc1, bc2):
        return _conventions.step_coefficients(conv, amsgrad, bc1, bc2)

    def direction(m, r, k, c):
        denom = jnp.sqrt(r * c(k.inside) + c(eps_root)) + c(eps)
        return _numerics.safe_divide(c(k.numerator) * m, denom)

    return scale_by_moments(
        b1,
        b2,
        amsgrad=amsgrad,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        scalars=scalars,
        direction=direction,
    )


def scale_by_moments(
    b1, b2, *, amsgrad: bool, mu_dtype, nu_dtype, scalars, direction
) -> optax.GradientTransformation:
    """The machinery every Adam-type direction shares: moments, maximum, count.

    Keeps :math:`m_t`, :math:`v_t` and, with AMSGrad,
    :math:`r_t = \\max(r_{t-1}, k \\cdot v_t)` in a ``ScaleByAdamState``, with the
    dtype rules of :func:`scale_by_adam`, and returns ``direction(m_t, r_t, k, c)``
    (:math:`r_t = v_t` without AMSGrad) cast to the gradient's dtype.

    Args:
      b1, b2: the moments' decays (validated by the caller).
      amsgrad: keep the running maximum.
      mu_dtype, nu_dtype: storage dtypes, as for :func:`scale_by_adam`.
      scalars: ``(c1, c2) -> k``, the step's scalars from the bias corrections
        :math:`c_i = 1 - \\beta_i^t`, computed once per step in float32 or wider;
        ``k.before_max`` scales :math:`v_t` before the maximum.
      direction: ``(m, r, k, c) -> step`` for one leaf, where ``c`` casts a scalar
        to the leaf's compute dtype.
    """

    def init_fn(params):
        def zeros(requested, real):
            def make(p):
                dtype = _numerics.moment_dtype(p, requested)
                # zeros_like keeps the param's sharding (and memory kind); zeros(shape) would not.
                return jnp.zeros_like(p, _numerics.real_dtype(dtype) if real else dtype)

            return jax.tree.map(make, params)

        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=zeros(mu_dtype, real=False),
            nu=zeros(nu_dtype, real=True),
            nu_max=zeros(nu_dtype, real=True) if amsgrad else None,
        )

    def update_fn(updates, state, params=None):
        del params
        _check_same_tree(updates, state.mu)
        count = _numerics.safe_increment(state.count)
        scalar_dtype = _numerics.widest_compute_dtype(updates)
        k = scalars(
            _numerics.bias_correction(b1, count, scalar_dtype),
            _numerics.bias_correction(b2, count, scalar_dtype),
        )

        def leaf(g, m, v, v_max):
            dtype = _numerics.compute_dtype(g.dtype)
            real = _numerics.real_dtype(dtype)
            c = lambda x: jnp.asarray(x, real)  # noqa: E731
            g = g.astype(dtype)
            m_new = c(b1) * m.astype(dtype) + (1 - c(b1)) * g
            v_new = c(b2) * v.astype(real) + (1 - c(b2)) * _abs_sq(g)
            r = v_new
            if v_max is not None:
                r = jnp.maximum(v_max.astype(real), v_new * c(k.before_max))
            step = direction(m_new, r, k, c)
            return step, m_new.astype(m.dtype), v_new.astype(v.dtype), r

        grads, treedef = jax.tree.flatten(updates)
        mus = treedef.flatten_up_to(state.mu)
        nus = treedef.flatten_up_to(state.nu)
        maxes = treedef.flatten_up_to(state.nu_max) if amsgrad else [None] * len(grads)
        out = [leaf(*args) for args in zip(grads, mus, nus, maxes, strict=True)]
        step = [s.astype(g.dtype) for (s, *_), g in zip(out, grads, strict=True)]
        nu_max = None
        if amsgrad:
            nu_max = treedef.unflatten(
                [r.astype(x.dtype) for (*_, r), x in zip(out, maxes, strict=True)]
            )
        new_state = ScaleByAdamState(
            count=count,
            mu=treedef.unflatten([o[1] for o in out]),
            nu=treedef.unflatten([o[2] for o in out]),
            nu_max=nu_max,
        )
        return treedef.unflatten(step), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def _abs_sq(x: jax.Array) -> jax.Array:
    """``|x|**2`` as a real array."""
    if jnp.iscomplexobj(x):
        return jnp.real(x * jnp.conj(x))
    return x * x


def _check_same_tree(updates, moments) -> None:
    if jax.tree.structure(updates) != jax.tree.structure(moments):
        raise ValueError(
            "the gradients' tree does not match the optimizer state's tree: got "
            f"{jax.tree.structure(updates)}, expected {jax.tree.structure(moments)}. "
            "Initialise the optimizer with params of the same structure."
        )
