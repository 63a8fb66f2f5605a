"""scripts/dev/check_site.py, the docs site's browser test: it must fail on what it looks for."""

import importlib.util
import shutil
from pathlib import Path

import pytest

pytest.importorskip("websocket", reason="check_site drives Chromium with websocket-client (docs)")

from scripts.dev import check_site  # noqa: E402  (needs websocket-client)

ROOT = Path(__file__).resolve().parents[1]

ORIGIN = "http://127.0.0.1:8123/"


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        (r"the step \(\frac{m}{v}\)", True),
        (r"\[ x \]", True),
        ("$$ x $$", True),
        (r"with \epsilon inside", True),
        ("m/c₁ / (√(v/c₂) + ε)", False),  # what rendered maths reads as
        ("costs $5 and $6", False),
    ],
)
def test_raw_tex_is_recognised(text, raw):
    assert bool(check_site.RAW_TEX.search(text)) is raw


def test_unresolved_reference_is_recognised():
    assert check_site.RAW_REFERENCE.search("An ][adam_jax.Optimizer] (an optax")
    assert check_site.RAW_REFERENCE.search("][]")
    assert not check_site.RAW_REFERENCE.search("x[0] and [1, 2]")


def test_links(tmp_path):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "index.html").write_text("<h2 id='adam'></h2>")
    (tmp_path / "plot.png").write_bytes(b"png")
    links = [
        ORIGIN + "api/",
        ORIGIN + "api/#adam",
        ORIGIN + "plot.png",
        ORIGIN + "missing/",
        "https://github.com/adam-jax/adam_jax",
        "https://arxiv.org/abs/1412.6980",
        "https://no host.org/x",
        "mailto:someone@example.org",
        "javascript:void(0)",
    ]
    problems, anchors = check_site.link_problems(links, tmp_path, ORIGIN)
    assert problems == [
        f"broken link: {ORIGIN}missing/",
        "malformed external link: https://no host.org/x",
        "link of an unexpected kind: javascript:void(0)",
    ]
    assert anchors == [(tmp_path / "api" / "index.html", "adam", ORIGIN + "api/#adam")]


def test_events():
    events = [
        {"method": "Runtime.consoleAPICalled", "params": {"type": "log", "args": []}},
        {
            "method": "Runtime.consoleAPICalled",
            "params": {"type": "error", "args": [{"value": "boom"}]},
        },
        {
            "method": "Runtime.exceptionThrown",
            "params": {"exceptionDetails": {"exception": {"description": "TypeError: x\n  at"}}},
        },
        {"method": "Network.requestWillBeSent", "params": {"request": {"url": ORIGIN + "a.css"}}},
        {
            "method": "Network.requestWillBeSent",
            "params": {"request": {"url": "https://cdn.x/m.js"}},
        },
        {"method": "Network.requestWillBeSent", "params": {"request": {"url": "data:image/png,"}}},
    ]
    assert check_site.event_problems(events, ORIGIN) == [
        "console.error: boom",
        "uncaught exception: TypeError: x",
        "request off the site (no network at view time): https://cdn.x/m.js",
    ]


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="needs Debian's chromium (make check-site installs it, and .ci/run runs that first)",
)
def test_planted_faults_fail_in_a_real_browser():
    """Raw TeX, a console error, an exception, broken links and images, a too wide box."""
    assert check_site.self_test(shutil.which("chromium")) == []


def _katex_hook():
    spec = importlib.util.spec_from_file_location("katex_hook", ROOT / "docs" / "_ext" / "katex.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    if shutil.which("node") is None or not (hook._KATEX / "package.json").is_file():
        pytest.skip("needs node and KaTeX in .venv/katex (make docs installs it)")
    return hook


def test_katex_hook_renders_every_formula_of_a_page():
    hook = _katex_hook()
    page = type("Page", (), {"file": type("File", (), {"src_uri": "x.md"})})
    html = (
        '<p>With <span class="arithmatex">\\(\\beta_1 &lt; 1\\)</span> and</p>\n'
        '<div class="arithmatex">\\[\n\\begin{aligned} m_t &amp;= g_t \\end{aligned}\n\\]</div>'
    )
    out = hook.on_page_content(html, page)
    assert out.count('class="katex"') == 2 and out.count('class="katex-display"') == 1
    assert "\\(" not in out and "\\[" not in out
    # the TeX KaTeX saw is unescaped: "<" and "&" as written, kept in the MathML annotation
    assert "\\beta_1 &lt; 1</annotation>" in out and "m_t &amp;= g_t" in out


def test_katex_hook_stops_the_build_on_a_formula_it_cannot_render():
    hook = _katex_hook()
    page = type("Page", (), {"file": type("File", (), {"src_uri": "bad.md"})})
    with pytest.raises(hook.PluginError, match=r"bad\.md.*\\frac\{1\}"):
        hook.on_page_content('<span class="arithmatex">\\(\\frac{1}\\)</span>', page)
