"""docs/migrating.md against the real frameworks: their defaults, and the one-line equivalents.

The defaults tables name each framework's optimizer in their header; every ``name=value`` in
that column must be the default of that optimizer's signature (read with
``inspect.signature``). Each row of the "you had / with adam_jax" table is run: ten steps of
both sides on the same problem in float32, compared after the last.
"""

import ast
import inspect
import os
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax

torch = pytest.importorskip("torch", reason="the migration tables compare with torch")
os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="the migration tables compare with keras")

PAGE = (Path(__file__).resolve().parents[1] / "docs" / "migrating.md").read_text()
FRAMEWORKS = {"torch": torch, "optax": optax, "keras": keras, "adam_jax": adam_jax}
LR, STEPS = 0.1, 10
MOVED_RTOL = 1e-4  # of the distance moved in STEPS; a default that differs moves it by >= 1%
P0 = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
TARGET = np.array([0.3, 0.1, -0.2, 1.0], np.float32)
# Gradients of 1e-6 on two coordinates, where epsilon (1e-8 or 1e-7) changes the step.
SCALE = np.array([1.0, 0.5, 1e-6, 2e-6], np.float32)


def resolve(dotted: str):
    """``torch.optim.Adam`` -> the object; classes give their ``__init__``'s signature."""
    obj = FRAMEWORKS[dotted.split(".")[0]]
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part)
    return inspect.signature(obj)


def defaults_tables() -> list[tuple[list[str], list[list[str]]]]:
    """Each table whose header names ``adam_jax.<factory>``: (header cells, body rows)."""
    tables = []
    for block in re.split(r"\n\n", PAGE):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if len(lines) < 3 or not re.match(r"\| \| `?adam_jax\.", lines[0]):
            continue
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
        tables.append((cells[0], cells[2:]))
    return tables


def test_defaults_in_the_tables_are_the_frameworks_own():
    checked = 0
    tables = defaults_tables()
    assert len(tables) == 3  # Adam, AdamW, NAdam
    for header, rows in tables:
        for column, title in enumerate(header):
            framework = re.fullmatch(r"`?((?:torch|optax|keras)\.[\w.]+)`?", title)
            if not framework:
                continue
            parameters = resolve(framework.group(1)).parameters
            for row in rows:
                cell = row[column]
                for name, value in re.findall(r"`(\w+)=([^`]+)`", cell):
                    if name in parameters:
                        expected = ast.literal_eval(value)
                        assert parameters[name].default == expected, (framework[1], name)
                        checked += 1
                for name in re.findall(r"`(\w+)`, required", cell):
                    assert parameters[name].default is inspect.Parameter.empty, name
                    checked += 1
    assert checked >= 25


def equivalents() -> list[tuple[str, str]]:
    rows = re.findall(r"^\| `((?:optax|torch|keras)\..+?)` \| `(adam_jax\..+?)` \|$", PAGE, re.M)
    assert len(rows) >= 12
    return rows


def gradient(p: np.ndarray) -> np.ndarray:
    return SCALE * (p - TARGET)


def run(expression: str) -> np.ndarray:
    """The params after ``STEPS`` steps of the optimizer ``expression`` builds, in float32."""
    framework = expression.split(".")[0]
    if framework == "torch":
        p = torch.tensor(P0, requires_grad=True)
        opt = eval(expression, {"torch": torch, "params": [p], "lr": LR})
        for _ in range(STEPS):
            p.grad = torch.from_numpy(gradient(p.detach().numpy()))
            opt.step()
        return p.detach().numpy()
    if framework == "keras":
        v = keras.Variable(P0)
        opt = eval(expression, {"keras": keras, "lr": LR})
        for _ in range(STEPS):
            opt.apply([jnp.asarray(gradient(np.asarray(v.value)))], [v])
        return np.asarray(v.value)
    tx = eval(expression, {framework: FRAMEWORKS[framework], "lr": LR})
    p = jnp.asarray(P0)
    state = tx.init(p)
    for _ in range(STEPS):
        updates, state = tx.update(jnp.asarray(gradient(np.asarray(p))), state, p)
        p = optax.apply_updates(p, updates)
    return np.asarray(p)


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [pytest.param(theirs, ours, id=theirs) for theirs, ours in equivalents()],
)
def test_equivalent_is_the_framework_optimizer(theirs, ours):
    # float32 on both sides: the distance moved agrees to rounding (measured <= 7e-6 relative;
    # without the convention's defaults the keras/optax rows differ by 2.5e-2 to 1.4).
    np.testing.assert_allclose(run(ours) - P0, run(theirs) - P0, rtol=MOVED_RTOL)


def test_the_comparison_sees_a_different_default():
    """PyTorch's AdamW defaults (weight_decay 1e-2) are not optax's (1e-4): the test fails."""
    ours, theirs = run("adam_jax.adamw(lr)"), run("optax.adamw(lr)")
    assert not np.allclose(ours - P0, theirs - P0, rtol=MOVED_RTOL, atol=0)
