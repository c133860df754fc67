"""FastAPI dependencies: who is asking, and may they. Views ask for a permission, never a role.

A view is one unit of work: it opens ``svc.store.transaction()`` (or ``read()``), calls the
feature's service inside it, and the action and its audit row commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from fastapi import Depends, HTTPException, Request

from collector.domain.roles import allowed
from collector.enrollment.service import EnrollmentService
from collector.people.models import User
from collector.people.service import NotAuthenticated, PeopleService
from collector.storage.base import Store

__all__ = ["SESSION_COOKIE", "Services", "services", "current_user", "session_user", "require", "require_page",
           "LoginRequired", "cursor_value"]

SESSION_COOKIE = "shoumi_session"


@dataclass(frozen=True)
class Services:
    """What the views need, built once by create_app."""

    store: Store
    people: PeopleService
    enrollment: EnrollmentService


def services(request: Request) -> Services:
    """Returns the app's services."""
    found: Services = request.app.state.services
    return found


def _identify(request: Request, svc: Services, *, cookie_only: bool) -> User | None:
    """The user a bearer token (unless ``cookie_only``) or the session cookie names; None without either.

    A token's last use is written at most once a minute, in a short transaction of its own, so a
    session stays alive while it is used and idles out (PeopleService.session_idle_ns) when not.
    """
    header = "" if cookie_only else request.headers.get("authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise NotAuthenticated("use Authorization: Bearer TOKEN")
        secret, kind = secret.strip(), "api"
    else:
        secret, kind = request.cookies.get(SESSION_COOKIE, ""), "session"
        if not secret:
            return None
    with svc.store.read() as tx:
        user, row = svc.people.authenticate_token(tx=tx, token=secret, kind=kind)
    if svc.people.touch_due(row):
        with svc.store.transaction() as wtx:
            svc.people.touch(tx=wtx, row=row)
    request.state.user = user
    return user


def current_user(request: Request, svc: Services = Depends(services)) -> User:
    """Identifies the caller by a bearer token, or else by the session cookie."""
    try:
        user = _identify(request, svc, cookie_only=False)
    except NotAuthenticated as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    if user is None:
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
    return user


def session_user(request: Request, svc: Services) -> User | None:
    """The signed-in user of a page request, or None."""
    try:
        return _identify(request, svc, cookie_only=True)
    except NotAuthenticated:
        return None


def require(permission: str) -> Callable[..., User]:
    """Returns a dependency that lets through only users whose role holds the permission."""

    def check(user: User = Depends(current_user)) -> User:
        if not allowed(user.role, permission):
            raise HTTPException(403, f"role {user.role!r} lacks permission {permission!r}")
        return user

    check.permission = permission  # type: ignore[attr-defined]  # read by the role-matrix test
    return check


class LoginRequired(Exception):
    """A page was asked for without a session: the app answers with a redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def require_page(permission: str) -> Callable[..., User]:
    """Like ``require``, for pages: no session redirects to /login (and back after), a wrong role is 403."""

    def check(request: Request, svc: Services = Depends(services)) -> User:
        user = session_user(request, svc)
        if user is None:
            raise LoginRequired(request.url.path)
        if not allowed(user.role, permission):
            raise HTTPException(403, f"role {user.role!r} lacks permission {permission!r}")
        return user

    check.permission = permission  # type: ignore[attr-defined]
    check.page = True  # type: ignore[attr-defined]
    return check


def cursor_value(text: str | None) -> int | None:
    """Reads a page cursor; 400 for anything but one we handed out."""
    if text is None or text == "":
        return None
    # str.isdigit also takes '¹' and other digits int() refuses: ASCII digits only
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**63:
        raise HTTPException(400, f"invalid cursor {text!r}: pass back next_cursor unchanged")
    return int(text)


def page_json(items: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    """The shape of every list the API returns."""
    return {"items": items, "next_cursor": next_cursor}
