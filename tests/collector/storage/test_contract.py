"""The store contract: every backend (SQLite file, PostgreSQL) passes the same tests."""

from __future__ import annotations

import threading

import pytest

from shoumi.batch import ChainHead

from collector.alerts.models import Alert
from collector.audit.models import AuditEntry
from collector.events.models import EventFilter, StoredBatch, StoredEvent
from collector.fleet.models import AgentRecord
from collector.people.models import User
from collector.storage import AlreadyExists, ChainConflict, SqlStore


def _agent(agent_id: str = "agt-1") -> AgentRecord:
    return AgentRecord(agent_id, b"k" * 32, "ws-01", "Linux", "0.1.0", 1)


def _batch(agent_id: str, first: int, last: int, h: bytes, prev: bytes = bytes(32), epoch: int = 1) -> StoredBatch:
    return StoredBatch(agent_id, epoch, first, last, h, prev, b"s" * 64, b"canonical", 5)


def _events(agent_id: str, first: int, last: int, *, user: str = "alice", kind: str = "file.read", epoch: int = 1) -> list[StoredEvent]:
    return [
        StoredEvent(agent_id=agent_id, epoch=epoch, seq=s, id=f"{agent_id}-{epoch}-{s}", kind=kind, time_ns=1000 + s,
                    path=f"/s/{s}", user=user, attributes={"source_paths": ["/a", "/b"], "match_share": 0.75})
        for s in range(first, last + 1)
    ]


def test_enroll_token_is_one_time_and_expires(any_store: SqlStore) -> None:
    any_store.add_enroll_token(token_hash="t1", created_at_ns=0, expires_at_ns=100, created_by="cli")
    any_store.add_enroll_token(token_hash="t2", created_at_ns=0, expires_at_ns=100, created_by="cli")
    any_store.add_enroll_token(token_hash="t3", created_at_ns=0, expires_at_ns=100, created_by="cli")
    assert any_store.consume_enroll_token(token_hash="nope", agent=_agent("a0"), now_ns=1) == "unknown"
    assert any_store.consume_enroll_token(token_hash="t1", agent=_agent("a1"), now_ns=1) is None
    assert any_store.consume_enroll_token(token_hash="t1", agent=_agent("a2"), now_ns=2) == "used"
    assert any_store.consume_enroll_token(token_hash="t2", agent=_agent("a3"), now_ns=100) == "expired"
    assert any_store.revoke_enroll_token(token_hash="t3", now_ns=5)
    assert any_store.consume_enroll_token(token_hash="t3", agent=_agent("a4"), now_ns=6) == "revoked"
    assert [a.agent_id for a in any_store.list_agents()] == ["a1"]
    assert any_store.get_agent("a1") == _agent("a1")
    assert any_store.get_agent("a2") is None


def test_batch_is_stored_with_its_events_and_moves_the_head(any_store: SqlStore) -> None:
    assert any_store.chain_head("agt-1") is None
    any_store.store_batch(_batch("agt-1", 1, 3, b"h1" * 16), _events("agt-1", 1, 3), expected_head=None)
    head = ChainHead(1, 3, b"h1" * 16)
    assert any_store.chain_head("agt-1") == head
    assert any_store.batch_hash_at(agent_id="agt-1", epoch=1, first_seq=1) == b"h1" * 16
    assert any_store.batch_hash_at(agent_id="agt-1", epoch=1, first_seq=4) is None
    page = any_store.list_events(EventFilter(), cursor=None, limit=10)
    assert [e.seq for e in page.items] == [1, 2, 3]
    assert page.items[0].attributes == {"source_paths": ["/a", "/b"], "match_share": 0.75}
    assert page.next_cursor is None
    assert [b.first_seq for b in any_store.list_batches(agent_id="agt-1")] == [1]


def test_stale_head_stores_nothing(any_store: SqlStore) -> None:
    any_store.store_batch(_batch("agt-1", 1, 2, b"a" * 32), _events("agt-1", 1, 2), expected_head=None)
    with pytest.raises(ChainConflict):
        any_store.store_batch(_batch("agt-1", 3, 4, b"b" * 32, b"a" * 32), _events("agt-1", 3, 4), expected_head=None)
    with pytest.raises(ChainConflict):  # same position again, even with the right head
        any_store.store_batch(_batch("agt-1", 1, 2, b"c" * 32), _events("agt-1", 1, 2),
                              expected_head=ChainHead(1, 2, b"a" * 32))
    assert len(any_store.list_events(EventFilter(), cursor=None, limit=100).items) == 2
    assert any_store.chain_head("agt-1") == ChainHead(1, 2, b"a" * 32)


def test_concurrent_writers_of_one_position_store_once(any_store: SqlStore) -> None:
    results: list[str] = []

    def write() -> None:
        try:
            any_store.store_batch(_batch("agt-1", 1, 50, b"x" * 32), _events("agt-1", 1, 50), expected_head=None)
            results.append("stored")
        except ChainConflict:
            results.append("conflict")

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "conflict", "conflict", "stored"]
    assert len(any_store.list_events(EventFilter(), cursor=None, limit=1000).items) == 50


def test_event_paging_and_filters(any_store: SqlStore) -> None:
    any_store.store_batch(_batch("agt-1", 1, 5, b"a" * 32), _events("agt-1", 1, 5), expected_head=None)
    any_store.store_batch(_batch("agt-2", 1, 5, b"b" * 32), _events("agt-2", 1, 5, user="bob", kind="file.write"), expected_head=None)
    seen, cursor = [], None
    while True:
        page = any_store.list_events(EventFilter(), cursor=None if cursor is None else int(cursor), limit=3)
        seen.extend(e.id for e in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 10 and len(set(seen)) == 10
    only = any_store.list_events(EventFilter(agent_id="agt-2"), cursor=None, limit=100).items
    assert {e.agent_id for e in only} == {"agt-2"} and len(only) == 5
    assert len(any_store.list_events(EventFilter(kind="file.write"), cursor=None, limit=100).items) == 5
    assert [e.seq for e in any_store.list_events(EventFilter(agent_id="agt-1", since_ns=1004), cursor=None, limit=100).items] == [4, 5]
    window = any_store.events_in_window(user="alice", kind="file.read", since_ns=1002, until_ns=1004, cap=100)
    assert [e.seq for e in window] == [2, 3, 4]


def test_alerts_round_trip_and_page(any_store: SqlStore) -> None:
    created = [
        any_store.add_alert(Alert("read_burst", "high", "open", f"u{i}", "agt-1", i, i, ("e1", "e2"), f"s{i}", last_event_ns=i))
        for i in range(5)
    ]
    assert [a.id for a in created] == sorted({a.id for a in created})
    assert any_store.latest_open_alert(rule="read_burst", user="u3") == created[3]
    from dataclasses import replace

    any_store.update_alert(replace(created[3], event_ids=(), updated_at_ns=99))  # fields only: evidence stays
    assert any_store.add_evidence(alert_id=created[3].id, event_ids=["e2", "e3"]) == 1  # appended, once
    again = any_store.latest_open_alert(rule="read_burst", user="u3")
    assert again.event_ids == ("e1", "e2", "e3") and again.updated_at_ns == 99
    first = any_store.list_alerts(cursor=None, limit=2)
    assert [a.user for a in first.items] == ["u4", "u3"] and first.next_cursor
    rest = any_store.list_alerts(cursor=int(first.next_cursor), limit=10)
    assert [a.user for a in rest.items] == ["u2", "u1", "u0"] and rest.next_cursor is None


def test_events_after_reads_back_what_was_stored(any_store: SqlStore) -> None:
    stored = _events("agt-1", 1, 4)
    stored[1] = stored[1]._replace(attributes={})
    any_store.store_batch(_batch("agt-1", 1, 4, b"a" * 32), stored, expected_head=None)
    back = any_store.events_after(agent_id="agt-1", epoch=1, seq=1, limit=10)
    assert [e._replace(row_id=None) for e in back] == [e._replace(row_id=None) for e in stored[1:]]
    a = back[1].attributes  # detection's read: as the dict it was, whichever way a store keeps it
    assert a == {"source_paths": ["/a", "/b"], "match_share": 0.75} and dict(a) == a and len(a) == 2
    assert a.get("match_share") == 0.75 and a.get("nope") is None and a["source_paths"] == ["/a", "/b"]
    assert sorted(a.items()) == [("match_share", 0.75), ("source_paths", ["/a", "/b"])] and "match_share" in a
    head = any_store.chain_head("agt-1")
    any_store.store_batch(_batch("agt-1", 1, 2, b"c" * 32, prev=b"a" * 32, epoch=2), _events("agt-1", 1, 2, epoch=2),
                          expected_head=head)  # a new epoch (the agent's spool was reset) starts at seq 1 again
    assert [(e.epoch, e.seq) for e in any_store.events_after(agent_id="agt-1", epoch=1, seq=3, limit=10)] == [
        (1, 4), (2, 1), (2, 2)]
    assert [(e.epoch, e.seq) for e in any_store.events_after(agent_id="agt-1", epoch=2, seq=1, limit=10)] == [(2, 2)]
    assert [(e.epoch, e.seq) for e in any_store.events_after(agent_id="agt-1", epoch=0, seq=0, limit=2)] == [(1, 1), (1, 2)]


def test_evidence_appended_once_in_order(any_store: SqlStore) -> None:
    made = any_store.add_alert(Alert("usb_exfiltration", "high", "open", "u", "agt-1", 1, 1, ("a", "b", "a", "c"), "s"))
    assert made.evidence_count == 3 and made.event_ids == ("a", "b", "c")
    assert any_store.add_evidence(alert_id=made.id, event_ids=["c", "d", "b", "e", "d"]) == 2  # d, e new
    assert any_store.add_evidence(alert_id=made.id, event_ids=["a", "e"]) == 0
    big = [f"x{i}" for i in range(1_200)]  # more than one chunk of whatever the store batches by
    assert any_store.add_evidence(alert_id=made.id, event_ids=["a", *big, "f"]) == 1_201
    assert any_store.add_evidence(alert_id=made.id, event_ids=["g"]) == 1
    assert any_store.get_alert(made.id).event_ids == ("a", "b", "c", "d", "e", *big, "f", "g")
    other = any_store.add_alert(Alert("usb_exfiltration", "high", "open", "v", "agt-1", 1, 1, ("a",), "s"))
    assert any_store.get_alert(other.id).event_ids == ("a",)  # evidence is per alert


def test_users_tokens_and_audit(any_store: SqlStore) -> None:
    any_store.add_user(User("ana", "security_analyst", "hash", 1))
    with pytest.raises(AlreadyExists):
        any_store.add_user(User("ana", "hr", None, 2))
    any_store.add_token(token_hash="tk", username="ana", kind="api", created_at_ns=1, expires_at_ns=None)
    any_store.add_token(token_hash="ss", username="ana", kind="session", created_at_ns=1, expires_at_ns=50)
    assert any_store.user_for_token(token_hash="tk", kind="api", now_ns=10).username == "ana"
    assert any_store.user_for_token(token_hash="tk", kind="session", now_ns=10) is None
    assert any_store.user_for_token(token_hash="ss", kind="session", now_ns=49) is not None
    assert any_store.user_for_token(token_hash="ss", kind="session", now_ns=50) is None
    any_store.revoke_token(token_hash="tk")
    assert any_store.user_for_token(token_hash="tk", kind="api", now_ns=10) is None
    any_store.append_audit(AuditEntry(1, "cli:root", "user.create", "ana", {"role": "security_analyst"}))
    any_store.append_audit(AuditEntry(2, "ana", "events.list", "events", {"kind": "file.read"}))
    page = any_store.list_audit(cursor=None, limit=10)
    assert [(e.actor, e.action, dict(e.details)) for e in page.items] == [
        ("ana", "events.list", {"kind": "file.read"}),
        ("cli:root", "user.create", {"role": "security_analyst"}),
    ]


def test_certificates_are_recorded_and_revoked(any_store: SqlStore) -> None:
    serial = 2**150 + 7  # X.509 serials are up to 20 bytes: larger than any SQL integer
    any_store.add_certificate(serial=serial, agent_id="agt-1", not_before_ns=1, not_after_ns=2)
    assert any_store.certificate_status(serial=serial) == ("agt-1", False)
    assert any_store.certificate_status(serial=5) is None
    assert any_store.revoke_certificate(serial=serial, now_ns=3)
    assert not any_store.revoke_certificate(serial=serial, now_ns=4)
    assert any_store.certificate_status(serial=serial) == ("agt-1", True)
