"""The package as users meet it: its imports and the README's example."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import adam_jax

ROOT = Path(__file__).resolve().parents[1]


def test_library_imports_no_framework():
    code = "import sys, adam_jax; print(sorted({'torch', 'keras', 'flax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_listed_once():
    assert sorted(adam_jax.__all__) == sorted(set(adam_jax.__all__))
    for name in adam_jax.__all__:
        assert getattr(adam_jax, name).__doc__, name


README_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_python_examples():
    assert README_BLOCKS


@pytest.mark.parametrize("block", README_BLOCKS, ids=range(len(README_BLOCKS)))
def test_readme_python_examples_run(block):
    if "fused_adam(" in block and not adam_jax.fused_available():
        pytest.skip("fused_adam's kernel was not built at install time (no C++ compiler)")
    # In a fresh interpreter, as a user runs it.
    subprocess.run([sys.executable, "-c", block], check=True, capture_output=True)
