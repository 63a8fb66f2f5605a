"""The seed's loss curve: scripts/train.py reproduces PyTorch's, optax.amsgrad does not.

The seed's PyTorch program (``scripts/seed_pytorch.py``) and ``scripts/train.py
--init-from`` its weights and data train the same network from the same start;
the losses before each of the 500 steps are compared.
"""

import numpy as np

STEP_100 = 99  # index of the 100th loss


def relative(a, b):
    return np.abs(a - b) / np.abs(b)


def test_adam_jax_reproduces_pytorch(seed_run):
    dtype, curves = seed_run
    torch_losses, ours = curves["pytorch"], curves["adam_jax_pytorch"]
    assert ours.shape == torch_losses.shape == (500,)
    err = relative(ours, torch_losses)
    if dtype == "float64":
        assert err.max() <= 1e-10, f"{err.max():.3g} at step {err.argmax() + 1}"
    else:
        assert err[: STEP_100 + 1].max() <= 1e-4, f"{err.max():.3g} at step {err.argmax() + 1}"
        assert 1 / 1.5 <= ours[-1] / torch_losses[-1] <= 1.5


def test_optax_convention_reproduces_optax_amsgrad(seed_run):
    dtype, curves = seed_run
    err = relative(curves["adam_jax_optax"], curves["optax_amsgrad"])
    tolerance = {"float64": 1e-10, "float32": 1e-4}[dtype]
    assert err[: STEP_100 + 1].max() <= tolerance, f"{err.max():.3g} at step {err.argmax() + 1}"
    assert 1 / 1.5 <= curves["adam_jax_optax"][-1] / curves["optax_amsgrad"][-1] <= 1.5


def test_optax_amsgrad_is_not_pytorch(seed_run):
    """optax.amsgrad's maximum of the bias-corrected moment trains another curve.

    Measured (seed 0), in both dtypes: 84% apart at step 100 (79.1 against
    43.1), final loss 0.040 against 2.7e-6. With ``bias_correction_nu=False``
    optax trains faster than PyTorch instead (0.0013 at step 100).
    """
    _, curves = seed_run
    torch_losses = curves["pytorch"]
    names = ["optax_amsgrad", "adam_jax_optax", "optax_amsgrad_nu_raw"]
    for name in [n for n in names if n in curves]:
        losses = curves[name]
        assert relative(losses[0], torch_losses[0]) < 1e-6, name  # the same start
        assert relative(losses[STEP_100], torch_losses[STEP_100]) > 0.5, name
        assert abs(np.log10(losses[-1] / torch_losses[-1])) > 3, name  # final losses
