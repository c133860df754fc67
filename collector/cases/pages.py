"""Cases: the server-rendered pages. Forms post here and are redirected back (303); a refused form is
shown again with the reason and what was typed, and nothing is stored.

    GET  /cases                     the list, filtered by state and assignee
    POST /cases                     open a case from alerts (alert_ids repeated, title): the alert pages post here
    GET  /cases/{id}                the case: alerts, timeline, comments, files, steps, the hand-off and its schedule
    GET  /cases/{id}/hr             HR's confirmation: loss, agreement, employee, notice, appeal; the legal basis
    POST /cases/{id}/transition | /comments | /attachments | /assign | /hr/{kind} | /handoff/resend | /handoff/refresh
"""

from __future__ import annotations

import time
from typing import Any, Callable

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from collector.agreements.service import offers_for_case as agreement_offers
from collector.cases import service as svc_cases
from collector.cases.hr import (APPEAL_DAYS_SOURCE, DEFAULT_APPEAL_DAYS, REGIONS, current_records, format_fen,
                               missing_for_confirmation)
from collector.cases.models import CaseState, HrKind
from collector.cases.service import CaseError
from collector.cases.shapes import case_detail, case_out
from collector.cases.views import MAX_ID, CaseConfig, CaseId, case_config, read_upload
from collector.domain.roles import allowed
from collector.people.models import User
from collector.privacy.service import PrivacyError, pseudonym_of, pseudonyms_of, reveal
from collector.web.deps import Services, cursor_value, require_page, services
from collector.web.templating import render
from collector.wecom.views import notice_out

__all__ = ["router", "STATE_LABELS"]

router = APIRouter(include_in_schema=False)  # pages: the API (views.py) is what /openapi.json describes

STATE_LABELS: dict[str, str] = {
    "open": "Open", "under_review": "Under review", "security_confirmed": "Confirmed by security",
    "hr_confirmed": "Confirmed by HR", "sent_to_payroll": "Sent to payroll", "dismissed": "Dismissed",
    "appealed": "Appealed", "closed": "Closed",
}
# the bridge's limits (docs/payroll.md), as people read them
BINDING_LABELS: dict[str, str] = {
    "CAP20": "at most 20% of the month's wage", "FLOOR": "the local minimum wage must remain",
    "BALANCE": "the whole balance is recovered", "BEFORE_CONFIRMATION": "before the month of confirmation",
    "ENDED": "after the end of employment", "PAUSED": "paused: appeal, arbitration or objection",
}
ACTION_LABELS: dict[str, str] = {
    "comment": "Comment added", "attach": "File attached", "assign": "Assignee changed", "resend": "Sent again",
    "hr.loss": "Loss recorded", "hr.agreement": "Agreement recorded", "hr.employee": "Employee recorded",
    "hr.notice": "Notice recorded", "hr.appeal": "Appeal recorded", "hr.decision": "Decision recorded",
    "handoff.accepted": "Payroll bridge filed the case", "handoff.refused": "Payroll bridge refused the case",
}
_COMMON: dict[str, Any] = {"state_labels": STATE_LABELS, "yuan": format_fen, "regions": REGIONS,
                           "default_appeal_days": DEFAULT_APPEAL_DAYS, "appeal_days_source": APPEAL_DAYS_SOURCE,
                           "binding_labels": BINDING_LABELS, "action_labels": ACTION_LABELS, "revealed": None}


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


@router.get("/cases", response_class=HTMLResponse)
def cases_page(request: Request, state: str | None = Query(None, max_length=32),
               assignee: str | None = Query(None, max_length=128), cursor: str | None = Query(None, max_length=32),
               user: User = Depends(require_page("cases:read")), svc: Services = Depends(services)) -> Response:
    """The case list, newest first, by state and assignee."""
    wanted = state if state in STATE_LABELS else None
    with svc.store.read() as tx:
        page = tx.list_cases(cursor=cursor_value(cursor), limit=50, state=wanted, assignee=assignee or None)
        names = pseudonyms_of(tx=tx, user_names=[c.subject_user for c in page.items])
        items = [case_out(c, pseudonym=names.get(c.subject_user, "")) for c in page.items]
    return render(request, "cases_list.html", {**_COMMON, "cases": items, "state": wanted or "",
                                               "assignee": assignee or "", "next_cursor": page.next_cursor},
                  user=user)


@router.post("/cases")
async def create_case_form(request: Request, user: User = Depends(require_page("cases:write")),
                           svc: Services = Depends(services)) -> Response:
    """Opens a case from the alert pages' form (alert_ids repeated, title) and shows it."""
    form = await request.form()
    title = str(form.get("title") or "")[:svc_cases.MAX_TITLE + 1]
    raw_ids = [str(v) for v in form.getlist("alert_ids")][:svc_cases.MAX_ALERTS + 1]
    bad = [v[:20] for v in raw_ids if not (v.strip().isascii() and v.strip().isdigit() and len(v.strip()) <= 19
                                 and 0 < int(v) <= MAX_ID)]
    try:
        if bad:
            raise CaseError(422, f"not alert ids: {', '.join(bad)}")
        with svc.store.transaction() as tx:
            made = svc_cases.open_case(tx=tx, alert_ids=[int(v) for v in raw_ids], title=title, actor=user.username,
                                       now_ns=time.time_ns())
    except CaseError as exc:
        return render(request, "case_error.html", {**_COMMON, "error": str(exc), "title": title,
                                                   "alert_ids": raw_ids}, user=user, status_code=exc.status)
    return _back(f"/cases/{made.id}")


def _page(request: Request, svc: Services, user: User, case_id: int, template: str, *, error: str | None = None,
          form: dict[str, Any] | None = None, status: int = 200, revealed: str | None = None) -> Response:
    with svc.store.read() as tx:
        case = tx.get_case(case_id)
        if case is None:
            raise HTTPException(404, f"no case {case_id}")
        detail = case_detail(tx, case, role=user.role)
        records = current_records(tx.hr_records(case_id))
        missing = missing_for_confirmation(records, tx.list_attachments(case_id))
        employee = records.get(HrKind.EMPLOYEE.value)
        offers = agreement_offers(tx, subject_user=case.subject_user, incident_first_ns=case.incident_first_ns,
                                  employee_ids=[str(employee.data["employee_id"])] if employee else [])
        notices = [notice_out(n) for n in tx.list_employee_notices(case_id=str(case_id))]  # collector/wecom
    current = {k: dict(r.data) for k, r in records.items()}
    if HrKind.EMPLOYEE.value in current and not allowed(user.role, "cases:hr"):
        current[HrKind.EMPLOYEE.value]["name"] = None
    return render(request, template, {**_COMMON, "case": detail, "current": current, "error": error,
                                      "form": form or {}, "missing": missing, "agreement_offers": offers,
                                      "hr_editable": _hr_editable(detail), "revealed": revealed,
                                      "employee_notices": notices,
                                      "max_mb": case_config(request).max_attachment_bytes // (1024 * 1024)},
                  user=user, status_code=status)


def _hr_editable(detail: Any) -> bool:
    if detail.state == CaseState.SENT_TO_PAYROLL.value:
        return bool(detail.handoffs) and detail.handoffs[-1].state == "refused"
    return detail.state in svc_cases.HR_EDITABLE or detail.state == CaseState.HR_CONFIRMED.value


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_page(request: Request, case_id: CaseId, user: User = Depends(require_page("cases:read")),
              svc: Services = Depends(services)) -> Response:
    """One case: alerts, timeline, comments, files, the steps the user may take, the hand-off and its schedule."""
    return _page(request, svc, user, case_id, "case_detail.html")


@router.get("/cases/{case_id}/hr", response_class=HTMLResponse)
def hr_page(request: Request, case_id: CaseId, user: User = Depends(require_page("cases:read")),
            svc: Services = Depends(services)) -> Response:
    """HR's confirmation: the documented loss, the agreement, the employee, the notice, with the legal basis."""
    return _page(request, svc, user, case_id, "case_hr.html")


def _submit(request: Request, svc: Services, user: User, case_id: int, template: str, form: dict[str, Any],
            action: Callable[[Any], object]) -> Response:
    """Runs one change in one transaction; on a refusal shows the page again with the reason."""
    try:
        with svc.store.transaction() as tx:
            action(tx)
    except CaseError as exc:
        return _page(request, svc, user, case_id, template, error=str(exc), form=form, status=exc.status)
    return _back(f"/cases/{case_id}" + ("/hr" if template == "case_hr.html" else ""))


def _form_dict(form: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in form.keys():
        if key == "csrf_token":
            continue
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        out[key[:40]] = values if key == "documents" else (values[0][:5000] if values else "")
    return out


@router.post("/cases/{case_id}/transition")
async def transition_form(request: Request, case_id: CaseId, user: User = Depends(require_page("cases:read")),
                          svc: Services = Depends(services)) -> Response:
    """Takes one step from the case page or the HR page."""
    form = _form_dict(await request.form())
    template = "case_hr.html" if form.get("back") == "hr" else "case_detail.html"
    return _submit(request, svc, user, case_id, template, form, lambda tx: svc_cases.transition(
        tx=tx, case_id=case_id, to=str(form.get("to", "")), actor=user.username, role=user.role,
        now_ns=time.time_ns(), fields={"reason": form.get("reason", "")}))


@router.post("/cases/{case_id}/comments")
async def comment_form(request: Request, case_id: CaseId, user: User = Depends(require_page("cases:comment")),
                       svc: Services = Depends(services)) -> Response:
    """Adds a comment."""
    form = _form_dict(await request.form())
    return _submit(request, svc, user, case_id, "case_detail.html", form, lambda tx: svc_cases.comment(
        tx=tx, case_id=case_id, body=str(form.get("body", "")), actor=user.username, now_ns=time.time_ns()))


@router.post("/cases/{case_id}/assign")
async def assign_form(request: Request, case_id: CaseId, user: User = Depends(require_page("cases:write")),
                      svc: Services = Depends(services)) -> Response:
    """Gives the case to someone."""
    form = _form_dict(await request.form())
    return _submit(request, svc, user, case_id, "case_detail.html", form, lambda tx: svc_cases.assign(
        tx=tx, case_id=case_id, assignee=str(form.get("assignee", "")), actor=user.username, now_ns=time.time_ns()))


@router.post("/cases/{case_id}/attachments")
def attach_form(request: Request, case_id: CaseId, file: UploadFile = File(...), back: str = Query("", max_length=8),
                user: User = Depends(require_page("cases:comment")), svc: Services = Depends(services),
                cfg: CaseConfig = Depends(case_config)) -> Response:
    """Attaches a file from the case page or the HR page."""
    template = "case_hr.html" if back == "hr" else "case_detail.html"
    try:
        content = read_upload(request, file, cfg.max_attachment_bytes)
    except HTTPException as exc:
        return _page(request, svc, user, case_id, template, error=str(exc.detail), status=exc.status_code)
    return _submit(request, svc, user, case_id, template, {}, lambda tx: svc_cases.attach(
        tx=tx, case_id=case_id, filename=file.filename or "", content=content, content_type=file.content_type or "",
        actor=user.username, now_ns=time.time_ns(), max_bytes=cfg.max_attachment_bytes))


@router.post("/cases/{case_id}/hr/{kind}")
async def hr_form(request: Request, case_id: CaseId, kind: str, user: User = Depends(require_page("cases:hr")),
                  svc: Services = Depends(services)) -> Response:
    """Records one of HR's records from the HR page."""
    form = _form_dict(await request.form())
    form["_kind"] = kind[:32]
    data = {k: v for k, v in form.items() if not k.startswith("_")}
    return _submit(request, svc, user, case_id, "case_hr.html", form, lambda tx: svc_cases.record_hr(
        tx=tx, case_id=case_id, kind=kind[:32], data=data, actor=user.username, role=user.role, now_ns=time.time_ns()))


@router.post("/cases/{case_id}/handoff/resend")
def resend_form(request: Request, case_id: CaseId, user: User = Depends(require_page("cases:hr")),
                svc: Services = Depends(services)) -> Response:
    """Sends a corrected case to payroll again."""
    return _submit(request, svc, user, case_id, "case_hr.html", {}, lambda tx: svc_cases.resend(
        tx=tx, case_id=case_id, actor=user.username, role=user.role, now_ns=time.time_ns()))


@router.post("/cases/{case_id}/handoff/refresh")
def refresh_form(request: Request, case_id: CaseId, user: User = Depends(require_page("cases:hr")),
                 svc: Services = Depends(services)) -> Response:
    """Has the bridge's schedule read again."""
    return _submit(request, svc, user, case_id, "case_detail.html", {}, lambda tx: svc_cases.refresh_schedule(
        tx=tx, case_id=case_id, actor=user.username, now_ns=time.time_ns()))


@router.post("/cases/{case_id}/reveal", response_class=HTMLResponse)
async def reveal_form(request: Request, case_id: CaseId, user: User = Depends(require_page("identity:reveal")),
                      svc: Services = Depends(services)) -> Response:
    """Shows the case with the employee's real name, after asking why (the privacy feature audits it)."""
    form = _form_dict(await request.form())
    template = "case_hr.html" if form.get("back") == "hr" else "case_detail.html"
    try:
        with svc.store.transaction() as tx:
            case = tx.get_case(case_id)
            if case is None:
                raise HTTPException(404, f"no case {case_id}")
            if not case.subject_user:
                raise PrivacyError(404, "this case names no person")
            name = reveal(tx=tx, pseudonym=pseudonym_of(tx=tx, user_name=case.subject_user),
                          reason=str(form.get("reason", ""))[:2000], actor=user.username, now_ns=time.time_ns())
    except PrivacyError as exc:
        return _page(request, svc, user, case_id, template, error=str(exc), status=exc.status)
    return _page(request, svc, user, case_id, template, revealed=name)
