"""Between the sources and the spool: a bounded queue and one writer that commits in groups.

Sources call ``record`` from their own threads; when the queue is full they block (backpressure
into the kernel's queue, whose overflow the sources detect and report) rather than drop. A
``Recorded`` (an event with the snapshot changes it accounts for) is one queue item, so the spool
stores the two in one transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from agent.core.events import FileEvent
from agent.snapshot import Recorded
from agent.spool import Spool

__all__ = ["Recorder"]

log = logging.getLogger("shoumi.agent.recorder")
_STOP = object()


class Recorder:
    """Moves events from sources into the spool, many per transaction."""

    def __init__(self, spool: Spool, *, capacity: int = 100_000, group: int = 2000,
                 on_stored: Callable[[], None] = lambda: None) -> None:
        self.spool = spool
        self.group = group
        self.on_stored = on_stored
        self._queue: queue.Queue[object] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self.recorded = 0

    def start(self) -> None:
        """Starts the writer thread."""
        self._thread.start()

    def record(self, event: FileEvent | Recorded) -> None:
        """Queues an event (or one with its snapshot changes) for the spool; blocks while full."""
        self._queue.put(event)

    def stop(self) -> None:
        """Writes everything queued so far, then stops the writer."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        done = False
        while not done:
            item = self._queue.get()
            items = [item]
            while len(items) < self.group:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [i for i in items if isinstance(i, (FileEvent, Recorded))]
            done = any(i is _STOP for i in items)
            while events:
                try:
                    self.spool.append(events)
                except Exception:  # a full disk must not kill capture: keep these and retry
                    log.exception("spool append failed; retrying %d events", len(events))
                    time.sleep(1.0)
                    continue
                self.recorded += sum(1 for e in events if not isinstance(e, Recorded) or e.event is not None)
                self.on_stored()
                events = []
