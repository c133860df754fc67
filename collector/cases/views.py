"""Cases: the JSON API. Views authorize, open one unit of work, call the service, shape the answer.

    POST /api/v1/cases                          {"alert_ids": [...], "title": "..."} -> 201, state "open"
    GET  /api/v1/cases?state=&assignee=         newest first, paged
    GET  /api/v1/cases/{id}                     the case with "state", "history" and everything on it
    POST /api/v1/cases/{id}/transition          {"to": STATE, "reason"?} -> 200; 409 / 422 / 403
    POST /api/v1/cases/{id}/assign | /comments | /attachments (multipart "file") | /hr/{kind}
    GET  /api/v1/cases/{id}/attachments/{aid}   the file, as an attachment, never rendered
    GET  /api/v1/cases/{id}/handoff             the hand-offs to payroll and the bridge's answers
    POST /api/v1/cases/{id}/handoff/resend | /handoff/refresh
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from collector.audit.models import AuditEntry
from collector.cases import service as svc_cases
from collector.cases.service import CaseError
from collector.cases.shapes import (AttachmentOut, CaseDetail, CaseList, CommentOut, HandoffOut, HrRecordOut,
                                    attachment_out, case_detail, case_out, handoff_out, hr_out)
from collector.people.models import User
from collector.privacy.service import pseudonyms_of
from collector.web.deps import Services, cursor_value, require, services

__all__ = ["router", "CaseConfig", "case_config", "ascii_fallback", "CaseId", "MAX_ID"]

router = APIRouter()

MAX_ID = 2**63 - 1  # ids are signed 64-bit in every store: a larger one names nothing (404), never a 500
CaseId = Annotated[int, Path(ge=1, le=MAX_ID, description="the case's id")]
FileId = Annotated[int, Path(ge=1, le=MAX_ID, description="the file's id")]
AlertId = Annotated[int, Field(ge=1, le=MAX_ID)]


@dataclass(frozen=True)
class CaseConfig:
    """The cases feature's settings (wiring puts them on ``app.state.cases``)."""

    max_attachment_bytes: int = 10 * 1024 * 1024


def case_config(request: Request) -> CaseConfig:
    """The feature's settings, or the defaults."""
    found = getattr(request.app.state, "cases", None)
    return found if isinstance(found, CaseConfig) else CaseConfig()


class CaseCreate(BaseModel):
    """A new case from alerts."""

    alert_ids: list[AlertId] = Field(..., min_length=1, max_length=svc_cases.MAX_ALERTS)
    title: str = Field(..., min_length=1, max_length=svc_cases.MAX_TITLE)


class TransitionRequest(BaseModel):
    """A step of the lifecycle: the state to go to, and what the step needs (a reason to dismiss)."""

    model_config = ConfigDict(extra="allow")
    to: str = Field(..., max_length=40)
    reason: str | None = Field(None, max_length=4000)


class AssignRequest(BaseModel):
    """Who works on the case (null: no one)."""

    assignee: str | None = Field(None, max_length=128)


class CommentRequest(BaseModel):
    """A comment."""

    body: str = Field(..., min_length=1, max_length=svc_cases.MAX_COMMENT)


class HrRecordRequest(BaseModel):
    """One of HR's records; which fields count depends on the kind (collector/cases/hr.py)."""

    model_config = ConfigDict(extra="forbid")
    amount_yuan: str | None = Field(None, max_length=40, description="the loss in yuan, e.g. 5000.00")
    kind: str | None = Field(None, max_length=16, description="direct or indirect")
    documents: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(None, max_length=50, description="attachment ids of this case")
    description: str | None = Field(None, max_length=2000)
    title: str | None = Field(None, max_length=200)
    version: str | None = Field(None, max_length=64)
    document_sha256: str | None = Field(None, max_length=64)
    signed_by: str | None = Field(None, max_length=64)
    signed_at: str | None = Field(None, max_length=40)
    identity_check: str | None = Field(None, max_length=500)
    clause: str | None = Field(None, max_length=32)
    agreement_record_id: int | None = Field(None, ge=1, le=MAX_ID, description="a signed agreement on record "
                                            "(GET /api/v1/agreements/people/{employee}); replaces the typed fields")
    employee_id: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=64)
    region: str | None = Field(None, max_length=16)
    tier: int | None = Field(None, ge=1, le=9)
    served_at: str | None = Field(None, max_length=40)
    method: str | None = Field(None, max_length=200)
    appeal_days: int | None = Field(None, ge=1, le=90)
    received_at: str | None = Field(None, max_length=40)
    reason: str | None = Field(None, max_length=4000)
    text: str | None = Field(None, max_length=4000)


def _fail(exc: CaseError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


def _detail(svc: Services, case_id: int, who: User) -> CaseDetail:
    with svc.store.read() as tx:
        case = tx.get_case(case_id)
        if case is None:
            raise HTTPException(404, f"no case {case_id}")
        return case_detail(tx, case, role=who.role)


@router.post("/api/v1/cases", status_code=201, response_model=CaseDetail)
def create_case(body: CaseCreate, who: User = Depends(require("cases:write")),
                svc: Services = Depends(services)) -> CaseDetail:
    """Opens a case from alerts (all about one person); 422 names unknown alerts, 409 alerts in an open case."""
    try:
        with svc.store.transaction() as tx:
            made = svc_cases.open_case(tx=tx, alert_ids=body.alert_ids, title=body.title, actor=who.username,
                                       now_ns=time.time_ns())
            return case_detail(tx, made, role=who.role)
    except CaseError as exc:
        raise _fail(exc) from exc


@router.get("/api/v1/cases", response_model=CaseList)
def list_cases(state: str | None = Query(None, max_length=32), assignee: str | None = Query(None, max_length=128),
               limit: int = Query(50, ge=1, le=500), cursor: str | None = Query(None, max_length=32),
               who: User = Depends(require("cases:read")), svc: Services = Depends(services)) -> CaseList:
    """Lists cases, newest first, by state and assignee."""
    with svc.store.read() as tx:
        page = tx.list_cases(cursor=cursor_value(cursor), limit=limit, state=state or None, assignee=assignee or None)
        names = pseudonyms_of(tx=tx, user_names=[c.subject_user for c in page.items])
        return CaseList(items=[case_out(c, pseudonym=names.get(c.subject_user, "")) for c in page.items],
                        next_cursor=page.next_cursor)


@router.get("/api/v1/cases/{case_id}", response_model=CaseDetail)
def get_case(case_id: CaseId, who: User = Depends(require("cases:read")), svc: Services = Depends(services)) -> CaseDetail:
    """The case with its state, history, comments, files, HR's records and hand-offs."""
    return _detail(svc, case_id, who)


@router.post("/api/v1/cases/{case_id}/transition", response_model=CaseDetail)
def transition(case_id: CaseId, body: TransitionRequest, who: User = Depends(require("cases:read")),
               svc: Services = Depends(services)) -> CaseDetail:
    """Takes one step of the lifecycle (the step's own permission is checked: 403), audited."""
    fields: dict[str, Any] = {**(body.model_extra or {}), "reason": body.reason}
    try:
        with svc.store.transaction() as tx:
            moved = svc_cases.transition(tx=tx, case_id=case_id, to=body.to, actor=who.username, role=who.role,
                                         now_ns=time.time_ns(), fields=fields)
            return case_detail(tx, moved, role=who.role)
    except CaseError as exc:
        raise _fail(exc) from exc


@router.post("/api/v1/cases/{case_id}/assign", response_model=CaseDetail)
def assign(case_id: CaseId, body: AssignRequest, who: User = Depends(require("cases:write")),
           svc: Services = Depends(services)) -> CaseDetail:
    """Gives the case to someone; audited."""
    try:
        with svc.store.transaction() as tx:
            moved = svc_cases.assign(tx=tx, case_id=case_id, assignee=body.assignee, actor=who.username,
                                     now_ns=time.time_ns())
            return case_detail(tx, moved, role=who.role)
    except CaseError as exc:
        raise _fail(exc) from exc


@router.get("/api/v1/cases/{case_id}/comments", response_model=list[CommentOut])
def list_comments(case_id: CaseId, who: User = Depends(require("cases:read")),
                  svc: Services = Depends(services)) -> list[CommentOut]:
    """The case's comments, oldest first."""
    return _detail(svc, case_id, who).comments


@router.post("/api/v1/cases/{case_id}/comments", status_code=201, response_model=CommentOut)
def add_comment(case_id: CaseId, body: CommentRequest, who: User = Depends(require("cases:comment")),
                svc: Services = Depends(services)) -> CommentOut:
    """Adds a comment; audited."""
    try:
        with svc.store.transaction() as tx:
            made = svc_cases.comment(tx=tx, case_id=case_id, body=body.body, actor=who.username, now_ns=time.time_ns())
    except CaseError as exc:
        raise _fail(exc) from exc
    from collector.web.timefmt import format_ns

    return CommentOut(id=made.id, author=made.author, at=format_ns(made.at_ns), body=made.body)


def read_upload(request: Request, file: UploadFile, limit: int) -> bytes:
    """The uploaded bytes, refused with 413 past the limit (checked on the declared length first)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 15 or int(declared) > limit + 64 * 1024):
        raise HTTPException(413, f"the upload is larger than the limit of {limit} bytes")
    content = file.file.read(limit + 1)
    if len(content) > limit:
        raise HTTPException(413, f"the file is larger than the limit of {limit} bytes")
    return content


@router.post("/api/v1/cases/{case_id}/attachments", status_code=201, response_model=AttachmentOut)
def upload(case_id: CaseId, request: Request, file: UploadFile = File(...), who: User = Depends(require("cases:comment")),
           svc: Services = Depends(services), cfg: CaseConfig = Depends(case_config)) -> AttachmentOut:
    """Attaches a file (kept by SHA-256 and size; the name only as display text); 413 past the limit."""
    content = read_upload(request, file, cfg.max_attachment_bytes)
    try:
        with svc.store.transaction() as tx:
            made = svc_cases.attach(tx=tx, case_id=case_id, filename=file.filename or "", content=content,
                                    content_type=file.content_type or "", actor=who.username, now_ns=time.time_ns(),
                                    max_bytes=cfg.max_attachment_bytes)
    except CaseError as exc:
        raise _fail(exc) from exc
    return attachment_out(made)


@router.get("/api/v1/cases/{case_id}/attachments", response_model=list[AttachmentOut])
def list_attachments(case_id: CaseId, who: User = Depends(require("cases:read")),
                     svc: Services = Depends(services)) -> list[AttachmentOut]:
    """The case's files, oldest first."""
    return _detail(svc, case_id, who).attachments


def ascii_fallback(name: str) -> str:
    """A plain ASCII file name for old clients (the real one goes in filename*)."""
    kept = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_" for ch in name)
    return kept.strip("._") or "attachment"


@router.get("/api/v1/cases/{case_id}/attachments/{attachment_id}")
def download(case_id: CaseId, attachment_id: FileId, who: User = Depends(require("cases:read")),
             svc: Services = Depends(services)) -> Response:
    """The file itself, always as a download (never rendered by the browser); who took it is audited."""
    with svc.store.transaction() as tx:
        found = tx.get_attachment(attachment_id)
        if found is None or found.case_id != case_id:
            raise HTTPException(404, f"no file {attachment_id} on case {case_id}")
        content = tx.attachment_content(found.sha256)
        # chain of custody: every copy of the evidence that leaves the collector is on record
        tx.append_audit(AuditEntry(time.time_ns(), who.username, "case.download", str(case_id),
                                   {"attachment_id": attachment_id, "sha256": found.sha256}))
    if content is None:
        raise HTTPException(404, f"the content of file {attachment_id} is gone")
    disposition = f"attachment; filename=\"{ascii_fallback(found.display_name)}\"; filename*=UTF-8''{quote(found.display_name, safe='')}"
    return Response(content, media_type="application/octet-stream", headers={
        "Content-Disposition": disposition, "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox", "X-Content-SHA256": found.sha256})


@router.get("/api/v1/cases/{case_id}/hr", response_model=list[HrRecordOut])
def list_hr(case_id: CaseId, who: User = Depends(require("cases:read")),
            svc: Services = Depends(services)) -> list[HrRecordOut]:
    """HR's records, oldest first; the employee's name only for HR."""
    with svc.store.read() as tx:
        if tx.get_case(case_id) is None:
            raise HTTPException(404, f"no case {case_id}")
        return hr_out(list(tx.hr_records(case_id)), role=who.role)


@router.post("/api/v1/cases/{case_id}/hr/{kind}", status_code=201, response_model=HrRecordOut)
def record_hr(case_id: CaseId, kind: str, body: HrRecordRequest, who: User = Depends(require("cases:hr")),
              svc: Services = Depends(services)) -> HrRecordOut:
    """Records the loss, the agreement, the employee, the notice, an appeal or a decision; 422 says what is wrong."""
    data = body.model_dump(exclude_none=True)
    try:
        with svc.store.transaction() as tx:
            svc_cases.record_hr(tx=tx, case_id=case_id, kind=kind[:32], data=data, actor=who.username, role=who.role,
                                now_ns=time.time_ns())
            return hr_out(list(tx.hr_records(case_id)), role=who.role)[-1]
    except CaseError as exc:
        raise _fail(exc) from exc


@router.get("/api/v1/cases/{case_id}/handoff", response_model=list[HandoffOut])
def handoff_status(case_id: CaseId, who: User = Depends(require("cases:read")),
                   svc: Services = Depends(services)) -> list[HandoffOut]:
    """Every hand-off to payroll, by number, with the bridge's answer and schedule."""
    with svc.store.read() as tx:
        if tx.get_case(case_id) is None:
            raise HTTPException(404, f"no case {case_id}")
        return [handoff_out(h) for h in tx.handoffs(case_id)]


@router.post("/api/v1/cases/{case_id}/handoff/resend", status_code=201, response_model=HandoffOut)
def resend(case_id: CaseId, who: User = Depends(require("cases:hr")), svc: Services = Depends(services)) -> HandoffOut:
    """Sends a corrected case again after a refusal, under a new hand-off number."""
    try:
        with svc.store.transaction() as tx:
            made = svc_cases.resend(tx=tx, case_id=case_id, actor=who.username, role=who.role, now_ns=time.time_ns())
    except CaseError as exc:
        raise _fail(exc) from exc
    return handoff_out(made)


@router.post("/api/v1/cases/{case_id}/handoff/refresh", response_model=HandoffOut)
def refresh(case_id: CaseId, who: User = Depends(require("cases:hr")), svc: Services = Depends(services)) -> HandoffOut:
    """Has the bridge's schedule read again now."""
    try:
        with svc.store.transaction() as tx:
            due = svc_cases.refresh_schedule(tx=tx, case_id=case_id, actor=who.username, now_ns=time.time_ns())
    except CaseError as exc:
        raise _fail(exc) from exc
    return handoff_out(due)
