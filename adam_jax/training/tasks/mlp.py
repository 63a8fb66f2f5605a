"""The two-layer MLP of the seed and digits tasks, and its PyTorch-style init."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class MLP(nnx.Module):
    """Linear -> ReLU -> Linear, as the seed's ``torch.nn.Sequential``.

    Params are stored in ``param_dtype``; the forward pass casts params and
    inputs to ``dtype`` (the compute dtype), so gradients come back in
    ``param_dtype``.
    """

    def __init__(self, d_in, hidden, d_out, *, param_dtype, dtype, rngs):
        kwargs = {"param_dtype": param_dtype, "dtype": dtype, "rngs": rngs}
        self.hidden = nnx.Linear(d_in, hidden, **kwargs)
        self.out = nnx.Linear(hidden, d_out, **kwargs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def init_mlp(init: str, seed: int, sizes, dtypes, rng: np.random.Generator):
    """The MLP's structure and initial params, in ``init``'s scheme.

    Args:
      init: ``"torch"``: ``torch.nn.Linear``'s default, U(-1/sqrt(fan_in),
        1/sqrt(fan_in)) for weights and biases, drawn from ``rng`` (NumPy:
        jax.random would compile a threefry kernel per tensor, seconds on a
        CPU); ``"flax"``: Flax's default init, keyed by ``seed``.
      seed: the run's ``--rng-seed``.
      sizes: ``(d_in, hidden, d_out)``.
      dtypes: ``{"param_dtype": ..., "dtype": ...}``.
      rng: the NumPy generator of the torch-style init.

    Returns:
      ``(graphdef, params)``, as ``nnx.split`` gives them.
    """

    def make(rngs):
        return MLP(*sizes, rngs=rngs, **dtypes)

    graphdef, params = nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(0))))
    if init == "flax":
        return graphdef, jax.jit(lambda s: nnx.state(make(nnx.Rngs(jax.random.key(s)))))(seed)
    pdt = dtypes["param_dtype"]

    def linear(fan_in, fan_out):
        bound = 1.0 / math.sqrt(fan_in)
        kernel = rng.uniform(-bound, bound, (fan_in, fan_out))
        return {
            "kernel": jnp.asarray(kernel, pdt),
            "bias": jnp.asarray(rng.uniform(-bound, bound, fan_out), pdt),
        }

    d_in, hidden, d_out = sizes
    nnx.replace_by_pure_dict(params, {"hidden": linear(d_in, hidden), "out": linear(hidden, d_out)})
    return graphdef, params
