"""Orbax checkpoints of the training state, each with a checksum, and a restore that falls back.

A checkpoint ``DIR/checkpoints/<step>/`` holds three orbax items: ``state``
(the :class:`~adam_jax.training.loop.TrainState`), ``rows`` (every metrics
row up to that step) and ``checksum``: the SHA-256 of the state's arrays
(dtype, shape and bytes of each leaf, in tree order) and of the rows, computed
before saving. Restoring recomputes it from what was read, so flipped bytes in
the data are found even where the decoder accepts them; a checkpoint that
fails to read (truncated, missing files) or to match is skipped for the next
older one.
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
from typing import NamedTuple

import jax
import numpy as np

from adam_jax.training.loop import TrainState
from adam_jax.training.tasks.base import ConfigError

KEEP = 3  # newest checkpoints kept on disk
DAMAGED_DIR = "checkpoints-damaged"  # where resume moves checkpoints it could not use


def checksum(state: TrainState, rows: list) -> str:
    """SHA-256 of the state's arrays (dtype, shape, bytes per leaf) and of the metrics rows.

    Computed from each array whole, however it is sharded (with several
    processes every one gathers all of it: a collective they all call), so a
    checkpoint saved on one mesh checks out when restored on another.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        host = multihost_utils.process_allgather(state, tiled=True)
    else:
        host = jax.device_get(state)
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(host):
        array = np.asarray(leaf)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps(rows, sort_keys=True).encode())
    return digest.hexdigest()


def manager(out: str):
    """The orbax manager of ``out/checkpoints`` (synchronous saves, ``KEEP`` kept)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=KEEP, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(out, "checkpoints")), options=options)


def save(checkpoints, state: TrainState, rows: list) -> None:
    """Saves the state, the metrics so far and their checksum under the state's step.

    Raises:
      OSError: when the checkpoint cannot be written (orbax's error, one line);
        the checkpoints already on disk are untouched.
    """
    import orbax.checkpoint as ocp

    items = ocp.args.Composite(
        state=ocp.args.StandardSave(state._asdict()),
        rows=ocp.args.JsonSave(rows),
        checksum=ocp.args.JsonSave({"sha256": checksum(state, rows)}),
    )
    try:
        with _quiet_absl():
            checkpoints.save(int(state.step), args=items)
    except Exception as e:  # orbax wraps a failed write (disk full) in many types
        raise OSError(f"checkpoint {int(state.step)}: {_first_line(e)}") from e


def close(checkpoints) -> None:
    """Closes the manager, also after a failed save (whose threads orbax must stop)."""
    with _quiet_absl(), contextlib.suppress(Exception):
        checkpoints.wait_until_finished()
        checkpoints.close()


class Restored(NamedTuple):
    """What :func:`restore` found."""

    state: TrainState
    rows: list  # the metrics rows up to the checkpoint
    step: int
    skipped: dict[int, str]  # newer checkpoints that could not be used -> why


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def _quiet_absl():
    """Orbax logs each failed read through absl before raising; the caller reports it."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _restore_step(path: str, like: TrainState) -> tuple[TrainState, list]:
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like._asdict())
    items = ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        rows=ocp.args.JsonRestore(),
        checksum=ocp.args.JsonRestore(),
    )
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(os.path.abspath(path), args=items)
    state, rows = TrainState(**restored.state), list(restored.rows)
    if restored.checksum.get("sha256") != checksum(state, rows):
        raise ValueError("checksum mismatch: its data changed after it was written")
    return state, rows


def steps_on_disk(out: str) -> list[int]:
    """The steps of the finished checkpoints in ``out``, newest first."""
    path = os.path.join(out, "checkpoints")
    found = [
        int(name)
        for name in os.listdir(path)
        if name.isdigit() and os.path.isdir(os.path.join(path, name))
    ]
    return sorted(found, reverse=True)


def restore(out: str, like: TrainState) -> Restored:
    """The newest sound checkpoint in ``out``, with the structure and dtypes of ``like``.

    Raises:
      ConfigError: (``--resume``) when ``out`` has no checkpoint that reads
        back and matches its checksum.
    """
    path = os.path.join(out, "checkpoints")
    if not os.path.isdir(path):
        raise ConfigError("--resume", f"{out} has no checkpoints/ directory")
    skipped = {}
    for step in steps_on_disk(out):
        try:
            with _quiet_absl():
                state, rows = _restore_step(os.path.join(path, str(step)), like)
            # A run continued from another framework's step k has rows from k + 1 on.
            last_row = rows[-1]["step"] if rows else 0
            if int(state.step) != step or last_row != step:
                raise ValueError(f"holds step {int(state.step)} and metrics up to step {last_row}")
        except Exception as e:  # a damaged checkpoint: any error of orbax or of our checks
            skipped[step] = _first_line(e)
            continue
        return Restored(state, rows, step, skipped)
    found = "; ".join(f"{s}: {why}" for s, why in skipped.items()) or "none finished"
    raise ConfigError("--resume", f"no usable checkpoint in {path} ({found})")


def set_aside(out: str, steps) -> None:
    """Moves the checkpoints ``steps`` to ``out/checkpoints-damaged/``, out of orbax's way."""
    for step in steps:
        source = os.path.join(out, "checkpoints", str(step))
        if os.path.exists(source):
            target = os.path.join(out, DAMAGED_DIR, str(step))
            if os.path.exists(target):
                shutil.rmtree(target)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(source, target)
