"""Notifications: stored alerts and case changes become outbox rows; deliveries are planned under each
target's rate limit, merging what is beyond it into one digest.

Functions work inside the caller's transaction (``tx``), as every service of the collector. No human
acts here, so nothing is audited: the outbox itself is the record (GET /api/v1/notifications).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from collector.notify.models import SEVERITY_RANK, Attempt, Notification, NotifyStatus
from collector.storage.base import CaseArea, NotifyArea

__all__ = ["Target", "collect_alerts", "collect_case_changes", "plan", "claim_deliveries", "finish_delivery",
           "backoff_ns", "MINUTE_NS", "WINDOW_NS"]

MINUTE_NS = 60 * 1_000_000_000
# The far end counts a minute by when messages arrive, we by when they were leased: a second more
# keeps a message that travelled faster than the one 20 before it from landing inside its minute.
WINDOW_NS = MINUTE_NS + 1_000_000_000
_SECOND = 1_000_000_000


@dataclass(frozen=True)
class Target:
    """Where messages go: a channel ("wecom", "email"), a stable key, and how many messages a minute it takes."""

    channel: str
    key: str
    per_minute: int


class _CollectTx(NotifyArea, CaseArea, Protocol):
    """What turning alerts and case changes into outbox rows needs."""


# Alerts and case changes are collected in separate transactions: on PostgreSQL each read takes a
# SHARE lock on its table, and holding both at once could deadlock with a request that writes both.
def collect_alerts(*, tx: NotifyArea, targets: Sequence[Target], now_ns: int, min_severity: str = "high",
                   chunk: int = 500) -> int:
    """Turns alerts stored since the last position into outbox rows, one per target, and moves the
    position, in the caller's transaction; returns how many rows it added."""
    least = SEVERITY_RANK[min_severity]
    found = tx.alerts_after(after_id=tx.notify_position("alerts"), limit=chunk)
    rows = [Notification(channel=t.channel, target=t.key, kind="alert", source_id=a.id, number=a.id, rule=a.rule,
                         severity=a.severity, created_at_ns=now_ns, next_attempt_ns=now_ns)
            for a in found if SEVERITY_RANK.get(a.severity, -1) >= least for t in targets]
    if found:
        tx.set_notify_position(source="alerts", after_id=found[-1].id)
    return tx.add_notifications(rows)


def collect_case_changes(*, tx: _CollectTx, targets: Sequence[Target], now_ns: int, chunk: int = 500) -> int:
    """Turns case state changes stored since the last position into outbox rows, one per target, and
    moves the position, in the caller's transaction; returns how many rows it added."""
    tx.case_history_settled()
    changes = tx.case_changes_after(after_id=tx.notify_position("case_changes"), limit=chunk)
    rows = [Notification(channel=t.channel, target=t.key, kind="case", source_id=c.id, number=c.case_id,
                         from_state=c.from_state or "", to_state=c.to_state, created_at_ns=now_ns,
                         next_attempt_ns=now_ns) for c in changes for t in targets]
    if changes:
        tx.set_notify_position(source="case_changes", after_id=changes[-1].id)
    return tx.add_notifications(rows)


def plan(due: Sequence[Notification], free: int) -> list[list[Notification]]:
    """Splits due rows into messages for ``free`` slots: one message each while they fit, else the
    first ``free - 1`` alone and the rest merged into one digest (pure)."""
    if free <= 0 or not due:
        return []
    if len(due) <= free:
        return [[n] for n in due]
    return [[n] for n in due[:free - 1]] + [list(due[free - 1:])]


def claim_deliveries(*, tx: NotifyArea, target: Target, now_ns: int, lease_ns: int,
                     limit: int = 1000) -> list[list[Notification]]:
    """Leases a target's due rows as the messages its sliding minute still has room for; each message's
    slot is recorded now, so collectors sharing one database share the window."""
    due = tx.due_notifications(target=target.key, now_ns=now_ns, limit=limit)
    if not due:
        return []
    window = tx.recent_sends(target=target.key, since_ns=now_ns - WINDOW_NS + 1)
    messages = plan(due, target.per_minute - len(window))
    claimed: list[list[Notification]] = []
    for message in messages:
        ids = [n.id for n in message if n.id is not None]
        leased = tx.claim_notifications(ids=ids, delivery_id=ids[0], now_ns=now_ns, lease_until_ns=now_ns + lease_ns)
        if leased != len(ids):
            raise AssertionError("due rows changed under the notification lock")
        tx.record_send(target=target.key, at_ns=now_ns, keep_since_ns=now_ns - WINDOW_NS)
        claimed.append(message)
    return claimed


def backoff_ns(attempts: int, retry_after_s: float | None = None, *, cap_s: float = 600.0) -> int:
    """How long to wait before the next attempt: what the far end asked for, else 5 s doubling up to ``cap_s``."""
    if retry_after_s is not None:
        return int(min(retry_after_s, cap_s) * _SECOND)
    return int(min(5.0 * 2 ** max(attempts - 1, 0), cap_s) * _SECOND)


def finish_delivery(*, tx: NotifyArea, message: Sequence[Notification], attempt: Attempt, now_ns: int,
                    max_attempts: int = 100) -> str:
    """Records what a delivery attempt returned on the rows of its message; returns their new status."""
    ids = [n.id for n in message if n.id is not None]
    tries = max(n.attempts for n in message) + 1  # the claim counted one more
    if attempt.ok:
        status, when, error = NotifyStatus.SENT.value, now_ns, None
    elif attempt.retry and tries < max_attempts:
        status, error = NotifyStatus.PENDING.value, attempt.error
        when = now_ns + backoff_ns(tries, attempt.retry_after_s)
    else:
        status, when = NotifyStatus.FAILED.value, now_ns
        error = attempt.error if not attempt.retry else f"gave up after {tries} attempts: {attempt.error}"
    tx.finish_notifications(ids=ids, status=status, now_ns=now_ns, next_attempt_ns=when, error=error)
    return status
