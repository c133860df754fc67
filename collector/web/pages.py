"""The HTML pages: sign in, and the alert list. Server-rendered with Jinja2, no script needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from collector.domain.roles import allowed
from collector.people import NotAuthenticated
from collector.web.api import alert_json
from collector.web.deps import SESSION_COOKIE, Services, services

__all__ = ["router"]

router = APIRouter()
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
# "2026-11-25T15:02:00.197328215Z" -> "2026-11-25 15:02:00 UTC" for people; the datetime attribute keeps it all
templates.env.filters["readable_time"] = lambda text: f"{text[:10]} {text[11:19]} UTC"


def _session_user(request: Request, svc: Services) -> Any:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        return svc.people.authenticate(token=token, kind="session")
    except NotAuthenticated:
        return None


@router.get("/", response_class=HTMLResponse)
def alerts_page(request: Request, svc: Services = Depends(services)) -> Response:
    """Shows the newest alerts to a signed-in analyst."""
    user = _session_user(request, svc)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    if not allowed(user.role, "alerts:read"):
        raise HTTPException(403, f"role {user.role!r} may not read alerts")
    page = svc.store.list_alerts(cursor=None, limit=200)
    return templates.TemplateResponse(
        request, "alerts.html", {"user": user, "alerts": [alert_json(a) for a in page.items]}
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    """Shows the sign-in form."""
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    username: str = Form(..., max_length=128),
    password: str = Form(..., max_length=1024),
    svc: Services = Depends(services),
) -> Response:
    """Signs a user in with a password and sets the session cookie."""
    peer = request.client.host if request.client else "unknown"
    try:
        token = svc.people.login(username=username, password=password, peer=peer)
    except NotAuthenticated as exc:
        return templates.TemplateResponse(request, "login.html", {"error": str(exc)}, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="strict",
        secure=request.url.scheme == "https", max_age=int(svc.people.session_ttl_ns // 1_000_000_000),
    )
    return response


@router.post("/logout")
def logout(request: Request, svc: Services = Depends(services)) -> Response:
    """Ends the session."""
    user = _session_user(request, svc)
    token = request.cookies.get(SESSION_COOKIE)
    if user is not None and token:
        svc.people.logout(token=token, username=user.username)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
