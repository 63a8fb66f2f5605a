"""Opens every page of the built docs site in headless Chromium, as a reader without internet would.

Builds the site (``mkdocs build --strict`` into site/), serves it on 127.0.0.1 and opens each
page at 400 px (a phone, with the page's viewport meta), 1280 px (a laptop) and 1400 px. A page
fails on:

- a console error, an uncaught exception, or a resource that failed to load;
- a request to any host but the local server (the site must read offline);
- raw TeX in the rendered text (``\\(``, ``\\[``, ``$$``, ``\\frac``...) or a KaTeX error;
- a broken internal link, anchor or image (external links are checked for syntax only);
- content wider than the viewport: the page scrolls sideways, or an element sticks out of it
  (a box that scrolls by itself, such as a wide table's, is fine);
- at desktop widths (1280 px and up): a table whose first column is squeezed so that a word in
  it breaks across lines (narrower than the word and than ``MIN_FIRST_COLUMN_CHARS``), or a
  KaTeX formula split across lines.

A screenshot of each page at each width is kept under site/_check/. Chromium is Debian's
``chromium`` package, installed with apt-get when missing; it is driven over the DevTools
protocol with websocket-client (the docs extra).

    python -m scripts.dev.check_site              # build site/, check it (make check-site)
    python -m scripts.dev.check_site --no-build   # check the site/ already built
    python -m scripts.dev.check_site --self-test  # the checker must fail on planted faults
"""

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import websocket

ROOT = Path(__file__).resolve().parents[2]
WIDTHS = (400, 1280, 1400)  # a phone, a laptop and a desktop, in CSS px
DESKTOP = 1280  # from this width tables and formulas must keep their shape
# A first column may be narrower than this only when none of its words is wider than it.
MIN_FIRST_COLUMN_CHARS = 10
HEIGHT = 900  # viewport height; screenshots cover the whole page, up to MAX_SHOT_HEIGHT
MAX_SHOT_HEIGHT = 16_000
PAGE_TIMEOUT_S = 30
CHROMIUM_FLAGS = (  # the flags that work on a machine without network (see the module)
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
# TeX a renderer should have consumed: delimiters, and a backslash command in prose.
RAW_TEX = re.compile(r"\\[()\[\]]|\$\$|\\[A-Za-z]{2,}")
# A Markdown reference link that nothing resolved, such as mkdocstrings' [`name`][name].
RAW_REFERENCE = re.compile(r"\]\[[\w.]*\]")

# Runs in the page; returns what the checks need as one JSON-able object.
_INSPECT_JS = r"""
(() => {
  const vw = document.documentElement.clientWidth;
  const raw = new RegExp(%(raw_tex)s);
  const reference = new RegExp(%(raw_reference)s);
  const skip = "pre, code, script, style, textarea, annotation, .katex-mathml";
  const tex = [], refs = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.parentElement || node.parentElement.closest(skip)) continue;
    if (raw.test(node.textContent)) tex.push(node.textContent.trim().slice(0, 120));
    if (reference.test(node.textContent)) refs.push(node.textContent.trim().slice(0, 120));
  }
  for (const el of document.querySelectorAll(".katex-error")) {
    tex.push(el.textContent.slice(0, 120));
  }
  const describe = (el) => {
    const classes = typeof el.className === "string" ? el.className.trim().split(/\s+/) : [];
    const name = [el.tagName.toLowerCase(), ...classes.filter(Boolean)].join(".");
    const text = (el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 60);
    return `<${name}> ${Math.round(el.getBoundingClientRect().width)} px: ${text}`;
  };
  const visible = (el) => el.checkVisibility({opacityProperty: true, visibilityProperty: true});
  const wide = [], scrolling = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0 || !visible(el)) continue;
    const ox = getComputedStyle(el).overflowX;
    if ((ox === "auto" || ox === "scroll") && el.scrollWidth > el.clientWidth + 1) {
      scrolling.push(describe(el));
    }
    if (box.right <= vw + 1) continue;
    let clipped = false;  // inside a box that clips or scrolls and itself fits the viewport
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      const clips = getComputedStyle(up).overflowX !== "visible";
      if (clips && up.getBoundingClientRect().right <= vw + 1) {
        clipped = true;
        break;
      }
    }
    if (!clipped) wide.push(describe(el));
  }
  // A table's first column narrower than its widest word (and than %(min_chars)s characters):
  // the browser has broken the words in it.
  const canvas = document.createElement("canvas").getContext("2d");
  const textWidth = (el, text) => {
    const s = getComputedStyle(el);
    canvas.font = `${s.fontStyle} ${s.fontWeight} ${s.fontSize} ${s.fontFamily}`;
    return canvas.measureText(text).width;
  };
  const narrow = [];
  for (const table of document.querySelectorAll("table")) {
    const cells = [...table.rows].map((row) => row.cells[0]).filter((c) => c && visible(c));
    if (!cells.length) continue;
    const style = getComputedStyle(cells[0]);
    const inner =
      cells[0].clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    let widest = 0, word = "";
    for (const cell of cells) {
      const texts = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let node = texts.nextNode(); node; node = texts.nextNode()) {
        if (node.parentElement.closest(".katex")) continue;  // formulas: checked below
        for (const token of node.textContent.split(/\s+/).filter(Boolean)) {
          const width = textWidth(node.parentElement, token);
          if (width > widest) [widest, word] = [width, token];
        }
      }
    }
    const needed = Math.min(widest, %(min_chars)s * textWidth(cells[0], "0"));
    if (inner < needed - 1) {
      const chars = inner / textWidth(cells[0], "0");
      narrow.push(`${chars.toFixed(1)} characters wide, for ${JSON.stringify(word)}`);
    }
  }
  // A formula is split when two of KaTeX's top-level boxes sit on different lines
  // (a line break the author wrote, TeX's \\, is a .newline and exempt).
  const split = [];
  for (const formula of document.querySelectorAll(".katex-html")) {
    if (!visible(formula) || formula.querySelector(":scope > .newline")) continue;
    const boxes = [...formula.querySelectorAll(":scope > .base")].map((b) =>
      b.getBoundingClientRect()
    );
    if (boxes.some((box, i) => i > 0 && box.top >= boxes[i - 1].bottom - 1)) {
      const tex = formula.parentElement.querySelector("annotation");
      split.push((tex ? tex.textContent : formula.textContent).trim().slice(0, 80));
    }
  }
  const ids = [...document.querySelectorAll("[id]")].map((el) => el.id);
  for (const el of document.querySelectorAll("a[name]")) ids.push(el.name);
  return {
    title: document.title,
    viewport: vw,
    scroll_width: document.documentElement.scrollWidth,
    raw_tex: tex,
    raw_references: refs,
    wide: wide.slice(0, 10),
    scrolling: scrolling,
    links: [...document.querySelectorAll("a[href]")].map((a) => a.getAttribute("href") && a.href),
    broken_images: [...document.images]
      .filter((img) => !img.complete || img.naturalWidth === 0)
      .map((img) => img.src),
    images: [...document.images].map((img) => img.src),
    ids: ids,
    narrow_columns: narrow,
    split_formulas: split,
  };
})()
"""


def ensure_chromium() -> str:
    """The path of Debian's Chromium, installed with apt-get (as root) when missing."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("check_site: no chromium; install Debian's package: apt-get install chromium")
    print("check_site: installing Debian's chromium with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    return shutil.which("chromium") or sys.exit("check_site: apt-get installed no chromium")


class Browser:
    """Headless Chromium with one tab, driven over the DevTools protocol."""

    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="check_site_chromium_")
        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            tab = next(t for t in json.load(response) if t["type"] == "page")
        self.socket = websocket.create_connection(
            tab["webSocketDebuggerUrl"], timeout=PAGE_TIMEOUT_S, suppress_origin=True
        )
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params) -> dict:
        """Sends one command and returns its result; events met meanwhile are kept."""
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not any(e["method"] == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {PAGE_TIMEOUT_S} s")
            message = json.loads(self.socket.recv())
            if "method" in message:
                self.events.append(message)

    def open(self, url: str, width: int) -> tuple[dict, list[dict]]:
        """Loads ``url`` at ``width`` px; returns the page inspection and the events."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        self.events = []
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        self.evaluate("document.fonts.ready.then(() => new Promise(r => setTimeout(r, 50)))")
        values = {
            "raw_tex": json.dumps(RAW_TEX.pattern),
            "raw_reference": json.dumps(RAW_REFERENCE.pattern),
            "min_chars": MIN_FIRST_COLUMN_CHARS,
        }
        inspection = self.evaluate(_INSPECT_JS % values)
        return inspection, self.events

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, width: int) -> None:
        """A PNG of the whole page (up to ``MAX_SHOT_HEIGHT``) at the current width."""
        height = self.send("Page.getLayoutMetrics")["cssContentSize"]["height"]
        clip = {"x": 0, "y": 0, "width": width, "height": min(height, MAX_SHOT_HEIGHT), "scale": 1}
        shot = self.send(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        if getattr(self, "socket", None):
            self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(site: Path) -> http.server.ThreadingHTTPServer:
    """Serves ``site`` on 127.0.0.1 (a free port) from a daemon thread."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def event_problems(events: list[dict], origin: str) -> list[str]:
    """Console errors, uncaught exceptions, failed loads and off-site requests."""
    problems = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            problems.append(f"uncaught exception: {text.splitlines()[0]}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            problems.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            where = entry.get("url", "")
            problems.append(f"console error ({entry['source']}): {entry['text']} {where}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            off_site = not url.startswith(origin)
            if urlsplit(url).scheme in ("http", "https", "ws", "wss") and off_site:
                problems.append(f"request off the site (no network at view time): {url}")
    return problems


def link_problems(links: list[str], site: Path, origin: str) -> tuple[list[str], list[tuple]]:
    """Broken internal links, malformed external ones; and the (page, anchor) pairs to check."""
    problems, anchors = [], []
    for link in links:
        if not link:
            problems.append("empty link")
            continue
        parts = urlsplit(link)
        if link.startswith(origin):
            url, fragment = urldefrag(link)
            target = site / unquote(urlsplit(url).path).lstrip("/")
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"broken link: {link}")
            elif fragment and target.suffix == ".html":
                anchors.append((target, unquote(fragment), link))
        elif parts.scheme in ("http", "https"):
            host_ok = re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}(:\d+)?", parts.netloc)
            if not host_ok or " " in link:
                problems.append(f"malformed external link: {link}")
        elif parts.scheme not in ("mailto",):
            problems.append(f"link of an unexpected kind: {link}")
    return problems, anchors


def site_pages(site: Path) -> list[Path]:
    """Every HTML page of the site but the 404 page and the checker's own output."""
    return sorted(
        p
        for p in site.rglob("*.html")
        if p.name != "404.html" and "_check" not in p.relative_to(site).parts
    )


def check(site: Path, pages: list[Path], shots: Path, chromium: str) -> dict[str, list[str]]:
    """Opens each page at each width; returns page -> problems (empty lists when all is well)."""
    shots.mkdir(parents=True, exist_ok=True)
    server = serve(site)
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    browser = Browser(chromium)
    problems: dict[str, list[str]] = {}
    ids: dict[Path, set[str]] = {}
    anchors: list[tuple] = []
    try:
        for page in pages:
            name = page.relative_to(site).as_posix()
            found = problems.setdefault(name, [])
            for width in WIDTHS:
                start = time.monotonic()
                seen, events = browser.open(origin + name, width)
                found += [f"{width} px: {p}" for p in event_problems(events, origin)]
                found += [f"{width} px: raw TeX: {t!r}" for t in seen["raw_tex"]]
                found += [
                    f"{width} px: unresolved reference: {t!r}" for t in seen["raw_references"]
                ]
                found += [f"{width} px: broken image: {src}" for src in seen["broken_images"]]
                found += [
                    f"{width} px: image off the site: {src}"
                    for src in seen["images"]
                    if not src.startswith(origin) and not src.startswith("data:")
                ]
                if seen["scroll_width"] > seen["viewport"] + 1:
                    found.append(
                        f"{width} px: the page is {seen['scroll_width']} px wide "
                        f"(viewport {seen['viewport']} px)"
                    )
                found += [f"{width} px: wider than the viewport: {w}" for w in seen["wide"]]
                if width >= DESKTOP:
                    found += [
                        f"{width} px: a table's first column is {c}" for c in seen["narrow_columns"]
                    ]
                    found += [
                        f"{width} px: formula split across lines: {f!r}"
                        for f in seen["split_formulas"]
                    ]
                slug = re.sub(r"[^A-Za-z0-9]+", "-", name.removesuffix(".html")).strip("-")
                browser.screenshot(shots / f"{slug or 'index'}-{width}.png", width)
                print(
                    f"  {name} @ {width} px: {time.monotonic() - start:.1f} s, "
                    f"{len(seen['links'])} links, {len(seen['scrolling'])} boxes scroll sideways",
                    flush=True,
                )
                if width == max(WIDTHS):  # fine on a phone; on a desktop worth knowing
                    for box in seen["scrolling"]:
                        print(f"    scrolls sideways: {box}")
            # The links are the same at every width: those of the last one are checked.
            link_found, page_anchors = link_problems(seen["links"], site, origin)
            found += link_found
            anchors += [(name, *anchor) for anchor in page_anchors]
            ids[page] = set(seen["ids"])
    finally:
        browser.close()
        server.shutdown()
    for name, target, fragment, link in anchors:
        if target in ids and fragment not in ids[target]:
            problems[name].append(f"broken anchor: {link}")
    return problems


def build_site(site: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [str(mkdocs), "build", "--strict", "-q", "-d", str(site)]
    subprocess.run(command, cwd=ROOT, check=True, env=env)


# Pages the checker must fail, each with the text its problem must contain (--self-test).
# KaTeX's structure: top-level boxes (.base) side by side, which a too narrow box wraps.
_BASE = "<span class='base' style='display: inline-block'>{}</span>"
_FORMULA = (
    "<span class='katex'><span class='katex-html'>"
    + _BASE.format("r = ")
    + _BASE.format("max(r, v)")
    + "</span></span>"
)
_TABLE = "<table><tr><td style='{}'><code>\"pytorch\"</code></td><td>{}</td></tr></table>"
PLANTED = {
    "fine.html": (
        "<p id='top'>Text, <a href='#top'>a link</a>, <code>\\frac</code>.</p>"
        + _TABLE.format("", _FORMULA),
        None,
    ),
    "raw_tex.html": ("<p>The step is \\(\\frac{m}{\\sqrt{v}}\\).</p>", "raw TeX"),
    "raw_reference.html": ("<p>See [<code>adam_jax.gone</code>][adam_jax.gone].</p>", "reference"),
    "console_error.html": ("<script>console.error('planted')</script>", "console.error"),
    "exception.html": ("<script>null.planted()</script>", "uncaught exception"),
    "broken_link.html": ("<a href='missing.html'>gone</a>", "broken link"),
    "broken_anchor.html": ("<a href='#nowhere'>gone</a>", "broken anchor"),
    "broken_image.html": ("<img src='missing.png' alt='gone'>", "broken image"),
    "wide.html": ("<div style='width: 900px'>wide</div>", "wider than the viewport"),
    "narrow_column.html": (
        _TABLE.format("width: 2ch; word-break: break-all", "text"),
        "first column",
    ),
    "split_formula.html": (f"<div style='width: 2ch'>{_FORMULA}</div>", "formula split"),
}


def self_test(chromium: str) -> list[str]:
    """Checks planted pages; returns what went wrong (an empty list when the checker works)."""
    failures = []
    with tempfile.TemporaryDirectory(prefix="check_site_selftest_") as tmp:
        site = Path(tmp)
        head = '<meta name="viewport" content="width=device-width,initial-scale=1">'
        for name, (body, _) in PLANTED.items():
            page = f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"
            (site / name).write_text(page)
        (site / "favicon.ico").write_bytes(b"")
        problems = check(site, sorted(site / n for n in PLANTED), site / "_check", chromium)
        for name, (_, expected) in PLANTED.items():
            if expected is None and problems[name]:
                failures.append(f"{name} should pass: {problems[name]}")
            elif expected and not any(expected in p for p in problems[name]):
                failures.append(f"{name} should fail with {expected!r}: {problems[name]}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site", help="the built site")
    parser.add_argument("--no-build", action="store_true", help="check the site already built")
    parser.add_argument("--self-test", action="store_true", help="fail on planted faults")
    args = parser.parse_args()
    chromium = ensure_chromium()
    start = time.monotonic()
    if args.self_test:
        failures = self_test(chromium)
        print("\n".join(failures) or f"self-test: all {len(PLANTED) - 1} planted faults caught")
        return 1 if failures else 0
    if not args.no_build:
        build_site(args.site)
    pages = site_pages(args.site)
    problems = check(args.site, pages, args.site / "_check", chromium)
    bad = {page: found for page, found in problems.items() if found}
    for page, found in bad.items():
        print(f"{page}:")
        print("\n".join(f"  {p}" for p in found))
    print(
        f"check_site: {len(pages)} pages x {len(WIDTHS)} widths in "
        f"{time.monotonic() - start:.0f} s, {sum(map(len, bad.values()))} problems; "
        f"screenshots in {args.site / '_check'}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
