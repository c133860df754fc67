"""The fleet's storage contract (labels, multi-use tokens, health rows, the fleet query), on memory, SQLite, PostgreSQL."""

from __future__ import annotations

import json
import threading
from typing import Any

from collector.alerts.models import Alert
from collector.fleet.models import AgentHealth, AgentQuery, AgentRecord


def _agent(agent_id: str, *, hostname: str = "ws-01", version: str = "0.1.0", os_name: str = "Linux 6.1",
           enrolled: int = 1) -> AgentRecord:
    return AgentRecord(agent_id, b"k" * 32, hostname, os_name, version, enrolled)


def _enroll(store: Any, agent: AgentRecord, *, labels: tuple[str, ...] = ()) -> None:
    store.add_enroll_token(token_hash=f"t-{agent.agent_id}", created_at_ns=0, expires_at_ns=10**18, created_by="t",
                           labels=labels)
    assert store.consume_enroll_token(token_hash=f"t-{agent.agent_id}", agent=agent, now_ns=1) is None


def test_a_multi_use_token_stops_at_its_count_and_gives_its_labels(any_store: Any) -> None:
    any_store.add_enroll_token(token_hash="batch", created_at_ns=5, expires_at_ns=100, created_by="it", max_uses=3,
                               labels=("dept:finance", "floor-3"), name="finance laptops")
    for i in range(3):
        assert any_store.consume_enroll_token(token_hash="batch", agent=_agent(f"a{i}"), now_ns=10 + i) is None
    assert any_store.consume_enroll_token(token_hash="batch", agent=_agent("a3"), now_ns=20) == "used"
    assert any_store.get_agent("a3") is None
    assert any_store.get_agent("a1").labels == ("dept:finance", "floor-3")
    assert [a.labels for a in any_store.list_agents()] == [("dept:finance", "floor-3")] * 3
    t = any_store.get_enroll_token("batch")
    assert (t.max_uses, t.uses, t.labels, t.name, t.used_at_ns, t.created_by) == (
        3, 3, ("dept:finance", "floor-3"), "finance laptops", 12, "it")
    assert not any_store.revoke_enroll_token(token_hash="batch", now_ns=30)  # nothing left to revoke
    assert any_store.agent_ids_with_label("floor-3") == ["a0", "a1", "a2"]


def test_a_token_is_refused_after_expiry_or_revocation_with_uses_left(any_store: Any) -> None:
    any_store.add_enroll_token(token_hash="x", created_at_ns=0, expires_at_ns=100, created_by="it", max_uses=5)
    assert any_store.consume_enroll_token(token_hash="x", agent=_agent("a1"), now_ns=50) is None
    assert any_store.consume_enroll_token(token_hash="x", agent=_agent("a2"), now_ns=100) == "expired"
    any_store.add_enroll_token(token_hash="y", created_at_ns=1, expires_at_ns=100, created_by="it", max_uses=5)
    assert any_store.consume_enroll_token(token_hash="y", agent=_agent("a3"), now_ns=50) is None
    assert any_store.revoke_enroll_token(token_hash="y", now_ns=60)  # a partly used token can be revoked
    assert not any_store.revoke_enroll_token(token_hash="y", now_ns=61)
    assert any_store.consume_enroll_token(token_hash="y", agent=_agent("a4"), now_ns=70) == "revoked"
    assert [a.agent_id for a in any_store.list_agents()] == ["a1", "a3"]
    assert [t.token_hash for t in any_store.list_enroll_tokens()] == ["y", "x"]
    assert any_store.get_enroll_token("y").uses == 1 and any_store.get_enroll_token("y").revoked_at_ns == 60
    assert any_store.get_enroll_token("nope") is None


def test_two_agents_racing_for_the_last_use_one_wins(any_store: Any) -> None:
    any_store.add_enroll_token(token_hash="last", created_at_ns=0, expires_at_ns=10**18, created_by="it", max_uses=2)
    assert any_store.consume_enroll_token(token_hash="last", agent=_agent("first"), now_ns=1) is None
    results: list[str | None] = []
    barrier = threading.Barrier(6)

    def race(i: int) -> None:
        barrier.wait()
        results.append(any_store.consume_enroll_token(token_hash="last", agent=_agent(f"r{i}"), now_ns=2))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == [None] + ["used"] * 5
    assert any_store.get_enroll_token("last").uses == 2
    assert len(any_store.list_agents()) == 2


def test_labels_are_replaced_and_found_by_label(any_store: Any) -> None:
    _enroll(any_store, _agent("a1"), labels=("old",))
    _enroll(any_store, _agent("a2"))
    assert any_store.set_agent_labels(agent_id="a1", labels=("dept:it", "lab"))
    assert any_store.set_agent_labels(agent_id="a2", labels=("lab",))
    assert not any_store.set_agent_labels(agent_id="nope", labels=("lab",))
    assert any_store.get_agent("a1").labels == ("dept:it", "lab")
    assert any_store.agent_ids_with_label("lab") == ["a1", "a2"]
    assert any_store.agent_ids_with_label("old") == []
    assert any_store.set_agent_labels(agent_id="a2", labels=())
    assert any_store.get_agent("a2").labels == ()
    assert any_store.agent_ids_with_label("lab") == ["a1"]


def test_a_health_row_is_written_and_replaced(any_store: Any) -> None:
    _enroll(any_store, _agent("a1"))
    assert any_store.get_agent_health("a1") is None
    h = AgentHealth("a1", 10, 9, "0.2.0", 5, 4096, 1, 7, 2, -1500, ("zhang.san", "li.si"))
    any_store.put_agent_health(h)
    assert any_store.get_agent_health("a1") == h
    h2 = AgentHealth("a1", 20, 19, "0.2.1", 0, 0, 0, 7, 3, 12, ("li.si",))
    any_store.put_agent_health(h2)
    assert any_store.get_agent_health("a1") == h2


def _fleet(store: Any) -> None:
    hosts = [("a1", "zeta", "0.1.0", "Linux 6.1"), ("a2", "alpha", "0.2.0", "Linux 5.15"),
             ("a3", "mid", "0.2.0", "Windows"), ("a4", "beta", "0.1.0", "Linux 6.1"), ("a5", "mid", "0.3.0", "Linux")]
    for i, (agent_id, host, version, os_name) in enumerate(hosts):
        _enroll(store, _agent(agent_id, hostname=host, version=version, os_name=os_name, enrolled=i),
                labels=("lab",) if i % 2 == 0 else ())
    store.update_agent_liveness(agent_id="a1", liveness="active", last_seen_ns=500)
    store.update_agent_liveness(agent_id="a2", liveness="active", last_seen_ns=300)
    store.update_agent_liveness(agent_id="a2", liveness="silent")
    store.update_agent_liveness(agent_id="a3", liveness="stopped", last_seen_ns=400)
    store.revoke_agent(agent_id="a4", now_ns=9)


def _walk(store: Any, q: AgentQuery, limit: int) -> list[str]:
    out: list[str] = []
    after = None
    while True:
        page = store.query_agents(q, after=after, limit=limit)
        out += [r.agent.agent_id for r in page.items]
        if page.next_cursor is None:
            return out
        after = tuple(json.loads(page.next_cursor))


def test_the_fleet_query_filters_sorts_and_pages(any_store: Any) -> None:
    _fleet(any_store)
    assert _walk(any_store, AgentQuery(), 2) == ["a2", "a4", "a3", "a5", "a1"]
    assert _walk(any_store, AgentQuery(sort="hostname", descending=True), 2) == ["a1", "a5", "a3", "a4", "a2"]
    assert _walk(any_store, AgentQuery(sort="last_seen", descending=True), 1) == ["a1", "a3", "a2", "a5", "a4"]
    assert _walk(any_store, AgentQuery(sort="version"), 3) == ["a1", "a4", "a2", "a3", "a5"]
    assert _walk(any_store, AgentQuery(sort="status"), 2) == ["a5", "a1", "a4", "a2", "a3"]
    assert _walk(any_store, AgentQuery(sort="enrolled", descending=True), 4) == ["a5", "a4", "a3", "a2", "a1"]
    assert _walk(any_store, AgentQuery(status="online"), 10) == ["a1"]
    assert _walk(any_store, AgentQuery(status="offline"), 10) == ["a5"]
    assert _walk(any_store, AgentQuery(status="revoked"), 10) == ["a4"]
    assert _walk(any_store, AgentQuery(status="silent"), 10) == ["a2"]
    assert _walk(any_store, AgentQuery(label="lab"), 1) == ["a3", "a5", "a1"]
    assert _walk(any_store, AgentQuery(version="0.2.0"), 10) == ["a2", "a3"]
    assert _walk(any_store, AgentQuery(os="LINUX 6"), 10) == ["a4", "a1"]
    assert _walk(any_store, AgentQuery(text="MI"), 10) == ["a3", "a5"]
    assert _walk(any_store, AgentQuery(text="a_"), 10) == []  # LIKE's wildcards are plain text
    assert _walk(any_store, AgentQuery(text="a2"), 10) == ["a2"]
    assert any_store.count_agents_by_status() == {"online": 1, "offline": 1, "silent": 1, "stopped": 1, "revoked": 1}
    assert list(any_store.agent_versions()) == ["0.1.0", "0.2.0", "0.3.0"]


def test_fleet_rows_carry_health_and_the_newest_certificate(any_store: Any) -> None:
    _enroll(any_store, _agent("a1"))
    _enroll(any_store, _agent("a2", hostname="ws-02"))
    any_store.add_certificate(serial=1, agent_id="a1", not_before_ns=-10**6, not_after_ns=1000)
    any_store.add_certificate(serial=2, agent_id="a1", not_before_ns=-10**6, not_after_ns=2000)
    any_store.revoke_certificate(serial=2, now_ns=5)
    any_store.add_certificate(serial=3, agent_id="a2", not_before_ns=-10**6, not_after_ns=5000)
    h = AgentHealth("a1", 10, 9, "0.2.0", 5, 4096, 1, 7, 2, -1500, ("zhang.san",))
    any_store.put_agent_health(h)
    rows = any_store.query_agents(AgentQuery(), after=None, limit=10).items
    assert [(r.agent.agent_id, r.health, r.certificate_not_after_ns) for r in rows] == [
        ("a1", h, 1000), ("a2", None, 5000)]
    assert list(any_store.certificates_expiring(before_ns=3000, now_ns=10, limit=10)) == [("a1", 1000)]
    assert list(any_store.certificates_expiring(before_ns=6000, now_ns=10, limit=10)) == [("a1", 1000), ("a2", 5000)]
    assert list(any_store.certificates_expiring(before_ns=6000, now_ns=1000, limit=10)) == [("a2", 5000)]  # expired
    any_store.revoke_agent(agent_id="a2", now_ns=11)
    assert list(any_store.certificates_expiring(before_ns=6000, now_ns=10, limit=10)) == [("a1", 1000)]
    # a short-lived certificate with most of its life left is not about to expire: its renewal is not due yet
    _enroll(any_store, _agent("a3", hostname="ws-03"))
    any_store.add_certificate(serial=4, agent_id="a3", not_before_ns=5, not_after_ns=1005)
    assert list(any_store.certificates_expiring(before_ns=6000, now_ns=10, limit=10)) == [("a1", 1000)]
    assert list(any_store.certificates_expiring(before_ns=6000, now_ns=800, limit=10)) == [("a1", 1000), ("a3", 1005)]


def test_open_alerts_of_agents_by_rule(any_store: Any) -> None:
    def alert(agent_id: str, rule: str, status: str = "open") -> int:
        return any_store.add_alert(Alert(rule=rule, severity="medium", status=status, user="", agent_id=agent_id,
                                         created_at_ns=1, updated_at_ns=1, event_ids=(), summary="s")).id

    s1 = alert("a1", "agent_silent")
    g1 = alert("a1", "capture_gap")
    alert("a1", "read_burst")
    alert("a2", "capture_gap", status="closed")
    c3 = alert("a3", "certificate_expiring")
    got = any_store.open_agent_alerts(agent_ids=["a1", "a2", "a3", "a9"],
                                      rules=["agent_silent", "capture_gap", "certificate_expiring"])
    assert got == {"a1": (("capture_gap", g1), ("agent_silent", s1)), "a3": (("certificate_expiring", c3),)}
    assert any_store.open_agent_alerts(agent_ids=[], rules=["agent_silent"]) == {}


def test_recent_agent_events_reads_a_bounded_tail_newest_first(any_store: Any) -> None:
    from collector.events.models import StoredBatch, StoredEvent

    kinds = ["file.read", "agent.heartbeat", "file.read", "agent.capture_gap", "agent.heartbeat", "file.read"]
    events = [StoredEvent(agent_id="a1", epoch=1, seq=i + 1, id=f"e{i}", kind=k, time_ns=100 + i, path="", user="",
                          attributes={"n": i}) for i, k in enumerate(kinds)]
    any_store.store_batch(StoredBatch("a1", 1, 1, 6, b"h" * 32, bytes(32), b"s" * 64, b"c", 5), events,
                          expected_head=None)
    want = ["agent.heartbeat", "agent.capture_gap"]
    assert [e.seq for e in any_store.recent_agent_events(agent_id="a1", kinds=want, scan=100, limit=10)] == [5, 4, 2]
    assert [e.seq for e in any_store.recent_agent_events(agent_id="a1", kinds=want, scan=3, limit=10)] == [5, 4]
    assert [e.seq for e in any_store.recent_agent_events(agent_id="a1", kinds=want, scan=100, limit=1)] == [5]
    assert any_store.recent_agent_events(agent_id="a2", kinds=want, scan=100, limit=10) == []
