"""Reading a bundle zip into memory, refusing what a hostile file could do. Writes nothing, anywhere.

Refused, each with ``ArchiveError`` naming why: a file that is not a zip; more than ``MAX_MEMBERS``
entries; more than ``MAX_TOTAL`` bytes declared uncompressed, or a member whose declared size is more
than ``MAX_RATIO`` times its compressed size (a zip bomb); a member that inflates to more than it
declared (zipfile stops at the declared size and the CRC check fails); names that are absolute, hold
``..``, a backslash, a drive letter or a control character; directories, links and anything that is
not a plain file; the same name twice; encrypted members.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

__all__ = ["ArchiveError", "read_members", "MAX_MEMBERS", "MAX_TOTAL", "MAX_RATIO", "MAX_FILE"]

MAX_FILE = 1 << 30          # the zip file itself
MAX_MEMBERS = 20_000
MAX_TOTAL = 1 << 30         # declared uncompressed bytes, all members together
MAX_RATIO = 200             # declared size / compressed size, for members over RATIO_FLOOR bytes
RATIO_FLOOR = 1 << 20


class ArchiveError(Exception):
    """A bundle that cannot be read safely; ``code`` names the check (see shoumi_verify/texts.py)."""

    def __init__(self, code: str, **detail: object) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


def _unsafe_name(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        return True
    if len(name) > 2 and name[1] == ":":  # C:...
        return True
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        return True
    parts = name.split("/")
    return any(p in ("", ".", "..") for p in parts)


def read_members(path: Path) -> dict[str, bytes]:
    """Every member of the zip at ``path``, by name, read in memory after the checks above."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ArchiveError("archive.unreadable", reason=exc.strerror or str(exc)) from exc
    if size > MAX_FILE:
        raise ArchiveError("archive.too_large", size=size, limit=MAX_FILE)
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ArchiveError("archive.not_zip", reason=str(exc)[:200]) from exc
    with z:
        infos = z.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ArchiveError("archive.too_many", count=len(infos), limit=MAX_MEMBERS)
        seen: set[str] = set()
        total = 0
        for info in infos:
            name = info.filename
            if _unsafe_name(name):
                raise ArchiveError("archive.unsafe_name", name=name[:200])
            if name in seen:
                raise ArchiveError("archive.duplicate", name=name)
            seen.add(name)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: the zip tool gave no file type
            if info.is_dir() or (kind and kind != stat.S_IFREG):
                raise ArchiveError("archive.not_file", name=name)
            if info.flag_bits & 0x1:
                raise ArchiveError("archive.encrypted", name=name)
            total += info.file_size
            if total > MAX_TOTAL:
                raise ArchiveError("archive.bomb", name=name, reason=f"more than {MAX_TOTAL} bytes uncompressed")
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise ArchiveError("archive.bomb", name=name,
                                   reason=f"{info.file_size} bytes from {info.compress_size} compressed")
        out: dict[str, bytes] = {}
        for info in infos:
            try:
                with z.open(info) as member:
                    data = member.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
                raise ArchiveError("archive.corrupt", name=info.filename, reason=str(exc)[:200]) from exc
            if len(data) != info.file_size:
                raise ArchiveError("archive.corrupt", name=info.filename, reason="size differs from the declared one")
            out[info.filename] = data
        return out
