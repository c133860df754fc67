"""The account pages: /account (one's own password, language and API tokens), /users (it_admin's accounts page).

Plain forms that post and redirect (303) with a fixed notice; an error re-renders the page with
the reason (400). A new API token's secret is shown once, on the page the creating post answers with.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from collector.domain.roles import ROLES
from collector.people.api import token_out, user_out
from collector.people.http import peer_of
from collector.people.models import User
from collector.people.service import MAX_TOKEN_DAYS, PeopleError
from collector.web.deps import SESSION_COOKIE, Services, require_page, services
from collector.web.templating import render

__all__ = ["router"]

router = APIRouter()
_NAME = Path(..., max_length=128)
_TOKEN_ID = Path(..., min_length=16, max_length=16, pattern="^[0-9a-f]{16}$")
# the notices a redirect may name: fixed texts, never what the query says
_NOTICES = {"password": "Your password was changed; your other sessions were ended.",
            "revoked": "The token was revoked.", "created": "The user was created.",
            "disabled": "The user was disabled; their sessions and tokens stopped working.",
            "enabled": "The user was enabled.", "role": "The role was set.", "reset": "The password was reset; the user's sessions were ended."}


def _account_page(request: Request, svc: Services, user: User, *, status: int = 200,
                  **extra: Any) -> HTMLResponse:
    with svc.store.read() as tx:
        rows = svc.people.list_api_tokens(tx=tx, username=user.username)
    now = svc.people.clock()
    tokens = [token_out(t, now) for t in rows]
    notice = _NOTICES.get(request.query_params.get("done", ""))
    return render(request, "account.html", {"tokens": tokens, "notice": notice,
                                            "max_days": MAX_TOKEN_DAYS, "new_token": None, "error": None, **extra},
                  user=user, status_code=status)


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, user: User = Depends(require_page("account:self")),
            svc: Services = Depends(services)) -> Response:
    """One's own account: password, language, API tokens."""
    return _account_page(request, svc, user)


@router.post("/account/password", response_class=HTMLResponse)
def account_password(request: Request, current_password: str = Form(..., max_length=1024),
                     new_password: str = Form(..., max_length=1024), repeat_password: str = Form(..., max_length=1024),
                     user: User = Depends(require_page("account:self")), svc: Services = Depends(services)) -> Response:
    """Changes one's own password."""
    if new_password != repeat_password:
        return _account_page(request, svc, user, status=400, error="The two new passwords differ.")
    try:
        svc.people.change_password(store=svc.store, username=user.username, current=current_password, new=new_password,
                                   peer=peer_of(request), keep_session=request.cookies.get(SESSION_COOKIE))
    except PeopleError as exc:
        return _account_page(request, svc, user, status=400, error=str(exc))
    return RedirectResponse("/account?done=password", status_code=303)


@router.post("/account/tokens", response_class=HTMLResponse)
def account_token(request: Request, name: str = Form("", max_length=100), days: int = Form(90),
                  user: User = Depends(require_page("account:self")), svc: Services = Depends(services)) -> Response:
    """Creates an API token for oneself and shows its secret this once."""
    try:
        with svc.store.transaction() as tx:
            secret, _ = svc.people.issue_api_token(tx=tx, username=user.username, actor=user.username, name=name,
                                                   days=days)
    except PeopleError as exc:
        return _account_page(request, svc, user, status=400, error=str(exc))
    return _account_page(request, svc, user, new_token=secret)


@router.post("/account/tokens/{token_id}/revoke")
def account_token_revoke(token_id: str = _TOKEN_ID, user: User = Depends(require_page("account:self")),
                         svc: Services = Depends(services)) -> Response:
    """Revokes one of one's own API tokens."""
    try:
        with svc.store.transaction() as tx:
            svc.people.revoke_api_token(tx=tx, username=user.username, token_id=token_id, actor=user.username)
    except PeopleError:
        pass  # already gone: the list shows what there is
    return RedirectResponse("/account?done=revoked", status_code=303)


def _users_page(request: Request, svc: Services, user: User, *, status: int = 200, error: str | None = None) -> HTMLResponse:
    with svc.store.read() as tx:
        users = [user_out(u) for u in tx.list_users()]
    notice = _NOTICES.get(request.query_params.get("done", ""))
    return render(request, "users.html", {"users": users, "roles": sorted(ROLES), "notice": notice, "error": error},
                  user=user, status_code=status)


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, user: User = Depends(require_page("users:admin")),
               svc: Services = Depends(services)) -> Response:
    """The accounts page: every user, create, disable or enable, reset a password."""
    return _users_page(request, svc, user)


@router.post("/users", response_class=HTMLResponse)
def users_create(request: Request, username: str = Form(..., max_length=128), role: str = Form(..., max_length=32),
                 password: str = Form("", max_length=1024), lang: str = Form("zh", max_length=8),
                 user: User = Depends(require_page("users:admin")), svc: Services = Depends(services)) -> Response:
    """Creates a user (without a password: API tokens only)."""
    try:
        with svc.store.transaction() as tx:
            svc.people.create_user(tx=tx, username=username.strip(), role=role, password=password or None,
                                   actor=user.username, lang=lang)
    except PeopleError as exc:
        return _users_page(request, svc, user, status=400, error=str(exc))
    return RedirectResponse("/users?done=created", status_code=303)


@router.post("/users/{username}/disable", response_class=HTMLResponse)
def users_disable(request: Request, username: str = _NAME, user: User = Depends(require_page("users:admin")),
                  svc: Services = Depends(services)) -> Response:
    """Disables a user."""
    return _set_disabled(request, svc, user, username, True)


@router.post("/users/{username}/enable", response_class=HTMLResponse)
def users_enable(request: Request, username: str = _NAME, user: User = Depends(require_page("users:admin")),
                 svc: Services = Depends(services)) -> Response:
    """Enables a user again."""
    return _set_disabled(request, svc, user, username, False)


def _set_disabled(request: Request, svc: Services, user: User, username: str, disabled: bool) -> Response:
    try:
        with svc.store.transaction() as tx:
            svc.people.set_disabled(tx=tx, username=username, disabled=disabled, actor=user.username)
    except PeopleError as exc:
        return _users_page(request, svc, user, status=400, error=str(exc))
    return RedirectResponse(f"/users?done={'disabled' if disabled else 'enabled'}", status_code=303)


@router.post("/users/{username}/password", response_class=HTMLResponse)
def users_password(request: Request, username: str = _NAME, password: str = Form(..., max_length=1024),
                   user: User = Depends(require_page("users:admin")), svc: Services = Depends(services)) -> Response:
    """Resets a user's password."""
    try:
        with svc.store.transaction() as tx:
            svc.people.reset_password(tx=tx, username=username, password=password, actor=user.username)
    except PeopleError as exc:
        return _users_page(request, svc, user, status=400, error=str(exc))
    return RedirectResponse("/users?done=reset", status_code=303)
