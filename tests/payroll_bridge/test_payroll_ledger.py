"""The ledger on a real SQLite file: idempotency, corrections, pause/resume, end of employment, notices."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Clock, case_doc, notify, wages_doc
from payroll_bridge.errors import TransitionRefused
from payroll_bridge.ledger import Ledger
from payroll_bridge.minimum_wage import load_table
from payroll_bridge.period import Period
from payroll_bridge.rules import Binding, Case, PeriodTerms, PeriodWage, schedule
from payroll_bridge.services import parse_wages

import pytest

P = Period.parse


def accept(ledger: Ledger, **kwargs: Any) -> None:
    outcome = ledger.intake(payload=json.dumps(case_doc(**kwargs)), actor="zhao.hr")
    assert outcome.decision.accepted, outcome.decision.refusals


def record(ledger: Ledger, *periods: str, wage_fen: int = 800000, employee_id: str = "E1001") -> Any:
    employee, wages = parse_wages(json.dumps(wages_doc(employee_id, periods, wage_fen)))
    return ledger.record_wages(employee_id=employee, wages=wages, actor="payroll")


def summary(ledger: Ledger, **filters: Any) -> list[tuple[str, str, int, str, str]]:
    return [(str(x.line.period), x.line.case_id, x.line.deduction_fen, x.line.binding.value, x.state)
            for x in ledger.lines(**filters)]


def test_lines_follow_the_engine_and_recording_twice_changes_nothing(ledger: Ledger) -> None:
    accept(ledger)
    first = record(ledger, "2026-12", "2027-01", "2027-02", "2027-03")
    assert summary(ledger) == [
        ("2026-12", "C-7", 160000, "CAP20", "scheduled"), ("2027-01", "C-7", 160000, "CAP20", "scheduled"),
        ("2027-02", "C-7", 160000, "CAP20", "scheduled"), ("2027-03", "C-7", 20000, "BALANCE", "scheduled")]
    assert len(first.changed) == 4
    again = record(ledger, "2026-12", "2027-01", "2027-02", "2027-03")
    assert again.changed == () and again.corrected_periods == ()
    assert ledger.remaining_fen(employee_id="E1001") == {"C-7": 0}


def test_periods_before_the_case_was_confirmed_get_no_line(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-10", "2026-11", "2026-12")
    assert [p for p, *_ in summary(ledger)] == ["2026-11", "2026-12"]


def test_exporting_twice_never_deducts_twice(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01")
    notify(ledger, "C-7")
    batch = ledger.export(period=P("2026-12"), actor="zhao.hr")
    assert batch.export_id == "X-2026-12-001"
    assert [(x.case_id, x.amount_fen, x.idempotency_key) for x in batch.lines] == [
        ("C-7", 160000, "shoumi:C-7:2026-12")]
    second = ledger.export(period=P("2026-12"), actor="zhao.hr")
    assert second.export_id is None and second.lines == () and second.already_exported == 1
    record(ledger, "2026-12", "2027-01")
    assert ledger.export_batch("X-2026-12-001").lines == batch.lines
    assert summary(ledger, period=P("2026-12")) == [("2026-12", "C-7", 160000, "CAP20", "exported")]
    actions = [(e.action, e.subject) for e in ledger.audit_log() if e.action.startswith("export")]
    assert actions == [("export.created", "X-2026-12-001"), ("export.nothing_new", "2026-12")]


def test_wage_correction_recomputes_later_periods_and_reports_past_lines(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01", "2027-02")
    notify(ledger, "C-7")
    ledger.export(period=P("2026-12"), actor="zhao.hr")
    # December's wage was really 3,000 yuan: the exported 1,600 left less than the minimum wage.
    employee, wages = parse_wages(json.dumps({"employee_id": "E1001", "periods": [
        {"period": "2026-12", "wage_fen": 300000, "social_insurance_fen": 0, "housing_fund_fen": 0},
        {"period": "2027-01", "wage_fen": 500000, "social_insurance_fen": 0, "housing_fund_fen": 0}]}))
    result = ledger.record_wages(employee_id=employee, wages=wages, actor="payroll")
    assert result.corrected_periods == (P("2026-12"), P("2027-01"))
    limits = {(str(v.period), v.limit, v.excess_fen) for v in result.violations}
    assert limits == {("2026-12", Binding.FLOOR, 160000 - 26000), ("2026-12", Binding.CAP20, 160000 - 60000)}
    # the exported line stands as a fact; what it took over the floor (the larger excess) is refunded,
    # so December nets 26,000 and the refunded 134,000 is owed again; January follows the real balance
    assert [(str(r.period), r.case_id, r.amount_fen, r.limit) for r in result.refunds] == [
        ("2026-12", "C-7", 134000, Binding.FLOOR)]
    assert summary(ledger) == [
        ("2026-12", "C-7", 160000, "CAP20", "exported"), ("2027-01", "C-7", 100000, "CAP20", "scheduled"),
        ("2027-02", "C-7", 160000, "CAP20", "scheduled")]
    assert ledger.remaining_fen(employee_id="E1001") == {"C-7": 500000 - 26000 - 100000 - 160000}
    assert [(r.amount_fen, r.state) for r in ledger.refunds(employee_id="E1001")] == [(134000, "scheduled")]
    stored = ledger.violations(employee_id="E1001")
    assert {(v["period"], v["limit_name"]) for v in stored} == {("2026-12", "FLOOR"), ("2026-12", "CAP20")}
    audit = [e for e in ledger.audit_log() if e.action == "wages.corrected"]
    assert audit and audit[0].detail["periods"] == ["2026-12", "2027-01"] and len(audit[0].detail["violations"]) == 2
    # reporting the same facts again finds nothing new
    assert ledger.record_wages(employee_id=employee, wages=wages, actor="payroll").violations == ()


def test_pause_and_resume_with_the_award(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01", "2027-02")
    notify(ledger, "C-7")
    ledger.export(period=P("2026-12"), actor="zhao.hr")
    ledger.pause(case_id="C-7", reason="劳动仲裁 京劳仲字(2027)第12号", actor="zhao.hr")
    assert summary(ledger)[1:] == [("2027-01", "C-7", 0, "PAUSED", "scheduled"),
                                   ("2027-02", "C-7", 0, "PAUSED", "scheduled")]
    with pytest.raises(TransitionRefused):
        ledger.pause(case_id="C-7", reason="again", actor="zhao.hr")
    ledger.resume(case_id="C-7", award_fen=200000, award_ref="裁决书 第12号", actor="zhao.hr")
    assert ledger.case("C-7").recoverable_fen == 200000 and ledger.case("C-7").state == "active"
    assert summary(ledger)[1:] == [("2027-01", "C-7", 40000, "BALANCE", "scheduled"),
                                   ("2027-02", "C-7", 0, "BALANCE", "scheduled")]
    actions = [e.action for e in ledger.audit_log()]
    assert actions[-2:] == ["case.paused", "case.resumed"]


def test_award_below_what_was_taken_reports_a_refund_and_zero_dismisses(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01")
    notify(ledger, "C-7")
    ledger.export(period=P("2026-12"), actor="zhao.hr")
    ledger.pause(case_id="C-7", reason="仲裁", actor="zhao.hr")
    result = ledger.resume(case_id="C-7", award_fen=0, award_ref="驳回", actor="zhao.hr")
    assert result.refunds_fen == {"C-7": 160000}
    assert ledger.case("C-7").state == "dismissed"
    assert summary(ledger) == [("2026-12", "C-7", 160000, "CAP20", "exported")]
    with pytest.raises(TransitionRefused):
        ledger.resume(case_id="C-7", award_fen=1, award_ref="x", actor="zhao.hr")


def test_end_of_employment_stops_deductions_and_leaves_the_balance_open(ledger: Ledger) -> None:
    accept(ledger)
    record(ledger, "2026-12", "2027-01", "2027-02")
    result = ledger.end_employment(employee_id="E1001", last_period=P("2027-01"), actor="zhao.hr")
    assert summary(ledger)[-1] == ("2027-02", "C-7", 0, "ENDED", "scheduled")
    assert ledger.remaining_fen(employee_id="E1001") == {"C-7": 180000}
    assert len(result.changed) == 1


def test_two_cases_share_the_limit_oldest_first(ledger: Ledger) -> None:
    accept(ledger, case_id="C-8", loss_fen=100000, confirmed="2026-11-22")
    accept(ledger, case_id="C-7", loss_fen=100000, confirmed="2026-11-20")
    record(ledger, "2026-12")
    assert summary(ledger) == [("2026-12", "C-7", 100000, "BALANCE", "scheduled"),
                               ("2026-12", "C-8", 60000, "CAP20", "scheduled")]


def test_guangdong_needs_a_served_notice_before_export(ledger: Ledger) -> None:
    accept(ledger, region="CN-GD-SZ")
    record(ledger, "2026-12", "2027-01")
    blocked = ledger.export(period=P("2026-12"), actor="zhao.hr")
    assert blocked.lines == () and [b.blocked for b in blocked.blocked] == ["WRITTEN_NOTICE_MISSING"]
    # December deducted nothing, so January plans from the whole balance, and is exported with the notice
    assert summary(ledger) == [("2026-12", "C-7", 0, "CAP20", "exported"),
                               ("2027-01", "C-7", 160000, "CAP20", "scheduled")]
    notify(ledger, "C-7", issued=date(2027, 1, 5))
    batch = ledger.export(period=P("2027-01"), actor="zhao.hr")
    assert [(x.amount_fen, x.notice_id, x.notice_date) for x in batch.lines] == [
        (160000, "N-C-7-20270105", date(2027, 1, 5))]
    assert ledger.remaining_fen(employee_id="E1001") == {"C-7": 340000}


def test_notice_served_after_the_period_does_not_unlock_it(ledger: Ledger) -> None:
    accept(ledger, region="CN-GD-GZ")
    record(ledger, "2026-12")
    notify(ledger, "C-7", issued=date(2027, 1, 2))
    assert ledger.export(period=P("2026-12"), actor="zhao.hr").lines == ()


def test_the_ledger_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path, table=load_table()) as first:
        accept(first)
        record(first, "2026-12")
    with Ledger(path, table=load_table()) as second:
        assert summary(second) == [("2026-12", "C-7", 160000, "CAP20", "scheduled")]
    with sqlite3.connect(path) as conn:
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} >= {
            "cases", "lines", "audit", "intakes", "exports", "notices", "violations", "wages"}


MONTH_WAGE = st.tuples(st.integers(0, 2_000_000), st.integers(0, 200_000), st.integers(0, 100_000))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(months=st.lists(MONTH_WAGE, min_size=1, max_size=6), losses=st.lists(st.integers(1, 900_000),
                                                                           min_size=1, max_size=3))
def test_month_by_month_in_the_ledger_equals_the_engine_all_at_once(tmp_path: Path, months, losses) -> None:
    path = tmp_path / f"prop-{abs(hash((tuple(months), tuple(losses))))}.sqlite3"
    path.unlink(missing_ok=True)
    clock = Clock(datetime(2026, 11, 25, tzinfo=timezone.utc))
    periods = [P("2026-12").shift(i) for i in range(len(months))]
    wages = [PeriodWage(p, w, 0, si, hf) for p, (w, si, hf) in zip(periods, months)]
    with Ledger(path, table=load_table(), clock=clock) as ledger:
        for i, loss in enumerate(losses):
            accept(ledger, case_id=f"C-{i}", loss_fen=loss, confirmed=f"2026-11-{10 + i}")
        for w in wages:  # one payroll month at a time, exporting each as it closes
            ledger.record_wages(employee_id="E1001", wages=[w], actor="payroll")
            for i in range(len(losses)):
                notify(ledger, f"C-{i}", issued=w.period.first_day)
            ledger.export(period=w.period, actor="zhao.hr")
        stored = [(x.line.period, x.line.case_id, x.line.deduction_fen, x.line.binding) for x in ledger.lines()]
    terms = PeriodTerms(274000, True, True)
    cases = [Case(f"C-{i}", date(2026, 11, 10 + i), loss) for i, loss in enumerate(losses)]
    expected = schedule(cases=cases, periods=[(w, terms) for w in wages])
    assert stored == [(x.period, x.case_id, x.deduction_fen, x.binding) for x in expected.lines]
