"""Alerts: raised in one place, grouped there, moved only along the lifecycle table.

Every alert of the collector (detection findings, refused batches, silent agents, a store that no
longer matches its signed tree head) is built by ``raise_alert``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol, Sequence

from collector.alerts.models import Alert, AlertStatus, can_move
from collector.audit.models import AuditEntry
from collector.storage.base import AlertArea, AlreadyExists, AuditArea

__all__ = ["AlertError", "raise_alert", "extend_alert", "set_status"]


class AlertError(Exception):
    """A change to an alert that is not allowed; ``status`` is an HTTP status hint."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def raise_alert(
    *,
    tx: AlertArea,
    rule: str,
    severity: str,
    summary: str,
    now_ns: int,
    agent_id: str = "",
    user: str = "",
    event_ids: Sequence[str] = (),
    last_event_ns: int | None = None,
    group_key: str | None = None,
) -> Alert:
    """Raises an alert, or folds it into the open alert of the same group and counts it."""
    new = Alert(
        rule=rule, severity=severity, status=AlertStatus.OPEN.value, user=user, agent_id=agent_id,
        created_at_ns=now_ns, updated_at_ns=now_ns, event_ids=tuple(event_ids), summary=summary,
        last_event_ns=now_ns if last_event_ns is None else last_event_ns, group_key=group_key,
    )
    if group_key is None:
        return tx.add_alert(new)
    for _ in range(2):
        existing = tx.open_alert_in_group(group_key)
        if existing is not None:
            folded = replace(
                existing, summary=summary, updated_at_ns=now_ns, occurrences=existing.occurrences + 1,
                event_ids=tuple(dict.fromkeys((*existing.event_ids, *event_ids))),
                last_event_ns=max(existing.last_event_ns, new.last_event_ns),
            )
            tx.update_alert(folded)
            return folded
        try:
            return tx.add_alert(new)
        except AlreadyExists:
            continue  # another collector raised it meanwhile (the store keeps one open alert a group): fold
    raise AssertionError(f"alert group {group_key!r} neither open nor insertable")


def extend_alert(*, tx: AlertArea, alert: Alert, event_ids: Sequence[str], last_event_ns: int, summary: str,
                 now_ns: int) -> Alert:
    """Adds evidence to an open alert (a finding that continues it)."""
    extended = replace(alert, event_ids=tuple(dict.fromkeys((*alert.event_ids, *event_ids))), summary=summary,
                       updated_at_ns=now_ns, last_event_ns=max(alert.last_event_ns, last_event_ns))
    tx.update_alert(extended)
    return extended


class _AlertTx(AlertArea, AuditArea, Protocol):
    """What changing an alert needs."""


def set_status(*, tx: _AlertTx, alert_id: int, status: str, actor: str, now_ns: int) -> Alert:
    """Moves an alert to another status along the lifecycle table, with its audit row."""
    alert = tx.get_alert(alert_id)
    if alert is None:
        raise AlertError(404, f"no alert {alert_id}")
    try:
        allowed = can_move(alert.status, status)
    except ValueError as exc:
        raise AlertError(400, f"unknown status {status!r}") from exc
    if not allowed:
        raise AlertError(409, f"an alert that is {alert.status} cannot become {status}")
    moved = replace(alert, status=status, updated_at_ns=now_ns)
    tx.update_alert(moved)
    tx.append_audit(AuditEntry(now_ns, actor, "alert.status", str(alert_id), {"from": alert.status, "to": status}))
    return moved
