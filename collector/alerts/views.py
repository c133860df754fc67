"""Alerts: the JSON API (list, change status) and the alerts page."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from collector.alerts.models import Alert
from collector.alerts.service import AlertError, set_status
from collector.domain.roles import allowed
from collector.people.models import User
from collector.web.deps import Services, cursor_value, page_json, require, services, session_user
from collector.web.templating import templates
from collector.web.timefmt import format_ns

__all__ = ["router", "alert_json"]

router = APIRouter()


def alert_json(a: Alert) -> dict[str, Any]:
    """Shapes an alert for the API."""
    return {
        "id": a.id, "rule": a.rule, "severity": a.severity, "status": a.status, "user": a.user,
        "agent_id": a.agent_id, "created_at": format_ns(a.created_at_ns), "updated_at": format_ns(a.updated_at_ns),
        "event_ids": list(a.event_ids), "summary": a.summary, "occurrences": a.occurrences,
    }


class StatusChange(BaseModel):
    """A request to move an alert to another status."""

    status: str = Field(..., pattern="^(open|acknowledged|closed)$")


@router.get("/api/v1/alerts")
def list_alerts(
    status: str | None = Query(None, pattern="^(open|acknowledged|closed)$"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=32),
    who: User = Depends(require("alerts:read")),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Lists alerts, newest first."""
    with svc.store.read() as tx:
        page = tx.list_alerts(cursor=cursor_value(cursor), limit=limit, status=status)
    return page_json([alert_json(a) for a in page.items], page.next_cursor)


@router.post("/api/v1/alerts/{alert_id}/status")
def change_status(
    alert_id: int,
    change: StatusChange,
    who: User = Depends(require("alerts:triage")),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Moves an alert along its lifecycle (open, acknowledged, closed); audited."""
    try:
        with svc.store.transaction() as tx:
            moved = set_status(tx=tx, alert_id=alert_id, status=change.status, actor=who.username, now_ns=time.time_ns())
    except AlertError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return alert_json(moved)


@router.get("/", response_class=HTMLResponse)
def alerts_page(request: Request, svc: Services = Depends(services)) -> Response:
    """Shows the newest alerts to a signed-in analyst."""
    user = session_user(request, svc)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    if not allowed(user.role, "alerts:read"):
        raise HTTPException(403, f"role {user.role!r} may not read alerts")
    with svc.store.read() as tx:
        page = tx.list_alerts(cursor=None, limit=200)
    return templates.TemplateResponse(request, "alerts.html", {"user": user, "alerts": [alert_json(a) for a in page.items]})
