"""The cases API contract through FastAPI's TestClient on a real SQLite store."""

from __future__ import annotations

from dataclasses import replace

from tests.collector.cases.conftest import World
from tests.collector.cases.flow import confirm_security, hr_records, ok, open_case, step, to_hr_confirmed


def test_open_case_returns_201_open_and_get_shows_state_and_history(world: World) -> None:
    made = ok(world.api("ana", "POST", "/api/v1/cases", json={"alert_ids": world.alerts[:2], "title": "外传图纸"}), 201)
    assert made["state"] == "open" and made["alert_ids"] == world.alerts[:2] and made["title"] == "外传图纸"
    assert made["subject_pseudonym"].startswith("P-") and "alice" not in str(made)
    got = ok(world.api("aud", "GET", f"/api/v1/cases/{made['id']}"))
    assert got["state"] == "open"
    assert [(h["action"], h["from_state"], h["to_state"], h["actor"]) for h in got["history"]] == [
        ("open", None, "open", "ana")]
    with world.store.read() as tx:
        assert tx.cases_for_alert(world.alerts[0]) == [made["id"]]
        audit = [e for e in tx.list_audit(cursor=None, limit=50).items if e.action == "case.open"]
    assert audit and audit[0].actor == "ana" and audit[0].target == str(made["id"])


def test_unknown_alerts_are_named_and_alerts_in_an_open_case_are_refused(world: World) -> None:
    bad = world.api("ana", "POST", "/api/v1/cases", json={"alert_ids": [world.alerts[0], 99999, 88888], "title": "t"})
    assert bad.status_code == 422 and "99999" in bad.json()["detail"] and "88888" in bad.json()["detail"]
    first = open_case(world)
    again = world.api("sam", "POST", "/api/v1/cases", json={"alert_ids": [world.alerts[1]], "title": "t"})
    assert again.status_code == 409 and f"case {first}" in again.json()["detail"]
    assert world.api("ana", "POST", "/api/v1/cases", json={"alert_ids": [], "title": "t"}).status_code in (400, 422)
    assert world.api("ana", "POST", "/api/v1/cases", json={"alert_ids": [world.alerts[2]], "title": "x" * 201}
                     ).status_code in (400, 422)
    # a dismissed case lets its alerts go
    ok(step(world, "ana", first, "dismissed", reason="benign: a sanctioned export"))
    open_case(world, "sam", alerts=[world.alerts[1]])


def test_transition_contract_409_403_422(world: World) -> None:
    cid = open_case(world)
    skip = step(world, "ana", cid, "security_confirmed")
    assert skip.status_code == 409 and "open" in skip.json()["detail"]
    assert step(world, "ana", cid, "sent_to_payroll").status_code == 409
    assert step(world, "hana", cid, "under_review").status_code == 403  # HR may not take security's step
    assert step(world, "aud", cid, "under_review").status_code == 403
    assert world.api("ivan", "GET", f"/api/v1/cases/{cid}").status_code == 403
    assert step(world, "ana", cid, "nonsense").status_code == 422
    no_reason = step(world, "ana", cid, "dismissed")
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    moved = ok(step(world, "ana", cid, "under_review"))
    assert moved["state"] == "under_review" and moved["history"][-1]["before"] == {"state": "open"}
    ok(step(world, "ana", cid, "security_confirmed"))
    early = step(world, "hana", cid, "hr_confirmed")
    assert early.status_code == 422 and "documented loss" in early.json()["detail"]
    assert ok(world.api("hana", "GET", f"/api/v1/cases/{cid}"))["state"] == "security_confirmed"


def test_four_eyes_compares_people_not_roles(world: World) -> None:
    cid = open_case(world)
    confirm_security(world, cid, "ana")
    hr_records(world, cid, "hana")
    # ana becomes HR: still the person who confirmed for security
    with world.store.transaction() as tx:
        ana = tx.get_user("ana")
        assert ana is not None
        tx.update_user(replace(ana, role="hr"))
    refused = step(world, "ana", cid, "hr_confirmed")
    assert refused.status_code == 409 and "four-eyes" in refused.json()["detail"]
    assert world.api("ana", "POST", f"/api/v1/cases/{cid}/hr/notice",
                     json={"served_at": "2026-11-30T10:00", "method": "x"}).status_code == 409
    done = ok(step(world, "hana", cid, "hr_confirmed"))
    assert done["state"] == "hr_confirmed"
    again = step(world, "hana", cid, "hr_confirmed")
    assert again.status_code == 409  # the same person cannot confirm twice


def test_sent_to_payroll_writes_one_outbox_row_in_the_same_transaction(world: World) -> None:
    cid = to_hr_confirmed(world)
    sent = ok(step(world, "hugo", cid, "sent_to_payroll"))
    assert sent["state"] == "sent_to_payroll"
    (h,) = sent["handoffs"]
    assert (h["number"], h["key"], h["state"], h["sent_by"]) == (1, f"{cid}/1", "pending", "hugo")
    with world.store.read() as tx:
        (row,) = tx.handoffs(cid)
    import json

    doc = json.loads(row.payload)
    assert doc["case_id"] == f"SC-{cid}" and doc["confirmations"]["security"]["by"] == "ana"
    assert doc["confirmations"]["hr"]["by"] == "hana" and doc["handoff"]["sent_by"] == "hugo"
    assert doc["loss"]["amount_fen"] == 500000 and doc["employee"] == {"id": "E1001", "name": "张三", "region": "CN-SH"}
    assert ok(world.api("aud", "GET", f"/api/v1/cases/{cid}/handoff"))[0]["status"].startswith("waiting")
    assert world.api("hugo", "POST", f"/api/v1/cases/{cid}/handoff/resend").status_code == 409  # not refused


def test_list_filters_comments_and_assignment(world: World) -> None:
    a = open_case(world, alerts=[world.alerts[0]])
    b = open_case(world, alerts=[world.alerts[1]])
    ok(step(world, "ana", b, "under_review"))
    ok(world.api("ana", "POST", f"/api/v1/cases/{a}/assign", json={"assignee": "sam"}))
    listed = ok(world.api("hana", "GET", "/api/v1/cases", params={"state": "under_review"}))
    assert [c["id"] for c in listed["items"]] == [b]
    assert [c["id"] for c in ok(world.api("aud", "GET", "/api/v1/cases", params={"assignee": "sam"}))["items"]] == [a]
    made = ok(world.api("hana", "POST", f"/api/v1/cases/{a}/comments", json={"body": "<script>alert(1)</script>"}), 201)
    assert made["body"] == "<script>alert(1)</script>"
    assert world.api("aud", "POST", f"/api/v1/cases/{a}/comments", json={"body": "x"}).status_code == 403
    assert [c["author"] for c in ok(world.api("aud", "GET", f"/api/v1/cases/{a}/comments"))] == ["hana"]
    hist = ok(world.api("aud", "GET", f"/api/v1/cases/{a}"))["history"]
    assert [h["action"] for h in hist] == ["open", "assign", "comment"]
    assert hist[1]["before"] == {"assignee": None} and hist[1]["after"] == {"assignee": "sam"}
    assert world.api("aud", "GET", "/api/v1/cases", params={"cursor": "¹"}).status_code == 400


def test_hr_records_refuse_bad_values_with_a_reason_and_store_nothing(world: World) -> None:
    cid = open_case(world)
    confirm_security(world, cid)
    att = ok(world.api("hana", "POST", f"/api/v1/cases/{cid}/attachments",
                       files={"file": ("r.pdf", b"report", "application/pdf")}), 201)
    for amount, words in (("0", "more than 0"), ("-1", "more than 0"), ("1.005", "two decimals"), ("abc", "yuan"),
                          ("1" * 30, "yuan"), ("100000001", "at most"), ("1e5", "yuan")):
        r = world.api("hana", "POST", f"/api/v1/cases/{cid}/hr/loss", json={"amount_yuan": amount,
                                                                             "documents": [att["id"]]})
        assert r.status_code in (400, 422) and (r.status_code == 400 or words in r.json()["detail"]), (amount, r.text)
    no_doc = world.api("hana", "POST", f"/api/v1/cases/{cid}/hr/loss", json={"amount_yuan": "10"})
    assert no_doc.status_code == 422 and "supporting document" in no_doc.json()["detail"]
    late = world.api("hana", "POST", f"/api/v1/cases/{cid}/hr/agreement", json={
        "version": "v1", "document_sha256": "a" * 64, "signed_by": "E1", "signed_at": "2099-01-01T00:00",
        "identity_check": "x"})
    assert late.status_code == 422 and "not before the incident" in late.json()["detail"]
    assert world.api("hana", "POST", f"/api/v1/cases/{cid}/hr/agreement", json={
        "version": "v1", "document_sha256": "a" * 64, "signed_by": "E1", "signed_at": "2024-01-01T00:00",
        "identity_check": "x", "clause": "penalty"}).status_code == 422
    assert world.api("hana", "POST", f"/api/v1/cases/{cid}/hr/bogus", json={}).status_code == 422
    assert world.api("ana", "POST", f"/api/v1/cases/{cid}/hr/loss", json={"amount_yuan": "10"}).status_code == 403
    assert ok(world.api("hana", "GET", f"/api/v1/cases/{cid}/hr")) == []
    good = ok(world.api("hana", "POST", f"/api/v1/cases/{cid}/hr/loss",
                        json={"amount_yuan": "1234.5", "documents": [att["id"]]}), 201)
    assert good["data"]["amount_fen"] == 123450 and good["in_force"]
    # the employee's name is HR's to see
    ok(world.api("hana", "POST", f"/api/v1/cases/{cid}/hr/employee",
                 json={"employee_id": "E1001", "name": "张三", "region": "CN-SH"}), 201)
    seen = {r["kind"]: r["data"] for r in ok(world.api("ana", "GET", f"/api/v1/cases/{cid}/hr"))}
    assert seen["employee"]["name"] is None
    assert "张三" not in world.api("aud", "GET", f"/api/v1/cases/{cid}").text
    with world.store.read() as tx:
        assert all("张三" not in str(e.details) for e in tx.list_audit(cursor=None, limit=200).items)


def test_appeal_within_the_window_and_hr_resolving_it(world: World) -> None:
    from datetime import datetime, timedelta, timezone

    cid = to_hr_confirmed(world)
    assert step(world, "hana", cid, "appealed").status_code == 422  # no appeal on record
    late = (datetime.now(timezone.utc) + timedelta(days=20)).isoformat()
    out = world.api("hana", "POST", f"/api/v1/cases/{cid}/hr/appeal", json={"received_at": late, "reason": "不服"})
    assert out.status_code == 422 and "outside the window" in out.json()["detail"]
    now = datetime.now(timezone.utc).isoformat()
    ok(world.api("hana", "POST", f"/api/v1/cases/{cid}/hr/appeal", json={"received_at": now, "reason": "损失金额有误"}),
       201)
    ok(step(world, "hugo", cid, "appealed"))
    assert step(world, "hugo", cid, "sent_to_payroll").status_code == 409  # nothing goes to payroll under appeal
    assert step(world, "hugo", cid, "hr_confirmed").status_code == 422  # a new decision is needed
    ok(world.api("hugo", "POST", f"/api/v1/cases/{cid}/hr/loss", json={"amount_yuan": "4000", "documents": [
        ok(world.api("hugo", "GET", f"/api/v1/cases/{cid}/attachments"))[0]["id"]]}), 201)
    ok(world.api("hugo", "POST", f"/api/v1/cases/{cid}/hr/decision", json={"text": "核减为 4000 元"}), 201)
    assert step(world, "ana", cid, "hr_confirmed").status_code == 403
    back = ok(step(world, "hugo", cid, "hr_confirmed"))
    assert back["state"] == "hr_confirmed"
    sent = ok(step(world, "hugo", cid, "sent_to_payroll"))
    with world.store.read() as tx:
        import json

        doc = json.loads(tx.handoffs(cid)[0].payload)
    assert doc["loss"]["amount_fen"] == 400000 and doc["confirmations"]["hr"]["by"] == "hugo"
    assert sent["state"] == "sent_to_payroll"
    early = step(world, "hana", cid, "closed")
    assert early.status_code == 422 and "not accepted" in early.json()["detail"]


def test_dismissed_cases_close_and_closed_is_the_end(world: World) -> None:
    cid = open_case(world)
    ok(step(world, "ana", cid, "dismissed", reason="false positive: a sanctioned export"))
    assert step(world, "hana", cid, "closed").status_code == 403
    ok(step(world, "sam", cid, "closed"))
    for to in ("open", "under_review", "dismissed"):
        assert step(world, "ana", cid, to).status_code == 409


def test_ids_out_of_range_are_4xx_never_5xx(world: World) -> None:
    huge = 10**30
    for method, url, body in (("GET", f"/api/v1/cases/{huge}", None), ("GET", f"/api/v1/cases/{2**63}", None),
                              ("GET", "/api/v1/cases/0", None), ("GET", f"/api/v1/cases/1/attachments/{huge}", None),
                              ("POST", f"/api/v1/cases/{huge}/transition", {"to": "under_review"}),
                              ("POST", "/api/v1/cases", {"alert_ids": [huge], "title": "t"}),
                              ("POST", "/api/v1/cases", {"alert_ids": [2**63 - 1], "title": "t"}),
                              ("GET", f"/api/v1/cases/{2**63 - 1}", None)):
        r = world.api("ana", method, url, json=body)
        assert 400 <= r.status_code < 500, (url, body, r.status_code, r.text)
    token = world.login("ana")
    r = world.client.post("/cases", data={"csrf_token": token, "alert_ids": ["9" * 5000], "title": "t"})
    assert r.status_code == 422


def test_close_after_the_schedule_recovered_everything(world: World) -> None:
    cid = to_hr_confirmed(world)
    ok(step(world, "hugo", cid, "sent_to_payroll"))
    with world.store.transaction() as tx:
        (h,) = tx.handoffs(cid)
        tx.save_handoff(replace(h, state="accepted", answer={"status": "accepted"}, schedule={"remaining_fen": 20000}))
    left = step(world, "hugo", cid, "closed")
    assert left.status_code == 422 and "200.00 yuan left" in left.json()["detail"]
    with world.store.transaction() as tx:
        (h,) = tx.handoffs(cid)
        tx.save_handoff(replace(h, schedule={"remaining_fen": 0, "lines": [
            {"period": "2026-12", "deduction_fen": 500000, "state": "scheduled"}]}))
    unpaid = step(world, "hugo", cid, "closed")
    assert unpaid.status_code == 422 and "2026-12" in unpaid.json()["detail"]
    with world.store.transaction() as tx:
        (h,) = tx.handoffs(cid)
        tx.save_handoff(replace(h, schedule={"remaining_fen": 0, "lines": [
            {"period": "2026-12", "deduction_fen": 500000, "binding": "BALANCE", "state": "exported"}, "junk", {}]}))
    closed = ok(step(world, "hugo", cid, "closed"))
    assert closed["state"] == "closed" and [x["period"] for x in closed["handoffs"][0]["schedule"]] == ["2026-12"]


def test_a_confirmer_the_bridge_would_not_accept_is_said_before_sending(world: World) -> None:
    with world.store.transaction() as tx:
        world.people.create_user(tx=tx, username="li.wei@corp", role="security_analyst", password=None, actor="t")
        world.tokens["li.wei@corp"] = world.people.create_api_token(tx=tx, username="li.wei@corp", actor="t")
    cid = to_hr_confirmed(world, sec="li.wei@corp")
    refused = step(world, "hugo", cid, "sent_to_payroll")
    assert refused.status_code == 422 and "li.wei@corp" in refused.json()["detail"]
    with world.store.read() as tx:
        assert tx.handoffs(cid) == [] and tx.get_case(cid).state == "hr_confirmed"  # type: ignore[union-attr]
