"""The seed's task: its PyTorch program's MLP, loss and data.

A 1000 -> 100 -> ReLU -> 10 MLP, sum-of-squares loss
(``torch.nn.MSELoss(reduction="sum")``) on N = ``--batch-size`` random inputs
and targets, full batch, ``torch.optim.Adam(lr=1e-4, amsgrad=True, eps=1e-8)``
for 500 steps. ``--init-from`` starts from the weights and data that
``scripts/seed_pytorch.py`` saved (``.npz``), or continues its PyTorch run
(``.pt``, ``--save-at``): weights, ``torch.optim.Adam`` state and data, through
``adam_jax.interop.load_torch_checkpoint``.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from adam_jax import interop
from adam_jax.training.tasks.base import ConfigError, Problem, Task, check_memory
from adam_jax.training.tasks.mlp import init_mlp

SIZES = 1000, 100, 10  # input, hidden and output sizes; N is --batch-size
INIT_FROM_KEYS = ("x", "y", "w1", "b1", "w2", "b2")  # torch.nn.Linear layout: weights (out, in)
TORCH_KEYS = ("model", "optimizer", "x", "y")  # a .pt of scripts/seed_pytorch.py --save-at
# The low-memory flags: a .pt's run goes on with its own optimizer, so they cannot apply.
LOW_MEMORY_SETTINGS = (
    "state_dtype",
    "quant_block_size",
    "quant_min_size",
    "quant_rounding",
    "stochastic_rounding",
    "compensated_rounding",
)


def torch_name_map() -> dict:
    """The seed's ``nn.Sequential(Linear, ReLU, Linear)`` names -> its params' paths."""
    return {
        "0.weight": interop.linear("hidden/kernel"),
        "0.bias": "hidden/bias",
        "2.weight": interop.linear("out/kernel"),
        "2.bias": "out/bias",
    }


def is_torch_file(path: str) -> bool:
    """``--init-from`` names a PyTorch checkpoint (``.pt``/``.pth``), not an ``.npz``."""
    return path.endswith((".pt", ".pth"))


def _load_torch(path: str) -> dict:
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in TORCH_KEYS if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise ValueError(f"no '{missing[0]}' entry (a .pt needs {', '.join(TORCH_KEYS)})")
    return saved


def sum_of_squares(pred, y):
    """``torch.nn.MSELoss(reduction='sum')``, and no aux."""
    return jnp.sum((pred - y) ** 2), {}


def full_batch(train, data_key, step):
    """Every step sees all the data."""
    del data_key, step
    return train["x"], train["y"]


def make_problem(config, dtypes) -> Problem:
    """The seed's model and data: from ``config.init_from`` or drawn with ``config.rng_seed``."""
    d_in, _, d_out = SIZES
    # The data is drawn in float64, copied to the device, and its activations are as large.
    check_memory(
        "--batch-size", 3 * 8 * config.batch_size * (d_in + d_out), f"N={config.batch_size}"
    )
    rng = np.random.default_rng(config.rng_seed)
    graphdef, params = init_mlp(config.init, config.rng_seed, SIZES, dtypes, rng)
    x = rng.standard_normal((config.batch_size, d_in))
    y = rng.standard_normal((config.batch_size, d_out))
    start = None
    if config.init_from is not None and is_torch_file(config.init_from):
        run = interop.load_torch_checkpoint(
            config.init_from, torch_name_map(), dtype=dtypes["param_dtype"]
        )
        nnx.replace_by_pure_dict(params, run.params)
        saved = _load_torch(config.init_from)
        x, y = saved["x"].numpy(), saved["y"].numpy()
        # The converted moments are nested dicts; the step's gradients are an nnx.State of the
        # same leaves in the same order: the state takes the params' tree.
        template = jax.eval_shape(run.optimizer.init, params)
        opt_state = jax.tree.unflatten(jax.tree.structure(template), jax.tree.leaves(run.opt_state))
        start = run.optimizer, opt_state
    elif config.init_from is not None:
        with np.load(config.init_from) as saved:
            pdt = dtypes["param_dtype"]

            def layer(w, b):  # torch.nn.Linear stores weights as (out, in); Flax's are (in, out)
                return {"kernel": jnp.asarray(saved[w].T, pdt), "bias": jnp.asarray(saved[b], pdt)}

            nnx.replace_by_pure_dict(
                params, {"hidden": layer("w1", "b1"), "out": layer("w2", "b2")}
            )
            x, y = saved["x"], saved["y"]
    train = {"x": jnp.asarray(x, config.dtype), "y": jnp.asarray(y, config.dtype)}
    return Problem(graphdef, params, train, None, sum_of_squares, full_batch, None, start=start)


def torch_layout(problem: Problem) -> dict[str, np.ndarray]:
    """The problem's initial weights and data as NumPy arrays, keyed and laid out as
    ``--init-from`` files are (``torch.nn.Linear``'s (out, in) weights)."""
    params = nnx.to_pure_dict(problem.params)
    arrays = {"x": problem.train["x"], "y": problem.train["y"]}
    for w, b, layer in (("w1", "b1", "hidden"), ("w2", "b2", "out")):
        arrays[w] = params[layer]["kernel"].T
        arrays[b] = params[layer]["bias"]
    return {k: np.asarray(v) for k, v in arrays.items()}


def read_init_from(path: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings ``--init-from path`` fixes: N (the batch size) and the dtype of its data, and
    for a PyTorch checkpoint its optimizer's hyperparameters.

    Args:
      path: the ``--init-from`` file.
      settings: the run's settings so far (``None``: unset); a set one may repeat what the file
        fixes, not change it.

    Raises:
      ConfigError: naming ``--init-from`` (unreadable, wrong shapes) or the flag whose value
        the file contradicts.
    """
    if is_torch_file(path):
        return _read_torch_run(path, settings)
    try:
        with np.load(path) as saved:
            shapes = {k: saved[k].shape for k in INIT_FROM_KEYS}
            dtype = str(saved["x"].dtype)
    except Exception as e:  # a missing file, not an .npz, a missing key: all reported alike
        raise ConfigError("--init-from", f"cannot read {path}: {e}") from e
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
    return _data_settings(path, settings, n, dtype)


def _data_settings(path: str, settings: Mapping[str, Any], n: int, dtype: str) -> dict[str, Any]:
    """N from the file's data (``--batch-size`` may only repeat it), and its dtype where the
    run sets none."""
    if settings.get("batch_size") not in (None, n):
        raise ConfigError("--batch-size", f"{path} holds N={n}")
    fixed: dict[str, Any] = {"batch_size": n}
    if settings.get("dtype") is None and dtype in ("float32", "float64"):
        fixed["dtype"] = dtype
    return fixed


def _read_torch_run(path: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``read_init_from`` for a ``.pt``: N and the dtype from its data; the optimizer, the
    learning rate, the betas and eps from its one param group (flags may repeat the optimizer,
    the learning rate and the convention, not change them)."""
    try:
        saved = _load_torch(path)
        x, y = saved["x"], saved["y"]
        (group,) = saved["optimizer"]["param_groups"]
    except Exception as e:  # a missing file, not a checkpoint, a missing key, several groups
        raise ConfigError("--init-from", f"cannot read {path}: {e}") from e
    d_in, _, d_out = SIZES
    n = x.shape[0]
    if tuple(x.shape) != (n, d_in) or tuple(y.shape) != (n, d_out):
        raise ConfigError(
            "--init-from",
            f"x {tuple(x.shape)} and y {tuple(y.shape)}, expected ({n}, {d_in}) and ({n}, {d_out})",
        )
    fixed = _data_settings(path, settings, n, str(x.dtype).removeprefix("torch."))
    continued = {
        "optimizer": "amsgrad" if group["amsgrad"] else "adam",
        "lr": float(group["lr"]),
        "convention": "pytorch",
    }
    for name, value in continued.items():
        if settings.get(name) not in (None, value):
            raise ConfigError(f"--{name}", f"{path} continues with {value}")
    for name in LOW_MEMORY_SETTINGS:
        if settings.get(name) not in (None, False):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(flag, f"{path} continues PyTorch's float32 Adam state as it is")
    b1, b2 = (float(b) for b in group["betas"])
    return fixed | continued | {"b1": b1, "b2": b2, "eps": float(group["eps"])}


TASK = Task(
    name="seed",
    defaults={"steps": 500, "lr": 1e-4, "optimizer": "amsgrad", "batch_size": 64, "log_every": 50},
    make_problem=make_problem,
    summary="the seed's MLP 1000-100-10, sum of squares on N random points, full batch",
    read_init_from=read_init_from,
)
