"""The access request (PIPL §45): an export holds exactly one employee's records and none of another's, is audited
like a reveal, and refuses unknown employees and requests without a reason (service, CLI, API and page)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from collector.audit.models import AuditEntry
from collector.privacy.access import export_person, find_person
from collector.privacy.service import PrivacyError, pseudonym_of
from collector.storage import open_store

from tests.collector.accounts.conftest import make_world, sign_in, csrf_of
from tests.collector.privacy.helpers import Records
from tests.conftest import PerCall

REASON = "the employee's written request of 2026-12-01"


def _two_people(r: Records) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    ids["alice_ev"] = r.events(r.a, on=10, user="alice", n=3)
    ids["bob_ev"] = r.events(r.b, on=10, user="bob", n=2)
    ids["alice_ev"] += r.events(r.a, on=11, user="alice", n=1)
    ids["a_alice"] = r.alert(on=10, user="alice", evidence=ids["alice_ev"][:2])
    ids["a_bob"] = r.alert(on=10, user="bob", evidence=ids["bob_ev"], agent_id="agt-b")
    ids["c_alice"] = r.case(on=12, user="alice", alerts=[ids["a_alice"]], attachment=b"%PDF alice")
    ids["c_bob"] = r.case(on=12, user="bob", alerts=[ids["a_bob"]])
    with r.store.transaction() as tx:
        code = pseudonym_of(tx=tx, user_name="alice")
        tx.append_audit(AuditEntry(1, "ana", "identity.reveal", code, {"reason": "checking the alert"}))
        tx.append_audit(AuditEntry(2, "ana", "alert.status", str(ids["a_alice"]), {"to": "acknowledged"}))
        tx.append_audit(AuditEntry(3, "ana", "alert.status", str(ids["a_bob"]), {"to": "acknowledged"}))
        if hasattr(tx, "put_agreement_employee"):  # the agreements registry (collector/agreements), when there
            from collector.agreements.models import Employee
            tx.put_agreement_employee(Employee("E-1001", "alice", None, "hana", 5))
            tx.put_agreement_employee(Employee("E-1002", "bob", None, "hana", 5))
    ids["alice_code"] = code
    return ids


def test_the_export_holds_exactly_that_employees_records(any_store: Any) -> None:
    r = Records(any_store)
    ids = _two_people(r)
    with any_store.transaction() as tx:
        data = export_person(tx=tx, who="alice", reason=REASON, actor="hana", now_ns=100)
    assert data["person"]["user_name"] == "alice" and data["person"]["pseudonym"] == ids["alice_code"]
    assert {e["id"] for e in data["events"]} == set(ids["alice_ev"])
    assert {e["user"] for e in data["events"]} == {"alice"}
    assert [a["id"] for a in data["alerts"]] == [ids["a_alice"]]
    assert [c["id"] for c in data["cases"]] == [ids["c_alice"]]
    case = data["cases"][0]
    assert case["attachments"][0]["display_name"] == "loss.pdf" and case["comments"][0]["body"] == "looked at alice"
    about = {(e["action"], e["target"]) for e in data["audit"]}
    assert ("identity.reveal", ids["alice_code"]) in about
    assert ("alert.status", str(ids["a_alice"])) in about and ("case.open", str(ids["c_alice"])) in about
    assert ("alert.status", str(ids["a_bob"])) not in about and ("case.open", str(ids["c_bob"])) not in about
    text = json.dumps(data, ensure_ascii=False)
    assert "bob" not in text and not any(e in text for e in ids["bob_ev"])
    if data["agreements"] is not None:
        assert [a["employee"]["employee_id"] for a in data["agreements"]] == ["E-1001"]
    # the request is audited like a reveal: who, for which pseudonym, why; never the name
    with any_store.read() as tx:
        [req] = [e for e in tx.list_audit(cursor=None, limit=50).items if e.action == "privacy.access_request"]
    assert (req.actor, req.target, req.details["reason"]) == ("hana", ids["alice_code"], REASON)
    assert req.details["counts"]["events"] == 4 and "alice" not in json.dumps(dict(req.details))


def test_by_pseudonym_or_payroll_id_the_same_person(any_store: Any) -> None:
    r = Records(any_store)
    ids = _two_people(r)
    with any_store.read() as tx:
        assert find_person(tx=tx, who=ids["alice_code"].lower()).user_name == "alice"
        assert find_person(tx=tx, who="员工-" + ids["alice_code"][2:]).user_name == "alice"
        if hasattr(tx, "get_agreement_employee"):
            assert find_person(tx=tx, who="E-1002").user_name == "bob"
            assert find_person(tx=tx, who="alice").employee_ids == ("E-1001",)


def test_unknown_employees_and_missing_reasons_are_refused_with_nothing_audited(any_store: Any) -> None:
    r = Records(any_store)
    _two_people(r)
    cases = [("mallory", REASON, 404, "holds nothing about 'mallory'"),
             ("P-ZZZZZZZZZZ", REASON, 404, "no person has the pseudonym P-ZZZZZZZZZZ"),
             ("", REASON, 422, "name the employee"),
             ("alice", "because", 422, "needs a reason of 10 to 500")]
    for who, why, status, message in cases:
        with pytest.raises(PrivacyError, match=message) as err:
            with any_store.transaction() as tx:
                export_person(tx=tx, who=who, reason=why, actor="hana", now_ns=100)
        assert err.value.status == status
    with any_store.read() as tx:
        assert not [e for e in tx.list_audit(cursor=None, limit=50).items if e.action == "privacy.access_request"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))


def test_cli_export_writes_a_zip_or_json_and_exits_1_for_an_unknown_employee(tmp_path: Path) -> None:
    data_dir = tmp_path / "collector"
    store = PerCall(open_store(data_dir))
    try:
        ids = _two_people(Records(store))
    finally:
        store.close()
    out = tmp_path / "alice.zip"
    done = _cli("privacy", "export", "alice", "--out", str(out), "--reason", REASON, "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert "4 events, 1 alerts, 1 cases" in done.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == ["README.txt", "person.json"]
        person = json.loads(z.read("person.json"))
    assert {e["id"] for e in person["events"]} == set(ids["alice_ev"])
    as_json = tmp_path / "bob.json"
    assert _cli("privacy", "export", ids["alice_code"], "--out", str(as_json), "--reason", REASON,
                "--data-dir", str(data_dir)).returncode == 0
    assert json.loads(as_json.read_text())["person"]["user_name"] == "alice"

    missing = tmp_path / "nobody.zip"
    gone = _cli("privacy", "export", "mallory", "--out", str(missing), "--reason", REASON, "--data-dir", str(data_dir))
    assert gone.returncode == 1 and "holds nothing about 'mallory'" in gone.stderr
    assert not missing.exists() and not list(tmp_path.glob(".*.tmp"))
    short = _cli("privacy", "export", "alice", "--out", str(missing), "--reason", "x", "--data-dir", str(data_dir))
    assert short.returncode == 2 and "reason" in short.stderr and not missing.exists()


def test_api_and_page_for_hr_it_and_auditors(tmp_path: Path) -> None:
    """HR exports and holds; IT and the auditor read the page but export nothing (IT sees the fleet,
    not what employees did)."""
    store = open_store(tmp_path / "collector")
    try:
        world = make_world(store)
        ids = _two_people(Records(PerCall(store)))
        hr = world.client()
        got = hr.post("/api/v1/privacy/access-requests", json={"employee": "alice", "reason": REASON},
                      headers=world.bearer("hana"))
        assert got.status_code == 200, got.text
        assert {e["id"] for e in got.json()["events"]} == set(ids["alice_ev"])
        assert hr.post("/api/v1/privacy/access-requests", headers=world.bearer("ivan"),
                       json={"employee": ids["alice_code"], "reason": REASON}).status_code == 403
        zipped = hr.post("/api/v1/privacy/access-requests", headers=world.bearer("hana"),
                         json={"employee": ids["alice_code"], "reason": REASON, "format": "zip"})
        assert zipped.status_code == 200 and "attachment" in zipped.headers["content-disposition"]
        assert "person.json" in zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
        unknown = hr.post("/api/v1/privacy/access-requests", json={"employee": "mallory", "reason": REASON},
                          headers=world.bearer("hana"))
        assert unknown.status_code == 404 and "mallory" in unknown.json()["detail"]
        assert hr.post("/api/v1/privacy/access-requests", json={"employee": "alice", "reason": REASON},
                       headers=world.bearer("aud")).status_code == 403
        # the auditor reads the page and the API, and cannot place a hold
        overview = hr.get("/api/v1/privacy", headers=world.bearer("aud"))
        assert overview.status_code == 200
        assert [p["kind"] for p in overview.json()["periods"]] == ["events", "alerts", "cases", "audit",
                                                                   "notifications"]
        assert len(overview.json()["access_requests"]) == 2
        assert hr.post("/api/v1/privacy/holds", json={"user": "bob", "reason": "order 7"},
                       headers=world.bearer("aud")).status_code == 403
        placed = hr.post("/api/v1/privacy/holds", json={"user": "bob", "reason": "arbitration 2026-88"},
                         headers=world.bearer("hana"))
        assert placed.status_code == 201
        bad = hr.post("/api/v1/privacy/holds", json={"reason": "no one"}, headers=world.bearer("hana"))
        assert bad.status_code == 422 and "names a user, an agent or both" in bad.json()["detail"]
        before = len(world.audit())
        assert hr.post("/api/v1/privacy/holds/999/release", headers=world.bearer("hana")).status_code == 404
        assert len(world.audit()) == before  # a refused release writes nothing

        browser = world.client("10.0.0.2")
        assert sign_in(browser, "hana").status_code == 303
        page = browser.get("/privacy")
        assert page.status_code == 200 and "arbitration 2026-88" in page.text and 'href="/privacy"' in page.text
        token = csrf_of(browser, "/privacy")
        form = browser.post("/privacy/holds", data={"user": ids["alice_code"], "reason": "counsel's letter",
                                                    "csrf_token": token}, follow_redirects=False)
        assert form.status_code == 303
        with store.read() as tx:
            holds = {h.user: h for h in tx.list_legal_holds()}
        assert set(holds) == {"alice", "bob"}
        released = browser.post(f"/privacy/holds/{holds['alice'].id}/release", data={"csrf_token": token},
                                follow_redirects=False)
        assert released.status_code == 303
        download = browser.post("/privacy/access", data={"employee": "bob", "reason": REASON, "csrf_token": token})
        assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
        refused = browser.post("/privacy/access", data={"employee": "nobody", "reason": REASON, "csrf_token": token})
        assert refused.status_code == 404 and "nobody" in refused.text
        auditor = world.client("10.0.0.3")
        sign_in(auditor, "aud")
        seen = auditor.get("/privacy")
        assert seen.status_code == 200 and "/privacy/holds" not in seen.text  # no forms without privacy:admin
        analyst = world.client("10.0.0.4")
        sign_in(analyst, "ana")
        assert analyst.get("/privacy").status_code == 403
    finally:
        store.close()
