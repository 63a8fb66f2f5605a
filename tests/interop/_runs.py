"""A small MLP trained by the real PyTorch, Keras and optax, and by adam_jax.

Each runner returns the loss before every step (as the seed prints it), so
that runs are compared by trajectory: a run converted half way and continued
elsewhere must produce the losses of the uninterrupted run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adam_jax import interop

N, D_IN, HIDDEN, D_OUT = 12, 6, 8, 3
NAME_MAP = {
    "0.weight": interop.linear("hidden/kernel"),
    "0.bias": "hidden/bias",
    "2.weight": interop.linear("out/kernel"),
    "2.bias": "out/bias",
}
TOLERANCE = {"float64": 1e-10}


def data(dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, D_IN)).astype(dtype), rng.normal(size=(N, D_OUT)).astype(dtype)


def jax_loss(params, x, y):
    """Sum of squares of tanh-MLP(x) - y; kernels in Flax's (in, out) layout."""
    hidden = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"][None])
    return jnp.sum((hidden @ params["out"]["kernel"] + params["out"]["bias"][None] - y) ** 2)


def run_optax(params, tx: optax.GradientTransformation, opt_state, steps: int, dtype: str):
    """``steps`` steps of ``tx`` from ``(params, opt_state)`` in one jitted scan.

    Returns:
      ``(losses, params, opt_state)``: the loss before each step (float64 NumPy).
    """
    x, y = (jnp.asarray(a) for a in data(dtype))

    def step(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(jax_loss)(p, x, y)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), length=steps))(
        params, opt_state
    )
    return np.asarray(losses, np.float64), params, opt_state


def torch_model(dtype: str, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(D_IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, D_OUT)
    )
    return model.to(getattr(torch, dtype))


def torch_optimizer(model, name: str, kwargs: dict, bias_group: dict | None):
    """``torch.optim.<name>``; with ``bias_group``, the biases in a second group with it."""
    import torch

    named = list(model.named_parameters())
    if bias_group is None:
        return getattr(torch.optim, name)(named, **kwargs)
    groups = [
        {"params": [(n, p) for n, p in named if not n.endswith("bias")]},
        {"params": [(n, p) for n, p in named if n.endswith("bias")], **bias_group},
    ]
    return getattr(torch.optim, name)(groups, **kwargs)


def run_torch(model, optimizer, steps: int, dtype: str) -> np.ndarray:
    """``steps`` steps of the real torch optimizer; the loss before each."""
    import torch

    x, y = (torch.from_numpy(a) for a in data(dtype))
    return torch_steps(model, optimizer, x, y, steps)


def torch_steps(model, optimizer, x, y, steps: int) -> np.ndarray:
    """``steps`` steps of a torch optimizer on the sum-of-squares loss; the loss before each."""
    import torch

    losses = []
    for _ in range(steps):
        loss = torch.sum((model(x) - y) ** 2)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return np.asarray(losses)


def relative(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest ``|ours - ref| / |ref|`` over the steps."""
    return float(np.max(np.abs(ours - reference) / np.abs(reference)))


def initial_weights(dtype: str, seed: int = 1) -> dict[str, np.ndarray]:
    """Initial weights, in Flax's layout, keyed ``"hidden/kernel"`` etc."""
    rng = np.random.default_rng(seed)
    shapes = {
        "hidden/kernel": (D_IN, HIDDEN),
        "hidden/bias": (HIDDEN,),
        "out/kernel": (HIDDEN, D_OUT),
        "out/bias": (D_OUT,),
    }
    return {k: (0.5 * rng.normal(size=s)).astype(dtype) for k, s in shapes.items()}


def initial_params(dtype: str) -> dict:
    """``initial_weights`` as a params tree of JAX arrays."""
    weights = initial_weights(dtype)
    return {
        layer: {leaf: jnp.asarray(weights[f"{layer}/{leaf}"]) for leaf in ("kernel", "bias")}
        for layer in ("hidden", "out")
    }
