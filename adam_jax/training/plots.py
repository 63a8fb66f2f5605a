"""``loss.png``: the training loss per step, and each held-out metric of the task."""

from adam_jax.training.metrics import last_evaluation


def plot_run(rows: list, path: str, *, title: str) -> None:
    """The loss on a log scale against the step; one more panel per ``test_*`` metric
    other than ``test_loss`` (which joins the loss panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [k for k in last_evaluation(rows) if k != "test_loss"]
    panels = 1 + len(evaluated)
    fig, axes = plt.subplots(1, panels, figsize=(6 + 4 * (panels - 1), 4), squeeze=False)
    ax = axes[0, 0]
    ax.semilogy([r["step"] for r in rows], [r["loss"] for r in rows], lw=1, label="training")
    tested = [r for r in rows if "test_loss" in r]
    if tested:
        ax.semilogy(
            [r["step"] for r in tested], [r["test_loss"] for r in tested], ".-", label="held out"
        )
        ax.legend()
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(True, which="both", alpha=0.3)
    for ax, key in zip(axes[0, 1:], evaluated, strict=True):
        points = [r for r in rows if key in r]
        ax.plot([r["step"] for r in points], [r[key] for r in points], marker=".")
        ax.set(xlabel="step", ylabel=key.replace("_", " "), title="held-out set")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
