"""The sign-in routes of the providers, and granting a role in the collector.

``GET /sso/{oidc,wecom}/start`` stores a pending sign-in (state, nonce, PKCE verifier; used once),
puts the state in a cookie of this browser (``shoumi_sso_state``, HttpOnly, SameSite=Lax so that it
comes back with the provider's top-level redirect) and sends the browser to the provider.
``GET /sso/{oidc,wecom}/callback`` must bring the same state as the cookie and as a pending
sign-in not yet used; then the provider's answer is checked (collector/people/sso/oidc.py,
wecom_login.py) and the collector's usual session cookie is set. ``POST /sso/ldap/login`` is the
sign-in form's LDAP variant, under the password throttle (collector/people/throttle.py), with the
login CSRF token like /login. Every refusal is audited (``login.refused``, with the reason) and
answered with the sign-in page saying what to do; nobody is signed in.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from collector.audit.models import AuditEntry
from collector.people.api import UserOut, user_out
from collector.people.http import http_error, local_path, peer_of
from collector.people.models import User
from collector.people.service import PeopleError, SignIn, Throttled
from collector.people.sso import NoRole, ProviderUnavailable, SignInRefused
from collector.people.sso.service import (
    PENDING_TTL_NS, SsoConfig, audit_refusal, complete_sign_in, grant_role, role_for, start_pending, take_pending,
)
from collector.domain.roles import ROLES
from collector.web.deps import SESSION_COOKIE, Services, require, require_page, services
from collector.web.security import LOGIN_CSRF_COOKIE
from collector.web.templating import render

__all__ = ["router", "sso_config", "login_context", "local_login_refused", "note_break_glass", "STATE_COOKIE"]

router = APIRouter()
STATE_COOKIE = "shoumi_sso_state"


def sso_config(request: Request) -> SsoConfig:
    """The app's single sign-on configuration (none configured: local accounts only)."""
    found = getattr(request.app.state, "sso", None)
    return found if isinstance(found, SsoConfig) else SsoConfig()


def login_context(request: Request) -> dict[str, Any]:
    """What the sign-in page shows of the providers: their buttons, the LDAP choice, whether passwords are off."""
    cfg = sso_config(request)
    return {"sso_buttons": [(f"{href}?next={local_path(request.query_params.get('next'))}", label)
                            for href, label in cfg.buttons()],
            "ldap_label": cfg.ldap.label if cfg.ldap is not None else None,
            "local_login": cfg.settings.local_login}


def _page(request: Request, error: str, status: int, **extra: Any) -> Response:
    ctx = {"error": error, "next": "/", **login_context(request), **extra}
    page = render(request, "login.html", ctx, user=None, status_code=status)
    page.delete_cookie(STATE_COOKIE, path="/sso/")
    return page


def _redirect_uri(request: Request, cfg: SsoConfig, provider: str) -> str:
    base = cfg.settings.redirect_base_url or str(request.base_url)
    return f"{base.rstrip('/')}/sso/{provider}/callback"


def _signed_in(request: Request, cfg: SsoConfig, signed: SignIn, next_path: str) -> Response:
    response = RedirectResponse(local_path(next_path), status_code=303)
    response.set_cookie(SESSION_COOKIE, signed.token, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/", max_age=int(cfg.session_ns // 10**9))
    response.delete_cookie(STATE_COOKIE, path="/sso/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


def _refused(request: Request, svc: Services, provider: str, exc: SignInRefused | ProviderUnavailable) -> Response:
    """Audits a refusal (unless complete_sign_in did, with the user) and answers with the sign-in page."""
    now = svc.people.clock()
    if isinstance(exc, ProviderUnavailable):
        audit_refusal(store=svc.store, provider=provider, reason=f"provider unavailable: {exc.reason}",
                      peer=peer_of(request), now_ns=now)
        page = _page(request, "sso_down", 503, provider_reason=exc.reason)
        page.headers["Retry-After"] = "30"
        return page
    if exc.username is None:
        audit_refusal(store=svc.store, provider=provider, reason=exc.reason, peer=peer_of(request), now_ns=now)
    if isinstance(exc, NoRole):
        return _page(request, "no_role", 403, sso_username=exc.username)
    return _page(request, "sso_refused", 403)


def _start(request: Request, svc: Services, provider: str, next_path: str, make_url: Any) -> Response:
    state, pending = start_pending(store=svc.store, provider=provider, next_path=local_path(next_path),
                                   now_ns=svc.people.clock())
    try:
        url = make_url(state, pending)
    except ProviderUnavailable as exc:
        return _refused(request, svc, provider, exc)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(STATE_COOKIE, state, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                        path="/sso/", max_age=int(PENDING_TTL_NS // 10**9))
    return response


# --- OpenID Connect ---------------------------------------------------------------------------------------
@router.get("/sso/oidc/start", include_in_schema=False)
def oidc_start(request: Request, next: str = Query("/", max_length=2048), svc: Services = Depends(services)) -> Response:
    """Sends the browser to the OpenID Connect provider."""
    cfg = sso_config(request)
    oidc = cfg.oidc
    if oidc is None:
        raise HTTPException(404, "no OpenID Connect provider is configured")
    return _start(request, svc, "oidc", next, lambda state, p: oidc.authorization_url(
        redirect_uri=_redirect_uri(request, cfg, "oidc"), state=state, nonce=p.nonce, verifier=p.verifier))


@router.get("/sso/oidc/callback", include_in_schema=False)
def oidc_callback(request: Request, code: str = Query("", max_length=4096), state: str = Query("", max_length=256),
                  error: str = Query("", max_length=200), svc: Services = Depends(services)) -> Response:
    """The provider's answer: checks state, exchanges the code, verifies the ID token, signs in."""
    cfg = sso_config(request)
    if cfg.oidc is None:
        raise HTTPException(404, "no OpenID Connect provider is configured")
    try:
        pending = take_pending(store=svc.store, provider="oidc", state=state,
                               cookie_state=request.cookies.get(STATE_COOKIE), now_ns=svc.people.clock())
        if error:
            raise SignInRefused(f"the provider answered error={error[:100]}")
        if not code:
            raise SignInRefused("callback without a code")
        who = cfg.oidc.sign_in(code=code, verifier=pending.verifier, nonce=pending.nonce,
                               redirect_uri=_redirect_uri(request, cfg, "oidc"))
        signed = complete_sign_in(store=svc.store, people=svc.people, provider="oidc", subject=who.subject,
                                  name_hint=who.name, role=role_for(who.groups, cfg.oidc.cfg.role_map),
                                  peer=peer_of(request), session_ns=cfg.session_ns,
                                  old_session=request.cookies.get(SESSION_COOKIE))
    except (SignInRefused, ProviderUnavailable) as exc:
        return _refused(request, svc, "oidc", exc)
    return _signed_in(request, cfg, signed, pending.next_path)


# --- WeCom ------------------------------------------------------------------------------------------------
@router.get("/sso/wecom/start", include_in_schema=False)
def wecom_start(request: Request, next: str = Query("/", max_length=2048), svc: Services = Depends(services)) -> Response:
    """Sends the browser to WeCom's sign-in (QR code, or inside WeCom its OAuth page)."""
    cfg = sso_config(request)
    wecom = cfg.wecom
    if wecom is None:
        raise HTTPException(404, "WeCom sign-in is not configured")
    return _start(request, svc, "wecom", next, lambda state, _: wecom.authorization_url(
        redirect_uri=_redirect_uri(request, cfg, "wecom"), state=state))


@router.get("/sso/wecom/callback", include_in_schema=False)
def wecom_callback(request: Request, code: str = Query("", max_length=512), state: str = Query("", max_length=256),
                   svc: Services = Depends(services)) -> Response:
    """WeCom's answer: checks state, asks WeCom whose code it is, signs the member in."""
    cfg = sso_config(request)
    if cfg.wecom is None:
        raise HTTPException(404, "WeCom sign-in is not configured")
    try:
        pending = take_pending(store=svc.store, provider="wecom", state=state,
                               cookie_state=request.cookies.get(STATE_COOKIE), now_ns=svc.people.clock())
        userid = cfg.wecom.userid(code)
        signed = complete_sign_in(store=svc.store, people=svc.people, provider="wecom", subject=userid,
                                  name_hint=userid, role=None, peer=peer_of(request), session_ns=cfg.session_ns,
                                  old_session=request.cookies.get(SESSION_COOKIE))
    except (SignInRefused, ProviderUnavailable) as exc:
        return _refused(request, svc, "wecom", exc)
    return _signed_in(request, cfg, signed, pending.next_path)


# --- LDAP -------------------------------------------------------------------------------------------------
@router.post("/sso/ldap/login", response_class=HTMLResponse)
def ldap_login(request: Request, username: str = Form(..., max_length=256), password: str = Form("", max_length=1024),
               next: str = Form("/", max_length=2048), svc: Services = Depends(services)) -> Response:
    """Signs in with a directory password (bind as the user), under the sign-in throttle."""
    cfg = sso_config(request)
    if cfg.ldap is None:
        raise HTTPException(404, "no LDAP directory is configured")
    people, peer = svc.people, peer_of(request)
    key = people._key(svc.store)  # the password throttle of the people service: one count for both forms
    try:
        with svc.store.read() as tx:
            people._refuse_if_locked(tx, key, f"ldap:{username}", peer)
        who = cfg.ldap.authenticate(username, password)
    except Throttled as exc:
        page = _page(request, "throttled", 429, minutes=exc.minutes)
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    except SignInRefused as exc:
        with svc.store.transaction() as wtx:
            people._count_failure(wtx, key, f"ldap:{username}", peer, action="login.failed")
            wtx.append_audit(AuditEntry(people.clock(), f"peer:{peer[:64]}", "login.refused", "ldap sign-in",
                                        {"provider": "ldap", "reason": exc.reason, "peer": peer[:64]}))
        return _page(request, "wrong", 401, username=username[:128])
    except ProviderUnavailable as exc:
        return _refused(request, svc, "ldap", exc)
    try:
        signed = complete_sign_in(store=svc.store, people=people, provider="ldap", subject=who.dn.lower(),
                                  name_hint=who.name, role=role_for(who.groups, cfg.ldap.cfg.role_map), peer=peer,
                                  session_ns=cfg.session_ns, old_session=request.cookies.get(SESSION_COOKIE))
    except SignInRefused as exc:
        return _refused(request, svc, "ldap", exc)
    return _signed_in(request, cfg, signed, next)


# --- the local password form, when passwords are turned off ------------------------------------------------
def local_login_refused(request: Request, svc: Services, username: str, ctx: dict[str, Any]) -> Response | None:
    """The answer to a password sign-in while local accounts are off (audited), or None when it may go on."""
    cfg = sso_config(request)
    if cfg.local_allowed(username):
        return None
    peer = peer_of(request)
    with svc.store.transaction() as tx:
        known = tx.get_user(username) if 0 < len(username) <= 128 and username.isprintable() else None
        tx.append_audit(AuditEntry(svc.people.clock(), f"peer:{peer[:64]}", "login.refused",
                                   known.username if known else "unknown user",
                                   {"provider": "local", "reason": "local sign-in is turned off", "peer": peer[:64]}))
    return render(request, "login.html", {**ctx, "error": "local_off"}, user=None, status_code=403)


def note_break_glass(request: Request, svc: Services, user: User) -> None:
    """Audits a password sign-in that only the break-glass list let through."""
    if sso_config(request).settings.local_login:
        return
    with svc.store.transaction() as tx:
        tx.append_audit(AuditEntry(svc.people.clock(), user.username, "login.break_glass", user.username,
                                   {"peer": peer_of(request)[:64]}))


# --- roles granted in the collector ----------------------------------------------------------------------
@router.post("/users/{username}/role", response_class=HTMLResponse)
def set_role_page(request: Request, username: str = Path(..., max_length=128), role: str = Form(..., max_length=32),
                  who: User = Depends(require_page("users:admin")), svc: Services = Depends(services)) -> Response:
    """Sets a user's role from the accounts page."""
    try:
        with svc.store.transaction() as tx:
            grant_role(tx=tx, username=username, role=role, actor=who.username, clock=svc.people.clock)
    except PeopleError as exc:
        return render(request, "users.html", {"users": _users(svc), "roles": sorted(ROLES), "notice": None,
                                              "error": str(exc)}, user=who, status_code=400)
    return RedirectResponse("/users?done=role", status_code=303)


def _users(svc: Services) -> list[UserOut]:
    with svc.store.read() as tx:
        return [user_out(u) for u in tx.list_users()]


class RoleGrant(BaseModel):
    """The role to give."""

    role: str = Field(..., max_length=32)


@router.post("/api/v1/users/{username}/role", response_model=UserOut)
def set_role(body: RoleGrant, username: str = Path(..., max_length=128), who: User = Depends(require("users:admin")),
             svc: Services = Depends(services)) -> UserOut:
    """Grants a user a role (for people a provider signed in whose groups say none)."""
    try:
        with svc.store.transaction() as tx:
            user = grant_role(tx=tx, username=username, role=body.role, actor=who.username, clock=svc.people.clock)
    except PeopleError as exc:
        raise http_error(exc) from exc
    return user_out(user)
