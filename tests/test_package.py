"""The package as users meet it: its imports and the README's example."""

import re
import subprocess
import sys
from pathlib import Path

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


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:  # in a fresh interpreter, as a user runs them
        subprocess.run([sys.executable, "-c", block], check=True, capture_output=True)
