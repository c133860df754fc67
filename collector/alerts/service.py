"""Alerts: raised in one place, grouped there, moved only along the lifecycle table.

Every alert of the collector (detection findings, refused batches, silent agents, a store that no
longer matches its signed tree head) is built by ``raise_alert``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol, Sequence

from collector.alerts.models import NEEDS_OUTCOME, Alert, AlertStatus, Outcome, Suppression, can_move
from collector.audit.models import AuditEntry
from collector.privacy.service import register
from collector.storage.base import AlertArea, AlreadyExists, AuditArea, PrivacyArea

__all__ = ["AlertError", "raise_alert", "set_status", "move", "assign", "suppress", "lift", "OUTCOMES"]

OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)


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
        return _added(tx, new, now_ns)
    for _ in range(2):
        existing = tx.open_alert_in_group(group_key)
        if existing is not None and existing.id is not None:
            added = tx.add_evidence(alert_id=existing.id, event_ids=event_ids)  # appended, never rewritten
            folded = replace(
                existing, summary=summary, updated_at_ns=now_ns, occurrences=existing.occurrences + 1,
                evidence_count=existing.evidence_count + added,
                last_event_ns=max(existing.last_event_ns, new.last_event_ns),
            )
            tx.update_alert(folded)
            return folded
        try:
            return _added(tx, new, now_ns)
        except AlreadyExists:
            continue  # another collector raised it meanwhile (the store keeps one open alert a group): fold
    raise AssertionError(f"alert group {group_key!r} neither open nor insertable")


def _added(tx: AlertArea, new: Alert, now_ns: int) -> Alert:
    made = tx.add_alert(new)
    if new.user and isinstance(tx, PrivacyArea):  # the person gets a pseudonym to filter on and reveal
        register(tx=tx, user_name=new.user, now_ns=now_ns)
    return made


class _AlertTx(AlertArea, AuditArea, Protocol):
    """What changing an alert needs."""


def set_status(*, tx: _AlertTx, alert_id: int, status: str, actor: str, now_ns: int,
               outcome: str | None = None) -> Alert:
    """Moves an alert to another status along the lifecycle table, with its audit row; closing
    needs a closure reason (an Outcome), which tunes the rules later."""
    found = tx.get_alerts([alert_id])
    if not found:
        raise AlertError(404, f"no alert {alert_id}")
    return move(tx=tx, alert=found[0], status=status, actor=actor, now_ns=now_ns, outcome=outcome)


def move(*, tx: _AlertTx, alert: Alert, status: str, actor: str, now_ns: int, outcome: str | None = None,
         batch: str | None = None, write: bool = True) -> Alert:
    """Moves a loaded alert (as ``set_status``); ``batch`` names the bulk request it is part of, in its audit row;
    with ``write=False`` the caller stores the moved alert (``update_alerts``, many at once)."""
    alert_id = alert.id
    try:
        allowed = can_move(alert.status, status)
    except ValueError as exc:
        raise AlertError(400, f"unknown status {status!r}") from exc
    if not allowed:
        raise AlertError(409, f"an alert that is {alert.status} cannot become {status}")
    if AlertStatus(status) in NEEDS_OUTCOME:
        if outcome not in OUTCOMES:
            raise AlertError(422, f"closing needs a closure reason: {', '.join(OUTCOMES)}")
    elif outcome is not None:
        raise AlertError(400, "a closure reason is given when closing")
    if status == AlertStatus.OPEN.value and alert.group_key is not None:
        other = tx.open_alert_in_group(alert.group_key)
        if other is not None and other.id != alert_id:  # the store keeps one open alert a group
            raise AlertError(409, f"alert {other.id} of the same incident is open: work on that one, or close it first")
    moved = replace(alert, status=status, updated_at_ns=now_ns, outcome=outcome)
    if write:
        tx.update_alert(moved)
    details: dict[str, object] = {"from": alert.status, "to": status, "outcome": outcome,
                                  "outcome_before": alert.outcome}
    if batch is not None:
        details["bulk"] = batch
    tx.append_audit(AuditEntry(now_ns, actor, "alert.status", str(alert_id), details))
    return moved


def assign(*, tx: _AlertTx, alert: Alert, assignee: str | None, actor: str, now_ns: int,
           batch: str | None = None, write: bool = True) -> Alert:
    """Gives a loaded alert to an analyst (or to nobody: None); audited with before and after."""
    if alert.assignee == assignee:
        return alert
    moved = replace(alert, assignee=assignee, updated_at_ns=now_ns)
    if write:
        tx.update_alert(moved)
    details: dict[str, object] = {"from": alert.assignee, "to": assignee}
    if batch is not None:
        details["bulk"] = batch
    tx.append_audit(AuditEntry(now_ns, actor, "alert.assign", str(alert.id), details))
    return moved


class _SuppressionTx(AlertArea, AuditArea, Protocol):
    """What suppressing needs."""


MAX_SUPPRESSION_NS = 90 * 86_400 * 1_000_000_000


def suppress(*, tx: _SuppressionTx, rule: str, owner: str, reason: str, now_ns: int, expires_at_ns: int,
             user: str | None = None, path_glob: str | None = None, known_rules: Sequence[str] = ()) -> Suppression:
    """Suppresses a rule for a scope until an expiry (at most 90 days), owned by whoever asked; audited."""
    if known_rules and rule not in known_rules:
        raise AlertError(400, f"unknown rule {rule!r}; rules are {', '.join(known_rules)}")
    if not reason.strip():
        raise AlertError(400, "a suppression needs a reason")
    if not now_ns < expires_at_ns <= now_ns + MAX_SUPPRESSION_NS:
        raise AlertError(400, "a suppression expires in the future, within 90 days")
    if path_glob is not None and path_glob.strip("*/") == "":
        raise AlertError(400, f"path {path_glob!r} would suppress every path: leave it out to mean that, on purpose")
    made = tx.add_suppression(Suppression(rule=rule, owner=owner, reason=reason.strip(), created_at_ns=now_ns,
                                          expires_at_ns=expires_at_ns, user=user, path_glob=path_glob))
    tx.append_audit(AuditEntry(now_ns, owner, "suppression.create", str(made.id),
                               {"rule": rule, "user": user, "path": path_glob, "reason": made.reason,
                                "expires_at_ns": expires_at_ns}))
    return made


def lift(*, tx: _SuppressionTx, suppression_id: int, actor: str, now_ns: int) -> bool:
    """Ends a suppression before its expiry; audited."""
    done = tx.lift_suppression(suppression_id=suppression_id, now_ns=now_ns)
    tx.append_audit(AuditEntry(now_ns, actor, "suppression.lift", str(suppression_id), {"lifted": done}))
    return done
