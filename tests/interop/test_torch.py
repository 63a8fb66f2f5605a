"""PyTorch <-> adam_jax: runs converted mid-way continue on the uninterrupted trajectory."""

import functools

import numpy as np
import pytest

from adam_jax import interop

from . import _runs

torch = pytest.importorskip("torch", reason="the torch interop tests need torch")

BEFORE, AFTER = 15, 50  # steps before the conversion, steps continued after it
# (torch optimizer, its options, the biases' group options or None)
CASES = {
    "adam": ("Adam", {"lr": 1e-2}, None),
    "amsgrad": ("Adam", {"lr": 1e-2, "amsgrad": True}, None),
    "adam_l2": ("Adam", {"lr": 1e-2, "weight_decay": 0.05}, None),
    "adamw_groups": ("AdamW", {"lr": 1e-2, "weight_decay": 0.1}, {"weight_decay": 0.0}),
    "adamw_amsgrad_groups": (
        "AdamW",
        {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True},
        {"weight_decay": 0.0, "lr": 3e-2},
    ),
}


def _torch_run(case, dtype, steps):
    name, kwargs, bias_group = CASES[case]
    model = _runs.torch_model(dtype)
    optimizer = _runs.torch_optimizer(model, name, kwargs, bias_group)
    return model, optimizer, _runs.run_torch(model, optimizer, steps, dtype)


@functools.cache
def _uninterrupted(case):
    """torch's own run of BEFORE + AFTER steps in float64."""
    return _torch_run(case, "float64", BEFORE + AFTER)[2]


@pytest.mark.parametrize("case", list(CASES))
def test_torch_checkpoint_continues_in_jax(case, x64, tmp_path):
    uninterrupted = _uninterrupted(case)
    model, optimizer, before = _torch_run(case, "float64", BEFORE)
    np.testing.assert_array_equal(before, uninterrupted[:BEFORE])
    path = tmp_path / "run.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)

    run = interop.torch.load_checkpoint(path, _runs.NAME_MAP)
    after, *_ = _runs.run_optax(run.params, run.optimizer, run.opt_state, AFTER, "float64")

    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]
    assert len(run.groups) == (1 if CASES[case][2] is None else 2)


@pytest.mark.parametrize("case", list(CASES))
def test_jax_run_continues_in_torch(case, x64):
    name, kwargs, bias_group = CASES[case]
    uninterrupted = _uninterrupted(case)
    # The same hyperparameters as adam_jax param groups, from torch's own state dict.
    init_model, init_opt, _ = _torch_run(case, "float64", 0)
    start = interop.torch.from_torch(init_model.state_dict(), init_opt.state_dict(), _runs.NAME_MAP)
    groups = start.groups
    optimizer = interop.build_optimizer(groups, start.params)
    before, params, opt_state = _runs.run_optax(
        start.params, optimizer, optimizer.init(start.params), BEFORE, "float64"
    )
    model_sd, opt_sd = interop.torch.to_torch(params, opt_state, groups, _runs.NAME_MAP)

    model = _runs.torch_model("float64", seed=1)  # other weights: all must be overwritten
    torch_opt = _runs.torch_optimizer(model, name, {"lr": 0.5}, None if bias_group is None else {})
    model.load_state_dict(model_sd)
    torch_opt.load_state_dict(opt_sd)
    after = _runs.run_torch(model, torch_opt, AFTER, "float64")

    assert _runs.relative(before, uninterrupted[:BEFORE]) <= _runs.TOLERANCE["float64"]
    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]
