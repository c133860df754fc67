"""Fingerprints files and archive members from disk, and builds the index of sensitive folders.

This is the I/O edge of ``agent.core.fingerprint``: it opens files safely (``lstat`` first,
regular files only, ``O_NOFOLLOW | O_NONBLOCK`` so a FIFO or a swapped-in symlink can never block
or redirect it), streams at most ``max_bytes`` through the fingerprinter, and reads zip and tar
members in memory, bounded by ``ArchiveLimits``.

It must never follow symlinks, open special files, extract an archive to disk, hold a whole file
in memory, or let a bad file crash the caller: anything it cannot fingerprint becomes
``ScanSkipped`` with a ``reason`` the caller counts. File content never leaves this module;
only fingerprints do.

Exceptions::

    Exception
    └── ScanSkipped      the file (or archive) was not fingerprinted; ``reason`` is one of
                         SKIP_REASONS, ``path`` is the file.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field, replace
from contextlib import nullcontext
from typing import IO, Callable, ContextManager, Final, Iterator, Literal

from agent.core.fingerprint import FINE_MAX, SMALL_MAX, Chunk, Chunker, FileFingerprint, Fingerprinter
from agent.core.index import FingerprintIndex, Match, SourceIndex
from agent.policy import SensitiveFolderPolicy

__all__ = [
    "SKIP_REASONS",
    "ArchiveLimits",
    "IndexBuild",
    "ScanSkipped",
    "ScannedFile",
    "ScannedMember",
    "SkipReason",
    "build_index",
    "find_copies",
    "scan_archive",
    "scan_file",
]

SkipReason = Literal[
    "vanished",  # gone before it could be opened
    "unreadable",  # permission denied or an I/O error
    "not_regular",  # FIFO, socket, device, directory
    "symlink",  # never followed: the target may be anywhere
    "changed",  # size or mtime changed while hashing; the caller should retry later
    "not_archive",  # scan_archive on something that is neither zip nor tar
    "bad_archive",  # a corrupt or unsupported archive
]
SKIP_REASONS: Final[frozenset[str]] = frozenset(SkipReason.__args__)  # type: ignore[attr-defined]

_BLOCK = 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]


class ScanSkipped(Exception):
    """The file was not fingerprinted, for ``reason``; the caller counts it and goes on."""

    def __init__(self, reason: SkipReason, path: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {path!r}" + (f" ({detail})" if detail else ""))
        self.reason: SkipReason = reason
        self.path = path
        self.detail = detail


@dataclass(frozen=True)
class ScannedFile:
    """A regular file's fingerprint and the stat values it was taken at."""

    path: str  # os.fsdecode()d: undecodable bytes survive as surrogates; escape_path() for events
    size: int  # st_size, which may exceed fingerprint.size when truncated
    mtime_ns: int
    dev: int
    ino: int
    fingerprint: FileFingerprint
    fine: tuple[Chunk, ...] = ()  # the fine chunks, when asked for and the file is small
    anchor: int | None = None  # the first fine chunk's fingerprint (small files only)

    @property
    def truncated(self) -> bool:
        """True when only the first ``max_bytes`` were fingerprinted."""
        return not self.fingerprint.complete


@dataclass(frozen=True)
class ScannedMember:
    """One regular member of an archive, fingerprinted in memory."""

    name: str  # as stored in the archive; a label only, never used as a path
    fingerprint: FileFingerprint


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on reading one archive; past them members are cut short or left out."""

    max_members: int = 10_000  # entries looked at, directories included
    max_member_bytes: int = 64 * 1024 * 1024  # uncompressed bytes fingerprinted per member
    max_total_bytes: int = 256 * 1024 * 1024  # uncompressed bytes read per archive


def _skip_for(exc: OSError, path: str) -> ScanSkipped:
    if exc.errno == errno.ENOENT or exc.errno == errno.ENOTDIR:
        return ScanSkipped("vanished", path, exc.strerror or "")
    if exc.errno == errno.ELOOP:
        return ScanSkipped("symlink", path)
    if exc.errno in (errno.ENXIO, errno.ENODEV):
        return ScanSkipped("not_regular", path, exc.strerror or "")
    return ScanSkipped("unreadable", path, exc.strerror or str(exc))


def _check_regular(st: os.stat_result, path: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise ScanSkipped("symlink", path)
    if not stat.S_ISREG(st.st_mode):
        raise ScanSkipped("not_regular", path, stat.filemode(st.st_mode))


def _open_regular(raw: str | bytes, text: str) -> tuple[int, os.stat_result]:
    """Opens a regular file that is what lstat saw (no link, FIFO, device, or a file swapped in
    between); returns the descriptor and its fstat, or raises ``ScanSkipped``."""
    try:
        before = os.lstat(raw)
    except OSError as exc:
        raise _skip_for(exc, text) from exc
    _check_regular(before, text)
    try:
        fd = os.open(raw, _OPEN_FLAGS)
    except OSError as exc:
        raise _skip_for(exc, text) from exc
    try:
        opened = os.fstat(fd)
        _check_regular(opened, text)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise ScanSkipped("changed", text, "replaced between lstat and open")
    except BaseException:
        os.close(fd)
        raise
    return fd, opened


FineMode = Literal["none", "anchor", "all"]


def scan_file(path: PathArg, *, max_bytes: int, fine: FineMode = "none") -> ScannedFile:
    """Fingerprints the first ``max_bytes`` of a regular file, or raises ``ScanSkipped``.

    For a file of at most SMALL_MAX bytes, ``fine="anchor"`` also gives its anchor (first fine
    chunk) and ``fine="all"`` its fine chunks and anchor, from the same read."""
    raw = os.fspath(path)
    text = os.fsdecode(raw)
    fd, opened = _open_regular(raw, text)
    fine_chunker = Chunker(fine=True) if fine != "none" and opened.st_size <= SMALL_MAX else None
    fine_chunks: list[Chunk] = []
    try:
        fingerprinter = Fingerprinter()
        remaining = max_bytes
        fed = 0
        while remaining > 0:
            try:
                # sized to what fstat said is left (+1 to see the end): a 30 KB file costs a 30 KB
                # buffer, not a 1 MiB one shrunk afterwards (the allocator keeps those pages)
                want = opened.st_size - fed + 1 if fed < opened.st_size else _BLOCK  # grown: as before
                block = os.read(fd, min(_BLOCK, remaining, want))
            except OSError as exc:
                raise _skip_for(exc, text) from exc
            if not block:
                break
            fingerprinter.feed(block)
            if fine_chunker is not None and (fine == "all" or fed < FINE_MAX):
                # the anchor needs the first fine chunk only, which ends within FINE_MAX bytes
                fine_chunks.extend(fine_chunker.feed(block if fine == "all" else block[:FINE_MAX - fed]))
            fed += len(block)
            remaining -= len(block)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (opened.st_size, opened.st_mtime_ns):
        raise ScanSkipped("changed", text, "written while hashed")
    complete = remaining > 0 or after.st_size <= max_bytes
    if fine_chunker is not None and (fine == "all" or not fine_chunks):
        fine_chunks.extend(fine_chunker.finish())
    return ScannedFile(
        path=text,
        size=after.st_size,
        mtime_ns=after.st_mtime_ns,
        dev=after.st_dev,
        ino=after.st_ino,
        fingerprint=fingerprinter.finish(complete=complete),
        fine=tuple(fine_chunks) if fine == "all" else (),
        anchor=fine_chunks[0].fingerprint if fine_chunks else None,
    )


NESTED_MAX = 16 * 1024 * 1024  # an archive inside an archive is read into memory up to this size


def _read_bounded(stream: IO[bytes], budget: int, member_cap: int, *, nested: bool = False
                  ) -> tuple[FileFingerprint, int, bytes | None]:
    """Fingerprints up to min(member_cap, budget) bytes; returns the fingerprint, bytes read and,
    when ``nested`` and the member is itself a zip or tar of at most NESTED_MAX bytes, its bytes
    (to read its members in turn; never written anywhere)."""
    fingerprinter = Fingerprinter()
    limit = min(member_cap, budget)
    read = 0
    kept: list[bytes] | None = None
    while read < limit:
        block = stream.read(min(_BLOCK, limit - read))
        if not block:
            return fingerprinter.finish(complete=True), read, b"".join(kept) if kept is not None else None
        if read == 0 and nested and _archive_kind(block[:512]):
            kept = []
        if kept is not None:
            kept.append(block)
            if read + len(block) > NESTED_MAX:
                kept = None  # too large to hold: its own members are left unread
        fingerprinter.feed(block)
        read += len(block)
    # At the cap: complete only if the member ends exactly here.
    complete = not stream.read(1)
    return fingerprinter.finish(complete=complete), read, None


class _Budget:
    """Uncompressed bytes an archive (and what is nested in it) may still cost."""

    def __init__(self, total: int) -> None:
        self.left = total


def _nested(data: bytes | None, name: str, limits: ArchiveLimits, budget: _Budget,
            depth: int) -> Iterator[ScannedMember]:
    if data is None or depth <= 0:
        return
    kind = _archive_kind(data[:512])
    reader = _zip_members if kind == "zip" else _tar_members
    try:
        for inner in reader(io.BytesIO(data), limits, name, budget, depth - 1):
            yield replace(inner, name=f"{name}/{inner.name}")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, RuntimeError, ValueError,
            NotImplementedError, OSError):
        return  # a corrupt inner archive: the outer member's own fingerprint still counts


def _zip_members(f: IO[bytes], limits: ArchiveLimits, path: str, budget: _Budget | None = None,
                 depth: int = 1) -> Iterator[ScannedMember]:
    budget = budget or _Budget(limits.max_total_bytes)
    with zipfile.ZipFile(f) as archive:
        for count, info in enumerate(archive.infolist()):
            if count >= limits.max_members or budget.left <= 0:
                return
            if info.is_dir() or info.flag_bits & 0x1:  # directory, or encrypted: cannot read
                continue
            with archive.open(info) as stream:
                fingerprint, read, data = _read_bounded(stream, budget.left, limits.max_member_bytes,
                                                        nested=depth > 0)
            budget.left -= read
            yield ScannedMember(info.filename, fingerprint)
            yield from _nested(data, info.filename, limits, budget, depth)


def _tar_members(f: IO[bytes], limits: ArchiveLimits, path: str, budget: _Budget | None = None,
                 depth: int = 1) -> Iterator[ScannedMember]:
    budget = budget or _Budget(limits.max_total_bytes)
    # Stream mode ("r|*"): members are read in order and the decompressor is never rewound, so a
    # compressed bomb costs at most the bytes we agree to read.
    with tarfile.open(fileobj=f, mode="r|*") as archive:
        # Moving to the next header decompresses whatever of this member we did not read, so
        # stop before a member whose end lies past what we agreed to decompress.
        stream_limit = 2 * limits.max_total_bytes
        for count in range(limits.max_members):
            member = archive.next()
            if member is None:
                return
            if member.isreg():
                stream = archive.extractfile(member)
                if stream is not None:
                    fingerprint, read, data = _read_bounded(stream, budget.left, limits.max_member_bytes,
                                                            nested=depth > 0)
                    budget.left -= read
                    yield ScannedMember(member.name, fingerprint)
                    yield from _nested(data, member.name, limits, budget, depth)
            if budget.left <= 0 or member.offset_data + member.size > stream_limit:
                return


def _archive_kind(head: bytes) -> Literal["zip", "tar", ""]:
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")):
        return "tar"  # compressed: only a tar inside is read; anything else is bad_archive
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return ""


def scan_archive(path: PathArg, *, limits: ArchiveLimits = ArchiveLimits()) -> list[ScannedMember]:
    """Fingerprints the regular members of a zip or tar (.tar, .tar.gz/.tgz, bz2, xz) file."""
    raw = os.fspath(path)
    text = os.fsdecode(raw)
    fd, _ = _open_regular(raw, text)
    with io.open(fd, "rb", closefd=True) as f:
        head = f.read(512)
        kind = _archive_kind(head)
        if not kind:
            raise ScanSkipped("not_archive", text)
        f.seek(0)
        reader = _zip_members if kind == "zip" else _tar_members
        try:
            return list(reader(f, limits, text, None, 1))
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, RuntimeError, ValueError,
                NotImplementedError, OSError) as exc:
            # RuntimeError/NotImplementedError: unsupported compression; OSError: corrupt gzip,
            # bz2 or lzma stream, or an I/O error. All mean "cannot read this archive".
            raise ScanSkipped("bad_archive", text, str(exc)) from exc


def _fine_matches(
    index: SourceIndex,
    scanned: ScannedFile,
    matches: list[Match],
    threshold: float,
    max_bytes: int,
    own_read: Callable[[str], ContextManager[None]],
) -> list[Match]:
    """Small sources whose beginning the candidate starts with, measured on fine chunks (the
    bound in ``agent.core.fingerprint``'s docstring); a source already matched as well stays."""
    if not scanned.fine:
        return matches
    known = {m.source_path: m for m in matches}
    own = {c.fingerprint: 0 for c in scanned.fine}
    for chunk in scanned.fine:
        own[chunk.fingerprint] += chunk.length
    for source in index.anchored(scanned.fine[0].fingerprint):
        current = known.get(source)
        if source == scanned.path or (current is not None and current.kind == "exact"):
            continue
        try:
            with own_read(source):
                theirs = scan_file(source, max_bytes=max_bytes, fine="all")
        except ScanSkipped:
            continue
        shared = {c.fingerprint for c in theirs.fine} & set(own)
        share = sum(c.length for c in theirs.fine if c.fingerprint in shared) / max(theirs.size, 1)
        dest_share = sum(own[fp] for fp in shared) / max(scanned.size, 1)
        better = current is None or max(share, dest_share) > max(current.share, current.dest_share)
        if max(share, dest_share) >= threshold and better:
            known[source] = Match(source, "partial", share, dest_share=dest_share)
    return sorted(known.values(), key=lambda m: (-(m.kind == "exact"), -max(m.share, m.dest_share), m.source_path))


def find_copies(
    index: SourceIndex,
    path: PathArg,
    *,
    max_bytes: int,
    limits: ArchiveLimits = ArchiveLimits(),
    min_share: float | None = None,
    own_read: Callable[[str], ContextManager[None]] = lambda path: nullcontext(),
) -> tuple[ScannedFile, list[Match]]:
    """Fingerprints a written file and says which sensitive sources it copies.

    A zip or tar (and a zip or tar inside it, one level) is read member by member first: each
    source found in a member is reported as kind "archive" with its best member and that
    member's own shares; then the whole file is matched for the sources no member holds (an
    exact copy of a sensitive archive stays "exact"). Raises ``ScanSkipped`` if the file itself
    cannot be read; a bad archive is not an error.
    """
    # Fine chunks only matter against small sources that begin as this file does (their anchor is
    # its first fine chunk) and are not already exact copies: look first, fine-chunk only then.
    scanned = scan_file(path, max_bytes=max_bytes, fine="anchor")
    text = scanned.path
    threshold = index.min_share if min_share is None else min_share
    matches = index.match(scanned.fingerprint, min_share=min_share, ignore=(text,))
    if scanned.anchor is not None:
        exact = {m.source_path for m in matches if m.kind == "exact"}
        if any(s != text and s not in exact for s in index.anchored(scanned.anchor)):
            scanned = scan_file(path, max_bytes=max_bytes, fine="all")
            matches = index.match(scanned.fingerprint, min_share=min_share, ignore=(text,))
            matches = _fine_matches(index, scanned, matches, threshold, max_bytes, own_read)
    if not (scanned.size and _looks_like_archive(path)):
        return scanned, matches
    try:
        members = scan_archive(path, limits=limits)
    except ScanSkipped:
        members = []
    exact = {m.source_path for m in matches if m.kind == "exact"}
    best: dict[str, Match] = {}
    for member in members:
        for m in index.match(member.fingerprint, min_share=min_share, ignore=(text,)):
            if m.source_path in exact:
                continue
            current = best.get(m.source_path)
            if current is None or (m.kind == "exact") > (current.kind == "exact") or (
                    (m.kind == "exact") == (current.kind == "exact") and m.share > current.share):
                best[m.source_path] = replace(m, kind="archive", member=member.name)
    whole = [m for m in matches if m.source_path not in best]
    rank = {"exact": 0, "archive": 1, "partial": 2}
    found = whole + sorted(best.values(), key=lambda m: (-m.share, m.source_path))
    return scanned, sorted(found, key=lambda m: rank[m.kind])  # stable: best first within a kind


def _looks_like_archive(path: PathArg) -> bool:
    try:
        fd = os.open(os.fspath(path), _OPEN_FLAGS)
    except OSError:
        return False
    try:
        return bool(_archive_kind(os.pread(fd, 512, 0)))
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass
class IndexBuild:
    """What building the index saw: files indexed and files skipped, by reason."""

    index: SourceIndex
    indexed: int = 0
    excluded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def build_index(
    policy: SensitiveFolderPolicy, *, index: SourceIndex | None = None
) -> IndexBuild:
    """Scans every file under the policy's sensitive folders into an index (new or given)."""
    build = IndexBuild(index or FingerprintIndex(min_share=policy.partial_match_share))
    for folder in policy.expand_sensitive_folders():
        def count_walk_error(exc: OSError) -> None:
            build.skipped["unreadable"] += 1

        for dirpath, _dirnames, filenames in os.walk(folder, onerror=count_walk_error):
            for name in filenames:
                path = os.path.join(dirpath, name)
                if policy.is_excluded(path):
                    build.excluded += 1
                    continue
                try:
                    scanned = scan_file(path, max_bytes=policy.max_hash_bytes, fine="anchor")
                except ScanSkipped as skip:
                    build.skipped[skip.reason] += 1
                    continue
                build.index.add(scanned.path, scanned.fingerprint, anchor=scanned.anchor)
                build.indexed += 1
    return build
