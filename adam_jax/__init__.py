"""adam_jax: exact, fast Adam, AMSGrad and NAdam for JAX, as Optax transformations."""

from adam_jax._alias import Optimizer as Optimizer
from adam_jax._alias import adam as adam
from adam_jax._alias import adamw as adamw
from adam_jax._alias import amsgrad as amsgrad
from adam_jax._alias import from_spec as from_spec
from adam_jax._alias import nadam as nadam
from adam_jax._atan2 import adam_atan2 as adam_atan2
from adam_jax._atan2 import scale_by_adam_atan2 as scale_by_adam_atan2
from adam_jax._conventions import CONVENTIONS as CONVENTIONS
from adam_jax._conventions import Convention as Convention
from adam_jax._diagnostics import epsilon_report as epsilon_report
from adam_jax._fused import FusedAdam as FusedAdam
from adam_jax._fused import fused_adam as fused_adam
from adam_jax._fused import fused_available as fused_available
from adam_jax._packed import PackedLayout as PackedLayout
from adam_jax._quantize import BlockQuantization as BlockQuantization
from adam_jax._quantize import QuantizedArray as QuantizedArray
from adam_jax._spec import AdamSpec as AdamSpec
from adam_jax._transform import ScaleByAdamState as ScaleByAdamState
from adam_jax._transform import scale_by_adam as scale_by_adam

__version__ = "0.2.0.dev0"  # the one place the version is written (pyproject reads it)

__all__ = [
    "CONVENTIONS",
    "AdamSpec",
    "BlockQuantization",
    "Convention",
    "FusedAdam",
    "Optimizer",
    "PackedLayout",
    "QuantizedArray",
    "ScaleByAdamState",
    "adam",
    "adam_atan2",
    "adamw",
    "amsgrad",
    "epsilon_report",
    "fused_adam",
    "fused_available",
    "from_spec",
    "nadam",
    "scale_by_adam",
    "scale_by_adam_atan2",
]
