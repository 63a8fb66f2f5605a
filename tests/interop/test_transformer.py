"""The training package's transformer, written in PyTorch too, converted mid-run both ways.

``adam_jax.training.tasks.lm.TransformerLM`` (token and position embeddings,
pre-LayerNorm blocks of causal self-attention and a tanh-GELU MLP, a final
LayerNorm, a bias-free head: 29 tensors at 2 layers) and its PyTorch twin
below, trained with AdamW and GPT's param groups (no weight decay on biases and
LayerNorm), converted after a few steps, continue on the uninterrupted run's
losses.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adam_jax import interop

from . import _runs

torch = pytest.importorskip("torch", reason="the transformer's twin is a torch module")
nnx = pytest.importorskip("flax.nnx", reason="the training package's model is a flax.nnx module")
lm = pytest.importorskip("adam_jax.training.tasks.lm")

SIZES = {"vocab": 32, "context": 16, "d_model": 16, "n_heads": 2, "n_layers": 2, "mlp_ratio": 4}
BATCH, BEFORE, AFTER = 4, 10, 50
ADAMW = {"lr": 3e-3, "weight_decay": 0.1, "amsgrad": True}


class TorchBlock(torch.nn.Module):
    """``lm.Block`` in PyTorch."""

    def __init__(self, d_model, n_heads, mlp_ratio):
        super().__init__()
        self.n_heads = n_heads
        self.attn_norm = torch.nn.LayerNorm(d_model, eps=1e-5)
        self.qkv = torch.nn.Linear(d_model, 3 * d_model)
        self.out = torch.nn.Linear(d_model, d_model)
        self.mlp_norm = torch.nn.LayerNorm(d_model, eps=1e-5)
        self.mlp_in = torch.nn.Linear(d_model, mlp_ratio * d_model)
        self.mlp_out = torch.nn.Linear(mlp_ratio * d_model, d_model)

    def forward(self, x):
        batch, length, width = x.shape
        heads = (batch, length, self.n_heads, width // self.n_heads)
        q, k, v = (
            a.reshape(heads).transpose(1, 2)
            for a in self.qkv(self.attn_norm(x)).split(width, dim=-1)
        )
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, width))
        hidden = torch.nn.functional.gelu(self.mlp_in(self.mlp_norm(x)), approximate="tanh")
        return x + self.mlp_out(hidden)


class TorchLM(torch.nn.Module):
    """``lm.TransformerLM`` in PyTorch (jax.nn.gelu is the tanh approximation)."""

    def __init__(self, vocab, context, d_model, n_heads, n_layers, mlp_ratio):
        super().__init__()
        self.token_embed = torch.nn.Embedding(vocab, d_model)
        self.position_embed = torch.nn.Embedding(context, d_model)
        self.blocks = torch.nn.ModuleList(
            [TorchBlock(d_model, n_heads, mlp_ratio) for _ in range(n_layers)]
        )
        self.final_norm = torch.nn.LayerNorm(d_model, eps=1e-5)
        self.head = torch.nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens):
        x = self.token_embed(tokens) + self.position_embed(torch.arange(tokens.shape[-1]))[None]
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))


def name_map(n_layers: int) -> dict:
    """torch names -> ``TransformerLM``'s params paths."""
    names = {
        "token_embed.weight": "token_embed/embedding",
        "position_embed.weight": interop.as_is("position_embed/embedding"),  # square: say so
        "final_norm.weight": "final_norm/scale",
        "final_norm.bias": "final_norm/bias",
        "head.weight": interop.linear("head/kernel"),
    }
    for i in range(n_layers):
        for norm in ("attn_norm", "mlp_norm"):
            names[f"blocks.{i}.{norm}.weight"] = f"blocks/{i}/{norm}/scale"
            names[f"blocks.{i}.{norm}.bias"] = f"blocks/{i}/{norm}/bias"
        for ours, theirs in (("qkv", "attn/qkv"), ("out", "attn/out"), ("mlp_in", "mlp_in")):
            names[f"blocks.{i}.{ours}.weight"] = interop.linear(f"blocks/{i}/{theirs}/kernel")
            names[f"blocks.{i}.{ours}.bias"] = f"blocks/{i}/{theirs}/bias"
        names[f"blocks.{i}.mlp_out.weight"] = interop.linear(f"blocks/{i}/mlp_out/kernel")
        names[f"blocks.{i}.mlp_out.bias"] = f"blocks/{i}/mlp_out/bias"
    return names


NAME_MAP = name_map(SIZES["n_layers"])


def tokens() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, SIZES["vocab"], size=(BATCH, SIZES["context"] + 1))


def torch_run(steps: int):
    """The twin from torch's init, AdamW with GPT's groups; its losses, model and optimizer."""
    torch.manual_seed(0)
    model = TorchLM(**SIZES).double()
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [(n, p) for n, p in named if p.ndim >= 2]},
            {"params": [(n, p) for n, p in named if p.ndim < 2], "weight_decay": 0.0},
        ],
        **ADAMW,
    )
    return torch_steps(model, optimizer, steps), model, optimizer


def torch_steps(model, optimizer, steps: int) -> np.ndarray:
    data = torch.from_numpy(tokens())
    losses = []
    for _ in range(steps):
        logits = model(data[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, SIZES["vocab"]), data[:, 1:].reshape(-1)
        )
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return np.asarray(losses)


@functools.cache
def _graphdef_and_keys():
    """``TransformerLM``'s graph and the pure-dict keys its state expects (ints for layers)."""
    model = lm.TransformerLM(**SIZES, param_dtype=jnp.float64, dtype=jnp.float64, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, jax.tree.map(lambda _: None, nnx.to_pure_dict(state))


def _as_model_dict(template, params):
    """Converted params (keys as strings) keyed as ``template`` (layer indices as ints)."""
    if not isinstance(template, dict):
        return params
    return {k: _as_model_dict(v, params[str(k)]) for k, v in template.items()}


def jax_steps(params, optimizer, opt_state, steps: int):
    """``TransformerLM`` with the converted params, ``steps`` steps in one jitted scan."""
    graphdef, keys = _graphdef_and_keys()
    data = jnp.asarray(tokens())

    def loss_fn(p):
        model = nnx.merge(graphdef, nnx.State(_as_model_dict(keys, p)))
        logits = model(data[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, data[:, 1:]).mean()

    def step(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = optimizer.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    run = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), length=steps))
    (params, opt_state), losses = run(params, opt_state)
    return np.asarray(losses), params, opt_state


def exact_attention(query, key, value, is_causal=False):
    """``jax.nn.dot_product_attention`` with the softmax in the inputs' dtype.

    jax's own computes the softmax in float32 whatever the inputs' dtype (its
    ``_dot_product_attention_core``), which alone puts float64 runs 1e-9 apart
    after 50 steps here; the conversion is measured without it.
    """
    assert is_causal
    logits = jnp.einsum("blhd,bmhd->bhlm", query, key) / np.sqrt(query.shape[-1])
    length = query.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    logits = jnp.where(causal[None, None], logits, -jnp.inf)
    return jnp.einsum("bhlm,bmhd->blhd", jax.nn.softmax(logits, axis=-1), value)


@pytest.fixture
def torch64(x64, monkeypatch):
    """float64 in torch (default dtype too, for its scalar state) and in JAX's attention."""
    monkeypatch.setattr(jax.nn, "dot_product_attention", exact_attention)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


@functools.cache
def _uninterrupted():
    return torch_run(BEFORE + AFTER)[0]


def test_transformer_has_the_tensors_the_issue_asks(torch64):
    _, model, _ = torch_run(0)
    names = set(model.state_dict())
    assert names == set(NAME_MAP) and len(names) == 29  # at least a dozen, the issue asks
    assert {"token_embed.weight", "blocks.1.mlp_norm.weight", "final_norm.bias"} <= names


def test_torch_transformer_continues_in_jax(torch64):
    uninterrupted = _uninterrupted()
    before, model, optimizer = torch_run(BEFORE)
    run = interop.from_torch(model.state_dict(), optimizer.state_dict(), NAME_MAP)
    after, *_ = jax_steps(run.params, run.optimizer, run.opt_state, AFTER)

    assert [g.spec.weight_decay for g in run.groups] == [0.1, 0.0]
    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]


def test_jax_transformer_continues_in_torch(torch64):
    uninterrupted = _uninterrupted()
    _, model, optimizer = torch_run(0)
    start = interop.from_torch(model.state_dict(), optimizer.state_dict(), NAME_MAP)
    state = start.optimizer.init(start.params)
    before, params, state = jax_steps(start.params, start.optimizer, state, BEFORE)
    model_sd, optimizer_sd = interop.to_torch(params, state, start.groups, NAME_MAP)
    model.load_state_dict(model_sd)
    optimizer.load_state_dict(optimizer_sd)
    after = torch_steps(model, optimizer, AFTER)

    assert _runs.relative(before, uninterrupted[:BEFORE]) <= _runs.TOLERANCE["float64"]
    assert _runs.relative(after, uninterrupted[BEFORE:]) <= _runs.TOLERANCE["float64"]
