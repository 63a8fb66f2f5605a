"""Measure adam_jax against the real PyTorch, optax and Keras; write docs/parity.md's tables.

Runs every comparison of ``tests/parity`` (each convention against its
framework, parameters compared after every step, in float64 and float32; the
harness is ``tests/parity/harness.py``) and the seed's program (PyTorch's,
then ``scripts/train.py --init-from`` its weights and data, and the real
``optax.amsgrad``), then:

- prints the tables and replaces them in ``docs/parity.md``, between the
  ``<!-- parity-table:start/end -->`` and ``<!-- seed-table:start/end -->`` markers;
- writes every number to ``docs/parity.json``;
- plots the seed's loss curves to ``docs/img/seed_loss_curves.png``.

    python -m scripts.dev.parity_report              # about 3 minutes on 2 CPU cores
    python -m scripts.dev.parity_report --no-write   # print only

Needs the ``test`` and ``train`` extras (torch, keras, flax, matplotlib).
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import sys
import tempfile
from importlib import metadata

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is first imported

from tests.parity import harness as h  # noqa: E402

DTYPES = ("float64", "float32")
STEP_100 = 99  # index of the 100th loss
CURVE_STYLE = {  # label, colour, line style, width
    "pytorch": ("PyTorch torch.optim.Adam(amsgrad=True)", "#1f77b4", "-", 4.0),
    "adam_jax_pytorch": ('adam_jax convention="pytorch"', "#0b2b4a", "--", 1.5),
    "optax_amsgrad": ("optax.amsgrad", "#ff7f0e", "-", 4.0),
    "adam_jax_optax": ('adam_jax convention="optax"', "#6b2d00", "--", 1.5),
    "optax_amsgrad_nu_raw": ("optax.amsgrad(bias_correction_nu=False)", "#7f7f7f", ":", 1.5),
}
PLOTTED = ("pytorch", "adam_jax_pytorch", "optax_amsgrad", "adam_jax_optax")


def measure_cases() -> list[dict]:
    """Max relative difference over the run of every case, per dtype (and torch code path)."""
    rows = []
    for case in h.CASES:
        row = {"id": case.id, "convention": case.convention, "framework": case.framework}
        row["reference"] = case.name
        for dtype in DTYPES:
            if case.framework == "torch":
                paths = [
                    p
                    for p in h.TORCH_CODE_PATHS
                    if not h.torch_code_path_unsupported(p, dtype, case.reference[0])
                ]
                row[dtype] = {p: float(h.compare(case, dtype, code_path=p).max()) for p in paths}
            else:
                row[dtype] = {"": float(h.compare(case, dtype).max())}
        rows.append(row)
        print(f"  {case.id}: " + ", ".join(f"{d} {max(row[d].values()):.1e}" for d in DTYPES))
    return rows


def measure_seed(workdir: pathlib.Path) -> dict:
    """The seed's four loss curves in each dtype."""
    curves = {}
    for dtype in DTYPES:
        npz = workdir / f"seed_torch_{dtype}.npz"
        h.write_seed_npz(npz, dtype)
        curves[dtype] = h.seed_curves(npz, workdir / dtype)
    return curves


def _sci(x: float) -> str:
    return f"{x:.1e}" if x else "0"


def parity_table(rows: list[dict]) -> str:
    tol = {d: f"{h.TOLERANCE[d]:.0e}".replace("e-0", "e-") for d in DTYPES}
    steps = "; ".join(f"{d}: {h.STEPS[d]} steps, tolerance {tol[d]}" for d in DTYPES)
    lines = [
        "| convention | reference implementation | float64 | float32 |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = [_sci(max(row[d].values())) for d in DTYPES]
        lines.append(f"| `{row['convention']}` | `{row['reference']}` | {cells[0]} | {cells[1]} |")
    paths = "/".join(h.TORCH_CODE_PATHS)
    lines += [
        "",
        f"Largest relative difference of the parameters over the run ({steps}); "
        f"for torch, the largest over its {paths} implementations.",
    ]
    return "\n".join(lines)


def seed_summary(curves: dict) -> dict:
    """Per dtype and run: losses at steps 1, 100 and 500, and the difference to PyTorch."""
    summary = {}
    for dtype, runs in curves.items():
        torch_losses = runs["pytorch"]
        summary[dtype] = {}
        for name, losses in runs.items():
            rel = np.abs(losses - torch_losses) / np.abs(torch_losses)
            summary[dtype][name] = {
                "run": h.SEED_CURVES[name],
                "loss_step_1": float(losses[0]),
                "loss_step_100": float(losses[STEP_100]),
                "loss_step_500": float(losses[-1]),
                "rel_diff_to_pytorch_step_100": float(rel[STEP_100]),
                "rel_diff_to_pytorch_max": float(rel.max()),
            }
    return summary


def seed_table(summary: dict) -> str:
    lines = [
        "| dtype | run | loss at step 1 | step 100 | step 500 "
        "| relative difference to PyTorch at step 100 | largest over 500 steps |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for dtype, runs in summary.items():
        for name, s in runs.items():
            cells = [f"{s[f'loss_step_{i}']:.4g}" for i in (1, 100, 500)]
            if name != "pytorch":
                cells += [
                    f"{s[k]:.2g}"
                    for k in ("rel_diff_to_pytorch_step_100", "rel_diff_to_pytorch_max")
                ]
            else:
                cells += ["", ""]
            lines.append(f"| {dtype} | `{s['run']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(curves: dict, path: pathlib.Path) -> None:
    """Left: the float32 loss curves; right: their relative difference to PyTorch's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    steps = np.arange(1, h.SEED_STEPS + 1)
    for name in PLOTTED:
        label, colour, style, width = CURVE_STYLE[name]
        left.semilogy(steps, curves["float32"][name], style, color=colour, lw=width, label=label)
    left.set(xlabel="step", ylabel="loss before the step", title="The seed's program, float32")
    left.legend(frameon=False)
    for dtype, name, colour, style in [
        ("float32", "optax_amsgrad", CURVE_STYLE["optax_amsgrad"][1], "-"),
        ("float32", "adam_jax_pytorch", CURVE_STYLE["adam_jax_pytorch"][1], "-"),
        ("float64", "adam_jax_pytorch", "#2ca02c", "-"),
    ]:
        reference = curves[dtype]["pytorch"]
        rel = np.abs(curves[dtype][name] - reference) / reference
        rel = np.where(rel > 0, rel, np.nan)  # equal losses: no point on a log scale
        label = f"{CURVE_STYLE[name][0]}, {dtype}"
        right.semilogy(steps, rel, style, color=colour, lw=1.2, label=label)
    right.set(
        xlabel="step",
        ylabel="|loss - PyTorch's loss| / PyTorch's loss",
        title="Relative difference to PyTorch (same dtype)",
        ylim=(1e-17, 1e8),
    )
    right.legend(frameon=False, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replace_between(text: str, marker: str, table: str) -> str:
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"the page has no {start} ... {end} markers")
    return pattern.sub(lambda _: f"{start}\n{table}\n{end}", text)


def versions() -> dict:
    names = ["adam_jax", "jax", "jaxlib", "optax", "torch", "keras", "flax", "numpy"]
    return {n: metadata.version(n) for n in names}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--doc", default=REPO / "docs" / "parity.md", type=pathlib.Path)
    p.add_argument("--json", default=REPO / "docs" / "parity.json", type=pathlib.Path)
    p.add_argument(
        "--png", default=REPO / "docs" / "img" / "seed_loss_curves.png", type=pathlib.Path
    )
    p.add_argument("--no-write", action="store_true", help="print the tables, write nothing")
    args = p.parse_args(argv)

    print("Each convention against its framework:")
    rows = measure_cases()
    with tempfile.TemporaryDirectory() as workdir:
        print("The seed's program:")
        curves = measure_seed(pathlib.Path(workdir))
    summary = seed_summary(curves)
    tables = {"parity-table": parity_table(rows), "seed-table": seed_table(summary)}
    for table in tables.values():
        print("\n" + table)
    if args.no_write:
        return 0

    text = args.doc.read_text()
    for marker, table in tables.items():
        text = replace_between(text, marker, table)
    args.doc.write_text(text)
    plot(curves, args.png)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "versions": versions(),
        "steps": h.STEPS,
        "tolerance": h.TOLERANCE,
        "cases": rows,
        "seed": summary,
    }
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {args.doc}, {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
