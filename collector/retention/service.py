"""Retention: legal holds (each audited) and the pruning of events past their retention."""

from __future__ import annotations

from typing import Protocol

from collector.audit.models import AuditEntry
from collector.retention.models import LegalHold, RetentionRun
from collector.storage.base import AuditArea, RetentionArea, Store

__all__ = ["place_hold", "release_hold", "prune"]

DAY_NS = 86_400 * 1_000_000_000


class _HoldTx(RetentionArea, AuditArea, Protocol):
    """What placing and releasing holds needs."""


def place_hold(*, tx: _HoldTx, hold: LegalHold) -> LegalHold:
    """Places a legal hold, with its audit row."""
    if hold.until_ns < hold.since_ns:
        raise ValueError("a hold's end is before its start")
    if hold.user is None and hold.agent_id is None:
        raise ValueError("a hold names a user, an agent or both")
    stored = tx.add_legal_hold(hold)
    tx.append_audit(AuditEntry(hold.created_at_ns, hold.created_by, "legal_hold.place", str(stored.id),
                               {"user": hold.user, "agent_id": hold.agent_id, "since_ns": hold.since_ns,
                                "until_ns": hold.until_ns, "reason": hold.reason}))
    return stored


def release_hold(*, tx: _HoldTx, hold_id: int, actor: str, now_ns: int) -> bool:
    """Releases a legal hold, with its audit row."""
    done = tx.release_legal_hold(hold_id=hold_id, now_ns=now_ns)
    tx.append_audit(AuditEntry(now_ns, actor, "legal_hold.release", str(hold_id), {"released": done}))
    return done


def prune(*, store: Store, retention_days: float, now_ns: int, chunk: int = 500) -> list[RetentionRun]:
    """Prunes every batch older than the retention, a chunk per transaction."""
    before = now_ns - int(retention_days * DAY_NS)
    runs = []
    after = 0
    while True:
        with store.transaction() as tx:
            run = tx.prune_batches(before_ns=before, now_ns=now_ns, limit=chunk, after_row_id=after)
        runs.append(run)
        after = run.last_row_id
        if run.batches + run.held_batches < chunk:
            return runs
