"""Griffe extension: our reST-flavoured docstrings as the Markdown mkdocstrings renders.

The docstrings follow optax's template (``:math:`x```, ``.. math::`` blocks,
``:func:`name``` roles, ```Title <url>`_`` links), which reads well in the
source and in ``help()``. This turns those four constructs into arithmatex
maths (``$x$``, ``$$...$$``), autorefs cross-references and Markdown links at
docs build time, so the source keeps one style. Loaded by mkdocs.yml.
"""

import re

import griffe

_INLINE_MATH = re.compile(r":math:`(.+?)`", re.DOTALL)
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|obj):`~?([\w.]+)`")
_LINK = re.compile(r"`([^`<]+?)\s*<(https?://[^>]+)>`__?", re.DOTALL)
_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*$")


def rst_to_markdown(text: str) -> str:
    """Converts the reST constructs of a docstring to Markdown (see the module)."""
    text = _math_blocks(text)
    text = _INLINE_MATH.sub(lambda m: "$" + " ".join(m.group(1).split()) + "$", text)
    text = _ROLE.sub(lambda m: f"[`{m.group(1)}`][{m.group(1)}]", text)
    return _LINK.sub(lambda m: f"[{' '.join(m.group(1).split())}]({m.group(2)})", text)


def _math_blocks(text: str) -> str:
    """``.. math::`` and its indented block -> a ``$$`` block, aligned if it has ``&``."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        directive = _DIRECTIVE.match(lines[i])
        if not directive:
            out.append(lines[i])
            i += 1
            continue
        indent = directive.group(1)
        i += 1
        body = []
        while i < len(lines) and (not lines[i].strip() or _width(lines[i]) > len(indent)):
            body.append(lines[i])
            i += 1
        body = "\n".join(body).strip("\n").split("\n")
        depth = min(_width(b) for b in body if b.strip())
        maths = [indent + b[depth:] for b in body]
        if any("&" in b for b in body):
            maths = [indent + r"\begin{aligned}", *maths, indent + r"\end{aligned}"]
        out += ["", indent + "$$", *maths, indent + "$$", ""]
    return "\n".join(out)


def _width(line: str) -> int:
    return len(line) - len(line.lstrip())


class RstToMarkdown(griffe.Extension):
    """Applies ``rst_to_markdown`` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
