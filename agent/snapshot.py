"""What the sensitive folders held when last looked at: path -> (size, mtime_ns, sha256).

The agent keeps this in its state directory (``snapshot.json``) and uses it twice: on start, to
report sensitive files created, changed or deleted while it was not running (catch-up), and after a
capture gap (a kernel queue overflow), to report what the lost events would have said (rescan).
``diff_snapshots`` is pure; ``SnapshotFile`` only loads and saves atomically.

This module must never keep file content: a snapshot holds stat values and a SHA-256 per file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

__all__ = ["Change", "SnapshotEntry", "SnapshotFile", "diff_snapshots"]


@dataclass(frozen=True)
class SnapshotEntry:
    """One file as last seen; ``sha256`` is "" when it was too large or could not be read."""

    size: int
    mtime_ns: int
    sha256: str = ""


@dataclass(frozen=True)
class Change:
    """One difference between two snapshots, as the event kind it becomes."""

    kind: Literal["file.create", "file.write", "file.delete"]
    path: str
    entry: SnapshotEntry | None  # the new entry; None for a delete


def diff_snapshots(
    before: Mapping[str, SnapshotEntry], after: Mapping[str, SnapshotEntry]
) -> list[Change]:
    """Returns creates, writes (content or size/mtime changed) and deletes, each sorted by path."""
    changes = [Change("file.create", p, after[p]) for p in sorted(set(after) - set(before))]
    for path in sorted(set(after) & set(before)):
        old, new = before[path], after[path]
        if old.sha256 and new.sha256:
            changed = old.sha256 != new.sha256
        else:
            changed = (old.size, old.mtime_ns) != (new.size, new.mtime_ns)
        if changed:
            changes.append(Change("file.write", path, new))
    changes += [Change("file.delete", p, None) for p in sorted(set(before) - set(after))]
    return changes


class SnapshotFile:
    """The snapshot on disk: JSON, replaced atomically (write, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        """Tells whether an earlier run left a snapshot."""
        return self.path.exists()

    def load(self) -> dict[str, SnapshotEntry]:
        """Returns the saved snapshot; an unreadable or corrupt file counts as none."""
        try:
            with open(self.path, "rb") as f:
                raw = json.load(f)
            return {p: SnapshotEntry(int(v[0]), int(v[1]), str(v[2])) for p, v in raw["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return {}

    def save(self, entries: Mapping[str, SnapshotEntry]) -> None:
        """Writes the snapshot so that a crash leaves either the old or the new one."""
        tmp = self.path.with_suffix(".tmp")
        payload = {"version": 1, "files": {p: [e.size, e.mtime_ns, e.sha256] for p, e in entries.items()}}
        # Paths may hold undecodable bytes (surrogates): keep them exactly with surrogateescape.
        data = json.dumps(payload, ensure_ascii=True).encode("ascii")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
