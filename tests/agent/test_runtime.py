"""The run-time pieces with real files: content worker (index, copies, catch-up), snapshots, limits, gaps."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.content_watch import ContentWatch, RecentReads
from agent.core.events import FileEvent
from agent.policy import SensitiveFolderPolicy
from agent.runtime import _OverflowLog, raise_inotify_limits
from agent.snapshot import LegacySnapshotFile, Recorded, SnapshotEntry, diff_snapshots
from agent.sources.removable import RemovableMount
from agent.spool import Spool

if TYPE_CHECKING:
    from agent.runtime import AgentRuntime

SECRET = os.urandom(200_000)


def _world(tmp_path: Path) -> tuple[SensitiveFolderPolicy, Path, Path]:
    finance, dest = tmp_path / "finance", tmp_path / "dest"
    finance.mkdir()
    dest.mkdir()
    (finance / "nda.bin").write_bytes(SECRET)
    policy = SensitiveFolderPolicy(sensitive_folders=(str(finance),), destinations=(str(dest),))
    return policy, finance, dest


def _write(path: Path, pid: int = 0) -> FileEvent:
    return FileEvent(kind="file.write", time_unix_ns=time.time_ns(), path=str(path), pid=pid, process="cp")


class _Stored(list[FileEvent]):
    """The events a content worker emitted, each appended (with its snapshot changes) to a real spool."""

    def __init__(self, spool: Spool) -> None:
        super().__init__()
        self.spool = spool

    def __call__(self, item: FileEvent | Recorded) -> None:
        self.spool.append([item])
        event = item.event if isinstance(item, Recorded) else item
        if event is not None:
            self.append(event)


def _watch(policy: SensitiveFolderPolicy, spool: Spool, **kw: object) -> tuple[ContentWatch, _Stored]:
    stored = _Stored(spool)
    return ContentWatch(policy, stored, spool, **kw), stored  # type: ignore[arg-type]


def _run(watch: ContentWatch) -> None:
    watch.start()
    assert watch.ready.wait(10)


def test_snapshot_diff_and_spool_round_trip(tmp_path: Path) -> None:
    a = {"/x/a": SnapshotEntry(1, 1, "a" * 64), "/x/b": SnapshotEntry(2, 2, "b" * 64), "/x/\udcff": SnapshotEntry(3, 3)}
    b = {"/x/a": SnapshotEntry(1, 5, "a" * 64), "/x/b": SnapshotEntry(2, 2, "c" * 64), "/x/n": SnapshotEntry(4, 4)}
    changes = [(c.kind, c.path) for c in diff_snapshots(a, b)]
    assert changes == [("file.create", "/x/n"), ("file.write", "/x/b"), ("file.delete", "/x/\udcff")]
    spool = Spool(tmp_path / "spool.db", agent_id="agt")
    assert not spool.snapshot_baseline() and spool.load_snapshot() == {}
    spool.append([Recorded(None, tuple(a.items()), reset=True, baseline=True)])
    spool.close()
    spool = Spool(tmp_path / "spool.db", agent_id="agt")
    assert spool.snapshot_baseline() and spool.load_snapshot() == a  # an undecodable name survives
    legacy = LegacySnapshotFile(tmp_path / "snapshot.json")
    assert legacy.load() is None
    (tmp_path / "snapshot.json").write_text('{"version": 1, "files": {"/x/a": [1, 1, ""]}}')
    assert legacy.load() == {"/x/a": SnapshotEntry(1, 1)}
    (tmp_path / "snapshot.json").write_text("{not json")
    assert legacy.load() is None


def test_a_refused_event_leaves_the_snapshot_as_it_was(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", agent_id="agt", cap_bytes=64 * 1024)
    entry = SnapshotEntry(5, 5, "e" * 64)
    big = FileEvent(kind="file.write", time_unix_ns=time.time_ns(), path="/s/a", attributes={"pad": "x" * 70_000})
    assert spool.append([Recorded(big, (("/s/a", entry),))]) == 0
    assert spool.load_snapshot() == {}  # not reported, so still to be caught up
    small = FileEvent(kind="file.write", time_unix_ns=time.time_ns(), path="/s/a")
    assert spool.append([Recorded(small, (("/s/a", entry),))]) == 1
    assert spool.load_snapshot() == {"/s/a": entry}


def test_begin_run_tells_an_unclean_stop(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", agent_id="agt")
    assert not spool.begin_run().unclean
    spool.append([FileEvent(kind="file.read", time_unix_ns=time.time_ns(), path="/s/a")])
    spool.close()  # no end_run: as if killed
    spool = Spool(tmp_path / "spool.db", agent_id="agt")
    previous = spool.begin_run()
    assert previous.unclean and 0 < previous.last_commit_ns <= time.time_ns()
    spool.end_run()
    assert not spool.begin_run().unclean


def test_copies_partials_and_removable_writes(tmp_path: Path) -> None:
    policy, finance, dest = _world(tmp_path)
    watch, emitted = _watch(policy, Spool(tmp_path / "spool.db", agent_id="agt"))
    _run(watch)
    watch.recent_reads.note(42, str(finance / "nda.bin"), time.time_ns())
    (dest / "copy.bin").write_bytes(SECRET)
    (dest / "part.bin").write_bytes(SECRET[:140_000])
    (dest / "other.bin").write_bytes(os.urandom(50_000))
    stick = RemovableMount(str(tmp_path / "stick"), declared=True)
    (tmp_path / "stick").mkdir()
    (tmp_path / "stick" / "plain.txt").write_text("hello")
    watch.submit_write(_write(dest / "copy.bin", pid=42), sensitive=False, removable=None)
    watch.submit_write(_write(dest / "part.bin"), sensitive=False, removable=None)
    watch.submit_write(_write(dest / "other.bin"), sensitive=False, removable=None)
    watch.submit_write(_write(tmp_path / "stick" / "plain.txt"), sensitive=False, removable=stick)
    watch.submit_write(_write(dest / "vanished.bin"), sensitive=False, removable=None)
    watch.stop()
    by_dest = {e.dest_path or e.path: e for e in emitted}
    exact = by_dest[str(dest / "copy.bin")]
    assert exact.kind == "file.copy" and exact.path == str(finance / "nda.bin")
    assert exact.attributes["match"] == "exact" and exact.attributes["read_by_same_process"] is True
    assert by_dest[str(dest / "part.bin")].attributes["match"] == "partial"
    assert str(dest / "other.bin") not in by_dest
    usb = by_dest[str(tmp_path / "stick" / "plain.txt")]
    assert usb.kind == "usb.write" and "match" not in usb.attributes and usb.sha256
    assert watch.skipped["vanished"] == 1


def test_catch_up_reports_changes_made_while_stopped(tmp_path: Path) -> None:
    policy, finance, _dest = _world(tmp_path)
    spool = Spool(tmp_path / "spool.db", agent_id="agt")
    watch, first = _watch(policy, spool)
    _run(watch)
    watch.stop()
    assert first == [] and spool.snapshot_baseline()  # the first run only records the baseline
    (finance / "nda.bin").write_bytes(b"edited")
    (finance / "new.txt").write_text("new")
    (finance / "sub").mkdir()
    (finance / "sub" / "deep.txt").write_text("deep")
    watch, second = _watch(policy, spool)
    _run(watch)
    (finance / "new.txt").unlink()
    watch.submit_rescan()
    watch.stop()
    seen = [(e.kind, Path(e.path).name, "catch_up" in e.attributes) for e in second]
    assert seen == [("file.create", "new.txt", True), ("file.create", "deep.txt", True),
                    ("file.write", "nda.bin", True), ("file.delete", "new.txt", False)]
    assert second[-1].attributes["rescan"] is True


def test_recent_reads_are_bounded() -> None:
    reads = RecentReads(max_pids=2, per_pid=2)
    for pid in (1, 2, 3):
        reads.note(pid, "/s/a", 10)
    assert reads.last_read(1, {"/s/a"}, since_ns=0) is None
    reads.note(3, "/s/b", 20)
    reads.note(3, "/s/c", 30)
    assert reads.last_read(3, {"/s/a", "/s/b"}, since_ns=0) == ("/s/b", 20)
    assert reads.last_read(3, {"/s/b"}, since_ns=25) is None


def test_inotify_limits_are_raised_never_lowered(tmp_path: Path) -> None:
    (tmp_path / "max_queued_events").write_text("16384\n")
    (tmp_path / "max_user_watches").write_text("99999999\n")
    assert raise_inotify_limits(str(tmp_path)) == {"max_queued_events": 1 << 20}
    assert (tmp_path / "max_queued_events").read_text() == str(1 << 20)
    assert (tmp_path / "max_user_watches").read_text() == "99999999\n"


def test_watchdog_overflow_warning_becomes_a_gap() -> None:
    gaps: list[int] = []
    handler = _OverflowLog(lambda: gaps.append(1))
    logger = logging.getLogger("watchdog.observers")
    logger.addHandler(handler)
    try:
        logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
        logging.getLogger("watchdog.observers.inotify").warning("Inotify queue overflowed; reconciling recursive watches below %r", "/x")
        logging.getLogger("watchdog.observers.inotify_buffer").warning("queue overflow")
    finally:
        logger.removeHandler(handler)
    assert len(gaps) == 2


def test_a_rename_out_of_a_sensitive_folder_is_a_move_out_in_either_order(tmp_path: Path) -> None:
    policy, finance, dest = _world(tmp_path)
    (finance / "plan.bin").write_bytes(SECRET[:50_000])
    watch, emitted = _watch(policy, Spool(tmp_path / "spool.db", agent_id="agt"))
    _run(watch)
    try:
        # delete seen first, then the arrival
        os.rename(finance / "nda.bin", dest / "taken.bin")
        watch.submit_change(FileEvent(kind="file.delete", time_unix_ns=time.time_ns(), path=str(finance / "nda.bin")))
        watch.submit_arrival(FileEvent(kind="file.create", time_unix_ns=time.time_ns(), path=str(dest / "taken.bin")))
        # arrival seen first, then the delete
        os.rename(finance / "plan.bin", dest / "plan.bin")
        watch.submit_arrival(FileEvent(kind="file.create", time_unix_ns=time.time_ns(), path=str(dest / "plan.bin")))
        watch.submit_change(FileEvent(kind="file.delete", time_unix_ns=time.time_ns(), path=str(finance / "plan.bin")))
        # an unrelated new file is nothing
        (dest / "mine.txt").write_text("my own notes")
        watch.submit_arrival(FileEvent(kind="file.create", time_unix_ns=time.time_ns(), path=str(dest / "mine.txt")))
    finally:
        watch.stop()
    moves = [(e.kind, e.path, e.dest_path, e.attributes.get("moved_out")) for e in emitted if e.kind == "file.move"]
    assert moves == [
        ("file.move", str(finance / "nda.bin"), str(dest / "taken.bin"), True),
        ("file.move", str(finance / "plan.bin"), str(dest / "plan.bin"), True),
    ]
    first = next(e for e in emitted if e.kind == "file.move")
    assert first.attributes["source_paths"] == [str(finance / "nda.bin")] and first.sha256 and first.size == len(SECRET)


class _Kept:
    """Stands in for the Recorder: keeps what the runtime records, in order."""

    def __init__(self) -> None:
        self.items: list[FileEvent | Recorded] = []

    def record(self, item: FileEvent | Recorded) -> None:
        self.items.append(item)

    def events(self, kind: str) -> list[FileEvent]:
        out = [i.event if isinstance(i, Recorded) else i for i in self.items]
        return [e for e in out if e is not None and e.kind == kind]


def _runtime(tmp_path: Path, policy: SensitiveFolderPolicy, *, policy_key: bytes | None = None
             ) -> tuple["AgentRuntime", _Kept]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.runtime import AgentRuntime
    from agent.settings import AgentSettings
    from agent.sources.watchdog_source import Attribution
    from agent.transport import Shipper

    (tmp_path / "state").mkdir()
    spool = Spool(tmp_path / "spool.db", agent_id="agt")
    kept = _Kept()
    shipper = Shipper(spool, Ed25519PrivateKey.generate(), "127.0.0.1:1")
    runtime = AgentRuntime(AgentSettings(state_dir=tmp_path / "state", capture="inotify"), policy, spool=spool,
                           recorder=kept, shipper=shipper, attribution=Attribution("alice", 1000),  # type: ignore[arg-type]
                           version="t", epoch=1, new_epoch=True, policy_key=policy_key)
    return runtime, kept


def _signer() -> tuple[Any, Any, bytes]:
    """sign_policy, a collector's policy key, and its raw public half (what the agent pins)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shoumi.signed_policy import sign_policy

    key = Ed25519PrivateKey.generate()
    return sign_policy, key, key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_usb_events_carry_the_device_identity_and_whether_it_is_the_companys(tmp_path: Path) -> None:
    from agent.policy import CompanyDevice
    from agent.sources.removable import MountChange

    policy, finance, dest = _world(tmp_path)
    policy = dataclasses.replace(policy, company_devices=(CompanyDevice("0781", "5567", "C0"),))
    runtime, kept = _runtime(tmp_path, policy)
    ours = RemovableMount("/media/ours", "/dev/sdb1", "vfat", "WORK", vendor_id="0781", product_id="5567", serial="C0")
    theirs = RemovableMount("/media/theirs", "/dev/sdc1", "vfat", "", vendor_id="0781", product_id="5567", serial="X9")
    for mount in (ours, theirs):
        runtime._mount_changed(MountChange("mounted", mount))
    first, second = kept.events("usb.mount")
    assert first.attributes["company_device"] is True and second.attributes["company_device"] is False
    assert {k: first.attributes[k] for k in ("vendor_id", "product_id", "serial", "label")} == {
        "vendor_id": "0781", "product_id": "5567", "serial": "C0", "label": "WORK"}
    assert "serial" in second.attributes and second.attributes["label"] == ""
    for point in ("/media/ours", "/media/theirs", "/media/gone"):
        runtime._from_content(FileEvent(kind="usb.write", time_unix_ns=1, path=point + "/x",
                                        attributes={"mountpoint": point}))
    writes = kept.events("usb.write")
    assert [w.attributes["company_device"] for w in writes] == [True, False, False]
    assert writes[0].attributes["serial"] == "C0" and "serial" not in writes[2].attributes


def test_a_policy_that_cannot_be_watched_leaves_the_previous_one_whole(tmp_path: Path) -> None:
    sign_policy, key, raw = _signer()
    policy, finance, dest = _world(tmp_path)
    runtime, kept = _runtime(tmp_path, policy, policy_key=raw)
    hr, out = tmp_path / "hr", tmp_path / "out"
    hr.mkdir()
    out.mkdir()
    before = (runtime.policy, runtime.in_force, runtime.folders, dict(runtime.watchdog._watches))

    def refuse(folder: Path) -> None:
        raise OSError(28, "inotify watch limit reached", str(folder))

    runtime.dest_watchdog.add_folder = refuse  # type: ignore[method-assign]
    document = f'sensitive_folders = ["{hr}"]\ndestinations = ["{out}"]\n'.encode()
    pushed = sign_policy(name="hr", version=1, issued_unix_ns=1, document=document, key=key)
    assert runtime.apply_pushed(pushed) is False
    assert (runtime.policy, runtime.in_force, runtime.folders, dict(runtime.watchdog._watches)) == before
    (refused,) = kept.events("policy.refused")
    assert "inotify watch limit reached" in refused.attributes["reason"] and refused.attributes["name"] == "hr"
    assert runtime.apply_pushed(pushed) is False and len(kept.events("policy.refused")) == 1  # once
    assert not runtime.pushed_store.path.exists()


def test_a_reassignment_back_to_an_earlier_policy_applies_it_again(tmp_path: Path) -> None:
    sign_policy, key, raw = _signer()
    policy, finance, dest = _world(tmp_path)
    runtime, kept = _runtime(tmp_path, policy, policy_key=raw)
    legal = tmp_path / "legal"
    legal.mkdir()

    def push(name: str, folder: Path) -> bool:
        document = f'sensitive_folders = ["{folder}"]\n'.encode()
        return runtime.apply_pushed(sign_policy(name=name, version=1, issued_unix_ns=1, document=document, key=key))

    assert push("finance", finance) and push("finance", finance)  # the second: already in force, nothing new
    assert push("legal", legal) and runtime.folders == (legal,)
    assert push("finance", finance) and runtime.folders == (finance,)
    assert [e.attributes["name"] for e in kept.events("policy.applied")] == ["finance", "legal", "finance"]
    assert runtime.pushed_store.load_in_force(raw)[0] == runtime.in_force


def test_a_pushed_policy_whose_folder_is_not_there_yet_is_applied_and_says_so(tmp_path: Path) -> None:
    sign_policy, key, raw = _signer()
    policy, finance, dest = _world(tmp_path)
    runtime, kept = _runtime(tmp_path, policy, policy_key=raw)
    later = tmp_path / "home" / "*" / "Contracts"
    document = f'sensitive_folders = ["{finance}", "{later}"]\n'.encode()
    assert runtime.apply_pushed(sign_policy(name="legal", version=2, issued_unix_ns=1, document=document, key=key))
    (applied,) = kept.events("policy.applied")
    assert applied.attributes["missing_folders"] == [str(later)] and applied.attributes["watch"] == [str(finance)]
    (tmp_path / "home" / "ann" / "Contracts").mkdir(parents=True)
    runtime._expand_folders()  # what the mount poller does every mount_poll_s
    assert runtime.folders == (finance, tmp_path / "home" / "ann" / "Contracts")
    assert kept.events("policy.applied")[-1].attributes["name"] == "legal"
