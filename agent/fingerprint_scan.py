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
from typing import IO, Final, Iterator, Literal

from agent.core.fingerprint import FileFingerprint, Fingerprinter
from agent.core.index import FingerprintIndex, Match
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


def scan_file(path: PathArg, *, max_bytes: int) -> ScannedFile:
    """Fingerprints the first ``max_bytes`` of a regular file, or raises ``ScanSkipped``."""
    raw = os.fspath(path)
    text = os.fsdecode(raw)
    fd, opened = _open_regular(raw, text)
    try:
        fingerprinter = Fingerprinter()
        remaining = max_bytes
        while remaining > 0:
            try:
                block = os.read(fd, min(_BLOCK, remaining))
            except OSError as exc:
                raise _skip_for(exc, text) from exc
            if not block:
                break
            fingerprinter.feed(block)
            remaining -= len(block)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (opened.st_size, opened.st_mtime_ns):
        raise ScanSkipped("changed", text, "written while hashed")
    complete = remaining > 0 or after.st_size <= max_bytes
    return ScannedFile(
        path=text,
        size=after.st_size,
        mtime_ns=after.st_mtime_ns,
        dev=after.st_dev,
        ino=after.st_ino,
        fingerprint=fingerprinter.finish(complete=complete),
    )


def _read_bounded(stream: IO[bytes], budget: int, member_cap: int) -> tuple[FileFingerprint, int]:
    """Fingerprints up to min(member_cap, budget) bytes; returns the fingerprint and bytes read."""
    fingerprinter = Fingerprinter()
    limit = min(member_cap, budget)
    read = 0
    while read < limit:
        block = stream.read(min(_BLOCK, limit - read))
        if not block:
            return fingerprinter.finish(complete=True), read
        fingerprinter.feed(block)
        read += len(block)
    # At the cap: complete only if the member ends exactly here.
    complete = not stream.read(1)
    return fingerprinter.finish(complete=complete), read


def _zip_members(f: IO[bytes], limits: ArchiveLimits, path: str) -> Iterator[ScannedMember]:
    budget = limits.max_total_bytes
    with zipfile.ZipFile(f) as archive:
        for count, info in enumerate(archive.infolist()):
            if count >= limits.max_members or budget <= 0:
                return
            if info.is_dir() or info.flag_bits & 0x1:  # directory, or encrypted: cannot read
                continue
            with archive.open(info) as stream:
                fingerprint, read = _read_bounded(stream, budget, limits.max_member_bytes)
            budget -= read
            yield ScannedMember(info.filename, fingerprint)


def _tar_members(f: IO[bytes], limits: ArchiveLimits, path: str) -> Iterator[ScannedMember]:
    budget = limits.max_total_bytes
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
                    fingerprint, read = _read_bounded(stream, budget, limits.max_member_bytes)
                    budget -= read
                    yield ScannedMember(member.name, fingerprint)
            if budget <= 0 or member.offset_data + member.size > stream_limit:
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
            return list(reader(f, limits, text))
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, RuntimeError, ValueError,
                NotImplementedError, OSError) as exc:
            # RuntimeError/NotImplementedError: unsupported compression; OSError: corrupt gzip,
            # bz2 or lzma stream, or an I/O error. All mean "cannot read this archive".
            raise ScanSkipped("bad_archive", text, str(exc)) from exc


def find_copies(
    index: FingerprintIndex,
    path: PathArg,
    *,
    max_bytes: int,
    limits: ArchiveLimits = ArchiveLimits(),
    min_share: float | None = None,
) -> tuple[ScannedFile, list[Match]]:
    """Fingerprints a written file and says which sensitive sources it copies.

    Whole-file matches come first; if the file is a zip or tar, each source found in a member
    is reported once more as kind "archive" with its best member, unless already matched whole.
    Raises ``ScanSkipped`` if the file itself cannot be read; a bad archive is not an error.
    """
    scanned = scan_file(path, max_bytes=max_bytes)
    text = scanned.path
    matches = index.match(scanned.fingerprint, min_share=min_share, ignore=(text,))
    if scanned.size and _looks_like_archive(path):
        try:
            members = scan_archive(path, limits=limits)
        except ScanSkipped:
            members = []
        seen = {m.source_path for m in matches}
        best: dict[str, Match] = {}
        for member in members:
            for m in index.match(member.fingerprint, min_share=min_share, ignore=(text,)):
                if m.source_path in seen:
                    continue
                current = best.get(m.source_path)
                if current is None or m.share > current.share:
                    best[m.source_path] = replace(m, kind="archive", member=member.name)
        matches.extend(sorted(best.values(), key=lambda m: (-m.share, m.source_path)))
    return scanned, matches


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

    index: FingerprintIndex
    indexed: int = 0
    excluded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def build_index(
    policy: SensitiveFolderPolicy, *, index: FingerprintIndex | None = None
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
                    scanned = scan_file(path, max_bytes=policy.max_hash_bytes)
                except ScanSkipped as skip:
                    build.skipped[skip.reason] += 1
                    continue
                build.index.add(scanned.path, scanned.fingerprint)
                build.indexed += 1
    return build
