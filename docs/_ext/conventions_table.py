"""mkdocs hook: the conventions table of the docs, derived from ``adam_jax.CONVENTIONS``.

``<!-- CONVENTIONS -->`` in a page becomes one row per convention, its step
formulas built from the row's booleans by ``adam_jax._conventions.step_latex``,
so a new row of the code table is a new row of the docs, with nothing copied.
"""

from adam_jax._conventions import CONVENTIONS, step_latex

_MARKER = "<!-- CONVENTIONS -->"


def conventions_markdown() -> str:
    """The table, as Markdown with arithmatex maths."""
    lines = [
        "| `convention` | matches | Adam step $s_t$ | AMSGrad keeps | AMSGrad step $s_t$ "
        "| complex params | NAdam $\\psi$ |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in CONVENTIONS.values():
        keeps = "v_t / c_2" if row.max_of_corrected else "v_t"
        psi = (
            "—, $\\mu_t = \\beta_1$"
            if row.nadam_momentum_decay is None
            else (f"${row.nadam_momentum_decay:g}$")
        )
        complex_ = (
            "real and imaginary parts apart" if row.complex_as_real else "$\\lvert g_t \\rvert^2$"
        )
        lines.append(
            f'| `"{row.name}"` | {row.reference} | ${step_latex(row, False)}$ '
            f"| $r_t = \\max(r_{{t-1}}, {keeps})$ | ${step_latex(row, True)}$ "
            f"| {complex_} | {psi} |"
        )
    return "\n".join(lines)


def on_page_markdown(markdown, **kwargs):
    if _MARKER not in markdown:
        return markdown
    return markdown.replace(_MARKER, conventions_markdown())
