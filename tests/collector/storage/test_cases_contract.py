"""The case area's contract: memory, SQLite and PostgreSQL store and read cases alike."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from collector.alerts.models import Alert
from collector.cases.models import Attachment, Case, Comment, Handoff, HistoryEntry, HrRecord
from collector.events.models import StoredBatch, StoredEvent
from collector.storage import AlreadyExists


def _case(alert_ids: tuple[int, ...], *, state: str = "open", assignee: str | None = None) -> Case:
    return Case("copied drawings out", state, "alice", "ana", 10, 10, alert_ids, 5, assignee)


def _alert(any_store: Any, event_ids: tuple[str, ...] = ()) -> int:
    a = any_store.add_alert(Alert("read_burst", "high", "open", "alice", "agt-1", 1, 1, event_ids, "s", last_event_ns=1))
    return int(a.id)


def test_cases_round_trip_filter_and_page(any_store: Any) -> None:
    a1, a2 = _alert(any_store), _alert(any_store)
    made = [any_store.add_case(_case((a1, a2, a1) if i == 0 else (a2,), assignee="ana" if i % 2 else None))
            for i in range(5)]
    first = any_store.get_case(made[0].id)
    assert first == replace(made[0]) and first.alert_ids == (a1, a2) and first.state == "open"
    assert any_store.update_case(replace(first, state="under_review", assignee="bo", updated_at_ns=20, alert_ids=()),
                                 only_from="open")
    assert not any_store.update_case(replace(first, state="dismissed"), only_from="open")  # someone moved it first
    assert not any_store.update_case(replace(first, id=10**9))
    again = any_store.get_case(first.id)
    assert (again.state, again.assignee, again.updated_at_ns, again.alert_ids) == ("under_review", "bo", 20, (a1, a2))
    assert any_store.get_case(10**9) is None
    page = any_store.list_cases(cursor=None, limit=3)
    assert [c.id for c in page.items] == [m.id for m in made[::-1][:3]] and page.next_cursor
    rest = any_store.list_cases(cursor=int(page.next_cursor), limit=3)
    assert [c.id for c in rest.items] == [made[1].id, made[0].id] and rest.next_cursor is None
    assert [c.id for c in any_store.list_cases(cursor=None, limit=10, state="under_review").items] == [first.id]
    assert [c.id for c in any_store.list_cases(cursor=None, limit=10, assignee="ana").items] == [made[3].id, made[1].id]
    assert any_store.cases_for_alert(a1) == [first.id]
    assert any_store.cases_for_alert(a2) == [m.id for m in made]
    assert any_store.cases_for_alert(10**9) == []


def test_incident_first_ns_is_the_earliest_evidence_event(any_store: Any) -> None:
    events = [StoredEvent(agent_id="agt-1", epoch=1, seq=s, id=f"e{s}", kind="file.read", time_ns=1000 * s, user="alice",
                          attributes={})
              for s in range(1, 4)]
    any_store.store_batch(StoredBatch("agt-1", 1, 1, 3, b"h" * 32, bytes(32), b"s" * 64, b"c", 5), events,
                          expected_head=None)
    late, early = _alert(any_store, ("e3",)), _alert(any_store, ("e2", "e3", "e-missing"))
    assert any_store.incident_first_ns([late]) == 3000
    assert any_store.incident_first_ns([late, early]) == 2000
    assert any_store.incident_first_ns([_alert(any_store)]) is None
    assert any_store.incident_first_ns([]) is None


def test_history_and_case_changes_after_in_id_order(any_store: Any) -> None:
    c1 = any_store.add_case(_case(()))
    c2 = any_store.add_case(_case(()))
    rows = [
        HistoryEntry(c1.id, 1, "ana", "opened", None, "open", {}, {"title": "t"}),
        HistoryEntry(c2.id, 2, "ana", "opened", None, "open"),
        HistoryEntry(c1.id, 3, "ana", "comment", before={}, after={"comment": 1}),
        HistoryEntry(c1.id, 4, "ana", "transition", "open", "under_review", {"state": "open"}, {"state": "under_review"}),
        HistoryEntry(c2.id, 5, "bo", "transition", "open", "dismissed", {}, {"reason": "benign 良性"}),
    ]
    stored = [any_store.add_case_history(r) for r in rows]
    ids = [s.id for s in stored]
    assert ids == sorted(ids) and len(set(ids)) == 5
    hist = any_store.case_history(c1.id)
    assert [h.action for h in hist] == ["opened", "comment", "transition"]
    assert hist[0].after == {"title": "t"} and hist[2].before == {"state": "open"}
    changes = any_store.case_changes_after(after_id=0, limit=100)
    assert [(c.case_id, c.from_state, c.to_state, c.actor, c.at_ns) for c in changes] == [
        (c1.id, None, "open", "ana", 1), (c2.id, None, "open", "ana", 2),
        (c1.id, "open", "under_review", "ana", 4), (c2.id, "open", "dismissed", "bo", 5)]
    assert [c.id for c in changes] == [ids[0], ids[1], ids[3], ids[4]]
    assert [c.id for c in any_store.case_changes_after(after_id=ids[1], limit=1)] == [ids[3]]
    assert any_store.case_changes_after(after_id=ids[4], limit=10) == []


def test_comments_attachments_and_hr_records(any_store: Any) -> None:
    c = any_store.add_case(_case(()))
    any_store.add_comment(Comment(c.id, "ana", 1, "first <b>"))
    any_store.add_comment(Comment(c.id, "hana", 2, "第二"))
    assert [(x.author, x.body) for x in any_store.list_comments(c.id)] == [("ana", "first <b>"), ("hana", "第二")]
    sha = "ab" * 32
    a1 = any_store.add_attachment(Attachment(c.id, "报告.pdf", sha, 3, "application/pdf", "ana", 3), b"abc")
    a2 = any_store.add_attachment(Attachment(c.id, "copy.pdf", sha, 3, "application/pdf", "hana", 4), b"abc")
    assert a1.id != a2.id and any_store.get_attachment(a1.id) == a1
    assert [a.display_name for a in any_store.list_attachments(c.id)] == ["报告.pdf", "copy.pdf"]
    assert any_store.attachment_content(sha) == b"abc" and any_store.attachment_content("cd" * 32) is None
    assert any_store.get_attachment(10**9) is None
    any_store.add_hr_record(HrRecord(c.id, "loss", {"amount_fen": 500000, "documents": [a1.id]}, "hana", 5))
    any_store.add_hr_record(HrRecord(c.id, "loss", {"amount_fen": 400000, "documents": [a1.id]}, "hana", 6))
    recs = any_store.hr_records(c.id)
    assert [(r.kind, r.data["amount_fen"], r.recorded_at_ns) for r in recs] == [("loss", 500000, 5), ("loss", 400000, 6)]


def test_outbox_rows_are_unique_leased_once_and_saved(any_store: Any) -> None:
    c = any_store.add_case(_case(()))
    h = any_store.add_handoff(Handoff(c.id, 1, '{"case_id": "SC-1"}', "hana", 10, next_attempt_ns=100))
    with pytest.raises(AlreadyExists):
        any_store.add_handoff(Handoff(c.id, 1, "{}", "hana", 11, next_attempt_ns=100))
    assert any_store.claim_handoffs(now_ns=99, lease_ns=50, limit=10) == []
    got = any_store.claim_handoffs(now_ns=100, lease_ns=50, limit=10)
    assert [(x.id, x.attempts, x.lease_until_ns) for x in got] == [(h.id, 1, 150)]
    assert any_store.claim_handoffs(now_ns=120, lease_ns=50, limit=10) == []  # leased
    again = any_store.claim_handoffs(now_ns=150, lease_ns=50, limit=10)  # the lease ran out: a new attempt
    assert [(x.id, x.attempts) for x in again] == [(h.id, 2)]
    done = replace(again[0], state="accepted", answer={"status": "accepted"}, answered_at_ns=160, next_attempt_ns=0,
                   lease_until_ns=0, schedule={"lines": []}, payload="ignored")
    any_store.save_handoff(done)
    assert any_store.claim_handoffs(now_ns=10**18, lease_ns=50, limit=10) == []
    (stored,) = any_store.handoffs(c.id)
    assert (stored.state, stored.answer, stored.schedule, stored.payload, stored.attempts) == (
        "accepted", {"status": "accepted"}, {"lines": []}, '{"case_id": "SC-1"}', 2)
    any_store.save_handoff(replace(stored, next_attempt_ns=500))  # an accepted row's schedule is due again
    assert [x.attempts for x in any_store.claim_handoffs(now_ns=500, lease_ns=50, limit=10)] == [2]
    h2 = any_store.add_handoff(Handoff(c.id, 2, "{}", "hana", 12, next_attempt_ns=1))
    assert [x.number for x in any_store.handoffs(c.id)] == [1, 2] and h2.key == f"{c.id}/2"
