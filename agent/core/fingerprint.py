"""Content fingerprints of sensitive files and the index that recognises copies of them.

A file's fingerprint is its SHA-256 plus content-defined chunks: cut points chosen by a gear
rolling hash (as in FastCDC), so an edit moves only the cuts near it and a partial or lightly
edited copy still shares most chunk fingerprints with its source. ``agent.core.index`` maps chunk
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
share is at least ``(n - CHUNK_MAX) / len(source)``, and at least ``(n - CHUNK_MAX) / n`` of the
copy comes from the source.

Small files (up to ``SMALL_MAX``, 1 MiB: office documents). With CHUNK_MAX = 64 KiB the bounds
above say nothing below ~128 KiB, so small files also get a *fine* fingerprint: the same rule with
``FINE_MIN`` = 256 B, ``FINE_MAX`` = 2 KiB (``Chunker(fine=True)``). A source keeps only its first
fine chunk (its anchor, in the index); a candidate of at most SMALL_MAX bytes is fine-chunked
whole, and each source whose anchor it starts with is fine-chunked again from disk and compared.
By the prefix argument with the fine rule, a copy of the first ``n >= 2 * FINE_MAX`` bytes of a
small source is found, and at least ``1 - FINE_MAX / n`` of it comes from the source (>= 0.5 for
any ``n`` >= 4 KiB: a 60 % excerpt of a 10 KB file has >= 0.67, of a 70 KB file >= 0.95), while
the source's share is at least ``(n - FINE_MAX) / len(source)``. Excerpts that do not start at
the source's beginning are found by the coarse chunks only (the bounds above).

Speed: the per-byte loop runs in C (``agent/core/_gear.c``, the same rule, checked against the
Python loop by a property test; it releases the GIL), and chunk fingerprints are SHA-256 from
hashlib, so fingerprinting runs at about 0.4 of SHA-256's speed on the same bytes. Where the
extension could not be built the Python loop gives the same chunks, about 100 times slower.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "CHUNK_MAX",
    "CHUNK_MIN",
    "FINE_MAX",
    "FINE_MIN",
    "SMALL_MAX",
    "REACH",
    "WINDOW",
    "Chunk",
    "Chunker",
    "FileFingerprint",
    "Fingerprinter",
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

# The fine rule, for the first bytes of small files (see SMALL_MAX): the same cut rule with
# chunks of 256 B to 2 KiB (mean ~1 KiB). Only a source's first fine chunk is kept (its anchor).
FINE_MIN = 256
FINE_MAX = 2 * 1024
FINE_THRESHOLD = _M64 // 700
SMALL_MAX = 1024 * 1024  # files up to this size get a fine fingerprint too


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

    def __init__(self, *, pure: bool = False, fine: bool = False) -> None:
        """``pure=True`` runs the Python loop even where the C one exists (to test one against the
        other); ``fine=True`` cuts by the fine rule (FINE_MIN, FINE_MAX, FINE_THRESHOLD)."""
        self._pure = pure
        self._min, self._max, self._threshold = (
            (FINE_MIN, FINE_MAX, FINE_THRESHOLD) if fine else (CHUNK_MIN, CHUNK_MAX, THRESHOLD))
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
        gear, mask, threshold = _GEAR, _M64, self._threshold
        chunk_min, chunk_max = self._min, self._max
        h = self._h
        pos = self._pos
        start = self._chunk_start
        last_candidate = self._last_candidate
        seg = 0  # index in view where the current chunk's unhashed part begins
        limit = start + chunk_max - pos  # index at which the current chunk must be cut
        for i, byte in enumerate(view, 1):
            h = ((h << 1) + gear[byte]) & mask
            if h < threshold:
                end = pos + i
                natural = end - last_candidate >= chunk_min
                last_candidate = end
                if natural or i == limit:
                    out.append(self._cut(view, seg, i, start, end, natural))
                    seg, start, limit = i, end, i + chunk_max
            elif i == limit:
                end = pos + i
                out.append(self._cut(view, seg, i, start, end, False))
                seg, start, limit = i, end, i + chunk_max
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
            view, _GEAR_BYTES, self._h, self._threshold, pos, self._chunk_start, self._last_candidate,
            self._min, self._max)
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
