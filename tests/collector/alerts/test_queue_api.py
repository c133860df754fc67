"""The queue's API: filters, sorts, cursors, counts, groups by person, saved filters, assignment, bulk actions
on ids and on a filter (capped, counted first, one audit row per alert), closure reasons, and a false positive
that becomes a suppression in the same step."""

from __future__ import annotations

import time
from typing import Any

import pytest

from collector.alerts.queue import BULK_CAP
from collector.alerts.service import raise_alert
from collector.storage.sql.schema import alerts as alerts_table
from collector.web.timefmt import format_ns

from tests.collector.alerts.conftest import SECOND, T0, World


def _ids(answer: dict) -> list[int]:
    return [a["id"] for a in answer["items"]]


def test_filters_by_rule_severity_status_person_agent_time_and_assignee(world: World) -> None:
    a = world.alert(rule="usb_exfiltration", user="alice", severity="high", at=T0)
    b = world.alert(rule="read_burst", user="bob", severity="low", agent="agt-2", at=T0 + 10 * SECOND)
    c = world.alert(rule="read_burst", user="alice", severity="medium", at=T0 + 20 * SECOND)
    world.post("ana", f"/api/v1/alerts/{c.id}/assign", {"assignee": "bo"})
    world.post("ana", f"/api/v1/alerts/{b.id}/status", {"status": "acknowledged"})
    cases = {
        (("rule", "read_burst"),): [c.id, b.id],
        (("rule", "read_burst,usb_exfiltration"),): [c.id, b.id, a.id],
        (("severity", "high"),): [a.id],
        (("status", "acknowledged"),): [b.id],
        (("user", world.code("alice")),): [c.id, a.id],
        (("user", world.code("alice").lower().replace("p-", "员工-")),): [c.id, a.id],  # as a page might show it
        (("agent", "agt-2"),): [b.id],
        (("since", format_ns(T0 + 10 * SECOND)),): [c.id, b.id],
        (("until", "2025-12-01T08:00:10+08:00"),): [a.id],  # any zone
        (("assignee", "bo"),): [c.id],
        (("assignee", "none"),): [b.id, a.id],
        (("user", "P-0000000000"),): [],  # nobody has it: nothing, not everything
        (("rule", "read_burst"), ("user", world.code("bob"))): [b.id],
    }
    for params, want in cases.items():
        answer = world.get("ana", "/api/v1/alerts", **dict(params))
        assert answer.status_code == 200, (params, answer.text)
        assert _ids(answer.json()) == want, params
    assert _ids(world.get("bo", "/api/v1/alerts", assignee="me").json()) == [c.id]


def test_people_are_pseudonyms_everywhere_the_api_shows_them(world: World) -> None:
    a = world.alert(user="alice", summary="alice read 412 files in /home/alice/finance between 22:10 and 22:25")
    listed = world.get("ana", "/api/v1/alerts").json()
    detail = world.get("ana", f"/api/v1/alerts/{a.id}").json()
    groups = world.get("ana", "/api/v1/alerts/groups").json()
    for body in (listed, detail, groups):
        assert "alice" not in str(body), body
    assert listed["items"][0]["user"] == world.code("alice")
    assert detail["summary"] == f"{world.code('alice')} read 412 files in /home/{world.code('alice')}/finance between 22:10 and 22:25"


@pytest.mark.parametrize("params, reason", [
    ({"rule": "no_such_rule"}, "unknown rule"), ({"severity": "huge"}, "unknown severity"),
    ({"status": "deleted"}, "unknown status"), ({"sort": "random"}, "unknown sort"),
    ({"since": "yesterday"}, "RFC 3339"), ({"until": "2026-12-01T00:00:00"}, "no zone"),
    ({"cursor": "¹"}, "invalid cursor"), ({"cursor": "12_34"}, "invalid cursor"),
    ({"cursor": "99999999999999999999"}, "invalid cursor"), ({"sort": "severity", "cursor": "3"}, "invalid cursor"),
    ({"user": "x" * 65}, "user"), ({"agent": "agt\x00-1"}, "control characters"),
    ({"assignee": "ana\x07"}, "control characters"),
])
def test_a_bad_filter_is_a_400_with_its_reason(world: World, params: dict, reason: str) -> None:
    answer = world.get("ana", "/api/v1/alerts", **params)
    assert answer.status_code == 400 and reason in answer.json()["detail"], answer.text


def test_a_flood_never_pushes_a_real_alert_out_of_sight(world: World) -> None:
    real = world.alert(rule="usb_exfiltration", user="alice", at=T0)
    with world.store.transaction() as tx:
        from collector.alerts.service import raise_alert

        for i in range(1500):  # a malformed-batch storm, each its own alert
            raise_alert(tx=tx, rule="agent_malformed", severity="medium", agent_id="agt-2", now_ns=T0 + i + 1,
                        summary=f"refused {i}")
    counts = world.get("ana", "/api/v1/alerts/counts").json()
    assert counts["by_rule"] == {"usb_exfiltration": 1, "agent_malformed": 1500} and counts["total"] == 1501
    assert counts["by_status"] == {"open": 1501}
    assert _ids(world.get("ana", "/api/v1/alerts", rule="usb_exfiltration").json()) == [real.id]
    assert _ids(world.get("ana", "/api/v1/alerts", sort="severity", limit=1).json()) == [real.id]
    seen, cursor = [], None
    for _ in range(10):  # paging through reaches everything, the oldest last
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = world.get("ana", "/api/v1/alerts", **params).json()
        seen += _ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 1501 == len(set(seen)) and seen[-1] == real.id


def test_grouping_by_person_counts_each_and_links_to_their_queue(world: World) -> None:
    for _ in range(3):
        world.alert(user="alice", rule="read_burst", severity="high", at=T0)
        world.alert(user="alice", rule="first_access", severity="medium", at=T0)  # no group key: each its own
    world.alert(user="bob", severity="low")
    world.alert(user="", rule="agent_silent", severity="medium")  # no person: not a group
    body = world.get("ana", "/api/v1/alerts/groups").json()
    assert [(g["user"], g["total"], g["open"], g["severe"]) for g in body["items"]] == [
        (world.code("alice"), 6, 6, 3), (world.code("bob"), 1, 1, 0)]
    assert body["items"][0]["url"] == f"/alerts?user={world.code('alice')}"
    first = world.get("ana", "/api/v1/alerts/groups", limit=1).json()
    assert len(first["items"]) == 1 and first["next_cursor"] == "1"
    rest = world.get("ana", "/api/v1/alerts/groups", limit=1, cursor=first["next_cursor"]).json()
    assert rest["items"][0]["user"] == world.code("bob") and rest["next_cursor"] is None


def test_saved_filters_are_per_analyst_and_kept_in_canonical_form(world: World) -> None:
    made = world.post("ana", "/api/v1/alerts/filters", {"name": "USB, open", "query": "?status=open&rule=usb_exfiltration&junk=1"})
    assert made.status_code == 201, made.text
    assert made.json()["query"] == "rule=usb_exfiltration&status=open"
    assert world.post("ana", "/api/v1/alerts/filters", {"name": "USB, open", "query": ""}).status_code == 409
    assert world.post("ana", "/api/v1/alerts/filters", {"name": "bad", "query": "rule=nope"}).status_code == 400
    assert world.post("aud", "/api/v1/alerts/filters", {"name": "x", "query": ""}).status_code == 403
    assert [f["name"] for f in world.get("ana", "/api/v1/alerts/filters").json()["items"]] == ["USB, open"]
    assert world.get("bo", "/api/v1/alerts/filters").json()["items"] == []
    assert world.delete("bo", f"/api/v1/alerts/filters/{made.json()['id']}").status_code == 404  # not bo's
    assert world.delete("ana", f"/api/v1/alerts/filters/{made.json()['id']}").status_code == 200
    assert world.get("ana", "/api/v1/alerts/filters").json()["items"] == []
    assert {"alert_filter.save", "alert_filter.delete"} <= {e.action for e in world.audit()}


def test_assignment_to_me_to_an_analyst_and_to_nobody(world: World) -> None:
    a = world.alert()
    url = f"/api/v1/alerts/{a.id}/assign"
    assert world.post("ana", url, {"assignee": "me"}).json()["assignee"] == "ana"
    assert world.post("ana", url, {"assignee": "bo"}).json()["assignee"] == "bo"
    assert world.post("ana", url, {"assignee": "hana"}).status_code == 422  # HR does not triage alerts
    assert world.post("ana", url, {"assignee": "nobody-such"}).status_code == 422
    assert world.post("aud", url, {"assignee": "me"}).status_code == 403
    assert world.post("ana", url, {"assignee": None}).json()["assignee"] is None
    moves = [(e.details["from"], e.details["to"]) for e in world.audit() if e.action == "alert.assign"]
    assert moves == [(None, "ana"), ("ana", "bo"), ("bo", None)]


def test_closing_needs_a_closure_reason_and_knows_four(world: World) -> None:
    alerts = [world.alert(rule=r) for r in ("read_burst", "usb_exfiltration", "after_hours", "first_access")]
    assert world.post("ana", f"/api/v1/alerts/{alerts[0].id}/status", {"status": "closed"}).status_code == 422
    assert world.post("ana", f"/api/v1/alerts/{alerts[0].id}/status",
                      {"status": "closed", "outcome": "nonsense"}).status_code == 400
    for alert, outcome in zip(alerts, ("true_positive", "false_positive", "benign", "duplicate")):
        closed = world.post("ana", f"/api/v1/alerts/{alert.id}/status", {"status": "closed", "outcome": outcome})
        assert closed.status_code == 200 and closed.json()["outcome"] == outcome
    reopened = world.post("ana", f"/api/v1/alerts/{alerts[0].id}/status", {"status": "open"}).json()
    assert reopened["status"] == "open" and reopened["outcome"] is None  # reopening clears the reason


def test_reopening_an_alert_whose_incident_has_another_open_alert_is_a_409_not_a_crash(world: World) -> None:
    """The store keeps one open alert a group (raise_alert folds into it): reopening an older alert of the
    same incident while a newer one is open is refused with the newer one's id, alone and in bulk."""
    def grouped(at: int) -> Any:
        with world.store.transaction() as tx:
            return raise_alert(tx=tx, rule="agent_tamper", severity="high", agent_id="agt-1", now_ns=at,
                               group_key="agent_tamper|agt-1|bad_signature", summary="a batch was refused")
    first = grouped(T0)
    closed = world.post("ana", f"/api/v1/alerts/{first.id}/status", {"status": "closed", "outcome": "true_positive"})
    assert closed.status_code == 200, closed.text
    second = grouped(T0 + SECOND)  # the same incident again, after the close: a new open alert
    assert second.id != first.id
    again = world.post("ana", f"/api/v1/alerts/{first.id}/status", {"status": "open"})
    assert again.status_code == 409 and f"alert {second.id} " in again.json()["detail"], again.text
    assert world.get("ana", f"/api/v1/alerts/{first.id}").json()["status"] == "closed"  # nothing half-written
    other = world.alert(rule="first_access", user="u9")
    world.post("ana", f"/api/v1/alerts/{other.id}/status", {"status": "closed", "outcome": "benign"})
    bulk = world.post("ana", "/api/v1/alerts/bulk", {"ids": [first.id, other.id], "action": "reopen"})
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["changed"] == 1 and [s["id"] for s in bulk.json()["skipped"]] == [first.id]
    # two closed alerts of one incident reopened in one request: the first is, the second is skipped
    world.post("ana", f"/api/v1/alerts/{second.id}/status", {"status": "closed", "outcome": "true_positive"})
    both = world.post("ana", "/api/v1/alerts/bulk", {"ids": [first.id, second.id], "action": "reopen"})
    assert both.status_code == 200 and both.json()["changed"] == 1, both.text
    assert len([a for a in (first, second) if world.get("ana", f"/api/v1/alerts/{a.id}").json()["status"] == "open"]) == 1


def test_a_false_positive_becomes_a_suppression_in_the_same_step(world: World) -> None:
    a = world.alert(rule="read_burst", user="etl-bot")
    answer = world.post("ana", f"/api/v1/alerts/{a.id}/status", {
        "status": "closed", "outcome": "false_positive",
        "suppress": {"reason": "the nightly export reads every file", "days": 14, "path": "/srv/exports/*"}})
    assert answer.status_code == 200, answer.text
    made = answer.json()["suppression"]
    assert (made["rule"], made["user"], made["path"], made["owner"]) == ("read_burst", world.code("etl-bot"),
                                                                        "/srv/exports/*", "ana")
    assert made["expires_at"][:10] == format_ns(a.created_at_ns)[:10] or made["expires_at"] > made["created_at"]
    with world.store.read() as tx:
        [s] = tx.list_suppressions()
    assert s.user == "etl-bot" and 13.9 < (s.expires_at_ns - s.created_at_ns) / 86_400e9 <= 14
    actions = [e.action for e in world.audit()]
    assert actions[-2:] == ["alert.status", "suppression.create"]  # one transaction, both audited
    b = world.alert(rule="usb_exfiltration", user="alice")
    default = world.post("ana", f"/api/v1/alerts/{b.id}/status", {
        "status": "closed", "outcome": "false_positive", "suppress": {"reason": "test stick"}}).json()["suppression"]
    assert default["path"] is None
    c = world.alert(rule="after_hours", user="alice")
    for bad in ({"status": "closed", "outcome": "benign", "suppress": {"reason": "x"}},  # only for false positives
                {"status": "closed", "outcome": "false_positive", "suppress": {"reason": "x", "days": 91}},
                {"status": "closed", "outcome": "false_positive", "suppress": {"reason": "x", "path": "/*"}}):
        assert world.post("ana", f"/api/v1/alerts/{c.id}/status", bad).status_code in (400, 422), bad
    assert world.get("ana", f"/api/v1/alerts/{c.id}").json()["status"] == "open"  # nothing half-written
    agentless = world.alert(rule="agent_silent", user="")
    assert world.post("ana", f"/api/v1/alerts/{agentless.id}/status", {
        "status": "closed", "outcome": "false_positive", "suppress": {"reason": "no person"}}).status_code == 422


def test_bulk_on_ids_changes_each_alert_and_audits_each(world: World) -> None:
    alerts = [world.alert(rule="first_access", user=f"u{i}") for i in range(5)]
    ids = [a.id for a in alerts[:3]]
    world.post("ana", f"/api/v1/alerts/{ids[0]}/status", {"status": "acknowledged"})
    answer = world.post("ana", "/api/v1/alerts/bulk", {"ids": [*ids, 999_999], "action": "acknowledge"}).json()
    assert answer["matched"] == 4 and answer["changed"] == 2 and answer["skipped_count"] == 2
    assert {s["id"] for s in answer["skipped"]} == {ids[0], 999_999}
    closed = world.post("ana", "/api/v1/alerts/bulk", {"ids": ids, "action": "close", "outcome": "benign"}).json()
    assert closed["changed"] == 3
    rows = [e for e in world.audit() if e.action == "alert.status" and e.details.get("bulk") == closed["bulk"]]
    assert sorted(int(e.target) for e in rows) == sorted(ids)  # one row per alert, naming the bulk request
    [summary] = [e for e in world.audit() if e.action == "alert.bulk" and e.target == closed["bulk"]]
    assert summary.details["changed"] == 3 and summary.details["outcome"] == "benign"
    assert world.post("ana", "/api/v1/alerts/bulk", {"ids": ids, "action": "close"}).status_code == 422
    assert world.post("aud", "/api/v1/alerts/bulk", {"ids": ids, "action": "acknowledge"}).status_code == 403
    assert world.post("ana", "/api/v1/alerts/bulk", {"action": "acknowledge"}).status_code == 422  # ids or filter
    assigned = world.post("ana", "/api/v1/alerts/bulk", {"ids": [a.id for a in alerts], "action": "assign",
                                                          "assignee": "bo"}).json()
    assert assigned["changed"] == 5
    assert _ids(world.get("ana", "/api/v1/alerts", assignee="bo").json()) == sorted((a.id for a in alerts), reverse=True)


def test_bulk_on_a_filter_counts_first_then_closes_everything_it_matches(world: World) -> None:
    noisy = [world.alert(rule="first_access", user="etl-bot") for _ in range(7)]
    other = world.alert(rule="first_access", user="alice")
    flt = {"rule": ["first_access"], "user": world.code("etl-bot"), "status": ["open"]}
    dry = world.post("ana", "/api/v1/alerts/bulk", {"filter": flt, "action": "close", "outcome": "false_positive",
                                                    "dry_run": True}).json()
    assert (dry["dry_run"], dry["action"], dry["matched"], dry["changed"], dry["bulk"]) == (True, "close", 7, 0, None)
    assert all(a["status"] == "open" for a in world.get("ana", "/api/v1/alerts").json()["items"])  # only counted
    stale = world.post("ana", "/api/v1/alerts/bulk", {"filter": flt, "action": "close", "outcome": "false_positive",
                                                      "expected": 6})
    assert stale.status_code == 409  # the count confirmed is not what matches now
    done = world.post("ana", "/api/v1/alerts/bulk", {
        "filter": flt, "action": "close", "outcome": "false_positive", "expected": 7,
        "suppress": {"reason": "the ETL robot's job", "days": 30}}).json()
    assert done["changed"] == 7 and len(done["suppressions"]) == 1  # one suppression per rule and person
    statuses = {a["id"]: a["status"] for a in world.get("ana", "/api/v1/alerts", limit=100).json()["items"]}
    assert all(statuses[a.id] == "closed" for a in noisy) and statuses[other.id] == "open"


def test_bulk_is_capped(world: World) -> None:
    too_many = world.post("ana", "/api/v1/alerts/bulk", {"ids": list(range(1, BULK_CAP + 2)), "action": "acknowledge"})
    assert too_many.status_code == 413 and str(BULK_CAP) in too_many.json()["detail"]
    rows = [dict(rule="agent_malformed", severity="medium", severity_rank=2, status="open", user_name="",
                 agent_id="agt-2", created_at_ns=T0 + i, updated_at_ns=T0 + i, event_ids="[]", summary="x",
                 last_event_ns=T0 + i) for i in range(BULK_CAP + 1)]
    with world.store.transaction() as tx:  # a storm of refusals, stored at once
        tx._conn.execute(alerts_table.insert(), rows)
    capped = world.post("ana", "/api/v1/alerts/bulk", {"filter": {"rule": ["agent_malformed"]}, "action": "acknowledge"})
    assert capped.status_code == 413 and f"{BULK_CAP + 1} alerts match" in capped.json()["detail"]
    assert world.get("ana", "/api/v1/alerts/counts", status="acknowledged").json()["total"] == 0  # nothing done


def test_a_suppression_is_made_and_listed_by_pseudonym(world: World) -> None:
    world.alert(user="etl-bot")
    code = world.code("etl-bot")
    made = world.post("ana", "/api/v1/suppressions", {"rule": "read_burst", "user": code, "reason": "the robot",
                                                     "expires_at": format_ns(time.time_ns() + 86_400 * SECOND)})
    assert made.status_code == 201, made.text
    assert made.json()["user"] == code
    with world.store.read() as tx:
        assert tx.list_suppressions()[0].user == "etl-bot"  # what detection matches on
    assert [s["user"] for s in world.get("ana", "/api/v1/suppressions").json()["items"]] == [code]
    assert "etl-bot" not in str(world.get("ana", "/api/v1/suppressions").json())
    assert world.post("ana", "/api/v1/suppressions", {"rule": "read_burst", "user": "P-0000000000", "reason": "x",
                                                     "expires_at": format_ns(T0)}).status_code == 404


def test_texts_with_control_characters_are_refused_before_the_database(world: World) -> None:
    a = world.alert()
    for url, body in (("/api/v1/alerts/filters", {"name": "a\x00b", "query": ""}),
                      ("/api/v1/alerts/bulk", {"filter": {"agent": "\x00"}, "action": "acknowledge"}),
                      (f"/api/v1/alerts/{a.id}/assign", {"assignee": "bo\x00"}),
                      (f"/api/v1/alerts/{a.id}/status", {"status": "closed", "outcome": "false_positive",
                                                          "suppress": {"reason": "nul\x00"}}),
                      ("/api/v1/identities/reveal", {"pseudonym": world.code("alice"), "reason": "a reason\x00 here"})):
        answer = world.post("ana", url, body)
        assert answer.status_code == 400 and "control characters" in answer.text, (url, answer.text)
    assert world.get("ana", f"/api/v1/alerts/{a.id}").json()["status"] == "open"
