"""The chain every adam_jax optimizer is built from, around its direction."""

import optax


def optimizer_chain(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> optax.GradientTransformation:
    """``direction`` between the sign flip, weight decay and learning rate.

    ``chain(scale(-1) if maximize, add_decayed_weights if coupled, direction,
    add_decayed_weights if decoupled, scale_by_learning_rate)``: coupled decay
    is added to the gradient (as ``torch.optim.Adam``), decoupled decay to the
    step (as ``torch.optim.AdamW``), and the learning rate is the last link.
    """
    decay = optax.add_decayed_weights(weight_decay)
    decays = is_nonzero(weight_decay)
    return optax.chain(
        *([optax.scale(-1.0)] if maximize else []),
        *([decay] if decays and not decoupled_weight_decay else []),
        direction,
        *([decay] if decays and decoupled_weight_decay else []),
        optax.scale_by_learning_rate(learning_rate),
    )


def is_nonzero(value) -> bool:
    """False only for a Python number equal to 0.

    Arrays count as nonzero even when they hold 0, so that the chain has the
    same structure whether ``optax.inject_hyperparams`` passes a concrete or a
    traced value.
    """
    return not (isinstance(value, (int, float)) and value == 0)
