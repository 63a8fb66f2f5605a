"""Metrics rows (one per step, as in ``metrics.jsonl``) and the run's summary."""

import math

import jax
import numpy as np

STEP_METRICS = ("loss", "lr", "eps_dominated")  # per step, in metrics.jsonl's order


def chunk_rows(start: int, metrics: dict, n: int, steps_per_epoch: int | None) -> list[dict]:
    """The rows of steps ``start + 1 .. start + n`` from a chunk's metrics arrays (on the host).

    ``epoch`` (0-based) is added for tasks with epochs. Rows stop after the
    first step whose loss is not finite.
    """
    rows = []
    for i in range(n):
        row: dict[str, int | float] = {"step": start + i + 1}
        row |= {k: float(np.asarray(metrics[k][i])) for k in STEP_METRICS if k in metrics}
        if steps_per_epoch is not None:
            row["epoch"] = (start + i) // steps_per_epoch
        rows.append(row)
        if not math.isfinite(row["loss"]):
            break
    return rows


def last_evaluation(rows: list) -> dict:
    """The ``test_*`` values of the newest row that has them (``{}`` if none)."""
    for row in reversed(rows):
        found = {k: v for k, v in row.items() if k.startswith("test_")}
        if found:
            return found
    return {}


def bytes_per_param(tree, params) -> float:
    """The bytes of ``tree``'s arrays (8-bit codes and scales, float moments, error buffers,
    step counts, keys: every leaf, arrays or ``jax.ShapeDtypeStruct``) per element of
    ``params``: read from the arrays' shapes and dtypes, not from a formula."""
    size = sum(
        int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)
    )
    return size / sum(int(np.prod(np.shape(p))) for p in jax.tree.leaves(params))


def summary(
    task: str,
    status: str,
    rows: list,
    start: int,
    wall_s: float,
    compile_s: float,
    checkpoint_step: int | None,
    state_bytes_per_param: float,
) -> dict:
    """``summary.json``: where the run ended, how fast, its optimizer state's bytes per param
    (:func:`bytes_per_param`) and its last evaluation."""
    last = rows[-1] if rows else {"loss": math.nan, "step": start}
    steps_run = last["step"] - start
    return {
        "task": task,
        "status": status,
        "final_loss": last["loss"],
        "steps": last["step"],
        "steps_run": steps_run,
        "wall_s": wall_s,
        "compile_s": compile_s,
        "steps_per_s": steps_run / wall_s if wall_s > 0 else math.nan,
        "checkpoint_step": checkpoint_step,
        "opt_state_bytes_per_param": state_bytes_per_param,
    } | last_evaluation(rows)
