"""Agreements on record: the JSON API. Views authorize, open one unit of work, call the service, shape the answer.

    GET  /api/v1/agreements                              templates and their versions (no texts)
    POST /api/v1/agreements                              {"title", "kind"} -> 201
    POST /api/v1/agreements/{tid}/versions               {"version", "text", "effective_from"} -> 201, sha256
    GET  /api/v1/agreements/versions/{vid}               one version with its exact text
    GET  /api/v1/agreements/people                       employees on record (pseudonyms, not names)
    POST /api/v1/agreements/people                       {"employee_id", "user_name"?, "account"?} -> 201
    GET  /api/v1/agreements/people/{employee_id}         what is on record for one employee
    POST /api/v1/agreements/people/{employee_id}/import  multipart: file (signed PDF), version_id, platform,
                                                         evidence_ref, identity_check -> 201 with pyHanko's verdict
    GET  /api/v1/agreements/records/{rid}                one signed record
    GET  /api/v1/agreements/records/{rid}/document       the PDF or the acknowledgement JSON, as a download (audited)
    POST /api/v1/agreements/records/{rid}/seal           try the timestamp authority again now
    GET  /api/v1/me/notices                              the employee's own: texts in force and their records
    POST /api/v1/me/notices/{vid}/acknowledge            {"text_sha256"} -> 201, sealed or "not yet timestamped"
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from collector.agreements import service as svc_ag
from collector.agreements.models import PLATFORMS, SignedRecord, backs_deduction, seal_state
from collector.agreements.service import CHINA, AgreementConfig, AgreementError
from collector.audit.models import AuditEntry
from collector.cases.views import read_upload
from collector.people.models import User
from collector.privacy.service import pseudonyms_of
from collector.web.deps import SESSION_COOKIE, Services, require, services

__all__ = ["router", "agreement_config", "record_out", "EmployeeId", "read_pdf_upload"]

router = APIRouter()

MAX_ID = 2**63 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
EmployeeId = Annotated[str, Path(min_length=1, max_length=64, description="the payroll employee id")]


def agreement_config(request: Request) -> AgreementConfig:
    """The feature's settings (wiring puts them on ``app.state.agreements``), or the defaults."""
    found = getattr(request.app.state, "agreements", None)
    return found if isinstance(found, AgreementConfig) else AgreementConfig()


def _fail(exc: AgreementError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


def _iso(ns: int | None) -> str | None:
    return None if not ns else datetime.fromtimestamp(ns // 10**9, CHINA).isoformat()


def record_out(tx: Any, r: SignedRecord) -> dict[str, Any]:
    """A signed record as the API and the pages show it."""
    version = tx.get_agreement_version(r.version_id)
    template = tx.get_agreement_template(version.template_id) if version else None
    kind = template.kind if template else ""
    return {"id": r.id, "employee_id": r.employee_id, "version_id": r.version_id,
            "title": template.title if template else "", "kind": kind, "version": version.version if version else "",
            "text_sha256": version.sha256 if version else "", "source": r.source, "platform": r.platform,
            "platform_label": PLATFORMS.get(r.platform, r.platform), "evidence_ref": r.evidence_ref,
            "signed_at": _iso(r.signed_at_ns), "identity_check": r.identity_check,
            "document_sha256": r.document_sha256, "recorded_by": r.recorded_by, "recorded_at": _iso(r.recorded_at_ns),
            "valid": r.valid, "validation": dict(r.validation), "seal": seal_state(r),
            "sealed_at": _iso(r.sealed_at_ns), "seal_attempts": r.seal_attempts, "seal_error": r.seal_error,
            "backs_deduction": backs_deduction(r, kind)}


class TemplateIn(BaseModel):
    """A new template."""

    title: str = Field(..., min_length=1, max_length=200)
    kind: str = Field(..., max_length=32, description="confidentiality or monitoring_notice")


class VersionIn(BaseModel):
    """A new version: the exact text (hashed as UTF-8) and the day it takes effect (China)."""

    version: str = Field(..., min_length=1, max_length=64)
    text: str = Field(..., min_length=1, max_length=svc_ag.MAX_TEXT)
    effective_from: str = Field(..., max_length=10, description="YYYY-MM-DD")


class EmployeeIn(BaseModel):
    """An employee by payroll id, with the user name their events carry and the account they sign in with."""

    employee_id: str = Field(..., min_length=1, max_length=64)
    user_name: str | None = Field(None, max_length=128)
    account: str | None = Field(None, max_length=128)


class AckIn(BaseModel):
    """The hash of the text the employee was shown (it must still be the text in force)."""

    text_sha256: str = Field(..., min_length=64, max_length=64)


def registry(tx: Any) -> list[dict[str, Any]]:
    """Templates with their versions (no texts)."""
    return [{"id": t.id, "title": t.title, "kind": t.kind, "created_by": t.created_by,
             "versions": [{"id": v.id, "version": v.version, "sha256": v.sha256, "effective_from": v.effective_from,
                           "created_by": v.created_by} for v in tx.list_agreement_versions(t.id or 0)]}
            for t in tx.list_agreement_templates()]


@router.get("/api/v1/agreements")
def list_templates(who: User = Depends(require("agreements:read")), svc: Services = Depends(services)) -> Any:
    """Templates and their versions, with each text's SHA-256."""
    with svc.store.read() as tx:
        return {"items": registry(tx)}


@router.post("/api/v1/agreements", status_code=201)
def create_template(body: TemplateIn, who: User = Depends(require("agreements:write")),
                    svc: Services = Depends(services)) -> Any:
    """Adds a template; audited."""
    try:
        with svc.store.transaction() as tx:
            t = svc_ag.add_template(tx=tx, title=body.title, kind=body.kind, actor=who.username, now_ns=time.time_ns())
    except AgreementError as exc:
        raise _fail(exc) from exc
    return {"id": t.id, "title": t.title, "kind": t.kind, "versions": []}


@router.post("/api/v1/agreements/{template_id}/versions", status_code=201)
def create_version(template_id: Id, body: VersionIn, who: User = Depends(require("agreements:write")),
                   svc: Services = Depends(services)) -> Any:
    """Adds a version with its exact text; 409 if the version name is taken (versions are never rewritten)."""
    try:
        with svc.store.transaction() as tx:
            v = svc_ag.add_version(tx=tx, template_id=template_id, version=body.version, text=body.text,
                                   effective_from=body.effective_from, actor=who.username, now_ns=time.time_ns())
    except AgreementError as exc:
        raise _fail(exc) from exc
    return {"id": v.id, "template_id": v.template_id, "version": v.version, "sha256": v.sha256,
            "effective_from": v.effective_from}


@router.get("/api/v1/agreements/versions/{version_id}")
def get_version(version_id: Id, who: User = Depends(require("agreements:read")),
                svc: Services = Depends(services)) -> Any:
    """One version with its exact text."""
    with svc.store.read() as tx:
        v = tx.get_agreement_version(version_id)
    if v is None:
        raise HTTPException(404, f"no version {version_id}")
    return {"id": v.id, "template_id": v.template_id, "version": v.version, "sha256": v.sha256,
            "effective_from": v.effective_from, "text": v.text}


def people(tx: Any) -> list[dict[str, Any]]:
    """Employees on record, each shown by the pseudonym of their user name (never the name)."""
    found = list(tx.list_agreement_employees())
    codes = pseudonyms_of(tx=tx, user_names=[e.user_name for e in found if e.user_name])
    return [{"employee_id": e.employee_id, "pseudonym": codes.get(e.user_name or "", ""), "account": e.account,
             "records": len(tx.signed_records(e.employee_id))} for e in found]


@router.get("/api/v1/agreements/people")
def list_people(who: User = Depends(require("agreements:read")), svc: Services = Depends(services)) -> Any:
    """Employees on record."""
    with svc.store.read() as tx:
        return {"items": people(tx)}


@router.post("/api/v1/agreements/people", status_code=201)
def put_person(body: EmployeeIn, who: User = Depends(require("agreements:write")),
               svc: Services = Depends(services)) -> Any:
    """Adds or updates an employee (a linked account must have the role employee); audited."""
    try:
        with svc.store.transaction() as tx:
            e = svc_ag.link_employee(tx=tx, employee_id=body.employee_id, user_name=body.user_name,
                                     account=body.account, actor=who.username, now_ns=time.time_ns())
    except AgreementError as exc:
        raise _fail(exc) from exc
    return {"employee_id": e.employee_id, "account": e.account}


@router.get("/api/v1/agreements/people/{employee_id}")
def person(employee_id: EmployeeId, who: User = Depends(require("agreements:read")),
           svc: Services = Depends(services)) -> Any:
    """What is on record for one employee: every signed copy and acknowledgement with its evidence."""
    with svc.store.read() as tx:
        e = tx.get_agreement_employee(employee_id)
        if e is None:
            raise HTTPException(404, f"no employee {employee_id!r} on record")
        code = pseudonyms_of(tx=tx, user_names=[e.user_name]).get(e.user_name, "") if e.user_name else ""
        return {"employee_id": e.employee_id, "pseudonym": code, "account": e.account,
                "records": [record_out(tx, r) for r in tx.signed_records(employee_id)]}


def read_pdf_upload(request: Request, file: UploadFile, limit: int) -> bytes:
    """The uploaded bytes as case attachments read them (413 past the limit); 422 for an empty file."""
    content = read_upload(request, file, limit)
    if not content:
        raise HTTPException(422, "the file is empty")
    return content


def import_signed(svc: Services, cfg: AgreementConfig, *, employee_id: str, version_id: int, content: bytes,
                  platform: str, evidence_ref: str, identity_check: str, actor: str) -> dict[str, Any]:
    """Validates a signed PDF (outside any transaction: pyHanko takes a while) and records the verdict."""
    with svc.store.read() as tx:  # refuse early what cannot be recorded anyway
        if tx.get_agreement_employee(employee_id) is None:
            raise AgreementError(404, f"no employee {employee_id[:64]!r} on record: add them first")
        if tx.get_agreement_version(version_id) is None:
            raise AgreementError(404, f"no agreement version {version_id}")
    verdict = svc_ag.validate_pdf(content, cfg.trust_roots)
    with svc.store.transaction() as tx:
        made = svc_ag.import_pdf(tx=tx, employee_id=employee_id, version_id=version_id, content=content,
                                 validation=verdict, platform=platform, evidence_ref=evidence_ref,
                                 identity_check=identity_check, actor=actor, now_ns=time.time_ns())
        return record_out(tx, made)


@router.post("/api/v1/agreements/people/{employee_id}/import", status_code=201)
def import_pdf(employee_id: EmployeeId, request: Request, file: UploadFile = File(...),
               version_id: int = Form(..., ge=1, le=MAX_ID), platform: str = Form(..., max_length=16),
               evidence_ref: str = Form(..., max_length=200), identity_check: str = Form(..., max_length=500),
               who: User = Depends(require("agreements:write")), svc: Services = Depends(services),
               cfg: AgreementConfig = Depends(agreement_config)) -> Any:
    """Imports a signed PDF and records pyHanko's verdict (an invalid one is kept, marked, and backs nothing);
    422 for a file that is not a PDF or holds no signature, 413 past the size limit."""
    content = read_pdf_upload(request, file, cfg.max_upload_bytes)
    try:
        return import_signed(svc, cfg, employee_id=employee_id, version_id=version_id, content=content,
                             platform=platform, evidence_ref=evidence_ref, identity_check=identity_check,
                             actor=who.username)
    except AgreementError as exc:
        raise _fail(exc) from exc


@router.get("/api/v1/agreements/records/{record_id}")
def get_record(record_id: Id, who: User = Depends(require("agreements:read")),
               svc: Services = Depends(services)) -> Any:
    """One signed record with its evidence."""
    with svc.store.read() as tx:
        r = tx.get_signed_record(record_id)
        if r is None:
            raise HTTPException(404, f"no record {record_id}")
        return record_out(tx, r)


@router.get("/api/v1/agreements/records/{record_id}/document")
def get_document(record_id: Id, who: User = Depends(require("agreements:read")),
                 svc: Services = Depends(services)) -> Response:
    """The signed PDF or the acknowledgement's JSON, always as a download; who took it is audited."""
    with svc.store.transaction() as tx:
        r = tx.get_signed_record(record_id)
        body = tx.signed_document(record_id) if r else None
        if r is None or body is None:
            raise HTTPException(404, f"no record {record_id}")
        tx.append_audit(AuditEntry(time.time_ns(), who.username, "agreement.download", str(record_id),
                                   {"sha256": r.document_sha256}))
    name = f"agreement-{record_id}.pdf" if r.source == "pdf" else f"acknowledgement-{record_id}.json"
    return Response(body, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox", "X-Content-SHA256": r.document_sha256})


@router.post("/api/v1/agreements/records/{record_id}/seal")
def seal_now(record_id: Id, who: User = Depends(require("agreements:write")), svc: Services = Depends(services),
             cfg: AgreementConfig = Depends(agreement_config)) -> Any:
    """Asks the timestamp authority again now for an acknowledgement not yet sealed."""
    with svc.store.read() as tx:
        r = tx.get_signed_record(record_id)
    if r is None or r.source != "acknowledgement":
        raise HTTPException(404, f"no acknowledgement {record_id}")
    try:
        svc_ag.seal_one(store=svc.store, cfg=cfg, record_id=record_id, now=time.time_ns)
    except AgreementError as exc:
        raise _fail(exc) from exc
    with svc.store.read() as tx:
        found = tx.get_signed_record(record_id)
        assert found is not None
        return record_out(tx, found)


def my_notices(tx: Any, account: str) -> dict[str, Any]:
    """The texts in force today and the employee's own records (nothing about anyone else)."""
    employee = tx.agreement_employee_for_account(account)
    if employee is None:
        return {"employee_id": None, "items": [], "records": []}
    mine = list(tx.signed_records(employee.employee_id))
    items = []
    for t, v in svc_ag.current_versions(tx, today=datetime.now(CHINA).date()):
        done = [r for r in mine if r.version_id == v.id and r.source == "acknowledgement"]
        items.append({"template_id": t.id, "title": t.title, "kind": t.kind, "version_id": v.id,
                      "version": v.version, "effective_from": v.effective_from, "text": v.text, "sha256": v.sha256,
                      "acknowledged": record_out(tx, done[-1]) if done else None})
    return {"employee_id": employee.employee_id, "items": items, "records": [record_out(tx, r) for r in mine]}


@router.get("/api/v1/me/notices")
def get_my_notices(who: User = Depends(require("notices:self")), svc: Services = Depends(services)) -> Any:
    """The signed-in employee's agreements and monitoring notice in force, and what they acknowledged."""
    with svc.store.read() as tx:
        return my_notices(tx, who.username)


def acknowledge_and_seal(svc: Services, cfg: AgreementConfig, *, account: str, version_id: int, shown_sha256: str,
                         session_token: str, signed_in_with: str = "password, browser session") -> dict[str, Any]:
    """Records the acknowledgement, then asks the TSA once; if it is down the record waits for the periodic retry."""
    with svc.store.transaction() as tx:
        made = svc_ag.acknowledge(tx=tx, account=account, version_id=version_id, shown_sha256=shown_sha256,
                                  session_token=session_token, now_ns=time.time_ns(), signed_in_with=signed_in_with)
    if cfg.tsa_url:
        svc_ag.seal_one(store=svc.store, cfg=cfg, record_id=made.id or 0, now=time.time_ns)
    with svc.store.read() as tx:
        found = tx.get_signed_record(made.id or 0)
        assert found is not None
        return record_out(tx, found)


@router.post("/api/v1/me/notices/{version_id}/acknowledge", status_code=201)
def acknowledge(version_id: Id, body: AckIn, request: Request, who: User = Depends(require("notices:self")),
                svc: Services = Depends(services), cfg: AgreementConfig = Depends(agreement_config)) -> Any:
    """Acknowledges the text in force (its hash as shown); the answer says whether it is sealed yet."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    token = cookie or request.headers.get("authorization", "")
    try:
        return acknowledge_and_seal(svc, cfg, account=who.username, version_id=version_id,
                                    shown_sha256=body.text_sha256.lower(), session_token=token,
                                    signed_in_with=svc_ag.signed_in_how(who.provider, api_token=not cookie))
    except AgreementError as exc:
        raise _fail(exc) from exc
