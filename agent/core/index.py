"""The index of sensitive content: which sources a candidate file copies, and how much, both ways.

``FingerprintIndex`` maps chunk fingerprints to the sensitive files holding them. For a candidate
(a file written elsewhere) it reports each source it shares chunks with and two shares:

* ``share``: how much of the *source* is in the candidate (bytes of the source's chunks found),
* ``dest_share``: how much of the *candidate* comes from that source (bytes of the candidate's
  chunks the source also has).

A source is reported when either share reaches the threshold: a destination whose content comes
mostly from a sensitive file is a copy, whichever share of the source it holds (a page cut out of
a long contract), and a destination that holds most of a source is a copy however much else it
holds (a contract pasted into a larger file).

Small sources (see ``agent.fingerprint_scan``) also carry an *anchor*: the fingerprint of their
first fine-grained chunk, so that a short copy of their beginning is found even when it holds no
whole coarse chunk.

Memory, because a sensitive folder may hold 100,000 files: a source costs its path (shared with
the caller's), one packed record (SHA-256 digest, size, and 12 bytes per distinct chunk) and one
dict entry per chunk mapping the 64-bit fingerprint to a small integer id; no per-source objects,
sets or hex strings (about 80 bytes per source and 70 per distinct chunk, besides the path). ``tests/agent/test_fingerprint.py`` measures it under 80 MB for 100,000
office-sized files. Sans-I/O: it never reads a file and never holds content.

``StoredFingerprintIndex`` gives the same answers from SQLite tables (one row per source with the
same packed record, one ``(chunk, source)`` row per distinct chunk), so that the agent's memory
does not grow with the sensitive folders: the dict index costs ~0.8 KB per office file in the
process, the stored one ~0.4 KB per file on disk and only SQLite's bounded page cache in memory.
It is a cache of what the files hold, rebuilt by its owner at start, never a record.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal, Protocol

from agent.core.fingerprint import FileFingerprint

__all__ = ["FingerprintIndex", "Match", "MatchKind", "SourceIndex", "StoredFingerprintIndex", "open_index_db"]

MatchKind = Literal["exact", "partial", "archive"]

_HEAD = struct.Struct("<32sqBQ")  # sha256 digest, size fingerprinted, flags, anchor
_COMPLETE, _ANCHORED = 1, 2
_CHUNK = struct.Struct("<QI")  # chunk fingerprint, bytes of the source in chunks with it

# One source id, or a set of them when several files hold the chunk (identical files, templates):
# a set keeps adding and removing the 20,000th holder as cheap as the first.
Holders = int | set[int]


@dataclass(frozen=True, order=True)
class Match:
    """A sensitive source file found in a candidate: ``share`` of the source's bytes found in it,
    ``dest_share`` of the candidate's bytes that come from the source.

    ``member`` names the archive member that matched when ``kind == "archive"``.
    """

    source_path: str
    kind: MatchKind
    share: float
    member: str = ""
    dest_share: float = 0.0


class SourceIndex(Protocol):
    """What copy detection needs of an index (``FingerprintIndex`` or ``StoredFingerprintIndex``)."""

    min_share: float

    def __len__(self) -> int: ...
    def __contains__(self, path: object) -> bool: ...
    def paths(self) -> list[str]: ...
    def add(self, path: str, fingerprint: FileFingerprint, *, anchor: int | None = None) -> None: ...
    def remove(self, path: str) -> bool: ...
    def anchored(self, anchor: int) -> list[str]: ...
    def source_size(self, path: str) -> int: ...
    def match(self, candidate: FileFingerprint, *, min_share: float | None = None,
              ignore: Iterable[str] = ()) -> list[Match]: ...


def _add_holder(table: dict[int, Holders], key: int, sid: int) -> None:
    held = table.get(key)
    if held is None:
        table[key] = sid
    elif isinstance(held, int):
        if held != sid:
            table[key] = {held, sid}
    else:
        held.add(sid)


def _drop_holder(table: dict[int, Holders], key: int, sid: int) -> None:
    held = table.get(key)
    if held is None:
        return
    if isinstance(held, int):
        if held == sid:
            del table[key]
        return
    held.discard(sid)
    if len(held) == 1:
        table[key] = next(iter(held))


def _holders(held: Holders | None) -> tuple[int, ...] | set[int]:
    if held is None:
        return ()
    return (held,) if isinstance(held, int) else held


class _Matcher:
    """``match`` over whatever ``_sources`` finds (the dict index, or the stored one)."""

    min_share: float

    def _sources(self, own: dict[int, int]) -> Iterable[tuple[str | None, bytes, list[int]]]:
        raise NotImplementedError

    def match(
        self,
        candidate: FileFingerprint,
        *,
        min_share: float | None = None,
        ignore: Iterable[str] = (),
    ) -> list[Match]:
        """Returns the sources ``candidate`` copies with either share at least ``min_share``, best
        first. ``ignore`` names paths not to report (the candidate itself, when it is a source)."""
        own = _weights(candidate)
        return _judge(candidate, own, self._sources(own), self.min_share if min_share is None else min_share,
                      set(ignore))

class FingerprintIndex(_Matcher):
    """Chunk fingerprint -> sensitive source paths; answers "which sources does this copy?"."""

    def __init__(self, *, min_share: float = 0.5) -> None:
        if not 0.0 <= min_share <= 1.0:
            raise ValueError("min_share must be within 0..1")
        self.min_share = min_share
        self._ids: dict[str, int] = {}
        self._paths: list[str | None] = []
        self._records: list[bytes] = []  # per id: _HEAD, then _CHUNK per distinct chunk
        self._free: list[int] = []
        self._by_chunk: dict[int, Holders] = {}
        self._by_anchor: dict[int, Holders] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, path: object) -> bool:
        return path in self._ids

    def paths(self) -> list[str]:
        """Returns the indexed source paths, sorted."""
        return sorted(self._ids)

    def chunk_count(self) -> int:
        """Returns how many distinct chunk fingerprints the index holds (its memory measure)."""
        return len(self._by_chunk)

    def add(self, path: str, fingerprint: FileFingerprint, *, anchor: int | None = None) -> None:
        """Indexes a source file, replacing what was known of ``path``; empty files are ignored.

        ``anchor`` is the fingerprint of the file's first fine chunk (small files only)."""
        self.remove(path)
        if fingerprint.size == 0:
            # Every empty file would "copy" every other; there is nothing to protect.
            return
        weights = _weights(fingerprint)
        record = _record(fingerprint, weights, anchor)
        sid = self._free.pop() if self._free else len(self._paths)
        if sid == len(self._paths):
            self._paths.append(path)
            self._records.append(record)
        else:
            self._paths[sid] = path
            self._records[sid] = record
        self._ids[path] = sid
        for fp in weights:
            _add_holder(self._by_chunk, fp, sid)
        if anchor is not None:
            _add_holder(self._by_anchor, anchor, sid)

    update = add

    def remove(self, path: str) -> bool:
        """Forgets a source file; returns whether it was indexed."""
        sid = self._ids.pop(path, None)
        if sid is None:
            return False
        for fp, _weight in self._chunks(sid):
            _drop_holder(self._by_chunk, fp, sid)
        _sha, _size, flags, anchor = _HEAD.unpack_from(self._records[sid])
        if flags & _ANCHORED:
            _drop_holder(self._by_anchor, anchor, sid)
        self._paths[sid] = None
        self._records[sid] = b""
        self._free.append(sid)
        return True

    def _chunks(self, sid: int) -> Iterator[tuple[int, int]]:
        record = self._records[sid]
        return _CHUNK.iter_unpack(memoryview(record)[_HEAD.size:])

    def anchored(self, anchor: int) -> list[str]:
        """The small sources whose first fine chunk has this fingerprint."""
        return sorted(p for sid in _holders(self._by_anchor.get(anchor)) if (p := self._paths[sid]) is not None)

    def source_size(self, path: str) -> int:
        """Bytes fingerprinted of an indexed source (-1 if it is not indexed)."""
        sid = self._ids.get(path)
        if sid is None:
            return -1
        return int(_HEAD.unpack_from(self._records[sid])[1])

    def _sources(self, own: dict[int, int]) -> Iterable[tuple[str | None, bytes, list[int]]]:
        """The sources holding any of ``own``'s chunks: (path, packed record, those chunks)."""
        found: dict[int, list[int]] = {}
        for fp in own:
            for sid in _holders(self._by_chunk.get(fp)):
                found.setdefault(sid, []).append(fp)
        return ((self._paths[sid], self._records[sid], fps) for sid, fps in found.items())


def _weights(fingerprint: FileFingerprint) -> dict[int, int]:
    """Chunk fingerprint -> bytes of the file in chunks with it."""
    weights: dict[int, int] = {}
    for chunk in fingerprint.chunks:
        weights[chunk.fingerprint] = weights.get(chunk.fingerprint, 0) + chunk.length
    return weights


def _record(fingerprint: FileFingerprint, weights: dict[int, int], anchor: int | None) -> bytes:
    flags = (_COMPLETE if fingerprint.complete else 0) | (_ANCHORED if anchor is not None else 0)
    record = _HEAD.pack(bytes.fromhex(fingerprint.sha256), fingerprint.size, flags, anchor or 0)
    return record + b"".join(_CHUNK.pack(fp, w) for fp, w in weights.items())


def _judge(
    candidate: FileFingerprint,
    own: dict[int, int],
    sources: Iterable[tuple[str | None, bytes, list[int]]],
    threshold: float,
    skip: set[str],
) -> list[Match]:
    """The matches among ``sources`` (path, packed record, the candidate's chunks it holds)."""
    digest = bytes.fromhex(candidate.sha256)
    out: list[Match] = []
    for path, record, fps in sources:
        if path is None or path in skip:
            continue
        sha, size, flags, _anchor = _HEAD.unpack_from(record)
        if candidate.complete and flags & _COMPLETE and sha == digest and size == candidate.size:
            out.append(Match(path, "exact", 1.0, dest_share=1.0))
            continue
        shared = set(fps)
        source_bytes = sum(w for fp, w in _CHUNK.iter_unpack(memoryview(record)[_HEAD.size:]) if fp in shared)
        share = source_bytes / size
        dest_share = sum(own[fp] for fp in fps) / candidate.size if candidate.size else 0.0
        if max(share, dest_share) > 0.0 and max(share, dest_share) >= threshold:
            out.append(Match(path, "partial", share, dest_share=dest_share))
    return sorted(out, key=lambda m: (-max(m.share, m.dest_share), m.source_path))


def _signed(fp: int) -> int:
    """A 64-bit fingerprint as SQLite's signed INTEGER (and back: ``& _MASK``)."""
    return fp - (1 << 64) if fp >= 1 << 63 else fp


_MASK = (1 << 64) - 1
_IN_MAX = 500  # values per IN (...) list: well under SQLite's 32,766 host parameters

_SCHEMA = """
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
        self.db.executescript(_SCHEMA)
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
