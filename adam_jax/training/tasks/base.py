"""The types every task shares: ``Task`` (what the registry holds) and ``Problem``.

A task module builds a ``Problem`` from the run's configuration; the loop, the
epsilon sweep and the benchmarks only ever see ``Problem``, so a new task is one
module plus one line in ``tasks/__init__.py``.
"""

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple


class ConfigError(ValueError):
    """A flag's value rejected by the code that owns it; ``flag`` names it.

    ``str(error)`` reads ``argument --flag: message``, argparse's own form, so
    the command line prints it as it is.
    """

    def __init__(self, flag: str, message: str):
        super().__init__(f"argument {flag}: {message}")
        self.flag = flag


def available_memory() -> int:
    """Bytes of memory free for a new allocation (Linux's MemAvailable, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(flag: str, nbytes: int, what: str) -> None:
    """Raises ``ConfigError`` naming ``flag`` when ``what`` needs more than the free memory."""
    free = available_memory()
    if nbytes > free:
        raise ConfigError(
            flag, f"{what} needs {nbytes / 2**30:.3g} GiB; {free / 2**30:.3g} GiB are free"
        )


class Problem(NamedTuple):
    """A task made concrete: model, data, and how to batch and score them.

    ``loss`` and ``test_metrics`` receive the model's predictions already cast
    to the loss dtype (``config.dtype``).
    """

    graphdef: Any  # the model's structure; nnx.merge(graphdef, params) is the model
    params: Any  # nnx.State of the initial params
    train: dict  # arrays "x", "y" the steps draw batches from
    test: dict | None  # held-out "x", "y", or None
    loss: Callable  # (pred, y) -> (loss scalar, aux dict)
    batch: Callable  # (train, data_key, step) -> (x, y) of that step, pure and jittable
    steps_per_epoch: int | None  # steps per pass over train; None: no epochs (full batch)
    # (pred, y) -> dict of scalars on the held-out set (logged as test_<name>), or None
    test_metrics: Callable | None = None
    # (optimizer, opt_state) the run continues with (a PyTorch checkpoint's), or None: a
    # fresh optimizer of the flags
    start: tuple | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """A registered task.

    Attributes:
      name: the ``--task`` value.
      defaults: the task's values of the flags left unset on the command line
        (``steps``, ``lr``, ``optimizer``, ``batch_size``, ``log_every``, ...).
      make_problem: ``(config, dtypes) -> Problem``. ``config`` (a
        :class:`~adam_jax.training.config.RunConfig`, or any object with these attributes)
        has at least ``rng_seed``, ``batch_size``, ``dtype`` (the loss dtype's name), ``init``
        and ``init_from``; ``dtypes`` is ``{"param_dtype": ..., "dtype": ...}``, the params'
        storage and compute dtypes. Raises ``ConfigError`` naming the flag a value it cannot
        use comes from.
      summary: one line for ``--help`` and the docs.
      read_init_from: ``(path, settings) -> dict``, for tasks that start from a file: checks
        the file and returns the settings it fixes (the batch size, the dtype, ...), applied
        before defaults are filled in; ``settings`` are the run's so far (``None`` where unset),
        which the file may not contradict (``ConfigError`` naming the flag). ``None``: the task
        takes no ``--init-from``.
    """

    name: str
    defaults: Mapping[str, Any]
    make_problem: Callable[[Any, dict], Problem]
    summary: str = ""
    read_init_from: Callable[[str, Mapping[str, Any]], dict[str, Any]] | None = None
