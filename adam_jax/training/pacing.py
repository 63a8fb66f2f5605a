"""How many steps each call of the compiled chunk runs: about half a second of work.

The chunk is compiled once, as a ``lax.scan`` of ``--log-every`` steps of which a traced
count runs (``loop.make_run_chunk``), so any count gives the same bits: pacing changes when
the host looks (progress bar, Ctrl-C), never what is computed.
"""

import time

TARGET_S = 0.5  # seconds of steps per call: how long Ctrl-C and the progress bar wait at most


class Pacer:
    """Steps per call from the last call's speed: one step first (the progress bar moves
    within a step of the start), then as many as take about ``target_s``.

    Args:
      target_s: the wall time a call aims at, > 0.
      adaptive: ``False`` runs every call to the next boundary (``room``): a multi-process
        run, whose processes must all run the same steps per call.
    """

    def __init__(self, target_s: float = TARGET_S, *, adaptive: bool = True):
        if not target_s > 0:
            raise ValueError(f"target_s must be > 0, got {target_s!r}")
        self.target_s = target_s
        self.adaptive = adaptive
        self.seconds_per_step: float | None = None
        self._call: tuple[int, float] | None = None  # (steps, start) of the call in flight

    def steps(self, room: int) -> int:
        """Steps of the next call, at most ``room`` (to the next boundary), at least 1."""
        if not self.adaptive:
            return room
        if self.seconds_per_step is None:
            return 1
        return max(1, min(room, int(self.target_s / self.seconds_per_step)))

    def start(self, steps: int) -> None:
        """A call of ``steps`` steps starts now."""
        self._call = (steps, time.perf_counter())

    def finish(self) -> None:
        """The call started last has finished: its speed paces the next one."""
        if self._call is not None:
            steps, started = self._call
            self.seconds_per_step = (time.perf_counter() - started) / steps
            self._call = None

    def seconds_left(self) -> float | None:
        """Estimated seconds until the call in flight finishes (``None``: no call in flight,
        or no speed measured yet)."""
        if self._call is None or self.seconds_per_step is None:
            return None
        steps, started = self._call
        return max(0.0, started + steps * self.seconds_per_step - time.perf_counter())
