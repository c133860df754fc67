"""The notification area's contract, run against every store backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from typing import Any

from collector.alerts.models import Alert
from collector.notify.models import AlertFact, Notification


def _alert(severity: str, rule: str = "read_burst") -> Alert:
    return Alert(rule=rule, severity=severity, status="open", user="zhang.san", agent_id="ws-1", created_at_ns=1,
                 updated_at_ns=1, event_ids=(), summary="zhang.san read /srv/finance/x.xlsx")


def _note(source_id: int, *, target: str = "wecom:a", at: int = 100) -> Notification:
    return Notification(channel="wecom", target=target, kind="alert", source_id=source_id, number=source_id,
                        rule="read_burst", severity="high", created_at_ns=at, next_attempt_ns=at)


def test_alerts_after_gives_id_rule_and_severity_in_id_order(any_store: Any) -> None:
    ids = [any_store.add_alert(_alert(s)).id for s in ("low", "high", "critical")]
    assert list(any_store.alerts_after(after_id=0, limit=10)) == [
        AlertFact(ids[0], "read_burst", "low"), AlertFact(ids[1], "read_burst", "high"),
        AlertFact(ids[2], "read_burst", "critical")]
    assert [a.id for a in any_store.alerts_after(after_id=ids[0], limit=1)] == [ids[1]]


def test_positions_start_at_zero_and_move(any_store: Any) -> None:
    assert any_store.notify_position("alerts") == 0
    any_store.set_notify_position(source="alerts", after_id=7)
    any_store.set_notify_position(source="alerts", after_id=9)
    any_store.set_notify_position(source="case_changes", after_id=3)
    assert (any_store.notify_position("alerts"), any_store.notify_position("case_changes")) == (9, 3)
    any_store.case_history_settled()  # callable in any transaction


def test_an_outbox_row_is_added_once_per_target_and_source(any_store: Any) -> None:
    assert any_store.add_notifications([_note(1), _note(2), _note(1, target="email")]) == 3
    assert any_store.add_notifications([_note(1), _note(3)]) == 1
    rows = any_store.list_notifications(cursor=None, limit=10).items
    assert sorted((n.target, n.source_id) for n in rows) == [("email", 1), ("wecom:a", 1), ("wecom:a", 2),
                                                             ("wecom:a", 3)]
    assert all(n.status == "pending" and n.attempts == 0 and n.id is not None for n in rows)


def test_due_claim_and_finish_follow_the_lease(any_store: Any) -> None:
    any_store.add_notifications([_note(1), _note(2), _note(3, at=500), _note(4, target="email")])
    due = any_store.due_notifications(target="wecom:a", now_ns=100, limit=10)
    assert [n.source_id for n in due] == [1, 2]
    ids = [n.id for n in due]
    assert any_store.claim_notifications(ids=ids, delivery_id=ids[0], now_ns=100, lease_until_ns=200) == 2
    assert any_store.claim_notifications(ids=ids, delivery_id=ids[0], now_ns=100, lease_until_ns=200) == 0  # leased
    assert any_store.due_notifications(target="wecom:a", now_ns=150, limit=10) == []
    # a lease that ran out (the collector died mid-send) makes the rows due again
    assert [n.source_id for n in any_store.due_notifications(target="wecom:a", now_ns=200, limit=10)] == [1, 2]
    any_store.finish_notifications(ids=ids[:1], status="sent", now_ns=120, next_attempt_ns=120, error=None)
    any_store.finish_notifications(ids=ids[1:], status="pending", now_ns=120, next_attempt_ns=900, error="HTTP 500")
    any_store.finish_notifications(ids=ids[:1], status="failed", now_ns=130, next_attempt_ns=130, error="late")  # not sending
    got = {n.source_id: n for n in any_store.list_notifications(cursor=None, limit=10).items}
    assert (got[1].status, got[1].sent_at_ns, got[1].attempts, got[1].delivery_id) == ("sent", 120, 1, ids[0])
    assert (got[2].status, got[2].next_attempt_ns, got[2].last_error, got[2].attempts) == ("pending", 900, "HTTP 500", 1)
    assert [n.source_id for n in any_store.due_notifications(target="wecom:a", now_ns=900, limit=10)] == [2, 3]


def test_recent_sends_are_a_window_per_target(any_store: Any) -> None:
    for at in (10, 20, 30):
        any_store.record_send(target="wecom:a", at_ns=at, keep_since_ns=0)
    any_store.record_send(target="email", at_ns=25, keep_since_ns=0)
    assert list(any_store.recent_sends(target="wecom:a", since_ns=20)) == [20, 30]
    any_store.record_send(target="wecom:a", at_ns=40, keep_since_ns=25)  # forgets 10 and 20
    assert list(any_store.recent_sends(target="wecom:a", since_ns=0)) == [30, 40]
    assert list(any_store.recent_sends(target="email", since_ns=0)) == [25]


def test_the_outbox_lists_newest_first_in_pages_and_by_status(any_store: Any) -> None:
    any_store.add_notifications([_note(i) for i in range(1, 6)])
    first = any_store.list_notifications(cursor=None, limit=2)
    assert [n.source_id for n in first.items] == [5, 4] and first.next_cursor is not None
    rest = any_store.list_notifications(cursor=int(first.next_cursor), limit=10)
    assert [n.source_id for n in rest.items] == [3, 2, 1] and rest.next_cursor is None
    assert any_store.list_notifications(cursor=None, limit=10, status="sent").items == ()
    assert any_store.claim_notify() is True
    assert any_store.count_notifications() == {("wecom", "pending"): 5}
