"""Content fingerprints of sensitive files and the index that recognises copies of them.

A file's fingerprint is its SHA-256 plus content-defined chunks: cut points chosen by a gear
rolling hash (as in FastCDC), so an edit moves only the cuts near it and a partial or lightly
edited copy still shares most chunk fingerprints with its source. ``FingerprintIndex`` maps chunk
fingerprints to the sensitive files holding them and says which sources a candidate file copies,
and how much of each.

This module is sans-I/O: callers feed it bytes (``Fingerprinter.feed``) and it never opens,
reads or stats a file. It must never keep file content: the index holds 64-bit chunk
fingerprints and lengths only, so its memory is bounded by the number of chunks, not bytes.

Theory of operation (the cut rule and what it guarantees)
---------------------------------------------------------
``h`` is the 64-bit gear hash ``h = (h << 1) + GEAR[byte]``; its value at a position depends on
the last ``WINDOW`` (64) bytes only. A position is a *candidate* when ``h < THRESHOLD``. A
candidate ends a chunk (a *natural* cut) when no other candidate lies within the ``CHUNK_MIN``
bytes before it (the start of the data counts as a candidate). Whether a boundary is a natural cut
therefore depends only on the ``REACH = CHUNK_MIN + WINDOW`` bytes before it, never on where the
previous chunk started, unlike FastCDC's skip-ahead, whose cuts can drift out of step with an
edited copy for a long way. A chunk that reaches ``CHUNK_MAX`` bytes without a natural cut is cut
there (a *forced* cut); forced cuts only happen in runs without natural cuts, rare in real data.

Consequence, used by the tests: take a copy of a source with the bytes at positions ``P`` replaced
(same length). A boundary ``b`` depends on bytes ``[b - REACH + 1, b - 1]`` only, so every
boundary at or before ``p`` is unchanged, and from the first natural source cut ``g(p) >= p +
REACH`` (or the end of the data) on, all cuts agree again, forced ones included. So each source
chunk that meets no interval ``[chunk_start(p), g(p))`` is found verbatim in the copy, and

    share >= 1 - |union over p in P of [chunk_start(p), g(p))| / len(source)
          >= 1 - k * (2 * CHUNK_MAX + REACH) / len(source)   (k = |P|, all source cuts natural)

A copy of the first ``n`` bytes keeps every source chunk that ends at or before ``n``, so its
share is at least ``(n - CHUNK_MAX) / len(source)``.

Speed: the per-byte loop runs in C (``agent/core/_gear.c``, the same rule, checked against the
Python loop by a property test; it releases the GIL), and chunk fingerprints are SHA-256 from
hashlib, so fingerprinting runs at about 0.4 of SHA-256's speed on the same bytes. Where the
extension could not be built the Python loop gives the same chunks, about 100 times slower.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from typing import Iterable, Literal, NamedTuple

__all__ = [
    "CHUNK_MAX",
    "CHUNK_MIN",
    "REACH",
    "WINDOW",
    "Chunk",
    "Chunker",
    "FileFingerprint",
    "FingerprintIndex",
    "Fingerprinter",
    "Match",
    "MatchKind",
    "compiled",
    "fingerprint_bytes",
]

CHUNK_MIN = 2 * 1024
CHUNK_MAX = 64 * 1024
WINDOW = 64
REACH = CHUNK_MIN + WINDOW

_M64 = (1 << 64) - 1
# One candidate per ~5,700 positions; with the CHUNK_MIN suppression rule that gives a mean
# chunk of about 8 KiB on random data (measured in the tests, not assumed).
THRESHOLD = _M64 // 5700


def _gear_table() -> tuple[int, ...]:
    # Fixed forever: fingerprints made by different agents and versions must compare equal.
    return tuple(
        int.from_bytes(hashlib.sha256(b"shoumi-gear-v1-%d" % i).digest()[:8], "big")
        for i in range(256)
    )


_GEAR = _gear_table()
_GEAR_BYTES = b"".join(g.to_bytes(8, sys.byteorder) for g in _GEAR)

try:  # the same cut rule in C (agent/core/_gear.c), built at install where a compiler exists
    from agent.core import _gear as _compiled  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only without the extension
    _compiled = None


def compiled() -> bool:
    """Tells whether the C cut loop is in use (else the same rule runs in Python, ~100x slower)."""
    return _compiled is not None


def chunk_fingerprint(data: bytes | bytearray | memoryview) -> int:
    """Returns the 64-bit fingerprint of one chunk: the first 8 bytes of its SHA-256."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


class Chunk(NamedTuple):
    """One content-defined chunk: where it is, how long, its fingerprint, and how it was cut."""

    # A named tuple rather than a frozen dataclass: one is made per ~8 KiB hashed, and building a
    # tuple costs a fifth of a frozen dataclass's __init__.
    offset: int
    length: int
    fingerprint: int
    natural: bool  # False when cut by CHUNK_MAX or by the end of the data


@dataclass(frozen=True)
class FileFingerprint:
    """What the index knows of a file: whole-file SHA-256, size hashed, and its chunks.

    ``complete`` is False when only a prefix was hashed (the file exceeded the hashing budget);
    then ``sha256`` is that prefix's digest and can never make an exact match.
    """

    sha256: str
    size: int
    chunks: tuple[Chunk, ...]
    complete: bool = True

    def __post_init__(self) -> None:
        if len(self.sha256) != 64:
            raise ValueError("sha256 must be 64 hex digits")
        if sum(c.length for c in self.chunks) != self.size:
            raise ValueError("chunks must cover exactly the bytes hashed")


class Chunker:
    """Streaming content-defined chunker: ``feed`` bytes in any pieces, then ``finish``.

    Chunk boundaries do not depend on how the data was split into ``feed`` calls.
    """

    def __init__(self, *, pure: bool = False) -> None:
        """``pure=True`` runs the Python loop even where the C one exists (to test one against the other)."""
        self._pure = pure
        self._h = 0
        self._pos = 0  # bytes consumed so far
        self._chunk_start = 0
        self._last_candidate = 0  # end offset of the last candidate; the start counts as one
        self._hasher = hashlib.sha256()
        self._finished = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[Chunk]:
        """Consumes ``data`` and returns the chunks it completed."""
        if self._finished:
            raise RuntimeError("Chunker.feed after finish")
        view = memoryview(data).cast("B")
        if _compiled is not None and not self._pure:
            return self._feed_compiled(view)
        out: list[Chunk] = []
        gear, mask, threshold = _GEAR, _M64, THRESHOLD
        h = self._h
        pos = self._pos
        start = self._chunk_start
        last_candidate = self._last_candidate
        seg = 0  # index in view where the current chunk's unhashed part begins
        limit = start + CHUNK_MAX - pos  # index at which the current chunk must be cut
        for i, byte in enumerate(view, 1):
            h = ((h << 1) + gear[byte]) & mask
            if h < threshold:
                end = pos + i
                natural = end - last_candidate >= CHUNK_MIN
                last_candidate = end
                if natural or i == limit:
                    out.append(self._cut(view, seg, i, start, end, natural))
                    seg, start, limit = i, end, i + CHUNK_MAX
            elif i == limit:
                end = pos + i
                out.append(self._cut(view, seg, i, start, end, False))
                seg, start, limit = i, end, i + CHUNK_MAX
        self._hasher.update(view[seg:])
        self._h = h
        self._pos = pos + len(view)
        self._chunk_start = start
        self._last_candidate = last_candidate
        return out

    def _feed_compiled(self, view: memoryview) -> list[Chunk]:
        assert _compiled is not None
        pos = self._pos
        cuts, self._h, start_after, self._last_candidate = _compiled.scan(
            view, _GEAR_BYTES, self._h, THRESHOLD, pos, self._chunk_start, self._last_candidate,
            CHUNK_MIN, CHUNK_MAX)
        out: list[Chunk] = []
        seg, start = 0, self._chunk_start
        sha256 = hashlib.sha256
        for n, code in enumerate(cuts):
            end = code >> 1
            i = end - pos
            if n == 0:  # the chunk may have begun in an earlier feed: finish its running hash
                out.append(self._cut(view, seg, i, start, end, bool(code & 1)))
            else:
                fp = int.from_bytes(sha256(view[seg:i]).digest()[:8], "big")
                out.append(Chunk(start, end - start, fp, bool(code & 1)))
            seg, start = i, end
        self._hasher.update(view[seg:])
        self._pos = pos + len(view)
        self._chunk_start = start_after
        return out

    def _cut(
        self, view: memoryview, seg: int, i: int, start: int, end: int, natural: bool
    ) -> Chunk:
        self._hasher.update(view[seg:i])
        fingerprint = int.from_bytes(self._hasher.digest()[:8], "big")
        self._hasher = hashlib.sha256()
        return Chunk(start, end - start, fingerprint, natural)

    def finish(self) -> list[Chunk]:
        """Ends the data; returns the last, possibly short, chunk."""
        if self._finished:
            return []
        self._finished = True
        if self._pos == self._chunk_start:
            return []
        fingerprint = int.from_bytes(self._hasher.digest()[:8], "big")
        return [Chunk(self._chunk_start, self._pos - self._chunk_start, fingerprint, False)]


class Fingerprinter:
    """Streaming whole-file SHA-256 plus chunks: ``feed`` the bytes, then ``finish``."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._chunker = Chunker()
        self._chunks: list[Chunk] = []
        self._size = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Consumes the next bytes of the file."""
        self._sha.update(data)
        self._size += len(memoryview(data).cast("B"))
        self._chunks.extend(self._chunker.feed(data))

    def finish(self, *, complete: bool = True) -> FileFingerprint:
        """Returns the fingerprint; ``complete=False`` if the bytes fed are only a prefix."""
        self._chunks.extend(self._chunker.finish())
        return FileFingerprint(self._sha.hexdigest(), self._size, tuple(self._chunks), complete)


def fingerprint_bytes(data: bytes | bytearray | memoryview) -> FileFingerprint:
    """Fingerprints a whole file held in memory."""
    fingerprinter = Fingerprinter()
    fingerprinter.feed(data)
    return fingerprinter.finish()


MatchKind = Literal["exact", "partial", "archive"]


@dataclass(frozen=True, order=True)
class Match:
    """A sensitive source file found in a candidate, and the share of the source's bytes found.

    ``member`` names the archive member that matched when ``kind == "archive"``.
    """

    source_path: str
    kind: MatchKind
    share: float
    member: str = ""


@dataclass
class _Source:
    sha256: str
    size: int
    complete: bool
    weights: dict[int, int] = field(default_factory=dict)  # chunk fingerprint -> source bytes


class FingerprintIndex:
    """Chunk fingerprint -> sensitive source paths; answers "which sources does this copy?"."""

    def __init__(self, *, min_share: float = 0.5) -> None:
        if not 0.0 <= min_share <= 1.0:
            raise ValueError("min_share must be within 0..1")
        self.min_share = min_share
        self._sources: dict[str, _Source] = {}
        self._by_chunk: dict[int, set[str]] = {}
        self._by_sha: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, path: object) -> bool:
        return path in self._sources

    def paths(self) -> list[str]:
        """Returns the indexed source paths, sorted."""
        return sorted(self._sources)

    def chunk_count(self) -> int:
        """Returns how many distinct chunk fingerprints the index holds (its memory measure)."""
        return len(self._by_chunk)

    def add(self, path: str, fingerprint: FileFingerprint) -> None:
        """Indexes a source file, replacing what was known of ``path``; empty files are ignored."""
        self.remove(path)
        if fingerprint.size == 0:
            # Every empty file would "copy" every other; there is nothing to protect.
            return
        source = _Source(fingerprint.sha256, fingerprint.size, fingerprint.complete)
        for chunk in fingerprint.chunks:
            source.weights[chunk.fingerprint] = (
                source.weights.get(chunk.fingerprint, 0) + chunk.length
            )
        self._sources[path] = source
        for fp in source.weights:
            self._by_chunk.setdefault(fp, set()).add(path)
        if source.complete:
            self._by_sha.setdefault(source.sha256, set()).add(path)

    update = add

    def remove(self, path: str) -> bool:
        """Forgets a source file; returns whether it was indexed."""
        source = self._sources.pop(path, None)
        if source is None:
            return False
        for fp in source.weights:
            holders = self._by_chunk.get(fp)
            if holders is not None:
                holders.discard(path)
                if not holders:
                    del self._by_chunk[fp]
        holders = self._by_sha.get(source.sha256)
        if holders is not None:
            holders.discard(path)
            if not holders:
                del self._by_sha[source.sha256]
        return True

    def match(
        self,
        candidate: FileFingerprint,
        *,
        min_share: float | None = None,
        ignore: Iterable[str] = (),
    ) -> list[Match]:
        """Returns the sources ``candidate`` copies with at least ``min_share``, best first.

        ``ignore`` names paths not to report (the candidate itself, when it is a source).
        """
        threshold = self.min_share if min_share is None else min_share
        skip = set(ignore)
        found: dict[str, Match] = {}
        if candidate.complete:
            for path in self._by_sha.get(candidate.sha256, ()):
                if path not in skip and self._sources[path].size == candidate.size:
                    found[path] = Match(path, "exact", 1.0)
        covered: dict[str, int] = {}
        for fp in {chunk.fingerprint for chunk in candidate.chunks}:
            for path in self._by_chunk.get(fp, ()):
                if path not in found and path not in skip:
                    covered[path] = covered.get(path, 0) + self._sources[path].weights[fp]
        for path, nbytes in covered.items():
            share = nbytes / self._sources[path].size
            if share > 0.0 and share >= threshold:
                found[path] = Match(path, "partial", share)
        return sorted(found.values(), key=lambda m: (-m.share, m.source_path))
