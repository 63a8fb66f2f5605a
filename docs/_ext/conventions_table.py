"""mkdocs hook: the conventions table of the docs, derived from ``adam_jax.CONVENTIONS``.

``<!-- CONVENTIONS -->`` in a page becomes two tables with one row per convention, the step
formulas built from the row's booleans by ``adam_jax._conventions.step_latex``,
so a new row of the code table is a new row of the docs, with nothing copied.
"""

from adam_jax._conventions import CONVENTIONS, step_latex

_MARKER = "<!-- CONVENTIONS -->"


def conventions_markdown() -> str:
    """Two tables, as Markdown with arithmatex maths: the steps, then the rest of each row.

    One table of seven columns does not fit a laptop's text column (1280 px): its cells wrapped
    formulas mid-expression and squeezed the first column to two letters a line.
    """
    steps = [
        "| `convention` | Adam step $s_t$ | AMSGrad keeps $r_t$ | AMSGrad step $s_t$ |",
        "|---|---|---|---|",
    ]
    origins = [
        "| `convention` | matches | complex params | NAdam $\\psi$ |",
        "|---|---|---|---|",
    ]
    defaults = [
        "| `convention` | `eps` | `adamw`'s `weight_decay` | `nadam`'s `learning_rate` |",
        "|---|---|---|---|",
    ]
    for row in CONVENTIONS.values():
        keeps = "v_t / c_2" if row.max_of_corrected else "v_t"
        psi = (
            "none: $\\mu_t = \\beta_1$"
            if row.nadam_momentum_decay is None
            else f"${row.nadam_momentum_decay:g}$"
        )
        complex_ = (
            "real and imaginary parts apart" if row.complex_as_real else "$\\lvert g_t \\rvert^2$"
        )
        steps.append(
            f'| `"{row.name}"` | ${step_latex(row, False)}$ '
            f"| $\\max(r_{{t-1}}, {keeps})$ | ${step_latex(row, True)}$ |"
        )
        origins.append(f'| `"{row.name}"` | {row.reference} | {complex_} | {psi} |')
        defaults.append(
            f'| `"{row.name}"` | {row.default_eps:g} | {row.default_adamw_weight_decay:g} '
            f"| {row.default_nadam_learning_rate:g} |"
        )
    return "\n".join(
        [
            *steps,
            "",
            "What each convention matches, and its two other columns:",
            "",
            *origins,
            "",
            "The framework's defaults, taken where an argument is left as None:",
            "",
            *defaults,
        ]
    )


def on_page_markdown(markdown, **kwargs):
    if _MARKER not in markdown:
        return markdown
    return markdown.replace(_MARKER, conventions_markdown())
