"""In Debian's chromium: it_admin signs in and creates a user on /users, the new user switches language and
makes a token on /account, the auditor reads /audit; no page breaks its own Content-Security-Policy; and a
form on another origin that posts to the collector is refused by the browser-sent Origin/Sec-Fetch-Site."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn

from collector.people.service import PeopleService
from collector.storage import SqlStore, open_store
from collector.web.app import create_app

from tests.collector.accounts.conftest import PASSWORD, light_hasher
from tests.e2e.browser import browser, person, screenshot  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.slow


class Served:
    def __init__(self, base: str, store: SqlStore) -> None:
        self.base = base
        self.store = store


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Served]:
    store = open_store(tmp_path / "collector")
    people = PeopleService(session_ttl_ns=10**13, hasher=light_hasher())
    with store.transaction() as tx:
        for name, role in (("ivan", "it_admin"), ("aud", "auditor")):
            people.create_user(tx=tx, username=name, role=role, password=PASSWORD, actor="test")
    server = uvicorn.Server(uvicorn.Config(create_app(store=store, people=people), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", store)
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


@pytest.fixture
def attacker(collector: Served) -> Iterator[str]:
    """Another origin whose page posts a form to the collector as soon as it loads."""
    page = (f'<form id="f" method="post" action="{collector.base}/users">'
            '<input name="username" value="evil"><input name="role" value="it_admin">'
            '<input name="password" value="attacker password"><input name="csrf_token" value="guessed"></form>'
            '<script>document.getElementById("f").submit()</script>').encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _watch(page: object) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: problems.append(str(e)))  # type: ignore[attr-defined]
    return problems


def _sign_in(page: object, base: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/login")  # type: ignore[attr-defined]
    page.fill("#username", username)  # type: ignore[attr-defined]
    page.fill("#password", password)  # type: ignore[attr-defined]
    page.click("form[action='/login'] button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_load_state()  # type: ignore[attr-defined]


def test_accounts_pages_in_a_real_browser(browser: object, collector: Served, attacker: str, tmp_path: Path) -> None:
    base = collector.base
    admin = person(browser)  # type: ignore[arg-type]
    problems = _watch(admin)
    _sign_in(admin, base, "ivan")
    assert admin.url.endswith("/users")  # where IT's work starts
    admin.fill("input[name=username]", "hr2")
    admin.select_option("select[name=role]", "hr")
    admin.fill("form[action='/users'] input[name=password]", "a long hr password")
    admin.click("form[action='/users'] button[type=submit]")
    admin.wait_for_load_state()
    assert "用户已创建" in admin.content() and "hr2" in admin.content()
    screenshot(admin, "accounts-users", tmp_path)

    admin.goto(attacker)  # another site's page posts to /users with ivan's cookies at hand
    admin.wait_for_load_state()
    assert "403" in admin.content() and ("cross-origin" in admin.content() or "CSRF" in admin.content())
    with collector.store.read() as tx:
        assert tx.get_user("evil") is None

    hr = person(browser)  # type: ignore[arg-type]
    problems += _watch(hr)
    _sign_in(hr, base, "hr2", "a long hr password")
    hr.goto(f"{base}/account")
    hr.click("header button.link")  # the language switch in the page head
    hr.wait_for_load_state()
    assert "My account" in hr.content()
    hr.fill("input[name=name]", "payroll export")
    hr.click("form[action='/account/tokens'] button[type=submit]")
    hr.wait_for_load_state()
    assert "shown only this once" in hr.content() and "sa_" in hr.content()
    screenshot(hr, "accounts-account", tmp_path)
    with collector.store.read() as tx:
        assert tx.get_user("hr2").lang == "en"  # type: ignore[union-attr]

    auditor = person(browser)  # type: ignore[arg-type]
    problems += _watch(auditor)
    _sign_in(auditor, base, "aud")
    auditor.goto(f"{base}/audit?actor=ivan")
    assert "user.create" in auditor.content() and "审计日志" in auditor.content()
    screenshot(auditor, "audit-log", tmp_path)

    csp = [p for p in problems if "Content Security Policy" in p or "Refused to" in p]
    assert not csp, csp
