"""Signing in and out of the UI."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from collector.people.service import NotAuthenticated
from collector.web.deps import SESSION_COOKIE, Services, services, session_user
from collector.web.templating import render

__all__ = ["router"]

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    """Shows the sign-in form."""
    return render(request, "login.html", {"error": None}, user=None)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    username: str = Form(..., max_length=128),
    password: str = Form(..., max_length=1024),
    svc: Services = Depends(services),
) -> Response:
    """Signs a user in with a password and sets the session cookie."""
    peer = request.client.host if request.client else "unknown"
    with svc.store.transaction() as tx:
        try:
            token = svc.people.login(tx=tx, username=username, password=password, peer=peer)
        except NotAuthenticated as exc:
            error = str(exc)  # the failed attempt's audit row commits with this transaction
            token = None
    if token is None:
        return render(request, "login.html", {"error": error}, user=None, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        max_age=int(svc.people.session_ttl_ns // 1_000_000_000))
    return response


@router.post("/logout")
def logout(request: Request, svc: Services = Depends(services)) -> Response:
    """Ends the session."""
    user = session_user(request, svc)
    token = request.cookies.get(SESSION_COOKIE)
    if user is not None and token:
        with svc.store.transaction() as tx:
            svc.people.logout(tx=tx, token=token, username=user.username)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
