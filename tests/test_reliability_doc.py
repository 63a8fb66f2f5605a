"""docs/reliability.md names, for each hostile input, the tests that keep it true: they exist."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_test_named_in_the_reliability_table_exists():
    text = (ROOT / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text))
    assert len(named) > 30
    missing = [
        f"{path}::{name}"
        for path, name in sorted(named)
        if not (ROOT / path).is_file()
        or not re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.MULTILINE)
    ]
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
