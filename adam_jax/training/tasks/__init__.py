"""The task registry: ``--task`` names, shared by training, the epsilon sweep and the benchmarks.

A task lives in one module of this package that defines ``TASK``, a
:class:`~adam_jax.training.tasks.base.Task`; registering it is one line below.
"""

from adam_jax.training.tasks import digits, lm, seed
from adam_jax.training.tasks.base import ConfigError, Problem, Task

TASKS: dict[str, Task] = {task.name: task for task in (seed.TASK, digits.TASK, lm.TASK)}


def get_task(name: str) -> Task:
    """The registered task called ``name``.

    Raises:
      ConfigError: for an unknown name (naming ``--task`` and the choices).
    """
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError("--task", f"unknown task {name!r}; choose from {sorted(TASKS)}") from None


__all__ = ["TASKS", "ConfigError", "Problem", "Task", "get_task"]
