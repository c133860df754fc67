"""The retention area's contract (collector/storage/base.py RetentionArea) on memory, SQLite and PostgreSQL:
runs round-trip with their kind and reasons, case holds, chunked pruning of alerts, cases and notifications,
and the audit cut: an anchor at the last deleted row, and the chain and its head going on from it."""

from __future__ import annotations

from typing import Any

from collector.audit.models import GENESIS, AuditEntry
from collector.retention.models import RetentionRun

from tests.collector.privacy.helpers import Records, day


def test_runs_round_trip_with_kind_counts_and_reasons(any_store: Any) -> None:
    assert any_store.list_retention_runs() == [] and any_store.latest_audit_anchor() is None
    with any_store.transaction() as tx:
        run = tx.prune_notifications(before_ns=day(5), now_ns=day(9), limit=10)
    assert (run.kind, run.records, run.held, dict(run.held_why)) == ("notifications", 0, 0, {})
    [stored] = any_store.list_retention_runs()
    assert isinstance(stored, RetentionRun) and stored.id == run.id and stored.kind == "notifications"
    assert (stored.at_ns, stored.before_ns) == (day(9), day(5))


def test_case_holds_are_open_cases_and_recent_payroll_cases(any_store: Any) -> None:
    r = Records(any_store)
    open_ = r.case(on=1, user="a", alerts=[], state="hr_confirmed")
    r.case(on=1, user="b", alerts=[], state="closed")
    paid = r.case(on=1, user="c", alerts=[], state="closed", handoff_on=50)
    r.case(on=1, user="d", alerts=[], state="dismissed", handoff_on=10)
    holds = any_store.case_holds(payroll_since_ns=day(20))
    assert [(h.case_id, h.why, h.subject_user) for h in holds] == [(open_, "open", "a"), (paid, "payroll", "c")]


def test_alerts_are_pruned_a_chunk_at_a_time_and_held_ones_are_passed_over(any_store: Any) -> None:
    r = Records(any_store)
    held = [r.alert(on=1, user="h") for _ in range(3)]
    free = [r.alert(on=1, user="f") for _ in range(3)]
    r.alert(on=90, user="f")
    r.case(on=1, user="h", alerts=held, state="open")
    after, deleted, kept = 0, 0, 0
    while True:
        with any_store.transaction() as tx:
            run = tx.prune_alerts(before_ns=day(50), now_ns=day(100), limit=2, after_id=after)
        deleted, kept, after = deleted + run.records, kept + run.held, run.last_row_id
        if run.records + run.held < 2:
            break
    assert (deleted, kept) == (3, 3)
    assert not set(free) & {a.id for a in any_store.list_alerts(cursor=None, limit=50).items}


def test_the_audit_cut_leaves_an_anchor_and_the_chain_goes_on_from_it(any_store: Any) -> None:
    for i in range(5):
        with any_store.transaction() as tx:
            tx.append_audit(AuditEntry(day(i), "ivan", "x", str(i), {}))
    rows = list(any_store.audit_rows(after_id=0, limit=10))
    with any_store.transaction() as tx:
        run = tx.prune_audit(before_ns=day(3), now_ns=day(10), held_why={"case #1 (open)": 1})
    assert (run.kind, run.records, dict(run.held_why)) == ("audit", 3, {"case #1 (open)": 1})
    anchor = any_store.latest_audit_anchor()
    assert (anchor.cut_id, anchor.cut_hash, anchor.rows, anchor.before_ns) == (rows[2].id, rows[2].row_hash, 3, day(3))
    assert [x.id for x in any_store.audit_rows(after_id=0, limit=10)] == [rows[3].id, rows[4].id]
    with any_store.transaction() as tx:
        tx.append_audit(AuditEntry(day(11), "ivan", "y", "t", {}))
    last = list(any_store.audit_rows(after_id=0, limit=10))[-1]
    assert last.prev_hash == rows[4].row_hash and last.id == rows[4].id + 1
    head = any_store.audit_head()
    assert (head.last_id, head.last_hash, head.count) == (last.id, last.row_hash, 6)
    # a second cut takes everything before its cutoff, counted on from the first
    with any_store.transaction() as tx:
        again = tx.prune_audit(before_ns=day(12), now_ns=day(12), held_why={})
    assert again.records == 3 and any_store.latest_audit_anchor().rows == 6
    assert any_store.audit_head().count == 6 and rows[0].prev_hash == GENESIS
    with any_store.transaction() as tx:
        nothing = tx.prune_audit(before_ns=day(12), now_ns=day(13), held_why={})
    assert nothing.records == 0 and any_store.latest_audit_anchor().rows == 6
