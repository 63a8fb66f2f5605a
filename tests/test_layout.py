"""The repository's layout: who each program is for, no ``sys.path`` patching, README's map.

User programs live in ``scripts/``, benchmarks and measurement studies in ``scripts/benchmarks/``,
dev tools in ``scripts/dev/`` (docs/contributing.md). They import one another only as packages
(``from scripts.benchmarks import common``) and run from the repository root as modules
(``python -m scripts.benchmarks.bench_update``); no file in the project edits ``sys.path``.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", "build", "dist", "site", "node_modules", "__pycache__"}
USER_PROGRAMS = ("train", "launch", "seed_pytorch", "interop_demo")
RUN_AS_FILES = ("train", "launch", "seed_pytorch")  # README and the docs run them as files


def project_python_files() -> list[Path]:
    return sorted(
        p
        for p in ROOT.rglob("*.py")
        if not SKIPPED_DIRS & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)
    )


def _is_sys_path(node: ast.AST) -> bool:
    """``sys.path``, or a subscript of it (``sys.path[:0]``)."""
    if isinstance(node, ast.Subscript):
        node = node.value
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def sys_path_edits(source: str) -> list[int]:
    """Line numbers where ``source`` mutates ``sys.path``: a method call on it (insert, append,
    extend, remove, ...), an assignment or augmented assignment to it or to a slice of it."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if _is_sys_path(node.func.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_is_sys_path(t) for t in targets):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    ("source", "edits"),
    [
        ("import sys\nsys.path.insert(0, 'x')\n", [2]),
        ("import sys\nsys.path.append('x')\nsys.path.extend(['y'])\n", [2, 3]),
        ("import sys\nsys.path = ['x'] + sys.path\n", [2]),
        ("import sys\nsys.path += ['x']\n", [2]),
        ("import sys\nsys.path[:0] = ['x']\n", [2]),
        ('"""Never sys.path.insert(0, here)."""\nimport sys\nprint(sys.path[0])\n', []),
    ],
)
def test_the_sys_path_check_finds_each_kind_of_edit(source, edits):
    assert sys_path_edits(source) == edits


def test_no_file_patches_sys_path():
    files = project_python_files()
    assert ROOT / "scripts" / "benchmarks" / "common.py" in files  # the scan reaches scripts/
    offenders = {
        str(p.relative_to(ROOT)): lines
        for p in files
        if (lines := sys_path_edits(p.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def programs(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py")


def test_each_program_is_in_the_folder_of_its_audience():
    assert [p.stem for p in programs("scripts")] == sorted(USER_PROGRAMS)
    assert {p.stem for p in programs("scripts/benchmarks")} == {
        "common",
        "bench_update",
        "bench_train",
        "bench_memory",
        "bench_sharded",
        "bench_lowmem",
        "bench_packed",
        "lm_study",
        "lowmem_study",
        "lowmem_probe",
        "eps_sweep",
    }
    assert {p.stem for p in programs("scripts/dev")} == {"mutants", "check_site", "parity_report"}


def project_imports(path: Path) -> set[str]:
    """The modules and names ``path`` imports from ``scripts`` and ``tests``."""
    return {m for m in imported_modules(path) if m.split(".")[0] in ("scripts", "tests")}


def test_programs_import_only_what_their_folder_allows():
    """User programs import no tests and, of the scripts, only the seed's program; benchmarks
    import no tests and, of the scripts, only their shared helper and the seed's program (its
    one PyTorch loop); dev tools may use the test harness."""
    for path in programs("scripts"):
        ours = project_imports(path)
        assert all(m.startswith("scripts.seed_pytorch") for m in ours), path.name
        if path.stem in RUN_AS_FILES:  # `python scripts/<name>.py` puts scripts/, not the root,
            assert ours == set(), path.name  # on sys.path: no package import may be needed
    for path in programs("scripts/benchmarks"):
        ours = project_imports(path)
        shared = {"scripts.benchmarks", "scripts.benchmarks.common"}
        assert all(m in shared or m.startswith("scripts.seed_pytorch") for m in ours), path.name
    for name in ("train", "benchmarks/eps_sweep", "benchmarks/bench_train"):
        modules = imported_modules(ROOT / "scripts" / f"{name}.py")
        assert any(m.startswith("adam_jax.training") for m in modules), name  # the one registry
    assert "tests.parity.harness" in project_imports(ROOT / "scripts/dev/parity_report.py")


def test_every_program_imports_as_a_module_from_the_root():
    """What ``python -m scripts.<...>`` does first: import the module from the repository root
    (one interpreter for all; each program's work is behind ``if __name__ == "__main__"``)."""
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for folder in ("scripts", "scripts/benchmarks", "scripts/dev")
        for p in programs(folder)
    ]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = subprocess.run(
        [sys.executable, "-c", code, *modules], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]


# --- README's "Where things are" ------------------------------------------------------------


def readme_table_paths() -> list[Path]:
    """Every path the table's "where" column names, in backticks. A token is a path if it has a
    "/" or a file extension. A bare file name is at the root (``setup.py``) or, if not there, in
    the folder of the path before it in the cell (``adam_jax/_alias.py``, ``_atan2.py``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Where things are\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no 'Where things are' section"
    rows = [line for line in section[1].splitlines() if line.startswith("| ")][2:]
    paths = []
    for row in rows:
        where = row.strip("|").split("|")[-1]
        folder = None
        for token in re.findall(r"`([^`]+)`", where):
            if "/" in token:
                path = Path(token.rstrip("/"))
                folder = path.parent if path.suffix else path
                paths.append(path)
            elif re.fullmatch(r"[\w.-]+\.\w+", token):
                at_root = (ROOT / token).exists() or folder is None
                paths.append(Path(token) if at_root else folder / token)
    return paths


def test_readme_table_names_only_paths_that_exist():
    paths = readme_table_paths()
    assert len(paths) >= 20
    missing = [str(p) for p in paths if not (ROOT / p).exists()]
    assert missing == []


def test_readme_table_names_every_program_folder():
    named = {str(p) for p in readme_table_paths()}
    for folder in ("scripts/benchmarks", "scripts/dev", "tests/parity", "adam_jax/training"):
        assert folder in named or any(n.startswith(folder + "/") for n in named), folder
    for program in USER_PROGRAMS:
        assert f"scripts/{program}.py" in named, program
