"""mkdocs hooks: the maths is rendered by KaTeX when the site is built, not when it is read.

pymdownx.arithmatex (generic mode) leaves each formula as ``\\(...\\)`` in a
``<span class="arithmatex">`` or ``\\[...\\]`` in a ``<div class="arithmatex">``.
``on_page_content`` hands every formula of a page to KaTeX (one ``node`` call per
page, docs/_ext/katex_render.js) and puts KaTeX's HTML in its place; ``on_files``
copies KaTeX's stylesheet and fonts into the site. The pages then load no
script and nothing from the network to show their maths. ``make docs`` installs
KaTeX (docs/_ext/package.json, with its lock file) into .venv/katex with npm.
"""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

_HERE = Path(__file__).resolve().parent
_KATEX = Path(
    os.environ.get("KATEX_DIR", _HERE.parents[1] / ".venv" / "katex" / "node_modules" / "katex")
)
_RENDERER = _HERE / "katex_render.js"
# Where the site keeps KaTeX's stylesheet and fonts; mkdocs.yml's extra_css names it.
SITE_DIR = "assets/katex"
_FORMULA = re.compile(
    r'<span class="arithmatex">\\\((?P<inline>.*?)\\\)</span>'
    r'|<div class="arithmatex">\\\[(?P<display>.*?)\\\]</div>',
    re.DOTALL,
)


def _check_katex() -> None:
    if shutil.which("node") is None or not (_KATEX / "package.json").is_file():
        raise PluginError(
            f"KaTeX renders the maths at build time: it needs node and KaTeX in {_KATEX} "
            "(`make docs` installs it with npm; KATEX_DIR overrides the folder)"
        )


def render(formulas: list[tuple[str, bool]]) -> list[str]:
    """KaTeX's HTML for each ``(tex, display_mode)``; a formula it cannot parse raises."""
    if not formulas:
        return []
    _check_katex()
    done = subprocess.run(
        ["node", str(_RENDERER), str(_KATEX)],
        input=json.dumps(formulas),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise PluginError(done.stderr.strip())
    return json.loads(done.stdout)


def on_page_content(html_text, page, **kwargs):
    """Replaces each arithmatex formula of the page by KaTeX's rendering of it."""
    formulas = [_formula(m) for m in _FORMULA.finditer(html_text)]
    try:
        rendered = iter(render(formulas))
    except PluginError as error:
        raise PluginError(f"{page.file.src_uri}: {error}") from None

    def rendering(match: re.Match) -> str:
        tag = "div" if _formula(match)[1] else "span"
        return f'<{tag} class="arithmatex">{next(rendered)}</{tag}>'

    return _FORMULA.sub(rendering, html_text)


def _formula(match: re.Match) -> tuple[str, bool]:
    """``(tex, display_mode)`` of an arithmatex formula, its HTML entities decoded."""
    display = match.group("display") is not None
    return html.unescape(match.group("display" if display else "inline")), display


def on_files(files, config, **kwargs):
    """Adds KaTeX's stylesheet and fonts to the site, under ``SITE_DIR``."""
    _check_katex()
    dist = _KATEX / "dist"
    for path in [dist / "katex.min.css", *sorted((dist / "fonts").glob("*.woff2"))]:
        uri = f"{SITE_DIR}/{path.relative_to(dist).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
