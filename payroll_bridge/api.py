"""The bridge's HTTP intake (FastAPI): views only authorize, call the ledger and shape the response.

    POST /cases            CASE.json as the body -> 201 accepted, 200 already filed, 422 refused or
                           malformed, 413 over 1 MiB (every refusal is recorded with its reasons)
    GET  /cases/{case_id}  the case, its lines and its balance: only to the client that filed it
    POST /cases/{case_id}/notices/{notice_id}/service
                           a notice's electronic proof of service (collector/wecom): served on the day it
                           was acknowledged (payroll_bridge/service_proof.py); 422 not acknowledged/delivered
    GET  /healthz          liveness

Every call but /healthz needs ``Authorization: Bearer <token>`` with a client's own credential
(``shoumi-payroll client create NAME``); the audit names the client the credential belongs to
(``client:NAME``), never anything the caller writes in a header. No API docs are served: they would
describe the intake to anyone who asks.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from payroll_bridge.errors import PayrollError
from payroll_bridge.intake import MAX_CASE_BYTES
from payroll_bridge.ledger import Ledger
from payroll_bridge.minimum_wage import MinimumWageTable, load_table
from payroll_bridge.service_proof import parse_proof
from payroll_bridge.settings import PayrollSettings

__all__ = ["create_app"]


def create_app(settings: PayrollSettings, *, table: MinimumWageTable | None = None) -> FastAPI:
    """Builds the app for one settings object; no configuration lives in module globals."""
    table = table or load_table(settings.minimum_wage_table)
    app = FastAPI(title="Shoumi payroll bridge", version="1", docs_url=None, redoc_url=None, openapi_url=None)

    def open_ledger() -> Ledger:
        return Ledger(settings.resolved_ledger_path(), table=table, appeal_days=settings.appeal_days)

    async def client(authorization: Annotated[str | None, Header()] = None) -> str:
        scheme, _, token = (authorization or "").partition(" ")

        def lookup() -> str | None:
            with open_ledger() as ledger:
                return ledger.authenticate(token.strip())

        actor = await run_in_threadpool(lookup) if scheme.lower() == "bearer" and token else None
        if actor is None:
            raise HTTPException(status_code=401, detail="a valid client credential is required (Bearer token)",
                                headers={"WWW-Authenticate": "Bearer"})
        return actor

    @app.exception_handler(PayrollError)
    async def payroll_error(_: Request, exc: PayrollError) -> JSONResponse:
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=exc.http_status)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/cases")
    # Depends() as a default, not in Annotated: the dependency is local to this app, and string
    # annotations (from __future__) are resolved against module globals only.
    async def intake(request: Request, actor: str = Depends(client)) -> JSONResponse:
        body, too_large = await _bounded_body(request, MAX_CASE_BYTES)
        if too_large:
            detail = f"the case is larger than {MAX_CASE_BYTES} bytes: refused unread"

            def refuse() -> None:
                with open_ledger() as ledger:
                    ledger.record_malformed_intake(payload=body[:4096], reason=detail, actor=actor)

            await run_in_threadpool(refuse)
            return JSONResponse({"error": "InvalidInput", "detail": detail}, status_code=413)

        def run() -> dict[str, Any]:
            with open_ledger() as ledger:
                return ledger.intake(payload=body, actor=actor).to_json()

        outcome = await run_in_threadpool(run)
        status = 422 if outcome["status"] == "refused" else 200 if outcome["duplicate"] else 201
        return JSONResponse(outcome, status_code=status)

    @app.get("/cases/{case_id}")
    async def get_case(case_id: str, actor: str = Depends(client)) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with open_ledger() as ledger:
                if not ledger.filed_by(case_id=case_id, actor=actor):
                    # The same answer whether the case is absent or another client's: no probing.
                    raise HTTPException(status_code=404, detail=f"no case {case_id[:64]!r} filed by this client")
                case = ledger.case(case_id)
                return {
                    "case_id": case.case_id,
                    "employee_id": case.employee_id,
                    "state": case.state,
                    "confirmed_at": case.confirmed_at.isoformat(),
                    "loss_fen": case.loss_fen,
                    "award_fen": case.award_fen,
                    "lines": [x.to_json() for x in ledger.lines(case_id=case_id)],
                    "remaining_fen": ledger.remaining_fen(employee_id=case.employee_id)[case_id],
                }

        return await run_in_threadpool(run)

    @app.post("/cases/{case_id}/notices/{notice_id}/service")
    async def serve_notice(case_id: str, notice_id: str, request: Request, actor: str = Depends(client)) -> dict[str, Any]:
        body, too_large = await _bounded_body(request, 64 * 1024)
        if too_large:
            raise HTTPException(status_code=413, detail="a proof of service is at most 64 KiB")
        try:
            proof_json = json.loads(body)
        except ValueError:
            raise HTTPException(status_code=422, detail="the proof of service is not JSON") from None

        def run() -> dict[str, Any]:
            with open_ledger() as ledger:
                if not ledger.filed_by(case_id=case_id, actor=actor):
                    raise HTTPException(status_code=404, detail=f"no case {case_id[:64]!r} filed by this client")
                proof = parse_proof(proof_json, notice_id=notice_id, now=datetime.now(timezone.utc))
                ledger.notice_served(case_id=case_id, notice_id=notice_id, served_on=proof.served_on, actor=actor,
                                     proof=proof.document)
                return {"case_id": case_id, "notice_id": notice_id, "served_on": proof.served_on.isoformat(),
                        "proof": proof.document}

        return await run_in_threadpool(run)

    return app


async def _bounded_body(request: Request, limit: int) -> tuple[bytes, bool]:
    """The body, read no further than ``limit`` + 1 bytes; and whether it was longer."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:4096], True
    return b"".join(chunks), False
