"""FastAPI dependencies: who is asking, and may they. Views ask for a permission, never a role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fastapi import Depends, HTTPException, Request

from collector.domain.records import User
from collector.domain.roles import allowed
from collector.people import NotAuthenticated, PeopleService
from collector.storage.base import Store

__all__ = ["SESSION_COOKIE", "Services", "services", "current_user", "require"]

SESSION_COOKIE = "shoumi_session"


@dataclass(frozen=True)
class Services:
    """What the views need, built once by create_app."""

    store: Store
    people: PeopleService


def services(request: Request) -> Services:
    """Returns the app's services."""
    found: Services = request.app.state.services
    return found


def current_user(request: Request, svc: Services = Depends(services)) -> User:
    """Identifies the caller by a bearer token, or else by the session cookie."""
    header = request.headers.get("authorization", "")
    try:
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise NotAuthenticated("use Authorization: Bearer TOKEN")
            return svc.people.authenticate(token=token.strip(), kind="api")
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return svc.people.authenticate(token=cookie, kind="session")
    except NotAuthenticated as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})


def require(permission: str) -> Callable[..., User]:
    """Returns a dependency that lets through only users whose role holds the permission."""

    def check(user: User = Depends(current_user)) -> User:
        if not allowed(user.role, permission):
            raise HTTPException(403, f"role {user.role!r} lacks permission {permission!r}")
        return user

    return check
