"""The run directory: who owns it, ``config.json`` and its history, whole-line ``metrics.jsonl``.

A run owns its directory for as long as it runs: a new ``--out`` is created
with one ``mkdir`` (which fails if another run created it first), and every
run, new, overwriting or resumed, holds an exclusive ``flock`` on
``DIR/.lock`` until it exits (the kernel drops it when the process dies, so a
killed run leaves no stale lock). JSON files are written to a temporary name
and renamed over the old one, so a reader sees the old or the new file, never
half of one; ``metrics.jsonl`` only ever holds whole lines.
"""

import datetime
import errno
import fcntl
import json
import os
import shutil

from adam_jax.training.tasks.base import ConfigError

LOCK_FILE = ".lock"
RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "loss.png",
    "checkpoints",
    "checkpoints-damaged",
)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


class RunDir:
    """A run directory held by this process: ``RunDir.claim`` it, ``release`` it at the end."""

    def __init__(self, path: str, lock_fd: int | None):  # None: a process that holds no lock
        self.path = path
        self._lock_fd = lock_fd

    @classmethod
    def claim(cls, path: str, *, flag: str, new: bool, overwrite: bool = False) -> "RunDir":
        """Takes ownership of ``path``.

        Args:
          path: the run directory.
          flag: the flag that named it (``--out`` or ``--resume``), for errors.
          new: create ``path``; it must not exist, unless ``overwrite``.
          overwrite: (with ``new``) an existing ``path`` is reused and the
            files a run writes (``RUN_FILES``) are removed from it, once the
            lock is held; other files stay.

        Raises:
          ConfigError: naming ``flag``: ``path`` exists (without
            ``overwrite``), cannot be created or locked, or another run holds it.
        """
        if new:
            try:
                parent = os.path.dirname(os.path.abspath(path))
                os.makedirs(parent, exist_ok=True)
                os.mkdir(path)
            except FileExistsError:
                if not overwrite:
                    raise ConfigError(
                        flag, f"{path} exists; pass --overwrite to replace its run"
                    ) from None
                if not os.path.isdir(path):
                    raise ConfigError(flag, f"{path} is a file, not a run directory") from None
            except OSError as e:
                raise ConfigError(flag, f"cannot create {path}: {_reason(e)}") from e
        try:
            fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(flag, f"cannot write in {path}: {_reason(e)}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ConfigError(flag, f"{path} is in use by another run") from None
            raise ConfigError(flag, f"cannot lock {path}: {_reason(e)}") from e
        run = cls(path, fd)
        if new and overwrite:
            for name in RUN_FILES:
                target = os.path.join(path, name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
        return run

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def release(self) -> None:
        """Drops the lock (also dropped when the process exits)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def write_json(path: str, obj) -> None:
    """Writes ``obj`` to ``path`` atomically (a temporary file renamed over it)."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_config(run: RunDir, args: dict, invocation: dict) -> None:
    """Writes ``config.json``: the run's flags and the history of its invocations.

    The first invocation's ``command`` and ``started`` stay at the top level;
    ``history`` lists every invocation (the first, then each ``--resume``),
    each with its ``command``, ``started``, ``start_step``, versions and device.
    """
    path = run.file("config.json")
    history = []
    if os.path.exists(path):
        with open(path) as f:
            history = json.load(f).get("history", [])
    history = [*history, invocation]
    first = history[0]
    config = {"args": args, "command": first["command"], "started": first["started"]}
    config |= {"versions": invocation["versions"], "device": invocation["device"]}
    write_json(path, config | {"history": history})


def read_config(path: str) -> dict:
    """``config.json``'s content; ``ConfigError`` (``--resume``) if unreadable."""
    try:
        with open(path) as f:
            config = json.load(f)
        if not isinstance(config, dict) or not isinstance(config.get("args"), dict):
            raise ValueError("no 'args' object")
    except (OSError, ValueError) as e:
        raise ConfigError("--resume", f"cannot read {path}: {e}") from e
    return config


class MetricsFile:
    """``metrics.jsonl``: one JSON object per line, appended a chunk at a time, whole lines only.

    A chunk's lines go out in one write; if it fails (disk full), the file is
    cut back to its length before the chunk, so it never ends in a partial line.
    """

    def __init__(self, path: str, rows: list):
        """Replaces ``path`` by ``rows`` (atomically: a temporary file renamed over it)."""
        self.path = path
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(_lines(rows))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size

    def append(self, rows: list) -> None:
        data = _lines(rows).encode()
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except BaseException:
            os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

    def close(self) -> None:
        os.close(self._fd)


def _lines(rows: list) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)
