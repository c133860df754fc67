"""In Debian's chromium against a collector served on loopback with a local RFC 3161 TSA: HR puts the monitoring
notice on record and links an employee's account; the employee signs in, reads the notice and acknowledges it;
the acknowledgement is sealed by the TSA, and HR sees it on record."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn

from collector.people.service import PeopleService
from collector.storage import open_store
from collector.web.app import create_app

from tests.collector.accounts.conftest import PASSWORD, light_hasher
from tests.collector.agreements.conftest import config
from tests.collector.agreements.pki import LocalTsa, make_pki
from tests.e2e.browser import browser, person, screenshot  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, LocalTsa]]:
    pki = make_pki()
    tsa = LocalTsa(pki)
    store = open_store(tmp_path / "collector")
    people = PeopleService(session_ttl_ns=10**13, hasher=light_hasher())
    with store.transaction() as tx:
        for name, role in (("hana", "hr"), ("emma", "employee")):
            people.create_user(tx=tx, username=name, role=role, password=PASSWORD, actor="test")
    app = create_app(store=store, people=people)
    app.state.agreements = config(pki, tsa)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", tsa
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()
        tsa.stop()


def _sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("form[action^='/login'] button[type=submit]")


def test_an_employee_reads_and_acknowledges_the_notice_and_hr_sees_it_on_record(
        browser: Any, served: tuple[str, LocalTsa], tmp_path: Path) -> None:
    base, tsa = served
    errors: list[str] = []
    hr = person(browser)
    hr.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    _sign_in(hr, base, "hana")
    hr.goto(f"{base}/agreements")
    hr.fill("#tpl-title", "员工监控告知书")
    hr.select_option("#tpl-kind", "monitoring_notice")
    hr.click("form.new-template button[type=submit]")
    hr.click("details summary")
    hr.fill("input[name=version]", "2026-1")
    hr.fill("input[name=effective_from]", "2026-01-01")
    assert "第十七条" in hr.input_value("textarea[name=text]")  # prefilled with Shoumi's notice
    hr.click("details form button[type=submit]")
    hr.fill("#emp-id", "E-1001")
    hr.fill("#emp-user", "alice")
    hr.fill("#emp-acct", "emma")
    hr.click("form[action='/agreements/people'] button[type=submit]")
    hr.wait_for_url(f"{base}/agreements/people/E-1001")

    emp = person(browser)
    emp.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    _sign_in(emp, base, "emma")
    emp.wait_for_url(f"{base}/me/notices")  # the employee's work starts at their notices
    text = emp.inner_text("pre.agreement-text")
    for part in ("收集什么", "为什么", "保存多久", "谁能看到", "如何提出异议", "由人决定"):
        assert part in text, part
    assert [a.inner_text() for a in emp.query_selector_all("nav a")] == ["我的告知书"]  # nothing else to open
    screenshot(emp, "notice-employee", tmp_path)
    emp.click("article.notice-text form button[type=submit]")
    emp.wait_for_selector("p.ack strong.ok")
    assert "已加盖 RFC 3161 可信时间戳" in emp.inner_text("p.ack") and tsa.requests == 1
    assert emp.goto(f"{base}/agreements").status == 403

    hr.goto(f"{base}/agreements/people/E-1001")
    record = hr.inner_text("article.record")
    assert "已加盖 RFC 3161 可信时间戳" in record and "员工监控告知书" in record
    screenshot(hr, "notice-on-record", tmp_path)
    assert not [e for e in errors if "Refused" in e or "Content Security Policy" in e], errors  # CSP held
