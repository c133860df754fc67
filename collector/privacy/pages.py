"""Privacy by design (PIPL): the /privacy page and its JSON API. Forms post here and are redirected back (303);
a refused form is shown again with the reason, and nothing is stored.

    GET  /privacy                               periods in force, holds, cases holding records, last runs,
                                                access requests (privacy:read: HR, IT, auditors)
    POST /privacy/holds                         place a manual legal hold with a reason (privacy:admin; audited)
    POST /privacy/holds/{hold_id}/release       release it (privacy:admin; audited)
    POST /privacy/access                        an access request (PIPL §45): downloads the zip (privacy:admin)
    GET  /api/v1/privacy                        the same as JSON (privacy:read)
    POST /api/v1/privacy/holds | /api/v1/privacy/holds/{hold_id}/release | /api/v1/privacy/access-requests
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from collector.alerts.inputs import CleanInput
from collector.audit.models import AuditFilter
from collector.people.models import User
from collector.privacy.access import export_bytes, export_person
from collector.privacy.codes import parse
from collector.privacy.service import REASON_MAX, PrivacyError, pseudonyms_of
from collector.retention.models import KINDS, LegalHold, RetentionPolicy
from collector.retention.service import DAY_NS, place_hold, release_hold
from collector.storage.base import Transaction
from collector.web.deps import Services, require, require_page, services
from collector.web.templating import render
from collector.web.timefmt import format_ns, parse_rfc3339_ns

__all__ = ["router", "overview"]

router = APIRouter()
_FOREVER = 2**63 - 1
HoldId = Annotated[int, Path(ge=1, le=2**62)]
_RUNS, _REQUESTS = 30, 30


def _policy(request: Request) -> RetentionPolicy:
    found = getattr(request.app.state, "retention_policy", None)
    return found if isinstance(found, RetentionPolicy) else RetentionPolicy()


def overview(tx: Transaction, policy: RetentionPolicy, now_ns: int) -> dict[str, Any]:
    """What the page and GET /api/v1/privacy show: periods, holds, holding cases, last runs, access requests."""
    holds = list(tx.list_legal_holds(active_only=False))
    codes = pseudonyms_of(tx=tx, user_names=[h.user for h in holds if h.user])
    case_holds = tx.case_holds(payroll_since_ns=now_ns - int(policy.payroll_days * DAY_NS))
    runs = [r for r in tx.list_retention_runs() if r.records or r.held][-_RUNS:]
    requests = tx.list_audit(cursor=None, limit=_REQUESTS, filter=AuditFilter(action="privacy.access_request")).items
    anchor = tx.latest_audit_anchor()
    return {
        "periods": [{"kind": k, "days": policy.days(k)} for k in KINDS],
        "payroll_days": policy.payroll_days,
        "holds": [{"id": h.id, "pseudonym": codes.get(h.user or "", ""), "agent_id": h.agent_id,
                   "since": format_ns(h.since_ns), "until": None if h.until_ns >= _FOREVER else format_ns(h.until_ns),
                   "reason": h.reason, "created_by": h.created_by, "created_at": format_ns(h.created_at_ns),
                   "released_at": format_ns(h.released_at_ns) if h.released_at_ns is not None else None}
                  for h in reversed(holds)],
        "case_holds": [{"case_id": c.case_id, "why": c.why} for c in case_holds],
        "runs": [{"id": r.id, "at": format_ns(r.at_ns), "kind": r.kind, "before": format_ns(r.before_ns),
                  "deleted": r.records, "events": r.events, "held": r.held, "held_why": dict(r.held_why)}
                 for r in reversed(runs)],
        "access_requests": [{"at": format_ns(e.at_ns), "by": e.actor, "pseudonym": e.target,
                             "reason": e.details.get("reason", ""), "counts": e.details.get("counts", {})}
                            for e in requests],
        "audit_anchor": None if anchor is None else {"cut_id": anchor.cut_id, "cut_hash": anchor.cut_hash,
                                                     "rows": anchor.rows, "at": format_ns(anchor.at_ns)},
    }


def _hold(tx: Transaction, *, user: str, agent_id: str, since: str, until: str, reason: str, actor: str) -> LegalHold:
    """Places a hold from what a form or request typed (a pseudonym or a user name); ValueError with a reason."""
    who = user.strip()
    if who and parse(who) is not None and who.upper().startswith(("P-", "员工")):
        name = tx.user_for_pseudonym(parse(who) or "")
        if name is None:
            raise ValueError(f"no person has the pseudonym {parse(who)}")
        who = name
    since_ns = parse_rfc3339_ns(since) if since.strip() else 0
    until_ns = parse_rfc3339_ns(until) if until.strip() else _FOREVER
    why = " ".join(reason.split())
    if len(why) > REASON_MAX:
        raise ValueError(f"a reason has at most {REASON_MAX} characters")
    now = time.time_ns()
    return place_hold(tx=tx, hold=LegalHold(why, actor, now, since_ns, until_ns, who or None,
                                            agent_id.strip() or None))


class _NoHold(Exception):
    """No active hold of that id: the release and its audit row are rolled back."""


def _release(svc: Services, hold_id: int, actor: str) -> bool:
    """Releases an active hold with its audit row; False (nothing written) if there is none."""
    try:
        with svc.store.transaction() as tx:
            if not release_hold(tx=tx, hold_id=hold_id, actor=actor, now_ns=time.time_ns()):
                raise _NoHold()
    except _NoHold:
        return False
    return True


def _page(request: Request, svc: Services, user: User, *, error: str | None = None, status: int = 200,
          form: dict[str, str] | None = None) -> Response:
    with svc.store.read() as tx:
        ctx = overview(tx, _policy(request), time.time_ns())
    return render(request, "privacy.html", {**ctx, "error": error, "form": form or {}}, user=user,
                  status_code=status)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k[:40]: (v[:REASON_MAX * 4] if isinstance(v, str) else "") for k, v in form.items() if k != "csrf_token"}


@router.get("/privacy", response_class=HTMLResponse, include_in_schema=False)
def privacy_page(request: Request, user: User = Depends(require_page("privacy:read")),
                 svc: Services = Depends(services)) -> Response:
    """Retention periods in force, legal holds, cases holding records, the last runs and access requests."""
    return _page(request, svc, user)


@router.post("/privacy/holds", include_in_schema=False)
async def hold_form(request: Request, user: User = Depends(require_page("privacy:admin")),
                    svc: Services = Depends(services)) -> Response:
    """Places a manual legal hold (audited)."""
    f = await _form(request)
    try:
        with svc.store.transaction() as tx:
            _hold(tx, user=f.get("user", ""), agent_id=f.get("agent_id", ""), since=f.get("since", ""),
                  until=f.get("until", ""), reason=f.get("reason", ""), actor=user.username)
    except ValueError as exc:
        return _page(request, svc, user, error=str(exc), status=422, form=f)
    return RedirectResponse("/privacy", status_code=303)


@router.post("/privacy/holds/{hold_id}/release", include_in_schema=False)
def release_form(request: Request, hold_id: HoldId, user: User = Depends(require_page("privacy:admin")),
                 svc: Services = Depends(services)) -> Response:
    """Releases a legal hold (audited); its records go at the next run if past their period."""
    if not _release(svc, hold_id, user.username):
        return _page(request, svc, user, error=f"no active legal hold {hold_id}", status=404)
    return RedirectResponse("/privacy", status_code=303)


def _download(data: dict[str, Any], *, as_zip: bool) -> Response:
    code = str(data["person"]["pseudonym"]).replace("P-", "")
    name = f"access-request-{code}.{'zip' if as_zip else 'json'}"
    return Response(export_bytes(data, as_zip=as_zip), media_type="application/zip" if as_zip else "application/json",
                    headers={"content-disposition": f'attachment; filename="{name}"', "cache-control": "no-store"})


@router.post("/privacy/access", include_in_schema=False)
async def access_form(request: Request, user: User = Depends(require_page("privacy:admin")),
                      svc: Services = Depends(services)) -> Response:
    """An access request (PIPL §45): the zip of everything held about one employee; audited like a reveal."""
    f = await _form(request)
    try:
        with svc.store.transaction() as tx:
            data = export_person(tx=tx, who=f.get("employee", ""), reason=f.get("reason", ""), actor=user.username,
                                 now_ns=time.time_ns())
    except PrivacyError as exc:
        return _page(request, svc, user, error=str(exc), status=exc.status, form=f)
    return _download(data, as_zip=True)


# --- the JSON API -------------------------------------------------------------------------------

class HoldIn(CleanInput):
    """A manual legal hold: a user (pseudonym or user name), an agent or both, an optional range, a reason."""

    user: str = Field("", max_length=256)
    agent_id: str = Field("", max_length=64)
    since: str = Field("", max_length=64, description="RFC 3339; empty: from the beginning")
    until: str = Field("", max_length=64, description="RFC 3339; empty: open")
    reason: str = Field(..., min_length=1, max_length=REASON_MAX * 4)


class HoldOut(BaseModel):
    """The hold placed."""

    id: int


class AccessIn(CleanInput):
    """Whom an access request is about and why (10 to 500 characters; kept in the audit log)."""

    employee: str = Field(..., min_length=1, max_length=256, description="pseudonym, user name or payroll id")
    reason: str = Field(..., max_length=REASON_MAX * 4)
    format: str = Field("json", pattern="^(json|zip)$")


@router.get("/api/v1/privacy")
def privacy_api(request: Request, _: User = Depends(require("privacy:read")),
                svc: Services = Depends(services)) -> dict[str, Any]:
    """Retention periods in force, legal holds, cases holding records, the last runs and access requests."""
    with svc.store.read() as tx:
        return overview(tx, _policy(request), time.time_ns())


@router.post("/api/v1/privacy/holds", response_model=HoldOut, status_code=201)
def hold_api(body: HoldIn, who: User = Depends(require("privacy:admin")),
             svc: Services = Depends(services)) -> dict[str, Any]:
    """Places a manual legal hold (audited); 422 with the reason for a bad one."""
    try:
        with svc.store.transaction() as tx:
            hold = _hold(tx, user=body.user, agent_id=body.agent_id, since=body.since, until=body.until,
                         reason=body.reason, actor=who.username)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return {"id": hold.id}


@router.post("/api/v1/privacy/holds/{hold_id}/release", status_code=204)
def release_api(hold_id: HoldId, who: User = Depends(require("privacy:admin")),
                svc: Services = Depends(services)) -> Response:
    """Releases a legal hold (audited); 404 if there is no such active hold."""
    if not _release(svc, hold_id, who.username):
        raise HTTPException(404, f"no active legal hold {hold_id}")
    return Response(status_code=204)


@router.post("/api/v1/privacy/access-requests")
def access_api(body: AccessIn, who: User = Depends(require("privacy:admin")),
               svc: Services = Depends(services)) -> Response:
    """Everything held about one employee, as JSON or a zip; 404 for an unknown employee, 422 without a reason."""
    try:
        with svc.store.transaction() as tx:
            data = export_person(tx=tx, who=body.employee, reason=body.reason, actor=who.username,
                                 now_ns=time.time_ns())
    except PrivacyError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return _download(data, as_zip=body.format == "zip")
