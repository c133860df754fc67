"""Sensitive content at run time: the fingerprint index, the snapshot, and copy detection.

One worker thread owns the ``FingerprintIndex`` and the snapshot (path -> size, mtime, sha256) of
the sensitive folders; sources hand it work through a bounded queue (a full queue blocks the
source: backpressure, never a drop). Its tasks, in order of arrival:

* the first scan at start: index every sensitive file and, when an earlier run left a complete
  snapshot, report what changed meanwhile (``attributes.catch_up``);
* a write inside a sensitive folder: re-fingerprinted here (coalesced per path, so a burst of
  writes does not stall the source) and reported with the size and hash that were read;
* a write elsewhere (destinations, removable media): ``find_copies`` against the index and report
  ``file.copy`` or ``usb.write`` with ``source_paths``, ``match`` and ``match_share``, and whether the
  same process read the source shortly before (``RecentReads``);
* creates, deletes and moves in sensitive folders: reported from here, so that each event and
  the snapshot change it makes are stored together (``Recorded``; see ``agent.snapshot``), and a
  file the start scan already reported is not reported created a second time;
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
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from agent.core.events import FileEvent
from agent.content_store import ContentStore
from agent.core.index import Match
from agent.fingerprint_scan import ScanSkipped, ScannedFile, find_copies, scan_file
from agent.policy import SensitiveFolderPolicy
from agent.snapshot import (
    LegacySnapshotFile,
    Recorded,
    SnapshotEntry,
    SnapshotStore,
    SnapshotUpdate,
)
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
class _Change:
    event: FileEvent  # a create, delete or move in (or into) a sensitive folder


@dataclasses.dataclass(frozen=True)
class _Index:
    path: str


@dataclasses.dataclass(frozen=True)
class _Arrival:
    event: FileEvent


DEPARTED_TTL_S = 300.0
_DEPARTED_MAX = 10_000
_SCAN_SEEN_NS = 30 * 10**9  # how long a live create is checked against the last full scan
_STATE_CHUNK = 1000  # snapshot rows per state-only record (the first run's baseline)
_STATE_AHEAD = 4 * _STATE_CHUNK  # baseline rows handed to the recorder ahead of the spool at most
_STATE_WAIT_S = 5.0


class ContentWatch:
    """The worker that owns the index and the snapshot; ``submit_*`` from any thread.

    ``emit`` receives plain events and ``Recorded`` ones (an event with the snapshot changes it
    accounts for, to be stored in one transaction); ``store`` is where the durable snapshot is read
    back at start (the spool).
    """

    def __init__(
        self,
        policy: SensitiveFolderPolicy,
        emit: Callable[[FileEvent | Recorded], None],
        store: SnapshotStore,
        *,
        legacy: LegacySnapshotFile | None = None,
        own_read: Callable[[str], ContextManager[None]] | None = None,
        queue_size: int = 1_000,
        read_window_s: float = 300.0,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        """``state_path``: the file of the worker's state (entries, inodes, index; see
        ``agent.content_store``), emptied at start; None keeps it in a temporary file."""
        self.policy = policy
        self.emit = emit
        self.store = store
        self.legacy = legacy
        self.own_read: Callable[[str], ContextManager[None]] = own_read or (lambda path: contextlib.nullcontext())
        self.recent_reads = RecentReads()
        self.read_window_ns = int(read_window_s * 1e9)
        self._store = ContentStore(state_path, min_share=policy.partial_match_share)
        self.index = self._store.index
        self.skipped: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.ready = threading.Event()  # set once the first scan is done
        # sensitive writes waiting for their re-index, per path: one queue slot per path however
        # many writes, and each write is reported with the hash of what its re-index read
        self._pending: dict[str, list[FileEvent]] = {}
        self._pending_lock = threading.Lock()
        # which sensitive file each inode is (in the store), and the ones that left recently (a rename
        # away from a sensitive folder is seen as a delete there and a create elsewhere, in either order)
        self._departed: collections.OrderedDict[int, tuple[str, SnapshotEntry | None, float]] = (
            collections.OrderedDict())
        # what the last full scan found (path -> inode, in the store) is kept until the events
        # queued meanwhile are done
        self._scan_done_ns = 0
        # sensitive files whose close-write came before their create: in the durable snapshot only
        # once their create is reported, or a crash between the two would lose the create
        self._awaiting_create: set[str] = set()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        # The first task, queued before any source can submit one: a live event is never handled
        # before the start scan has loaded the durable snapshot and caught up.
        self._queue.put(_Scan("start"))
        self._thread = threading.Thread(target=self._run, name="content-watch", daemon=True)

    def start(self) -> None:
        """Starts the worker; its first task indexes the sensitive folders and catches up."""
        self._thread.start()

    def stop(self) -> None:
        """Finishes the queued work and stops the worker."""
        self._queue.put(_STOP)
        self._thread.join()

    def pending(self) -> int:
        """Tasks waiting in the queue."""
        return self._queue.qsize()

    def submit_write(self, event: FileEvent, *, sensitive: bool, removable: RemovableMount | None) -> None:
        """A closed-after-write file: a sensitive one is re-indexed and reported with its hash and
        snapshot entry (writes to one path coalesce into one re-index); any other is queued for
        copy detection."""
        if sensitive:
            with self._pending_lock:
                waiting = self._pending.get(event.path)
                if waiting is not None:
                    waiting.append(event)
                    return
                self._pending[event.path] = [event]
            self._queue.put(_Index(event.path))
        else:
            self._queue.put(_Write(event, removable))

    def submit_change(self, event: FileEvent) -> None:
        """Queues a create, delete or move in (or into) a sensitive folder: reported with the
        snapshot change it makes."""
        self._queue.put(_Change(event))

    def submit_index(self, path: str) -> None:
        """Queues indexing one sensitive file that no event reports (its folder became sensitive)."""
        with self._pending_lock:
            if path in self._pending:
                return
            self._pending[path] = []
        self._queue.put(_Index(path))

    def submit_arrival(self, event: FileEvent) -> None:
        """Queues a file that appeared in a destination, to tell a move out of a sensitive folder."""
        self._queue.put(_Arrival(event))

    def submit_rescan(self) -> None:
        """Queues a rescan of the sensitive folders against the snapshot."""
        self._queue.put(_Scan("rescan"))

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            if task is _STOP:
                return
            try:
                self._do(task)
            except Exception:  # one odd file must never stop copy detection
                self.counters["worker_errors"] += 1
                log.exception("content task %r failed", task)
            if self._store.scan_seen_active and time.time_ns() > self._scan_done_ns + _SCAN_SEEN_NS:
                # Events from during the scan have long been handled. (Not "when the queue is
                # empty": a source may not have handed over its event from during the scan yet.)
                self._store.clear_scan_seen()
            self._store.maybe_commit(idle=self._queue.empty())

    def _do(self, task: object) -> None:
        if isinstance(task, _Write):
            self._check_copy(task.event, task.removable)
        elif isinstance(task, _Change):
            self._change(task.event)
        elif isinstance(task, _Arrival):
            self._check_arrival(task.event)
        elif isinstance(task, _Index):
            self._reindex(task.path)
        elif isinstance(task, _Scan):
            self._scan_all(task.reason)

    def _reindex(self, path: str) -> None:
        with self._pending_lock:
            events = self._pending.pop(path, [])
        unknown = events and self._entries_known(path) is None and path not in self._awaiting_create
        scanned = self._scan_one(path)
        update: tuple[SnapshotUpdate, ...] = ((path, self._entries_known(path)),)
        if unknown or path in self._awaiting_create:
            self._awaiting_create.add(path)
            update = ()  # its create, when it comes, carries the entry
        for event in events[:-1]:
            self.emit(event)  # superseded by a later write: the state travels with the last one
        last = events[-1] if events else None
        if last is not None and scanned is not None:
            last = dataclasses.replace(last, size=scanned.size, sha256=_sha(scanned))
        self.emit(Recorded(last, update))

    def _change(self, event: FileEvent) -> None:
        path = event.path
        if event.kind == "file.create":
            try:
                st = os.lstat(path)
            except OSError:
                st = None
            if path in self._awaiting_create:
                self._awaiting_create.discard(path)
                self.emit(Recorded(event, ((path, self._entries_known(path)),)))
                return
            seen = self._store.pop_scan_seen(path)
            if st is not None and seen == _inode(st.st_dev, st.st_ino) and event.time_unix_ns < self._scan_done_ns:
                return  # created while the scan ran, which found (and reported) this very file
            with self._pending_lock:
                written = path in self._pending
            # A new file's close-write usually follows its create: that re-index reads it once.
            scanned = None if written else self._scan_one(path)
            entry = self._entries_known(path)
            if written and st is not None:
                # Exists, content not yet reported: an entry no file can equal, so that if the
                # close-write's report is lost with the process, the catch-up reports the content.
                entry = SnapshotEntry(-1, 0)
                self._set_entry(path, entry)
            elif entry is None and st is not None and self.policy.is_sensitive(path):
                # being written (or unreadable): what it is now; its close-write brings the hash
                entry = SnapshotEntry(st.st_size, st.st_mtime_ns)
                self._set_entry(path, entry)
            if scanned is not None:
                event = dataclasses.replace(event, size=scanned.size, sha256=_sha(scanned))
            self.emit(Recorded(event, ((path, entry),)))
        elif event.kind == "file.delete":
            self._store.pop_scan_seen(path)
            self._awaiting_create.discard(path)
            self.emit(Recorded(event, (self._forget(path),)))
        elif event.kind == "file.move":
            updates: list[SnapshotUpdate] = []
            if self.policy.is_sensitive(path):
                updates.append(self._forget(path))
            dest = event.dest_path
            if self.policy.is_sensitive(dest) and not self.policy.is_excluded(dest):
                self._scan_one(dest)
                updates.append((dest, self._entries_known(dest)))
            self.emit(Recorded(event, tuple(updates)))
        else:
            self.emit(event)

    def _forget(self, path: str) -> SnapshotUpdate:
        self.index.remove(path)
        entry = self._entries_known(path)
        self._set_entry(path, None)
        self._forget_inode(path, entry)
        return (path, None)

    def _set_entry(self, path: str, entry: SnapshotEntry | None) -> None:
        self._store.set_entry(path, entry)

    def _scan_one(self, path: str) -> ScannedFile | None:
        try:
            with self.own_read(path) if self.policy.is_sensitive(path) else contextlib.nullcontext():
                scanned = scan_file(path, max_bytes=self.policy.max_hash_bytes, fine="anchor")
        except ScanSkipped as skip:
            self.skipped[skip.reason] += 1
            if skip.reason in ("vanished", "not_regular", "symlink"):
                self.index.remove(path)
                self._set_entry(path, None)
            return None
        self.index.add(path, scanned.fingerprint, anchor=scanned.anchor)
        self._set_entry(path, _entry(scanned))
        self._note_inode(path, _inode(scanned.dev, scanned.ino))
        return scanned

    def _note_inode(self, path: str, key: int) -> None:
        self._store.note_inode(path, key)

    def _forget_inode(self, path: str, entry: SnapshotEntry | None) -> None:
        key = self._store.forget_inode(path)
        if key is None:
            return
        self._departed[key] = (path, entry, time.monotonic())
        while len(self._departed) > _DEPARTED_MAX:
            self._departed.popitem(last=False)

    def _check_arrival(self, event: FileEvent) -> None:
        try:
            st = os.lstat(event.path)
        except OSError:
            return  # gone again already
        key = _inode(st.st_dev, st.st_ino)
        source = self._store.path_of_inode(key)
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
                min_share=self.policy.partial_match_share, own_read=self.own_read,
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
                match_share=round(best.share, 4),  # of the source found in the destination
                destination_share=round(best.dest_share, 4),  # of the destination from the source
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
        store = self._store
        first_run = False
        catch_up = True
        if reason == "start" and self.store.snapshot_baseline():
            spool = getattr(self.store, "path", None)  # the spool's file: read there, not loaded
            if isinstance(spool, os.PathLike) and os.path.exists(spool):
                store.begin_scan(spool=Path(spool))
            else:
                store.begin_scan(self.store.load_snapshot().items())
        elif reason == "start":
            # No complete snapshot: a first run, or one killed before its baseline was stored.
            first_run = True
            legacy = self.legacy.load() if self.legacy is not None else None
            store.begin_scan((legacy or {}).items())
            catch_up = legacy is not None
            self.emit(Recorded(None, reset=True))
        else:
            store.begin_scan(from_entries=True)
        for path in self._walk():
            old = store.before(path)
            if old is not None and self._entries_known(path) is not None and path in self.index:
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if (st.st_size, st.st_mtime_ns) == (old.size, old.mtime_ns):
                    store.found(path, old)  # unchanged and indexed: no need to read it again
                    self._note_inode(path, _inode(st.st_dev, st.st_ino))
                    continue
            scanned = self._scan_one(path)
            if scanned is not None:
                store.found(path, _entry(scanned))
            store.maybe_commit(idle=False)
        for stale in store.stale_sources():
            self.index.remove(stale)
            self._forget_inode(stale, store.before(stale))
        found = store.end_scan()
        self._scan_done_ns = time.time_ns()
        if catch_up:
            flag = "rescan" if reason == "rescan" else "catch_up"
            for change in store.changes():
                entry = change.entry
                self.emit(Recorded(FileEvent(
                    kind=change.kind, time_unix_ns=time.time_ns(), path=change.path,
                    size=entry.size if entry else -1, sha256=entry.sha256 if entry else "",
                    attributes={flag: True, "source": flag},
                ), ((change.path, entry),)))
                self.counters[f"{flag}_changes"] += 1
        # What changed without being a change (a hash learnt, a time moved with the same content),
        # or, on a first run, the whole baseline: nothing unreported, so stored on its own.
        quiet: list[SnapshotUpdate] = []
        sent = 0
        with _StoredRows(self.store if first_run else None) as stored:
            for row in store.quiet(first_run=first_run, catch_up=catch_up):
                quiet.append(row)
                if len(quiet) == _STATE_CHUNK:
                    self.emit(Recorded(None, tuple(quiet)))
                    sent += len(quiet)
                    quiet = []
                    stored.wait_for(sent - _STATE_AHEAD)
        if quiet:
            self.emit(Recorded(None, tuple(quiet)))
        if first_run:
            self.emit(Recorded(None, baseline=True))
        store.finish_scan()
        self.counters["index_files"] = len(self.index)
        log.info("%s scan: %d sensitive files indexed in %.2f s", reason, found, time.monotonic() - started)
        self.ready.set()

    def _entries_known(self, path: str) -> SnapshotEntry | None:
        return self._store.entry(path)

    def _walk(self) -> Iterator[str]:
        for folder in self.policy.expand_sensitive_folders():
            def count_error(exc: OSError) -> None:
                self.skipped["unreadable"] += 1

            for dirpath, _dirs, names in os.walk(folder, onerror=count_error):
                for name in names:
                    path = os.path.join(dirpath, name)
                    if not self.policy.is_excluded(path):
                        yield path


class _StoredRows:
    """How many snapshot rows the spool holds, read on a connection of its own: a first run's
    baseline (100,000 rows at ~350 B each as Python objects) is handed to the recorder only as
    fast as the spool stores it, so that it never waits in the recorder's queue all at once.
    Only memory depends on it: after ``_STATE_WAIT_S`` per chunk it goes on regardless."""

    def __init__(self, store: object) -> None:
        path = getattr(store, "path", None)
        self._db: sqlite3.Connection | None = None
        if isinstance(path, os.PathLike) and os.path.exists(path):
            try:
                self._db = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, check_same_thread=False)
            except sqlite3.Error:
                self._db = None

    def __enter__(self) -> "_StoredRows":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.close()

    def wait_for(self, rows: int) -> None:
        if self._db is None or rows <= 0:
            return
        deadline = time.monotonic() + _STATE_WAIT_S
        while time.monotonic() < deadline:
            try:
                if int(self._db.execute("SELECT count(*) FROM snapshot").fetchone()[0]) >= rows:
                    return
            except sqlite3.Error:
                return
            time.sleep(0.01)


def _inode(dev: int, ino: int) -> int:
    """One int for (device, inode): ~70 bytes less per sensitive file than the tuple."""
    return dev << 64 | ino


def _entry(scanned: ScannedFile) -> SnapshotEntry:
    return SnapshotEntry(scanned.size, scanned.mtime_ns, _sha(scanned))


def _sha(scanned: ScannedFile) -> str:
    return scanned.fingerprint.sha256 if scanned.fingerprint.complete else ""
