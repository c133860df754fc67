"""Agreements on record: the server-rendered pages. Forms post here and are redirected back (303); a refused
form is shown again with the reason, and nothing is stored.

    GET  /agreements                          the registry: templates, versions, employees; forms for HR
    GET  /agreements/versions/{vid}           one version's exact text and its SHA-256
    GET  /agreements/people/{employee_id}     what is on record for one employee; the import form
    POST /agreements | /agreements/{tid}/versions | /agreements/people | /agreements/people/{eid}/import
    POST /agreements/records/{rid}/seal       ask the timestamp authority again
    GET  /me/notices                          the employee's own agreements and monitoring notice
    POST /me/notices/{vid}/acknowledge        the employee acknowledges the text they read
"""

from __future__ import annotations

import time
from typing import Any, Callable

from fastapi import APIRouter, Depends, File, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from collector.agreements import service as svc_ag
from collector.agreements.models import PLATFORMS, TemplateKind, default_notice_text
from collector.agreements.service import AgreementError
from collector.agreements.views import (MAX_ID, EmployeeId, Id, acknowledge_and_seal, agreement_config,
                                        import_signed, my_notices, people, read_pdf_upload, record_out, registry)
from collector.people.models import User
from collector.privacy.service import pseudonyms_of
from collector.web.deps import SESSION_COOKIE, Services, require_page, services
from collector.web.templating import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

KIND_LABELS = {TemplateKind.CONFIDENTIALITY.value: "Confidentiality agreement",
               TemplateKind.MONITORING_NOTICE.value: "Employee monitoring notice"}
_COMMON: dict[str, Any] = {"kind_labels": KIND_LABELS, "platforms": PLATFORMS}


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _registry_page(request: Request, svc: Services, user: User, *, error: str | None = None,
                   form: dict[str, Any] | None = None, status: int = 200) -> Response:
    with svc.store.read() as tx:
        ctx = {"templates": registry(tx), "people": people(tx)}
    retention = getattr(request.app.state, "retention_days", 365.0)
    return render(request, "agreements.html", {**_COMMON, **ctx, "error": error, "form": form or {},
                                               "default_notice": default_notice_text(retention_days=retention)},
                  user=user, status_code=status)


@router.get("/agreements", response_class=HTMLResponse)
def agreements_page(request: Request, user: User = Depends(require_page("agreements:read")),
                    svc: Services = Depends(services)) -> Response:
    """The registry: templates and versions with their hashes, the employees on record."""
    return _registry_page(request, svc, user)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k[:40]: (v[:svc_ag.MAX_TEXT] if isinstance(v, str) else "") for k, v in form.items() if k != "csrf_token"}


def _submit(request: Request, svc: Services, user: User, form: dict[str, Any], action: Callable[[Any], Any],
            back: str) -> Response:
    try:
        with svc.store.transaction() as tx:
            action(tx)
    except AgreementError as exc:
        return _registry_page(request, svc, user, error=str(exc), form=form, status=exc.status)
    return _back(back)


@router.post("/agreements")
async def template_form(request: Request, user: User = Depends(require_page("agreements:write")),
                        svc: Services = Depends(services)) -> Response:
    """Adds a template."""
    f = await _form(request)
    return _submit(request, svc, user, f, lambda tx: svc_ag.add_template(
        tx=tx, title=f.get("title", ""), kind=f.get("kind", ""), actor=user.username, now_ns=time.time_ns()),
        "/agreements")


@router.post("/agreements/{template_id}/versions")
async def version_form(request: Request, template_id: Id, user: User = Depends(require_page("agreements:write")),
                       svc: Services = Depends(services)) -> Response:
    """Adds a version with its exact text."""
    f = await _form(request)
    return _submit(request, svc, user, f, lambda tx: svc_ag.add_version(
        tx=tx, template_id=template_id, version=f.get("version", ""), text=f.get("text", ""),
        effective_from=f.get("effective_from", ""), actor=user.username, now_ns=time.time_ns()), "/agreements")


@router.post("/agreements/people")
async def person_form(request: Request, user: User = Depends(require_page("agreements:write")),
                      svc: Services = Depends(services)) -> Response:
    """Adds or updates an employee and links their sign-in account."""
    f = await _form(request)
    emp = f.get("employee_id", "").strip()
    return _submit(request, svc, user, f, lambda tx: svc_ag.link_employee(
        tx=tx, employee_id=emp, user_name=f.get("user_name"), account=f.get("account"), actor=user.username,
        now_ns=time.time_ns()), f"/agreements/people/{emp}" if emp else "/agreements")


@router.get("/agreements/versions/{version_id}", response_class=HTMLResponse)
def version_page(request: Request, version_id: Id, user: User = Depends(require_page("agreements:read")),
                 svc: Services = Depends(services)) -> Response:
    """One version's exact text."""
    with svc.store.read() as tx:
        v = tx.get_agreement_version(version_id)
        t = tx.get_agreement_template(v.template_id) if v else None
    if v is None or t is None:
        raise HTTPException(404, f"no version {version_id}")
    return render(request, "agreement_version.html", {**_COMMON, "v": v, "t": t}, user=user)


def _person_page(request: Request, svc: Services, user: User, employee_id: str, *, error: str | None = None,
                 form: dict[str, Any] | None = None, status: int = 200) -> Response:
    with svc.store.read() as tx:
        e = tx.get_agreement_employee(employee_id)
        if e is None:
            raise HTTPException(404, f"no employee {employee_id!r} on record")
        code = pseudonyms_of(tx=tx, user_names=[e.user_name]).get(e.user_name, "") if e.user_name else ""
        records = [record_out(tx, r) for r in tx.signed_records(employee_id)]
        versions = [(t, v) for t in tx.list_agreement_templates() for v in tx.list_agreement_versions(t.id or 0)]
    max_mb = agreement_config(request).max_upload_bytes // (1024 * 1024)
    return render(request, "agreement_person.html", {**_COMMON, "e": e, "pseudonym": code, "records": records,
                                                     "versions": versions, "error": error, "form": form or {},
                                                     "max_mb": max_mb}, user=user, status_code=status)


@router.get("/agreements/people/{employee_id}", response_class=HTMLResponse)
def person_page(request: Request, employee_id: EmployeeId, user: User = Depends(require_page("agreements:read")),
                svc: Services = Depends(services)) -> Response:
    """What is on record for one employee: signed copies, acknowledgements, their evidence and verdicts."""
    return _person_page(request, svc, user, employee_id)


@router.post("/agreements/people/{employee_id}/import")
async def import_form(request: Request, employee_id: EmployeeId, file: UploadFile = File(...),
                      user: User = Depends(require_page("agreements:write")),
                      svc: Services = Depends(services)) -> Response:
    """Imports a signed PDF; the verdict is shown on the employee's page (an invalid one is kept, marked)."""
    cfg = agreement_config(request)
    form = await request.form()
    f = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    try:
        content = read_pdf_upload(request, file, cfg.max_upload_bytes)
        raw = f.get("version_id", "")
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_ID):
            raise AgreementError(422, "choose the agreement version the PDF is a signed copy of")
        # pyHanko and the store are synchronous: off the event loop
        await run_in_threadpool(lambda: import_signed(
            svc, cfg, employee_id=employee_id, version_id=int(raw), content=content, platform=f.get("platform", ""),
            evidence_ref=f.get("evidence_ref", ""), identity_check=f.get("identity_check", ""), actor=user.username))
    except HTTPException as exc:
        return _person_page(request, svc, user, employee_id, error=str(exc.detail), form=f, status=exc.status_code)
    except AgreementError as exc:
        return _person_page(request, svc, user, employee_id, error=str(exc), form=f, status=exc.status)
    return _back(f"/agreements/people/{employee_id}")


@router.post("/agreements/records/{record_id}/seal")
def seal_form(request: Request, record_id: Id, user: User = Depends(require_page("agreements:write")),
              svc: Services = Depends(services)) -> Response:
    """Asks the timestamp authority again now."""
    with svc.store.read() as tx:
        r = tx.get_signed_record(record_id)
    if r is None or r.source != "acknowledgement":
        raise HTTPException(404, f"no acknowledgement {record_id}")
    svc_ag.seal_one(store=svc.store, cfg=agreement_config(request), record_id=record_id, now=time.time_ns)
    return _back(f"/agreements/people/{r.employee_id}")


def _notices_page(request: Request, svc: Services, user: User, *, error: str | None = None,
                  status: int = 200) -> Response:
    with svc.store.read() as tx:
        mine = my_notices(tx, user.username)
    return render(request, "my_notices.html", {**_COMMON, **mine, "error": error}, user=user, status_code=status)


@router.get("/me/notices", response_class=HTMLResponse)
def notices_page(request: Request, user: User = Depends(require_page("notices:self")),
                 svc: Services = Depends(services)) -> Response:
    """The employee's agreements and the monitoring notice in force, to read and acknowledge."""
    return _notices_page(request, svc, user)


@router.post("/me/notices/{version_id}/acknowledge")
async def acknowledge_form(request: Request, version_id: Id, user: User = Depends(require_page("notices:self")),
                           svc: Services = Depends(services)) -> Response:
    """Acknowledges the text as shown (its hash comes with the form); sealed by the TSA, or retried later."""
    f = await _form(request)
    try:
        cfg, token = agreement_config(request), request.cookies.get(SESSION_COOKIE, "")
        await run_in_threadpool(lambda: acknowledge_and_seal(  # the TSA call and the store, off the event loop
            svc, cfg, account=user.username, version_id=version_id,
            shown_sha256=f.get("text_sha256", "").strip().lower(), session_token=token,
            signed_in_with=svc_ag.signed_in_how(user.provider, api_token=False)))
    except AgreementError as exc:
        return _notices_page(request, svc, user, error=str(exc), status=exc.status)
    return _back("/me/notices")
