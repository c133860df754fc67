"""Builds the FastAPI application from services built elsewhere; keeps no config in globals."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from collector.people import PeopleService
from collector.storage.base import Store
from collector.web import api, pages
from collector.web.deps import Services

__all__ = ["create_app"]

log = logging.getLogger("shoumi.collector.http")


def create_app(*, store: Store, people: PeopleService) -> FastAPI:
    """Returns the collector's web app wired to the given store and people service."""
    app = FastAPI(title="Shoumi collector", version="1", docs_url="/api/docs", redoc_url=None)
    app.state.services = Services(store=store, people=people)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in exc.errors()
        )
        log.info("bad request %s %s: %s", request.method, request.url.path, reasons)
        return JSONResponse({"detail": reasons}, status_code=400)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Answers 200 while the process serves."""
        return {"status": "ok"}

    app.include_router(api.router)
    app.include_router(pages.router)
    return app
