"""Evidence is appended to an alert, never rewritten; suppressions are time-boxed, owned, audited, and
what they hold back is counted."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from collector.alerts.service import raise_alert
from collector.detection.service import DetectionStage
from collector.fleet.models import AgentRecord
from collector.ingest.service import IngestService
from collector.people.service import PeopleService
from collector.privacy.service import pseudonym_of
from collector.storage import MemoryStore
from collector.web.app import create_app
from collector.web.timefmt import format_ns

from tests.conftest import ChainWriter, PerCall, _burst


def test_folding_appends_only_new_evidence(any_store: PerCall) -> None:
    with any_store.transaction() as tx:
        first = raise_alert(tx=tx, rule="usb_exfiltration", severity="high", summary="1", now_ns=1,
                            event_ids=["a", "b"], group_key="g")
    with any_store.transaction() as tx:
        folded = raise_alert(tx=tx, rule="usb_exfiltration", severity="high", summary="2", now_ns=2,
                             event_ids=["b", "c", "d"], group_key="g")
    assert folded.id == first.id and folded.evidence_count == 4 and folded.occurrences == 2
    stored = any_store.get_alert(first.id)
    assert stored.event_ids == ("a", "b", "c", "d") and stored.evidence_count == 4 and stored.summary == "2"
    [listed] = any_store.list_alerts(cursor=None, limit=5).items
    assert listed.event_ids == ("a", "b", "c", "d")


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    store = MemoryStore()
    people = PeopleService(session_ttl_ns=10**12)
    key = Ed25519PrivateKey.generate()
    with store.transaction() as tx:
        people.create_user(tx=tx, username="ana", role="security_analyst", password=None, actor="t")
        people.create_user(tx=tx, username="aud", role="auditor", password=None, actor="t")
        tokens = {n: people.create_api_token(tx=tx, username=n, actor="t") for n in ("ana", "aud")}
        tx.add_enroll_token(token_hash="t", created_at_ns=0, expires_at_ns=2**62, created_by="t")
        tx.consume_enroll_token(token_hash="t", now_ns=1, agent=AgentRecord(
            "agt-1", key.public_key().public_bytes_raw(), "ws", "L", "1", 1))
    client = TestClient(create_app(store=store, people=people))
    yield {"store": store, "client": client, "tokens": tokens, "writer": ChainWriter("agt-1", key),
           "ingest": IngestService(store), "stage": DetectionStage(store, rules=_burst(threshold=3, minutes=5))}
    client.close()


def _call(world: dict[str, Any], who: str, method: str, url: str, **kw: Any) -> Any:
    return world["client"].request(method, url, headers={"Authorization": f"Bearer {world['tokens'][who]}"}, **kw)


def _code(world: dict[str, Any], name: str) -> str:
    with world["store"].read() as tx:
        return pseudonym_of(tx=tx, user_name=name)


def _burst_of(world: dict[str, Any], user: str, n: int = 6) -> None:
    world["ingest"].ingest(world["writer"].next(n, user=user, path="/srv/finance/exports/q3.csv"))
    world["stage"].run_until_idle()


def test_a_suppression_holds_back_its_scope_counts_what_it_held_and_expires(world: dict[str, Any]) -> None:
    soon = format_ns(time.time_ns() + 3600 * 10**9)
    made = _call(world, "ana", "POST", "/api/v1/suppressions", json={
        "rule": "read_burst", "user": "etl-bot", "path": "/srv/finance/exports/*",
        "reason": "the nightly export job reads every file", "expires_at": soon})
    assert made.status_code == 201 and made.json()["owner"] == "ana"
    _burst_of(world, "etl-bot")
    _burst_of(world, "alice")
    alerts = _call(world, "ana", "GET", "/api/v1/alerts").json()["items"]
    assert [a["user"] for a in alerts] == [_code(world, "alice")]  # the bot held back, alice not (by pseudonym)
    [listed] = _call(world, "ana", "GET", "/api/v1/suppressions").json()["items"]
    assert listed["suppressed_events"] == 6  # counted, not dropped
    assert _call(world, "ana", "POST", f"/api/v1/suppressions/{listed['id']}/lift").status_code == 200
    _burst_of(world, "etl-bot")
    assert ({a["user"] for a in _call(world, "ana", "GET", "/api/v1/alerts").json()["items"]}
            == {_code(world, "alice"), _code(world, "etl-bot")})
    audit = [e["action"] for e in _call(world, "aud", "GET", "/api/v1/audit").json()["items"]]
    assert "suppression.create" in audit and "suppression.lift" in audit


@pytest.mark.parametrize("body, status", [
    ({"rule": "no_such_rule", "reason": "x"}, 400),
    ({"rule": "read_burst", "reason": "x", "expires_in_days": 200}, 400),
    ({"rule": "read_burst", "reason": "x", "past": True}, 400),
    ({"rule": "read_burst", "reason": "x", "path": "/*"}, 400),
    ({"rule": "read_burst", "reason": ""}, 400),
])
def test_a_suppression_without_a_bound_or_a_reason_is_refused(world: dict[str, Any], body: dict[str, Any],
                                                               status: int) -> None:
    days = body.pop("expires_in_days", 1)
    when = time.time_ns() + (-1 if body.pop("past", False) else 1) * days * 86_400 * 10**9
    reply = _call(world, "ana", "POST", "/api/v1/suppressions", json={**body, "expires_at": format_ns(when)})
    assert reply.status_code == status, reply.text
    assert _call(world, "aud", "POST", "/api/v1/suppressions", json={
        "rule": "read_burst", "reason": "x", "expires_at": format_ns(time.time_ns() + 10**12)}).status_code == 403


def test_closing_as_false_positive_with_a_suppression_keeps_the_next_burst_from_alerting(world: dict[str, Any]) -> None:
    _burst_of(world, "etl-bot")
    [alert] = _call(world, "ana", "GET", "/api/v1/alerts").json()["items"]
    closed = _call(world, "ana", "POST", f"/api/v1/alerts/{alert['id']}/status", json={
        "status": "closed", "outcome": "false_positive",
        "suppress": {"reason": "the nightly export job", "days": 30, "path": "/srv/finance/exports/*"}})
    assert closed.status_code == 200 and closed.json()["suppression"]["owner"] == "ana"
    _burst_of(world, "etl-bot")  # the same job again: held back, and counted
    _burst_of(world, "alice")  # someone else: still alerts
    users = [a["user"] for a in _call(world, "ana", "GET", "/api/v1/alerts?status=open").json()["items"]]
    assert users == [_code(world, "alice")]
    [held] = _call(world, "ana", "GET", "/api/v1/suppressions").json()["items"]
    assert held["suppressed_events"] == 6 and held["user"] == _code(world, "etl-bot")
