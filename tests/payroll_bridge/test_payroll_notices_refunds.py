"""Issue 14 items 6-9: refunds of over-deductions, the notice gate in every region, objections within
the appeal window, and the limitation the notice states (a real SQLite ledger, the real renderers)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from typing import Any

import pytest

from conftest import case_doc, notify, wages_doc
from payroll_bridge.errors import LedgerError, TransitionRefused, UnknownRecord
from payroll_bridge.exports import additional_salary_records, render_csv
from payroll_bridge.ledger import Ledger
from payroll_bridge.notice import render_text
from payroll_bridge.period import Period
from payroll_bridge.rules import Binding
from payroll_bridge.services import build_notice, parse_wages
from payroll_bridge.settings import ExportSettings, FrappeSettings, PayrollSettings

P = Period.parse


def accept(ledger: Ledger, **kwargs: Any) -> None:
    outcome = ledger.intake(payload=json.dumps(case_doc(**kwargs)), actor="zhao.hr")
    assert outcome.decision.accepted, outcome.decision.refusals


def record(ledger: Ledger, *periods: str, wage_fen: int = 800000, si: int = 84000, hf: int = 56000) -> Any:
    employee, wages = parse_wages(json.dumps(wages_doc("E1001", periods, wage_fen, si, hf)))
    return ledger.record_wages(employee_id=employee, wages=wages, actor="payroll")


# --- item 6: refunds --------------------------------------------------------------------------------


def test_a_correction_that_finds_an_over_deduction_refunds_it_in_the_next_export(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01")
    notify(ledger, "C-7")
    ledger.export(period=P("2026-12"), actor="zhao.hr")
    # December was really 3,000 yuan with 300 of contributions: floor base 2,700 < 2,740, so all
    # 1,600 taken left less than the minimum wage and is owed back.
    result = record(ledger, "2026-12", wage_fen=300000, si=20000, hf=10000)
    assert {v.limit for v in result.violations} == {Binding.FLOOR, Binding.CAP20}
    assert [(r.amount_fen, r.limit) for r in result.refunds] == [(160000, Binding.FLOOR)]
    assert ledger.remaining_fen(employee_id="E1001") == {"C-7": 500000 - 160000}  # January only
    notify(ledger, "C-7", issued=date(2027, 1, 2))
    batch = ledger.export(period=P("2027-01"), actor="zhao.hr")
    (refund,) = batch.refunds
    assert (refund.idempotency_key, refund.amount_fen, refund.over_periods) == (
        "shoumi-refund:C-7:2027-01", 160000, (P("2026-12"),))
    rows = list(csv.DictReader(io.StringIO(render_csv(batch, ExportSettings()))))
    assert [(r["component_code"], r["amount_fen"], r["binding"]) for r in rows] == [
        ("SHOUMI_LOSS", "160000", "CAP20"), ("SHOUMI_LOSS_REFUND", "-160000", "FLOOR")]
    docs = [r["doc"] for r in additional_salary_records(batch, FrappeSettings(company="ACME"))]
    assert [(d["salary_component"], d["amount"]) for d in docs] == [
        ("Confidentiality Loss Recovery", "1600.00"), ("Confidentiality Loss Refund", "1600.00")]
    assert ledger.export_batch(batch.export_id or "").refunds == batch.refunds
    # paid once: correcting again with the same facts owes nothing more
    assert record(ledger, "2026-12", wage_fen=300000, si=20000, hf=10000).refunds == ()
    assert [r.state for r in ledger.refunds()] == ["exported"]


def test_an_award_below_what_was_taken_is_refunded_and_the_notice_says_so(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01", "2027-02")
    notify(ledger, "C-7")
    ledger.export(period=P("2026-12"), actor="zhao.hr")
    ledger.export(period=P("2027-01"), actor="zhao.hr")
    ledger.pause(case_id="C-7", reason="仲裁", actor="zhao.hr")
    result = ledger.resume(case_id="C-7", award_fen=200000, award_ref="裁决书 第12号", actor="zhao.hr")
    assert result.refunds_fen == {"C-7": 320000 - 200000}
    assert ledger.remaining_fen(employee_id="E1001") == {"C-7": 0}
    text = render_text(build_notice(ledger, case_id="C-7", settings=PayrollSettings(), issued_on=date(2027, 2, 3)))
    assert "2027年1月多扣 1,200.00 元（超过应赔偿金额），将在下一次发放工资时退还。" in text


# --- item 7: the notice gate cannot be opened with anything ------------------------------------------


def test_only_an_issued_notice_served_on_or_after_its_issue_opens_the_gate(ledger: Ledger) -> None:
    accept(ledger, region="CN-GD-SZ")
    record(ledger, "2026-12")
    with pytest.raises(UnknownRecord, match="never issued"):
        ledger.notice_served(case_id="C-7", notice_id="N-anything", served_on=date(2026, 12, 1), actor="zhao.hr")
    notice_id = ledger.next_notice_id(case_id="C-7", issued_on=date(2026, 11, 26))
    ledger.record_notice(case_id="C-7", notice_id=notice_id, issued_on=date(2026, 11, 26),
                         amounts={P("2026-12"): 160000}, actor="zhao.hr")
    with pytest.raises(LedgerError, match="cannot have been served"):
        ledger.notice_served(case_id="C-7", notice_id=notice_id, served_on=date(2026, 11, 25), actor="zhao.hr")
    assert [e.action for e in ledger.audit_log()] == ["intake.accepted", "notice.issued"]


def test_a_notice_issued_before_wages_were_known_states_no_amount_and_opens_nothing(ledger: Ledger) -> None:
    accept(ledger, region="CN-GD-GZ")
    notify(ledger, "C-7")  # no wages yet: the notice states no month
    assert ledger.notices(case_id="C-7")[0]["amounts"] == {}
    record(ledger, "2026-12")
    batch = ledger.export(period=P("2026-12"), actor="zhao.hr")
    assert batch.lines == () and [b.blocked for b in batch.blocked] == ["NOTICE_AMOUNT_MISMATCH"]


def test_a_changed_amount_needs_a_new_notice(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01")
    notify(ledger, "C-7")  # states 1,600 for both months
    record(ledger, "2027-01", wage_fen=500000, si=0, hf=0)  # January is now 1,000
    ledger.export(period=P("2026-12"), actor="zhao.hr")
    january = ledger.export(period=P("2027-01"), actor="zhao.hr")
    assert [b.blocked for b in january.blocked] == ["NOTICE_AMOUNT_MISMATCH"]


def test_a_new_notice_with_the_new_amount_opens_the_month(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01")
    notify(ledger, "C-7")
    record(ledger, "2027-01", wage_fen=500000, si=0, hf=0)
    second = notify(ledger, "C-7", issued=date(2026, 11, 26))
    assert second == "N-C-7-20261126-2"
    batch = ledger.export(period=P("2027-01"), actor="zhao.hr")
    assert [(x.amount_fen, x.notice_id) for x in batch.lines] == [(100000, second)]


# --- item 8: the appeal window and objections, in every region ---------------------------------------


def test_no_region_deducts_without_a_served_notice(ledger: Ledger) -> None:
    accept(ledger)  # Shanghai: no written-notice rule of its own
    record(ledger, "2026-12")
    batch = ledger.export(period=P("2026-12"), actor="zhao.hr")
    assert batch.lines == () and [b.blocked for b in batch.blocked] == ["WRITTEN_NOTICE_MISSING"]


def test_exports_wait_for_the_appeal_window_to_pass(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01")
    notice_id = ledger.next_notice_id(case_id="C-7", issued_on=date(2026, 12, 20))
    ledger.record_notice(case_id="C-7", notice_id=notice_id, issued_on=date(2026, 12, 20),
                         amounts={P("2026-12"): 160000, P("2027-01"): 160000}, actor="zhao.hr")
    with pytest.raises(LedgerError, match="after today"):
        ledger.notice_served(case_id="C-7", notice_id=notice_id, served_on=date(2026, 12, 20), actor="zhao.hr")
    ledger._clock.at_least(date(2026, 12, 20))  # type: ignore[attr-defined]
    ledger.notice_served(case_id="C-7", notice_id=notice_id, served_on=date(2026, 12, 20), actor="zhao.hr")
    ledger._clock.at_least(date(2026, 12, 30))  # type: ignore[attr-defined]  # 10 of 15 days gone
    december = ledger.export(period=P("2026-12"), actor="zhao.hr")
    assert [b.blocked for b in december.blocked] == ["APPEAL_WINDOW_OPEN"]
    ledger._clock.at_least(date(2027, 1, 5))  # type: ignore[attr-defined]  # 2026-12-20 + 15 days has passed
    record(ledger, "2027-01")  # January after December deducted nothing: 1,600 still
    january = ledger.export(period=P("2027-01"), actor="zhao.hr")
    assert [(x.amount_fen, x.notice_id) for x in january.lines] == [(160000, notice_id)]


def test_an_objection_within_the_window_pauses_the_case_until_hr_answers(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01")
    notice_id = notify(ledger, "C-7", issued=date(2026, 11, 26))
    late = date(2026, 11, 26) + timedelta(days=16)
    with pytest.raises(LedgerError, match="outside the appeal window"):
        ledger.object_to_notice(case_id="C-7", notice_id=notice_id, received_on=late, reason="金额有误",
                                actor="zhao.hr")
    ledger.object_to_notice(case_id="C-7", notice_id=notice_id, received_on=date(2026, 12, 5), reason="金额有误",
                            actor="zhao.hr")
    assert ledger.case("C-7").state == "objected"
    assert [(x.line.deduction_fen, x.line.binding) for x in ledger.lines()] == [(0, Binding.PAUSED)] * 2
    assert ledger.export(period=P("2026-12"), actor="zhao.hr").lines == ()
    with pytest.raises(TransitionRefused):
        ledger.resume(case_id="C-7", award_fen=1, award_ref="x", actor="zhao.hr")
    ledger.answer_objection(case_id="C-7", response="复核鉴定报告，金额无误", upheld=False, actor="zhao.hr")
    assert ledger.case("C-7").state == "active"
    assert [x.line.deduction_fen for x in ledger.lines(period=P("2027-01"))] == [160000]
    actions = [e.action for e in ledger.audit_log()]
    assert actions[-3:] == ["objection.received", "export.created", "objection.rejected"]


def test_an_upheld_objection_withdraws_the_claim_and_refunds_it(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01")
    notice_id = notify(ledger, "C-7")
    ledger.export(period=P("2026-12"), actor="zhao.hr")
    ledger.object_to_notice(case_id="C-7", notice_id=notice_id, received_on=date(2026, 12, 10), reason="非本人所为",
                            actor="zhao.hr")
    result = ledger.answer_objection(case_id="C-7", response="查明系他人冒用账号", upheld=True, actor="zhao.hr")
    assert ledger.case("C-7").state == "dismissed" and result.refunds_fen == {"C-7": 160000}


# --- item 9: the limitation and the employer's own deadline ------------------------------------------


def test_the_notice_states_the_limitation_rightly_and_the_employers_deadline(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01", "2027-02")
    ledger.end_employment(employee_id="E1001", last_period=P("2027-01"), actor="zhao.hr")
    text = render_text(build_notice(ledger, case_id="C-7", settings=PayrollSettings(), issued_on=date(2026, 11, 26)))
    assert "仲裁时效为一年" not in text
    assert "不受一年仲裁时效期间的限制" in text and "自劳动关系终止之日起一年内" in text
    assert "第二十七条第四款" in text
    assert "即2028年1月31日前提出" in text  # the balance of 1,800 left when employment ends in January 2027


def test_end_employment_reports_the_claim_deadline(cli, write_json, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"SHOUMI_PAYROLL_LEDGER_PATH": str(tmp_path / "l.sqlite3")}
    assert cli("intake", str(write_json("c.json", case_doc())), env=env).code == 0
    assert cli("wages", str(write_json("w.json", wages_doc(periods=("2026-12",)))), env=env).code == 0
    out = cli("end-employment", "E1001", "--last-period", "2026-12", env=env)
    assert out.code == 0 and out.json()["claim_deadlines"] == {"C-7": "2027-12-31"}
