"""The fleet API: agents with their health (filtered, sorted, paged), one agent's detail and history, labels,
revocation, and enrollment tokens (created with an expiry, a use count and labels; listed; revoked).

``agents:read`` (IT, security, the auditor) reads the fleet and each agent's health; its configuration
(labels, the policy applied) is shown to ``policies:read`` only (IT, the auditor): security sees health, not
configuration. ``agents:write`` (IT) edits labels, revokes agents and handles tokens. People seen on an agent
are shown by pseudonym. The pages (pages.py) call the same functions.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any, Sequence

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import Field

from collector.alerts.inputs import CleanInput
from collector.domain.roles import allowed
from collector.enrollment.models import MAX_TOKEN_USES, EnrollToken, token_state
from collector.enrollment.service import EnrollmentError
from collector.fleet import service as fleet
from collector.fleet.models import SORTS, STATUSES, AgentHealth, AgentQuery, FleetRow, LabelError, status_of
from collector.people.models import User
from collector.privacy.service import pseudonyms_of
from collector.secrets import secret_hash
from collector.storage.base import Transaction
from collector.web.deps import Services, require, services
from collector.web.timefmt import format_ns

__all__ = ["router", "agent_query", "parse_cursor", "fleet_page", "agent_detail", "token_json", "create_token",
           "PAGE", "MAX_PAGE", "HISTORY_KINDS"]

router = APIRouter(prefix="/api/v1")
PAGE = 50
MAX_PAGE = 200
HISTORY_KINDS = ("agent.heartbeat", "agent.capture_gap", "agent.spool_full", "agent.start", "agent.stop")
_AGENT_ID = Path(..., max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")


# --- the query string: filters, order, cursor ---------------------------------------------------------------------

def agent_query(status: str | None = None, label: str | None = None, version: str | None = None,
                os: str | None = None, text: str | None = None, sort: str | None = None,
                order: str | None = None) -> AgentQuery:
    """The fleet query of a request's filters; raises HTTPException 400 saying what is wrong."""
    def clean(value: str | None, limit: int = 64) -> str | None:
        value = (value or "").strip()
        if len(value) > limit or any(ord(c) < 32 for c in value):
            raise HTTPException(400, f"a filter is at most {limit} printable characters")
        return value or None

    status, sort, order = clean(status), clean(sort) or "hostname", clean(order) or "asc"
    if status is not None and status not in STATUSES:
        raise HTTPException(400, f"status is one of {', '.join(STATUSES)}")
    if sort not in SORTS:
        raise HTTPException(400, f"sort is one of {', '.join(SORTS)}")
    if order not in ("asc", "desc"):
        raise HTTPException(400, "order is asc or desc")
    return AgentQuery(status=status, label=clean(label, 48), version=clean(version), os=clean(os), text=clean(text),
                      sort=sort, descending=order == "desc")


def parse_cursor(text: str | None, q: AgentQuery) -> tuple[Any, str] | None:
    """The (sort value, agent id) of an opaque cursor made by ``fleet_page``; 400 if it is not one."""
    if not text:
        return None
    try:
        value, agent_id = json.loads(base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4)))
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError) as exc:
        raise HTTPException(400, "cursor is not one this collector made") from exc
    numeric = q.sort in ("last_seen", "enrolled")
    if not isinstance(agent_id, str) or (type(value) is not int if numeric else not isinstance(value, str)):
        raise HTTPException(400, "cursor is not one this collector made (or was made for another sort)")
    return value, agent_id


def _cursor(next_key: str | None) -> str | None:
    return None if next_key is None else base64.urlsafe_b64encode(next_key.encode()).decode().rstrip("=")


# --- shapes -------------------------------------------------------------------------------------------------------

def _time(ns: int | None) -> str | None:
    return format_ns(ns) if ns else None


def _health_json(h: AgentHealth | None, codes: dict[str, str]) -> dict[str, Any]:
    if h is None:
        return {"reported": False, "spool_depth": None, "spool_bytes": None, "refused_pending": None,
                "refused_total": None, "capture_gaps": None, "clock_skew_ms": None, "last_heartbeat": None,
                "users": []}
    return {"reported": True, "spool_depth": h.spool_unacked_events, "spool_bytes": h.spool_bytes,
            "refused_pending": h.spool_refused_pending, "refused_total": h.refused_total,
            "capture_gaps": h.capture_gaps, "clock_skew_ms": h.clock_skew_ms, "last_heartbeat": _time(h.heartbeat_ns),
            "users": [codes.get(u, "") for u in h.users if codes.get(u)]}


def _policy_json(tx: Transaction, agent_id: str) -> dict[str, Any] | None:
    """The policy the agent reports in force (collector/policy records it), or None if it reported none."""
    state = tx.get_agent_policy_state(agent_id)  # the policies area (collector/policy): one read by key
    if state is None or (state.applied_name is None and state.refused_name is None):
        return None
    return {"name": state.applied_name, "version": state.applied_version, "source": state.applied_source,
            "refused_name": state.refused_name, "refused_version": state.refused_version,
            "refused_reason": state.refused_reason}


def _row_json(tx: Transaction, row: FleetRow, *, codes: dict[str, str], alerts: dict[str, Any],
              configuration: bool, now_ns: int) -> dict[str, Any]:
    a = row.agent
    out: dict[str, Any] = {
        "agent_id": a.agent_id, "hostname": a.hostname, "os": a.os, "agent_version": a.agent_version,
        "version_outdated": fleet.is_older(a.agent_version), "status": status_of(a), "liveness": a.liveness,
        "revoked": a.revoked_at_ns is not None, "enrolled_at": format_ns(a.enrolled_at_ns),
        "last_seen": _time(a.last_seen_ns), "revoked_at": _time(a.revoked_at_ns),
        "certificate_expires": _time(row.certificate_not_after_ns),
        "certificate_expiring": row.certificate_not_after_ns is not None
        and row.certificate_not_after_ns - now_ns < fleet.CERT_WARN_NS,
        "health": _health_json(row.health, codes),
        "alerts": [{"rule": rule, "id": alert_id} for rule, alert_id in alerts.get(a.agent_id, ())],
    }
    if configuration:
        out["labels"] = list(a.labels)
        out["policy"] = _policy_json(tx, a.agent_id)
    return out


def fleet_page(tx: Transaction, q: AgentQuery, *, after: tuple[Any, str] | None, limit: int,
               who: User) -> dict[str, Any]:
    """One page of the fleet with its counts: what GET /api/v1/agents answers and the /fleet page shows."""
    page = tx.query_agents(q, after=after, limit=limit)
    rows: Sequence[FleetRow] = page.items
    users = [u for r in rows if r.health is not None for u in r.health.users]
    codes = pseudonyms_of(tx=tx, user_names=users)
    alerts = tx.open_agent_alerts(agent_ids=[r.agent.agent_id for r in rows], rules=fleet.HEALTH_RULES)
    configuration = allowed(who.role, "policies:read")
    now = time.time_ns()
    return {"items": [_row_json(tx, r, codes=codes, alerts=alerts, configuration=configuration, now_ns=now)
                      for r in rows],
            "next_cursor": _cursor(page.next_cursor), "counts": tx.count_agents_by_status(),
            "versions": list(tx.agent_versions()), "collector_version": fleet.COLLECTOR_VERSION}


def agent_detail(tx: Transaction, agent_id: str, *, who: User) -> dict[str, Any] | None:
    """One agent, its health, open health alerts and its recent heartbeats and gaps (newest first)."""
    agent = tx.get_agent(agent_id)
    if agent is None:
        return None
    found = [r for r in tx.query_agents(AgentQuery(text=agent_id), after=None, limit=50).items
             if r.agent.agent_id == agent_id]
    row = found[0] if found else FleetRow(agent, tx.get_agent_health(agent_id), None)
    recent = tx.recent_agent_events(agent_id=agent_id, kinds=HISTORY_KINDS, scan=20_000, limit=300)
    users = [u for u in (row.health.users if row.health else ())]
    codes = pseudonyms_of(tx=tx, user_names=users)
    alerts = tx.open_agent_alerts(agent_ids=[agent_id], rules=fleet.HEALTH_RULES)
    out = _row_json(tx, row, codes=codes, alerts=alerts, configuration=allowed(who.role, "policies:read"),
                    now_ns=time.time_ns())

    def number(value: Any) -> int | None:
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    out["heartbeats"] = [
        {"time": format_ns(e.time_ns), "spool_depth": (number(e.attributes.get("spool_unacked_events")) or 0)
         + (number(e.attributes.get("spool_unsealed")) or 0),
         "spool_bytes": number(e.attributes.get("spool_bytes")), "capture_gaps": number(e.attributes.get("capture_gaps")),
         "refused_pending": number(e.attributes.get("spool_refused_pending")),
         "connected": e.attributes.get("connected") is True}
        for e in recent if e.kind == "agent.heartbeat"][:100]
    out["gaps"] = [
        {"time": format_ns(e.time_ns), "kind": e.kind,
         "source": str(e.attributes.get("source") or e.attributes.get("reason") or "")[:64],
         "count": number(e.attributes.get("count") or e.attributes.get("refused"))}
        for e in recent if e.kind != "agent.heartbeat"][:100]
    return out


def token_json(t: EnrollToken, *, now_ns: int) -> dict[str, Any]:
    """A token as listed: never its value (shown once, when it is made)."""
    return {"id": t.token_hash, "name": t.name, "labels": list(t.labels), "max_uses": t.max_uses, "uses": t.uses,
            "state": token_state(t, now_ns=now_ns), "created_by": t.created_by, "created_at": format_ns(t.created_at_ns),
            "expires_at": format_ns(t.expires_at_ns), "last_used": _time(t.used_at_ns),
            "revoked_at": _time(t.revoked_at_ns)}


# --- routes -------------------------------------------------------------------------------------------------------

@router.get("/agents")
def list_agents(
    status: str | None = Query(None, max_length=16, description="online, offline, silent, stopped or revoked"),
    label: str | None = Query(None, max_length=48), version: str | None = Query(None, max_length=64),
    os: str | None = Query(None, max_length=64, description="part of the OS text"),
    q: str | None = Query(None, max_length=64, description="part of the hostname or agent id"),
    sort: str = Query("hostname", max_length=16, description="hostname, last_seen, version, status or enrolled"),
    order: str = Query("asc", max_length=4, description="asc or desc"),
    cursor: str | None = Query(None, max_length=400), limit: int = Query(PAGE, ge=1, le=MAX_PAGE),
    who: User = Depends(require("agents:read")), svc: Services = Depends(services),
) -> dict[str, Any]:
    """Lists agents with their health, a page at a time; people seen on them by pseudonym."""
    query = agent_query(status, label, version, os, q, sort, order)
    if query.label and not allowed(who.role, "policies:read"):
        raise HTTPException(403, "labels are configuration: filtering by them needs policies:read")
    after = parse_cursor(cursor, query)
    with svc.store.read() as tx:
        return fleet_page(tx, query, after=after, limit=limit, who=who)


@router.get("/agents/{agent_id}")
def get_agent(agent_id: str = _AGENT_ID, who: User = Depends(require("agents:read")),
              svc: Services = Depends(services)) -> dict[str, Any]:
    """One agent: its health, open health alerts, recent heartbeats and gaps."""
    with svc.store.read() as tx:
        found = agent_detail(tx, agent_id, who=who)
    if found is None:
        raise HTTPException(404, f"no agent {agent_id}")
    return found


class LabelsRequest(CleanInput):
    """An agent's new labels (they replace the old ones)."""

    labels: list[str] = Field(..., max_length=64)


def set_labels(svc: Services, *, agent_id: str, labels: Sequence[str], who: User) -> list[str]:
    """Replaces an agent's labels, audited; HTTPException 400 on a bad label, 404 on no such agent."""
    try:
        with svc.store.transaction() as tx:
            done = fleet.set_labels(tx=tx, agent_id=agent_id, labels=labels, actor=who.username, now_ns=time.time_ns())
    except LabelError as exc:
        raise HTTPException(400, str(exc)) from exc
    if done is None:
        raise HTTPException(404, f"no agent {agent_id}")
    return list(done)


@router.put("/agents/{agent_id}/labels")
def put_labels(body: LabelsRequest, agent_id: str = _AGENT_ID, who: User = Depends(require("agents:write")),
               svc: Services = Depends(services)) -> dict[str, Any]:
    """Replaces an agent's labels (lower-case a-z 0-9 . _ : -, at most 16); audited."""
    return {"agent_id": agent_id, "labels": set_labels(svc, agent_id=agent_id, labels=body.labels, who=who)}


def revoke_agent(svc: Services, *, agent_id: str, who: User) -> bool:
    """Revokes an agent, audited; 404 if there is no such agent; False if it was revoked already."""
    with svc.store.transaction() as tx:
        if tx.get_agent(agent_id) is None:
            raise HTTPException(404, f"no agent {agent_id}")
        return fleet.revoke(tx=tx, agent_id=agent_id, actor=who.username, now_ns=time.time_ns())


@router.post("/agents/{agent_id}/revoke")
def post_revoke(agent_id: str = _AGENT_ID, who: User = Depends(require("agents:write")),
                svc: Services = Depends(services)) -> dict[str, Any]:
    """Revokes an agent: its streams are refused from the next batch on; audited."""
    return {"agent_id": agent_id, "revoked": revoke_agent(svc, agent_id=agent_id, who=who)}


class TokenRequest(CleanInput):
    """A new enrollment token."""

    name: str = Field("", max_length=100, description="what it is for, e.g. finance laptops, batch 3")
    expires_hours: float = Field(24.0, gt=0, le=366 * 24, description="hours until it expires")
    max_uses: int = Field(1, ge=1, le=MAX_TOKEN_USES, description="how many agents may enroll with it")
    labels: list[str] = Field([], max_length=64, description="labels every agent enrolled with it receives")


def create_token(svc: Services, body: TokenRequest, *, who: User) -> dict[str, Any]:
    """Makes a token; its value is in the answer and nowhere else. HTTPException 400 on bad input."""
    try:
        with svc.store.transaction() as tx:
            token = svc.enrollment.create_token(tx=tx, actor=who.username, ttl_ns=int(body.expires_hours * 3600e9),
                                                max_uses=body.max_uses, labels=body.labels, name=body.name)
            made = tx.get_enroll_token(secret_hash(token))
    except EnrollmentError as exc:
        raise HTTPException(400, str(exc)) from exc
    assert made is not None
    return {**token_json(made, now_ns=time.time_ns()), "token": token}


@router.get("/enroll-tokens")
def list_tokens(who: User = Depends(require("agents:write")), svc: Services = Depends(services)) -> dict[str, Any]:
    """Enrollment tokens, newest first, with their uses (never their values)."""
    with svc.store.read() as tx:
        tokens = tx.list_enroll_tokens(limit=500)
    now = time.time_ns()
    return {"items": [token_json(t, now_ns=now) for t in tokens], "next_cursor": None}


@router.post("/enroll-tokens", status_code=201)
def post_token(body: TokenRequest, who: User = Depends(require("agents:write")),
               svc: Services = Depends(services)) -> dict[str, Any]:
    """Creates an enrollment token: the answer's ``token`` is shown this once; audited."""
    return create_token(svc, body, who=who)


def revoke_token(svc: Services, *, token_id: str, who: User) -> bool:
    """Revokes a token with uses left, audited; 404 if there is no such token."""
    with svc.store.transaction() as tx:
        if tx.get_enroll_token(token_id) is None:
            raise HTTPException(404, "no such enrollment token")
        return svc.enrollment.revoke_token_hash(tx=tx, token_hash=token_id, actor=who.username)


@router.post("/enroll-tokens/{token_id}/revoke")
def post_revoke_token(token_id: str = Path(..., min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$"),
                      who: User = Depends(require("agents:write")), svc: Services = Depends(services)) -> dict[str, Any]:
    """Revokes an enrollment token (its unspent uses); audited."""
    return {"id": token_id, "revoked": revoke_token(svc, token_id=token_id, who=who)}
