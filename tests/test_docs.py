"""The docs site: every public name documented, docstrings that render, pages in sync."""

import importlib.util
import inspect
import re
import types
from pathlib import Path

import pytest

import adam_jax

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docstrings():
    pytest.importorskip("griffe", reason="the docs extension needs griffe (the docs extra)")
    return _load("docstrings")


def test_every_public_name_is_in_the_api_reference():
    documented = set(re.findall(r"^::: adam_jax\.(\w+)", (DOCS / "api.md").read_text(), re.M))
    assert set(adam_jax.__all__) - documented == set()
    assert documented - set(adam_jax.__all__) == set()


@pytest.mark.parametrize(
    "name", [n for n in adam_jax.__all__ if inspect.isfunction(getattr(adam_jax, n))]
)
def test_public_functions_follow_the_docstring_template(name):
    doc = inspect.getdoc(getattr(adam_jax, name))
    for section in ("Examples:\n", "References:\n", ">>> "):
        assert section in doc, f"{name}'s docstring has no {section.strip()!r}"


def test_rst_constructs_become_markdown(docstrings):
    text = inspect.cleandoc(
        r"""Summary with :math:`\beta_1` and :math:`a \cdot
        b`, see :func:`adam_jax.adam`.

        .. math::

          m_t &= \beta_1 m_{t-1} \\
          v_t &= v

        Kingma & Ba, `Adam: A Method
        <https://arxiv.org/abs/1412.6980>`_, ICLR 2015.
        """
    )
    assert docstrings.rst_to_markdown(text) == inspect.cleandoc(
        r"""Summary with $\beta_1$ and $a \cdot b$, see [`adam_jax.adam`][adam_jax.adam].


        $$
        \begin{aligned}
        m_t &= \beta_1 m_{t-1} \\
        v_t &= v
        \end{aligned}
        $$

        Kingma & Ba, [Adam: A Method](https://arxiv.org/abs/1412.6980), ICLR 2015.
        """
    )


def test_no_rst_left_in_public_docstrings(docstrings):
    for name in adam_jax.__all__:
        doc = inspect.getdoc(getattr(adam_jax, name)) or ""
        converted = docstrings.rst_to_markdown(doc)
        assert not re.search(r":\w+:`|\.\. \w+::|>`_", converted), name
        assert converted.count("$$") % 2 == 0, name


def test_home_page_is_the_readme_with_relative_links():
    hooks = _load("hooks")
    page = types.SimpleNamespace(file=types.SimpleNamespace(src_uri="index.md"))
    home = hooks.on_page_markdown((DOCS / "index.md").read_text(), page)
    readme = (ROOT / "README.md").read_text()
    assert home.strip() == re.sub(r"(\]\(|\]: |src=\")docs/", r"\1", readme).strip()
    assert "](docs/" not in home
    other = types.SimpleNamespace(file=types.SimpleNamespace(src_uri="api.md"))
    assert hooks.on_page_markdown("[x](docs/a.md)", other) == "[x](docs/a.md)"


def _table_rows(markdown: str, first_cell: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose header starts with ``first_cell``, by that cell."""
    rows = {}
    for line in markdown[markdown.index(f"| {first_cell} |") :].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_conventions_page_table_agrees_with_the_readme():
    """The generated table has one row per convention, and its AMSGrad maximum is the one the
    README's hand-written table states (raw v, or optax's bias-corrected v / c2)."""
    page = (DOCS / "conventions.md").read_text()
    assert page.count("<!-- CONVENTIONS -->") == 1
    docs = _table_rows(_load("conventions_table").conventions_markdown(), "`convention`")
    readme = _table_rows((ROOT / "README.md").read_text(), "`convention`")
    names = [f'`"{name}"`' for name in adam_jax.CONVENTIONS]
    assert sorted(docs) == sorted(n.replace("` (default)", "`") for n in readme) == sorted(names)
    for cell, (_, maximum_over, _) in readme.items():
        name = cell.replace(" (default)", "")
        keeps = docs[name][1]
        assert ("v_t / c_2" in keeps) == ("bias-corrected" in maximum_over), name
