"""The portable source: watchdog (inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on
Windows) on the sensitive folders.

inotify names no process and no user, so events from this source are attributed to the user of
the workstation's session and say so in ``attributes.attribution``. Reads are seen on Linux only
(IN_OPEN + IN_CLOSE_NOWRITE). A close-after-write is passed on without a hash: the content worker
reads the file once, for its fingerprint and hash together, so each write costs one read by the
agent. That read is not reported: before it the worker notes the path (``own_read``), and the
open/close pair that follows is consumed.
When fanotify reports reads and writes with their process, ``report_access=False`` leaves this
source only creates, moves and deletes, so nothing is reported twice. Folders can be added and
removed while it runs (removable media come and go).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from agent.core.events import FileEvent

__all__ = ["Attribution", "WatchdogSource"]

log = logging.getLogger("shoumi.agent.watchdog")


class Attribution:
    """Who file operations seen without a pid are attributed to."""

    def __init__(self, user: str, uid: int) -> None:
        self.user = user
        self.uid = uid


class _Handler(FileSystemEventHandler):
    def __init__(self, source: "WatchdogSource") -> None:
        self.source = source

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self.source.handle(event)
        except Exception:  # one odd file must never stop the observer thread
            self.source.counters["handler_errors"] += 1
            log.exception("could not handle %r", event)


class WatchdogSource:
    """Watches folders recursively and emits domain events to a sink."""

    def __init__(
        self,
        folders: Sequence[Path],
        sink: Callable[[FileEvent], None],
        attribution: Attribution,
        *,
        max_hash_bytes: int = 256 * 1024 * 1024,
        report_access: bool = True,
        on_new_directory: Callable[[str], None] | None = None,
    ) -> None:
        self.on_new_directory = on_new_directory
        self.folders = [Path(f) for f in folders]
        self.sink = sink
        self.attribution = attribution
        self.max_hash_bytes = max_hash_bytes
        self.report_access = report_access
        self.counters: Counter[str] = Counter()
        self._own_reads: Counter[str] = Counter()
        self._own_lock = threading.Lock()
        self._observer = Observer()
        self._handler = _Handler(self)
        self._watches: dict[str, ObservedWatch] = {}
        # Without reads and close-writes the kernel need not queue IN_OPEN/IN_CLOSE at all.
        self._filter = None if report_access else [
            FileCreatedEvent, FileDeletedEvent, FileMovedEvent, DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
        ]

    def start(self) -> None:
        """Starts watching every folder (each must exist)."""
        for folder in self.folders:
            if not folder.is_dir():
                raise FileNotFoundError(f"watched folder {folder} does not exist or is not a directory")
            self._watches[str(folder)] = self._observer.schedule(
                self._handler, str(folder), recursive=True, event_filter=self._filter)
        self._observer.start()

    def add_folder(self, folder: Path) -> None:
        """Starts watching one more folder recursively while running."""
        if str(folder) not in self._watches:
            self._watches[str(folder)] = self._observer.schedule(
                self._handler, str(folder), recursive=True, event_filter=self._filter)

    def remove_folder(self, folder: Path) -> None:
        """Stops watching a folder added before (its medium was unmounted)."""
        watch = self._watches.pop(str(folder), None)
        if watch is not None:
            try:
                self._observer.unschedule(watch)
            except KeyError:
                pass  # watchdog already dropped it: the folder vanished

    @contextmanager
    def own_read(self, path: str) -> Iterator[None]:
        """Marks the open/close the agent is about to cause on ``path`` as its own, not a user's."""
        with self._own_lock:
            self._own_reads[path] += 1
        try:
            yield
        except BaseException:
            with self._own_lock:
                self._own_reads[path] -= 1
                if self._own_reads[path] <= 0:
                    del self._own_reads[path]
            raise

    def stop(self) -> None:
        """Stops watching and waits for the observer thread."""
        self._observer.stop()
        self._observer.join(timeout=10)

    def _event(self, kind: str, path: str, **fields: object) -> FileEvent:
        return FileEvent(
            kind=kind,
            time_unix_ns=time.time_ns(),
            path=path,
            user=self.attribution.user,
            uid=self.attribution.uid,
            attributes={"attribution": "session_user", "source": "inotify"},
            **fields,  # type: ignore[arg-type]
        )

    def _consume_own(self, path: str, closing: bool) -> bool:
        with self._own_lock:
            if self._own_reads[path] <= 0:
                return False
            if closing:
                self._own_reads[path] -= 1
                if self._own_reads[path] <= 0:
                    del self._own_reads[path]
            return True

    def handle(self, event: FileSystemEvent) -> None:
        """Turns one watchdog event into zero or one domain event."""
        if event.is_directory:
            if self.on_new_directory is not None and isinstance(event, (DirCreatedEvent, DirMovedEvent)):
                target = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
                self.on_new_directory(os.fsdecode(target))
            return
        path = os.fsdecode(event.src_path)
        if not self.report_access and isinstance(event, (FileOpenedEvent, FileClosedEvent, FileClosedNoWriteEvent)):
            return  # fanotify reports these, with the process
        if isinstance(event, FileOpenedEvent):
            return  # a read is reported when it ends (IN_CLOSE_NOWRITE)
        if isinstance(event, FileClosedNoWriteEvent):
            if self._consume_own(path, closing=True):
                return
            self.sink(self._event("file.read", path, size=_size(path)))
        elif isinstance(event, FileClosedEvent):
            self.sink(self._event("file.write", path, size=_size(path)))
        elif isinstance(event, FileCreatedEvent):
            self.sink(self._event("file.create", path))
        elif isinstance(event, FileMovedEvent):
            dest = os.fsdecode(event.dest_path)
            self.sink(self._event("file.move", path, dest_path=dest, size=_size(dest)))
        elif isinstance(event, FileDeletedEvent):
            self.sink(self._event("file.delete", path))


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1
