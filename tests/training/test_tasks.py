"""The task registry and each task's pieces: data, split, batches, loss, evaluation."""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax", reason="adam_jax.training needs the train extra")
pytest.importorskip("sklearn", reason="the digits task needs the train extra")

from adam_jax.training import tasks  # noqa: E402
from adam_jax.training.tasks import digits, seed  # noqa: E402
from adam_jax.training.tasks.base import ConfigError  # noqa: E402
from scripts.benchmarks import bench_train, eps_sweep  # noqa: E402

DTYPES = {"param_dtype": jnp.float32, "dtype": jnp.float32}


def config(**overrides):
    values = {
        "rng_seed": 0,
        "batch_size": 64,
        "dtype": "float32",
        "init": "torch",
        "init_from": None,
    }
    return argparse.Namespace(**(values | overrides))


def test_registry_holds_tasks_with_complete_defaults():
    assert {"seed", "digits"} <= set(tasks.TASKS)
    for name, task in tasks.TASKS.items():
        assert task.name == name and tasks.get_task(name) is task
        assert {"steps", "lr", "optimizer", "batch_size", "log_every"} <= set(task.defaults)
    with pytest.raises(ConfigError, match="--task"):
        tasks.get_task("mnist")


def test_import_adam_jax_does_not_import_training():
    import subprocess
    import sys

    code = (
        "import sys, adam_jax; print(any(m.startswith('adam_jax.training') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_seed_problem_is_the_seeds_program():
    problem = seed.make_problem(config(batch_size=5), DTYPES)
    assert problem.train["x"].shape == (5, 1000) and problem.train["y"].shape == (5, 10)
    assert problem.test is None and problem.steps_per_epoch is None
    arrays = seed.torch_layout(problem)
    assert arrays["w1"].shape == (100, 1000) and arrays["w2"].shape == (10, 100)
    bound = 1 / np.sqrt(1000)  # torch.nn.Linear's init
    assert np.all(np.abs(arrays["w1"]) <= bound) and np.std(arrays["w1"]) > 0.5 * bound / np.sqrt(3)
    # The loss is the sum of squares of the NumPy forward pass.
    h = np.maximum(arrays["x"] @ arrays["w1"].T + arrays["b1"], 0)
    pred = h @ arrays["w2"].T + arrays["b2"]
    from flax import nnx

    ours = problem.loss(
        nnx.merge(problem.graphdef, problem.params)(problem.train["x"]), problem.train["y"]
    )[0]
    np.testing.assert_allclose(float(ours), np.sum((pred - arrays["y"]) ** 2), rtol=1e-5)


def test_seed_init_from_round_trips(tmp_path):
    arrays = seed.torch_layout(seed.make_problem(config(batch_size=3, rng_seed=4), DTYPES))
    np.savez(tmp_path / "s.npz", **arrays)
    path = str(tmp_path / "s.npz")
    c = config(batch_size=None, dtype=None, init_from=path)
    fixed = seed.read_init_from(path, vars(c))
    assert fixed == {"batch_size": 3, "dtype": "float32"}
    again = seed.torch_layout(seed.make_problem(argparse.Namespace(**vars(c) | fixed), DTYPES))
    for k, v in arrays.items():
        np.testing.assert_array_equal(again[k], v)
    with pytest.raises(ConfigError, match="--batch-size"):
        seed.read_init_from(path, vars(config(batch_size=7, init_from=path)))


def test_seed_batch_size_beyond_memory_is_a_config_error():
    with pytest.raises(ConfigError, match="--batch-size.*GiB"):
        seed.make_problem(config(batch_size=10**12), DTYPES)


def test_digits_split_is_disjoint_and_drawn_by_seed():
    train, test = digits.load(0, np.float32)
    assert len(test["y"]) == round(0.2 * 1797) and len(train["y"]) + len(test["y"]) == 1797
    rows = {r.tobytes() for r in train["x"]}
    assert sum(r.tobytes() in rows for r in test["x"]) < 10  # only duplicate images can repeat
    assert 0 <= train["x"].min() and train["x"].max() <= 1
    other_train, _ = digits.load(1, np.float32)
    assert not np.array_equal(other_train["y"], train["y"])


def test_digits_batches_visit_each_image_once_per_epoch():
    problem = digits.make_problem(config(batch_size=100), DTYPES)
    n_train = len(problem.train["y"])
    assert problem.steps_per_epoch == n_train // 100
    index = {"x": jnp.arange(n_train)[:, None], "y": jnp.arange(n_train)}
    key = jax.random.key(3)
    epoch = [np.asarray(problem.batch(index, key, s)[1]) for s in range(problem.steps_per_epoch)]
    seen = np.concatenate(epoch)
    assert len(set(seen.tolist())) == len(seen) == problem.steps_per_epoch * 100
    next_epoch = np.asarray(problem.batch(index, key, problem.steps_per_epoch)[1])
    assert not np.array_equal(next_epoch, epoch[0])
    again = np.asarray(jax.jit(problem.batch)(index, key, 2)[1])  # pure: same key, same batch
    np.testing.assert_array_equal(again, epoch[2])


def test_digits_metrics_are_loss_and_accuracy():
    problem = digits.make_problem(config(), DTYPES)
    logits = jnp.asarray([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = jnp.asarray([0, 1, 1])
    scores = problem.test_metrics(logits, labels)
    log_softmax = np.log(np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(1)[:, None])
    expected = -np.mean(log_softmax[np.arange(3), [0, 1, 1]])
    np.testing.assert_allclose(float(scores["loss"]), expected, rtol=1e-6)
    assert float(scores["accuracy"]) == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="--batch-size"):
        digits.make_problem(config(batch_size=5000), DTYPES)


def test_eps_sweep_trains_what_train_py_trains(tmp_path):
    """The sweep's digits run for (adam, lr 1e-3, eps 1e-8, seed 1) is train.py's, step by step."""
    from adam_jax.training import cli

    out = tmp_path / "run"
    argv = ["--task", "digits", "--rng-seed", "1", "--steps", "20", "--log-every", "10", "--quiet"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    with open(out / "metrics.jsonl") as f:
        trained = [json.loads(line)["loss"] for line in f]
    problem, stacked = eps_sweep.problems("digits", seeds=2)
    run = jax.jit(eps_sweep.make_run(problem, "adam", steps=20))
    one = jax.tree.map(lambda x: x[1], stacked)
    result = run(
        jnp.float32(1e-3),
        jnp.float32(1e-8),
        one["params"],
        one["train"],
        one["test"],
        one["data_key"],
    )
    np.testing.assert_allclose(np.asarray(result["loss"]), trained, rtol=1e-5)


def test_bench_train_uses_train_pys_seed_data():
    arrays = bench_train.seed_arrays()
    expected = seed.torch_layout(seed.make_problem(config(), DTYPES))
    assert arrays.keys() == expected.keys()
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], expected[k])
