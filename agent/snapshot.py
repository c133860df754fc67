"""What the sensitive folders held when last reported: path -> (size, mtime_ns, sha256).

The agent uses it twice: on start, to report sensitive files created, changed or deleted while it
was not running (catch-up), and after a capture gap (a kernel queue overflow), to report what the
lost events would have said (rescan).

Crash consistency. The snapshot lives in the spool's SQLite file and every change to it travels
with the event that reports it (``Recorded``): the spool applies an event's ``updates`` in the
same transaction that stores the event, and only if the event is accepted. So after any crash
the durable snapshot is exactly what the durable events say each file was, and the catch-up
reports only what changed since, never a change already reported (no phantom), never skipping one
whose event was lost with the process (no miss). Updates without an event (the first run's
baseline, a hash learnt for a file whose size and time did not change) describe nothing
unreported and may be committed on their own.

``diff_snapshots`` is pure; the store is ``agent.spool.Spool``; ``LegacySnapshotFile`` only reads
the ``snapshot.json`` that versions before the spool-held snapshot left.

This module must never keep file content: a snapshot holds stat values and a SHA-256 per file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Protocol

from agent.core.events import FileEvent

__all__ = [
    "Change",
    "LegacySnapshotFile",
    "Recorded",
    "SnapshotEntry",
    "SnapshotStore",
    "SnapshotUpdate",
    "diff_snapshots",
]


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """One file as last seen; ``sha256`` is "" when it was too large or could not be read."""

    size: int
    mtime_ns: int
    sha256: str = ""


SnapshotUpdate = tuple[str, SnapshotEntry | None]  # None: the file is gone


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event (or none) and the snapshot changes it accounts for, stored in one transaction.

    ``reset`` empties the snapshot first (a first run starting its baseline afresh); ``baseline``
    marks the snapshot complete (a later start may catch up against it).
    """

    event: FileEvent | None
    updates: tuple[SnapshotUpdate, ...] = ()
    reset: bool = False
    baseline: bool = False


@dataclass(frozen=True)
class Change:
    """One difference between two snapshots, as the event kind it becomes."""

    kind: Literal["file.create", "file.write", "file.delete"]
    path: str
    entry: SnapshotEntry | None  # the new entry; None for a delete


def same_content(old: SnapshotEntry, new: SnapshotEntry) -> bool:
    """Tells whether two entries describe the same content (by hash when both have one)."""
    if old.sha256 and new.sha256:
        return old.sha256 == new.sha256
    return (old.size, old.mtime_ns) == (new.size, new.mtime_ns)


def diff_snapshots(
    before: Mapping[str, SnapshotEntry], after: Mapping[str, SnapshotEntry]
) -> list[Change]:
    """Returns creates, writes (content or size/mtime changed) and deletes, each sorted by path."""
    changes = [Change("file.create", p, after[p]) for p in sorted(set(after) - set(before))]
    for path in sorted(set(after) & set(before)):
        if not same_content(before[path], after[path]):
            changes.append(Change("file.write", path, after[path]))
    changes += [Change("file.delete", p, None) for p in sorted(set(before) - set(after))]
    return changes


class SnapshotStore(Protocol):
    """Where the durable snapshot is read back from (the spool)."""

    def snapshot_baseline(self) -> bool:
        """Tells whether a complete snapshot was recorded by an earlier run."""
        ...

    def load_snapshot(self) -> dict[str, SnapshotEntry]:
        """Returns the durable snapshot."""
        ...


class LegacySnapshotFile:
    """``snapshot.json`` of earlier versions, read once so an upgrade still catches up."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, SnapshotEntry] | None:
        """Returns the saved snapshot, or None when there is none or it is unreadable."""
        try:
            with open(self.path, "rb") as f:
                raw = json.load(f)
            return {p: SnapshotEntry(int(v[0]), int(v[1]), str(v[2])) for p, v in raw["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
