"""What the people views share: the caller's address, safe redirect targets, service errors as HTTP answers."""

from __future__ import annotations

from fastapi import HTTPException, Request

from collector.people.service import Busy, NotAuthenticated, NotFound, PeopleError, Throttled

__all__ = ["peer_of", "local_path", "http_error"]


def peer_of(request: Request) -> str:
    """The caller's address, as the throttle counts it."""
    return request.client.host if request.client else "unknown"


def local_path(text: str | None) -> str:
    """``text`` if it is a path on this site, else "/": never a redirect to another site."""
    if not text or not text.startswith("/") or text.startswith("//") or "\\" in text or any(c < " " for c in text):
        return "/"
    return text[:2048]


def http_error(exc: PeopleError) -> HTTPException:
    """The HTTP answer to an error of the people service."""
    if isinstance(exc, Throttled):
        return HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, Busy):
        return HTTPException(503, str(exc), headers={"Retry-After": "2"})
    if isinstance(exc, NotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, NotAuthenticated):
        return HTTPException(403, str(exc))
    return HTTPException(400, str(exc))
