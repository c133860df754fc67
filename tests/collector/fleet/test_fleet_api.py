"""The fleet API and pages on a real SQLite store: tokens made, listed and revoked; agents listed with their
health, filtered and paged; labels and revocation; who sees what; every action audited."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from collector.events.models import StoredBatch, StoredEvent
from collector.fleet import service as fleet
from collector.fleet.health import record_health
from collector.fleet.liveness import Heard
from collector.fleet.models import AgentRecord, Liveness
from collector.secrets import secret_hash

from tests.collector.accounts.conftest import World, csrf_of, sign_in, world  # noqa: F401 (the fixture)


def _enroll(world: World, agent_id: str, *, hostname: str, version: str = "0.1.0", labels: tuple[str, ...] = (),
            os_name: str = "Linux 6.1.0-18-amd64") -> None:
    with world.store.transaction() as tx:
        tx.add_enroll_token(token_hash=f"t-{agent_id}", created_at_ns=0, expires_at_ns=2**62, created_by="t",
                            labels=labels)
        assert tx.consume_enroll_token(token_hash=f"t-{agent_id}", now_ns=1, agent=AgentRecord(
            agent_id, b"k" * 32, hostname, os_name, version, 1)) is None


def _heartbeat(world: World, agent_id: str, *, seq: int, users: tuple[str, ...] = ("zhang.san",),
               gaps: int = 0, spool: int = 7, skew_ns: int = 2_000_000_000) -> None:
    events = [StoredEvent(agent_id=agent_id, epoch=1, seq=seq + i, id=f"{agent_id}-{seq + i}", kind="file.read",
                          time_ns=10**18 + seq + i, path="/srv/x", user=u, attributes={})
              for i, u in enumerate(users)]
    n = len(events)
    events.append(StoredEvent(agent_id=agent_id, epoch=1, seq=seq + n, id=f"{agent_id}-{seq + n}",
                              kind="agent.heartbeat", time_ns=10**18 + seq + n, path="", user="",
                              attributes={"spool_unacked_events": spool, "spool_unsealed": 1, "spool_bytes": 4096,
                                          "spool_refused_pending": 0, "capture_gaps": gaps, "version": "0.1.0",
                                          "interval_s": 30, "connected": True}))
    with world.store.transaction() as tx:
        head = tx.chain_head(agent_id)
        tx.store_batch(StoredBatch(agent_id, 1, seq, seq + n, bytes([seq % 256]) * 32, bytes(32), b"s" * 64, b"c", 5),
                       events, expected_head=head)
        agent = tx.get_agent(agent_id)
        assert agent is not None
        fleet.record_heard(tx=tx, agent=agent, heard=Heard(Liveness.ACTIVE, 10**18, 30.0))
        record_health(tx=tx, agent=agent, events=events, received_ns=10**18, skew_ns=skew_ns)


def _ivan(world: World) -> dict[str, str]:
    return world.bearer("ivan")


def test_it_makes_a_token_for_a_batch_lists_it_without_its_value_and_revokes_it(world: World) -> None:
    c = world.client()
    made = c.post("/api/v1/enroll-tokens", headers=_ivan(world),
                  json={"name": "finance laptops", "expires_hours": 48, "max_uses": 200,
                        "labels": ["dept:finance", "floor-3"]})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["token"].startswith("se_") and body["id"] == secret_hash(body["token"])
    assert (body["max_uses"], body["uses"], body["labels"], body["state"]) == (200, 0, ["dept:finance", "floor-3"],
                                                                               "active")
    listed = c.get("/api/v1/enroll-tokens", headers=_ivan(world)).json()["items"]
    assert [t["id"] for t in listed] == [body["id"]] and "token" not in listed[0]
    assert body["token"] not in json.dumps(listed)
    assert c.post(f"/api/v1/enroll-tokens/{body['id']}/revoke", headers=_ivan(world)).json()["revoked"] is True
    assert c.post(f"/api/v1/enroll-tokens/{body['id']}/revoke", headers=_ivan(world)).json()["revoked"] is False
    assert c.get("/api/v1/enroll-tokens", headers=_ivan(world)).json()["items"][0]["state"] == "revoked"
    assert c.post(f"/api/v1/enroll-tokens/{'0' * 64}/revoke", headers=_ivan(world)).status_code == 404
    actions = [e.action for e in world.audit()]
    assert actions.count("enroll_token.create") == 1 and actions.count("enroll_token.revoke") == 2
    created = next(e for e in world.audit() if e.action == "enroll_token.create")
    assert created.actor == "ivan" and created.details["max_uses"] == 200 and body["token"] not in json.dumps(
        created.details)


@pytest.mark.parametrize(("body", "says"), [
    ({"max_uses": 0}, "max_uses"), ({"max_uses": 100_001}, "max_uses"), ({"labels": ["Finance"]}, "label"),
    ({"labels": ["a b"]}, "label"), ({"labels": [f"l{i}" for i in range(17)]}, "at most 16"),
    ({"expires_hours": 0}, "expires_hours"), ({"expires_hours": 0.001}, "between 1 minute"),
    ({"name": "x" * 101}, "name"), ({"name": "a\x00b"}, "control"),
])
def test_a_bad_token_request_is_refused_and_makes_nothing(world: World, body: dict[str, Any], says: str) -> None:
    answer = world.client().post("/api/v1/enroll-tokens", headers=_ivan(world), json=body)
    assert 400 <= answer.status_code < 500 and says in answer.text, answer.text
    with world.store.read() as tx:
        assert tx.list_enroll_tokens() == []


def test_the_fleet_lists_health_filters_pages_and_hides_configuration_from_security(world: World) -> None:
    _enroll(world, "agt-a", hostname="ws-finance-01", labels=("dept:finance",))
    _enroll(world, "agt-b", hostname="ws-it-01", version="0.0.9")
    _enroll(world, "agt-c", hostname="ws-finance-02", labels=("dept:finance",))
    _heartbeat(world, "agt-a", seq=1, users=("zhang.san", "li.si"), gaps=2)
    with world.store.transaction() as tx:
        tx.add_certificate(serial=11, agent_id="agt-a", not_before_ns=0, not_after_ns=2**62)
    c = world.client()
    page = c.get("/api/v1/agents", headers=_ivan(world)).json()
    assert [a["hostname"] for a in page["items"]] == ["ws-finance-01", "ws-finance-02", "ws-it-01"]
    a = page["items"][0]
    assert (a["status"], a["labels"], a["health"]["spool_depth"], a["health"]["capture_gaps"],
            a["health"]["clock_skew_ms"]) == ("online", ["dept:finance"], 8, 2, 2000)
    assert all(re.fullmatch(r"P-[0-9A-Z]+", p) for p in a["health"]["users"]) and len(a["health"]["users"]) == 2
    assert "zhang.san" not in json.dumps(page)  # people by pseudonym
    assert a["certificate_expires"] is not None and page["items"][2]["version_outdated"] is True
    assert page["counts"]["online"] == 1 and page["counts"]["offline"] == 2
    # filters, order, cursor paging
    got = c.get("/api/v1/agents?label=dept:finance&sort=hostname&order=desc", headers=_ivan(world)).json()
    assert [x["agent_id"] for x in got["items"]] == ["agt-c", "agt-a"]
    assert [x["agent_id"] for x in c.get("/api/v1/agents?status=online", headers=_ivan(world)).json()["items"]] == [
        "agt-a"]
    first = c.get("/api/v1/agents?limit=2", headers=_ivan(world)).json()
    second = c.get(f"/api/v1/agents?limit=2&cursor={first['next_cursor']}", headers=_ivan(world)).json()
    assert [x["agent_id"] for x in first["items"] + second["items"]] == ["agt-a", "agt-c", "agt-b"]
    assert second["next_cursor"] is None
    for bad in ("status=gone", "sort=colour", "order=up", "cursor=nonsense", "limit=0", "limit=201"):
        assert c.get(f"/api/v1/agents?{bad}", headers=_ivan(world)).status_code in (400, 422), bad
    # security sees health, not configuration; the auditor reads both; HR nothing
    sec = c.get("/api/v1/agents", headers=world.bearer("ana")).json()["items"][0]
    assert "labels" not in sec and "policy" not in sec and sec["health"]["capture_gaps"] == 2
    assert c.get("/api/v1/agents?label=dept:finance", headers=world.bearer("ana")).status_code == 403
    assert "labels" in c.get("/api/v1/agents", headers=world.bearer("aud")).json()["items"][0]
    assert c.get("/api/v1/agents", headers=world.bearer("hana")).status_code == 403


def test_an_agents_detail_has_its_heartbeat_history_labels_and_revocation(world: World) -> None:
    _enroll(world, "agt-a", hostname="ws-01")
    _heartbeat(world, "agt-a", seq=1, gaps=0)
    _heartbeat(world, "agt-a", seq=10, gaps=3, spool=50)
    c = world.client()
    detail = c.get("/api/v1/agents/agt-a", headers=_ivan(world)).json()
    assert [h["capture_gaps"] for h in detail["heartbeats"]] == [3, 0]  # newest first
    assert detail["heartbeats"][0]["spool_depth"] == 51
    assert c.get("/api/v1/agents/agt-nope", headers=_ivan(world)).status_code == 404
    put = c.put("/api/v1/agents/agt-a/labels", headers=_ivan(world), json={"labels": ["lab", "dept:it", "lab"]})
    assert put.json()["labels"] == ["dept:it", "lab"]
    assert c.put("/api/v1/agents/agt-a/labels", headers=_ivan(world), json={"labels": ["Bad!"]}).status_code == 400
    assert c.put("/api/v1/agents/agt-a/labels", headers=world.bearer("ana"), json={"labels": []}).status_code == 403
    assert c.put("/api/v1/agents/agt-nope/labels", headers=_ivan(world), json={"labels": []}).status_code == 404
    assert c.post("/api/v1/agents/agt-a/revoke", headers=world.bearer("aud")).status_code == 403
    assert c.post("/api/v1/agents/agt-a/revoke", headers=_ivan(world)).json()["revoked"] is True
    assert c.get("/api/v1/agents/agt-a", headers=_ivan(world)).json()["status"] == "revoked"
    audit = {e.action: e for e in world.audit()}
    assert audit["agent.labels"].details == {"before": [], "after": ["dept:it", "lab"]}
    assert audit["agent.revoke"].actor == "ivan"


def test_the_pages_make_a_token_once_and_revoke_an_agent_after_a_confirmation(world: World) -> None:
    _enroll(world, "agt-a", hostname="ws-01")
    c = world.client()
    sign_in(c, "ivan")
    page = c.post("/fleet/tokens", data={"csrf_token": csrf_of(c, "/fleet/tokens"), "name": "batch", "max_uses": "5",
                                         "expires_hours": "24", "labels": "dept:x, lab"})
    assert page.status_code == 201 and page.headers["cache-control"] == "no-store"
    token = re.search(r'<code id="token-value">([^<]+)</code>', page.text).group(1)
    listing = c.get("/fleet/tokens").text
    assert token not in listing and "0 / 5" in listing
    bad = c.post("/fleet/tokens", data={"csrf_token": csrf_of(c, "/fleet/tokens"), "max_uses": "0"})
    assert bad.status_code == 400 and 'id="token-error"' in bad.text
    assert "ws-01" in c.get("/fleet").text
    assert 'id="revoke-link"' in c.get("/fleet/agents/agt-a").text
    confirm = c.get("/fleet/agents/agt-a/revoke")
    assert 'id="revoke-confirm"' in confirm.text
    unticked = c.post("/fleet/agents/agt-a/revoke", data={"csrf_token": csrf_of(c, "/fleet/agents/agt-a/revoke")},
                      follow_redirects=False)
    assert unticked.status_code == 303 and unticked.headers["location"].endswith("/revoke")
    with world.store.read() as tx:
        assert tx.get_agent("agt-a").revoked_at_ns is None
    done = c.post("/fleet/agents/agt-a/revoke", data={"csrf_token": csrf_of(c, "/fleet/agents/agt-a/revoke"),
                                                     "confirm": "yes"})
    assert done.status_code == 200 and 'data-status="revoked"' in done.text
    security = world.client("10.0.0.2")
    sign_in(security, "ana")
    seen = security.get("/fleet/agents/agt-a").text
    assert 'id="revoke-link"' not in seen and 'id="labels-form"' not in seen and 'id="agent-labels"' not in seen
    assert security.get("/fleet/tokens").status_code == 403


def test_a_certificate_about_to_expire_raises_one_alert_per_agent(world: World) -> None:
    _enroll(world, "agt-a", hostname="ws-01")
    _enroll(world, "agt-b", hostname="ws-02")
    now = 10**18
    with world.store.transaction() as tx:
        tx.add_certificate(serial=1, agent_id="agt-a", not_before_ns=0, not_after_ns=now + 3600 * 10**9)
        tx.add_certificate(serial=2, agent_id="agt-b", not_before_ns=0, not_after_ns=now + 5 * 86400 * 10**9)
        raised = fleet.check_certificates(tx=tx, now_ns=now)
    assert [(a.rule, a.agent_id) for a in raised] == [("certificate_expiring", "agt-a")]
    with world.store.transaction() as tx:
        assert fleet.check_certificates(tx=tx, now_ns=now + 10**9) == []  # one open alert: nothing new
        assert tx.open_agent_alerts(agent_ids=["agt-a", "agt-b"], rules=fleet.HEALTH_RULES) == {
            "agt-a": (("certificate_expiring", raised[0].id),)}
    row = world.client().get("/api/v1/agents", headers=_ivan(world)).json()["items"][0]
    assert row["alerts"] == [{"rule": "certificate_expiring", "id": raised[0].id}] and row["certificate_expiring"]
    browser = world.client()
    sign_in(browser, "ivan")
    assert "证书即将到期" in browser.get("/fleet").text  # the badge, in Chinese by default


def test_the_policy_an_agent_reports_is_shown_to_those_who_read_configuration(world: World) -> None:
    from collector.policy.models import AgentPolicyState

    _enroll(world, "agt-a", hostname="ws-01")
    with world.store.transaction() as tx:
        tx.put_agent_policy_state(AgentPolicyState("agt-a", 5, applied_name="finance", applied_version=3,
                                                   applied_sha256="ab" * 32, applied_source="collector",
                                                   applied_at_ns=5, refused_name="finance", refused_version=4,
                                                   refused_reason="glob matches /", refused_at_ns=6))
    c = world.client()
    row = c.get("/api/v1/agents", headers=_ivan(world)).json()["items"][0]
    assert row["policy"] == {"name": "finance", "version": 3, "source": "collector", "refused_name": "finance",
                             "refused_version": 4, "refused_reason": "glob matches /"}
    assert "policy" not in c.get("/api/v1/agents", headers=world.bearer("ana")).json()["items"][0]
    sign_in(c, "ivan")
    assert "finance v3" in c.get("/fleet").text and "glob matches /" in c.get("/fleet/agents/agt-a").text
