"""docs/interop.md: its Python examples run as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"


@pytest.mark.parametrize("index", range(2))
def test_interop_page_examples_run(index):
    pytest.importorskip("torch", reason="the examples use torch")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 2
    # In a fresh interpreter, as a reader runs them.
    out = subprocess.run(
        [sys.executable, "-c", blocks[index]], capture_output=True, text=True, check=True
    )
    if index == 1:
        assert out.stdout.strip() == "[0.1, 0.0]"
