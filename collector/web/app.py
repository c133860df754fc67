"""Builds the FastAPI application from services built elsewhere; keeps no config in globals.

Feature routers are included here; errors common to every view are mapped here: a bad request is
400 with the reason, a store that cannot be reached or written is 503 with a reason (never the
driver's text, which names hosts and ports).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from collector.agreements import pages as agreements_pages
from collector.agreements import views as agreements_views
from collector.alerts import pages as alerts_pages
from collector.alerts import views as alerts_views
from collector.audit import views as audit_views
from collector.cases import pages as cases_pages
from collector.cases import views as cases_views
from collector.detection.service import DetectionStage
from collector.enrollment.service import EnrollmentService
from collector.events import views as events_views
from collector.evidence import views as evidence_views
from collector.fleet import pages as fleet_pages
from collector.fleet import views as fleet_views
from collector.notify import views as notify_views
from collector.people import views as people_views
from collector.people.sso import views as sso_views
from collector.wecom import pages as wecom_pages
from collector.wecom import views as wecom_views
from collector.people.models import User
from collector.people.service import PeopleService
from collector.policy import pages as policy_pages
from collector.policy import views as policy_views
from collector.privacy import views as privacy_views
from collector.privacy import pages as privacy_pages
from collector.storage.base import Store, StoreUnavailable
from collector.web.deps import LoginRequired, Services, require, session_user
from collector.web.security import SecurityMiddleware

__all__ = ["create_app"]

log = logging.getLogger("shoumi.collector.http")

# where each role's work starts
HOME_BY_ROLE: dict[str, str] = {"security_analyst": "/alerts", "auditor": "/alerts", "hr": "/cases", "it_admin": "/users",
                               "employee": "/me/notices"}


def create_app(*, store: Store, people: PeopleService, enrollment: EnrollmentService | None = None,
               counters: Mapping[str, int] | None = None, detection: DetectionStage | None = None,
               open_streams: Callable[[], int] | None = None, spool_depths: Mapping[str, int] | None = None) -> FastAPI:
    """Returns the collector's web app wired to the given store and services.

    ``counters`` (ingest's) are served at /metrics in the Prometheus text format.
    """
    # the API description and /metrics are for it_admin and auditors (service:read), served below
    app = FastAPI(title="Shoumi collector", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityMiddleware)  # CSRF on cookie-authenticated writes, security headers
    app.state.services = Services(store=store, people=people, enrollment=enrollment or EnrollmentService(token_ttl_ns=1))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in exc.errors()
        )
        log.info("bad request %s %s: %s", request.method, request.url.path, reasons)
        return JSONResponse({"detail": reasons}, status_code=400)

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(LoginRequired)
    async def _sign_in_first(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> RedirectResponse:
        """Sends each signed-in person to the page their work starts from."""
        user = session_user(request, app.state.services)
        if user is None:
            return RedirectResponse("/login?next=/", status_code=303)
        return RedirectResponse(HOME_BY_ROLE.get(user.role, "/account"), status_code=303)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """200 while the store can be written, else 503 with the reason."""
        why_not = store.health()
        if why_not is None:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "detail": why_not}, status_code=503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics(_: User = Depends(require("service:read"))) -> str:
        """Ingest, detection and fleet figures for Prometheus; no personal data."""
        lines = ["# HELP shoumi_ingest_total Batches, events and refusals counted by the ingest service.",
                 "# TYPE shoumi_ingest_total counter"]
        for name, value in sorted((counters or {}).items()):
            lines.append(f'shoumi_ingest_total{{what="{name}"}} {value}')
        try:
            with store.read() as tx:
                by_rule = tx.count_alerts()
                lag = tx.detection_lag()
                outbox = tx.count_notifications()
        except StoreUnavailable:
            by_rule, lag, outbox = {}, -1, {}
        lines += ["# HELP shoumi_alerts Alerts stored, by rule.", "# TYPE shoumi_alerts gauge"]
        lines += [f'shoumi_alerts{{rule="{rule}"}} {n}' for rule, n in sorted(by_rule.items())]
        lines += ["# HELP shoumi_detection_lag_events Events stored but not yet run through detection (-1: store away).",
                  "# TYPE shoumi_detection_lag_events gauge", f"shoumi_detection_lag_events {lag}"]
        lines += ["# HELP shoumi_notifications Notification outbox rows, by channel and delivery status.",
                  "# TYPE shoumi_notifications gauge"]
        lines += [f'shoumi_notifications{{channel="{c}",status="{s}"}} {n}' for (c, s), n in sorted(outbox.items())]
        if open_streams is not None:
            lines += ["# HELP shoumi_agent_streams Agent streams open on this collector.",
                      "# TYPE shoumi_agent_streams gauge", f"shoumi_agent_streams {open_streams()}"]
        lines += ["# HELP shoumi_password_checks argon2 sign-in checks: running now, the most at once, refused as busy.",
                  "# TYPE shoumi_password_checks gauge",
                  f'shoumi_password_checks{{what="running"}} {people.checks_running}',
                  f'shoumi_password_checks{{what="peak"}} {people.checks_peak}',
                  f'shoumi_password_checks{{what="slots"}} {people.concurrent_password_checks}',
                  f'shoumi_password_checks{{what="refused_busy"}} {people.checks_refused}']
        depths = dict(spool_depths or {})
        if depths:
            lines += ["# HELP shoumi_agent_spool_events Events waiting in an agent's spool, as it last reported.",
                      "# TYPE shoumi_agent_spool_events gauge"]
            lines += [f'shoumi_agent_spool_events{{agent="{a}"}} {n}' for a, n in sorted(depths.items())]
        return "\n".join(lines) + "\n"

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: User = Depends(require("service:read"))) -> JSONResponse:
        """The API description, for roles that run or audit the service."""
        return JSONResponse(app.openapi())

    @app.get("/api/docs", include_in_schema=False)
    def api_docs(_: User = Depends(require("service:read"))) -> HTMLResponse:
        """Swagger UI over /openapi.json; its own policy lets its CDN script and inline start-up run here only."""
        page = get_swagger_ui_html(openapi_url="/openapi.json", title="Shoumi collector API")
        page.headers["content-security-policy"] = (
            "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
        return page

    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    for feature in (events_views, alerts_views, fleet_views, audit_views, people_views, cases_views, cases_pages):
        app.include_router(feature.router)
    app.include_router(notify_views.router)  # GET /api/v1/notifications
    app.include_router(alerts_pages.router)  # /alerts, /alerts/{id} and their forms
    app.include_router(privacy_views.router)  # POST /api/v1/identities/reveal
    app.include_router(evidence_views.router)  # case evidence bundles and their report (collector/evidence)
    app.include_router(privacy_pages.router)  # /privacy, /api/v1/privacy...: retention, holds, access requests
    app.include_router(policy_views.router)  # /api/v1/policies..., /api/v1/agents/{id}/policy
    app.include_router(policy_pages.router)  # /policies, /policies/{name} and their forms
    app.include_router(agreements_views.router)  # /api/v1/agreements..., /api/v1/me/notices
    app.include_router(agreements_pages.router)  # /agreements..., /me/notices
    app.include_router(fleet_pages.router)  # /fleet, /fleet/agents/{id}, /fleet/tokens
    app.include_router(sso_views.router)  # /sso/...: OpenID Connect, LDAP, WeCom sign-in (collector/people/sso)
    app.include_router(wecom_views.router)  # /api/v1/wecom/..., /wecom/callback (collector/wecom)
    app.include_router(wecom_pages.router)  # /me/wecom-notices/{key}, /wecom/notices
    return app
