"""Which torch name each optimizer parameter index is: param_names checked against every signal
of the state dicts, named_optimizer_state_dict read from the live objects."""

import re

import numpy as np
import pytest

from adam_jax import interop

torch = pytest.importorskip("torch", reason="the order checks read torch state dicts")


def _model(d_in: int):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(d_in, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4))


def _name_map():
    return {
        "0.weight": interop.linear("fc1/kernel"),
        "0.bias": "fc1/bias",
        "2.weight": interop.linear("fc2/kernel"),
        "2.bias": "fc2/bias",
    }


def _steps(model, optimizer, d_in: int, steps: int = 3):
    torch.manual_seed(1)
    x, y = torch.randn(5, d_in), torch.randn(5, 4)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.sum((model(x) - y) ** 2).backward()
        optimizer.step()


def _weights_then_biases(d_in: int):
    """AdamW AMSGrad, the weights in group 0, the biases in group 1 without decay, built from
    the parameters (so torch saves no names): torch's order 0.weight, 2.weight, 0.bias, 2.bias."""
    model = _model(d_in)
    optimizer = torch.optim.AdamW(
        [
            {"params": [model[0].weight, model[2].weight]},
            {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0},
        ],
        lr=1e-2,
        amsgrad=True,
    )
    _steps(model, optimizer, d_in)
    return model, optimizer


def test_the_models_order_across_groups_is_refused_with_the_expected_order():
    model, optimizer = _weights_then_biases(d_in=3)
    given = ["0.weight", "0.bias", "2.weight", "2.bias"]  # the model's order, not torch's
    with pytest.raises(ValueError) as error:
        interop.from_torch(
            model.state_dict(), optimizer.state_dict(), _name_map(), param_names=given
        )
    message = str(error.value)
    assert "torch's parameter 1 (param group 0) has exp_avg of shape (4, 4)" in message
    assert "'0.bias', is (4,) in the model" in message
    assert "Expected (the groups' sizes and shapes, each group in the model's order): " in message
    assert "['0.weight', '2.weight', '0.bias', '2.bias']" in message


def test_the_right_order_is_taken():
    model, optimizer = _weights_then_biases(d_in=3)
    run = interop.from_torch(
        model.state_dict(),
        optimizer.state_dict(),
        _name_map(),
        param_names=["0.weight", "2.weight", "0.bias", "2.bias"],
    )
    assert [g.paths for g in run.groups] == [
        (("fc1", "kernel"), ("fc2", "kernel")),
        (("fc1", "bias"), ("fc2", "bias")),
    ]
    exp_avg = optimizer.state_dict()["state"][1]["exp_avg"].numpy()
    np.testing.assert_array_equal(
        run.opt_state.inner_states["group0"][0][0].mu["fc2"]["kernel"], exp_avg.T
    )


def test_same_shape_params_out_of_the_models_order_are_refused():
    """Both weights are (4, 4) and both biases (4,): shapes cannot see the swap, the model's
    order within the group does."""
    model, optimizer = _weights_then_biases(d_in=4)
    swapped = ["2.weight", "0.weight", "0.bias", "2.bias"]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "param group 0's names ['2.weight', '0.weight'] are not in the model's order"
        )
        + r".*\['0\.weight', '2\.weight', '0\.bias', '2\.bias'\]",
    ):
        interop.from_torch(
            model.state_dict(), optimizer.state_dict(), _name_map(), param_names=swapped
        )


def _head_first(lr_head: float):
    """fc2 (the head) in group 0 with its own learning rate, fc1 in group 1: both (4, 4) + (4,)."""
    model = _model(d_in=4)
    optimizer = torch.optim.AdamW(
        [{"params": list(model[2].parameters()), "lr": lr_head}, {"params": model[0].parameters()}],
        lr=1e-3,
        amsgrad=True,
    )
    _steps(model, optimizer, d_in=4)
    return model, optimizer


def test_same_shape_params_in_groups_that_differ_are_refused():
    model, optimizer = _head_first(lr_head=0.1)
    in_the_models_order = ["0.weight", "0.bias", "2.weight", "2.bias"]  # wrong: head first
    with pytest.raises(
        ValueError,
        match=re.escape("'0.weight' (param group 0) could as well be in param group 1")
        + r".*fit \[\['0\.weight', '0\.bias'\], \['2\.weight', '2\.bias'\]\] and "
        + r"\[\['2\.weight', '2\.bias'\], \['0\.weight', '0\.bias'\]\] alike, and the "
        + re.escape("groups differ (lr 0.1/0.001)")
        + ".*named_optimizer_state_dict",
    ):
        interop.from_torch(
            model.state_dict(), optimizer.state_dict(), _name_map(), param_names=in_the_models_order
        )


def test_groups_that_do_not_differ_take_any_same_shape_order():
    model, optimizer = _head_first(lr_head=1e-3)
    run = interop.from_torch(
        model.state_dict(),
        optimizer.state_dict(),
        _name_map(),
        param_names=["0.weight", "0.bias", "2.weight", "2.bias"],
    )
    assert len(run.groups) == 2


def test_named_optimizer_state_dict_reads_the_names_by_identity():
    model, optimizer = _head_first(lr_head=0.1)
    state = interop.named_optimizer_state_dict(model, optimizer)
    assert [g["param_names"] for g in state["param_groups"]] == [
        ["2.weight", "2.bias"],
        ["0.weight", "0.bias"],
    ]
    run = interop.from_torch(model.state_dict(), state, _name_map())
    assert [g.spec.learning_rate for g in run.groups] == [0.1, 1e-3]
    assert run.groups[0].paths == (("fc2", "kernel"), ("fc2", "bias"))
    head = run.opt_state.inner_states["group0"][0][0]
    torch_head = optimizer.state_dict()["state"][0]  # torch's parameter 0: fc2's weight
    np.testing.assert_array_equal(head.mu["fc2"]["kernel"], torch_head["exp_avg"].numpy().T)
    np.testing.assert_array_equal(
        head.nu_max["fc2"]["kernel"], torch_head["max_exp_avg_sq"].numpy().T
    )


def test_named_optimizer_state_dict_refuses_a_parameter_of_another_model():
    model, optimizer = _head_first(lr_head=0.1)
    with pytest.raises(ValueError, match=r"param group 0's parameter 0 \(shape \(4, 4\)\) is not"):
        interop.named_optimizer_state_dict(_model(d_in=4), optimizer)


def test_param_names_that_contradict_the_saved_names_are_refused():
    model, optimizer = _head_first(lr_head=0.1)
    state = interop.named_optimizer_state_dict(model, optimizer)
    with pytest.raises(ValueError, match="differs from the names the optimizer state dict's"):
        interop.from_torch(
            model.state_dict(),
            state,
            _name_map(),
            param_names=["0.weight", "0.bias", "2.weight", "2.bias"],
        )


def test_unknown_and_repeated_names_are_refused():
    model, optimizer = _weights_then_biases(d_in=3)
    sd, osd = model.state_dict(), optimizer.state_dict()
    with pytest.raises(ValueError, match="param_names' '1.weight' is not in the model state dict"):
        interop.from_torch(
            sd, osd, _name_map(), param_names=["0.weight", "1.weight", "0.bias", "2.bias"]
        )
    with pytest.raises(ValueError, match=r"param_names names \['0\.weight'\] more than once"):
        interop.from_torch(
            sd, osd, _name_map(), param_names=["0.weight", "0.weight", "0.bias", "2.bias"]
        )
