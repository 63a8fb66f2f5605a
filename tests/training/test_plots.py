"""loss.png: the loss and learning-rate panels, and one more per held-out metric."""

import struct

import pytest

pytest.importorskip("matplotlib", reason="loss.png needs the train extra")

from adam_jax.training import plots  # noqa: E402


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def rows(evaluated: dict) -> list:
    found = [{"step": s, "loss": 1.0 / s, "lr": 1e-3 * min(1.0, s / 5)} for s in range(1, 21)]
    for row in found[9::10]:
        row |= evaluated
    return found


@pytest.mark.parametrize(
    ("evaluated", "panels"),
    [
        ({}, ["loss", "lr"]),  # seed
        ({"test_loss": 0.5, "test_accuracy": 0.9}, ["loss", "lr", "test_accuracy"]),  # digits
        (
            {"test_loss": 0.5, "test_perplexity": 9.0, "test_unigram_perplexity": 24.4},
            ["loss", "lr", "test_perplexity", "test_unigram_perplexity"],
        ),  # lm
    ],
)
def test_panels(tmp_path, evaluated, panels):
    path = tmp_path / "loss.png"
    assert plots.panels(rows(evaluated)) == panels
    plots.plot_run(rows(evaluated), str(path), title="t")
    width, height = png_size(path)
    assert width == 1100 and height == 380 * (1 + (len(panels) > 2))  # two panels a row
