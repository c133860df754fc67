"""The intake: what it accepts, what it refuses and that it records why (via the CLI and the ledger)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import Cli, case_doc
from payroll_bridge.intake import assess

REGIONS = {"CN-SH", "CN-BJ", "CN-GD-SZ"}


def codes(doc: dict[str, Any]) -> set[str]:
    return {r.code for r in assess(doc, known_regions=REGIONS).refusals}


def test_complete_case_is_accepted_with_the_later_confirmation_as_its_date() -> None:
    doc = case_doc()
    doc["confirmations"]["hr"]["at"] = "2026-11-21T10:00:00+08:00"
    decision = assess(doc, known_regions=REGIONS)
    assert decision.accepted and decision.case is not None
    assert str(decision.case.confirmed_at) == "2026-11-21" and decision.case.loss_fen == 500000


def _without(path: str) -> dict[str, Any]:
    doc = case_doc()
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    del node[last]
    return doc


@pytest.mark.parametrize("doc,code", [
    (_without("confirmations.security"), "SECURITY_CONFIRMATION_MISSING"),
    (_without("confirmations.hr"), "HR_CONFIRMATION_MISSING"),
    (_without("confirmations.hr.by"), "HR_CONFIRMATION_MISSING"),
    (_without("loss.amount_fen"), "LOSS_AMOUNT_MISSING"),
    (_without("loss.documents"), "LOSS_DOCUMENTS_MISSING"),
    (_without("agreement"), "AGREEMENT_MISSING"),
    (_without("agreement.document_sha256"), "AGREEMENT_INCOMPLETE"),
    (_without("agreement.identity_check"), "AGREEMENT_INCOMPLETE"),
    (_without("incident.date"), "INCIDENT_DATE_MISSING"),
    (_without("case_id"), "CASE_ID_MISSING"),
])
def test_missing_pieces_are_refused(doc: dict[str, Any], code: str) -> None:
    assert code in codes(doc)


def test_same_person_on_both_sides_is_refused() -> None:
    doc = case_doc()
    doc["confirmations"]["hr"]["by"] = " Li.Wei "
    assert codes(doc) == {"SAME_PERSON_CONFIRMED_BOTH"}


@pytest.mark.parametrize("signed_at", ["2026-10-02T08:00:00+08:00", "2026-10-05T08:00:00+08:00"])
def test_agreement_signed_on_or_after_the_incident_day_is_refused(signed_at: str) -> None:
    doc = case_doc()
    doc["agreement"]["signed_at"] = signed_at
    assert codes(doc) == {"AGREEMENT_NOT_BEFORE_INCIDENT"}


@pytest.mark.parametrize("amount", [0, -100, 1234.5, "500000", True])
def test_loss_must_be_a_positive_whole_number_of_fen(amount: object) -> None:
    doc = case_doc()
    doc["loss"]["amount_fen"] = amount
    assert codes(doc) == {"LOSS_AMOUNT_MISSING"}


def test_penalty_clause_is_refused() -> None:
    doc = case_doc()
    doc["agreement"]["clause"] = "penalty"
    assert codes(doc) == {"AGREEMENT_CLAUSE_NOT_COMPENSATION"}


def test_documents_need_a_real_hash_and_regions_must_be_known() -> None:
    doc = case_doc(region="CN-XX")
    doc["loss"]["documents"] = [{"title": "发票", "sha256": "not-a-hash"}]
    assert codes(doc) == {"LOSS_DOCUMENTS_MISSING", "REGION_UNKNOWN"}


def test_every_reason_is_given_at_once() -> None:
    assert len(codes({"case_id": "C-1"})) >= 6


def test_cli_intake_accepts_records_and_audits(cli: Cli, write_json: Callable[..., Path], tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    result = cli("--ledger", str(db), "intake", "--actor", "zhao.hr", str(write_json("case.json", case_doc())))
    assert result.code == 0, result.stderr
    assert result.json()["status"] == "accepted"
    again = cli("--ledger", str(db), "intake", "--actor", "zhao.hr", str(write_json("case.json", case_doc())))
    assert again.code == 0 and again.json()["duplicate"] is True
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT case_id, state, loss_fen FROM cases").fetchall() == [("C-7", "active", 500000)]
        audit = conn.execute("SELECT actor, action, subject FROM audit ORDER BY audit_id").fetchall()
    assert audit == [("zhao.hr", "intake.accepted", "C-7"), ("zhao.hr", "intake.accepted", "C-7")]


def test_cli_intake_refusal_exits_1_and_is_recorded_with_reasons(
    cli: Cli, write_json: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "ledger.sqlite3"
    doc = case_doc()
    doc["confirmations"]["hr"]["by"] = "li.wei"
    doc["agreement"]["signed_at"] = "2026-10-03T00:00:00+08:00"
    result = cli("--ledger", str(db), "intake", "--actor", "zhao.hr", str(write_json("case.json", doc)))
    assert result.code == 1
    assert {r["code"] for r in result.json()["refusals"]} == {
        "SAME_PERSON_CONFIRMED_BOTH", "AGREEMENT_NOT_BEFORE_INCIDENT"}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM cases").fetchone() == (0,)
        decision, reasons = conn.execute("SELECT decision, reasons FROM intakes").fetchone()
        action = conn.execute("SELECT action, detail FROM audit").fetchone()
    assert decision == "refused" and "SAME_PERSON_CONFIRMED_BOTH" in reasons
    assert action[0] == "intake.refused" and "AGREEMENT_NOT_BEFORE_INCIDENT" in json.loads(action[1])["refusals"]
    audit = cli("--ledger", str(db), "audit").json()
    assert audit["intakes"][0]["decision"] == "refused"


def test_second_case_with_a_taken_id_is_refused(ledger) -> None:  # type: ignore[no-untyped-def]
    assert ledger.intake(payload=json.dumps(case_doc()), actor="a").decision.accepted
    other = ledger.intake(payload=json.dumps(case_doc(loss_fen=1)), actor="a")
    assert [r.code for r in other.decision.refusals] == ["CASE_ID_TAKEN"]
    assert ledger.case("C-7").loss_fen == 500000


def test_unparseable_case_exits_2_and_records_nothing(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "case.json").write_text("{oops")
    db = tmp_path / "ledger.sqlite3"
    result = cli("--ledger", str(db), "intake", str(tmp_path / "case.json"))
    assert result.code == 2 and result.stdout == "" and "not valid JSON" in result.stderr
