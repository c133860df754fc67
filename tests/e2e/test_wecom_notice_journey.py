"""In Debian's chromium against a collector served on loopback and the fake WeCom server: HR sends a deduction
notice; WeCom delivers it (msgid); the employee opens the card's link, signs in, reads the notice and
acknowledges it; the case shows it as served, with the delivery and acknowledgement times."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import uvicorn

from collector.people.service import PeopleService
from collector.storage import open_store
from collector.web.app import create_app
from collector.wecom.client import WeComClient
from collector.wecom.crypto import CallbackCrypto
from collector.wecom.runtime import WeComRuntime
from collector.wecom.service import NoticeWorker

from tests.collector.accounts.conftest import PASSWORD, light_hasher
from tests.collector.cases.conftest import DAY_NS, add_alerts
from tests.collector.wecom.fake_wecom import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN, FakeWeCom
from tests.e2e.browser import browser, person, screenshot  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    store = open_store(tmp_path / "collector")
    people = PeopleService(session_ttl_ns=10**13, hasher=light_hasher())
    tokens = {}
    with store.transaction() as tx:
        for name, role in (("hana", "hr"), ("ana", "security_analyst"), ("emma", "employee")):
            people.create_user(tx=tx, username=name, role=role, password=PASSWORD, actor="test")
            tokens[name] = people.create_api_token(tx=tx, username=name, actor="test")
    alerts = add_alerts(store, first_ns=time.time_ns() - 30 * DAY_NS)
    app = create_app(store=store, people=people)
    fake = FakeWeCom().start()
    client = WeComClient(CORP_ID, SECRET, base_url=fake.base_url, timeout_s=2)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    worker = NoticeWorker(store, wecom=client, agent_id=AGENT_ID, base_url=base)
    app.state.wecom = WeComRuntime(client, AGENT_ID, CallbackCrypto(TOKEN, AES_KEY, CORP_ID), worker)
    try:
        yield {"base": base, "tokens": tokens, "alerts": alerts, "fake": fake, "worker": worker}
    finally:
        server.should_exit = True
        thread.join(10)
        client.close()
        fake.stop()
        store.close()


def _sign_in_here(page: Any, username: str) -> None:
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("form[action^='/login'] button[type=submit]")


def test_the_employee_reads_and_acknowledges_and_the_case_shows_it_served(
        browser: Any, served: dict[str, Any], tmp_path: Path) -> None:
    base, tokens, fake = served["base"], served["tokens"], served["fake"]

    def api(who: str, method: str, path: str, **kw: Any) -> Any:
        reply = httpx.request(method, base + path, headers={"Authorization": f"Bearer {tokens[who]}"}, timeout=10, **kw)
        assert reply.status_code in (200, 201), reply.text
        return reply.json()

    case_id = api("ana", "POST", "/api/v1/cases", json={"alert_ids": served["alerts"][:2], "title": "图纸外传"})["id"]
    api("hana", "POST", "/api/v1/agreements/people", json={"employee_id": "E-1001", "user_name": "alice",
                                                           "account": "emma"})
    api("hana", "PUT", "/api/v1/wecom/userids/employee/E-1001", json={"userid": "zhangsan"})
    notice = api("hana", "POST", "/api/v1/wecom/notices", json={
        "kind": "deduction", "employee_id": "E-1001", "case_id": case_id, "bridge_notice_id": "N-SHOUMI-1-20261201",
        "title": "扣款通知书", "text": "扣款通知书\n每月扣款 1,600.00 元。如有异议，请于 15 日内书面提出。"})
    assert served["worker"].run_once() == 1
    (card,) = fake.sent
    link = card["textcard"]["url"]
    assert link == f"{base}/me/wecom-notices/{notice['key']}"

    errors: list[str] = []
    emp = person(browser)
    emp.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    emp.goto(link)  # the card's link: sign in first, then back to the notice
    _sign_in_here(emp, "emma")
    emp.wait_for_url(link)
    assert "每月扣款 1,600.00 元" in emp.inner_text("pre.agreement-text")
    screenshot(emp, "wecom-notice-employee", tmp_path)
    emp.click("#acknowledge")
    emp.wait_for_selector("#acknowledged")

    hr = person(browser)
    hr.goto(f"{base}/login")
    _sign_in_here(hr, "hana")
    hr.goto(f"{base}/cases/{case_id}")
    row = hr.inner_text("#employee-notices")
    assert "已送达并确认" in row and "zhangsan" not in row and card and "msg" in row
    listed = api("hana", "GET", f"/api/v1/wecom/notices?case_id={case_id}")["notices"]
    assert listed[0]["served"] and listed[0]["proof"]["delivered_at"] and listed[0]["proof"]["acknowledged_at"]
    screenshot(hr, "wecom-notice-served", tmp_path)
    assert not [e for e in errors if "Refused" in e or "Content Security Policy" in e], errors
