"""Three journeys through the web UI in a real browser (Debian's chromium, Playwright), against real
processes: the demo's collector, agent and payroll bridge, with the alerts a real insider scenario raised.

1. An analyst closes two alerts as false positives in one bulk action, acknowledges the third and
   escalates it to a case, and confirms the case for security.
2. HR records the documented loss (with its document), the signed agreement, the employee and the
   notice, confirms, and sends the case to payroll; the bridge's schedule then shows on the case page.
3. A second HR person cannot skip a step, and no one can confirm twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e.browser import browser, person, screenshot  # noqa: F401  (browser is a fixture)
from tests.e2e.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
CHINA = timezone(timedelta(hours=8))

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The demo up to its alerts (a real agent, a real insider scenario), kept running for the journeys."""
    if os.geteuid() != 0:
        pytest.skip("the demo's agent captures through fanotify as root")
    tmp = tmp_path_factory.mktemp("journeys")
    ready, out = tmp / "ready.json", tmp / "demo.out"
    with open(out, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo.py"), "--data-dir", str(tmp / "demo"),
                                 "--stop-after", "alerts", "--ready-file", str(ready)], stdout=log, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: ready.exists() or proc.poll() is not None, timeout=150, what="the demo")
        assert proc.poll() is None, out.read_text()
        world = json.loads(ready.read_text())
        world["tmp"] = tmp
        world["state"] = {}
        yield world
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _sign_in(page: Any, http: str, username: str, password: str, next_path: str = "/") -> None:
    page.goto(f"{http}/login?next={next_path}")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("form[action^='/login'] button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url, page.inner_text("main")


def test_an_analyst_triages_closes_two_false_positives_and_escalates_one(demo: dict[str, Any], browser: Any) -> None:
    http, alerts = demo["http"], demo["alerts"]
    page = person(browser)
    _sign_in(page, http, "analyst", demo["passwords"]["analyst"])
    assert page.url.endswith("/alerts")  # an analyst's work starts at the queue
    assert page.inner_text("h1") == "告警队列"  # Chinese by default
    rows = page.locator("tr[data-alert-id]")
    assert rows.count() == 3
    who = page.locator("table.queue td.who").all_inner_texts()
    assert len(who) == 3 and all(w.startswith("P-") for w in who), who  # pseudonyms, not the account name
    assert "/home/root/" not in page.inner_text("table.queue")  # nor inside the paths the sentences name
    screenshot(page, "alert-queue", demo["tmp"])

    # two false positives closed in one bulk action, with a suppression for each person
    for rule in ("bulk_read", "sensitive_copy_out"):
        page.check(f"input.pick[value='{alerts[rule]}']")
    page.select_option("#b-action", "close")
    page.select_option("#b-outcome", "false_positive")
    page.click("button[form=bulk][type=submit]")
    page.wait_for_load_state()
    assert "2" in page.inner_text("p.notice")
    closed = page.locator("tr[data-alert-id] .state", has_text="已关闭")
    assert closed.count() == 2

    # the stick alert: its evidence, acknowledged, escalated
    page.click(f"tr[data-alert-id='{alerts['usb_exfiltration']}'] a >> nth=0")
    page.wait_for_url(re.compile(rf"/alerts/{alerts['usb_exfiltration']}$"))
    text = page.inner_text("main")
    assert "customer-contract-05.txt" in text and "/stick" in text  # which file went where
    page.click("form:has(input[name=status][value=acknowledged]) button[type=submit]")
    page.wait_for_load_state()
    screenshot(page, "alert-detail", demo["tmp"])
    page.fill("form.escalate input[name=title]", "把客户合同写入U盘")
    page.click("form.escalate button[type=submit]")
    page.wait_for_url(re.compile(r"/cases/\d+$"))
    case_id = int(page.url.rsplit("/", 1)[1])
    demo["state"]["case"] = case_id
    for step in ("under_review", "security_confirmed"):
        page.click(f"button[data-step='{step}']")
        page.wait_for_load_state()
    assert "security_confirmed" in page.content() or "安全确认" in page.inner_text("main")
    screenshot(page, "case", demo["tmp"])

    # the same page in English, by the account's own choice
    page.click("header form[action='/preferences/lang'] button")
    page.wait_for_load_state()
    assert "Cases" in page.inner_text("header nav")
    page.click("header form[action='/preferences/lang'] button")  # back to Chinese for the screenshots
    page.context.close()


def test_a_second_hr_person_cannot_skip_a_step(demo: dict[str, Any], browser: Any) -> None:
    case_id = demo["state"].get("case")
    assert case_id, "the analyst's journey runs first"
    http = demo["http"]
    # a fresh case still open: HR has no step to take on it and cannot force one
    fresh = subprocess.run([sys.executable, "-c", "import httpx, sys\n"
                            "r = httpx.post(sys.argv[1] + '/api/v1/cases', json={'alert_ids': [int(sys.argv[3])], "
                            "'title': 'second look'}, headers={'Authorization': 'Bearer ' + sys.argv[2]})\n"
                            "print(r.status_code, r.json().get('id', r.text))",
                            http, demo["tokens"]["analyst"], str(demo["alerts"]["bulk_read"])],
                           capture_output=True, text=True, timeout=30)
    status, other = fresh.stdout.split()
    assert status == "201", fresh.stdout + fresh.stderr
    page = person(browser)
    _sign_in(page, http, "hr2", demo["passwords"]["hr2"], f"/cases/{other}")
    assert page.locator("button[data-step='hr_confirmed']").count() == 0
    forced = page.evaluate(f"api('/api/v1/cases/{other}/transition', {{to: 'hr_confirmed'}}).then(() => 'moved', e => e.message)")
    assert forced != "moved" and "open" in forced, forced  # 409: not allowed from open
    forced = page.evaluate(f"api('/api/v1/cases/{other}/transition', {{to: 'sent_to_payroll'}}).then(() => 'moved', e => e.message)")
    assert forced != "moved", forced
    page.context.close()


def test_hr_confirms_and_the_case_reaches_payroll_with_its_schedule(demo: dict[str, Any], browser: Any) -> None:
    case_id = demo["state"].get("case")
    assert case_id, "the analyst's journey runs first"
    http = demo["http"]
    page = person(browser)
    _sign_in(page, http, "hr", demo["passwords"]["hr"], f"/cases/{case_id}/hr")
    assert "劳动合同法" in page.inner_text("main") and "第九十条" in page.inner_text("main")  # compensation, never a fine
    page.set_input_files("input[type=file]", files=[{"name": "损失鉴定报告.txt", "mimeType": "text/plain",
                                                     "buffer": "第三方鉴定：直接损失 5,000 元".encode()}])
    page.click("form[enctype='multipart/form-data'] button[type=submit]")
    page.wait_for_load_state()
    if not page.url.endswith("/hr"):
        page.goto(f"{http}/cases/{case_id}/hr")
    page.fill("#amount", "5000")
    page.check("form[action$='/hr/loss'] input[name=documents] >> nth=0")
    page.click("form[action$='/hr/loss'] button[type=submit]")
    page.wait_for_load_state()
    page.click("details:has(#ag-version) > summary")  # the typed form, for an agreement not in the registry
    page.fill("#ag-version", "NDA-2024-v3")
    page.fill("#ag-sha", "ab" * 32)
    page.fill("#ag-by", "E1001")
    page.fill("#ag-at", "2024-03-01T10:00")
    page.fill("#ag-id", "电子签约平台实名认证 + 短信验证码")
    page.click("form[action$='/hr/agreement'] button[type=submit]")
    page.wait_for_load_state()
    page.fill("#emp-id", "E1001")
    page.fill("#emp-name", "张三")
    page.select_option("#emp-region", "CN-SH")
    page.click("form[action$='/hr/employee'] button[type=submit]")
    page.wait_for_load_state()
    page.fill("#n-at", datetime.now(CHINA).strftime("%Y-%m-%dT%H:%M:%S"))
    page.fill("#n-how", "当面送达，员工签收")
    page.click("form[action$='/hr/notice'] button[type=submit]")
    page.wait_for_load_state()
    screenshot(page, "hr-confirmation", demo["tmp"])
    page.click("button[data-step='hr_confirmed']")
    page.wait_for_load_state()
    # no one confirms twice: the step is gone, and forcing it is refused
    assert page.locator("button[data-step='hr_confirmed']").count() == 0
    again = page.evaluate(f"api('/api/v1/cases/{case_id}/transition', {{to: 'hr_confirmed'}}).then(() => 'moved', e => e.message)")
    assert again != "moved", again
    page.click("button[data-step='sent_to_payroll']")
    page.wait_for_load_state()

    # the bridge files it; payroll records the wages; the schedule shows on the case page
    def filed() -> bool:
        page.goto(f"{http}/cases/{case_id}")
        return "CASE_ID" not in page.content() and page.locator("form[action$='/handoff/refresh']").count() > 0

    eventually(filed, timeout=30, what="the bridge to file the case")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUMI_PAYROLL_")}
    data = Path(demo["data"])
    env.update(SHOUMI_PAYROLL_LEDGER_PATH=str(data / "payroll" / "ledger.sqlite3"), XDG_STATE_HOME=str(data / "payroll"))
    month = datetime.now(timezone.utc)
    periods = [f"{month.year + (month.month - 1 + i) // 12}-{(month.month - 1 + i) % 12 + 1:02d}" for i in range(4)]
    wages = demo["tmp"] / "wages.json"
    wages.write_text(json.dumps({"employee_id": "E1001", "periods": [
        {"period": p, "wage_fen": 800000, "social_insurance_fen": 84000, "housing_fund_fen": 56000} for p in periods]}))
    payroll = Path(sys.executable).with_name("shoumi-payroll")
    done = subprocess.run([str(payroll), "wages", str(wages), "--actor", "payroll.clerk"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    def scheduled() -> bool:
        page.goto(f"{http}/cases/{case_id}")
        page.click("form[action$='/handoff/refresh'] button")
        page.wait_for_load_state()
        return "1,600.00" in page.inner_text("main")

    eventually(scheduled, timeout=30, what="the schedule on the case page")
    assert "CAP20" in page.inner_text("main")
    screenshot(page, "case-schedule", demo["tmp"])
    page.context.close()
