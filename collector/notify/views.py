"""Notifications: GET /api/v1/notifications, the outbox and how far each row got (IT and auditors)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from collector.notify.models import Notification
from collector.people.models import User
from collector.web.deps import Services, cursor_value, require, services
from collector.web.timefmt import format_ns

__all__ = ["router", "NotificationOut", "NotificationPage"]

router = APIRouter()


class NotificationOut(BaseModel):
    """One outbox row: what is owed to which target, and how its delivery went (no personal data)."""

    id: int
    channel: str
    target: str
    kind: str
    number: int
    rule: str
    severity: str
    from_state: str
    to_state: str
    status: str
    attempts: int
    created_at: str
    next_attempt_at: str | None
    sent_at: str | None
    delivery_id: int | None
    last_error: str | None


class NotificationPage(BaseModel):
    """A page of outbox rows, newest first."""

    items: list[NotificationOut]
    next_cursor: str | None


def notification_json(n: Notification) -> NotificationOut:
    """Shapes an outbox row for the API."""
    waiting = n.status in ("pending", "sending")
    return NotificationOut(
        id=n.id or 0, channel=n.channel, target=n.target, kind=n.kind, number=n.number, rule=n.rule,
        severity=n.severity, from_state=n.from_state, to_state=n.to_state, status=n.status, attempts=n.attempts,
        created_at=format_ns(n.created_at_ns), next_attempt_at=format_ns(n.next_attempt_ns) if waiting else None,
        sent_at=format_ns(n.sent_at_ns) if n.sent_at_ns is not None else None, delivery_id=n.delivery_id,
        last_error=n.last_error)


@router.get("/api/v1/notifications", response_model=NotificationPage)
def list_notifications(
    status: str | None = Query(None, pattern="^(pending|sending|sent|failed)$"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=32),
    who: User = Depends(require("service:read")),
    svc: Services = Depends(services),
) -> NotificationPage:
    """Lists outbox rows, newest first: pending, sending (leased), sent, or failed with the reason."""
    with svc.store.read() as tx:
        page = tx.list_notifications(cursor=cursor_value(cursor), limit=limit, status=status)
    return NotificationPage(items=[notification_json(n) for n in page.items], next_cursor=page.next_cursor)
