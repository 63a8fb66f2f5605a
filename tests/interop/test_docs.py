"""docs/interop.md: its Python examples run as written and print what their comments say."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def _run(block: str) -> list[str]:
    """The block's printed lines, run in a fresh interpreter as a reader runs it."""
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()


def test_the_page_has_its_three_examples():
    assert len(BLOCKS) == 3


def test_round_trip_example_loads_into_a_fresh_optimizer():
    pytest.importorskip("torch", reason="the example uses torch")
    counts, hyperparameters, losses = _run(BLOCKS[0])
    assert counts == "{'group0': 500}"
    assert hyperparameters == "0.0001 True"  # the file's, not the fresh optimizer's lr=0.5
    jax_loss, torch_loss = (float(v) for v in losses.split())
    assert 0 < torch_loss < jax_loss  # torch continues the run down from where JAX left it


def test_module_types_example_continues_torch_and_refuses_an_unsaid_layout():
    pytest.importorskip("torch", reason="the example uses torch")
    pytest.importorskip("flax.nnx", reason="the example's JAX model is a flax.nnx module")
    counts, refusal, continued = _run(BLOCKS[1])
    assert counts == "{'group0': 3, 'group1': 3}"
    assert refusal.startswith("'fc1.weight' -> 'fc1/kernel', shape (8, 8), an nn.Linear weight")
    assert refusal.endswith("interop.linear('fc1/kernel') or interop.as_is('fc1/kernel')")
    assert continued == "True"


def test_conv_example_computes_torchs_convolution():
    pytest.importorskip("torch", reason="the example uses torch")
    pytest.importorskip("flax.nnx", reason="the example's JAX layer is a flax.nnx module")
    assert _run(BLOCKS[2]) == ["(3, 3, 3, 4) True"]
