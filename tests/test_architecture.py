"""The module graph of adam_jax/: acyclic, layered as docs/architecture.md says, and
with no imports between adam_jax modules inside functions."""

import ast
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "adam_jax"
LAYER_ROW = re.compile(r"^\| (\d+) \| `(adam_jax/[\w/]+\.py)` \|", re.M)


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(node: ast.Import | ast.ImportFrom, importer: str) -> set[str]:
    """The adam_jax modules an import statement names (``from m import sub`` names m.sub
    when that is a module)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        assert node.level == 0, f"{importer}: adam_jax uses absolute imports only"
        base = node.module or ""
        submodules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
        # ``from package import attribute`` runs the package; ``from package import module``
        # only the module (the package's own import is implicit, as for any submodule).
        names = submodules if len(submodules) == len(node.names) else {base} | submodules
    return {name for name in names if name in MODULES}


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module-level imports between adam_jax modules, and every import inside a function
    or class body (``module: line``)."""
    graph: dict[str, set[str]] = {}
    nested = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = set()
        for statement in tree.body:
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                graph[name] |= imported_modules(statement, name) - {name}
        for scope in ast.walk(tree):
            if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for node in ast.walk(scope):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and imported_modules(
                        node, name
                    ):
                        nested.append(f"{name}: line {node.lineno}")
    return graph, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def documented_layers() -> dict[str, int]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    return {module_name(ROOT / path): int(layer) for layer, path in LAYER_ROW.findall(text)}


def test_the_module_graph_is_acyclic():
    graph, _ = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_no_adam_jax_module_is_imported_inside_a_function():
    _, nested = import_graph()
    assert nested == []


def test_every_core_import_goes_to_a_lower_layer():
    layers = documented_layers()
    graph, _ = import_graph()
    core = {m for m in MODULES if not m.startswith("adam_jax.training")}
    assert core - set(layers) == set(), "modules missing from docs/architecture.md"
    assert set(layers) - core == set(), "docs/architecture.md names modules that do not exist"
    upward = [
        f"{m} (layer {layers[m]}) imports {t} (layer {layers[t]})"
        for m in sorted(core)
        for t in sorted(graph[m])
        if layers[t] >= layers[m]
    ]
    assert upward == []


def test_the_core_never_imports_the_training_package():
    graph, _ = import_graph()
    core = {m for m in MODULES if not m.startswith("adam_jax.training")}
    assert {t for m in core for t in graph[m] if t.startswith("adam_jax.training")} == set()


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def f():\n    from adam_jax import _spec\n", ["adam_jax._fake: line 2"]),
        ("def f():\n    import numpy\n", []),
        ("class C:\n    import adam_jax._alias\n", ["adam_jax._fake: line 2"]),
    ],
)
def test_the_checker_sees_imports_inside_functions(source, expected, monkeypatch, tmp_path):
    path = tmp_path / "_fake.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "adam_jax._fake", path)
    assert [n for n in import_graph()[1] if n.startswith("adam_jax._fake")] == expected


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_adam_jax_loads_no_framework():
    code = (
        "import sys, adam_jax, adam_jax.interop\n"
        "frameworks = ('torch', 'keras', 'flax', 'adam_jax.training')\n"
        "loaded = [m for m in frameworks if m in sys.modules]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
