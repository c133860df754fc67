"""The HTTP API and pages through FastAPI's TestClient, on a real SQLite store."""

from __future__ import annotations

import json

from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from collector.detection.rules import ReadBurstRule
from collector.enrollment.service import EnrollmentService
from collector.detection.service import DetectionStage
from collector.ingest.service import IngestService
from collector.people.service import PeopleService
from collector.privacy.service import pseudonym_of
from collector.storage import SqlStore
from collector.web.app import create_app

from tests.conftest import ChainWriter, _burst

PASSWORD = "correct horse battery"


@pytest.fixture
def world(sqlite_store: SqlStore, agent_key: Ed25519PrivateKey) -> Iterator[dict[str, Any]]:
    people = PeopleService(session_ttl_ns=3600 * 10**9)
    for name, role in [("ana", "security_analyst"), ("ivan", "it_admin"), ("hana", "hr"), ("aud", "auditor")]:
        people.create_user(tx=sqlite_store, username=name, role=role, password=PASSWORD, actor="test")
    enroll = EnrollmentService(token_ttl_ns=10**12)
    agent_id = enroll.enroll(tx=sqlite_store, token=enroll.create_token(tx=sqlite_store, actor="t"), public_key=agent_key.public_key().public_bytes_raw(),
                             hostname="ws", os_name="L", agent_version="1", peer="t").agent_id
    ingest = IngestService(sqlite_store)
    writer = ChainWriter(agent_id, agent_key)
    for _ in range(5):
        ingest.ingest(writer.next(5))
    ingest.ingest(writer.next(3, kind="file.write", user="bob"))
    DetectionStage(sqlite_store, rules=_burst(threshold=10, minutes=1)).run_until_idle()
    client = TestClient(create_app(store=sqlite_store, people=people))  # type: ignore[arg-type]
    yield {"client": client, "people": people, "agent_id": agent_id, "store": sqlite_store,
           "tokens": {n: people.create_api_token(tx=sqlite_store, username=n, actor="t") for n in ("ana", "ivan", "hana", "aud")}}
    client.close()


def csrf_of(client: TestClient) -> str:
    """The CSRF token a page gives this client now (the pre-session one, or its session's)."""
    import re

    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert found, "the sign-in page carries a csrf_token field"
    return found.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD, **kwargs: Any) -> Any:
    """Signs in through the form as a browser would: the form's CSRF token with its cookie."""
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_of(client)},
                       **kwargs)


def sign_out(client: TestClient) -> Any:
    """Signs out through the form, with the session's CSRF token."""
    return client.post("/logout", data={"csrf_token": csrf_of(client)})


def _get(world: dict[str, Any], who: str, url: str, **params: Any) -> Any:
    return world["client"].get(url, params=params, headers={"Authorization": f"Bearer {world['tokens'][who]}"})


def test_health_needs_no_token(world: dict[str, Any]) -> None:
    assert world["client"].get("/healthz").status_code == 200


def test_events_page_through_with_the_cursor(world: dict[str, Any]) -> None:
    ids, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        reply = _get(world, "ana", "/api/v1/events", **params)
        assert reply.status_code == 200
        body = reply.json()
        ids.extend(i["id"] for i in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(ids) == 28 == len(set(ids)) and pages == 4
    item = _get(world, "ana", "/api/v1/events", limit=1).json()["items"][0]
    assert set(item) >= {"id", "agent_id", "seq", "kind", "time", "path", "dest_path", "size", "sha256", "user", "pid",
                         "process", "exe", "attributes"}
    assert item["time"].endswith("Z") and item["seq"] == 1


def test_event_filters(world: dict[str, Any]) -> None:
    writes = _get(world, "ana", "/api/v1/events", kind="file.write").json()["items"]
    # people by pseudonym, their name masked in paths too; the filter takes the pseudonym; the name needs a reveal
    [bob] = {w["user"] for w in writes}
    assert bob.startswith("P-") and len(writes) == 3 and not any("bob" in json.dumps(w) for w in writes)
    assert [w["id"] for w in _get(world, "ana", "/api/v1/events", user=bob, kind="file.write").json()["items"]] == \
        [w["id"] for w in writes]
    assert _get(world, "ana", "/api/v1/events", user="P-0000000000").json()["items"] == []  # no such person
    assert "pseudonym" in _get(world, "ana", "/api/v1/events", user="bob").json()["detail"]  # no guessing by name
    revealed = _post(world, "ana", "/api/v1/identities/reveal", {"pseudonym": bob, "reason": "whose writes were these"})
    assert revealed.json()["user"] == "bob"
    assert len(_get(world, "ana", "/api/v1/events", agent_id=world["agent_id"], limit=1000).json()["items"]) == 28
    assert _get(world, "ana", "/api/v1/events", agent_id="agt-other").json()["items"] == []
    assert _get(world, "ana", "/api/v1/events", since="2999-01-01T00:00:00Z").json()["items"] == []
    assert len(_get(world, "ana", "/api/v1/events", since="2000-01-01T08:00:00+08:00", limit=1000).json()["items"]) == 28


@pytest.mark.parametrize("params,reason", [
    ({"kind": "file.teleport"}, "unknown kind"),
    ({"since": "yesterday"}, "RFC 3339"),
    ({"since": "2026-01-01T00:00:00"}, "no zone"),
    ({"limit": 0}, "limit"),
    ({"limit": 5000}, "limit"),
    ({"cursor": "abc"}, "cursor"),
    ({"cursor": "9" * 30}, "cursor"),
])
def test_bad_filters_get_400_with_a_reason(world: dict[str, Any], params: dict[str, Any], reason: str) -> None:
    reply = _get(world, "ana", "/api/v1/events", **params)
    assert reply.status_code == 400
    assert reason in reply.json()["detail"]


def test_alerts_list(world: dict[str, Any]) -> None:
    body = _get(world, "ana", "/api/v1/alerts").json()
    [alert] = body["items"]
    with world["store"].read() as tx:
        alice = pseudonym_of(tx=tx, user_name="alice")
    assert alert["rule"] == "read_burst" and alert["user"] == alice and alert["status"] == "open"  # by pseudonym
    assert alert["evidence_count"] == 25 and body["next_cursor"] is None and "alice" not in str(body)
    assert set(alert) >= {"id", "rule", "severity", "status", "user", "agent_id", "created_at", "updated_at",
                          "evidence_count", "summary", "assignee", "outcome"}
    evidence = _get(world, "ana", f"/api/v1/alerts/{alert['id']}/evidence", limit=1000).json()["items"]
    assert len(evidence) == 25  # the evidence is the detail's, paged


def test_who_may_read_what(world: dict[str, Any]) -> None:
    assert world["client"].get("/api/v1/events").status_code == 401
    assert world["client"].get("/api/v1/events", headers={"Authorization": "Bearer sa_wrong"}).status_code == 401
    assert world["client"].get("/api/v1/events", headers={"Authorization": "Basic abc"}).status_code == 401
    assert _get(world, "ivan", "/api/v1/events").status_code == 403  # IT runs the fleet, not the evidence
    assert _get(world, "hana", "/api/v1/events").status_code == 403
    assert _get(world, "aud", "/api/v1/events").status_code == 200
    assert _get(world, "ivan", "/api/v1/agents").json()["items"][0]["agent_id"] == world["agent_id"]


def test_reading_events_is_audited(world: dict[str, Any]) -> None:
    _get(world, "ana", "/api/v1/events", kind="file.read")
    entries = world["store"].list_audit(cursor=None, limit=5).items
    assert (entries[0].actor, entries[0].action, dict(entries[0].details)) == ("ana", "events.list", {"kind": "file.read"})


def test_alert_page_needs_sign_in(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    assert client.get("/", follow_redirects=False).headers["location"] == "/login?next=/"
    wrong = sign_in(client, "ana", "nope")
    assert wrong.status_code == 401 and "用户名或密码错误" in wrong.text  # Chinese unless the user chose English
    ok = sign_in(client, "ana", follow_redirects=False)
    assert ok.status_code == 303 and "httponly" in ok.headers["set-cookie"].lower()
    page = client.get("/alerts")
    assert page.status_code == 200 and "read_burst" in page.text and "短时大量读取" in page.text
    assert "alice" not in page.text  # pseudonyms by default
    import re

    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[^"]+Z">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>', page.text)
    sign_out(client)
    assert client.get("/", follow_redirects=False).status_code == 303
    actions = [e.action for e in world["store"].list_audit(cursor=None, limit=50).items]
    assert "login" in actions and "login.failed" in actions and "logout" in actions


def test_it_admin_cannot_see_alerts_page(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    sign_in(client, "ivan")
    assert client.get("/alerts").status_code == 403


def _post(world: dict[str, Any], who: str, url: str, body: dict[str, Any]) -> Any:
    return world["client"].post(url, json=body, headers={"Authorization": f"Bearer {world['tokens'][who]}"})


def test_an_alert_moves_only_along_its_lifecycle_and_each_move_is_audited(world: dict[str, Any]) -> None:
    [alert] = _get(world, "ana", "/api/v1/alerts").json()["items"]
    url = f"/api/v1/alerts/{alert['id']}/status"
    assert _post(world, "aud", url, {"status": "closed"}).status_code == 403  # auditors read, change nothing
    assert _post(world, "ana", url, {"status": "acknowledged"}).json()["status"] == "acknowledged"
    assert _post(world, "ana", url, {"status": "closed"}).status_code == 422  # closing says what it was
    closed = _post(world, "ana", url, {"status": "closed", "outcome": "false_positive"}).json()
    assert closed["status"] == "closed" and closed["outcome"] == "false_positive"
    refused = _post(world, "ana", url, {"status": "acknowledged"})
    assert refused.status_code == 409 and "closed" in refused.json()["detail"]
    assert _post(world, "ana", url, {"status": "deleted"}).status_code == 400
    assert _post(world, "ana", "/api/v1/alerts/999999/status", {"status": "closed"}).status_code == 404
    audit = _get(world, "aud", "/api/v1/audit", limit=50).json()["items"]
    moves = [(e["details"]["from"], e["details"]["to"]) for e in audit if e["action"] == "alert.status"]
    assert [e["details"]["outcome"] for e in audit if e["action"] == "alert.status"][0] == "false_positive"
    assert moves == [("acknowledged", "closed"), ("open", "acknowledged")]
    assert _get(world, "ana", "/api/v1/audit").status_code == 403


def test_metrics_tell_ingest_alerts_and_detection_lag(world: dict[str, Any]) -> None:
    assert world["client"].get("/metrics").status_code == 401  # not for anonymous callers
    assert _get(world, "ana", "/metrics").status_code == 403
    text = _get(world, "aud", "/metrics").text
    assert 'shoumi_alerts{rule="read_burst"} 1' in text
    assert "shoumi_detection_lag_events 0" in text  # the fixture ran detection to the end
    assert "alice" not in text  # no personal data
