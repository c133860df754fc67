"""Signing in and out, the language switch; the account pages and API are included from pages.py and api.py.

The session cookie is HttpOnly, ``SameSite=Lax`` and ``Secure`` over TLS. Lax rather than Strict:
notifications (WeCom, email) link into the collector, and under Strict a signed-in person who
follows such a link arrives without the cookie and is sent to the sign-in page. Lax sends the
cookie only on top-level GET navigations, which change nothing here; every write is held by the
CSRF token and the Origin checks (collector/web/security.py), so Strict would buy nothing more.
A new session is made at every sign-in (the one the browser sent is revoked) and revoked at
sign-out; it ends after ``session_hours`` or after ``session_idle_ns`` unused, whichever is first.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from collector.people import api, pages
from collector.people.http import local_path, peer_of
from collector.people.models import LANGS
from collector.people.service import Busy, NotAuthenticated, Throttled
from collector.people.sso.views import local_login_refused, login_context, note_break_glass
from collector.web.deps import SESSION_COOKIE, Services, services, session_user
from collector.web.i18n import LANG_COOKIE
from collector.web.security import LOGIN_CSRF_COOKIE
from collector.web.templating import render

__all__ = ["router"]

router = APIRouter()
router.include_router(pages.router)
router.include_router(api.router)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    """Shows the sign-in form."""
    return render(request, "login.html", {"error": None, "next": local_path(next), **login_context(request)}, user=None)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    username: str = Form(..., max_length=128),
    password: str = Form(..., max_length=1024),
    next: str = Form("/", max_length=2048),
    svc: Services = Depends(services),
) -> Response:
    """Signs a user in with a password and sets a new session cookie."""
    ctx = {"next": local_path(next), "username": username, **login_context(request)}
    if (off := local_login_refused(request, svc, username, ctx)) is not None:  # sso.local_login false
        return off
    try:
        signed = svc.people.sign_in(store=svc.store, username=username, password=password, peer=peer_of(request),
                                    old_session=request.cookies.get(SESSION_COOKIE))
    except Throttled as exc:
        page = render(request, "login.html", {**ctx, "error": "throttled", "minutes": exc.minutes}, user=None,
                      status_code=429)
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    except Busy:
        page = render(request, "login.html", {**ctx, "error": "busy"}, user=None, status_code=503)
        page.headers["Retry-After"] = "2"
        return page
    except NotAuthenticated:
        return render(request, "login.html", {**ctx, "error": "wrong"}, user=None, status_code=401)
    note_break_glass(request, svc, signed.user)
    response = RedirectResponse(local_path(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, signed.token, httponly=True, samesite="lax", secure=_secure(request),
                        path="/", max_age=int(svc.people.session_ttl_ns // 1_000_000_000))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, svc: Services = Depends(services)) -> Response:
    """Ends the session, on the server too."""
    user = session_user(request, svc)
    token = request.cookies.get(SESSION_COOKIE)
    if user is not None and token:
        with svc.store.transaction() as tx:
            svc.people.logout(tx=tx, token=token, username=user.username)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/preferences/lang")
def set_lang(
    request: Request,
    lang: str = Form(..., max_length=8),
    next: str = Form("/", max_length=2048),
    svc: Services = Depends(services),
) -> Response:
    """Switches the language: kept on the account when signed in, in a cookie for anyone."""
    if lang not in LANGS:
        raise HTTPException(400, f"unknown language {lang!r}; languages are {', '.join(LANGS)}")
    user = session_user(request, svc)
    if user is not None:
        with svc.store.transaction() as tx:
            svc.people.set_lang(tx=tx, username=user.username, lang=lang)
    response = RedirectResponse(local_path(next), status_code=303)
    response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="lax",
                        secure=_secure(request), path="/")
    return response
