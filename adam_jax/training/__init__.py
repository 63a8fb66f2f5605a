"""Training with adam_jax: the tasks, the loop and the run directory behind ``scripts/train.py``.

Installed with the ``[train]`` extra (Flax, orbax, matplotlib, scikit-learn, tqdm);
``import adam_jax`` never imports this package. Its modules, by role:

- ``tasks/``: the task registry (``tasks.TASKS``, ``tasks.get_task``); a task is its data,
  model, loss, evaluation and default flags, in one module (``tasks/seed.py``,
  ``tasks/digits.py``); ``tasks/base.py`` defines ``Task`` and ``Problem``.
- ``optimizers.py``: the ``--optimizer`` registry, built from adam_jax's public factories.
- ``loop.py``: ``TrainState``, the pure ``train_step`` and the ``lax.scan``-chunked jitted loop.
- ``checkpoint.py``: orbax checkpoints with a checksum each, and the fallback to the newest
  sound one.
- ``rundir.py``: the run directory: ownership (a lock), ``config.json`` with its history,
  whole-line ``metrics.jsonl``.
- ``metrics.py``: rows of metrics and ``summary.json``; ``plots.py``: ``loss.png``.
- ``cli.py``: ``main(argv)``, the entry point of ``scripts/train.py``: parse, configure, run.
- ``flags.py``: the flags (argparse); ``config.py``: ``RunConfig``, every setting of a run,
  frozen and checked, from the flags or from a run's ``config.json`` (``--resume``).
- ``run.py``: the run on the host: the loop of calls, metrics, checkpoints, the summary;
  ``pacing.py``: steps per call by wall time; ``interrupt.py``: Ctrl-C;
  ``quiet_stderr.py``: fd 2 silenced around orbax's checkpoint writes.
"""
