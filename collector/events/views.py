"""The events API: stored events in ingest order, people by pseudonym; every read is audited.

As on the alert pages, the person an event names is shown by pseudonym (``collector.privacy``), and
their name is replaced wherever it stands as a word in the event's texts (a home folder, a process
path); filtering by person takes the pseudonym. The real name is revealed only through
``POST /api/v1/identities/reveal``, with a reason, to roles that may.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from shoumi.kinds import EVENT_KINDS

from collector.audit.models import AuditEntry
from collector.events.models import EVENT_FIELDS, EventFilter, StoredEvent
from collector.domain.records import Page
from collector.people.models import User
from collector.privacy.codes import mask, parse
from collector.privacy.service import register, user_of
from collector.web.deps import Services, cursor_value, page_json, require, services
from collector.web.timefmt import format_ns, parse_rfc3339_ns

__all__ = ["router", "event_json"]

router = APIRouter(prefix="/api/v1")

# API names where they differ from the field names: times are RFC 3339 text under "time".
_API_NAME = {"time_ns": "time"}


def _masked(value: Any, user: str, code: str) -> Any:
    if isinstance(value, str):
        return mask(value, user, code)
    if isinstance(value, list):
        return [_masked(v, user, code) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v, user, code) for k, v in value.items()}
    return value


def event_json(e: StoredEvent, code: str | None = None) -> dict[str, Any]:
    """Shapes a stored event for the API; with ``code``, the person is shown by that pseudonym."""
    out: dict[str, Any] = {"id": e.id, "agent_id": e.agent_id, "epoch": e.epoch}
    for f in EVENT_FIELDS:
        value = getattr(e, f.name)
        out[_API_NAME.get(f.name, f.name)] = format_ns(value) if f.name == "time_ns" else (
            dict(value) if f.name == "attributes" else value)
    if code is not None and e.user:
        for key in ("path", "dest_path", "process", "exe", "attributes"):
            out[key] = _masked(out[key], e.user, code)
        out["user"] = code
    return out


@router.get("/events")
def list_events(
    agent_id: str | None = Query(None, max_length=64),
    kind: str | None = Query(None, max_length=32),
    since: str | None = Query(None, max_length=64, description="RFC 3339 time, inclusive"),
    user: str | None = Query(None, max_length=64, description="a person's pseudonym, e.g. P-7K3M9QX2PA"),
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
    with svc.store.transaction() as tx:
        name = None
        if user is not None:
            if parse(user) is None:
                raise HTTPException(400, f"filter by a person's pseudonym (P-...), not {user[:64]!r}")
            name = user_of(tx=tx, pseudonym=user)
        flt = EventFilter(agent_id=agent_id, kind=kind, since_ns=since_ns, user=name)
        start = cursor_value(cursor)
        page = Page((), None) if user is not None and name is None else tx.list_events(flt, cursor=start, limit=limit)
        now = time.time_ns()
        codes = {n: register(tx=tx, user_name=n, now_ns=now) for n in sorted({e.user for e in page.items if e.user})}
        # the validated filter, not the raw query: bounded, and nothing the caller made up
        asked = {"agent_id": agent_id, "kind": kind, "since": since, "user": user}
        tx.append_audit(AuditEntry(now, who.username, "events.list", "events",
                                   {k: v[:128] for k, v in asked.items() if v is not None}))
    return page_json([event_json(e, codes.get(e.user, "")) for e in page.items], page.next_cursor)
