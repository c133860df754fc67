"""The security middleware: CSRF on cookie-authenticated writes (forms and scripts), login CSRF, and headers."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.testclient import TestClient

from collector.web.security import CONTENT_SECURITY_POLICY, SecurityMiddleware, session_csrf_token


def _echo_app() -> FastAPI:
    """A small app behind the real middleware: routes that read forms and uploads as feature routes do."""
    app = FastAPI()
    app.add_middleware(SecurityMiddleware)

    @app.post("/form")
    def form(title: str = Form(...), csrf_token: str = Form("")) -> dict[str, Any]:
        return {"title": title}

    @app.post("/upload")
    async def upload(note: str = Form(...), file: UploadFile = File(...)) -> dict[str, Any]:
        data = await file.read()
        return {"note": note, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "name": file.filename}

    @app.post("/json")
    async def json_body(request: Request) -> dict[str, Any]:
        return {"got": await request.json()}

    @app.get("/page")
    def page(request: Request) -> Any:
        from fastapi.responses import HTMLResponse

        return HTMLResponse(f'<form><input name="csrf_token" value="{request.state.csrf_token}"></form>')

    return app


def _session_client() -> tuple[TestClient, str]:
    client = TestClient(_echo_app())
    client.cookies.set("shoumi_session", "ss_test-session-token")
    return client, session_csrf_token("ss_test-session-token")


def test_a_form_post_with_the_session_token_reaches_the_route_with_its_fields() -> None:
    client, token = _session_client()
    ok = client.post("/form", data={"title": "标题 <script>", "csrf_token": token})
    assert ok.status_code == 200 and ok.json() == {"title": "标题 <script>"}
    missing = client.post("/form", data={"title": "t"})
    assert missing.status_code == 403 and "CSRF token missing" in missing.text
    wrong = client.post("/form", data={"title": "t", "csrf_token": session_csrf_token("another session")})
    assert wrong.status_code == 403 and "invalid" in wrong.text


def test_a_10_mb_multipart_upload_passes_whole_through_the_check() -> None:
    client, token = _session_client()
    blob = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    reply = client.post("/upload", data={"note": "evidence", "csrf_token": token},
                        files={"file": ("loss report.pdf", blob, "application/pdf")})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"note": "evidence", "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
                            "name": "loss report.pdf"}
    refused = client.post("/upload", data={"note": "x"}, files={"file": ("a.txt", b"abc", "text/plain")})
    assert refused.status_code == 403


def test_scripts_send_the_header_and_bearer_calls_need_no_token() -> None:
    client, token = _session_client()
    assert client.post("/json", json={"a": 1}, headers={"X-CSRF-Token": token}).json() == {"got": {"a": 1}}
    assert client.post("/json", json={"a": 1}).status_code == 403
    assert client.post("/json", json={"a": 1}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    bearer = client.post("/json", json={"a": 2}, headers={"Authorization": "Bearer sa_whatever"})
    assert bearer.status_code == 200  # a bearer token is no ambient credential: the route authenticates it
    basic = client.post("/json", json={"a": 2}, headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 403  # browsers send Basic on their own: it is not an exemption


def test_cross_origin_writes_are_refused_even_with_the_right_token() -> None:
    client, token = _session_client()
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}):
        reply = client.post("/json", json={}, headers={"X-CSRF-Token": token, **headers})
        assert reply.status_code == 403 and "cross-origin" in reply.text, headers
    same = client.post("/json", json={}, headers={"X-CSRF-Token": token, "Origin": "http://testserver",
                                                   "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200


def test_anonymous_pages_get_a_pre_session_token_in_a_cookie_and_the_page() -> None:
    client = TestClient(_echo_app())
    page = client.get("/page")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("shoumi_login_csrf=") and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    token = re.search(r'value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert client.cookies["shoumi_login_csrf"] == token
    assert client.get("/page").headers.get("set-cookie") is None  # kept, not renewed on every page


def test_every_response_carries_the_security_headers() -> None:
    client = TestClient(_echo_app())
    for reply in (client.get("/page"), client.post("/json", json={}), client.get("/nowhere")):
        h = reply.headers
        assert h["content-security-policy"] == CONTENT_SECURITY_POLICY
        for part in ("default-src 'self'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'",
                     "object-src 'none'"):
            assert part in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "same-origin" and h["cache-control"] == "no-store"
        assert "strict-transport-security" not in h  # plain HTTP: HSTS only over TLS
    tls = TestClient(_echo_app(), base_url="https://testserver")
    first = tls.get("/page")
    assert first.headers["strict-transport-security"].startswith("max-age=")
    assert "secure" in first.headers["set-cookie"].lower()


def test_the_real_app_sends_the_headers_and_guards_its_service_pages(tmp_path: Any) -> None:
    from collector.storage import open_store
    from tests.collector.accounts.conftest import make_world

    store = open_store(tmp_path / "collector")
    try:
        w = make_world(store)
        c = w.client()
        login = c.get("/login")
        assert login.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert login.headers["x-frame-options"] == "DENY" and login.headers["cache-control"] == "no-store"
        assert "<script>" not in login.text and "style=" not in login.text and "onclick" not in login.text
        for path in ("/metrics", "/openapi.json", "/api/docs"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers=w.bearer("ana")).status_code == 403
            assert c.get(path, headers=w.bearer("aud")).status_code == 200
            assert c.get(path, headers=w.bearer("ivan")).status_code == 200
        assert 'shoumi_password_checks{what="slots"} 4' in c.get("/metrics", headers=w.bearer("aud")).text
        assert "/api/v1/users" in c.get("/openapi.json", headers=w.bearer("aud")).json()["paths"]
        docs = c.get("/api/docs", headers=w.bearer("aud"))
        assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
        assert c.get("/static/shoumi.css").headers.get("cache-control") != "no-store"
    finally:
        store.close()


def test_the_check_reads_cookies_as_the_routes_do_and_bearer_requests_lose_their_cookies() -> None:
    app = _echo_app()

    @app.post("/whoami")
    def whoami(request: Request) -> dict[str, Any]:
        return {"session": request.cookies.get("shoumi_session")}

    client = TestClient(app)
    # a cookie another app on the domain set, that Python's SimpleCookie gives up on, before the session
    raw = 'prefs="{\\"a\\": 1}"; bad cookie=x; shoumi_session=ss_abc'
    refused = client.post("/whoami", headers={"Cookie": raw})
    assert refused.status_code == 403  # the session is seen, so its token is required
    ok = client.post("/whoami", headers={"Cookie": raw, "X-CSRF-Token": session_csrf_token("ss_abc")})
    assert ok.json() == {"session": "ss_abc"}
    bearer = client.post("/whoami", headers={"Cookie": raw, "Authorization": "Bearer sa_x"})
    assert bearer.status_code == 200 and bearer.json() == {"session": None}


def test_behind_a_proxy_the_forwarded_host_is_the_origin_to_match() -> None:
    client, token = _session_client()
    headers = {"X-CSRF-Token": token, "Origin": "https://shoumi.example.cn", "Host": "127.0.0.1:8080"}
    assert client.post("/json", json={}, headers=headers).status_code == 403
    headers["X-Forwarded-Host"] = "shoumi.example.cn"
    assert client.post("/json", json={}, headers=headers).status_code == 200
