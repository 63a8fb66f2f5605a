"""A small decoder-only transformer language model on the Python standard library's source.

The text is the standard library's own top-level ``*.py`` files (those directly
in ``sysconfig.get_paths()["stdlib"]``), read in sorted order, bytes as tokens
(vocabulary 256): it is on every machine, needs no download, and is the same
bytes on every machine with the same Python build. It is *not* the same across
Python versions; :func:`load_corpus` returns its size and SHA-256 so that a run
can record which text it saw. CPython 3.11.7 (pyenv's build): 168 files,
4,698,388 bytes, SHA-256 ``2e31e854ce7c5a39d3549a94420e7ba4b51281ef0f32fc8b6ddd601eff6d7d42``;
151 training files (4,036,733 bytes) and 17 held out (661,655 bytes).

Held-out split by file: every ``TEST_EVERY``-th file of the sorted list. A step
trains on ``--batch-size`` windows of ``CONTEXT + 1`` bytes at offsets drawn
uniformly from the training text with ``fold_in(data_key, step)`` (nanoGPT's
sampling), so a resumed run draws what the straight run would. The held-out
metrics are computed in one call on ``TEST_WINDOWS`` fixed windows spread
evenly over the held-out text, next to the unigram baseline of the same bytes.

The model is GPT-2's shape (Radford et al., 2019) at a small size: token and
learned position embeddings, ``N_LAYERS`` pre-LayerNorm blocks of causal
multi-head self-attention and a GELU MLP, a final LayerNorm and an output head.
The head is *not* tied to the token embedding: untied, the embedding row of a
byte that never occurs in the training text gets exactly zero gradient, the
case the epsilon study (docs/epsilon.md) is about; tied, every row would get
the softmax's gradient through the head. It costs 32,768 params.

References:
  Radford et al., `Language Models are Unsupervised Multitask Learners
  <https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf>`_,
  2019. Karpathy, `nanoGPT <https://github.com/karpathy/nanoGPT>`_, model.py.
"""

import functools
import hashlib
import math
import sys
import sysconfig
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from adam_jax.training.tasks.base import ConfigError, Problem, Task

# --- the model ---------------------------------------------------------------------
VOCAB = 256  # bytes as tokens
CONTEXT = 128  # bytes a window holds: the longest input the model takes
D_MODEL = 128  # width of the residual stream
N_HEADS = 4  # attention heads of D_MODEL // N_HEADS = 32 each
N_LAYERS = 4  # transformer blocks
MLP_RATIO = 4  # MLP hidden width / D_MODEL
INIT_STD = 0.02  # GPT-2's init: N(0, 0.02); residual projections N(0, 0.02 / sqrt(2 N_LAYERS))
# --- the data ----------------------------------------------------------------------
TEST_EVERY = 10  # files 0, 10, 20, ... of the sorted list are held out
TEST_WINDOWS = 64  # held-out windows of CONTEXT predicted bytes: 8,192 tokens


# --- the corpus --------------------------------------------------------------------
class Corpus(NamedTuple):
    """The standard library's text, split by file.

    ``train`` and ``test`` are uint8 arrays of shape ``(n_bytes,)``: the files
    of each split, concatenated in sorted order.
    """

    train: np.ndarray
    test: np.ndarray
    train_files: tuple[str, ...]  # names relative to the stdlib directory
    test_files: tuple[str, ...]
    n_bytes: int  # bytes of all files together
    sha256: str  # of all files' bytes in sorted order, hex
    python: str  # the Python version that supplied them, e.g. "3.11.7"


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    """The top-level ``*.py`` files of the standard library, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"] if root is None else root)
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if len(files) < TEST_EVERY:
        raise ValueError(f"root={str(root)!r}: needs at least {TEST_EVERY} *.py files")
    return files


@functools.cache
def load_corpus(root: str | None = None) -> Corpus:
    """Reads the corpus (4.7 MB, 0.1 s; cached) and splits it by file.

    Args:
      root: the directory whose top-level ``*.py`` files are the text; ``None``
        for this interpreter's standard library.

    Returns:
      A :class:`Corpus`; file ``i`` of the sorted list is held out when
      ``i % TEST_EVERY == 0``.
    """
    files = stdlib_files(root)
    texts = [p.read_bytes() for p in files]
    held_out = [i % TEST_EVERY == 0 for i in range(len(files))]

    def join(keep):
        chosen = [t for t, h in zip(texts, held_out, strict=True) if h == keep]
        return np.frombuffer(b"".join(chosen), np.uint8)

    def names(keep):
        return tuple(p.name for p, h in zip(files, held_out, strict=True) if h == keep)

    return Corpus(
        train=join(False),
        test=join(True),
        train_files=names(False),
        test_files=names(True),
        n_bytes=sum(map(len, texts)),
        sha256=hashlib.sha256(b"".join(texts)).hexdigest(),
        python=".".join(map(str, sys.version_info[:3])),
    )


def test_windows(test: np.ndarray, n_windows: int = TEST_WINDOWS, context: int = CONTEXT):
    """``x, y``: ``n_windows`` windows of ``context`` bytes, evenly spread, as int32.

    Window ``j`` starts at ``floor(j (len(test) - context - 1) / (n_windows - 1))``;
    ``y`` is ``x`` shifted by one byte. Shapes ``(n_windows, context)``.
    """
    if len(test) < context + 1:
        raise ValueError(f"test: {len(test)} bytes, fewer than context + 1 = {context + 1}")
    starts = np.linspace(0, len(test) - context - 1, n_windows).astype(np.int64)
    windows = test[starts[:, None] + np.arange(context + 1)[None, :]].astype(np.int32)
    return windows[:, :-1], windows[:, 1:]


def unigram_perplexity(train: np.ndarray, targets: np.ndarray) -> float:
    """Perplexity of ``targets`` under the training text's byte frequencies.

    Add-one smoothing, so that a byte absent from the training text costs
    :math:`-\\ln(1 / (n + 256))` rather than infinity. float64 NumPy.
    """
    counts = np.bincount(train, minlength=VOCAB).astype(np.float64) + 1.0
    log_p = np.log(counts) - np.log(counts.sum())
    return float(np.exp(-np.mean(log_p[np.asarray(targets).ravel()])))


# --- the model ---------------------------------------------------------------------
class CausalSelfAttention(nnx.Module):
    """Multi-head self-attention where position ``t`` sees positions ``<= t``."""

    def __init__(self, d_model, n_heads, *, residual_std, param_dtype, dtype, rngs):
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads}: must divide d_model={d_model}")
        kwargs = {"param_dtype": param_dtype, "dtype": dtype, "rngs": rngs}
        normal = nnx.initializers.normal
        self.n_heads = n_heads
        self.qkv = nnx.Linear(d_model, 3 * d_model, kernel_init=normal(INIT_STD), **kwargs)
        self.out = nnx.Linear(d_model, d_model, kernel_init=normal(residual_std), **kwargs)

    def __call__(self, x):
        batch, length, width = x.shape
        split = (batch, length, self.n_heads, width // self.n_heads)
        q, k, v = (a.reshape(split) for a in jnp.split(self.qkv(x), 3, axis=-1))
        attended = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        return self.out(attended.reshape(batch, length, width))


class Block(nnx.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, d_model, n_heads, mlp_ratio, *, residual_std, param_dtype, dtype, rngs):
        kwargs = {"param_dtype": param_dtype, "dtype": dtype, "rngs": rngs}
        normal = nnx.initializers.normal
        hidden = mlp_ratio * d_model
        self.attn_norm = nnx.LayerNorm(d_model, epsilon=1e-5, **kwargs)
        self.attn = CausalSelfAttention(d_model, n_heads, residual_std=residual_std, **kwargs)
        self.mlp_norm = nnx.LayerNorm(d_model, epsilon=1e-5, **kwargs)
        self.mlp_in = nnx.Linear(d_model, hidden, kernel_init=normal(INIT_STD), **kwargs)
        self.mlp_out = nnx.Linear(hidden, d_model, kernel_init=normal(residual_std), **kwargs)

    def __call__(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x))))


class TransformerLM(nnx.Module):
    """Decoder-only transformer over bytes: ``(batch, length)`` ints to logits.

    Args:
      vocab, context, d_model, n_heads, n_layers, mlp_ratio: the sizes (the
        module constants of the same names in upper case by default).
      param_dtype: the params' storage dtype.
      dtype: the compute dtype; params and activations are cast to it.
      rngs: ``nnx.Rngs`` for GPT-2's init: weights and embeddings
        :math:`\\mathcal N(0, 0.02^2)`, the two residual projections of each
        block :math:`\\mathcal N(0, 0.02^2 / (2 L))`, biases 0, LayerNorm 1 and 0.

    Calling it on int tokens of shape ``(batch, length)``, ``length <= context``,
    returns logits of shape ``(batch, length, vocab)`` in ``dtype``.
    """

    def __init__(
        self,
        *,
        vocab=VOCAB,
        context=CONTEXT,
        d_model=D_MODEL,
        n_heads=N_HEADS,
        n_layers=N_LAYERS,
        mlp_ratio=MLP_RATIO,
        param_dtype,
        dtype,
        rngs,
    ):
        kwargs = {"param_dtype": param_dtype, "dtype": dtype, "rngs": rngs}
        embed_init = nnx.initializers.normal(INIT_STD)
        residual_std = INIT_STD / math.sqrt(2 * n_layers)
        self.context = context
        self.token_embed = nnx.Embed(vocab, d_model, embedding_init=embed_init, **kwargs)
        self.position_embed = nnx.Embed(context, d_model, embedding_init=embed_init, **kwargs)
        self.blocks = nnx.List(
            [
                Block(d_model, n_heads, mlp_ratio, residual_std=residual_std, **kwargs)
                for _ in range(n_layers)
            ]
        )
        self.final_norm = nnx.LayerNorm(d_model, epsilon=1e-5, **kwargs)
        self.head = nnx.Linear(
            d_model, vocab, use_bias=False, kernel_init=nnx.initializers.normal(INIT_STD), **kwargs
        )

    def __call__(self, tokens):
        length = tokens.shape[-1]
        if length > self.context:
            raise ValueError(f"tokens: length {length} is beyond the context of {self.context}")
        x = self.token_embed(tokens, out_sharding=_rows_like(tokens))
        x = x + self.position_embed(jnp.arange(length))[None]
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))


def _rows_like(tokens) -> jax.sharding.PartitionSpec | None:
    """The embeddings of ``tokens`` split as the tokens are (batch-split under ``--mesh``):
    JAX cannot infer a gather's output sharding from a split index array."""
    sharding = jax.typeof(tokens).sharding
    if sharding.mesh.empty:
        return None
    spec = tuple(sharding.spec) + (None,) * (tokens.ndim - len(sharding.spec))
    return jax.sharding.PartitionSpec(*spec, None)


def init_lm(init: str, seed: int, dtypes: dict, **sizes):
    """The model's graphdef and initial params in ``init``'s scheme.

    ``"flax"``: the model's own nnx initializers (GPT-2's, see
    :class:`TransformerLM`), drawn with ``jax.random.key(seed)`` in one jitted
    call. ``"torch"``: what ``torch.nn``'s modules draw by default, with NumPy
    (``nn.Embedding`` :math:`\\mathcal N(0, 1)`; ``nn.Linear`` weights and
    biases :math:`U(\\pm 1/\\sqrt{\\text{fan\\_in}})`; ``nn.LayerNorm`` 1 and 0).
    """

    def make(rngs):
        return TransformerLM(rngs=rngs, **dtypes, **sizes)

    if init == "flax":
        graphdef, _ = nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(0))))
        return graphdef, jax.jit(lambda s: nnx.state(make(nnx.Rngs(jax.random.key(s)))))(seed)
    if init != "torch":
        raise ConfigError("--init", f"'torch' or 'flax', got {init!r}")
    graphdef, params = nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(0))))
    rng = np.random.default_rng(seed)
    pdt = dtypes["param_dtype"]

    def draw(module: dict) -> dict:
        if "embedding" in module:  # nn.Embedding
            return {"embedding": rng.standard_normal(module["embedding"].shape)}
        if "scale" in module:  # nn.LayerNorm
            return {"scale": np.ones(module["scale"].shape), "bias": np.zeros(module["bias"].shape)}
        if "kernel" in module:  # nn.Linear; kernels are (fan_in, fan_out)
            bound = 1.0 / math.sqrt(module["kernel"].shape[0])
            return {k: rng.uniform(-bound, bound, v.shape) for k, v in module.items()}
        return {k: draw(v) for k, v in module.items()}

    drawn = draw(nnx.to_pure_dict(params))
    nnx.replace_by_pure_dict(params, jax.tree.map(lambda a: jnp.asarray(a, pdt), drawn))
    return graphdef, params


# --- loss, metrics and batches -------------------------------------------------------
def next_byte_loss(logits, targets):
    """Mean cross-entropy of the next byte, in nats per token; no aux.

    Args:
      logits: ``(batch, length, 256)`` floats.
      targets: ``(batch, length)`` ints, the bytes that follow.
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(), {}


def windows_of(size: int, context: int = CONTEXT):
    """``batch(train, data_key, step)``: ``size`` windows at uniform random offsets.

    The offsets are drawn with ``fold_in(data_key, step)``, a pure function of
    the step. Returns int32 ``x, y`` of shape ``(size, context)``, ``y`` the
    bytes that follow ``x``'s.
    """

    def batch(train, data_key, step):
        text = train["text"]
        key = jax.random.fold_in(data_key, step)
        starts = jax.random.randint(key, (size, 1), 0, text.shape[0] - context)
        windows = text[starts + jnp.arange(context + 1)[None, :]].astype(jnp.int32)
        return windows[:, :-1], windows[:, 1:]

    return batch


def make_problem(config, dtypes) -> Problem:
    """The split corpus, the transformer's initial params, and the batching.

    ``steps_per_epoch`` is the number of steps that draw as many bytes as the
    training text holds (windows are drawn with replacement, so an "epoch" is
    nominal). ``test_metrics`` returns ``loss`` (mean nats per byte),
    ``perplexity`` (its exponential) and ``unigram_perplexity``, the baseline of
    the same held-out bytes under the training text's byte frequencies.
    """
    if config.batch_size < 1:
        raise ConfigError("--batch-size", f"must be a positive integer, got {config.batch_size}")
    corpus = load_corpus()
    test_x, test_y = test_windows(corpus.test)
    baseline = unigram_perplexity(corpus.train, test_y)
    graphdef, params = init_lm(config.init, config.rng_seed, dtypes)

    def test_metrics(logits, targets):
        loss, _ = next_byte_loss(logits, targets)
        return {
            "loss": loss,
            "perplexity": jnp.exp(loss),
            "unigram_perplexity": jnp.asarray(baseline, loss.dtype),
        }

    return Problem(
        graphdef,
        params,
        {"text": jnp.asarray(corpus.train)},
        {"x": jnp.asarray(test_x), "y": jnp.asarray(test_y)},
        next_byte_loss,
        windows_of(config.batch_size),
        len(corpus.train) // (config.batch_size * CONTEXT),
        test_metrics,
    )


TASK = Task(
    name="lm",
    defaults={"steps": 1500, "lr": 2e-3, "optimizer": "adamw", "batch_size": 16, "log_every": 100},
    make_problem=make_problem,
    summary=(
        "byte-level transformer LM (4 blocks, width 128, context 128) on the Python stdlib's"
        " source; held-out perplexity"
    ),
)
