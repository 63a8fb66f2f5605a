"""``loss.png``: the training loss, the learning rate, and each held-out metric of the task."""

import math

import matplotlib

matplotlib.use("Agg")  # files only; imported with the run, not when Ctrl-C asks for the plot
import matplotlib.pyplot as plt  # noqa: E402

from adam_jax.training.metrics import last_evaluation  # noqa: E402

COLUMNS = 2  # panels per row


def panels(rows: list) -> list[str]:
    """The keys of the rows that ``plot_run`` draws, one panel each (``test_loss`` joins
    ``loss``'s panel)."""
    return ["loss", "lr", *(k for k in last_evaluation(rows) if k != "test_loss")]


def plot_run(rows: list, path: str, *, title: str) -> None:
    """Writes the run's panels to ``path``: the loss on a log scale against the step (with
    ``test_loss``, the held-out loss, where the task has one), the learning rate, and one
    panel per other ``test_*`` metric (accuracy, perplexity)."""
    keys = panels(rows)
    evaluated = keys[2:]
    n_rows = math.ceil(len(keys) / COLUMNS)
    fig, axes = plt.subplots(n_rows, COLUMNS, figsize=(11, 3.8 * n_rows), squeeze=False)
    flat = list(axes.flat)
    ax = flat[0]
    ax.semilogy([r["step"] for r in rows], [r["loss"] for r in rows], lw=1, label="training")
    tested = [r for r in rows if "test_loss" in r]
    if tested:
        ax.semilogy(
            [r["step"] for r in tested], [r["test_loss"] for r in tested], ".-", label="held out"
        )
        ax.legend()
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax = flat[1]
    ax.plot([r["step"] for r in rows], [r["lr"] for r in rows], lw=1)
    ax.set(xlabel="step", ylabel="learning rate", title="learning rate (the step's)")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.grid(True, alpha=0.3)
    for ax, key in zip(flat[2:], evaluated, strict=False):
        points = [r for r in rows if key in r]
        ax.plot([r["step"] for r in points], [r[key] for r in points], marker=".")
        ax.set(xlabel="step", ylabel=key.removeprefix("test_").replace("_", " "))
        ax.set_title("held-out set")
        ax.grid(True, alpha=0.3)
    for ax in flat[len(keys) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
