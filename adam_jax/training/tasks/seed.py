"""The seed's task: its PyTorch program's MLP, loss and data.

A 1000 -> 100 -> ReLU -> 10 MLP, sum-of-squares loss
(``torch.nn.MSELoss(reduction="sum")``) on N = ``--batch-size`` random inputs
and targets, full batch, ``torch.optim.Adam(lr=1e-4, amsgrad=True, eps=1e-8)``
for 500 steps. ``--init-from`` starts from the weights and data that
``scripts/seed_pytorch.py`` saved.
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from adam_jax.training.tasks.base import ConfigError, Problem, Task, check_memory
from adam_jax.training.tasks.mlp import init_mlp

SIZES = 1000, 100, 10  # input, hidden and output sizes; N is --batch-size
INIT_FROM_KEYS = ("x", "y", "w1", "b1", "w2", "b2")  # torch.nn.Linear layout: weights (out, in)


def sum_of_squares(pred, y):
    """``torch.nn.MSELoss(reduction='sum')``, and no aux."""
    return jnp.sum((pred - y) ** 2), {}


def full_batch(train, data_key, step):
    """Every step sees all the data."""
    del data_key, step
    return train["x"], train["y"]


def make_problem(config, dtypes) -> Problem:
    """The seed's model and data: from ``config.init_from`` or drawn with ``config.seed``."""
    d_in, _, d_out = SIZES
    # The data is drawn in float64, copied to the device, and its activations are as large.
    check_memory(
        "--batch-size", 3 * 8 * config.batch_size * (d_in + d_out), f"N={config.batch_size}"
    )
    rng = np.random.default_rng(config.seed)
    graphdef, params = init_mlp(config.init, config.seed, SIZES, dtypes, rng)
    x = rng.standard_normal((config.batch_size, d_in))
    y = rng.standard_normal((config.batch_size, d_out))
    if config.init_from is not None:
        with np.load(config.init_from) as saved:
            pdt = dtypes["param_dtype"]

            def layer(w, b):  # torch.nn.Linear stores weights as (out, in); Flax's are (in, out)
                return {"kernel": jnp.asarray(saved[w].T, pdt), "bias": jnp.asarray(saved[b], pdt)}

            nnx.replace_by_pure_dict(
                params, {"hidden": layer("w1", "b1"), "out": layer("w2", "b2")}
            )
            x, y = saved["x"], saved["y"]
    train = {"x": jnp.asarray(x, config.dtype), "y": jnp.asarray(y, config.dtype)}
    return Problem(graphdef, params, train, None, sum_of_squares, full_batch, None)


def torch_layout(problem: Problem) -> dict[str, np.ndarray]:
    """The problem's initial weights and data as NumPy arrays, keyed and laid out as
    ``--init-from`` files are (``torch.nn.Linear``'s (out, in) weights)."""
    params = nnx.to_pure_dict(problem.params)
    arrays = {"x": problem.train["x"], "y": problem.train["y"]}
    for w, b, layer in (("w1", "b1", "hidden"), ("w2", "b2", "out")):
        arrays[w] = params[layer]["kernel"].T
        arrays[b] = params[layer]["bias"]
    return {k: np.asarray(v) for k, v in arrays.items()}


def read_init_from(config) -> None:
    """Checks ``config.init_from``; takes N (the batch size) and the dtype from it."""
    try:
        with np.load(config.init_from) as saved:
            shapes = {k: saved[k].shape for k in INIT_FROM_KEYS}
            dtype = str(saved["x"].dtype)
    except Exception as e:  # a missing file, not an .npz, a missing key: all reported alike
        raise ConfigError("--init-from", f"cannot read {config.init_from}: {e}") from e
    d_in, hidden, d_out = SIZES
    n = shapes["x"][0]
    expected = {
        "x": (n, d_in),
        "y": (n, d_out),
        "w1": (hidden, d_in),
        "b1": (hidden,),
        "w2": (d_out, hidden),
        "b2": (d_out,),
    }
    if shapes != expected:
        raise ConfigError("--init-from", f"shapes {shapes}, expected {expected}")
    if config.batch_size not in (None, n):
        raise ConfigError("--batch-size", f"{config.init_from} holds N={n}")
    config.batch_size = n
    if config.dtype is None and dtype in ("float32", "float64"):
        config.dtype = dtype


TASK = Task(
    name="seed",
    defaults={"steps": 500, "lr": 1e-4, "optimizer": "amsgrad", "batch_size": 64, "log_every": 50},
    make_problem=make_problem,
    summary="the seed's MLP 1000-100-10, sum of squares on N random points, full batch",
    read_init_from=read_init_from,
)
