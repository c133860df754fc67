"""The fleet API: enrolled agents and their liveness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from collector.people.models import User
from collector.web.deps import Services, page_json, require, services
from collector.web.timefmt import format_ns

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


@router.get("/agents")
def list_agents(who: User = Depends(require("agents:read")), svc: Services = Depends(services)) -> dict[str, Any]:
    """Lists enrolled agents."""
    with svc.store.read() as tx:
        agents = tx.list_agents()
    items = [
        {"agent_id": a.agent_id, "hostname": a.hostname, "os": a.os, "agent_version": a.agent_version,
         "enrolled_at": format_ns(a.enrolled_at_ns), "revoked": a.revoked_at_ns is not None,
         "liveness": "revoked" if a.revoked_at_ns is not None else a.liveness,
         "last_seen": format_ns(a.last_seen_ns) if a.last_seen_ns else None}
        for a in agents
    ]
    return page_json(items, None)
