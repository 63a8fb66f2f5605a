"""Continue a run from another framework: PyTorch, Keras and optax Adam states <-> adam_jax.

adam_jax reproduces each framework's Adam exactly (its ``convention``), so a run
can move: convert the weights and the optimizer state, continue in JAX, and the
losses are those the framework itself would have produced; and back.

- ``adam_jax.interop.torch``: ``nn.Module`` and ``torch.optim.Adam``/``AdamW``/
  ``NAdam`` state dicts and ``torch.save`` checkpoints.
- ``adam_jax.interop.keras``: Keras 3 ``Adam``/``AdamW``/``Nadam`` optimizer variables.
- ``adam_jax.interop.optax``: ``optax.adam``/``adamw``/``amsgrad``/``nadam`` states.

Hyperparameters are ``adam_jax.AdamSpec``; a :class:`adam_jax.interop.ParamGroup`
pairs one with the params it updates.

Importing this package imports neither torch nor keras: each conversion imports
its framework when it is called.
"""

from adam_jax.interop import keras as keras
from adam_jax.interop import optax as optax
from adam_jax.interop import torch as torch
from adam_jax.interop._groups import Converted as Converted
from adam_jax.interop._groups import ParamGroup as ParamGroup
from adam_jax.interop._groups import build_optimizer as build_optimizer
from adam_jax.interop._tree import Leaf as Leaf
from adam_jax.interop._tree import conv as conv
from adam_jax.interop._tree import linear as linear

__all__ = [
    "Converted",
    "Leaf",
    "ParamGroup",
    "build_optimizer",
    "conv",
    "keras",
    "linear",
    "optax",
    "torch",
]
