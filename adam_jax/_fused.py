"""``fused_adam``: an opt-in Adam step that updates params and moments in one pass (CPU).

XLA's CPU backend compiles a pure-JAX Adam step into three loops per array, which stream
40 bytes per float32 param (see docs/performance.md). The C++ kernel in ``csrc/adam_step.cc``
reads params, gradients and moments once and writes params and moments once, in place:
28 bytes per param (36 with AMSGrad). It is compiled with the system C++ compiler the first
time it is used, cached, and called through ``jax.ffi``. ``adam_jax.adam`` stays the
reference and the default.
"""

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from adam_jax import _chain, _conventions, _numerics, _validation
from adam_jax._transform import ScaleByAdamState

_TARGET = "adam_jax_step"
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "adam_step.cc")
_FLAGS = (
    "-O3",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-pthread",
    # Values are unchanged: no errno or trap bookkeeping (lets sqrt and the select
    # vectorise), and no fused multiply-adds, so rounding matches XLA's.
    "-fno-math-errno",
    "-fno-trapping-math",
    "-ffp-contract=off",
)


class FusedAdam(NamedTuple):
    """A fused Adam optimizer: ``init(params) -> state``, ``step(params, grads, state)``."""

    init: Callable[[optax.Params], ScaleByAdamState]
    step: Callable[
        [optax.Params, optax.Updates, ScaleByAdamState], tuple[optax.Params, ScaleByAdamState]
    ]


def fused_adam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    amsgrad: bool = False,
    convention: str = "pytorch",
    weight_decay: jax.typing.ArrayLike = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
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
    CPU code for ``adam_jax.adam`` streams 40 and 52). It is not an
    ``optax.GradientTransformation``: those must return updates that
    ``optax.apply_updates`` then reads back. Use it under ``jax.jit`` with params and state
    donated, so that the in-place update needs no copy.

    Only float32 params, gradients and moments, and only on the CPU (XLA already fuses the
    step on GPUs: use :func:`adam_jax.adam` there). The kernel is compiled with the system
    C++ compiler (``$CXX`` or ``g++``) the first time a step is traced, and cached in
    ``$ADAM_JAX_CACHE`` (default ``~/.cache/adam_jax``).

    Args:
      learning_rate: :math:`\eta`, >= 0, or a schedule ``count -> lr`` (called with the
        number of steps taken before this one, as ``optax.scale_by_learning_rate``).
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator's square root; finite, >= 0.
      eps_root: added inside the square root; >= 0.
      amsgrad: use AMSGrad's running maximum of the second moment.
      convention: ``"pytorch"``, ``"optax"``, ``"keras"`` or ``"paper"``.
      weight_decay: :math:`\lambda`, >= 0.
      decoupled_weight_decay: apply :math:`\lambda` as AdamW instead of adding it to the
        gradient.
      maximize: ascend the objective instead of descending it.

    Returns:
      A ``FusedAdam``: ``init(params)`` gives a ``ScaleByAdamState`` (as
      :func:`adam_jax.scale_by_adam`'s, so :func:`adam_jax.epsilon_report` reads it), and
      ``step(params, grads, state)`` gives the new ``(params, state)``.

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
    _validation.check_optimizer(learning_rate, weight_decay)
    _validation.check_moments(b1, b2, amsgrad)
    _validation.check_epsilons(eps, eps_root)
    _validation.check_bool("decoupled_weight_decay", decoupled_weight_decay)
    _validation.check_bool("maximize", maximize)
    conv = _conventions.get_convention(convention)
    decays = _chain.is_nonzero(weight_decay)

    def init_fn(params):
        leaves = jax.tree.leaves(params)
        _check_float32("params", leaves)
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=zeros(),
            nu=zeros(),
            nu_max=zeros() if amsgrad else None,
        )

    def step_fn(params, grads, state):
        treedef = jax.tree.structure(params)
        for name, tree in (("grads", grads), ("state.mu", state.mu), ("state.nu", state.nu)):
            if jax.tree.structure(tree) != treedef:
                raise ValueError(
                    f"{name}'s tree does not match the params' tree: got "
                    f"{jax.tree.structure(tree)}, expected {treedef}."
                )
        if amsgrad and state.nu_max is None:
            raise ValueError("amsgrad=True needs a state with nu_max; use this optimizer's init.")
        trees = [params, grads, state.mu, state.nu] + ([state.nu_max] if amsgrad else [])
        names = ("params", "grads", "state.mu", "state.nu", "state.nu_max")
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
        count = _numerics.safe_increment(state.count)
        k = _conventions.step_coefficients(
            conv,
            amsgrad,
            _numerics.bias_correction(b1, count, f32),
            _numerics.bias_correction(b2, count, f32),
        )
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        c = lambda x: jnp.asarray(x, f32)  # noqa: E731
        wd = c(weight_decay) if decays else c(0.0)
        scalars = jnp.stack(
            [
                -c(lr),
                c(k.numerator),
                c(k.inside),
                c(k.before_max),
                c(b1),
                1 - c(b1),
                c(b2),
                1 - c(b2),
                c(eps),
                c(eps_root),
                wd if not decoupled_weight_decay else c(0.0),
                wd if decoupled_weight_decay else c(0.0),
                c(-1.0 if maximize else 1.0),
            ]
        )
        outputs = _call_kernel(scalars, arrays, amsgrad)
        n = len(arrays[0])
        new_p, new_m, new_v = (outputs[i * n : (i + 1) * n] for i in range(3))
        new_state = ScaleByAdamState(
            count=count,
            mu=treedef.unflatten(new_m),
            nu=treedef.unflatten(new_v),
            nu_max=treedef.unflatten(outputs[3 * n :]) if amsgrad else None,
        )
        return treedef.unflatten(new_p), new_state

    return FusedAdam(init_fn, step_fn)


def _call_kernel(scalars, arrays, amsgrad: bool):
    """One FFI call over every leaf; outputs (p, m, v[, v_max]) alias their inputs."""
    _register()
    p, _, *state = arrays
    n = len(p)
    ins = [x for leaves in arrays for x in leaves]
    outs = p + [x for leaves in state for x in leaves]
    # Input 0 is the scalars; input 1 + a * n + i is array a of leaf i (a: p, g, m, v, v_max).
    aliases = {1 + i: i for i in range(n)}
    aliases.update(
        {1 + (a + 2) * n + i: (a + 1) * n + i for a in range(len(state)) for i in range(n)}
    )
    call = jax.ffi.ffi_call(
        _TARGET,
        [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in outs],
        input_output_aliases=aliases,
        vmap_method="sequential",
    )
    return call(scalars, *ins, amsgrad=amsgrad)


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


@functools.cache
def _register() -> None:
    """Builds (once per source, JAX version and compiler) and registers the kernel."""
    import ctypes

    lib = ctypes.cdll.LoadLibrary(_build())
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.AdamStep), platform="cpu")


def _build() -> str:
    """Compiles ``csrc/adam_step.cc`` into the cache unless it is there; returns the path."""
    compiler = os.environ.get("CXX", "g++")
    exe = shutil.which(compiler)
    if exe is None:
        raise RuntimeError(
            f"fused_adam needs a C++17 compiler to build its kernel, and {compiler!r} was not "
            "found (set $CXX); adam_jax.adam needs none."
        )
    with open(_SOURCE, "rb") as f:
        source = f.read()
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        b"\0".join([source, jax.__version__.encode(), version.encode(), " ".join(_FLAGS).encode()])
    ).hexdigest()[:16]
    cache = os.environ.get("ADAM_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "adam_jax"
    )
    path = os.path.join(cache, f"adam_step-{key}.so")
    if os.path.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    cmd = [exe, *_FLAGS, "-isystem", jax.ffi.include_dir(), _SOURCE, "-o", tmp]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(
            f"building the fused_adam kernel failed ({' '.join(cmd)}):\n{result.stderr}"
        )
    os.replace(tmp, path)  # atomic: concurrent builds each write a complete library
    return path
