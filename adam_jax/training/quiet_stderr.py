"""Silencing fd 2 around orbax's checkpoint writes, and the real stderr behind it.

A checkpoint write that fails (a full disk) cuts off orbax's writer threads, which print
asyncio "Event loop is closed" tracebacks before and after the error reaches the program;
the program reports the failure itself, in one line (:func:`real_stderr`), and stops.
"""

import contextlib
import os
import sys

_saved_fd: int | None = None  # fd 2 as it was, while ``discarded`` holds it


@contextlib.contextmanager
def discarded():
    """Discards what is written to stderr (fd 2) inside; restores it unless that raised
    ``OSError`` (a failed write: fd 2 stays silenced, orbax's threads go on until the exit)."""
    global _saved_fd
    sys.stderr.flush()
    _saved_fd = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    except OSError:
        raise
    except BaseException:
        _restore()
        raise
    _restore()


def _restore() -> None:
    global _saved_fd
    if _saved_fd is not None:
        sys.stderr.flush()
        os.dup2(_saved_fd, 2)
        os.close(_saved_fd)
        _saved_fd = None


def real_stderr():
    """A stream to the real stderr, also after a failed ``discarded`` block."""
    if _saved_fd is None:
        return sys.stderr
    return os.fdopen(os.dup(_saved_fd), "w")
