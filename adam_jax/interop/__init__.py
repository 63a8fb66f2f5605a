"""Continue a run from another framework: PyTorch, Keras and optax Adam states <-> adam_jax.

adam_jax reproduces each framework's Adam exactly (its ``convention``), so a run
can move: convert the weights and the optimizer state, continue in JAX, and the
losses are those the framework itself would have produced; and back.

- PyTorch: ``from_torch``/``to_torch`` (``nn.Module`` and ``torch.optim.Adam``/
  ``AdamW``/``NAdam`` state dicts), ``load_torch_checkpoint``/``save_torch_checkpoint``
  (``torch.save`` files), ``named_optimizer_state_dict``; layouts by ``linear``, ``conv``
  and ``as_is``.
- Keras 3: ``from_keras``/``to_keras`` (``Adam``/``AdamW``/``Nadam`` optimizer variables).
- optax: ``from_optax``/``to_optax`` (``optax.adam``/``adamw``/``amsgrad``/``nadam`` states).

Hyperparameters are ``adam_jax.AdamSpec``; a :class:`adam_jax.interop.ParamGroup`
pairs one with the params it updates, and ``step_counts`` reads each group's step.

Importing this package imports neither torch nor keras: each conversion imports
its framework when it is called.
"""

from adam_jax.interop._groups import Converted as Converted
from adam_jax.interop._groups import ParamGroup as ParamGroup
from adam_jax.interop._groups import build_optimizer as build_optimizer
from adam_jax.interop._groups import step_counts as step_counts
from adam_jax.interop._keras import from_keras as from_keras
from adam_jax.interop._keras import to_keras as to_keras
from adam_jax.interop._optax import from_optax as from_optax
from adam_jax.interop._optax import optax_optimizer as optax_optimizer
from adam_jax.interop._optax import to_optax as to_optax
from adam_jax.interop._torch import from_torch as from_torch
from adam_jax.interop._torch import load_torch_checkpoint as load_torch_checkpoint
from adam_jax.interop._torch import params_from_torch as params_from_torch
from adam_jax.interop._torch import params_to_torch as params_to_torch
from adam_jax.interop._torch import save_torch_checkpoint as save_torch_checkpoint
from adam_jax.interop._torch import spec_from_torch as spec_from_torch
from adam_jax.interop._torch import spec_to_torch as spec_to_torch
from adam_jax.interop._torch import to_torch as to_torch
from adam_jax.interop._torch_order import named_optimizer_state_dict as named_optimizer_state_dict
from adam_jax.interop._tree import Leaf as Leaf
from adam_jax.interop._tree import as_is as as_is
from adam_jax.interop._tree import conv as conv
from adam_jax.interop._tree import linear as linear

__all__ = [
    "Converted",
    "Leaf",
    "ParamGroup",
    "as_is",
    "build_optimizer",
    "conv",
    "from_keras",
    "from_optax",
    "from_torch",
    "linear",
    "load_torch_checkpoint",
    "named_optimizer_state_dict",
    "optax_optimizer",
    "params_from_torch",
    "params_to_torch",
    "save_torch_checkpoint",
    "spec_from_torch",
    "spec_to_torch",
    "step_counts",
    "to_keras",
    "to_optax",
    "to_torch",
]
