"""Ctrl-C during a run: the first asks it to stop soon, the second ends the process at once."""

import signal
from collections.abc import Callable


class Interrupt:
    """A context manager that takes SIGINT while a run's loop runs.

    The first Ctrl-C sets ``requested`` (the loop stops after the steps in flight, saves a
    checkpoint and exits) and writes ``notice()`` (what will happen and how long it will
    take) with ``write``; it also restores the default handler, so a second Ctrl-C ends the
    process at once.

    Args:
      notice: the line to write on the first Ctrl-C, computed when it comes.
      write: writes a line (``tqdm.write``: on its own line, not glued to a progress bar).
    """

    def __init__(self, notice: Callable[[], str], write: Callable[[str], None]):
        self.requested = False
        self._notice = notice
        self._write = write
        self._previous = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.requested = True
        signal.signal(signum, signal.SIG_DFL)
        self._write(self._notice())

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)
