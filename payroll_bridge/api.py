"""The bridge's HTTP intake (FastAPI): views only authorize, call the ledger and shape the response.

    POST /cases            CASE.json as the body -> 201 accepted, 200 already filed, 422 refused
                           (the refusal is recorded with its reasons either way)
    GET  /cases/{case_id}  the case, its lines and its balance
    GET  /healthz          liveness

When ``intake_token`` is set, every call but /healthz needs ``Authorization: Bearer <token>``.
``X-Shoumi-Actor`` names who submits (recorded in the audit; default "intake-api").
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from payroll_bridge.errors import PayrollError
from payroll_bridge.ledger import Ledger
from payroll_bridge.minimum_wage import MinimumWageTable, load_table
from payroll_bridge.settings import PayrollSettings

__all__ = ["create_app"]


def create_app(settings: PayrollSettings, *, table: MinimumWageTable | None = None) -> FastAPI:
    """Builds the app for one settings object; no configuration lives in module globals."""
    table = table or load_table(settings.minimum_wage_table)
    app = FastAPI(title="Shoumi payroll bridge", version="1")

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        if settings.intake_token is None:
            return
        expected = f"Bearer {settings.intake_token.get_secret_value()}"
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected.encode()):
            raise HTTPException(status_code=401, detail="a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})

    def open_ledger() -> Ledger:
        return Ledger(settings.resolved_ledger_path(), table=table)

    @app.exception_handler(PayrollError)
    async def payroll_error(_: Request, exc: PayrollError) -> JSONResponse:
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=exc.http_status)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/cases", dependencies=[Depends(authorized)])
    async def intake(request: Request,
                     x_shoumi_actor: Annotated[str, Header()] = "intake-api") -> JSONResponse:
        body = await request.body()

        def run() -> dict[str, Any]:
            with open_ledger() as ledger:
                return ledger.intake(payload=body, actor=x_shoumi_actor).to_json()

        outcome = await run_in_threadpool(run)
        status = 422 if outcome["status"] == "refused" else 200 if outcome["duplicate"] else 201
        return JSONResponse(outcome, status_code=status)

    @app.get("/cases/{case_id}", dependencies=[Depends(authorized)])
    async def get_case(case_id: str) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            with open_ledger() as ledger:
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

    return app
