"""adam_jax: exact, fast Adam and AMSGrad for JAX, as Optax transformations."""

from adam_jax._alias import adam as adam
from adam_jax._alias import adamw as adamw
from adam_jax._alias import amsgrad as amsgrad
from adam_jax._conventions import CONVENTIONS as CONVENTIONS
from adam_jax._conventions import Convention as Convention
from adam_jax._diagnostics import epsilon_report as epsilon_report
from adam_jax._transform import ScaleByAdamState as ScaleByAdamState
from adam_jax._transform import scale_by_adam as scale_by_adam

__version__ = "0.1.0"

__all__ = [
    "CONVENTIONS",
    "Convention",
    "ScaleByAdamState",
    "adam",
    "adamw",
    "amsgrad",
    "epsilon_report",
    "scale_by_adam",
]
