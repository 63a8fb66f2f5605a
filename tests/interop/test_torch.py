"""PyTorch <-> adam_jax: runs converted mid-way continue on the uninterrupted trajectory."""

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
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
    "nadamw_groups": (
        "NAdam",
        {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"weight_decay": 0.0},
    ),
}


def _torch_run(case, dtype, steps):
    name, kwargs, bias_group = CASES[case]
    model = _runs.torch_model(dtype)
    optimizer = _runs.torch_optimizer(model, name, kwargs, bias_group)
    return model, optimizer, _runs.run_torch(model, optimizer, steps, dtype)


@pytest.fixture
def torch64(x64):
    """torch's default dtype float64 too, as a float64 user has it: torch keeps scalar state
    (``step``, NAdam's ``mu_product``) in the default dtype, whatever the params' dtype."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


@functools.cache
def _uninterrupted(case):
    """torch's own run of BEFORE + AFTER steps in float64 (under ``torch64``)."""
    return _torch_run(case, "float64", BEFORE + AFTER)[2]


@pytest.mark.parametrize("case", list(CASES))
def test_torch_checkpoint_continues_in_jax(case, torch64, tmp_path):
    uninterrupted = _uninterrupted(case)
    model, optimizer, before = _torch_run(case, "float64", BEFORE)
    np.testing.assert_array_equal(before, uninterrupted[:BEFORE])
    path = tmp_path / "run.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)

    run = interop.load_torch_checkpoint(path, _runs.NAME_MAP)
    after, *_ = _runs.run_optax(run.params, run.optimizer, run.opt_state, AFTER, "float64")

    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]
    assert len(run.groups) == (1 if CASES[case][2] is None else 2)


@pytest.mark.parametrize("case", list(CASES))
def test_jax_run_continues_in_torch(case, torch64):
    name, kwargs, bias_group = CASES[case]
    uninterrupted = _uninterrupted(case)
    # The same hyperparameters as adam_jax param groups, from torch's own state dict.
    init_model, init_opt, _ = _torch_run(case, "float64", 0)
    start = interop.from_torch(init_model.state_dict(), init_opt.state_dict(), _runs.NAME_MAP)
    groups = start.groups
    optimizer = interop.build_optimizer(groups, start.params)
    before, params, opt_state = _runs.run_optax(
        start.params, optimizer, optimizer.init(start.params), BEFORE, "float64"
    )
    model_sd, opt_sd = interop.to_torch(params, opt_state, groups, _runs.NAME_MAP)

    model = _runs.torch_model("float64", seed=1)  # other weights: all must be overwritten
    torch_opt = _runs.torch_optimizer(model, name, {"lr": 0.5}, None if bias_group is None else {})
    model.load_state_dict(model_sd)
    torch_opt.load_state_dict(opt_sd)
    after = _runs.run_torch(model, torch_opt, AFTER, "float64")

    assert _runs.relative(before, uninterrupted[:BEFORE]) <= _runs.TOLERANCE["float64"]
    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]


def test_float32_checkpoint_continues_within_rounding(tmp_path):
    """float32: the conversion is exact, the two libraries' rounding then compounds.

    The converted state is torch's bit for bit (``test_round_trip_is_bitwise``), so the
    first continued loss differs from torch's only by how the loss is summed. After it,
    torch and XLA round each step differently (torch computes the bias corrections in
    Python floats and divides by sqrt(c2) after the square root; matmul sums run in
    another order): about 1e-7 relative per step, a random walk measured at 2e-6 after
    50 steps here (2026-11-25), the same growth as an uninterrupted adam_jax run
    against torch. A fresh optimizer state instead of the converted one is 1e-3 off.
    """
    case = "adamw_amsgrad_groups"
    *_, uninterrupted = _torch_run(case, "float32", BEFORE + AFTER)
    model, optimizer, _ = _torch_run(case, "float32", BEFORE)
    run = interop.from_torch(model.state_dict(), optimizer.state_dict(), _runs.NAME_MAP)
    after, *_ = _runs.run_optax(run.params, run.optimizer, run.opt_state, AFTER, "float32")
    fresh = run.optimizer.init(run.params)
    restarted, *_ = _runs.run_optax(run.params, run.optimizer, fresh, AFTER, "float32")

    error = np.abs(after - uninterrupted[BEFORE:]) / uninterrupted[BEFORE:]
    assert error[0] <= 3e-7
    assert error.max() <= 2e-5
    assert _runs.relative(restarted, uninterrupted[BEFORE:]) > 1e-3


# --- malformed and mismatched state dicts: one clear error, naming the key --------------------


@pytest.fixture
def saved():
    """Model and optimizer state dicts after 3 steps of AdamW(amsgrad) with a bias group."""
    name, kwargs, _ = CASES["adamw_amsgrad_groups"]
    model = _runs.torch_model("float32")
    optimizer = _runs.torch_optimizer(model, name, kwargs, {"weight_decay": 0.0})
    _runs.run_torch(model, optimizer, 3, "float32")
    return model.state_dict(), optimizer.state_dict()


def _error(saved, match, name_map=None, **kwargs):
    model_sd, opt_sd = saved
    with pytest.raises(ValueError, match=match):
        interop.from_torch(model_sd, opt_sd, name_map or _runs.NAME_MAP, **kwargs)


def test_missing_model_key_is_named(saved):
    del saved[0]["2.bias"]
    _error(saved, r"model state dict has no '2\.bias'")


def test_unmapped_model_key_is_named_unless_skipped(saved):
    saved[0]["running_mean"] = torch.zeros(3)
    _error(saved, "'running_mean' is not in name_map")
    interop.from_torch(*saved, _runs.NAME_MAP, skip=["running_mean"])


def test_wrong_moment_shape_is_named(saved):
    saved[1]["state"][0]["exp_avg"] = torch.zeros(3, 3)
    _error(saved, r"exp_avg of '0\.weight' has shape \(3, 3\), expected \(6, 8\)")


def test_wrong_weight_layout_is_named(saved):
    saved[0]["0.bias"] = torch.zeros(2, 4)
    _error(
        saved,
        r"'0\.bias' has shape",
        {**_runs.NAME_MAP, "0.bias": interop.Leaf("hidden/bias", (0,))},
    )


def test_steps_that_differ_in_a_group_are_named(saved):
    saved[1]["state"][1]["step"] = torch.tensor(2.0)
    _error(saved, r"'2\.weight' has step 2\.0 but '0\.weight' 3\.0, in param group 0")


def test_fractional_step_is_named(saved):
    saved[1]["state"][0]["step"] = torch.tensor(2.5)
    _error(saved, r"step of '0\.weight' is 2\.5")


def test_missing_amsgrad_maximum_is_named(saved):
    del saved[1]["state"][2]["max_exp_avg_sq"]
    _error(saved, r"optimizer state of '0\.bias'.*expected \['exp_avg', 'exp_avg_sq', 'max_exp")


def test_param_without_state_is_not_zero_filled(saved):
    del saved[1]["state"][3]
    _error(saved, r"'2\.bias' \(param group 1\) has no optimizer state")


def test_group_that_does_not_match_the_tree_is_named(saved):
    name_map = {**_runs.NAME_MAP}
    name_map["extra.weight"] = name_map.pop("2.weight")
    saved[0]["extra.weight"] = saved[0].pop("2.weight")
    _error(saved, r"param group 0 holds '2\.weight', which name_map does not map", name_map)


def test_unnamed_groups_need_param_names(saved):
    for group in saved[1]["param_groups"]:
        del group["param_names"]
    _error(saved, "several param groups and no 'param_names'")
    _error(saved, "hold 4 parameters, but 3 names", param_names=["0.weight", "2.weight", "0.bias"])


def test_other_optimizer_is_refused(saved):
    saved[1]["param_groups"][0]["momentum"] = 0.9
    _error(saved, r"keys \['momentum'\] that torch.optim.Adam/AdamW does not have")


def test_float64_without_x64_is_refused(saved):
    saved[0]["0.bias"] = saved[0]["0.bias"].double()
    _error(saved, "'0.bias' is float64, but JAX's 64-bit mode is off")


def test_float64_run_rounds_to_float32_when_asked():
    name, kwargs, bias_group = CASES["nadamw_groups"]
    model = _runs.torch_model("float64")
    optimizer = _runs.torch_optimizer(model, name, kwargs, bias_group)
    _runs.run_torch(model, optimizer, 2, "float64")
    run = interop.from_torch(
        model.state_dict(), optimizer.state_dict(), _runs.NAME_MAP, dtype=jnp.float32
    )
    leaves = jax.tree.leaves((run.params, run.opt_state))
    assert {str(x.dtype) for x in leaves if x.dtype != jnp.int32} == {"float32"}


def test_state_and_groups_that_differ_are_named(saved):
    run = interop.from_torch(*saved, _runs.NAME_MAP)
    swapped = [
        run.groups[0],
        interop.ParamGroup(run.groups[1].spec, run.groups[1].paths[:1]),
    ]
    with pytest.raises(ValueError, match="updates the params .* together, which is no param group"):
        interop.to_torch(run.params, run.opt_state, swapped, _runs.NAME_MAP)


def test_round_trip_is_bitwise(saved):
    run = interop.from_torch(*saved, _runs.NAME_MAP)
    model_sd, opt_sd = interop.to_torch(run.params, run.opt_state, run.groups, _runs.NAME_MAP)
    for name, tensor in saved[0].items():
        assert torch.equal(model_sd[name], tensor), name
    for index, entry in saved[1]["state"].items():
        for key, tensor in entry.items():
            assert torch.equal(opt_sd["state"][index][key], tensor), (index, key)
    for ours, theirs in zip(opt_sd["param_groups"], saved[1]["param_groups"], strict=True):
        assert ours == theirs


def test_importing_interop_imports_no_framework():
    code = (
        "import sys, adam_jax, adam_jax.interop; "
        "print(sorted({'torch', 'keras', 'flax'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_conv_layout_gives_the_same_convolution():
    """``interop.conv``: torch's (out, in, kh, kw) weight as an (kh, kw, in, out) kernel."""
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 4, kernel_size=(2, 3), bias=False)
    x = torch.randn(2, 3, 5, 6)
    params = interop.params_from_torch(layer.state_dict(), {"weight": interop.conv("k")})
    ours = jax.lax.conv_general_dilated(
        jnp.asarray(x.numpy()).transpose(0, 2, 3, 1),
        params["k"],
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    np.testing.assert_allclose(
        np.asarray(ours).transpose(0, 3, 1, 2), layer(x).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    back = interop.params_to_torch(params, {"weight": interop.conv("k")})
    assert torch.equal(back["weight"], layer.weight)


def test_step_counts_are_torch_steps_per_group():
    """A group added to a torch optimizer later is at fewer steps: each group's count is read
    back from the optax.partition state, and advances with the converted optimizer."""
    model = _runs.torch_model("float32")
    optimizer = torch.optim.Adam(model[0].parameters(), lr=1e-2)
    _runs.run_torch(model, optimizer, 3, "float32")
    optimizer.add_param_group({"params": list(model[2].parameters()), "lr": 1e-3})
    _runs.run_torch(model, optimizer, 2, "float32")
    saved = optimizer.state_dict()
    torch_steps = [int(saved["state"][g["params"][0]]["step"]) for g in saved["param_groups"]]
    assert torch_steps == [5, 2]

    state = interop.named_optimizer_state_dict(model, optimizer)
    run = interop.from_torch(model.state_dict(), state, _runs.NAME_MAP)
    assert interop.step_counts(run.opt_state) == {"group0": 5, "group1": 2}
    _, _, opt_state = _runs.run_optax(run.params, run.optimizer, run.opt_state, 4, "float32")
    assert interop.step_counts(opt_state) == {"group0": 9, "group1": 6}
    single = interop.from_torch(*_runs_one_group(), _runs.NAME_MAP)
    assert interop.step_counts(single.opt_state) == {"group0": 3}


def _runs_one_group():
    model = _runs.torch_model("float32")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _runs.run_torch(model, optimizer, 3, "float32")
    return model.state_dict(), optimizer.state_dict()
