"""The JSON API, version 1: events, alerts, agents. Views authorize, call the store, shape the reply."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from shoumi.kinds import EVENT_KINDS

from collector.domain.records import Alert, AuditEntry, EventFilter, StoredEvent, User
from collector.web.deps import Services, require, services
from collector.web.timefmt import format_ns, parse_rfc3339_ns

__all__ = ["router", "event_json", "alert_json"]

router = APIRouter(prefix="/api/v1")


def _cursor(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) >= 2**63:
        raise HTTPException(400, f"invalid cursor {text!r}: pass back next_cursor unchanged")
    return int(text)


def event_json(e: StoredEvent) -> dict[str, Any]:
    """Shapes a stored event for the API."""
    return {
        "id": e.id,
        "agent_id": e.agent_id,
        "epoch": e.epoch,
        "seq": e.seq,
        "kind": e.kind,
        "time": format_ns(e.time_ns),
        "path": e.path,
        "dest_path": e.dest_path,
        "size": e.size,
        "sha256": e.sha256,
        "user": e.user,
        "uid": e.uid,
        "pid": e.pid,
        "process": e.process,
        "exe": e.exe,
        "attributes": dict(e.attributes),
    }


def alert_json(a: Alert) -> dict[str, Any]:
    """Shapes an alert for the API."""
    return {
        "id": a.id,
        "rule": a.rule,
        "severity": a.severity,
        "status": a.status,
        "user": a.user,
        "agent_id": a.agent_id,
        "created_at": format_ns(a.created_at_ns),
        "updated_at": format_ns(a.updated_at_ns),
        "event_ids": list(a.event_ids),
        "summary": a.summary,
    }


@router.get("/events")
def list_events(
    request: Request,
    agent_id: str | None = Query(None, max_length=64),
    kind: str | None = Query(None, max_length=32),
    since: str | None = Query(None, max_length=64, description="RFC 3339 time, inclusive"),
    user: str | None = Query(None, max_length=128),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=32),
    who: User = Depends(require("events:read")),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Lists stored events in ingest order."""
    if kind is not None and kind not in EVENT_KINDS:
        raise HTTPException(400, f"unknown kind {kind!r}; kinds are {', '.join(sorted(EVENT_KINDS))}")
    since_ns = None
    if since is not None:
        try:
            since_ns = parse_rfc3339_ns(since)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
    flt = EventFilter(agent_id=agent_id, kind=kind, since_ns=since_ns, user=user)
    page = svc.store.list_events(flt, cursor=_cursor(cursor), limit=limit)
    svc.store.append_audit(
        AuditEntry(time.time_ns(), who.username, "events.list", "events",
                   {k: v for k, v in dict(request.query_params).items() if k != "cursor"})
    )
    return {"items": [event_json(e) for e in page.items], "next_cursor": page.next_cursor}


@router.get("/alerts")
def list_alerts(
    status: str | None = Query(None, pattern="^(open|acknowledged|closed)$"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=32),
    who: User = Depends(require("alerts:read")),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Lists alerts, newest first."""
    page = svc.store.list_alerts(cursor=_cursor(cursor), limit=limit, status=status)
    return {"items": [alert_json(a) for a in page.items], "next_cursor": page.next_cursor}


@router.get("/agents")
def list_agents(
    who: User = Depends(require("agents:read")),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Lists enrolled agents."""
    items = [
        {
            "agent_id": a.agent_id,
            "hostname": a.hostname,
            "os": a.os,
            "agent_version": a.agent_version,
            "enrolled_at": format_ns(a.enrolled_at_ns),
            "revoked": a.revoked_at_ns is not None,
        }
        for a in svc.store.list_agents()
    ]
    return {"items": items, "next_cursor": None}
