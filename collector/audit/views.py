"""The audit log for auditors: the API (filters, paging, export) and the /audit page. Reading changes nothing;
exporting is recorded in the log itself."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel

from collector.audit import service
from collector.audit.models import AuditFilter
from collector.people.models import User
from collector.web.deps import Services, cursor_value, require, require_page, services
from collector.web.templating import render
from collector.web.timefmt import parse_rfc3339_ns

__all__ = ["router"]

router = APIRouter()


class AuditItem(BaseModel):
    """One audit row, with its place in the hash chain."""

    id: int
    at: str
    at_ns: int
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str | None
    row_hash: str | None


class AuditPage(BaseModel):
    """A page of audit rows, newest first."""

    items: list[AuditItem]
    next_cursor: str | None


def _time(text: str | None, *, end_of_day: bool) -> int | None:
    if not text:
        return None
    try:
        if len(text) == 10:  # a bare date, as the page's date field sends it: that day in UTC
            day = date.fromisoformat(text) + (timedelta(days=1) if end_of_day else timedelta())
            return parse_rfc3339_ns(f"{day.isoformat()}T00:00:00Z")
        return parse_rfc3339_ns(text)
    except ValueError as exc:
        raise HTTPException(400, f"{exc} (an RFC 3339 time or a date YYYY-MM-DD)") from exc


def audit_filter(
    actor: str | None = Query(None, max_length=200),
    action: str | None = Query(None, max_length=64),
    target: str | None = Query(None, max_length=200),
    since: str | None = Query(None, max_length=64, description="RFC 3339 time or YYYY-MM-DD (UTC), inclusive"),
    until: str | None = Query(None, max_length=64, description="RFC 3339 time or YYYY-MM-DD (UTC, the whole day), exclusive"),
) -> AuditFilter:
    """The filter of an audit request (empty fields are no filter)."""
    for name, value in (("actor", actor), ("action", action), ("target", target)):
        if value and not value.isprintable():
            raise HTTPException(400, f"{name}: only printable characters")
    return AuditFilter(actor=actor or None, action=action or None, target=target or None,
                       since_ns=_time(since, end_of_day=False), until_ns=_time(until, end_of_day=True))


@router.get("/api/v1/audit", response_model=AuditPage)
def list_audit(
    flt: AuditFilter = Depends(audit_filter),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=32),
    who: User = Depends(require("audit:read")),
    svc: Services = Depends(services),
) -> AuditPage:
    """Lists audit entries matching the filters, newest first."""
    with svc.store.read() as tx:
        page = service.list_entries(tx=tx, flt=flt, cursor=cursor_value(cursor), limit=limit)
    return AuditPage(items=[AuditItem(**service.entry_json(e)) for e in page.items], next_cursor=page.next_cursor)


@router.get("/api/v1/audit/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}})
def export_audit(
    format: Literal["jsonl", "csv"] = Query("jsonl"),
    flt: AuditFilter = Depends(audit_filter),
    who: User = Depends(require("audit:read")),
    svc: Services = Depends(services),
) -> Response:
    """Streams the matching entries oldest first as JSON lines or CSV; the export itself is audited."""
    with svc.store.transaction() as tx:
        service.record_export(tx=tx, flt=flt, fmt=format, actor=who.username)
    media = "application/x-ndjson; charset=utf-8" if format == "jsonl" else "text/csv; charset=utf-8"
    return StreamingResponse(service.export_lines(store=svc.store, flt=flt, fmt=format), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="shoumi-audit.{format}"'})


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    flt: AuditFilter = Depends(audit_filter),
    cursor: str | None = Query(None, max_length=32),
    user: User = Depends(require_page("audit:read")),
    svc: Services = Depends(services),
) -> Response:
    """The audit log page: filters, newest first, a page at a time, and the export links."""
    with svc.store.read() as tx:
        page = service.list_entries(tx=tx, flt=flt, cursor=cursor_value(cursor), limit=100)
    asked = {k: request.query_params.get(k, "") for k in ("actor", "action", "target", "since", "until")}
    return render(request, "audit.html", {"entries": [service.entry_json(e) for e in page.items],
                                          "next_cursor": page.next_cursor, "asked": asked,
                                          "query": urlencode({k: v for k, v in asked.items() if v})}, user=user)
