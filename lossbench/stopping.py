"""Stop a run at the next chunk boundary on SIGINT or SIGTERM (what SLURM sends before it
preempts a job), so the run can checkpoint and write status `interrupted`; a second SIGINT
interrupts at once."""

from __future__ import annotations

import signal
import threading

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal number


class StopOnSignals:
    """Context manager: `requested` is the signal that asked the run to stop, or None."""

    def __init__(self):
        self.requested: signal.Signals | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum)

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():  # handlers only live there
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
