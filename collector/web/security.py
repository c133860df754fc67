"""Web security at the edge: CSRF checks on cookie-authenticated writes, security headers on every response.

One pure ASGI middleware (``SecurityMiddleware``), installed by ``create_app``. It never looks a
session up in the store: what it checks is derived from the cookie alone, so it costs no query.

CSRF, theory of operation
-------------------------
A state-changing request (POST, PUT, PATCH, DELETE) that is not authenticated by a bearer token
(``Authorization: Bearer ...``, which no browser sends on its own) must show it comes from our pages:

1. **Where from.** ``Sec-Fetch-Site`` other than ``same-origin``/``none`` is refused, and so is an
   ``Origin`` whose host is not the request's ``Host`` (``null`` included). Old browsers send
   neither; the token below still holds them.
2. **The token.** With a session cookie, the token is ``HMAC-SHA256(key=session token,
   "shoumi-csrf-v1")``: only a page served to that session knows it (the cookie is HttpOnly), every
   collector on the database derives the same value, and a leaked token does not reveal the session.
   Without a session (the sign-in form, the language switch) it is a random value in the
   ``shoumi_login_csrf`` cookie that the form repeats (double submit), against login CSRF. Scripts
   send it as the ``X-CSRF-Token`` header; forms as the hidden field ``csrf_token``.
3. **Forms keep their body.** To read the field, the body is spooled (memory up to 1 MiB, then a
   temporary file), parsed, and replayed to the route unchanged, so the route's ``Form``/``File``
   parameters read it as if nothing happened; a 10 MB attachment costs disk, not memory.

A request with a bearer token is authenticated by that token alone: the middleware drops its
cookies, so no route can fall back on a session the browser happened to send with it.
Anonymous writes outside the pre-session paths pass untouched: they carry no ambient authority and
the route answers 401. A refusal is 403 with the reason. The token every page needs is put on
``request.state.csrf_token`` for ``render()``.

Headers: a strict Content-Security-Policy (no inline script or style anywhere), frame denial,
nosniff, ``Referrer-Policy: same-origin``, HSTS over TLS, and ``Cache-Control: no-store`` on all
but static files. This module must never weaken a header a route set on purpose (the API docs page
sets its own policy).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from tempfile import SpooledTemporaryFile
from typing import Any, AsyncGenerator, Awaitable, Callable, MutableMapping
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import cookie_parser

__all__ = ["SecurityMiddleware", "session_csrf_token", "CSRF_FIELD", "CSRF_HEADER", "LOGIN_CSRF_COOKIE",
           "PRE_SESSION_PATHS", "CONTENT_SECURITY_POLICY"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOGIN_CSRF_COOKIE = "shoumi_login_csrf"
SESSION_COOKIE = "shoumi_session"  # the same name as collector.web.deps.SESSION_COOKIE
# writes without a session that still need the double-submit token: signing in, the language switch
PRE_SESSION_PATHS = frozenset({"/login", "/preferences/lang", "/sso/ldap/login"})
CONTENT_SECURITY_POLICY = ("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
                           "object-src 'none'")
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_SPOOL_IN_MEMORY = 1 << 20
_MAX_URLENCODED = 1 << 20  # a urlencoded form is parsed in memory; files come as multipart
_CHUNK = 64 * 1024


def session_csrf_token(session_token: str) -> str:
    """The CSRF token of a session: keyed by the session token itself, so every collector agrees."""
    return hmac.new(session_token.encode("utf-8"), b"shoumi-csrf-v1", hashlib.sha256).hexdigest()


def _cookies(headers: Headers) -> dict[str, str]:
    # Starlette's own parser, so this sees exactly the cookies request.cookies gives the routes
    return cookie_parser(headers.get("cookie", ""))


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SecurityMiddleware:
    """CSRF checks and security headers around the whole app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope.get("path", "")
        tls = scope.get("scheme") == "https"
        cookies = _cookies(headers)
        session = cookies.get(SESSION_COOKIE)
        new_login_token: str | None = None
        if session:
            expected = session_csrf_token(session)
        else:
            expected = cookies.get(LOGIN_CSRF_COOKIE, "")
            if not (20 <= len(expected) <= 128):
                expected = new_login_token = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf_token"] = expected
        wrapped_send = self._with_headers(send, path=path, tls=tls, login_token=new_login_token)

        if headers.get("authorization", "").lower().startswith("bearer "):
            # authenticated by the token alone: its cookies are dropped, so no page can take the session instead
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"cookie"]
            await self.app(scope, receive, wrapped_send)
            return
        if scope["method"] in _SAFE:
            await self.app(scope, receive, wrapped_send)
            return
        spool: Any = None
        try:
            _check_origin(headers)
            if not session and path not in PRE_SESSION_PATHS:
                await self.app(scope, receive, wrapped_send)  # anonymous: the route answers 401
                return
            sent = headers.get(CSRF_HEADER)
            if sent is None:
                spool = SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
                sent, receive = await _form_token(headers, receive, spool)
            if not sent:
                raise _Refused(403, "CSRF token missing: send the page's csrf_token field or the X-CSRF-Token header")
            if new_login_token is not None or not hmac.compare_digest(sent.encode(), expected.encode()):
                raise _Refused(403, "CSRF token invalid or stale: reload the page and try again")
            await self.app(scope, receive, wrapped_send)
        except _Refused as refused:
            await _refuse(wrapped_send, path, refused)
        finally:
            if spool is not None:
                spool.close()

    @staticmethod
    def _with_headers(send: Send, *, path: str, tls: bool, login_token: str | None) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {k.lower() for k, _ in raw}

                def put(name: str, value: str) -> None:
                    if name.encode() not in present:
                        raw.append((name.encode(), value.encode("latin-1")))

                put("content-security-policy", CONTENT_SECURITY_POLICY)
                put("x-frame-options", "DENY")
                put("x-content-type-options", "nosniff")
                put("referrer-policy", "same-origin")
                put("cross-origin-opener-policy", "same-origin")
                if tls:
                    put("strict-transport-security", "max-age=31536000; includeSubDomains")
                if not path.startswith("/static/"):
                    put("cache-control", "no-store")
                content_type = dict(raw).get(b"content-type", b"")
                if login_token is not None and content_type.startswith(b"text/html"):
                    secure = "; Secure" if tls else ""
                    raw.append((b"set-cookie", f"{LOGIN_CSRF_COOKIE}={login_token}; HttpOnly; Path=/; "
                                               f"SameSite=Strict{secure}".encode()))
                message = {**message, "headers": raw}
            await send(message)

        return send_with_headers


def _check_origin(headers: Headers) -> None:
    """Refuses a write another site's page started (step 1 of the module docstring)."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise _Refused(403, f"cross-origin request refused (Sec-Fetch-Site: {site[:32]})")
    origin = headers.get("origin")
    if origin is not None:
        # behind a reverse proxy that rewrites Host, the browser's host arrives as X-Forwarded-Host
        # (a header another site's page cannot add without a CORS preflight, which is never granted)
        hosts = {h.strip().lower() for h in (headers.get("host", ""), headers.get("x-forwarded-host", "")) if h.strip()}
        try:
            origin_host = urlsplit(origin).netloc.lower()
        except ValueError:
            origin_host = ""
        if origin == "null" or not origin_host or origin_host not in hosts:
            raise _Refused(403, "cross-origin request refused (Origin does not match Host)")


async def _form_token(headers: Headers, receive: Receive, spool: Any) -> tuple[str | None, Receive]:
    """Reads the csrf_token field of a form body into ``spool``, and a receive that replays the body to the route."""
    content_type = headers.get("content-type", "").lower()
    urlencoded = content_type.startswith("application/x-www-form-urlencoded")
    if not (urlencoded or content_type.startswith("multipart/form-data")):
        return None, receive
    size, tail = 0, []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            tail.append(message)  # a disconnect: the route sees it after the body
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if urlencoded and size > _MAX_URLENCODED:
            raise _Refused(413, f"form too large (more than {_MAX_URLENCODED} bytes; send files as multipart)")
        spool.write(chunk)
        if not message.get("more_body", False):
            break
    token: str | None = None
    spool.seek(0)
    if urlencoded:
        text = spool.read().decode("utf-8", "replace")
        token = next((v for k, v in parse_qsl(text, keep_blank_values=True) if k == CSRF_FIELD), None)
    else:
        async def chunks() -> AsyncGenerator[bytes, None]:
            while block := spool.read(_CHUNK):
                yield block

        try:
            form = await MultiPartParser(headers, chunks()).parse()
        except MultiPartException as exc:
            raise _Refused(400, f"malformed multipart form: {exc.message}") from exc
        value = form.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
        await form.close()
    spool.seek(0)
    done = False

    async def replay() -> Message:
        nonlocal done
        if not done:
            block = spool.read(_CHUNK)
            more = spool.tell() < size
            if not more:
                done = True
            return {"type": "http.request", "body": block, "more_body": more}
        if tail:
            return tail.pop(0)
        return await receive()

    return token, replay


async def _refuse(send: Send, path: str, refused: _Refused) -> None:
    import json

    if path.startswith("/api/"):
        body, kind = json.dumps({"detail": refused.reason}).encode(), b"application/json"
    else:
        body, kind = f"{refused.status}: {refused.reason}\n".encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": refused.status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
