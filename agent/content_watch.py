"""Sensitive content at run time: the fingerprint index, the snapshot, and copy detection.

One worker thread owns the ``FingerprintIndex`` and the snapshot (path -> size, mtime, sha256) of
the sensitive folders; sources hand it work through a bounded queue (a full queue blocks the
source: backpressure, never a drop). Its tasks, in order of arrival:

* the first scan at start: index every sensitive file and, when an earlier run left a snapshot,
  report what changed meanwhile (``attributes.catch_up``);
* a write inside a sensitive folder: reported at once by the caller's thread, re-fingerprinted here
  (coalesced per path, so a burst of writes does not stall the source);
* a write elsewhere (destinations, removable media): ``find_copies`` against the index and report
  ``file.copy`` or ``usb.write`` with ``source_paths``, ``match`` and ``match_share``, and whether the
  same process read the source shortly before (``RecentReads``);
* deletes and moves: keep index and snapshot current;
* a file that appears in a destination by a rename (no close-write to fingerprint): when its inode is
  a sensitive file's, or was one's within ``DEPARTED_TTL_S``, report ``file.move`` out of the
  sensitive folder (``attributes.moved_out``);
* a rescan after a capture gap: compare the folders with the snapshot (``attributes.rescan``).

It must never send content: only hashes, sizes and paths leave in events. Files it cannot read are
counted by ``ScanSkipped`` reason in ``skipped`` and reported without a hash, never raised.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from collections import Counter
from typing import Callable, ContextManager, Iterator

from agent.core.events import FileEvent
from agent.core.fingerprint import FingerprintIndex, Match
from agent.fingerprint_scan import ScanSkipped, ScannedFile, find_copies, scan_file
from agent.policy import SensitiveFolderPolicy
from agent.snapshot import SnapshotEntry, SnapshotFile, diff_snapshots
from agent.sources.removable import RemovableMount

__all__ = ["ContentWatch", "RecentReads"]

log = logging.getLogger("shoumi.agent.content")
_STOP = object()


class RecentReads:
    """pid -> the sensitive files it opened lately, bounded in pids and in paths per pid."""

    def __init__(self, *, max_pids: int = 4096, per_pid: int = 64) -> None:
        self._reads: collections.OrderedDict[int, collections.deque[tuple[str, int]]] = collections.OrderedDict()
        self._max_pids = max_pids
        self._per_pid = per_pid
        self._lock = threading.Lock()

    def note(self, pid: int, path: str, time_ns: int) -> None:
        """Remembers that ``pid`` read ``path`` at ``time_ns``."""
        with self._lock:
            reads = self._reads.get(pid)
            if reads is None:
                reads = self._reads[pid] = collections.deque(maxlen=self._per_pid)
                if len(self._reads) > self._max_pids:
                    self._reads.popitem(last=False)
            self._reads.move_to_end(pid)
            reads.append((path, time_ns))

    def last_read(self, pid: int, sources: set[str], *, since_ns: int) -> tuple[str, int] | None:
        """The latest read by ``pid`` of one of ``sources`` at or after ``since_ns``."""
        with self._lock:
            for path, when in reversed(self._reads.get(pid, ())):
                if when >= since_ns and path in sources:
                    return path, when
        return None


@dataclasses.dataclass(frozen=True)
class _Write:
    event: FileEvent
    removable: RemovableMount | None


@dataclasses.dataclass(frozen=True)
class _Scan:
    reason: str  # "start" or "rescan"


@dataclasses.dataclass(frozen=True)
class _Forget:
    path: str


@dataclasses.dataclass(frozen=True)
class _Index:
    path: str


@dataclasses.dataclass(frozen=True)
class _Arrival:
    event: FileEvent


DEPARTED_TTL_S = 300.0
_DEPARTED_MAX = 10_000


class ContentWatch:
    """The worker that owns the index and the snapshot; ``submit_*`` from any thread."""

    def __init__(
        self,
        policy: SensitiveFolderPolicy,
        emit: Callable[[FileEvent], None],
        snapshot: SnapshotFile,
        *,
        own_read: Callable[[str], ContextManager[None]] = lambda path: contextlib.nullcontext(),
        queue_size: int = 10_000,
        read_window_s: float = 300.0,
    ) -> None:
        self.policy = policy
        self.emit = emit
        self.snapshot = snapshot
        self.own_read = own_read
        self.recent_reads = RecentReads()
        self.read_window_ns = int(read_window_s * 1e9)
        self.index = FingerprintIndex(min_share=policy.partial_match_share)
        self.skipped: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.ready = threading.Event()  # set once the first scan is done
        self._entries: dict[str, SnapshotEntry] = {}
        self._entries_lock = threading.Lock()
        self._dirty = False
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        # which sensitive file each inode is, and the ones that left recently (a rename away from a
        # sensitive folder is seen as a delete there and a create elsewhere, in either order)
        self._inodes: dict[tuple[int, int], str] = {}
        self._inode_of: dict[str, tuple[int, int]] = {}
        self._departed: collections.OrderedDict[tuple[int, int], tuple[str, SnapshotEntry | None, float]] = (
            collections.OrderedDict())
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="content-watch", daemon=True)

    def start(self) -> None:
        """Starts the worker; its first task indexes the sensitive folders and catches up."""
        self._queue.put(_Scan("start"))
        self._thread.start()

    def stop(self) -> None:
        """Finishes the queued work, saves the snapshot and stops the worker."""
        self._queue.put(_STOP)
        self._thread.join()

    def pending(self) -> int:
        """Tasks waiting in the queue."""
        return self._queue.qsize()

    def submit_write(self, event: FileEvent, *, sensitive: bool, removable: RemovableMount | None) -> None:
        """A closed-after-write file: a sensitive one is reported now and re-indexed later (one
        pending re-index per path, so a burst of writes costs one queue slot per file); any
        other is queued for copy detection."""
        if sensitive:
            self.emit(event)
            with self._pending_lock:
                if event.path in self._pending:
                    return
                self._pending.add(event.path)
            self._queue.put(_Index(event.path))
        else:
            self._queue.put(_Write(event, removable))

    def submit_delete(self, path: str) -> None:
        """Queues forgetting a sensitive file that was deleted or moved away."""
        self._queue.put(_Forget(path))

    def submit_index(self, path: str) -> None:
        """Queues (re-)indexing one sensitive file (moved in)."""
        self._queue.put(_Index(path))

    def submit_arrival(self, event: FileEvent) -> None:
        """Queues a file that appeared in a destination, to tell a move out of a sensitive folder."""
        self._queue.put(_Arrival(event))

    def submit_rescan(self) -> None:
        """Queues a rescan of the sensitive folders against the snapshot."""
        self._queue.put(_Scan("rescan"))

    def save(self) -> None:
        """Saves the snapshot if it changed since the last save."""
        with self._entries_lock:
            if not self._dirty:
                return
            entries = dict(self._entries)
            self._dirty = False
        try:
            self.snapshot.save(entries)
        except OSError as exc:
            log.warning("could not save the snapshot %s: %s", self.snapshot.path, exc)

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            if task is _STOP:
                self.save()
                return
            try:
                self._do(task)
            except Exception:  # one odd file must never stop copy detection
                self.counters["worker_errors"] += 1
                log.exception("content task %r failed", task)

    def _do(self, task: object) -> None:
        if isinstance(task, _Write):
            self._check_copy(task.event, task.removable)
        elif isinstance(task, _Forget):
            self.index.remove(task.path)
            entry = self._entries_known(task.path)
            self._set_entry(task.path, None)
            self._forget_inode(task.path, entry)
        elif isinstance(task, _Arrival):
            self._check_arrival(task.event)
        elif isinstance(task, _Index):
            with self._pending_lock:
                self._pending.discard(task.path)
            self._scan_one(task.path)
        elif isinstance(task, _Scan):
            self._scan_all(task.reason)

    def _set_entry(self, path: str, entry: SnapshotEntry | None) -> None:
        with self._entries_lock:
            if entry is None:
                if self._entries.pop(path, None) is not None:
                    self._dirty = True
            elif self._entries.get(path) != entry:
                self._entries[path] = entry
                self._dirty = True

    def _scan_one(self, path: str) -> ScannedFile | None:
        try:
            with self.own_read(path):
                scanned = scan_file(path, max_bytes=self.policy.max_hash_bytes)
        except ScanSkipped as skip:
            self.skipped[skip.reason] += 1
            if skip.reason in ("vanished", "not_regular", "symlink"):
                self.index.remove(path)
                self._set_entry(path, None)
            return None
        self.index.add(path, scanned.fingerprint)
        self._set_entry(path, _entry(scanned))
        self._note_inode(path, (scanned.dev, scanned.ino))
        return scanned

    def _note_inode(self, path: str, key: tuple[int, int]) -> None:
        old = self._inode_of.get(path)
        if old is not None and old != key and self._inodes.get(old) == path:
            del self._inodes[old]
        self._inode_of[path] = key
        self._inodes[key] = path

    def _forget_inode(self, path: str, entry: SnapshotEntry | None) -> None:
        key = self._inode_of.pop(path, None)
        if key is None or self._inodes.get(key) != path:
            return
        del self._inodes[key]
        self._departed[key] = (path, entry, time.monotonic())
        while len(self._departed) > _DEPARTED_MAX:
            self._departed.popitem(last=False)

    def _check_arrival(self, event: FileEvent) -> None:
        try:
            st = os.lstat(event.path)
        except OSError:
            return  # gone again already
        key = (st.st_dev, st.st_ino)
        source = self._inodes.get(key)
        entry = self._entries_known(source) if source else None
        if source is None:
            departed = self._departed.get(key)
            if departed is None or time.monotonic() - departed[2] > DEPARTED_TTL_S:
                return
            source, entry = departed[0], departed[1]
        if source == event.path:
            return
        self.counters["moves_out"] += 1
        self.emit(dataclasses.replace(
            event, kind="file.move", path=source, dest_path=event.path, size=st.st_size,
            sha256=entry.sha256 if entry else "",
            attributes={**dict(event.attributes), "moved_out": True, "source_paths": [source], "match": "exact",
                        "match_share": 1.0, "same_inode": True},
        ))

    def _check_copy(self, event: FileEvent, removable: RemovableMount | None) -> None:
        path = event.path
        matches: list[Match] = []
        size = event.size
        sha256 = event.sha256
        try:
            scanned, matches = find_copies(
                self.index, path, max_bytes=self.policy.max_hash_bytes,
                min_share=self.policy.partial_match_share,
            )
            size, sha256 = scanned.size, _sha(scanned)
        except ScanSkipped as skip:
            self.skipped[skip.reason] += 1
        if not matches and removable is None:
            return  # a write outside the sensitive folders that copies nothing is none of our business
        attributes = dict(event.attributes)
        if matches:
            best = matches[0]
            sources = [m.source_path for m in matches]
            attributes.update(
                source_paths=sources,
                match="exact" if any(m.kind == "exact" for m in matches) else best.kind,
                match_share=round(best.share, 4),
            )
            members = [m.member for m in matches if m.member]
            if members:
                attributes["archive_members"] = members
            if event.pid > 0:
                read = self.recent_reads.last_read(
                    event.pid, set(sources), since_ns=event.time_unix_ns - self.read_window_ns
                )
                if read is not None:
                    attributes["read_by_same_process"] = True
                    attributes["read_source"] = read[0]
                    attributes["read_time"] = read[1] / 1e9
            self.counters["copies"] += 1
        if removable is not None:
            attributes.update(mountpoint=removable.mountpoint, device=removable.device)
            self.counters["usb_writes"] += 1
            self.emit(dataclasses.replace(event, kind="usb.write", size=size, sha256=sha256,
                                          attributes=attributes))
        else:
            self.emit(dataclasses.replace(
                event, kind="file.copy", path=matches[0].source_path, dest_path=path, size=size,
                sha256=sha256, attributes=attributes,
            ))

    def _scan_all(self, reason: str) -> None:
        started = time.monotonic()
        with self._entries_lock:
            before = dict(self._entries)
        saved = reason == "start" and self.snapshot.exists()
        if saved:
            before = self.snapshot.load()
        after: dict[str, SnapshotEntry] = {}
        for path in self._walk():
            old = before.get(path)
            known = self._entries_known(path)
            if known is not None and old is not None and path in self.index:
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if (st.st_size, st.st_mtime_ns) == (old.size, old.mtime_ns):
                    after[path] = old  # unchanged and indexed: no need to read it again
                    self._note_inode(path, (st.st_dev, st.st_ino))
                    continue
            scanned = self._scan_one(path)
            if scanned is not None:
                after[path] = _entry(scanned)
        for stale in set(self.index.paths()) - set(after):
            self.index.remove(stale)
            self._forget_inode(stale, before.get(stale))
        with self._entries_lock:
            self._entries = after
            self._dirty = True
        if reason == "rescan" or saved:
            flag = "rescan" if reason == "rescan" else "catch_up"
            for change in diff_snapshots(before, after):
                entry = change.entry
                self.emit(FileEvent(
                    kind=change.kind, time_unix_ns=time.time_ns(), path=change.path,
                    size=entry.size if entry else -1, sha256=entry.sha256 if entry else "",
                    attributes={flag: True, "source": flag},
                ))
                self.counters[f"{flag}_changes"] += 1
        self.save()
        self.counters["index_files"] = len(self.index)
        log.info("%s scan: %d sensitive files indexed in %.2f s", reason, len(after), time.monotonic() - started)
        self.ready.set()

    def _entries_known(self, path: str) -> SnapshotEntry | None:
        with self._entries_lock:
            return self._entries.get(path)

    def _walk(self) -> Iterator[str]:
        for folder in self.policy.expand_sensitive_folders():
            def count_error(exc: OSError) -> None:
                self.skipped["unreadable"] += 1

            for dirpath, _dirs, names in os.walk(folder, onerror=count_error):
                for name in names:
                    path = os.path.join(dirpath, name)
                    if not self.policy.is_excluded(path):
                        yield path


def _entry(scanned: ScannedFile) -> SnapshotEntry:
    return SnapshotEntry(scanned.size, scanned.mtime_ns, _sha(scanned))


def _sha(scanned: ScannedFile) -> str:
    return scanned.fingerprint.sha256 if scanned.fingerprint.complete else ""
