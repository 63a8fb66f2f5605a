"""The chain every adam_jax optimizer is built from, around its direction."""

import optax

from adam_jax._spec import AdamSpec, Optimizer, with_spec
from adam_jax._transform import adam_direction


def optimizer_chain(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay,
    decoupled_weight_decay: bool,
    maximize: bool,
    mask=None,
    decays_weights: bool = True,
) -> optax.GradientTransformation:
    """``direction`` between the sign flip, weight decay and learning rate.

    ``chain(scale(-1) if maximize, add_decayed_weights if coupled, direction,
    add_decayed_weights if decoupled, scale_by_learning_rate)``: coupled decay
    is added to the gradient (as ``torch.optim.Adam``), decoupled decay to the
    step (as ``torch.optim.AdamW``), and the learning rate is the last link.
    ``mask`` (a tree of bools or a callable of the params, as optax's) leaves
    the params where it is False undecayed.
    """
    decay = optax.add_decayed_weights(weight_decay, mask)
    return optax.chain(
        *([optax.scale(-1.0)] if maximize else []),
        *([decay] if decays_weights and not decoupled_weight_decay else []),
        direction,
        *([decay] if decays_weights and decoupled_weight_decay else []),
        optax.scale_by_learning_rate(learning_rate),
    )


def adam_optimizer(spec: AdamSpec) -> Optimizer:
    """The optax optimizer that ``spec`` describes, carrying ``spec``."""
    tx = optimizer_chain(
        adam_direction(spec),
        spec.learning_rate,
        weight_decay=spec.weight_decay,
        decoupled_weight_decay=spec.decoupled_weight_decay,
        maximize=spec.maximize,
        mask=spec.mask,
        decays_weights=spec.decays_weights,
    )
    return with_spec(tx, spec)
