"""mkdocs hooks: the home page is README.md, with its links into docs/ made relative."""

import re
from pathlib import Path

_README = Path(__file__).resolve().parents[2] / "README.md"
_INCLUDE = "<!-- README.md -->"
_DOCS_LINK = re.compile(r"(\]\(|\]: |src=\")docs/")


def on_page_markdown(markdown, page, **kwargs):
    """Replaces ``<!-- README.md -->`` in index.md by the README.

    GitHub resolves README's links from the repository root (``docs/epsilon.md``),
    the site from docs/ (``epsilon.md``): the ``docs/`` prefix is dropped.
    """
    if page.file.src_uri != "index.md":
        return markdown
    readme = _DOCS_LINK.sub(r"\1", _README.read_text(encoding="utf-8"))
    return markdown.replace(_INCLUDE, readme)
