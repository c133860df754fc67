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


def current_user(request: Request, svc: Services = Depends(services)) -> User:
    """Identifies the caller by a bearer token, or else by the session cookie."""
    header = request.headers.get("authorization", "")
    try:
        with svc.store.read() as tx:
            if header:
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise NotAuthenticated("use Authorization: Bearer TOKEN")
                return svc.people.authenticate(tx=tx, token=token.strip(), kind="api")
            cookie = request.cookies.get(SESSION_COOKIE)
            if cookie:
                return svc.people.authenticate(tx=tx, token=cookie, kind="session")
    except NotAuthenticated as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})


def session_user(request: Request, svc: Services) -> User | None:
    """The signed-in user of a page request, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        with svc.store.read() as tx:
            return svc.people.authenticate(tx=tx, token=token, kind="session")
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
