"""scikit-learn's 8x8 digits (bundled, no download): an MLP classifier with minibatches.

1,797 images, pixels scaled to [0, 1]; ``TEST_FRACTION`` of them held out by a
permutation drawn with ``--rng-seed``. MLP 64 -> 128 -> ReLU -> 10, mean
cross-entropy; each epoch visits the training images in an order that is a pure
function of the data key and the epoch, in batches of ``--batch-size`` (the last
partial batch dropped), so a resumed run draws what the straight run would.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adam_jax.training.tasks.base import ConfigError, Problem, Task
from adam_jax.training.tasks.mlp import init_mlp

HIDDEN = 128  # hidden units (64 -> 128 -> ReLU -> 10)
TEST_FRACTION = 0.2  # held-out share of the 1,797 digits, drawn with --rng-seed


def cross_entropy(logits, labels):
    """Mean cross-entropy of integer labels; no aux."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), {}


def test_metrics(logits, labels):
    """Held-out loss and accuracy."""
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)
    return {"loss": cross_entropy(logits, labels)[0], "accuracy": accuracy}


def load(seed: int, dtype) -> tuple[dict, dict]:
    """``(train, test)`` dicts of NumPy ``x`` (pixels in [0, 1], ``dtype``) and int32 ``y``."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(TEST_FRACTION * len(labels))
    test, train = order[:n_test], order[n_test:]
    images = (images / 16.0).astype(dtype)
    labels = labels.astype(np.int32)
    return {"x": images[train], "y": labels[train]}, {"x": images[test], "y": labels[test]}


def minibatches(n_train: int, size: int):
    """``batch(train, data_key, step)``: step's batch of the epoch's permutation."""
    steps_per_epoch = n_train // size

    def batch(data, data_key, step):
        epoch, i = jnp.divmod(step, steps_per_epoch)
        order = jax.random.permutation(jax.random.fold_in(data_key, epoch), n_train)
        idx = jax.lax.dynamic_slice_in_dim(order, i * size, size)
        return data["x"][idx], data["y"][idx]

    return batch, steps_per_epoch


def make_problem(config, dtypes) -> Problem:
    """The digits split by ``config.rng_seed``, and the MLP's initial params."""
    train, test = load(config.rng_seed, config.dtype)
    n_train = len(train["y"])
    if config.batch_size > n_train:
        raise ConfigError(
            "--batch-size", f"at most the {n_train} training digits, got {config.batch_size}"
        )
    weights_rng = np.random.default_rng(config.rng_seed + 1)  # a stream apart from the split's
    sizes = (train["x"].shape[1], HIDDEN, 10)
    graphdef, params = init_mlp(config.init, config.rng_seed, sizes, dtypes, weights_rng)
    batch, steps_per_epoch = minibatches(n_train, config.batch_size)
    as_jax = {k: jnp.asarray(v) for k, v in train.items()}
    return Problem(
        graphdef,
        params,
        as_jax,
        {k: jnp.asarray(v) for k, v in test.items()},
        cross_entropy,
        batch,
        steps_per_epoch,
        test_metrics,
    )


TASK = Task(
    name="digits",
    defaults={"steps": 2000, "lr": 1e-3, "optimizer": "adam", "batch_size": 64, "log_every": 100},
    make_problem=make_problem,
    summary="scikit-learn's 8x8 digits, MLP 64-128-10, cross-entropy, minibatches, 20% held out",
)
