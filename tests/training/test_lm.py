"""The lm task: corpus, split, batches, the transformer's causality and init, metrics."""

import hashlib
import math
import types

import numpy as np
import pytest

pytest.importorskip("flax", reason="the lm task needs the train extra (flax)")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import adam_jax  # noqa: E402
from adam_jax.training.tasks import lm  # noqa: E402
from adam_jax.training.tasks.base import ConfigError  # noqa: E402

SMALL = {"context": 32, "d_model": 32, "n_heads": 4, "n_layers": 2}  # compiles in about a second
F32 = {"param_dtype": jnp.float32, "dtype": jnp.float32}


def config(**overrides):
    values = {
        "rng_seed": 0,
        "batch_size": 4,
        "dtype": "float32",
        "init": "torch",
        "init_from": None,
    }
    return types.SimpleNamespace(**{**values, **overrides})


# --- corpus ------------------------------------------------------------------------
def test_corpus_is_the_sorted_files_split_disjointly_by_file():
    corpus = lm.load_corpus.__wrapped__()  # uncached: a second read of the disk
    files = lm.stdlib_files()
    names = [p.name for p in files]
    assert set(corpus.train_files).isdisjoint(corpus.test_files)
    assert sorted(corpus.train_files + corpus.test_files) == names
    assert list(corpus.test_files) == names[:: lm.TEST_EVERY]
    texts = {p.name: p.read_bytes() for p in files}
    assert corpus.train.tobytes() == b"".join(texts[n] for n in corpus.train_files)
    assert corpus.test.tobytes() == b"".join(texts[n] for n in corpus.test_files)
    everything = b"".join(texts[n] for n in names)
    assert corpus.n_bytes == len(everything)
    assert corpus.sha256 == hashlib.sha256(everything).hexdigest()
    again = lm.load_corpus.__wrapped__()
    np.testing.assert_array_equal(again.train, corpus.train)
    assert again.sha256 == corpus.sha256


def test_split_on_a_directory_of_our_own(tmp_path):
    for i in reversed(range(21)):  # written out of order: the split follows sorted names
        (tmp_path / f"f{i:02d}.py").write_bytes(bytes([i]) * (i + 1))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ignored.py").write_bytes(b"x")
    corpus = lm.load_corpus.__wrapped__(str(tmp_path))
    assert corpus.test_files == ("f00.py", "f10.py", "f20.py")
    assert len(corpus.train_files) == 18
    np.testing.assert_array_equal(corpus.test, [0] + [10] * 11 + [20] * 21)
    assert corpus.n_bytes == sum(range(1, 22))


def test_too_few_files_is_an_error(tmp_path):
    (tmp_path / "a.py").write_bytes(b"a")
    with pytest.raises(ValueError, match="root="):
        lm.stdlib_files(tmp_path)


def test_test_windows_are_evenly_spread_shifted_pairs():
    text = (np.arange(1000) % 251).astype(np.uint8)
    x, y = lm.test_windows(text, n_windows=5, context=10)
    assert x.shape == y.shape == (5, 10) and x.dtype == np.int32
    np.testing.assert_array_equal(x[:, 0], np.array([0, 247, 494, 741, 989]) % 251)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal((y - x) % 251, 1)


def test_unigram_perplexity_by_hand():
    train = np.array([0, 0, 1], np.uint8)  # add-one counts: 3, 2 and 1 for 254 others; 259 in all
    expected = math.exp(-(math.log(3 / 259) + math.log(2 / 259) + math.log(1 / 259)) / 3)
    assert lm.unigram_perplexity(train, np.array([[0, 1, 7]])) == pytest.approx(expected, 1e-12)


# --- batches -----------------------------------------------------------------------
def test_batches_are_pure_contiguous_and_in_range():
    context, size = 8, 64
    text = (np.arange(context + 4) * 7 % 251).astype(np.uint8)  # 4 possible offsets
    batch = lm.windows_of(size, context)
    train, key = {"text": jnp.asarray(text)}, jax.random.key(3)
    x, y = jax.jit(batch)(train, key, 5)
    x_again, y_again = batch(train, key, jnp.int32(5))
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_array_equal(y, y_again)
    assert x.shape == y.shape == (size, context) and x.dtype == jnp.int32
    assert not np.array_equal(batch(train, key, 6)[0], x)
    starts = np.asarray(x[:, 0]) * pow(7, -1, 251) % 251  # text[i] = 7 i mod 251
    assert set(starts) == {0, 1, 2, 3}  # every offset drawn; none past the end
    for row_x, row_y, start in zip(np.asarray(x), np.asarray(y), starts, strict=True):
        np.testing.assert_array_equal(row_x, text[start : start + context])
        np.testing.assert_array_equal(row_y, text[start + 1 : start + context + 1])


# --- the model ---------------------------------------------------------------------
def test_parameter_tree_has_the_expected_arrays():
    model = nnx.eval_shape(lambda: lm.TransformerLM(rngs=nnx.Rngs(0), **F32))
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model))
    assert len(leaves) == 5 + 12 * lm.N_LAYERS  # 2 embeddings, 12 per block, final norm, head
    d, v, c = lm.D_MODEL, lm.VOCAB, lm.CONTEXT
    per_block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * (4 * d * d) + 4 * d + d
    assert sum(x.size for _, x in leaves) == v * d + c * d + lm.N_LAYERS * per_block + 2 * d + d * v
    shapes = {jax.tree_util.keystr(path): x.shape for path, x in leaves}
    assert shapes["['token_embed']['embedding'].value"] == (v, d)
    assert shapes["['head']['kernel'].value"] == (d, v)
    assert shapes["['blocks'][3]['attn']['qkv']['kernel'].value"] == (d, 3 * d)


def test_causal_mask_is_causal():
    graphdef, params = lm.init_lm("flax", 0, F32, **SMALL)
    forward = jax.jit(lambda tokens: nnx.merge(graphdef, params)(tokens))
    tokens = jax.random.randint(jax.random.key(0), (2, SMALL["context"]), 0, 256)
    changed_at = 20
    other = tokens.at[:, changed_at].set((tokens[:, changed_at] + 1) % 256)
    before, after = forward(tokens), forward(other)
    np.testing.assert_allclose(before[:, :changed_at], after[:, :changed_at], rtol=0, atol=1e-6)
    assert np.all(np.abs(before[:, changed_at:] - after[:, changed_at:]).max(axis=-1) > 1e-4)


def test_longer_than_the_context_is_an_error():
    graphdef, params = lm.init_lm("torch", 0, F32, **SMALL)
    with pytest.raises(ValueError, match="beyond the context of 32"):
        nnx.merge(graphdef, params)(jnp.zeros((1, 33), jnp.int32))


@pytest.mark.parametrize("init", ["flax", "torch"])
def test_loss_at_init_is_about_log_256(init):
    graphdef, params = lm.init_lm(init, 1, F32, **SMALL)
    corpus = lm.load_corpus()
    x, y = lm.test_windows(corpus.test, n_windows=16, context=SMALL["context"])
    logits = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))(params, jnp.asarray(x))
    loss, aux = lm.next_byte_loss(logits, jnp.asarray(y))
    assert aux == {}
    assert abs(float(loss) - math.log(256)) < 0.2


def test_unknown_init_names_the_flag():
    with pytest.raises(ConfigError, match="argument --init: 'torch' or 'flax', got 'xavier'"):
        lm.init_lm("xavier", 0, F32, **SMALL)


def test_params_in_param_dtype_compute_in_dtype():
    dtypes = {"param_dtype": jnp.float32, "dtype": jnp.bfloat16}
    graphdef, params = lm.init_lm("flax", 0, dtypes, **SMALL)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    logits = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))(params, jnp.zeros((1, 4), jnp.int32))
    assert logits.shape == (1, 4, 256) and logits.dtype == jnp.bfloat16


def test_a_few_dozen_adam_steps_reduce_the_loss():
    graphdef, params = lm.init_lm("flax", 0, F32, **SMALL)
    batch = lm.windows_of(8, SMALL["context"])
    train = {"text": jnp.asarray(lm.load_corpus().train)}
    optimizer = adam_jax.adam(1e-2)

    def step(carry, i):
        params, opt_state = carry
        x, y = batch(train, jax.random.key(0), i)
        loss, grads = jax.value_and_grad(
            lambda p: lm.next_byte_loss(nnx.merge(graphdef, p)(x), y)[0]
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    run = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), jnp.arange(40))[1])
    losses = np.asarray(run(params))
    assert losses[0] > 5.0
    assert losses[-5:].mean() < 3.6  # the training text's unigram entropy is 3.15 nats


# --- the problem -------------------------------------------------------------------
def test_problem_metrics_against_numpy():
    problem = lm.make_problem(config(batch_size=3), F32)
    corpus = lm.load_corpus()
    assert problem.test["x"].shape == (lm.TEST_WINDOWS, lm.CONTEXT)
    assert problem.steps_per_epoch == len(corpus.train) // (3 * lm.CONTEXT)
    x, y = problem.batch(problem.train, jax.random.key(0), 0)
    assert x.shape == (3, lm.CONTEXT)
    logits = jax.random.normal(jax.random.key(1), (*problem.test["y"].shape, 256)) * 3
    metrics = jax.jit(problem.test_metrics)(logits, problem.test["y"])
    logits64 = np.asarray(logits, np.float64)
    top = logits64.max(axis=-1, keepdims=True)
    log_softmax = logits64 - top - np.log(np.exp(logits64 - top).sum(axis=-1, keepdims=True))
    targets = np.asarray(problem.test["y"])
    nll = -np.take_along_axis(log_softmax, targets[..., None], axis=-1)
    assert float(metrics["loss"]) == pytest.approx(nll.mean(), rel=1e-5)
    assert float(metrics["perplexity"]) == pytest.approx(np.exp(nll.mean()), rel=1e-5)
    counts = np.bincount(corpus.train, minlength=256) + 1.0
    baseline = np.exp(-np.mean(np.log(counts[targets] / counts.sum())))
    assert float(metrics["unigram_perplexity"]) == pytest.approx(baseline, rel=1e-6)


def test_problem_rejects_a_batch_size_below_one():
    with pytest.raises(ConfigError, match="--batch-size"):
        lm.make_problem(config(batch_size=0), F32)


def test_task_is_registered_under_its_name():
    assert lm.TASK.name == "lm"
    assert {"steps", "lr", "optimizer", "batch_size", "log_every"} <= set(lm.TASK.defaults)
