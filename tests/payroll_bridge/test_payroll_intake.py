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


def test_unparseable_case_exits_2_and_no_case_is_filed(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "case.json").write_text("{oops")
    db = tmp_path / "ledger.sqlite3"
    result = cli("--ledger", str(db), "intake", str(tmp_path / "case.json"))
    assert result.code == 2 and result.stdout == "" and "not valid JSON" in result.stderr


# --- issue 14: the same loss twice, signer, confirmers, kind of loss --------------------------------


def test_the_same_documents_under_another_case_id_are_refused(ledger) -> None:  # type: ignore[no-untyped-def]
    assert ledger.intake(payload=json.dumps(case_doc("C-7")), actor="zhao.hr").decision.accepted
    again = case_doc("C-9")
    again["loss"]["documents"] = case_doc("C-7")["loss"]["documents"][:1]
    outcome = ledger.intake(payload=json.dumps(again), actor="zhao.hr")
    assert [r.code for r in outcome.decision.refusals] == ["LOSS_DOCUMENTS_ALREADY_CLAIMED"]
    assert "C-7" in outcome.decision.refusals[0].message
    with pytest.raises(KeyError):
        ledger.case("C-9")


def test_the_same_incident_under_another_case_id_is_refused_unless_hr_states_a_distinct_loss(
    ledger,  # type: ignore[no-untyped-def]
) -> None:
    assert ledger.intake(payload=json.dumps(case_doc("C-7")), actor="zhao.hr").decision.accepted
    again = case_doc("C-9")
    again["incident"] = dict(case_doc("C-7")["incident"], summary=" 将设计图纸复制到个人网盘并外传（C-7）")
    refused = ledger.intake(payload=json.dumps(again), actor="zhao.hr")
    assert [r.code for r in refused.decision.refusals] == ["INCIDENT_ALREADY_CLAIMED"]
    again["distinct_loss"] = {"from_cases": ["C-7"], "by": "zhao.hr", "reason": "第二份图纸"}
    assert [r.code for r in ledger.intake(payload=json.dumps(again), actor="zhao.hr").decision.refusals] == [
        "DISTINCT_LOSS_NOT_BY_HR", "INCIDENT_ALREADY_CLAIMED"]
    again["distinct_loss"]["by"] = "Wang.Fang"
    accepted = ledger.intake(payload=json.dumps(again), actor="zhao.hr")
    assert accepted.decision.accepted, accepted.decision.refusals
    assert accepted.decision.case is not None and accepted.decision.case.distinct_from is not None


def test_a_dismissed_case_still_holds_its_loss(ledger) -> None:  # type: ignore[no-untyped-def]
    assert ledger.intake(payload=json.dumps(case_doc("C-7")), actor="zhao.hr").decision.accepted
    ledger.pause(case_id="C-7", reason="仲裁", actor="zhao.hr")
    ledger.resume(case_id="C-7", award_fen=0, award_ref="驳回", actor="zhao.hr")
    again = case_doc("C-9")
    again["loss"]["documents"] = case_doc("C-7")["loss"]["documents"]
    assert "LOSS_DOCUMENTS_ALREADY_CLAIMED" in {
        r.code for r in ledger.intake(payload=json.dumps(again), actor="zhao.hr").decision.refusals}


def test_an_agreement_signed_by_someone_else_is_refused() -> None:
    doc = case_doc()
    doc["agreement"]["signed_by"] = "E2002"
    assert codes(doc) == {"AGREEMENT_NOT_SIGNED_BY_EMPLOYEE"}
    doc["agreement"]["signed_by"] = "e1001"  # the same id, whatever the case
    assert codes(doc) == set()


@pytest.mark.parametrize("side,by,at,code", [
    ("hr", "E1001", None, "CONFIRMED_BY_EMPLOYEE"),
    ("security", "e1001", None, "CONFIRMED_BY_EMPLOYEE"),
    ("security", "li.wei", "2026-10-01T23:00:00+08:00", "CONFIRMATION_BEFORE_INCIDENT"),
    ("hr", "wang.fang@corp", None, "CONFIRMER_NOT_ACCOUNT_ID"),
    ("hr", "Wang Fang", None, "CONFIRMER_NOT_ACCOUNT_ID"),
])
def test_confirmations_that_make_no_sense_are_refused(side: str, by: str, at: str | None, code: str) -> None:
    doc = case_doc()
    doc["confirmations"][side]["by"] = by
    if at:
        doc["confirmations"][side]["at"] = at
    assert codes(doc) == {code}


def test_two_spellings_of_one_confirmer_cannot_pass_as_two_people() -> None:
    doc = case_doc()
    doc["confirmations"]["security"]["by"] = "wang.fang@corp"
    assert "CONFIRMER_NOT_ACCOUNT_ID" in codes(doc)  # so only one spelling exists: 'wang.fang' on both
    doc["confirmations"]["security"]["by"] = "WANG.FANG"
    assert codes(doc) == {"SAME_PERSON_CONFIRMED_BOTH"}


def test_the_kind_of_loss_is_recorded_and_guangdong_refuses_an_indirect_one() -> None:
    doc = case_doc(region="CN-GD-SZ")
    del doc["loss"]["kind"]
    assert codes(doc) == {"LOSS_KIND_MISSING"}
    doc["loss"]["kind"] = "indirect"
    decision = assess(doc, known_regions=REGIONS, direct_loss_only={"CN-GD-SZ"})
    assert [r.code for r in decision.refusals] == ["LOSS_NOT_DIRECT"]
    shanghai = case_doc()
    shanghai["loss"]["kind"] = "indirect"
    accepted = assess(shanghai, known_regions=REGIONS, direct_loss_only={"CN-GD-SZ"})
    assert accepted.case is not None and accepted.case.loss_kind == "indirect"


def test_the_bundled_table_limits_guangdong_to_the_direct_loss(ledger) -> None:  # type: ignore[no-untyped-def]
    for i, region in enumerate(("CN-GD-SZ", "CN-GD-GZ")):
        doc = case_doc(f"C-{i}", region=region)
        doc["loss"]["kind"] = "indirect"
        refused = ledger.intake(payload=json.dumps(doc), actor="zhao.hr")
        assert [r.code for r in refused.decision.refusals] == ["LOSS_NOT_DIRECT"]


# --- issue 14 item 15: input the intake must refuse, not crash on ------------------------------------


@pytest.mark.parametrize("where", ["loss.amount_fen", "employee.tier", "incident.extra"])
def test_a_fractional_number_anywhere_is_a_recorded_refusal(ledger, where: str) -> None:  # type: ignore[no-untyped-def]
    doc = case_doc()
    parent, key = where.split(".")
    doc[parent][key] = 1.5
    outcome = ledger.intake(payload=json.dumps(doc), actor="zhao.hr")
    assert not outcome.decision.accepted
    assert "NUMBER_NOT_WHOLE" in {r.code for r in outcome.decision.refusals}
    assert ledger.intakes()[-1]["decision"] == "refused"


@pytest.mark.parametrize("text,message", [
    ("[" * 5000 + "]" * 5000, "nested more than"),
    ('{"case_id": "C-1", "loss": {"amount_fen": ' + "9" * 5000 + "}}", "more than 16 digits"),
    ("{oops", "not valid JSON"),
])
def test_hostile_json_is_refused_recorded_truncated_and_exits_2(
    cli: Cli, tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "case.json").write_text(text)
    db = tmp_path / "ledger.sqlite3"
    result = cli("--ledger", str(db), "intake", "--actor", "zhao.hr", str(tmp_path / "case.json"))
    assert result.code == 2 and result.stdout == "" and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM cases").fetchone() == (0,)
        decision, reasons, payload = conn.execute("SELECT decision, reasons, payload FROM intakes").fetchone()
    assert decision == "refused" and json.loads(reasons)[0]["code"] == "MALFORMED"
    assert len(payload) <= 4096 + 64


def test_a_case_file_over_the_size_limit_is_refused_unread(cli: Cli, tmp_path: Path) -> None:
    doc = case_doc()
    doc["incident"]["summary"] = "x" * (2 * 1024 * 1024)
    (tmp_path / "case.json").write_text(json.dumps(doc))
    db = tmp_path / "ledger.sqlite3"
    result = cli("--ledger", str(db), "intake", "--actor", "zhao.hr", str(tmp_path / "case.json"))
    assert result.code == 2 and "larger than" in result.stderr
    with sqlite3.connect(db) as conn:
        (payload,) = conn.execute("SELECT payload FROM intakes").fetchone()
    assert len(payload) < 5000


def test_an_over_long_actor_is_refused(cli: Cli, write_json: Callable[..., Path], tmp_path: Path) -> None:
    result = cli("--ledger", str(tmp_path / "l.sqlite3"), "intake", "--actor", "x" * 60000,
                 str(write_json("case.json", case_doc())))
    assert result.code == 2 and "at most 128 characters" in result.stderr
