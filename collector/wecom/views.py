"""Notices to employees through WeCom: the JSON API and WeCom's callback URL.

    PUT  /api/v1/wecom/userids/employee/{employee_id}   {"userid": "zhangsan" | null}   (agreements:write, HR)
    PUT  /api/v1/wecom/userids/account/{username}       the WeCom userid of a staff account (users:admin, IT)
    POST /api/v1/wecom/notices                          a notice to an employee                (agreements:write)
    GET  /api/v1/wecom/notices?case_id=&employee_id=    notices with their proof of service    (agreements:read)
    POST /api/v1/wecom/notices/{key}/resend             a notice not delivered, queued again   (agreements:write)
    GET  /wecom/callback                                WeCom's URL check: answers the decrypted echostr
    POST /wecom/callback                                WeCom's events: verified, decrypted; read receipts

The callback needs no session: it is WeCom calling, and it is authenticated by its signature and the
encryption with the app's EncodingAESKey. One that does not verify is 400 and audited; nobody is signed in.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from collector.agreements.views import EmployeeId
from collector.audit.models import AuditEntry
from collector.people.models import User
from collector.web.deps import Services, require, services
from collector.wecom import service as svc_w
from collector.wecom.crypto import CallbackRefused
from collector.wecom.models import EmployeeNotice, NoticeState, account_subject, china_iso, employee_subject, proof_of_service

__all__ = ["router", "notice_out", "runtime"]

router = APIRouter()
Username = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@-]+$")]


def runtime(request: Request) -> Any:
    """The WeCom runtime (collector/wecom/runtime.py) that wiring put on ``app.state.wecom``, or None."""
    return getattr(request.app.state, "wecom", None)


def notice_out(n: EmployeeNotice) -> dict[str, Any]:
    """A notice as the API and pages show it: no full text, its state and the proof of service."""
    return {"key": n.key, "kind": n.kind, "employee_id": n.employee_id, "case_id": n.case_id,
            "bridge_notice_id": n.bridge_notice_id, "title": n.title, "state": n.state, "served": n.served,
            "attempts": n.attempts, "last_error": n.last_error, "created_at": china_iso(n.created_at_ns),
            "proof_reported_at": china_iso(n.proof_reported_at_ns), "proof_answer": n.proof_answer,
            "proof": proof_of_service(n)}


class UseridIn(BaseModel):
    userid: str | None = Field(None, max_length=64)


class NoticeIn(BaseModel):
    kind: str = Field(pattern=r"^(deduction|monitoring)$")
    employee_id: str = Field(min_length=1, max_length=64)
    title: str | None = Field(None, max_length=200)
    text: str | None = Field(None, max_length=100_000)
    case_id: int | None = Field(None, ge=1)
    bridge_notice_id: str | None = Field(None, max_length=128, pattern=r"^N-[A-Za-z0-9._-]+$")
    version_id: int | None = Field(None, ge=1, description="monitoring: the agreements version whose text is sent")
    email: str | None = Field(None, max_length=254, description="where to send it if the employee has no WeCom")


def _run(fn: Any) -> Any:
    try:
        return fn()
    except svc_w.NoticeError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.put("/api/v1/wecom/userids/employee/{employee_id}")
def set_employee_userid(employee_id: EmployeeId, body: UseridIn, user: User = Depends(require("agreements:write")),
                        svc: Services = Depends(services)) -> dict[str, Any]:
    """Links an employee to their WeCom userid (None: unlinks); notices then go to WeCom."""
    with svc.store.transaction() as tx:
        _run(lambda: svc_w.link_userid(tx=tx, subject=employee_subject(employee_id), userid=body.userid,
                                       actor=user.username, now_ns=time.time_ns()))
    return {"employee_id": employee_id, "userid": body.userid}


@router.put("/api/v1/wecom/userids/account/{username}")
def set_account_userid(username: Username, body: UseridIn, user: User = Depends(require("users:admin")),
                       svc: Services = Depends(services)) -> dict[str, Any]:
    """Links a staff account to its WeCom userid: its notifications then also go to that person's WeCom."""
    with svc.store.transaction() as tx:
        if tx.get_user(username) is None:
            raise HTTPException(404, f"no account {username!r}")
        _run(lambda: svc_w.link_userid(tx=tx, subject=account_subject(username), userid=body.userid,
                                       actor=user.username, now_ns=time.time_ns()))
    return {"username": username, "userid": body.userid}


@router.post("/api/v1/wecom/notices", status_code=201)
def create_notice(body: NoticeIn, request: Request, user: User = Depends(require("agreements:write")),
                  svc: Services = Depends(services)) -> dict[str, Any]:
    """Queues a notice to an employee: WeCom when they have a userid, else the email given."""
    rt = runtime(request)
    with svc.store.transaction() as tx:
        title, text = body.title, body.text
        if body.kind == "monitoring" and body.version_id is not None:
            version = tx.get_agreement_version(body.version_id)
            template = tx.get_agreement_template(version.template_id) if version else None
            if version is None or template is None or template.kind != "monitoring_notice":
                raise HTTPException(422, "version_id is not a version of a monitoring notice")
            title, text = title or f"{template.title}（{version.version}）", version.text
        if body.case_id is not None and tx.get_case(body.case_id) is None:
            raise HTTPException(404, f"no case {body.case_id}")
        n = _run(lambda: svc_w.create_notice(
            tx=tx, kind=body.kind, employee_id=body.employee_id, title=title or "", text=text or "",
            actor=user.username, now_ns=time.time_ns(), case_id=str(body.case_id) if body.case_id else None,
            bridge_notice_id=body.bridge_notice_id, email=body.email,
            wecom_enabled=rt is not None and rt.enabled))
    return notice_out(n)


@router.get("/api/v1/wecom/notices")
def list_notices(case_id: int | None = None, employee_id: str | None = None,
                 _: User = Depends(require("agreements:read")), svc: Services = Depends(services)) -> dict[str, Any]:
    """Notices (of a case, of an employee) with their delivery, read receipt, acknowledgement."""
    with svc.store.read() as tx:
        found = tx.list_employee_notices(employee_id=employee_id, case_id=str(case_id) if case_id else None)
    return {"notices": [notice_out(n) for n in found]}


@router.post("/api/v1/wecom/notices/{key}/resend")
def resend(key: Annotated[str, Path(max_length=64)], user: User = Depends(require("agreements:write")),
           svc: Services = Depends(services)) -> dict[str, Any]:
    """Queues a notice that was not delivered again (after the userid or address was corrected)."""
    from dataclasses import replace
    now = time.time_ns()
    with svc.store.transaction() as tx:
        n = tx.get_employee_notice(key)
        if n is None:
            raise HTTPException(404, "no such notice")
        if n.state != NoticeState.NOT_DELIVERED.value:
            raise HTTPException(409, f"the notice is {n.state}: only one not delivered is sent again")
        userid = tx.get_wecom_userid(employee_subject(n.employee_id))
        address = userid if n.channel == "wecom" and userid else n.address
        n = replace(n, state=NoticeState.PENDING.value, address=address, next_attempt_ns=0, msgid=None)
        tx.save_employee_notice(n)
        tx.append_audit(AuditEntry(now, user.username, "wecom.notice.resent", f"notice:{key}",
                                   {"employee_id": n.employee_id, "channel": n.channel}))
    return notice_out(n)


def _crypto(request: Request) -> Any:
    rt = runtime(request)
    if rt is None or rt.crypto is None:
        raise HTTPException(404, "no WeCom callback is configured")
    return rt.crypto


@router.get("/wecom/callback", response_class=PlainTextResponse, include_in_schema=False)
def verify_url(request: Request, svc: Services = Depends(services)) -> PlainTextResponse:
    """WeCom checks the URL when it is saved: the decrypted echostr proves we hold the key."""
    crypto, q = _crypto(request), request.query_params
    try:
        echo = crypto.decrypt(q.get("msg_signature", ""), q.get("timestamp", ""), q.get("nonce", ""),
                              q.get("echostr", ""))
    except CallbackRefused as exc:
        svc_w._refused(svc.store, time.time_ns(), exc.reason)
        raise HTTPException(400, f"callback refused: {exc.reason}") from None
    return PlainTextResponse(echo)


@router.post("/wecom/callback", response_class=PlainTextResponse, include_in_schema=False)
async def callback(request: Request, svc: Services = Depends(services)) -> PlainTextResponse:
    """An event from WeCom: refused (400, audited) unless it verifies; a read receipt is recorded."""
    crypto = _crypto(request)
    body = await request.body()
    if len(body) > 64 * 1024:
        raise HTTPException(413, "a WeCom callback is small")
    params = dict(request.query_params)
    try:
        answer = await run_in_threadpool(lambda: svc_w.handle_callback(
            store=svc.store, crypto=crypto, params=params, body=body, now_ns=time.time_ns()))
    except CallbackRefused as exc:
        raise HTTPException(400, f"callback refused: {exc.reason}") from None
    return PlainTextResponse(answer)
