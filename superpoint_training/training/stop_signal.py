"""Ctrl+C and SIGTERM during training: the first asks the loop to save and stop, a second Ctrl+C aborts."""

from __future__ import annotations

import signal
import sys
import threading


class StopSignal:
    """Turns the first SIGINT/SIGTERM into a flag; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None  # the signal that asked to stop
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: saving a checkpoint and stopping (Ctrl+C again to abort)",
            file=sys.stderr,
        )

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
