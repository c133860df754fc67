"""The running agent: sources, copy detection, removable media and capture gaps, wired together.

``AgentRuntime`` is built in ``__main__`` from the settings, the policy and the spool, recorder and
shipper, and owns everything that runs between ``start()`` and ``stop()``:

* **reads and writes**: as root (fanotify usable) a ``FanotifyReader`` with directory marks on
  the sensitive folders and destinations (so nothing elsewhere on the filesystem costs the agent
  anything) and held program starts (so short-lived processes are named without holding any
  file open), attributed to pid, user and process; otherwise the
  ``WatchdogSource`` reports them, attributed to the session user. Creates, moves and deletes
  always come from watchdog (fanotify open/close marks do not see them); with fanotify running
  watchdog is told not to report reads and writes, so nothing is reported twice.
* **content**: ``ContentWatch`` keeps the fingerprint index and snapshot of the sensitive folders
  and turns writes elsewhere into ``file.copy`` / ``usb.write``. Writes outside the sensitive
  folders that copy nothing are not reported (except on removable media).
* **removable media**: ``RemovableMountTracker`` polled every ``mount_poll_s``; each mount is
  watched while mounted.
* **gaps**: a fanotify or inotify queue overflow becomes ``agent.capture_gap`` and a rescan.
* **pushed policies**: a policy on an Ack (``Shipper.on_policy``) is queued for the ``policy``
  thread, checked (``agent.policy_push``) and swapped in whole (``apply_policy``: the new watches
  first, then the policy, then the old watches dropped; a failure leaves the previous policy in
  force), stored as the last good one, and reported once per (name, version, sha256) as
  ``policy.applied`` or ``policy.refused``. Files of a folder that left the policy are forgotten by
  the rescan that follows, without being reported deleted; fanotify marks of such a folder stay
  until the next start (their events are dropped by the policy).

It must never report the agent's own reads, and never block a source thread except by the
bounded queues' backpressure.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import logging
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal, Sequence

from agent.content_watch import ContentWatch
from agent.core.events import FileEvent
from agent.policy import SensitiveFolderPolicy
from agent.policy_push import PolicyInForce, PolicyRefused, PushedPolicyStore, check_pushed, local_policy, pushed_identity
from agent.recorder import Recorder
from agent.settings import AgentSettings
from agent.snapshot import LegacySnapshotFile, Recorded
from agent.sources.fanotify import FanotifyEventMapper, FanotifyReader, FanotifyRecord, fanotify_available
from agent.sources.removable import MountChange, RemovableMount, RemovableMountTracker
from agent.sources.watchdog_source import Attribution, WatchdogSource
from agent.spool import Spool
from agent.transport import Shipper
from shoumi.v1 import events_pb2

__all__ = ["AgentRuntime", "raise_inotify_limits"]

log = logging.getLogger("shoumi.agent.runtime")

# Program starts on these filesystems are held until the new process is noted (see FanotifyReader).
EXEC_ROOTS = ("/", "/usr", "/bin", "/opt", "/home", "/tmp", "/var/tmp", "/dev/shm")
INOTIFY_LIMITS = {"max_queued_events": 1 << 20, "max_user_watches": 1 << 19}


def raise_inotify_limits(proc_dir: str = "/proc/sys/fs/inotify") -> dict[str, int]:
    """Raises (never lowers) the inotify queue and watch limits where writable; returns what was set."""
    done: dict[str, int] = {}
    for name, want in INOTIFY_LIMITS.items():
        path = os.path.join(proc_dir, name)
        try:
            with open(path, "r+", encoding="ascii") as f:
                current = int(f.read().strip())
                if current < want:
                    f.seek(0)
                    f.write(str(want))
                    done[name] = want
                    log.warning("raised fs.inotify.%s from %d to %d", name, current, want)
        except (OSError, ValueError):
            continue  # not root, or not Linux: the overflow detection still reports any loss
    return done


class _OverflowLog(logging.Handler):
    """watchdog reports an inotify overflow only as a WARNING log line; this turns it into a call."""

    def __init__(self, on_overflow: Any) -> None:
        super().__init__(level=logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().lower()
        # watchdog 7 says "Inotify queue overflowed; filesystem events were lost" once per
        # overflow (inotify_c), and once more per recursive watch it rebuilds (inotify).
        if "overflow" in message and "reconciling" not in message:
            self._on_overflow()


class AgentRuntime:
    """Everything the agent runs between start() and stop()."""

    def __init__(
        self,
        settings: AgentSettings,
        policy: SensitiveFolderPolicy,
        *,
        spool: Spool,
        recorder: Recorder,
        shipper: Shipper,
        attribution: Attribution,
        version: str,
        epoch: int,
        new_epoch: bool,
        in_force: PolicyInForce | None = None,
        policy_key: bytes | None = None,
        stored_refusal: tuple[tuple[str, int, str], str] | None = None,
    ) -> None:
        """``in_force``: the policy and how it is reported (default: ``policy`` as a local one);
        ``policy_key``: the collector's pinned key (None: pushed policies are refused);
        ``stored_refusal``: the identity of a stored pushed policy that failed its check at load, and why."""
        self.settings = settings
        self.in_force = in_force if in_force is not None else local_policy(policy)
        policy = self.in_force.policy
        self.policy = policy
        self.policy_key = policy_key
        self._stored_refusal = stored_refusal
        self.pushed_store = PushedPolicyStore(settings.state_dir)
        self._policy_lock = threading.RLock()  # one policy change at a time (pushes, new folders)
        self._offer_lock = threading.Lock()
        self._offered: events_pb2.SignedPolicy | None = None
        self._policy_wake = threading.Event()
        # (name, version, sha256) of policies refused: pushed again, they are neither re-checked nor
        # re-reported (one in force is not either; one applied before and since replaced may return)
        self._refused: collections.OrderedDict[tuple[str, int, str], None] = collections.OrderedDict()
        self._mount_ids: dict[str, RemovableMount] = {}  # last medium seen at each mount point
        self.spool = spool
        self.recorder = recorder
        self.shipper = shipper
        self.attribution = attribution
        self.version = version
        self.epoch = epoch
        self.new_epoch = new_epoch
        self.folders = policy.expand_sensitive_folders()
        if not self.folders and self.in_force.source == "local" and policy_key is None:
            raise ValueError("nothing to watch: no sensitive folder exists "
                             f"({', '.join(policy.sensitive_folders) or 'none given'})")
        if not self.folders:
            # a pushed policy's globs may match later (a user's folder yet to be made), and an
            # agent enrolled with a policy key may wait for the collector's policy
            log.warning("no sensitive folder exists yet (%s); waiting for one or for the collector's policy",
                        ", ".join(policy.sensitive_folders) or "none given")
        self.destinations = tuple(Path(d) for d in policy.destinations if os.path.isdir(d))
        for missing in sorted(set(policy.destinations) - {str(d) for d in self.destinations}):
            log.warning("destination %s does not exist; copies there are not looked for", missing)
        wanted = settings.capture
        self.use_fanotify = wanted == "fanotify" or (wanted == "auto" and fanotify_available())
        self._me = {"pid": os.getpid(), "process": "shoumi-agent", "exe": sys.executable}
        self._gap_lock = threading.Lock()
        self._gaps: dict[str, list[int]] = {}  # source -> [count, first time_ns]
        self._gap_wake = threading.Event()
        self._stopping = threading.Event()
        self._mounts: dict[str, RemovableMount] = {}
        self._mount_readers: dict[str, FanotifyReader] = {}
        self._mounts_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.gap_count = 0
        self.limits_set: dict[str, int] = {}

        self.watchdog = WatchdogSource(
            list(self.folders), self._from_source, attribution,
            max_hash_bytes=policy.max_hash_bytes, report_access=not self.use_fanotify,
            on_new_directory=lambda path: self._on_new_directory(path),
        )
        # The destinations have a watchdog source of their own: files that arrive there by a rename
        # (a move out of a sensitive folder on the same filesystem has no close-write to fingerprint)
        # and, without fanotify, close-writes to check for copies. Its events on sensitive paths are
        # dropped: the sensitive folders' own source reports those.
        self.dest_watchdog = WatchdogSource(
            [d for d in self.destinations if d not in self.folders], self._from_destination, attribution,
            max_hash_bytes=policy.max_hash_bytes, report_access=not self.use_fanotify,
            on_new_directory=lambda path: self._on_new_destination_directory(path),
        )
        self.content = ContentWatch(
            policy, self._from_content, spool, legacy=LegacySnapshotFile(settings.state_dir / "snapshot.json"),
            # fanotify tells the agent's reads by pid; counted for watchdog, which then sees no
            # closes to consume them, they kept every path read (~200 B a sensitive file)
            own_read=None if self.use_fanotify else self.watchdog.own_read,
            state_path=settings.state_dir / "content-index.db",  # index and entries on disk, not in RSS
        )
        self.fanotify: FanotifyReader | None = None
        self._mapper = FanotifyEventMapper()
        if self.use_fanotify:
            roots = [str(p) for p in (*self.folders, *self.destinations)]
            # opens in the sensitive folders are held until the opener is named (see FanotifyReader)
            self.fanotify = self._reader(roots, marks="directory", hold_execs=[*EXEC_ROOTS, *roots],
                                         write_only=[str(d) for d in self.destinations if d not in self.folders])
        self.tracker = RemovableMountTracker(declared=policy.removable_mounts)
        self._overflow_log = _OverflowLog(lambda: self.note_gap("inotify"))
        shipper.on_policy = self.offer_policy

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Starts recording, the sources, the content worker and the pollers; emits agent.start."""
        previous = self.spool.begin_run()
        self.limits_set = raise_inotify_limits()
        logging.getLogger("watchdog.observers").addHandler(self._overflow_log)
        self.recorder.start()
        self.watchdog.start()
        self.dest_watchdog.start()
        if self.fanotify is not None:
            self.fanotify.start()
        self.content.start()
        self.recorder.record(self.agent_event(
            "agent.start", version=self.version, watch=[str(p) for p in self.folders],
            attributed_user=self.attribution.user, epoch=self.epoch, new_epoch=self.new_epoch,
            interval_s=self.settings.heartbeat_seconds,
            capture="fanotify" if self.use_fanotify else "inotify", inotify_limits_set=self.limits_set,
            **self.in_force.heartbeat(),
        ))
        self.recorder.record(self.agent_event("policy.applied", policy=self.policy.to_mapping(),
                                              **self.in_force.report(), **self._missing()))
        if self._stored_refusal is not None:
            (name, version, sha), reason = self._stored_refusal
            self._remember_refused((name, version, sha))
            self.recorder.record(self.agent_event("policy.refused", name=name, version=version, sha256=sha,
                                                  reason=f"the stored policy is not used: {reason}"))
        if previous.unclean:
            # Killed, crashed or powered off: from its last stored event until now nobody watched.
            # The catch-up that follows reports what changed in the sensitive folders meanwhile.
            self.recorder.record(self.agent_event(
                "agent.capture_gap", source="unclean_stop", when=previous.last_commit_ns / 1e9,
                until=time.time_ns() / 1e9, folders=[str(p) for p in self.folders], action="catch_up",
            ))
        self._poll_mounts()
        for target, name in ((self._mount_loop, "mount-poller"), (self._gap_loop, "capture-gaps"),
                             (self._policy_loop, "policy")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.shipper.start()

    def run_until(self, stopping: threading.Event) -> None:
        """Sends heartbeats every heartbeat_seconds until ``stopping`` is set."""
        while not stopping.wait(self.settings.heartbeat_seconds):
            self.heartbeat()

    def heartbeat(self) -> None:
        """Records one agent.heartbeat with spool, capture and content counters."""
        stats = self.spool.stats()
        self.recorder.record(self.agent_event(
            "agent.heartbeat", interval_s=self.settings.heartbeat_seconds, spool_unsealed=stats.unsealed,
            spool_unacked_events=stats.unacked_events, spool_bytes=self.spool.used_bytes(),
            spool_refused_pending=self.spool.refused(), connected=self.shipper.connected.is_set(),
            version=self.version, **self.in_force.heartbeat(), **self.counters(),
        ))

    def counters(self) -> dict[str, int]:
        """Capture counters: source counters, skipped scans by reason, gaps, queue depth."""
        out: dict[str, int] = dict(self.watchdog.counters + self.dest_watchdog.counters)
        out.update({f"scan_skipped_{reason}": n for reason, n in self.content.skipped.items()})
        out.update(self.content.counters)
        out["capture_gaps"] = self.gap_count
        out["content_queue"] = self.content.pending()
        if self.fanotify is not None:
            out["fanotify_records"] = self.fanotify.records
            out["fanotify_lost"] = self.fanotify.lost
            out["fanotify_held_execs"] = self.fanotify.held_execs
            out["fanotify_overflows"] = self.fanotify.overflows
            out["fanotify_forks_lost"] = self.fanotify.forks_lost
            out["fanotify_exec_notes_lost"] = self.fanotify.exec_notes_lost
        return out

    def stop(self, reason: str = "signal") -> bool:
        """Stops everything, records agent.stop, drains to the collector; True if all delivered."""
        self._stopping.set()
        self._gap_wake.set()
        self._policy_wake.set()
        for thread in self._threads:
            thread.join(timeout=10)
        logging.getLogger("watchdog.observers").removeHandler(self._overflow_log)
        if self.fanotify is not None:
            self.fanotify.stop()
        with self._mounts_lock:
            readers = list(self._mount_readers.values())
            self._mount_readers.clear()
        for reader in readers:
            reader.stop()
        self.watchdog.stop()
        self.dest_watchdog.stop()
        self.content.stop()
        self.recorder.record(self.agent_event("agent.stop", reason=reason,
                                              interval_s=self.settings.heartbeat_seconds))
        self.recorder.stop()
        self.spool.end_run()
        return self.shipper.stop(drain_timeout_s=5.0)

    def agent_event(self, kind: str, **attributes: Any) -> FileEvent:
        """An event about the agent itself."""
        return FileEvent(kind=kind, time_unix_ns=time.time_ns(), attributes=attributes, **self._me)  # type: ignore[arg-type]

    # -- sources --------------------------------------------------------------------------------

    def _reader(self, roots: list[str], *, marks: Literal["mount", "directory"] = "mount",
                hold_execs: Sequence[str] = (), write_only: Sequence[str] = ()) -> FanotifyReader:
        # Nothing is held but program starts (answered by a thread of their own), so the records'
        # reader may wait for the agent: the kernel keeps what it has not read (unlimited queue,
        # root only), read in batches every 20 ms.
        return FanotifyReader(roots, self._on_record, on_overflow=lambda: self.note_gap("fanotify"), marks=marks,
                              hold_execs=hold_execs, unlimited_queue=True, batch_wait=0.02,
                              max_pending=2_000,  # RSS: what waits beyond this stays in the kernel
                              track_forks=True,  # a fork that exits at once is named after its parent
                              write_only_roots=write_only)  # destinations: close-writes only

    def _watch_new_directory(self, path: str, *, writes_only: bool = False) -> bool:
        reader = self.fanotify
        if reader is None:
            return False
        try:
            reader.watch_directory(path, writes_only=writes_only)
        except OSError as exc:  # gone again already: nothing in it to watch
            log.debug("not watching %s: %s", path, exc)
            return False
        return True

    def _on_new_directory(self, path: str) -> None:
        if self.policy.is_sensitive(path):
            self._watch_new_directory(path)

    def _on_new_destination_directory(self, path: str) -> None:
        """A directory appeared in a destination (cp -r): mark it, then check what was written in
        it before the mark could see it."""
        sensitive = self.policy.is_sensitive(path)
        if not self._watch_new_directory(path, writes_only=not sensitive) or sensitive:
            return
        try:
            names = os.listdir(path)
        except OSError:
            return
        for name in names:
            full = os.path.join(path, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and not self.policy.is_excluded(full):
                self.content.submit_write(
                    FileEvent(kind="file.write", time_unix_ns=time.time_ns(), path=full, size=st.st_size,
                              attributes={"attribution": "directory_scan"}),
                    sensitive=False, removable=None)

    def _on_record(self, record: FanotifyRecord) -> None:
        if record.process and self.policy.is_excluded_process(record.process):
            return
        if record.kind == "open" and record.pid > 0 and self.policy.is_sensitive(record.path):
            # cp may close the copy before the source: remember the read when it starts.
            self.content.recent_reads.note(record.pid, record.path, record.time_ns)
        event = self._mapper.map(record)
        if event is not None:
            self._from_source(event)

    def _removable_for(self, path: str) -> RemovableMount | None:
        with self._mounts_lock:
            for point, mount in self._mounts.items():
                if path == point or path.startswith(point.rstrip("/") + "/"):
                    return mount
        return None

    def _from_source(self, event: FileEvent) -> None:
        """Routes one source event: record it, feed the content worker, or drop it (not ours)."""
        policy = self.policy
        path = event.path
        if policy.is_excluded(path) or (event.process and policy.is_excluded_process(event.process)):
            return
        sensitive = policy.is_sensitive(path)
        kind = event.kind
        if kind == "file.write":
            removable = None if sensitive else self._removable_for(path)
            if sensitive or removable is not None or policy.is_destination(path):
                self.content.submit_write(event, sensitive=sensitive, removable=removable)
        elif kind == "file.read":
            if sensitive:
                if event.pid > 0:
                    self.content.recent_reads.note(event.pid, path, event.time_unix_ns)
                self.recorder.record(event)
        elif kind == "file.move":
            dest_sensitive = policy.is_sensitive(event.dest_path) and not policy.is_excluded(event.dest_path)
            if sensitive or dest_sensitive:
                self.content.submit_change(event)  # reported with the snapshot change it makes
        elif sensitive:
            self.content.submit_change(event)

    def _from_destination(self, event: FileEvent) -> None:
        """Routes an event seen in a destination: copies (close-writes) and arrivals by rename."""
        path = event.path
        policy = self.policy
        if policy.is_sensitive(path) or policy.is_excluded(path):
            return
        if event.process and policy.is_excluded_process(event.process):
            return
        if event.kind == "file.write":
            self.content.submit_write(event, sensitive=False, removable=None)
        elif event.kind == "file.create":
            self.content.submit_arrival(event)
        elif event.kind == "file.move" and not policy.is_sensitive(event.dest_path):
            self.content.submit_arrival(dataclasses.replace(event, kind="file.create", path=event.dest_path,
                                                            dest_path=""))

    # -- removable media ------------------------------------------------------------------------

    def _mount_loop(self) -> None:
        while not self._stopping.wait(self.settings.mount_poll_s):
            try:
                self._poll_mounts()
            except Exception:  # a bad partition list must not end removable-media capture
                log.exception("removable mount poll failed")
            try:
                self._expand_folders()
            except Exception:  # nor may a folder that cannot be watched end the others' capture
                log.exception("sensitive folder expansion failed")

    def _expand_folders(self) -> None:
        """Watches sensitive folders that appeared since start (a glob such as /home/*/Contracts)."""
        with self._policy_lock:
            self._expand_folders_locked()

    def _expand_folders_locked(self) -> None:
        for folder in self.policy.expand_sensitive_folders():
            if folder in self.folders:
                continue
            self.folders = (*self.folders, folder)
            self.watchdog.add_folder(folder)
            if self.fanotify is not None:
                self.fanotify.add_root(folder)
            for dirpath, _dirs, names in os.walk(folder):
                for name in names:
                    path = os.path.join(dirpath, name)
                    if not self.policy.is_excluded(path):
                        self.content.submit_index(path)
            self.recorder.record(self.agent_event("policy.applied", policy=self.policy.to_mapping(),
                                                  new_sensitive_folder=str(folder), **self.in_force.report()))
            log.info("now watching the new sensitive folder %s", folder)

    def _poll_mounts(self) -> None:
        for change in self.tracker.poll():
            self._mount_changed(change)

    def _mount_changed(self, change: MountChange) -> None:
        mount = change.mount
        point = mount.mountpoint
        if change.kind == "mounted":
            with self._mounts_lock:
                self._mounts[point] = mount
                self._mount_ids[point] = mount
            try:
                if self.use_fanotify:
                    reader = self._reader([point])
                    reader.start()
                    with self._mounts_lock:
                        self._mount_readers[point] = reader
                else:
                    self.watchdog.add_folder(Path(point))
            except OSError as exc:
                log.warning("cannot watch removable mount %s: %s", point, exc)
        else:
            with self._mounts_lock:
                self._mounts.pop(point, None)
                held = self._mount_readers.pop(point, None)
            if held is not None:
                held.stop()
            elif not self.use_fanotify:
                self.watchdog.remove_folder(Path(point))
        self.recorder.record(self.agent_event(
            "usb.mount" if change.kind == "mounted" else "usb.unmount", mountpoint=point,
            device=mount.device, fstype=mount.fstype, declared=mount.declared,
            **{"label": mount.label, **mount.identity()}, company_device=self._is_company(mount),
        ))

    def _is_company(self, mount: RemovableMount) -> bool:
        return self.policy.is_company_device(mount.vendor_id, mount.product_id, mount.serial)

    def _from_content(self, item: FileEvent | Recorded) -> None:
        """What the content worker emits, on its way to the recorder: usb.write gets the medium's
        identity; a rescan's "delete" of a file that merely left the policy is stored, not reported."""
        event = item.event if isinstance(item, Recorded) else item
        if event is not None:
            if event.kind == "usb.write":
                with self._mounts_lock:
                    mount = self._mount_ids.get(str(event.attributes.get("mountpoint", "")))
                ids = mount.identity() if mount is not None else {}
                ids.pop("label", None)
                event = dataclasses.replace(event, attributes={
                    **event.attributes, **ids, "company_device": mount is not None and self._is_company(mount)})
                item = dataclasses.replace(item, event=event) if isinstance(item, Recorded) else event
            elif (isinstance(item, Recorded) and event.kind == "file.delete" and event.attributes.get("rescan")
                  and (not self.policy.is_sensitive(event.path) or self.policy.is_excluded(event.path))):
                item = dataclasses.replace(item, event=None)
        self.recorder.record(item)

    # -- pushed policies ------------------------------------------------------------------------

    def offer_policy(self, pushed: events_pb2.SignedPolicy) -> None:
        """Called by the shipper for an Ack's policy: queued for the policy thread, never applied here."""
        ident = pushed_identity(pushed)
        with self._offer_lock:
            if ident == self.in_force.identity or ident in self._refused:
                return  # pushed again (the collector may attach it to every Ack until it hears back)
            if self._offered is not None and pushed_identity(self._offered) == ident:
                return
            copy = events_pb2.SignedPolicy()
            copy.CopyFrom(pushed)
            self._offered = copy  # only the latest waits: an older one queued would be refused anyway
        self._policy_wake.set()

    def _policy_loop(self) -> None:
        while not self._stopping.is_set():
            self._policy_wake.wait()
            if self._stopping.is_set():
                return
            with self._offer_lock:
                pushed, self._offered = self._offered, None
                self._policy_wake.clear()
            if pushed is not None:
                try:
                    self.apply_pushed(pushed)
                except Exception:  # the policy in force stays; capture goes on
                    log.exception("applying a pushed policy failed")

    def apply_pushed(self, pushed: events_pb2.SignedPolicy) -> bool:
        """Checks and applies a pushed policy; reports policy.applied or policy.refused once per
        (name, version, sha256); returns whether it is now in force."""
        ident = pushed_identity(pushed)
        with self._policy_lock:
            if ident == self.in_force.identity or ident in self._refused:
                return ident == self.in_force.identity
            try:
                new = check_pushed(pushed, public_key=self.policy_key, in_force=self.in_force)
                self.apply_policy(new)
            except PolicyRefused as exc:
                reason = exc.reason
            except OSError as exc:
                reason = f"cannot be applied here: {exc}"
            else:
                try:
                    self.pushed_store.save(pushed)
                except OSError as exc:  # in force now; the next start falls back to the local one
                    log.error("the applied policy could not be stored: %s", exc)
                self.recorder.record(self.agent_event(
                    "policy.applied", policy=new.policy.to_mapping(), **new.report(),
                    watch=[str(p) for p in self.folders], **self._missing()))
                log.warning("policy %s version %d applied (%s)", new.name, new.version, new.sha256[:12])
                return True
            self._remember_refused(ident)
            log.warning("policy %s version %d refused: %s", ident[0], ident[1], reason)
            self.recorder.record(self.agent_event("policy.refused", name=ident[0], version=ident[1],
                                                  sha256=ident[2], reason=reason))
            return False

    def _remember_refused(self, ident: tuple[str, int, str]) -> None:
        with self._offer_lock:
            self._refused[ident] = None
            while len(self._refused) > 256:
                self._refused.popitem(last=False)

    def _missing(self) -> dict[str, list[str]]:
        """The sensitive-folder patterns that match no directory now (a typo, or a folder to come)."""
        missing = [p for p in self.policy.sensitive_folders if not any(os.path.isdir(m) for m in glob.glob(p))]
        return {"missing_folders": missing} if missing else {}

    def apply_policy(self, new: PolicyInForce) -> None:
        """Swaps the policy in force for ``new`` whole, or raises (OSError) leaving the old one.

        The new watches are set up first; only when all are in place do the routing, the content
        worker and the removable-mount tracker take the new policy, and then the old watches go.
        """
        with self._policy_lock:
            policy = new.policy
            old_folders, old_dests = self.folders, self.destinations
            folders = policy.expand_sensitive_folders()
            destinations = tuple(Path(d) for d in policy.destinations if os.path.isdir(d))
            dest_only = [d for d in destinations if d not in folders]
            old_dest_only = [d for d in old_dests if d not in old_folders]
            added = [f for f in folders if f not in old_folders]
            added_dests = [d for d in dest_only if d not in old_dest_only]
            undo: list[Any] = []
            try:
                for folder in added:
                    self.watchdog.add_folder(folder)
                    undo.append(lambda f=folder: self.watchdog.remove_folder(f))
                for dest in added_dests:
                    self.dest_watchdog.add_folder(dest)
                    undo.append(lambda d=dest: self.dest_watchdog.remove_folder(d))
                if self.fanotify is not None:  # marks cannot be taken back: left over, they only cost filtering
                    # (a destination added here gets full marks, not close-write only as at start:
                    # FanotifyReader.add_root has no writes-only form; its reads are dropped by routing)
                    for root in (*added, *added_dests):
                        self.fanotify.add_root(root)
            except BaseException:
                for step in reversed(undo):
                    try:
                        step()
                    except Exception:
                        log.exception("undoing a watch of the refused policy failed")
                raise
            # one assignment each: every thread sees the old policy or the new one
            self.policy = policy
            self.content.policy = policy
            self.watchdog.max_hash_bytes = self.dest_watchdog.max_hash_bytes = policy.max_hash_bytes
            self.tracker.set_declared(policy.removable_mounts)
            self.folders, self.destinations = folders, destinations
            self.in_force = new
            for folder in old_folders:
                if folder not in folders:
                    self.watchdog.remove_folder(folder)
            for dest in old_dest_only:
                if dest not in dest_only:
                    self.dest_watchdog.remove_folder(dest)
        for folder in added:
            for dirpath, _dirs, names in os.walk(folder):
                for name in names:
                    path = os.path.join(dirpath, name)
                    if not policy.is_excluded(path):
                        self.content.submit_index(path)
        # forgets (quietly, see _from_content) the files that left the policy, indexes what is new
        self.content.submit_rescan()

    # -- capture gaps ---------------------------------------------------------------------------

    def note_gap(self, source: str) -> None:
        """Called from a source thread on a queue overflow: reported and rescanned shortly after."""
        with self._gap_lock:
            entry = self._gaps.setdefault(source, [0, time.time_ns()])
            entry[0] += 1
        self._gap_wake.set()

    def _gap_loop(self) -> None:
        while not self._stopping.is_set():
            self._gap_wake.wait()
            if self._stopping.is_set():
                return
            # Let the burst that overflowed settle, so one rescan covers it.
            self._stopping.wait(0.5)
            with self._gap_lock:
                gaps, self._gaps = self._gaps, {}
                self._gap_wake.clear()
            for source, (count, first_ns) in sorted(gaps.items()):
                self.gap_count += count
                self.recorder.record(self.agent_event(
                    "agent.capture_gap", source=source, when=first_ns / 1e9, count=count,
                    folders=[str(p) for p in self.folders], action="rescan",
                ))
            if gaps:
                self.content.submit_rescan()

