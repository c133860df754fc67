"""Staff notifications to a person's WeCom: an analyst assigned an alert, HR asked to confirm a case."""

from __future__ import annotations

from typing import Iterator

import pytest

from collector.wecom.client import WeComClient
from collector.wecom.staff import StaffMessages
from tests.collector.cases.conftest import World, world  # noqa: F401 (the fixture)
from tests.collector.cases.flow import confirm_security, ok, open_case
from tests.collector.wecom.fake_wecom import AGENT_ID, CORP_ID, SECRET, FakeWeCom


@pytest.fixture
def staff(world: World) -> Iterator[tuple[World, FakeWeCom, StaffMessages]]:  # noqa: F811
    with FakeWeCom(users={"ana.wx", "hana.wx", "gone.wx"}) as fake:
        client = WeComClient(CORP_ID, SECRET, base_url=fake.base_url, timeout_s=2)
        yield world, fake, StaffMessages(world.store, client, AGENT_ID, base_url="http://collector.test", lang="zh")
        client.close()


def test_an_assigned_analyst_and_hr_asked_to_confirm_get_an_app_message(
        staff: tuple[World, FakeWeCom, StaffMessages]) -> None:
    w, fake, job = staff
    ok(w.api("ivan", "PUT", "/api/v1/wecom/userids/account/ana", json={"userid": "ana.wx"}))
    ok(w.api("ivan", "PUT", "/api/v1/wecom/userids/account/hana", json={"userid": "hana.wx"}))
    assert w.api("hana", "PUT", "/api/v1/wecom/userids/account/ana", json={"userid": "x"}).status_code == 403
    assert w.api("ivan", "PUT", "/api/v1/wecom/userids/account/nobody", json={"userid": "x"}).status_code == 404
    ok(w.api("ana", "POST", f"/api/v1/alerts/{w.alerts[0]}/assign", json={"assignee": "ana"}))
    ok(w.api("ana", "POST", f"/api/v1/alerts/{w.alerts[1]}/assign", json={"assignee": "sam"}))  # sam: no WeCom
    case_id = open_case(w)
    confirm_security(w, case_id)
    assert job.run_once() == 2
    by_user = {m["touser"]: m for m in fake.sent}
    assert set(by_user) == {"ana.wx", "hana.wx"}
    assert all(m["msgtype"] == "markdown" and m["agentid"] == AGENT_ID for m in fake.sent)
    assert f"/alerts/{w.alerts[0]}" in by_user["ana.wx"]["markdown"]["content"]
    assert f"/cases/{case_id}" in by_user["hana.wx"]["markdown"]["content"]
    assert job.run_once() == 0  # each told once


def test_rate_limited_waits_and_goes_later(staff: tuple[World, FakeWeCom, StaffMessages]) -> None:
    w, fake, job = staff
    ok(w.api("ivan", "PUT", "/api/v1/wecom/userids/account/ana", json={"userid": "ana.wx"}))
    ok(w.api("ana", "POST", f"/api/v1/alerts/{w.alerts[0]}/assign", json={"assignee": "ana"}))
    fake.rate_limit_next = 1
    assert job.run_once() == 0 and fake.sent == []
    now = [job.clock()]
    job.clock = lambda: now[0] + 120 * 10**9
    assert job.run_once() == 1 and len(fake.sent) == 1
