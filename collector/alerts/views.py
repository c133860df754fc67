"""Alerts: the JSON API (list, change status) and the alerts page."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from collector.alerts.models import Alert, Suppression
from collector.alerts.service import AlertError, lift, set_status, suppress
from collector.detection.models import RULE_NAMES
from collector.people.models import User
from collector.web.deps import Services, cursor_value, page_json, require, require_page, services
from collector.web.templating import render
from collector.web.timefmt import format_ns, parse_rfc3339_ns

# rules a suppression may name: the configurable ones and the delivery layer's
ALL_RULES: tuple[str, ...] = (*RULE_NAMES, "capture_gap", "spool_loss", "agent_silent", "agent_tamper",
                              "agent_malformed", "agent_clock_skew", "agent_epoch_reset")

__all__ = ["router", "alert_json"]

router = APIRouter()


def alert_json(a: Alert) -> dict[str, Any]:
    """Shapes an alert for the API."""
    return {
        "id": a.id, "rule": a.rule, "severity": a.severity, "status": a.status, "user": a.user,
        "agent_id": a.agent_id, "created_at": format_ns(a.created_at_ns), "updated_at": format_ns(a.updated_at_ns),
        "event_ids": list(a.event_ids), "evidence_count": a.evidence_count, "summary": a.summary,
        "occurrences": a.occurrences, "outcome": a.outcome,
    }


def suppression_json(s: Suppression) -> dict[str, Any]:
    """Shapes a suppression for the API."""
    return {"id": s.id, "rule": s.rule, "user": s.user, "path": s.path_glob, "owner": s.owner, "reason": s.reason,
            "created_at": format_ns(s.created_at_ns), "expires_at": format_ns(s.expires_at_ns),
            "lifted_at": format_ns(s.lifted_at_ns) if s.lifted_at_ns else None, "suppressed_events": s.hits,
            "last_suppressed_at": format_ns(s.last_hit_ns) if s.last_hit_ns else None}


class StatusChange(BaseModel):
    """A request to move an alert to another status; closing says what it was."""

    status: str = Field(..., pattern="^(open|acknowledged|closed)$")
    outcome: str | None = Field(None, pattern="^(true_positive|benign|false_positive)$")


class SuppressionRequest(BaseModel):
    """A time-boxed suppression: which rule, for whom or which paths, why, until when."""

    rule: str = Field(..., max_length=64)
    user: str | None = Field(None, max_length=128)
    path: str | None = Field(None, max_length=1024, description="a glob, e.g. /srv/finance/exports/*")
    reason: str = Field(..., min_length=1, max_length=2000)
    expires_at: str = Field(..., max_length=64, description="RFC 3339; at most 90 days ahead")


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
            moved = set_status(tx=tx, alert_id=alert_id, status=change.status, actor=who.username, now_ns=time.time_ns(),
                               outcome=change.outcome)
    except AlertError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return alert_json(moved)


@router.post("/api/v1/suppressions", status_code=201)
def create_suppression(
    body: SuppressionRequest,
    who: User = Depends(require("alerts:triage")),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Suppresses a rule for a user and/or paths until an expiry; the caller owns it. Audited."""
    try:
        expires = parse_rfc3339_ns(body.expires_at)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    try:
        with svc.store.transaction() as tx:
            made = suppress(tx=tx, rule=body.rule, owner=who.username, reason=body.reason, now_ns=time.time_ns(),
                            expires_at_ns=expires, user=body.user, path_glob=body.path, known_rules=ALL_RULES)
    except AlertError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return suppression_json(made)


@router.get("/api/v1/suppressions")
def list_suppressions(who: User = Depends(require("alerts:read")), svc: Services = Depends(services)) -> dict[str, Any]:
    """Lists suppressions, newest first, with how many events each kept from alerting."""
    with svc.store.read() as tx:
        found = tx.list_suppressions()
    return page_json([suppression_json(s) for s in found], None)


@router.post("/api/v1/suppressions/{suppression_id}/lift")
def lift_suppression(suppression_id: int, who: User = Depends(require("alerts:triage")),
                     svc: Services = Depends(services)) -> dict[str, Any]:
    """Ends a suppression now. Audited."""
    with svc.store.transaction() as tx:
        done = lift(tx=tx, suppression_id=suppression_id, actor=who.username, now_ns=time.time_ns())
    if not done:
        raise HTTPException(404, f"no suppression {suppression_id} in force")
    return {"id": suppression_id, "lifted": True}


@router.get("/", response_class=HTMLResponse)
def alerts_page(request: Request, user: User = Depends(require_page("alerts:read")),
                svc: Services = Depends(services)) -> Response:
    """Shows the newest alerts to a signed-in analyst."""
    with svc.store.read() as tx:
        page = tx.list_alerts(cursor=None, limit=200)
    return render(request, "alerts.html", {"alerts": [alert_json(a) for a in page.items]}, user=user)
