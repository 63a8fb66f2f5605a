"""scripts/dev/mutants.toml, the table of ``make mutants``: each row applies and names real tests.

A stale row (its text gone from the source, or its test renamed) is reported as "not run" by the
mutation run, 11 minutes later; these checks say so at once.
"""

import ast
import re
from pathlib import Path

import pytest

from scripts.dev import mutants

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = mutants.load()


def test_the_table_loads_every_row():
    assert len(MUTANTS) >= 60
    assert sum(m.kernel for m in MUTANTS) >= 15  # the kernel's rows are read too
    for m in MUTANTS:
        assert m.edits and m.tests and m.why, m.name


def test_a_row_with_an_unknown_key_is_refused(tmp_path):
    table = tmp_path / "mutants.toml"
    table.write_text(
        "[[mutant]]\nname = 'x'\nfile = 'adam_jax/_numerics.py'\nwhy = 'w'\n"
        "tests = ['tests/test_nonfinite.py']\nold = 'a'\nnew = 'b'\ntest = 'typo'\n"
    )
    with pytest.raises(ValueError, match="unknown keys"):
        mutants.load(table)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_edit_finds_its_text_once(mutant):
    text = (ROOT / mutant.path).read_text()
    for old, new in mutant.edits:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {mutant.path}"
        assert new != old
        text = text.replace(old, new)


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_named_test_exists(mutant):
    for test in mutant.tests:
        file, _, function = test.partition("::")
        assert (ROOT / file).is_file(), test
        if function:
            assert re.sub(r"\[.*\]$", "", function) in _test_functions(ROOT / file), test
