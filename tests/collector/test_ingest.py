"""Ingest on a real SQLite store: what is stored, what is refused, and that a refusal stores nothing."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.v1 import events_pb2

from collector.detection.rules import ReadBurstRule
from collector.events.models import EventFilter
from collector.enrollment.service import EnrollmentError, EnrollmentService
from collector.detection.service import DetectionStage
from collector.ingest.service import IngestError, IngestService
from collector.storage import SqlStore

from tests.conftest import ChainWriter, _burst

MIN = 60_000_000_000


def _enroll(store: SqlStore, key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    svc = EnrollmentService(token_ttl_ns=10 * MIN)
    token = svc.create_token(tx=store, actor="test")
    return svc.enroll(tx=store, token=token, public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
                      hostname="ws-01", os_name="Linux", agent_version="t", peer="test").agent_id


@pytest.fixture
def ingest(sqlite_store: SqlStore) -> IngestService:
    return IngestService(sqlite_store)


def _count(store: SqlStore) -> int:
    return len(store.list_events(EventFilter(), cursor=None, limit=10_000).items)


def test_chain_is_stored_and_acked(ingest: IngestService, agent_key: Ed25519PrivateKey) -> None:
    writer = ChainWriter(_enroll(ingest.store, agent_key), agent_key)
    acks = [ingest.ingest(writer.next(4)) for _ in range(3)]
    assert [a.acked_seq for a in acks] == [4, 8, 12]
    assert _count(ingest.store) == 12
    assert ingest.store.list_alerts(cursor=None, limit=10).items == ()  # ingest only stores
    DetectionStage(ingest.store, rules=_burst(threshold=5, minutes=1)).run_until_idle()
    assert len(ingest.store.list_alerts(cursor=None, limit=10).items) == 1  # 12 reads > 5 in a minute


def test_redelivery_is_acked_again_and_stored_once(ingest: IngestService, agent_key: Ed25519PrivateKey) -> None:
    writer = ChainWriter(_enroll(ingest.store, agent_key), agent_key)
    first = writer.next(3)
    second = writer.next(3)
    ingest.ingest(first)
    ingest.ingest(second)
    again = ingest.ingest(first)
    assert again.acked_seq == 3
    assert _count(ingest.store) == 6
    assert ingest.counters["batches.duplicate"] == 1


@pytest.mark.parametrize("damage", ["flip_path", "flip_signature", "wrong_key", "broken_chain", "gap", "replace_stored",
                                    "unknown_agent", "unknown_kind", "seq_mismatch", "nul_in_path"])
def test_bad_batches_are_refused_with_nothing_stored(ingest: IngestService, agent_key: Ed25519PrivateKey, damage: str) -> None:
    agent_id = _enroll(ingest.store, agent_key)
    writer = ChainWriter(agent_id, agent_key)
    ingest.ingest(writer.next(2))
    good = writer.next(2)
    batch = events_pb2.EventBatch()
    batch.CopyFrom(good)
    expected_status = {"flip_path": "PERMISSION_DENIED", "flip_signature": "PERMISSION_DENIED",
                       "wrong_key": "PERMISSION_DENIED", "broken_chain": "FAILED_PRECONDITION",
                       "gap": "FAILED_PRECONDITION", "replace_stored": "FAILED_PRECONDITION",
                       "unknown_agent": "UNAUTHENTICATED", "unknown_kind": "INVALID_ARGUMENT",
                       "seq_mismatch": "INVALID_ARGUMENT", "nul_in_path": "INVALID_ARGUMENT"}[damage]
    if damage == "flip_path":
        batch.events[0].path = batch.events[0].path.replace("report", "rep0rt")
    elif damage == "flip_signature":
        sig = bytearray(batch.signature)
        sig[10] ^= 0x01
        batch.signature = bytes(sig)
    elif damage == "wrong_key":
        thief = ChainWriter(agent_id, Ed25519PrivateKey.generate())
        thief.next_seq, thief.last_hash = 3, good.prev_batch_hash
        batch = thief.next(2)
    elif damage == "broken_chain":
        other = ChainWriter(agent_id, agent_key)
        other.next_seq = 3
        other.last_hash = b"\x01" * 32
        batch = other.next(2)
    elif damage == "gap":
        batch = ChainWriter(agent_id, agent_key)
        batch.next_seq, batch.last_hash = 5, good.prev_batch_hash
        batch = batch.next(2)  # seq 5.. while 3..4 was never delivered
    elif damage == "replace_stored":
        forged = ChainWriter(agent_id, agent_key)
        batch = forged.next(2, path="/forged")  # a different batch at the stored position 1
    elif damage == "unknown_agent":
        batch = ChainWriter("agt-nobody", agent_key).next(2)
    elif damage == "unknown_kind":
        batch.events[0].kind = "file.teleport"
        from shoumi.batch import sign_batch
        sign_batch(batch, agent_key)
    elif damage == "seq_mismatch":
        batch.events[1].seq = 99
    elif damage == "nul_in_path":  # signed by the agent's own key: PostgreSQL text would refuse it at commit
        batch.events[1].path = "/srv/finance/a\x00b"
        from shoumi.batch import sign_batch
        sign_batch(batch, agent_key)
    with pytest.raises(IngestError) as caught:
        ingest.ingest(batch)
    assert caught.value.status == expected_status
    assert _count(ingest.store) == 2
    assert ingest.store.chain_head(agent_id).last_seq == 2
    # and the agent's real next batch still goes in
    assert ingest.ingest(good).acked_seq == 4
    assert _count(ingest.store) == 4


def test_enrollment_token_is_one_time(sqlite_store: SqlStore, agent_key: Ed25519PrivateKey) -> None:
    svc = EnrollmentService(token_ttl_ns=MIN)
    token = svc.create_token(tx=sqlite_store, actor="test")
    pub = b"\x11" * 32
    kwargs = dict(public_key=agent_key.public_key().public_bytes_raw(), hostname="h", os_name="L", agent_version="1", peer="p")
    svc.enroll(tx=sqlite_store, token=token, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(EnrollmentError, match="used"):
        svc.enroll(tx=sqlite_store, token=token, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(EnrollmentError, match="unknown"):
        svc.enroll(tx=sqlite_store, token="se_guess", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(EnrollmentError, match="32-byte"):
        svc.enroll(tx=sqlite_store, token=svc.create_token(tx=sqlite_store, actor="t"), public_key=pub[:5], hostname="h", os_name="L", agent_version="1", peer="p")
    actions = [e.action for e in sqlite_store.list_audit(cursor=None, limit=20).items]
    assert actions.count("agent.enroll") == 1 and actions.count("agent.enroll_refused") == 2
    assert len(sqlite_store.list_agents()) == 1


def test_events_keep_every_field(ingest: IngestService, agent_key: Ed25519PrivateKey) -> None:
    writer = ChainWriter(_enroll(ingest.store, agent_key), agent_key)
    batch = writer.next(1)
    batch.ClearField("signature")
    ev: events_pb2.Event = batch.events[0]
    ev.kind = "file.copy"
    ev.dest_path = "/media/stick/q3.xlsx"
    ev.attributes.update({"source_paths": ["/srv/finance/q3.xlsx"], "match": "partial", "match_share": 0.625})
    from shoumi.batch import sign_batch
    sign_batch(batch, agent_key)
    ingest.ingest(batch)
    [stored] = ingest.store.list_events(EventFilter(), cursor=None, limit=10).items
    assert (stored.kind, stored.dest_path, stored.pid, stored.process, stored.exe, stored.uid) == (
        "file.copy", "/media/stick/q3.xlsx", 4242, "cat", "/usr/bin/cat", 1000)
    assert stored.attributes == {"source_paths": ["/srv/finance/q3.xlsx"], "match": "partial", "match_share": 0.625}


def _alerts(store: SqlStore, rule: str) -> list:
    return [a for a in store.list_alerts(cursor=None, limit=100).items if a.rule == rule]


def test_forgery_raises_one_tamper_alert_that_says_what_was_wrong(ingest: IngestService, agent_key: Ed25519PrivateKey) -> None:
    agent_id = _enroll(ingest.store, agent_key)
    writer = ChainWriter(agent_id, agent_key)
    ingest.ingest(writer.next(2))
    forged = writer.next(2)
    forged.events[0].path = "/srv/finance/innocent.txt"
    for _ in range(3):
        with pytest.raises(IngestError):
            ingest.ingest(forged)
    [alert] = _alerts(ingest.store, "agent_tamper")
    assert alert.agent_id == agent_id and alert.severity == "high"
    assert "bad_signature" in alert.summary and "nothing of it stored" in alert.summary


def test_new_epoch_is_accepted_and_reported(ingest: IngestService, agent_key: Ed25519PrivateKey) -> None:
    agent_id = _enroll(ingest.store, agent_key)
    old = ChainWriter(agent_id, agent_key, epoch=1)
    ingest.ingest(old.next(5))
    new = ChainWriter(agent_id, agent_key, epoch=2)
    assert ingest.ingest(new.next(2)).acked_seq == 2
    [alert] = _alerts(ingest.store, "agent_epoch_reset")
    assert "epoch 2 after epoch 1 ended at seq 5" in alert.summary
    with pytest.raises(IngestError) as older:
        ingest.ingest(ChainWriter(agent_id, agent_key, epoch=1).next(1))  # back to an old epoch: refused
    assert older.value.status == "FAILED_PRECONDITION"


def test_graceful_stop_is_told_from_silence(sqlite_store: SqlStore, agent_key: Ed25519PrivateKey) -> None:
    from collector.fleet import service as fleet_service

    now = [10**18]
    ingest = IngestService(sqlite_store, clock=lambda: now[0])

    class fleet:  # the fleet service on the test's clock, one transaction per check
        @staticmethod
        def check_silence() -> list:
            with sqlite_store.transaction() as tx:
                return fleet_service.check_silence(tx=tx, now_ns=now[0])

    stopping_id, vanishing_id = _enroll(sqlite_store, agent_key), _enroll(sqlite_store, agent_key)
    for agent_id in (stopping_id, vanishing_id):
        writer = ChainWriter(agent_id, agent_key)
        start = writer.next(1, kind="agent.start")
        start.ClearField("signature")
        start.events[0].attributes.update({"interval_s": 10})
        from shoumi.batch import sign_batch
        writer.last_hash = sign_batch(start, agent_key)
        ingest.ingest(start)
        if agent_id == stopping_id:
            ingest.ingest(writer.next(1, kind="agent.stop"))
    now[0] += 29 * 10**9
    assert fleet.check_silence() == []  # 2.9 intervals: not yet
    now[0] += 2 * 10**9
    [alert] = fleet.check_silence()
    assert alert.rule == "agent_silent" and alert.agent_id == vanishing_id and "10 s" in alert.summary
    assert fleet.check_silence() == []  # one alert per silence
    states = {a.agent_id: a.liveness for a in sqlite_store.list_agents()}
    assert states == {stopping_id: "stopped", vanishing_id: "silent"}


def test_revoked_agent_is_refused(ingest: IngestService, agent_key: Ed25519PrivateKey) -> None:
    from collector.fleet import service as fleet

    agent_id = _enroll(ingest.store, agent_key)  # type: ignore[arg-type]
    writer = ChainWriter(agent_id, agent_key)
    ingest.ingest(writer.next(1))
    with ingest.store.transaction() as tx:
        assert fleet.revoke(tx=tx, agent_id=agent_id, actor="it", now_ns=1)
    with pytest.raises(IngestError) as refused:
        ingest.ingest(writer.next(1))
    assert refused.value.status == "PERMISSION_DENIED" and refused.value.reason == "revoked_agent"
    assert ingest.store.list_audit(cursor=None, limit=1).items[0].action == "agent.revoke"


def test_detection_cut_short_by_a_crash_resumes_from_its_position(sqlite_store: SqlStore, agent_key: Ed25519PrivateKey) -> None:
    from collector.detection.service import DetectionStage

    class CrashingDetection(DetectionStage):
        def _raise(self, tx: object, finding: object) -> None:  # the process dies mid-detection
            raise SystemExit("killed")

    agent_id = _enroll(sqlite_store, agent_key)
    batch = ChainWriter(agent_id, agent_key).next(12)
    ingest = IngestService(sqlite_store)
    assert ingest.ingest(batch).acked_seq == 12  # stored and acknowledged: detection is not ingest's job
    rule = _burst(threshold=5, minutes=1)
    with pytest.raises(SystemExit):
        CrashingDetection(sqlite_store, rules=rule).run_once()
    assert _count(sqlite_store) == 12 and _alerts(sqlite_store, "read_burst") == []
    restarted = DetectionStage(sqlite_store, rules=rule)
    assert restarted.run_until_idle() == 12  # nothing was marked: all of it is looked at again
    [alert] = _alerts(sqlite_store, "read_burst")
    assert len(alert.event_ids) == 12
    assert ingest.ingest(batch).acked_seq == 12 and restarted.run_until_idle() == 0  # a redelivery: nothing new
    assert len(_alerts(sqlite_store, "read_burst")) == 1 and _count(sqlite_store) == 12


def test_a_skewed_agent_clock_is_stored_and_reported_once(sqlite_store: SqlStore, agent_key: Ed25519PrivateKey) -> None:
    now = [10**18]
    ingest = IngestService(sqlite_store, clock=lambda: now[0])
    writer = ChainWriter(_enroll(sqlite_store, agent_key), agent_key)
    from shoumi.batch import sign_batch

    for hours_ahead in (0, 2, 3):
        batch = writer.next(0)
        batch.ClearField("signature")
        batch.events.append(__import__("tests.conftest", fromlist=["make_event"]).make_event(batch.first_seq))
        batch.created_unix_ns = now[0] + hours_ahead * 3600 * 10**9
        writer.next_seq = batch.first_seq + 1
        writer.last_hash = sign_batch(batch, agent_key)
        ingest.ingest(batch)
    assert _count(sqlite_store) == 3  # nothing refused
    [alert] = _alerts(sqlite_store, "agent_clock_skew")
    assert "+10800 s off" in alert.summary  # the latest measurement
