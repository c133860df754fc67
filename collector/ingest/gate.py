"""One writer at a time on an embedded (SQLite) store, handed from process to process at once.

SQLite lets one transaction write at a time; a writer that finds the lock taken polls for it with
sleeps that grow to 100 ms (its busy handler), so after the detection worker's write the ingest
committer often slept on for tens of milliseconds while nobody wrote. Both take this gate (an
exclusive ``flock`` on a file beside the database) around their write transactions: the waiter wakes
the moment the holder lets go. It is fair: a writer queues at a turnstile (a second ``flock``) before
the gate, so a committer that lets go and comes straight back finds the waiting worker ahead of it;
detection gets its turns and its lag stays bounded while ingest runs flat out. PostgreSQL needs none
(row locks): the gate is then a no-op.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["WriteGate", "GATE_FILE"]

GATE_FILE = "collector.db.writer"


class WriteGate:
    """An exclusive lock across processes (and threads) for write transactions; None path: no-op."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._turn: int | None = None
        self._threads = threading.Lock()  # flock is per open file: threads of one process queue here

    @classmethod
    def for_store(cls, data_dir: Path, database_url: str | None) -> "WriteGate":
        """The gate of the SQLite store under ``data_dir``; a no-op gate for a database server."""
        return cls(None if database_url else Path(data_dir) / GATE_FILE)

    def _open(self) -> tuple[int, int]:
        if self._fd is None or self._turn is None:
            assert self.path is not None
            self._turn = os.open(self.path.with_name(self.path.name + ".turn"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC,
                                 0o600)
            self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        return self._turn, self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        """Holds the gate for the block."""
        if self.path is None:
            yield
            return
        with self._threads:
            try:
                turn, fd = self._open()
            except OSError:  # no gate (read-only directory?): SQLite's own lock still serializes writers
                yield
                return
            fcntl.flock(turn, fcntl.LOCK_EX)  # in the queue: whoever waits at the gate already goes first
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
