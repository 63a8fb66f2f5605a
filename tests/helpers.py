"""Problems, runners and readers shared by the tests."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adam_jax.training import loop

SHAPES = {"scalar": (), "vector": (7,), "matrix": (4, 5), "cube": (2, 3, 4)}
DECAY = 0.05  # the gradient depends on the params, so errors would compound


def random_problem(steps: int, seed: int = 0, dtype=np.float64):
    """Initial params and a sequence of raw gradients, as NumPy trees.

    Gradients shrink over time (so AMSGrad's maximum matters) and a few are
    exactly zero.
    """
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}
    scale = 1 + 4 * np.exp(-np.arange(steps) / 20)
    grads = {}
    for k, s in SHAPES.items():
        g = rng.normal(size=(steps, *s)) * scale.reshape((steps,) + (1,) * len(s))
        g[rng.random(size=g.shape) < 0.05] = 0.0
        grads[k] = g.astype(dtype)
    return params, grads


def gradient(raw, params):
    """The gradient the optimizers see at ``params``: ``raw + DECAY * params``."""
    return jax.tree.map(lambda g, p: g + DECAY * p, raw, params)


def trajectory(optimizer: optax.GradientTransformation, params, grads):
    """Steps ``optimizer`` over ``grads`` in a scan; params after each step (traceable)."""

    def step(carry, raw):
        p, state = carry
        updates, state = optimizer.update(gradient(raw, p), state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), p

    return jax.lax.scan(step, (params, optimizer.init(params)), grads)[1]


def run_optax(optimizer: optax.GradientTransformation, params, grads):
    """``trajectory`` in one jitted call, as NumPy arrays."""
    run = jax.jit(lambda p, g: trajectory(optimizer, p, g))
    params = jax.tree.map(jnp.asarray, params)
    return jax.tree.map(np.asarray, run(params, jax.tree.map(jnp.asarray, grads)))


def run_reference(make_reference, params, grads):
    """Steps one reference optimizer per leaf; params after each step."""
    out = {}
    for k, p in params.items():
        ref = make_reference(np.shape(p))
        trajectory = []
        p = np.asarray(p, np.float64)
        for raw in grads[k]:
            p = ref.step(p, raw + DECAY * p)
            trajectory.append(p)
        out[k] = np.stack(trajectory)
    return out


def max_relative_error(actual, expected) -> float:
    """Max over leaves and steps of max|a - e| / max|e| within each step."""
    worst = 0.0
    for k in expected:
        a = np.asarray(actual[k], np.float64).reshape(len(expected[k]), -1)
        e = np.asarray(expected[k], np.float64).reshape(len(expected[k]), -1)
        err = np.max(np.abs(a - e), axis=1) / np.maximum(np.max(np.abs(e), axis=1), 1e-300)
        worst = max(worst, float(np.max(err)))
    return worst


# --- one array pulled towards 0: small comparisons with the real PyTorch and optax -------------

PULLED_STEPS = 25


def pulled_problem(shape=(6,), dtype=np.float64, seed=0):
    """Initial params and ``PULLED_STEPS`` noise arrays; complex dtypes get imaginary parts."""
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(shape)
    noise = rng.standard_normal((PULLED_STEPS, *shape))
    if np.issubdtype(dtype, np.complexfloating):
        p0 = p0 + 1j * rng.standard_normal(shape)
        noise = noise + 1j * rng.standard_normal((PULLED_STEPS, *shape))
    return p0.astype(dtype), noise.astype(dtype)


def run_pulled(tx: optax.GradientTransformation, p0, noise) -> np.ndarray:
    """Params after each step of ``tx`` in one jitted scan; the gradient at p is
    ``noise_t + 0.5 * p``."""

    def step(carry, n):
        p, state = carry
        updates, state = tx.update(n + 0.5 * p, state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), p

    p0 = jnp.asarray(p0)
    return np.asarray(jax.jit(lambda p, g: jax.lax.scan(step, (p, tx.init(p)), g)[1])(p0, noise))


def run_pulled_torch(make, p0, noise) -> np.ndarray:
    """``run_pulled`` with the real torch optimizer ``make([param])``; torch's default dtype is
    float64 meanwhile, so that its scalar state (NAdam's mu_product) is float64 too."""
    import torch  # the test extra; callers skip without it

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        p = torch.tensor(p0, requires_grad=True)
        opt = make([p])
        out = []
        for n in noise:
            p.grad = torch.tensor(n) + 0.5 * p.detach()
            opt.step()
            out.append(p.detach().numpy().copy())
    finally:
        torch.set_default_dtype(default)
    return np.stack(out)


def metrics_rows(run_dir) -> list[dict]:
    """The rows of a training run's ``metrics.jsonl``, one dict a step."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def run_on_8_cpu_devices(script: str) -> dict:
    """Runs ``tests/distributed/<script>`` in a subprocess with 8 virtual CPU devices (their
    number is fixed when JAX starts) and returns the JSON summary it prints."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(
        os.environ,
        PYTHONPATH=os.path.dirname(here),
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
    )
    out = subprocess.run(
        [sys.executable, os.path.join(here, "distributed", script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def full_batch_steps(problem, optimizer, steps: int):
    """The training loop written out by hand: ``steps`` jitted full-batch steps of ``optimizer``
    on ``problem`` (a task's problem), as ``(params, opt_state, losses)``: what train.py's
    run of the same flags must equal."""
    model_loss = loop.make_loss_fn(problem, "float32")

    @jax.jit
    def step(params, opt_state):
        (loss, _), grads = jax.value_and_grad(model_loss, has_aux=True)(
            params, (problem.train["x"], problem.train["y"])
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state, losses = problem.params, optimizer.init(problem.params), []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    return params, opt_state, losses


def checkpoint_checksum(run_dir, step: int) -> str:
    """The SHA-256 a run saved with checkpoint ``step`` (its state's arrays and metrics rows:
    ``adam_jax.training.checkpoint.checksum``)."""
    with open(os.path.join(run_dir, "checkpoints", str(step), "checksum", "metadata")) as f:
        return json.load(f)["sha256"]
