"""Background jobs of the serve process: each runs on its own timer and survives its own errors."""

from __future__ import annotations

import logging
import threading
from typing import Callable

__all__ = ["Periodic"]

log = logging.getLogger("shoumi.collector.periodic")


class Periodic:
    """A set of named jobs, each called every so many seconds until stopped."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._jobs: list[tuple[str, float, Callable[[], object]]] = []

    def every(self, seconds: float, name: str, job: Callable[[], object]) -> None:
        """Adds a job; it first runs one interval after start()."""
        self._jobs.append((name, seconds, job))

    def start(self) -> None:
        """Starts every job's timer."""
        for name, seconds, job in self._jobs:
            thread = threading.Thread(target=self._loop, args=(name, seconds, job), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stops the timers and waits for running jobs to finish."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _loop(self, name: str, seconds: float, job: Callable[[], object]) -> None:
        while not self._stop.wait(seconds):
            try:
                job()
            except Exception:  # a failing job must not stop the others or the server
                log.exception("background job %s failed", name)
