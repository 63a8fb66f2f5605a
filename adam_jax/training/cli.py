"""The command line of ``scripts/train.py``: ``main(argv)`` parses, configures and runs.

The flags are read by ``flags.py``, settled and checked into a frozen ``RunConfig`` by
``config.py`` (from the flags, or from ``DIR/config.json`` on ``--resume DIR``), and run by
``run.py``. A bad value is one line naming its flag and exit code 2, with nothing written.
"""

import sys

import jax

from adam_jax.training import config, flags, run
from adam_jax.training.tasks import ConfigError


def main(argv=None) -> int:
    """Runs the program; returns its exit code (2 for bad input, nothing written)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        given, resume_dir = flags.parse(argv)
        if resume_dir is None:
            run_config = config.resolve(given)
        else:
            run_config = config.resume(resume_dir, given)
        run.start_processes(run_config)
        dtypes = (
            run_config.dtype,
            run_config.param_dtype,
            run_config.mu_dtype,
            run_config.nu_dtype,
        )
        with jax.enable_x64("float64" in dtypes):
            return run.train(run_config, argv, resume=resume_dir is not None)
    except (flags.UsageError, ConfigError) as e:
        message = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"{flags.PROG}: error: {message}", file=sys.stderr)
        return run.EXIT_USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    except KeyboardInterrupt:  # Ctrl-C outside the loop (loading, compiling, summarizing)
        print(f"{flags.PROG}: interrupted", file=sys.stderr)
        return run.EXIT_INTERRUPTED
