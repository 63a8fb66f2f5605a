"""docs/performance.md's summary table is the recorded benchmark run, docs/bench/update.json."""

import json
import re
import statistics
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
# The summary's columns: (numerator, denominator) implementations of bench_update.py's rows.
COLUMNS = {
    "`adam_jax.adam` / `optax.adam`": ("adam_jax[pytorch]", "optax"),
    "`adam_jax.adam` / torch fused": ("adam_jax[pytorch]", "torch fused"),
    "`fused_adam` / `adam_jax.adam`": ("adam_jax fused", "adam_jax[pytorch]"),
    "`fused_adam` / torch fused": ("adam_jax fused", "torch fused"),
}


def median_ratio(times: dict, case: str, numerator: str, denominator: str) -> float:
    """The median over repetitions of the per-repetition time ratio, as the page reports it."""
    pairs = zip(times[case, numerator], times[case, denominator], strict=True)
    return statistics.median(a / b for a, b in pairs)


def test_summary_ratios_are_the_recorded_run():
    page = (DOCS / "performance.md").read_text()
    rows = json.loads((DOCS / "bench" / "update.json").read_text())["rows"]
    times = {(r["case"], r["impl"]): r["times_s"] for r in rows if r["algo"] == "adam"}
    header = next(line for line in page.splitlines() if line.startswith("| params | `adam_jax"))
    titles = [c.strip() for c in header.strip("|").split("|")][1:]
    assert set(titles) == set(COLUMNS)
    table = page[page.index(header) :].split("\n\n")[0].splitlines()[2:]
    assert len(table) == 6
    for line in table:
        label, *values = [c.strip() for c in line.strip("|").split("|")]
        size = re.fullmatch(r"(\de\d)", label)
        case = f"{float(size[1]):.0e}" if size else "tree"
        for title, value in zip(titles, values, strict=True):
            expected = median_ratio(times, case, *COLUMNS[title])
            assert float(value) == round(expected, 2), (label, title)
