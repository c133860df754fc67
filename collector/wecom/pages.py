"""Notices to employees: the employee's page to read one in full and acknowledge it, HR's list.

    GET  /me/wecom-notices/{key}               the notice's full text (the WeCom card's link; after sign-in)
    POST /me/wecom-notices/{key}/acknowledge   the employee acknowledges the text they read
    GET  /wecom/notices                        HR: notices (of a case: ?case_id=) and their proof of service
    POST /wecom/notices                        HR: send a notice (the form on that page)
    POST /wecom/userids                        HR: link an employee to their WeCom userid
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from collector.people.models import User
from collector.web.deps import Services, require_page, services
from collector.web.templating import render
from collector.wecom import service as svc_w
from collector.wecom.models import china_iso, employee_subject
from collector.wecom.views import notice_out, runtime

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _my_page(request: Request, svc: Services, user: User, key: str, *, error: str | None = None,
             status: int = 200) -> Response:
    try:
        with svc.store.transaction() as tx:
            n = svc_w.mark_opened(tx=tx, key=key[:64], account=user.username, now_ns=time.time_ns())
    except svc_w.NoticeError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return render(request, "wecom_notice.html", {"n": n, "out": notice_out(n), "error": error,
                                                 "acknowledged_at": china_iso(n.acknowledged_at_ns)},
                  user=user, status_code=status)


@router.get("/me/wecom-notices/{key}", response_class=HTMLResponse)
def my_notice(request: Request, key: str, user: User = Depends(require_page("notices:self")),
              svc: Services = Depends(services)) -> Response:
    """The notice in full, for the employee it is addressed to (else 404); the first opening is recorded."""
    return _my_page(request, svc, user, key)


@router.post("/me/wecom-notices/{key}/acknowledge")
async def acknowledge_form(request: Request, key: str, user: User = Depends(require_page("notices:self")),
                           svc: Services = Depends(services)) -> Response:
    """Acknowledges the text as shown (its hash comes with the form): the proof of service is complete."""
    form = await request.form()
    try:
        with svc.store.transaction() as tx:
            svc_w.acknowledge(tx=tx, key=key[:64], account=user.username,
                              shown_sha256=str(form.get("text_sha256", "")).strip().lower(), now_ns=time.time_ns())
    except svc_w.NoticeError as exc:
        if exc.status == 404:
            raise HTTPException(404, str(exc)) from None
        return _my_page(request, svc, user, key, error=str(exc), status=exc.status)
    return RedirectResponse(f"/me/wecom-notices/{key[:64]}", status_code=303)


def _list_page(request: Request, svc: Services, user: User, *, case_id: int | None = None,
               employee_id: str | None = None, error: str | None = None, form: dict[str, str] | None = None,
               status: int = 200) -> Response:
    with svc.store.read() as tx:
        found = tx.list_employee_notices(employee_id=employee_id, case_id=str(case_id) if case_id else None)
    rt = runtime(request)
    return render(request, "wecom_notices.html", {
        "employee_notices": [notice_out(n) for n in found], "case_id": case_id, "error": error, "form": form or {},
        "wecom_problem": None if rt is not None and rt.enabled else (rt.problem if rt is not None else None)},
        user=user, status_code=status)


@router.get("/wecom/notices", response_class=HTMLResponse)
def notices_page(request: Request, case_id: int | None = None, employee_id: str | None = None,
                 user: User = Depends(require_page("agreements:read")), svc: Services = Depends(services)) -> Response:
    """Notices to employees and how far each got: delivered, read, acknowledged (served), reported to payroll."""
    return _list_page(request, svc, user, case_id=case_id, employee_id=employee_id)


@router.post("/wecom/notices")
async def send_form(request: Request, user: User = Depends(require_page("agreements:write")),
                    svc: Services = Depends(services)) -> Response:
    """Queues a notice from the form (the bridge's notice text pasted, or the monitoring notice's)."""
    f = {k: str(v) for k, v in (await request.form()).items() if isinstance(v, str)}
    raw_case = f.get("case_id", "").strip()
    case_id = int(raw_case) if raw_case.isascii() and raw_case.isdigit() and 0 < len(raw_case) < 19 else None
    try:
        if raw_case and case_id is None:
            raise svc_w.NoticeError(422, "the case id is a number")
        rt = runtime(request)
        with svc.store.transaction() as tx:
            if case_id is not None and tx.get_case(case_id) is None:
                raise svc_w.NoticeError(404, f"no case {case_id}")
            svc_w.create_notice(tx=tx, kind=f.get("kind", ""), employee_id=f.get("employee_id", ""),
                                title=f.get("title", ""), text=f.get("text", ""), actor=user.username,
                                now_ns=time.time_ns(), case_id=str(case_id) if case_id else None,
                                bridge_notice_id=f.get("bridge_notice_id", "").strip() or None,
                                email=f.get("email", "").strip() or None, wecom_enabled=rt is not None and rt.enabled)
    except svc_w.NoticeError as exc:
        return _list_page(request, svc, user, case_id=case_id, error=str(exc), form=f, status=exc.status)
    return RedirectResponse(f"/wecom/notices{f'?case_id={case_id}' if case_id else ''}", status_code=303)


@router.post("/wecom/userids")
async def userid_form(request: Request, user: User = Depends(require_page("agreements:write")),
                      svc: Services = Depends(services)) -> Response:
    """Links an employee (payroll id) to their WeCom userid; empty unlinks."""
    f = {k: str(v) for k, v in (await request.form()).items() if isinstance(v, str)}
    employee_id, userid = f.get("employee_id", "").strip(), f.get("userid", "").strip() or None
    try:
        if not employee_id or len(employee_id) > 64:
            raise svc_w.NoticeError(422, "employee_id is 1 to 64 characters")
        with svc.store.transaction() as tx:
            svc_w.link_userid(tx=tx, subject=employee_subject(employee_id), userid=userid, actor=user.username,
                              now_ns=time.time_ns())
    except svc_w.NoticeError as exc:
        return _list_page(request, svc, user, error=str(exc), form=f, status=exc.status)
    return RedirectResponse("/wecom/notices", status_code=303)
