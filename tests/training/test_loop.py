"""adam_jax.training.loop on its own: the step against float64 NumPy, the chunked scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax", reason="adam_jax.training needs the train extra")
from flax import nnx  # noqa: E402

import adam_jax  # noqa: E402
from adam_jax.training import loop  # noqa: E402
from adam_jax.training.tasks.base import Problem  # noqa: E402


class Linear(nnx.Module):
    def __init__(self, w, b):
        self.w, self.b = nnx.Param(w), nnx.Param(b)

    def __call__(self, x):
        return x @ self.w + self.b[None]


def linear_problem(dtype=np.float32, n=6, d_in=4, d_out=3) -> tuple[Problem, dict]:
    """A least-squares linear model; the NumPy arrays it starts from."""
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.normal(size=(d_in, d_out)).astype(dtype),
        "b": rng.normal(size=d_out).astype(dtype),
        "x": rng.normal(size=(n, d_in)).astype(dtype),
        "y": rng.normal(size=(n, d_out)).astype(dtype),
    }
    graphdef, params = nnx.split(Linear(jnp.asarray(arrays["w"]), jnp.asarray(arrays["b"])))

    def loss(pred, y):
        return jnp.sum((pred - y) ** 2), {}

    def batch(train, key, step):
        del key, step
        return train["x"], train["y"]

    train = {"x": jnp.asarray(arrays["x"]), "y": jnp.asarray(arrays["y"])}
    return Problem(graphdef, params, train, None, loss, batch, None), arrays


def numpy_adam(arrays, steps, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Losses of Adam (PyTorch's convention) on the linear problem, float64, from the equations."""
    p = {"w": arrays["w"].astype(np.float64), "b": arrays["b"].astype(np.float64)}
    x, y = arrays["x"].astype(np.float64), arrays["y"].astype(np.float64)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(val) for k, val in p.items()}
    losses = []
    for t in range(1, steps + 1):
        r = x @ p["w"] + p["b"] - y
        losses.append(np.sum(r**2))
        g = {"w": 2 * x.T @ r, "b": 2 * r.sum(0)}
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            p[k] = p[k] - lr * (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
    return np.array(losses), p


def test_train_step_matches_numpy_adam(x64):
    problem, arrays = linear_problem(np.float64)
    optimizer = adam_jax.adam(0.05)
    step = jax.jit(
        loop.make_train_step(problem, optimizer, loss_dtype="float64", learning_rate=0.05)
    )
    state = loop.init_state(problem, optimizer, seed=0)
    losses = []
    for _ in range(5):
        state, metrics = step(state, problem.train)
        losses.append(float(metrics["loss"]))
        assert float(metrics["lr"]) == 0.05
    expected_losses, expected = numpy_adam(arrays, 5, 0.05)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-12)
    params = nnx.to_pure_dict(state.params)
    np.testing.assert_allclose(params["w"], expected["w"], rtol=1e-12)
    assert int(state.step) == 5


def test_run_chunk_runs_n_steps_and_skips_the_rest():
    problem, _ = linear_problem()
    optimizer = adam_jax.adam(0.05)
    train_step = loop.make_train_step(problem, optimizer, loss_dtype="float32", learning_rate=0.05)
    run_chunk = loop.make_run_chunk(train_step, chunk=5)
    state, metrics, finite = run_chunk(loop.init_state(problem, optimizer, 0), problem.train, 3)
    assert int(state.step) == 3 and bool(finite)
    assert np.all(np.isfinite(metrics["loss"][:3])) and np.all(np.isnan(metrics["loss"][3:]))
    # The same three steps one at a time, jitted: bitwise the same state and losses.
    reference = loop.init_state(problem, optimizer, 0)
    step = jax.jit(train_step)
    for i in range(3):
        reference, m = step(reference, problem.train)
        assert float(m["loss"]) == float(metrics["loss"][i])
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def test_run_chunk_reports_nonfinite_state():
    problem, _ = linear_problem()
    optimizer = adam_jax.adam(1e30)  # the first update overflows float32 params
    train_step = loop.make_train_step(problem, optimizer, loss_dtype="float32", learning_rate=1.0)
    run_chunk = loop.make_run_chunk(train_step, chunk=3)
    _, metrics, finite = run_chunk(loop.init_state(problem, optimizer, 0), problem.train, 3)
    assert not bool(finite) and not np.isfinite(metrics["loss"][-1])


def test_power_of_two_loss_scale_changes_no_bit():
    problem, _ = linear_problem()
    optimizer = adam_jax.adam(0.05)
    states = []
    for scale in (1.0, 1024.0):
        step = jax.jit(
            loop.make_train_step(
                problem, optimizer, loss_dtype="float32", learning_rate=0.05, loss_scale=scale
            )
        )
        state = loop.init_state(problem, optimizer, 0)
        for _ in range(3):
            state, _ = step(state, problem.train)
        states.append(state)
    for a, b in zip(*map(jax.tree.leaves, states), strict=True):
        np.testing.assert_array_equal(a, b)


def test_epsilon_metric_and_schedule_are_logged():
    problem, _ = linear_problem()
    optimizer = adam_jax.adam(0.05, eps=1e30)  # epsilon dominates every coordinate
    schedule = lambda count: 0.05 / (1 + count)  # noqa: E731
    step = jax.jit(
        loop.make_train_step(
            problem,
            optimizer,
            loss_dtype="float32",
            learning_rate=schedule,
            epsilon_report=lambda s: adam_jax.epsilon_report(s, optimizer),
        )
    )
    state = loop.init_state(problem, optimizer, 0)
    for t in range(3):
        state, metrics = step(state, problem.train)
        assert float(metrics["eps_dominated"]) == 1.0
        assert float(metrics["lr"]) == pytest.approx(0.05 / (1 + t), rel=1e-6)


def test_evaluate_prefixes_the_tasks_metrics():
    problem, arrays = linear_problem()
    assert loop.make_evaluate(problem, "float32") is None  # no held-out set
    test = {"x": problem.train["x"], "y": problem.train["y"]}
    problem = problem._replace(
        test=test, test_metrics=lambda pred, y: {"sse": jnp.sum((pred - y) ** 2)}
    )
    scores = loop.make_evaluate(problem, "float32")(problem.params, test)
    residual = arrays["x"].astype(np.float64) @ arrays["w"] + arrays["b"] - arrays["y"]
    assert set(scores) == {"test_sse"}
    np.testing.assert_allclose(float(scores["test_sse"]), np.sum(residual**2), rtol=1e-5)


@pytest.mark.parametrize(
    ("step", "total", "log_every", "ckpt_every", "stop"),
    [(0, 100, 10, 1000, 10), (7, 100, 10, 1000, 10), (10, 100, 10, 15, 15), (95, 98, 10, 1000, 98)],
)
def test_next_stop(step, total, log_every, ckpt_every, stop):
    assert loop.next_stop(step, total, log_every, ckpt_every) == stop
