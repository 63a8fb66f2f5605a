"""The code of the pages written for users runs, and checks what it shows.

Each ```python block of docs/recipes.md runs after the page's first block (its setup), in a
fresh namespace; each block of docs/migrating.md runs by itself. Every block must assert
something, so that a recipe whose result changed fails here instead of misleading a reader.
"""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ("recipes.md", "migrating.md")
PAGES_WITH_SETUP = {"recipes.md"}  # the first block defines what the others use


def blocks(page: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), re.S | re.M)


CASES = [
    pytest.param(page, index, id=f"{page}-{index}")
    for page in PAGES
    for index, _ in enumerate(blocks(page))
]


def test_every_block_asserts_its_result():
    for page in PAGES:
        found = blocks(page)
        assert len(found) >= 5, page
        for index, block in enumerate(found):
            assert re.search(r"^\s*assert ", block, re.M), f"{page} block {index} asserts nothing"


@pytest.mark.parametrize(("page", "index"), CASES)
def test_block_runs(page, index):
    found = blocks(page)
    namespace: dict = {"__name__": f"docs_{page.removesuffix('.md')}"}
    if page in PAGES_WITH_SETUP and index > 0:
        exec(compile(found[0], f"{page}[0]", "exec"), namespace)
    exec(compile(found[index], f"{page}[{index}]", "exec"), namespace)
