"""Builds the FastAPI application from services built elsewhere; keeps no config in globals."""

from __future__ import annotations

import logging
from typing import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from collector.people import PeopleService
from collector.storage.base import Store
from collector.web import api, pages
from collector.web.deps import Services

__all__ = ["create_app"]

log = logging.getLogger("shoumi.collector.http")


def create_app(*, store: Store, people: PeopleService, counters: Mapping[str, int] | None = None) -> FastAPI:
    """Returns the collector's web app wired to the given store and people service.

    ``counters`` (ingest's) are served at /metrics in the Prometheus text format.
    """
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

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        """Ingest counters (stored, duplicate, refused by reason) for Prometheus; no personal data."""
        lines = ["# HELP shoumi_ingest_total Batches, events and refusals counted by the ingest service.",
                 "# TYPE shoumi_ingest_total counter"]
        for name, value in sorted((counters or {}).items()):
            lines.append(f'shoumi_ingest_total{{what="{name}"}} {value}')
        return "\n".join(lines) + "\n"

    app.include_router(api.router)
    app.include_router(pages.router)
    return app
