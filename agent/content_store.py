"""The content worker's working state on disk: snapshot entries, inodes, scans, and the index.

``ContentWatch`` keeps, per sensitive file, its last seen entry (size, mtime, sha256), which
inode it is, and its fingerprint; at 100,000 files that was ~215 MB of Python dicts. Here the
same state lives in SQLite tables (``open_index_db``: no journal, no fsync, a
bounded page cache), in the agent's state directory, so the agent's memory no longer grows with
the sensitive folders. One thread uses it (the content worker); writes collect in one open
transaction that the worker ends when idle or every ``COMMIT_EVERY`` changes.

Crash consistency is not this store's business: it is a cache of what the files are now, emptied
at every start (``reset``) and rebuilt by the start scan. The record of what was *reported* is the
spool's snapshot, changed only in the transactions of the events that report it
(``agent.snapshot``); the start scan compares the files with that, as before.

Paths are stored as ``os.fsencode`` bytes, as the spool stores them, so the two can be joined.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

from agent.core.fingerprint import FileFingerprint
from agent.core.index import _ANCHORED, _CHUNK, _HEAD, _Matcher, _record, _weights
from agent.snapshot import Change, SnapshotEntry

__all__ = ["COMMIT_EVERY", "ContentStore", "StoredFingerprintIndex", "open_index_db"]

COMMIT_EVERY = 2_000  # changes per transaction at most (dirty pages beyond the cache spill anyway)
_FETCH = 1_000
_MASK = (1 << 64) - 1


def _signed(fp: int) -> int:
    """A 64-bit fingerprint as SQLite's signed INTEGER (and back: ``& _MASK``)."""
    return fp - (1 << 64) if fp >= 1 << 63 else fp


_IN_MAX = 500  # values per IN (...) list: well under SQLite's 32,766 host parameters

_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS fp_source (id INTEGER PRIMARY KEY, path BLOB NOT NULL UNIQUE, rec BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS fp_chunk (fp INTEGER NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (fp, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fp_anchor (fp INTEGER NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (fp, id)) WITHOUT ROWID;
"""


def open_index_db(path: str | os.PathLike[str] = "", *, cache_kib: int = 2048) -> sqlite3.Connection:
    """A connection for a ``StoredFingerprintIndex`` (and its owner's tables): a cache, not a
    record, so no journal and no fsync, and ``cache_kib`` of pages in memory at most. ``""`` is a
    private temporary database that SQLite removes on close."""
    db = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA main.locking_mode=EXCLUSIVE")  # main only: never a database attached
    db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
    db.execute("PRAGMA temp_store=FILE")
    return db


class StoredFingerprintIndex(_Matcher):
    """The ``FingerprintIndex`` kept in SQLite tables instead of dicts: the same answers, with
    memory bounded by SQLite's page cache however many sources (100,000 office files are ~40 MB
    on disk and ~2 MB of pages in memory). The caller's transaction: writes go into one open
    transaction until ``commit()`` (the owner commits when idle; nothing here must survive a
    crash, the owner rebuilds it at start). One thread at a time (the content worker)."""

    def __init__(self, db: sqlite3.Connection | None = None, *, min_share: float = 0.5) -> None:
        if not 0.0 <= min_share <= 1.0:
            raise ValueError("min_share must be within 0..1")
        self.min_share = min_share
        self.db = db if db is not None else open_index_db()
        self.db.executescript(_INDEX_SCHEMA)
        self._count = int(self.db.execute("SELECT count(*) FROM fp_source").fetchone()[0])
        self._writes = 0

    def _begin(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
        self._writes += 1

    def commit(self) -> None:
        """Ends the open transaction (pages written to the file, none kept dirty in memory)."""
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        self._writes = 0

    @property
    def writes(self) -> int:
        """Changes since the last ``commit()``."""
        return self._writes

    def __len__(self) -> int:
        return self._count

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        return self.db.execute("SELECT 1 FROM fp_source WHERE path = ?", (os.fsencode(path),)).fetchone() is not None

    def paths(self) -> list[str]:
        """Returns the indexed source paths, sorted."""
        return sorted(os.fsdecode(p) for (p,) in self.db.execute("SELECT path FROM fp_source"))

    def chunk_count(self) -> int:
        """Returns how many distinct chunk fingerprints the index holds."""
        return int(self.db.execute("SELECT count(DISTINCT fp) FROM fp_chunk").fetchone()[0])

    def add(self, path: str, fingerprint: FileFingerprint, *, anchor: int | None = None) -> None:
        """Indexes a source file, replacing what was known of ``path``; empty files are ignored."""
        self.remove(path)
        if fingerprint.size == 0:
            return
        self._begin()
        weights = _weights(fingerprint)
        cur = self.db.execute("INSERT INTO fp_source (path, rec) VALUES (?, ?)",
                              (os.fsencode(path), _record(fingerprint, weights, anchor)))
        sid = cur.lastrowid
        self.db.executemany("INSERT OR IGNORE INTO fp_chunk VALUES (?, ?)", [(_signed(fp), sid) for fp in weights])
        if anchor is not None:
            self.db.execute("INSERT OR IGNORE INTO fp_anchor VALUES (?, ?)", (_signed(anchor), sid))
        self._count += 1

    update = add

    def remove(self, path: str) -> bool:
        """Forgets a source file; returns whether it was indexed."""
        row = self.db.execute("SELECT id, rec FROM fp_source WHERE path = ?", (os.fsencode(path),)).fetchone()
        if row is None:
            return False
        self._begin()
        sid, record = int(row[0]), bytes(row[1])
        self.db.executemany("DELETE FROM fp_chunk WHERE fp = ? AND id = ?",
                            [(_signed(fp), sid) for fp, _w in _CHUNK.iter_unpack(memoryview(record)[_HEAD.size:])])
        _sha, _size, flags, anchor = _HEAD.unpack_from(record)
        if flags & _ANCHORED:
            self.db.execute("DELETE FROM fp_anchor WHERE fp = ? AND id = ?", (_signed(anchor), sid))
        self.db.execute("DELETE FROM fp_source WHERE id = ?", (sid,))
        self._count -= 1
        return True

    def anchored(self, anchor: int) -> list[str]:
        """The small sources whose first fine chunk has this fingerprint."""
        rows = self.db.execute("SELECT s.path FROM fp_anchor a JOIN fp_source s ON s.id = a.id WHERE a.fp = ?",
                               (_signed(anchor),))
        return sorted(os.fsdecode(p) for (p,) in rows)

    def source_size(self, path: str) -> int:
        """Bytes fingerprinted of an indexed source (-1 if it is not indexed)."""
        row = self.db.execute("SELECT rec FROM fp_source WHERE path = ?", (os.fsencode(path),)).fetchone()
        return -1 if row is None else int(_HEAD.unpack_from(bytes(row[0]))[1])

    def _sources(self, own: dict[int, int]) -> Iterable[tuple[str | None, bytes, list[int]]]:
        keys = list(own)
        found: dict[int, list[int]] = {}
        for i in range(0, len(keys), _IN_MAX):
            part = [_signed(k) for k in keys[i:i + _IN_MAX]]
            marks = ",".join("?" * len(part))
            for fp, sid in self.db.execute(f"SELECT fp, id FROM fp_chunk WHERE fp IN ({marks})", part):
                found.setdefault(int(sid), []).append(int(fp) & _MASK)
        sids = list(found)
        sources: list[tuple[str | None, bytes, list[int]]] = []
        for i in range(0, len(sids), _IN_MAX):
            part = sids[i:i + _IN_MAX]
            marks = ",".join("?" * len(part))
            for sid, path, record in self.db.execute(f"SELECT id, path, rec FROM fp_source WHERE id IN ({marks})", part):
                sources.append((os.fsdecode(bytes(path)), bytes(record), found[int(sid)]))
        return sources


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entry (path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                                  sha256 TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inode_of (path BLOB PRIMARY KEY, dev INTEGER NOT NULL, ino INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS by_inode (dev INTEGER NOT NULL, ino INTEGER NOT NULL, path BLOB NOT NULL,
                                     PRIMARY KEY (dev, ino)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_seen (path BLOB PRIMARY KEY, dev INTEGER NOT NULL, ino INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_before (path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                                        sha256 TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_after (path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                                       sha256 TEXT NOT NULL) WITHOUT ROWID;
"""
_TABLES = ("entry", "inode_of", "by_inode", "scan_seen", "scan_before", "scan_after",
           "fp_source", "fp_chunk", "fp_anchor")

# Two entries describe the same content: by hash when both have one, else by size and mtime
# (agent.snapshot.same_content).
_SAME = ("(CASE WHEN b.sha256 != '' AND a.sha256 != '' THEN b.sha256 = a.sha256 "
         "ELSE b.size = a.size AND b.mtime_ns = a.mtime_ns END)")


def _split(key: int) -> tuple[int, int]:
    """(device, inode) as two signed 64-bit integers, from content_watch's one-int key."""
    dev, ino = key >> 64, key & _MASK
    return dev, ino - (1 << 64) if ino >= 1 << 63 else ino


def _join(dev: int, ino: int) -> int:
    return dev << 64 | (ino & _MASK)


def _entry(row: tuple[Any, ...]) -> SnapshotEntry:
    return SnapshotEntry(int(row[0]), int(row[1]), str(row[2]))


class ContentStore:
    """Entries, inodes, the last scan and the fingerprint index of the sensitive folders."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, min_share: float = 0.5,
                 cache_kib: int = 2048) -> None:
        """``path``: the database file (emptied now: a cache rebuilt by the start scan); None keeps
        it in a private temporary file that SQLite removes on close."""
        if path is not None:
            for suffix in ("", "-journal", "-wal", "-shm"):
                try:
                    os.unlink(os.fspath(path) + suffix)
                except FileNotFoundError:
                    pass
        self.db = open_index_db("" if path is None else path, cache_kib=cache_kib)
        self.db.executescript(_SCHEMA)
        self.index = StoredFingerprintIndex(self.db, min_share=min_share)
        self.lock = threading.RLock()  # the worker, and readers such as tests or heartbeats
        self._seen_active = False

    def close(self) -> None:
        """Closes the database (a file given is left for the next start to empty)."""
        with self.lock:
            self.index.commit()
            self.db.close()

    # -- transactions -------------------------------------------------------------------------

    def _write(self, sql: str, args: tuple[object, ...] | list[object]) -> None:
        self.index._begin()
        self.db.execute(sql, args)

    def maybe_commit(self, *, idle: bool) -> None:
        """Ends the open transaction when the worker is idle or it holds many changes."""
        if self.index.writes and (idle or self.index.writes >= COMMIT_EVERY):
            with self.lock:
                self.index.commit()

    # -- entries ------------------------------------------------------------------------------

    def entry(self, path: str) -> SnapshotEntry | None:
        """The entry last seen for ``path``."""
        with self.lock:
            row = self.db.execute("SELECT size, mtime_ns, sha256 FROM entry WHERE path = ?",
                                  (os.fsencode(path),)).fetchone()
        return None if row is None else _entry(row)

    def set_entry(self, path: str, entry: SnapshotEntry | None) -> None:
        """Sets (or with None, removes) the entry of ``path``."""
        with self.lock:
            if entry is None:
                self._write("DELETE FROM entry WHERE path = ?", (os.fsencode(path),))
            else:
                self._write("INSERT OR REPLACE INTO entry VALUES (?, ?, ?, ?)",
                            (os.fsencode(path), entry.size, entry.mtime_ns, entry.sha256))

    def entry_count(self) -> int:
        """How many entries are known."""
        with self.lock:
            return int(self.db.execute("SELECT count(*) FROM entry").fetchone()[0])

    # -- inodes -------------------------------------------------------------------------------

    def note_inode(self, path: str, key: int) -> None:
        """``path`` is inode ``key`` (content_watch's ``_inode``); forgets its old inode's link."""
        raw = os.fsencode(path)
        dev, ino = _split(key)
        with self.lock:
            old = self.db.execute("SELECT dev, ino FROM inode_of WHERE path = ?", (raw,)).fetchone()
            if old is not None and (old[0], old[1]) != (dev, ino):
                self._write("DELETE FROM by_inode WHERE dev = ? AND ino = ? AND path = ?", (old[0], old[1], raw))
            elif old is not None and self.path_of_inode(key) == path:
                return  # already so: nothing to write (the start scan's unchanged files)
            self._write("INSERT OR REPLACE INTO inode_of VALUES (?, ?, ?)", (raw, dev, ino))
            self._write("INSERT OR REPLACE INTO by_inode VALUES (?, ?, ?)", (dev, ino, raw))

    def forget_inode(self, path: str) -> int | None:
        """Forgets which inode ``path`` is; returns the key when that inode was still ``path``'s."""
        raw = os.fsencode(path)
        with self.lock:
            old = self.db.execute("SELECT dev, ino FROM inode_of WHERE path = ?", (raw,)).fetchone()
            if old is None:
                return None
            self._write("DELETE FROM inode_of WHERE path = ?", (raw,))
            held = self.db.execute("SELECT path FROM by_inode WHERE dev = ? AND ino = ?", (old[0], old[1])).fetchone()
            if held is None or bytes(held[0]) != raw:
                return None
            self._write("DELETE FROM by_inode WHERE dev = ? AND ino = ?", (old[0], old[1]))
            return _join(int(old[0]), int(old[1]))

    def path_of_inode(self, key: int) -> str | None:
        """The sensitive file that inode ``key`` last was."""
        with self.lock:
            row = self.db.execute("SELECT path FROM by_inode WHERE dev = ? AND ino = ?", _split(key)).fetchone()
        return None if row is None else os.fsdecode(bytes(row[0]))

    def inode_of(self, path: str) -> int | None:
        """The inode key noted for ``path``."""
        with self.lock:
            row = self.db.execute("SELECT dev, ino FROM inode_of WHERE path = ?", (os.fsencode(path),)).fetchone()
        return None if row is None else _join(int(row[0]), int(row[1]))

    # -- what the last full scan found (path -> inode), checked by live creates ---------------------

    @property
    def scan_seen_active(self) -> bool:
        """True while the last scan's findings are kept."""
        return self._seen_active

    def pop_scan_seen(self, path: str) -> int | None:
        """The inode the last scan found at ``path`` (once: it is forgotten)."""
        if not self._seen_active:
            return None
        raw = os.fsencode(path)
        with self.lock:
            row = self.db.execute("SELECT dev, ino FROM scan_seen WHERE path = ?", (raw,)).fetchone()
            if row is None:
                return None
            self._write("DELETE FROM scan_seen WHERE path = ?", (raw,))
        return _join(int(row[0]), int(row[1]))

    def clear_scan_seen(self) -> None:
        """Forgets what the last scan found."""
        with self.lock:
            self._write("DELETE FROM scan_seen", ())
            self._seen_active = False

    # -- a full scan: before (what was reported), after (what the folders hold) -----------------

    def begin_scan(self, before: Iterable[tuple[str, SnapshotEntry]] = (), *, spool: Path | None = None,
                   from_entries: bool = False) -> None:
        """Starts a scan against ``before``: rows given, the ``snapshot`` table of the spool file
        ``spool`` (read there, never loaded into memory), or the current entries (a rescan)."""
        with self.lock:
            self._write("DELETE FROM scan_before", ())
            self.db.execute("DELETE FROM scan_after")
            if from_entries:
                self.db.execute("INSERT INTO scan_before SELECT * FROM entry")
            if spool is not None:
                self.index.commit()  # ATTACH is not allowed inside a transaction
                self.db.execute("ATTACH DATABASE ? AS spool", (os.fspath(spool),))  # only read
                try:
                    self.db.execute("BEGIN")
                    self.db.execute("INSERT OR REPLACE INTO scan_before "
                                    "SELECT path, size, mtime_ns, sha256 FROM spool.snapshot")
                    self.db.execute("COMMIT")
                finally:
                    self.db.execute("DETACH DATABASE spool")
            self.db.executemany("INSERT OR REPLACE INTO scan_before VALUES (?, ?, ?, ?)",
                                ((os.fsencode(p), e.size, e.mtime_ns, e.sha256) for p, e in before))

    def before(self, path: str) -> SnapshotEntry | None:
        """The entry ``before`` holds for ``path``."""
        with self.lock:
            row = self.db.execute("SELECT size, mtime_ns, sha256 FROM scan_before WHERE path = ?",
                                  (os.fsencode(path),)).fetchone()
        return None if row is None else _entry(row)

    def found(self, path: str, entry: SnapshotEntry) -> None:
        """The scan found ``path`` as ``entry``."""
        with self.lock:
            self._write("INSERT OR REPLACE INTO scan_after VALUES (?, ?, ?, ?)",
                        (os.fsencode(path), entry.size, entry.mtime_ns, entry.sha256))

    def stale_sources(self) -> list[str]:
        """Indexed paths the scan did not find (a few: removed while nobody watched)."""
        with self.lock:
            rows = self.db.execute("SELECT path FROM fp_source WHERE path NOT IN (SELECT path FROM scan_after)")
            return [os.fsdecode(bytes(p)) for (p,) in rows]

    def end_scan(self) -> int:
        """The entries become what the scan found, and the scan's findings are kept for the live
        creates queued meanwhile; returns how many files it found."""
        with self.lock:
            self._write("DELETE FROM entry", ())
            self.db.execute("INSERT INTO entry SELECT * FROM scan_after")
            self.db.execute("DELETE FROM scan_seen")
            self.db.execute("INSERT INTO scan_seen SELECT a.path, i.dev, i.ino FROM scan_after a "
                            "JOIN inode_of i ON i.path = a.path")
            self._seen_active = True
            return int(self.db.execute("SELECT count(*) FROM scan_after").fetchone()[0])

    def _rows(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """A query's rows, fetched a thousand at a time, so that what is read is never all held."""
        last = b""
        while True:
            with self.lock:
                rows = self.db.execute(sql, (last, _FETCH)).fetchall()
            yield from rows
            if len(rows) < _FETCH:
                return
            last = bytes(rows[-1][0])

    def changes(self) -> Iterator[Change]:
        """As ``agent.snapshot.diff_snapshots(before, after)``: creates, writes, deletes, each by path."""
        for row in self._rows("SELECT a.path, a.size, a.mtime_ns, a.sha256 FROM scan_after a WHERE a.path > ? "
                              "AND NOT EXISTS (SELECT 1 FROM scan_before b WHERE b.path = a.path) "
                              "ORDER BY a.path LIMIT ?"):
            yield Change("file.create", os.fsdecode(bytes(row[0])), _entry(row[1:]))
        for row in self._rows("SELECT a.path, a.size, a.mtime_ns, a.sha256 FROM scan_after a "
                              f"JOIN scan_before b ON b.path = a.path WHERE a.path > ? AND NOT {_SAME} "
                              "ORDER BY a.path LIMIT ?"):
            yield Change("file.write", os.fsdecode(bytes(row[0])), _entry(row[1:]))
        for row in self._rows("SELECT b.path FROM scan_before b WHERE b.path > ? "
                              "AND NOT EXISTS (SELECT 1 FROM scan_after a WHERE a.path = b.path) "
                              "ORDER BY b.path LIMIT ?"):
            yield Change("file.delete", os.fsdecode(bytes(row[0])), None)

    def quiet(self, *, first_run: bool, catch_up: bool) -> Iterator[tuple[str, SnapshotEntry]]:
        """What the scan found that is no change to report but differs from ``before`` (a hash
        learnt, a time moved with the same content), or on a first run every unreported file."""
        if not catch_up:
            sql = "SELECT a.path, a.size, a.mtime_ns, a.sha256 FROM scan_after a WHERE a.path > ? ORDER BY a.path LIMIT ?"
        else:
            differs = "" if first_run else (" AND (a.size != b.size OR a.mtime_ns != b.mtime_ns "
                                            "OR a.sha256 != b.sha256)")
            sql = ("SELECT a.path, a.size, a.mtime_ns, a.sha256 FROM scan_after a JOIN scan_before b "
                   f"ON b.path = a.path WHERE a.path > ? AND {_SAME}{differs} ORDER BY a.path LIMIT ?")
        for row in self._rows(sql):
            yield os.fsdecode(bytes(row[0])), _entry(row[1:])

    def finish_scan(self) -> None:
        """Drops the scan's before and after tables' rows."""
        with self.lock:
            self._write("DELETE FROM scan_before", ())
            self.db.execute("DELETE FROM scan_after")
            self.index.commit()

    def size_on_disk(self) -> int:
        """Bytes of the database (pages in use)."""
        with self.lock:
            pages = self.db.execute("PRAGMA page_count").fetchone()[0]
            size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)
