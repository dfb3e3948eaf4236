"""A server's background task: run every so many seconds on its own thread, from start to stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Periodic"]

log = logging.getLogger(__name__)


class Periodic:
    """Calls `task()` every `every_s` seconds (the first after `every_s`) on a daemon thread; `stopping` is set when
    the server stops, for a long task to end early. An exception is logged and `on_error` called; the next round
    runs as planned (a server's background task must not end on one bad round)."""

    def __init__(self, name: str, every_s: float, task: Callable[[], object],
                 on_error: Callable[[], None] = lambda: None) -> None:
        self.name, self.every_s, self.task, self.on_error = name, every_s, task, on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.task()
            except Exception:  # noqa: BLE001 - logged with its traceback; the server goes on
                self.on_error()
                log.exception("background task %s failed", self.name)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the round under way, if any, waiting up to `timeout_s` for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
