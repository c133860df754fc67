"""The audit log API: every human action, newest first; for auditors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from collector.people.models import User
from collector.web.deps import Services, cursor_value, page_json, require, services
from collector.web.timefmt import format_ns

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


@router.get("/audit")
def list_audit(
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=32),
    who: User = Depends(require("audit:read")),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Lists audit entries, newest first."""
    with svc.store.read() as tx:
        page = tx.list_audit(cursor=cursor_value(cursor), limit=limit)
    items = [{"id": e.id, "at": format_ns(e.at_ns), "actor": e.actor, "action": e.action, "target": e.target,
              "details": dict(e.details)} for e in page.items]
    return page_json(items, page.next_cursor)
