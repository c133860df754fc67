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

``agent.content_store.StoredFingerprintIndex`` gives the same answers (this module's
``_Matcher``) from SQLite tables (one row per source with the
same packed record, one ``(chunk, source)`` row per distinct chunk), so that the agent's memory
does not grow with the sensitive folders: the dict index costs ~0.8 KB per office file in the
process, the stored one ~0.4 KB per file on disk and only SQLite's bounded page cache in memory.
It is a cache of what the files hold, rebuilt by its owner at start, never a record.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal, Protocol

from agent.core.fingerprint import FileFingerprint

__all__ = ["FingerprintIndex", "Match", "MatchKind", "SourceIndex"]

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
