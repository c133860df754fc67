"""The fleet pages: /fleet (every agent with its health, filtered, sorted, paged), /fleet/agents/{id} (one agent,
its heartbeat and gap history, labels, revocation after a confirmation) and /fleet/tokens (enrollment tokens:
made with an expiry, a use count and labels, shown once, listed with their uses, revoked). Plain HTML forms
that post and redirect (303); they call the same functions as the API (views.py)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from collector.alerts.labels import RULE_LABELS
from collector.domain.roles import allowed
from collector.fleet.models import SORTS, STATUSES
from collector.fleet.views import (PAGE, TokenRequest, agent_detail, agent_query, create_token, fleet_page,
                                   parse_cursor, revoke_agent, revoke_token, set_labels, token_json)
from collector.people.models import User
from collector.web.deps import Services, require_page, services
from collector.web.templating import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)  # pages: the API (views.py) is what /openapi.json describes
_FILTERS = ("status", "label", "version", "os", "q", "sort", "order")
_SORT_LABELS = {"hostname": "Hostname", "last_seen": "Last contact", "version": "Agent version",
                "status": "Status", "enrolled": "Enrolled"}
_STATUS_LABELS = {"online": "Online", "offline": "Not heard from yet", "silent": "Silent", "stopped": "Stopped",
                  "revoked": "Revoked"}
_HEALTH_RULE_LABELS = {"certificate_expiring": "Certificate about to expire", "policy_refused": "Policy refused by the agent"}
_TOKEN_STATES = {"active": "Active", "used": "All uses spent", "expired": "Expired", "revoked": "Revoked"}


def _problem(request: Request, who: User, status: int, message: str) -> HTMLResponse:
    return render(request, "fleet_problem.html", {"message": message}, user=who, status_code=status)


def _labels_ctx() -> dict[str, Any]:
    return {"statuses": STATUSES, "sorts": SORTS, "sort_labels": _SORT_LABELS, "status_labels": _STATUS_LABELS,
            "rule_labels": {**RULE_LABELS, **_HEALTH_RULE_LABELS}, "token_states": _TOKEN_STATES}


@router.get("/fleet", response_class=HTMLResponse)
def fleet_list(request: Request, who: User = Depends(require_page("agents:read")),
               svc: Services = Depends(services)) -> Response:
    """Every agent with its health: filters, sort, next page."""
    args = {k: request.query_params.get(k) or None for k in _FILTERS}
    try:
        q = agent_query(args["status"], args["label"] if allowed(who.role, "policies:read") else None,
                        args["version"], args["os"], args["q"], args["sort"], args["order"])
        after = parse_cursor(request.query_params.get("cursor"), q)
    except HTTPException as exc:
        return _problem(request, who, exc.status_code, str(exc.detail))
    with svc.store.read() as tx:
        page = fleet_page(tx, q, after=after, limit=PAGE, who=who)
    kept = {k: v for k, v in args.items() if v}

    def url(**change: str | None) -> str:
        merged = {**kept, **change}
        return "/fleet?" + urlencode({k: v for k, v in merged.items() if v})

    return render(request, "fleet.html", {
        **_labels_ctx(), "page": page, "f": args, "url": url, "q": q,
        "next_url": url(cursor=page["next_cursor"]) if page["next_cursor"] else None,
        "first_url": url(cursor=None) if after is not None else None,
    }, user=who)


@router.get("/fleet/agents/{agent_id}", response_class=HTMLResponse)
def agent_page(request: Request, agent_id: str, who: User = Depends(require_page("agents:read")),
               svc: Services = Depends(services)) -> Response:
    """One agent: health, open health alerts, heartbeat and gap history; labels and revocation for IT."""
    if len(agent_id) > 64:
        return _problem(request, who, 404, "no such agent")
    with svc.store.read() as tx:
        found = agent_detail(tx, agent_id, who=who)
    if found is None:
        return _problem(request, who, 404, f"no agent {agent_id}")
    notice = request.query_params.get("done", "")
    return render(request, "fleet_agent.html", {**_labels_ctx(), "a": found,
                                                "notice": notice if notice in ("labels", "revoked") else ""},
                  user=who)


@router.post("/fleet/agents/{agent_id}/labels")
async def labels_form(request: Request, agent_id: str, who: User = Depends(require_page("agents:write")),
                      svc: Services = Depends(services)) -> Response:
    """Replaces an agent's labels from the form's text (labels separated by commas or spaces)."""
    form = await request.form()
    text = str(form.get("labels", ""))
    if len(text) > 2000:
        return _problem(request, who, 400, "at most 2,000 characters of labels")
    try:
        set_labels(svc, agent_id=agent_id, labels=text.replace(",", " ").split(), who=who)
    except HTTPException as exc:
        return _problem(request, who, exc.status_code, str(exc.detail))
    return RedirectResponse(f"/fleet/agents/{agent_id}?done=labels", status_code=303)


@router.get("/fleet/agents/{agent_id}/revoke", response_class=HTMLResponse)
def revoke_confirm(request: Request, agent_id: str, who: User = Depends(require_page("agents:write")),
                   svc: Services = Depends(services)) -> Response:
    """Asks IT to confirm the revocation of an agent."""
    with svc.store.read() as tx:
        agent = tx.get_agent(agent_id) if len(agent_id) <= 64 else None
    if agent is None:
        return _problem(request, who, 404, f"no agent {agent_id[:64]}")
    return render(request, "fleet_revoke.html", {"agent": agent}, user=who)


@router.post("/fleet/agents/{agent_id}/revoke")
async def revoke_form(request: Request, agent_id: str, who: User = Depends(require_page("agents:write")),
                      svc: Services = Depends(services)) -> Response:
    """Revokes the agent once the confirmation box is ticked."""
    form = await request.form()
    if form.get("confirm") != "yes":
        return RedirectResponse(f"/fleet/agents/{agent_id}/revoke", status_code=303)
    try:
        revoke_agent(svc, agent_id=agent_id, who=who)
    except HTTPException as exc:
        return _problem(request, who, exc.status_code, str(exc.detail))
    return RedirectResponse(f"/fleet/agents/{agent_id}?done=revoked", status_code=303)


def _tokens_page(request: Request, who: User, svc: Services, *, made: dict[str, Any] | None = None,
                 error: str | None = None, status_code: int = 200) -> HTMLResponse:
    with svc.store.read() as tx:
        tokens = tx.list_enroll_tokens(limit=500)
    now = time.time_ns()
    return render(request, "fleet_tokens.html", {**_labels_ctx(), "tokens": [token_json(t, now_ns=now) for t in tokens],
                                                 "made": made, "error": error}, user=who, status_code=status_code)


@router.get("/fleet/tokens", response_class=HTMLResponse)
def tokens_list(request: Request, who: User = Depends(require_page("agents:write")),
                svc: Services = Depends(services)) -> Response:
    """Enrollment tokens with their uses, and the form that makes one."""
    return _tokens_page(request, who, svc)


@router.post("/fleet/tokens", response_class=HTMLResponse)
async def tokens_create(request: Request, who: User = Depends(require_page("agents:write")),
                        svc: Services = Depends(services)) -> Response:
    """Makes a token and shows its value this once (not redirected: the value never lands in a URL)."""
    form = await request.form()
    labels = str(form.get("labels", ""))
    try:
        body = TokenRequest(name=str(form.get("name", "")), expires_hours=str(form.get("expires_hours", "") or 24),
                            max_uses=str(form.get("max_uses", "") or 1), labels=labels.replace(",", " ").split())
        made = create_token(svc, body, who=who)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _tokens_page(request, who, svc, error=f"{where}: {first.get('msg', 'invalid')}", status_code=400)
    except HTTPException as exc:
        return _tokens_page(request, who, svc, error=str(exc.detail), status_code=exc.status_code)
    response = _tokens_page(request, who, svc, made=made, status_code=201)
    response.headers["cache-control"] = "no-store"  # the one page that holds the token's value
    return response


@router.post("/fleet/tokens/{token_id}/revoke")
def tokens_revoke(request: Request, token_id: str, who: User = Depends(require_page("agents:write")),
                  svc: Services = Depends(services)) -> Response:
    """Revokes a token's unspent uses."""
    if len(token_id) != 64:
        return _problem(request, who, 404, "no such enrollment token")
    try:
        revoke_token(svc, token_id=token_id, who=who)
    except HTTPException as exc:
        return _problem(request, who, exc.status_code, str(exc.detail))
    return RedirectResponse("/fleet/tokens", status_code=303)
