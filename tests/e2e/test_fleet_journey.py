"""IT runs the fleet from the browser (real processes, Debian's chromium): creates an enrollment token for two
machines with a label in the UI, a real agent process enrolls with it and runs, IT sees it online on /fleet,
revokes it from its page after the confirmation, and sees it revoked (its streams are refused from then on).

Between "online" and "revoke", IT writes a policy on /policies and assigns it to the token's label on the
policy's page; the agent applies the pushed, signed policy and its page shows it (finance v1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import browser, person, screenshot  # noqa: F401 (the fixture)
from tests.e2e.conftest import Collector, eventually, run, stop, tool
from tests.e2e.test_cli import _agent
from tests.e2e.test_journeys import _sign_in

PASSWORD = "a long enough password"


@pytest.mark.slow
def test_it_enrolls_an_agent_from_the_ui_assigns_a_policy_and_revokes_it(collector: Collector, browser: Any,
                                                                          tmp_path: Path) -> None:
    collector.start()
    collector.cli("user", "create", "--username", "ivan", "--role", "it_admin", "--password-stdin",
                  stdin=PASSWORD + "\n")
    page = person(browser)
    _sign_in(page, collector.http, "ivan", PASSWORD, "/fleet")
    page.click("#tokens-link")
    page.fill("#token-name", "财务部笔记本")
    page.fill("#token-uses", "2")
    page.fill("#token-hours", "2")
    page.fill("#token-labels", "dept:finance")
    page.click("#token-create")
    token = page.inner_text("#token-value").strip()
    assert re.fullmatch(r"se_[A-Za-z0-9_-]+", token)
    screenshot(page, "fleet-token-made", tmp_path)

    state, watch = tmp_path / "agent", tmp_path / "finance"
    watch.mkdir()
    agent_id = run(tool("shoumi-agent"), "enroll", "--collector", collector.enroll, "--token", token,
                   "--ca-fingerprint", collector.fingerprint, "--state-dir", str(state)).stdout.strip()
    assert agent_id.startswith("agt-")
    page.goto(f"{collector.http}/fleet/tokens")
    assert page.inner_text(f"tr[data-state='active'] td.uses").strip() == "1 / 2"

    agent = _agent(state, watch, "--heartbeat-seconds", "1", "--collector", collector.grpc)
    try:
        def online() -> bool:
            page.goto(f"{collector.http}/fleet?status=online")
            return page.locator(f"tr[data-agent-id='{agent_id}'][data-status='online'][data-reported='yes']").count() == 1
        eventually(online, timeout=30, what="the agent online on /fleet, its heartbeat's health shown")
        row = page.locator(f"tr[data-agent-id='{agent_id}']")
        assert "dept:finance" in row.inner_text()
        screenshot(page, "fleet", tmp_path)

        # a policy for the label: written in the UI, pushed signed, applied by the agent within a few heartbeats
        pushed = tmp_path / "pushed"
        pushed.mkdir()
        page.goto(f"{collector.http}/policies")
        page.fill("#p-name", "finance")
        page.fill("#p-document", f'sensitive_folders = ["{pushed}"]\nexclude_paths = ["*.tmp"]\n')
        page.fill("#p-comment", "财务部共享盘")
        page.click("form.policy-new button[type=submit]")
        page.wait_for_load_state()
        page.goto(f"{collector.http}/policies/finance")
        page.fill("#a-labels", "dept:finance")
        page.click("form:has(#a-labels) button[type=submit]")
        page.wait_for_load_state()

        def applied() -> bool:
            page.goto(f"{collector.http}/fleet/agents/{agent_id}")
            return "finance v1" in page.inner_text("#agent-policy")
        eventually(applied, timeout=40, what="the assigned policy applied by the agent")
        page.goto(f"{collector.http}/policies/finance")
        assert page.locator(f"tr[data-agent-id='{agent_id}']").count() == 1
        screenshot(page, "policy", tmp_path)

        page.goto(f"{collector.http}/fleet?status=online")
        page.locator(f"tr[data-agent-id='{agent_id}'] a.agent-link").click()
        assert page.get_attribute("#agent-status", "data-status") == "online"
        eventually(lambda: page.reload() or page.locator("#heartbeats tbody tr").count() > 0, timeout=15,
                   what="a heartbeat in the agent's history")
        page.click("#revoke-link")
        page.check("#revoke-confirm")
        page.click("#revoke-submit")
        page.wait_for_load_state()
        assert page.get_attribute("#agent-status", "data-status") == "revoked"
        assert page.locator("#revoked-notice").count() == 1
        page.goto(f"{collector.http}/fleet?status=revoked")
        assert page.locator(f"tr[data-agent-id='{agent_id}'][data-status='revoked']").count() == 1
        listing = collector.cli("agent", "list")
        assert f"{agent_id}\t" in listing and "revoked" in listing
    finally:
        stop(agent)
