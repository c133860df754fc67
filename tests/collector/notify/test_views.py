"""GET /api/v1/notifications: the outbox and its delivery states, for IT and auditors only."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from collector.notify.wecom import WeComRobot
from collector.notify.worker import NotifyWorker
from collector.people.service import PeopleService
from collector.web.app import create_app

from tests.collector.notify.fakes import Clock, FakeRobot
from tests.collector.notify.test_worker import BASE, raise_high


@pytest.fixture
def api(sqlite_store: Any) -> Iterator[tuple[TestClient, dict[str, str]]]:
    people = PeopleService(session_ttl_ns=3600 * 10**9)
    roles = {"ivan": "it_admin", "aud": "auditor", "ana": "security_analyst", "hana": "hr"}
    for name, role in roles.items():
        people.create_user(tx=sqlite_store, username=name, role=role, password=None, actor="test")
    tokens = {name: people.create_api_token(tx=sqlite_store, username=name, actor="test") for name in roles}
    client = TestClient(create_app(store=sqlite_store, people=people))
    yield client, tokens
    client.close()


def get(client: TestClient, token: str | None, query: str = "") -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return client.get(f"/api/v1/notifications{query}", headers=headers)


def test_it_and_auditors_read_the_outbox_others_may_not(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    assert get(client, None).status_code == 401
    assert get(client, tokens["ana"]).status_code == 403
    assert get(client, tokens["hana"]).status_code == 403
    for who in ("ivan", "aud"):
        answer = get(client, tokens[who])
        assert answer.status_code == 200 and answer.json() == {"items": [], "next_cursor": None}


def test_the_outbox_shows_each_rows_delivery_and_never_the_webhook_key(
        api: tuple[TestClient, dict[str, str]], sqlite_store: Any, clock: Clock, robot: FakeRobot) -> None:
    client, tokens = api
    worker = NotifyWorker(sqlite_store, [WeComRobot(robot.url, base_url=BASE, timeout_s=2.0)], clock=clock)
    ids = raise_high(sqlite_store, clock, 3)
    robot.fail_next = [500]
    worker.run_once()
    answer = get(client, tokens["aud"], "?limit=2")
    assert answer.status_code == 200 and robot.key not in answer.text
    page = answer.json()
    assert [r["number"] for r in page["items"]] == [ids[2], ids[1]] and page["next_cursor"]
    rest = get(client, tokens["aud"], f"?cursor={page['next_cursor']}").json()
    first = rest["items"][0]
    assert (first["number"], first["status"], first["attempts"], first["last_error"]) == (ids[0], "pending", 1, "HTTP 500")
    assert first["channel"] == "wecom" and first["target"].startswith("wecom:") and first["next_attempt_at"]
    assert set(first) >= {"kind", "rule", "severity", "from_state", "to_state", "created_at", "sent_at", "delivery_id"}
    assert "user" not in first and "summary" not in first
    clock.advance(10)
    worker.run_once()
    sent = get(client, tokens["ivan"], "?status=sent").json()["items"]
    assert sorted(r["number"] for r in sent) == ids and all(r["sent_at"] and r["next_attempt_at"] is None for r in sent)
    metrics = client.get("/metrics", headers={"authorization": f"Bearer {tokens['ivan']}"}).text
    assert 'shoumi_notifications{channel="wecom",status="sent"} 3' in metrics and robot.key not in metrics


@pytest.mark.parametrize("query", ["?status=lost", "?limit=0", "?limit=5000", "?cursor=¹", "?cursor=abc"])
def test_bad_queries_are_400_with_the_reason(api: tuple[TestClient, dict[str, str]], query: str) -> None:
    client, tokens = api
    answer = get(client, tokens["aud"], query)
    assert answer.status_code == 400 and answer.json()["detail"]
