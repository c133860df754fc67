"""The events API: stored events in ingest order; every read is audited."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from shoumi.kinds import EVENT_KINDS

from collector.audit.models import AuditEntry
from collector.events.models import EVENT_FIELDS, EventFilter, StoredEvent
from collector.people.models import User
from collector.web.deps import Services, cursor_value, page_json, require, services
from collector.web.timefmt import format_ns, parse_rfc3339_ns

__all__ = ["router", "event_json"]

router = APIRouter(prefix="/api/v1")

# API names where they differ from the field names: times are RFC 3339 text under "time".
_API_NAME = {"time_ns": "time"}


def event_json(e: StoredEvent) -> dict[str, Any]:
    """Shapes a stored event for the API."""
    out: dict[str, Any] = {"id": e.id, "agent_id": e.agent_id, "epoch": e.epoch}
    for f in EVENT_FIELDS:
        value = getattr(e, f.name)
        out[_API_NAME.get(f.name, f.name)] = format_ns(value) if f.name == "time_ns" else (
            dict(value) if f.name == "attributes" else value)
    return out


@router.get("/events")
def list_events(
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
    with svc.store.transaction() as tx:
        page = tx.list_events(flt, cursor=cursor_value(cursor), limit=limit)
        # the validated filter, not the raw query: bounded, and nothing the caller made up
        asked = {"agent_id": agent_id, "kind": kind, "since": since, "user": user}
        tx.append_audit(AuditEntry(time.time_ns(), who.username, "events.list", "events",
                                   {k: v[:128] for k, v in asked.items() if v is not None}))
    return page_json([event_json(e) for e in page.items], page.next_cursor)
