"""torch layouts: a weight whose shape cannot show its layout must be declared, and a JAX
template checks every entry's path and shape; the declared layout continues torch's run."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adam_jax import interop

from . import _runs

torch = pytest.importorskip("torch", reason="the layout checks read torch state dicts")

WIDTH, D_OUT, N = 4, 2, 8
BEFORE, AFTER = 5, 20
# A square first layer: its (out, in) weight has the shape of its (in, out) kernel.
GOOD_MAP = {
    "0.weight": interop.linear("square/kernel"),
    "0.bias": "square/bias",
    "2.weight": interop.linear("out/kernel"),
    "2.bias": "out/bias",
}
S = jax.ShapeDtypeStruct
TEMPLATE = {
    "square": {"kernel": S((WIDTH, WIDTH), jnp.float64), "bias": S((WIDTH,), jnp.float64)},
    "out": {"kernel": S((WIDTH, D_OUT), jnp.float64), "bias": S((D_OUT,), jnp.float64)},
}


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(WIDTH, WIDTH), torch.nn.Tanh(), torch.nn.Linear(WIDTH, D_OUT)
    ).double()


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, WIDTH)), rng.normal(size=(N, D_OUT))


def _torch_steps(model, optimizer, steps):
    x, y = (torch.from_numpy(a) for a in _data())
    return _runs.torch_steps(model, optimizer, x, y, steps)


def _jax_steps(run, steps):
    x, y = (jnp.asarray(a) for a in _data())

    def loss_fn(p):
        hidden = jnp.tanh(x @ p["square"]["kernel"] + p["square"]["bias"][None])
        return jnp.sum((hidden @ p["out"]["kernel"] + p["out"]["bias"][None] - y) ** 2)

    def step(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = run.optimizer.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    _, losses = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), length=steps))(
        run.params, run.opt_state
    )
    return np.asarray(losses)


@pytest.fixture
def torch64(x64):
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


def _run_before():
    model = _model()
    optimizer = torch.optim.AdamW(model.named_parameters(), lr=1e-2, amsgrad=True)
    _torch_steps(model, optimizer, BEFORE)
    return model, optimizer


def test_square_linear_weight_mapped_without_linear_is_refused(torch64):
    model, optimizer = _run_before()
    wrong = {**GOOD_MAP, "0.weight": "square/kernel"}
    for template in (None, TEMPLATE):
        with pytest.raises(ValueError) as error:
            interop.from_torch(model.state_dict(), optimizer.state_dict(), wrong, template=template)
        message = str(error.value)
        assert "'0.weight' -> 'square/kernel', shape (4, 4), an nn.Linear weight" in message
        assert "interop.linear('square/kernel') or interop.as_is('square/kernel')" in message
        assert "2.weight" not in message  # rectangular: its shape shows its layout


def test_square_linear_weight_mapped_with_linear_continues_torch(torch64):
    model = _model()
    optimizer = torch.optim.AdamW(model.named_parameters(), lr=1e-2, amsgrad=True)
    uninterrupted = _torch_steps(model, optimizer, BEFORE + AFTER)
    model, optimizer = _run_before()

    run = interop.from_torch(
        model.state_dict(), optimizer.state_dict(), GOOD_MAP, template=TEMPLATE
    )
    after = _jax_steps(run, AFTER)
    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]

    # Declared kept on purpose, the same weight loads untransposed: another trajectory.
    kept = {**GOOD_MAP, "0.weight": interop.as_is("square/kernel")}
    untransposed = interop.from_torch(model.state_dict(), optimizer.state_dict(), kept)
    assert _runs.relative(_jax_steps(untransposed, AFTER), uninterrupted[BEFORE:]) > 1e-3


def test_rectangular_weight_against_the_template_names_the_fix(torch64):
    model, optimizer = _run_before()
    wrong = {**GOOD_MAP, "2.weight": "out/kernel"}
    interop.from_torch(model.state_dict(), optimizer.state_dict(), wrong)  # no template: loads
    with pytest.raises(
        ValueError,
        match=re.escape(
            "'2.weight' (an nn.Linear weight (out, in; its bias has the first dimension), torch "
            "shape (2, 4)) -> 'out/kernel' would be (2, 4), the template has (4, 2): map it "
            "with interop.linear('out/kernel')."
        ),
    ):
        interop.from_torch(model.state_dict(), optimizer.state_dict(), wrong, template=TEMPLATE)


def test_template_paths_must_match_the_map(torch64):
    state_dict = _model().state_dict()
    renamed = {**GOOD_MAP, "2.bias": "head/bias"}
    with pytest.raises(ValueError, match=r"'2\.bias' -> 'head/bias' is not in the template"):
        interop.params_from_torch(state_dict, renamed, template=TEMPLATE)
    extra = {**TEMPLATE, "scale": S((WIDTH,), jnp.float64)}
    with pytest.raises(ValueError, match="the template's 'scale' is mapped by no torch name"):
        interop.params_from_torch(state_dict, GOOD_MAP, template=extra)


def test_what_embedding_layer_norm_and_conv_keep(torch64):
    """nn.Embedding and LayerNorm keep their layout (a square embedding must say so);
    a convolution's weight is square in no sense the map can miss."""
    torch.manual_seed(0)
    embed, norm = torch.nn.Embedding(WIDTH, WIDTH), torch.nn.LayerNorm(WIDTH)
    conv = torch.nn.Conv2d(3, 3, kernel_size=3)
    state_dict = {
        **{f"embed.{k}": v for k, v in embed.state_dict().items()},
        **{f"norm.{k}": v for k, v in norm.state_dict().items()},
        **{f"conv.{k}": v for k, v in conv.state_dict().items()},
    }
    name_map = {
        "embed.weight": "embed/embedding",
        "norm.weight": "norm/scale",
        "norm.bias": "norm/bias",
        "conv.weight": "conv/kernel",
        "conv.bias": "conv/bias",
    }
    with pytest.raises(ValueError) as error:
        interop.params_from_torch(state_dict, name_map)
    assert "'embed.weight' -> 'embed/embedding', shape (4, 4), an (out, in) matrix" in str(
        error.value
    )
    assert "interop.conv('conv/kernel', 2) or interop.as_is('conv/kernel')" in str(error.value)
    assert "norm." not in str(error.value)
    name_map.update(
        {
            "embed.weight": interop.as_is("embed/embedding"),
            "conv.weight": interop.conv("conv/kernel"),
        }
    )
    params = interop.params_from_torch(state_dict, name_map)
    np.testing.assert_array_equal(params["embed"]["embedding"], embed.weight.detach().numpy())
    np.testing.assert_array_equal(params["norm"]["scale"], norm.weight.detach().numpy())
    assert params["conv"]["kernel"].shape == (3, 3, 3, 3)
    np.testing.assert_array_equal(
        params["conv"]["kernel"], conv.weight.detach().numpy().transpose(2, 3, 1, 0)
    )


def test_to_torch_refuses_an_unsaid_square_layout():
    params = {"square": {"kernel": jnp.ones((WIDTH, WIDTH)), "bias": jnp.zeros(WIDTH)}}
    with pytest.raises(ValueError, match=r"'0\.weight' -> 'square/kernel', shape \(4, 4\)"):
        interop.params_to_torch(params, {"0.weight": "square/kernel", "0.bias": "square/bias"})


def test_a_leaf_cannot_both_permute_and_keep():
    with pytest.raises(ValueError, match="both permutes its axes"):
        interop.Leaf("w", (1, 0), kept=True)
    assert interop.as_is("a/b").declared and not interop.Leaf("a/b").declared
