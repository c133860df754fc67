"""Notices to employees: the employee's page to read one in full and acknowledge it, HR's list.

    GET  /me/wecom-notices/{key}               the notice's full text (the WeCom card's link; after sign-in)
    POST /me/wecom-notices/{key}/acknowledge   the employee acknowledges the text they read
    GET  /wecom/notices                        HR: notices (of a case: ?case_id=) and their proof of service
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from collector.people.models import User
from collector.web.deps import Services, require_page, services
from collector.web.templating import render
from collector.wecom import service as svc_w
from collector.wecom.models import china_iso
from collector.wecom.views import notice_out

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


@router.get("/wecom/notices", response_class=HTMLResponse)
def notices_page(request: Request, case_id: int | None = None, employee_id: str | None = None,
                 user: User = Depends(require_page("agreements:read")), svc: Services = Depends(services)) -> Response:
    """Notices to employees and how far each got: delivered, read, acknowledged (served), reported to payroll."""
    with svc.store.read() as tx:
        found = tx.list_employee_notices(employee_id=employee_id, case_id=str(case_id) if case_id else None)
    return render(request, "wecom_notices.html", {"employee_notices": [notice_out(n) for n in found],
                                                  "case_id": case_id}, user=user)
