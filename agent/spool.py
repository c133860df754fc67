"""The durable spool: events are written here before they are sent, and deleted only once acked.

SQLite in WAL mode with synchronous=FULL, one file in the agent's state directory. Events get
their sequence number when appended; the shipper seals them into signed batches that are stored
too, so a batch sent again after a crash is byte for byte the one sent before and the collector
can recognise it. Theory of operation, per event::

    appended (events table, seq assigned) -> sealed (batches table, signed, chained)
        -> sent -> acked (deleted)

Only ``ack`` deletes, and only what the collector acknowledged for the current epoch.

The same file holds the snapshot of the sensitive folders (``agent.snapshot``): an appended
``Recorded`` applies its snapshot updates in the transaction that stores its event, so the
snapshot is never ahead of or behind the events that report it. ``begin_run``/``end_run`` mark a
run, so the next start can tell an unclean stop and when the last durable event was stored.

At its cap the spool refuses new events instead of dropping old ones. It counts exactly what it
refused (durably), and the first append that finds room again starts with a signed
``agent.spool_full`` event carrying that count and the time span of the refusals.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.batch import GENESIS_HASH, sign_batch
from shoumi.v1 import events_pb2

from agent.core.events import FileEvent
from agent.snapshot import Recorded, SnapshotEntry
from agent.wire import encode_event

__all__ = ["Spool", "SpoolStats", "PreviousRun", "DEFAULT_CAP_BYTES"]

DEFAULT_CAP_BYTES = 1 << 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (
    path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
"""


class PreviousRun:
    """How the run before this one ended: ``unclean`` (killed, crashed, power lost) and when the
    last event it stored durably was committed (0 if none)."""

    def __init__(self, unclean: bool, last_commit_ns: int) -> None:
        self.unclean = unclean
        self.last_commit_ns = last_commit_ns


class SpoolStats:
    """Depth of the spool: events waiting to be sealed, and sealed batches waiting for an Ack."""

    def __init__(self, unsealed: int, unacked_batches: int, unacked_events: int) -> None:
        self.unsealed = unsealed
        self.unacked_batches = unacked_batches
        self.unacked_events = unacked_events


class Spool:
    """The agent's durable outbox for one agent id."""

    def __init__(self, path: Path, *, agent_id: str, epoch: int = 1, cap_bytes: int = DEFAULT_CAP_BYTES) -> None:
        self.path = path
        self.agent_id = agent_id
        self.cap_bytes = cap_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        with self._tx():
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (epoch,))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('bytes', 0)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('refused', 0)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('refused_first_ns', 0)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('refused_last_ns', 0)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('next_seq', 1)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('sealed_seq', 0)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('last_hash', ?)", (GENESIS_HASH,))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('acked_seq', 0)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('running', 0)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('last_commit_ns', 0)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('snapshot_baseline', 0)")

    def _tx(self) -> "_Tx":
        return _Tx(self._db)

    def _meta(self, key: str) -> object:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0]

    # The counters are stored as SQLite integers and the chain head as a blob; these narrow what
    # sqlite3 hands back (untyped) to what the callers need.
    def _meta_int(self, key: str) -> int:
        value = self._meta(key)
        if not isinstance(value, (int, float, str, bytes)):
            raise TypeError(f"spool meta {key!r} is {type(value).__name__}, not an integer")
        return int(value)

    def _meta_bytes(self, key: str) -> bytes:
        value = self._meta(key)
        if not isinstance(value, bytes):
            raise TypeError(f"spool meta {key!r} is {type(value).__name__}, not bytes")
        return value

    def _set(self, key: str, value: object) -> None:
        self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))

    @property
    def epoch(self) -> int:
        """The current epoch; it changes only when the spool is reset."""
        with self._lock:
            return self._meta_int("epoch")

    def append(self, items: Sequence[FileEvent | Recorded]) -> int:
        """Stores events durably in order until the cap; returns how many were accepted.

        The rest are refused and counted; they are never made room for by dropping older events.
        A ``Recorded`` item's snapshot updates are applied in the same transaction, and only if
        its event was accepted (a refused event's change must be caught up again later).
        """
        if not items:
            return 0
        recorded = [i if isinstance(i, Recorded) else Recorded(i) for i in items]
        events = [r.event for r in recorded if r.event is not None]
        now = time.time_ns()
        with self._lock, self._tx():
            seq = self._meta_int("next_seq")
            used = self._meta_int("bytes")
            refused = self._meta_int("refused")
            notice = None
            if refused:
                notice = FileEvent(
                    kind="agent.spool_full", time_unix_ns=now,
                    attributes={"refused": refused, "cap_bytes": self.cap_bytes,
                                "first_refused_ns": self._meta_int("refused_first_ns"),
                                "last_refused_ns": self._meta_int("refused_last_ns")},
                )
            rows = []
            full = False
            pending = ([Recorded(notice)] if notice else []) + recorded
            for item in pending:
                if item.event is not None:
                    data = encode_event(item.event, seq).SerializeToString() if not full else b""
                    if full or used + len(data) > self.cap_bytes:
                        full = True  # refused in order: nothing after a refused event is stored
                        continue
                    rows.append((seq, data))
                    used += len(data)
                    seq += 1
                self._apply_snapshot(item)
            accepted = len(rows)
            if notice is not None and rows:
                accepted -= 1  # the notice went in first: that count is now reported
                refused = 0
            if accepted < len(events):
                if refused == 0:
                    self._set("refused_first_ns", now)
                refused += len(events) - accepted
                self._set("refused_last_ns", now)
            self._set("refused", refused)
            self._db.executemany("INSERT INTO events (seq, data) VALUES (?, ?)", rows)
            self._set("next_seq", seq)
            self._set("bytes", used)
            if rows:
                self._set("last_commit_ns", now)
        return accepted

    def _apply_snapshot(self, item: Recorded) -> None:
        if item.reset:
            self._db.execute("DELETE FROM snapshot")
            self._set("snapshot_baseline", 0)
        gone = [(os.fsencode(p),) for p, e in item.updates if e is None]
        kept = [(os.fsencode(p), e.size, e.mtime_ns, e.sha256) for p, e in item.updates if e is not None]
        # Paths are kept as bytes: an undecodable name (a lone surrogate) is stored exactly.
        if gone:
            self._db.executemany("DELETE FROM snapshot WHERE path = ?", gone)
        if kept:
            self._db.executemany("INSERT OR REPLACE INTO snapshot VALUES (?, ?, ?, ?)", kept)
        if item.baseline:
            self._set("snapshot_baseline", 1)

    def snapshot_baseline(self) -> bool:
        """Tells whether an earlier run recorded a complete snapshot of the sensitive folders."""
        with self._lock:
            return bool(self._meta_int("snapshot_baseline"))

    def load_snapshot(self) -> dict[str, SnapshotEntry]:
        """Returns the durable snapshot: what the stored events say each sensitive file is."""
        with self._lock:
            rows = self._db.execute("SELECT path, size, mtime_ns, sha256 FROM snapshot").fetchall()
        return {os.fsdecode(bytes(p)): SnapshotEntry(int(size), int(mtime), str(sha)) for p, size, mtime, sha in rows}

    def begin_run(self) -> PreviousRun:
        """Marks a run as started (durably) and says how the one before it ended."""
        with self._lock, self._tx():
            previous = PreviousRun(bool(self._meta_int("running")), self._meta_int("last_commit_ns"))
            self._set("running", 1)
        return previous

    def end_run(self) -> None:
        """Marks the run as stopped cleanly (after its agent.stop was stored)."""
        with self._lock, self._tx():
            self._set("running", 0)

    def seal(self, *, key: Ed25519PrivateKey, max_events: int) -> events_pb2.EventBatch | None:
        """Seals the oldest unsealed events into the next signed batch of the chain, or None."""
        with self._lock, self._tx():
            rows = self._db.execute(
                "SELECT seq, data FROM events ORDER BY seq LIMIT ?", (max_events,)
            ).fetchall()
            if not rows:
                return None
            batch = events_pb2.EventBatch(
                agent_id=self.agent_id,
                epoch=self._meta_int("epoch"),
                first_seq=rows[0][0],
                prev_batch_hash=self._meta_bytes("last_hash"),
                created_unix_ns=time.time_ns(),
            )
            for _, data in rows:
                batch.events.add().ParseFromString(data)
            digest = sign_batch(batch, key)
            last_seq = rows[-1][0]
            self._db.execute(
                "INSERT INTO batches (first_seq, last_seq, data) VALUES (?, ?, ?)",
                (batch.first_seq, last_seq, batch.SerializeToString()),
            )
            self._db.execute("DELETE FROM events WHERE seq <= ?", (last_seq,))
            sealed_bytes = len(batch.SerializeToString())
            unsealed_bytes = sum(len(data) for _, data in rows)
            self._set("bytes", self._meta_int("bytes") - unsealed_bytes + sealed_bytes)
            self._set("last_hash", digest)
            self._set("sealed_seq", last_seq)
        return batch

    def pending(self, *, after_seq: int = 0, limit: int = 1000) -> list[events_pb2.EventBatch]:
        """Returns sealed, unacknowledged batches that start after after_seq, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM batches WHERE first_seq > ? ORDER BY first_seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        out = []
        for (data,) in rows:
            batch = events_pb2.EventBatch()
            batch.ParseFromString(data)
            out.append(batch)
        return out

    def ack(self, *, epoch: int, acked_seq: int) -> int:
        """Deletes what the collector acknowledged; returns how many batches went."""
        with self._lock, self._tx():
            if epoch != self._meta_int("epoch"):
                return 0
            freed = self._db.execute(
                "SELECT coalesce(sum(length(data)), 0) FROM batches WHERE last_seq <= ?", (acked_seq,)
            ).fetchone()[0]
            cur = self._db.execute("DELETE FROM batches WHERE last_seq <= ?", (acked_seq,))
            self._set("bytes", max(0, self._meta_int("bytes") - int(freed)))
            if acked_seq > self._meta_int("acked_seq"):
                self._set("acked_seq", acked_seq)
            return cur.rowcount

    def unsealed_count(self) -> int:
        """Events appended and not yet sealed (from the counters, without counting rows)."""
        with self._lock:
            return self._meta_int("next_seq") - 1 - self._meta_int("sealed_seq")

    def stats(self) -> SpoolStats:
        """Counts what is waiting."""
        with self._lock:
            unsealed = self._db.execute("SELECT count(*) FROM events").fetchone()[0]
            b, lo, hi = self._db.execute(
                "SELECT count(*), min(first_seq), max(last_seq) FROM batches"
            ).fetchone()
        return SpoolStats(unsealed, b, 0 if not b else hi - lo + 1)

    def refused(self) -> int:
        """Events refused at the cap and not yet reported in an agent.spool_full event."""
        with self._lock:
            return self._meta_int("refused")

    def used_bytes(self) -> int:
        """Bytes of events and batches held, as counted against the cap."""
        with self._lock:
            return self._meta_int("bytes")

    def acked_seq(self) -> int:
        """The highest sequence number the collector has acknowledged in this epoch."""
        with self._lock:
            return self._meta_int("acked_seq")

    def close(self) -> None:
        """Closes the database."""
        with self._lock:
            self._db.close()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
