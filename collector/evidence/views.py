"""Downloading a case's evidence bundle and its report: the API and the case page's button.

    POST /api/v1/cases/{id}/evidence-bundle    the bundle (application/zip)      evidence:export
    POST /api/v1/cases/{id}/evidence-report    the arbitrator's report (PDF)     evidence:export
    POST /cases/{id}/evidence                  the same, from the case page's form (CSRF), bundle or report

Both are POSTs: each export is audited (``evidence.export``: who, which case, when, the bundle's
SHA-256), in the transaction that reads the bundle. 404 for no such case, 409 when the case's
newest batches are not under a signed tree head yet or this collector has no keys configured
(``app.state.evidence``, set by collector/wiring.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fastapi import APIRouter, Depends, HTTPException, Path as PathParam, Request
from fastapi.responses import Response

from collector.evidence.bundle import EvidenceError, WitnessKey
from collector.evidence.service import EvidenceKeys, Exported, export_case
from collector.people.models import User
from collector.web.deps import Services, require, require_page, services
from collector.web.templating import render

__all__ = ["router", "EvidenceConfig"]

router = APIRouter()
CaseId = PathParam(ge=1, le=2**62)


@dataclass(frozen=True)
class EvidenceConfig:
    """Where the collector's keys are (its data directory) and the witnesses it knows."""

    data_dir: Path
    witnesses: Sequence[WitnessKey] = ()


def _export(request: Request, svc: Services, case_id: int, actor: str) -> Exported:
    with svc.store.read() as tx:
        if tx.get_case(case_id) is None:
            raise EvidenceError(404, f"no case {case_id}")
    config: EvidenceConfig | None = getattr(request.app.state, "evidence", None)
    if config is None:
        raise EvidenceError(409, "this collector has no evidence keys configured")
    keys = EvidenceKeys.load(config.data_dir, config.witnesses)
    with svc.store.transaction() as tx:
        return export_case(tx, case_id, keys=keys, actor=actor, now_ns=time.time_ns())


def _download(made: Exported, case_id: int, what: str) -> Response:
    if what == "report":
        return Response(made.members.get("report.pdf", b""), media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="case-{case_id}-report.pdf"'})
    return Response(made.zip, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="case-{case_id}-evidence.zip"',
                             "X-Bundle-SHA256": made.sha256})


def _api(request: Request, svc: Services, case_id: int, user: User, what: str) -> Response:
    try:
        return _download(_export(request, svc, case_id, user.username), case_id, what)
    except EvidenceError as exc:
        raise HTTPException(exc.status, str(exc)) from exc


@router.post("/api/v1/cases/{case_id}/evidence-bundle", response_class=Response)
def bundle_api(request: Request, case_id: int = CaseId, user: User = Depends(require("evidence:export")),
               svc: Services = Depends(services)) -> Response:
    """The case's evidence bundle (zip), for shoumi-verify; audited."""
    return _api(request, svc, case_id, user, "bundle")


@router.post("/api/v1/cases/{case_id}/evidence-report", response_class=Response)
def report_api(request: Request, case_id: int = CaseId, user: User = Depends(require("evidence:export")),
               svc: Services = Depends(services)) -> Response:
    """The arbitrator's report (PDF) of the case, made with a new audited export."""
    return _api(request, svc, case_id, user, "report")


@router.post("/cases/{case_id}/evidence", include_in_schema=False, response_class=Response)
async def bundle_form(request: Request, case_id: int = CaseId, user: User = Depends(require_page("evidence:export")),
                      svc: Services = Depends(services)) -> Response:
    """The case page's export button: the bundle, or (what=report) the report."""
    form = await request.form()
    what = "report" if form.get("what") == "report" else "bundle"
    try:
        made = _export(request, svc, case_id, user.username)
    except EvidenceError as exc:
        return render(request, "evidence_error.html", {"case_id": case_id, "error": str(exc)}, user=user,
                      status_code=exc.status)
    return _download(made, case_id, what)
