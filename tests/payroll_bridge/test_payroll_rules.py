"""The deduction rule on hand-picked cases: each binding, ties, ordering, rounding."""

from __future__ import annotations

from datetime import date

import pytest

from payroll_bridge.period import Period
from payroll_bridge.rules import (
    Binding,
    CapBase,
    Case,
    PeriodTerms,
    PeriodWage,
    cap_fen,
    headroom_fen,
    schedule,
    schedule_period,
)

SH = PeriodTerms(minimum_wage_fen=274000, excludes_social_insurance=True, excludes_housing_fund=True)
SZ = PeriodTerms(minimum_wage_fen=252000, excludes_social_insurance=False, excludes_housing_fund=False)
P = Period.parse


def wage(period: str, fen: int, *, excluded: int = 0, si: int = 0, hf: int = 0) -> PeriodWage:
    return PeriodWage(P(period), fen, excluded, si, hf)


def test_issue_example_is_bound_by_the_20_percent_cap() -> None:
    result = schedule(
        cases=[Case("C-7", date(2026, 11, 20), 500000)],
        periods=[(wage("2026-12", 800000, si=84000, hf=56000), SH)],
    )
    (line,) = result.lines
    assert (line.deduction_fen, line.cap_fen, line.headroom_fen) == (160000, 160000, 386000)
    assert line.binding is Binding.CAP20 and line.balance_after_fen == 340000
    assert result.remaining_fen == {"C-7": 340000}


def test_cap_rounds_down_to_the_fen() -> None:
    assert cap_fen(wage("2026-12", 800004), SH) == 160000  # 160000.8 -> 160000
    assert cap_fen(wage("2026-12", 9), SH) == 1


def test_low_wage_is_bound_by_the_minimum_wage_floor() -> None:
    # 3,000 yuan less 300 of contributions leaves 2,700 < 2,740 in Shanghai: nothing may go.
    result = schedule(cases=[Case("C-1", date(2026, 1, 1), 100000)],
                      periods=[(wage("2026-12", 300000, si=20000, hf=10000), SH)])
    (line,) = result.lines
    assert line.deduction_fen == 0 and line.headroom_fen == 0 and line.binding is Binding.FLOOR


def test_contributions_count_where_the_region_includes_them() -> None:
    w = wage("2026-12", 300000, si=20000, hf=10000)
    assert headroom_fen(w, SH) == 0
    assert headroom_fen(w, SZ) == 300000 - 252000


def test_excluded_items_are_removed_before_the_floor() -> None:
    w = wage("2026-12", 400000, excluded=100000)  # 1,000 yuan of overtime does not count
    assert headroom_fen(w, SZ) == 300000 - 252000
    assert cap_fen(w, SZ) == 80000  # the cap is on the whole wage due


def test_headroom_binds_when_below_the_cap() -> None:
    result = schedule(cases=[Case("C-1", date(2026, 1, 1), 10**7)], periods=[(wage("2026-12", 300000), SZ)])
    (line,) = result.lines
    assert line.deduction_fen == 48000 and line.binding is Binding.FLOOR and line.cap_fen == 60000


def test_balance_runs_out_and_is_named_first() -> None:
    result = schedule(cases=[Case("C-1", date(2026, 1, 1), 1000)], periods=[(wage("2026-12", 800000), SH)])
    (line,) = result.lines
    assert (line.deduction_fen, line.binding, line.balance_after_fen) == (1000, Binding.BALANCE, 0)


def test_tie_between_floor_and_cap_names_the_floor() -> None:
    # wage W with no contributions: cap = W/5, headroom = W - M; equal when W = 1.25 M.
    terms = PeriodTerms(minimum_wage_fen=200000, excludes_social_insurance=True, excludes_housing_fund=True)
    out = schedule_period(wage=wage("2026-12", 250000), terms=terms,
                          cases=[Case("C-1", date(2026, 1, 1), 10**6)], balances={"C-1": 10**6}, ended=False)
    (line,) = out.lines
    assert line.cap_fen == line.headroom_fen == line.deduction_fen == 50000
    assert line.binding is Binding.FLOOR


def test_tie_between_balance_and_cap_names_the_balance() -> None:
    result = schedule(cases=[Case("C-1", date(2026, 1, 1), 160000)], periods=[(wage("2026-12", 800000), SH)])
    assert result.lines[0].binding is Binding.BALANCE and result.lines[0].deduction_fen == 160000


def test_oldest_case_first_then_case_id_and_limits_are_shared() -> None:
    cases = [
        Case("C-9", date(2026, 3, 1), 50000),
        Case("C-2", date(2026, 5, 1), 500000),
        Case("C-1", date(2026, 5, 1), 500000),
    ]
    result = schedule(cases=cases, periods=[(wage("2026-12", 800000, si=84000, hf=56000), SH)])
    by_case = {line.case_id: line for line in result.lines}
    assert [line.case_id for line in result.lines] == ["C-9", "C-1", "C-2"]
    assert by_case["C-9"].deduction_fen == 50000 and by_case["C-9"].binding is Binding.BALANCE
    assert by_case["C-1"].deduction_fen == 110000 and by_case["C-1"].binding is Binding.CAP20
    assert by_case["C-2"].deduction_fen == 0 and by_case["C-2"].binding is Binding.CAP20
    assert sum(line.deduction_fen for line in result.lines) == 160000


def test_paused_case_takes_nothing_and_leaves_the_allowance_to_others() -> None:
    cases = [Case("C-1", date(2026, 1, 1), 500000, paused=True), Case("C-2", date(2026, 2, 1), 500000)]
    result = schedule(cases=cases, periods=[(wage("2026-12", 800000), SH)])
    c1, c2 = result.lines
    assert (c1.deduction_fen, c1.binding, c1.balance_after_fen) == (0, Binding.PAUSED, 500000)
    assert (c2.deduction_fen, c2.binding) == (160000, Binding.CAP20)


def test_nothing_after_employment_ends_and_the_balance_stays_open() -> None:
    result = schedule(
        cases=[Case("C-1", date(2026, 1, 1), 500000)],
        periods=[(wage("2027-01", 800000), SH), (wage("2026-12", 800000), SH), (wage("2027-02", 800000), SH)],
        employment_ends=P("2027-01"),
    )
    assert [(str(x.period), x.deduction_fen, x.binding) for x in result.lines] == [
        ("2026-12", 160000, Binding.CAP20),
        ("2027-01", 160000, Binding.CAP20),  # the last month of employment follows the same limits
        ("2027-02", 0, Binding.ENDED),
    ]
    assert result.remaining_fen == {"C-1": 180000}


def test_zero_wage_month_deducts_nothing() -> None:
    result = schedule(cases=[Case("C-1", date(2026, 1, 1), 500000)], periods=[(wage("2026-12", 0), SZ)])
    assert result.lines[0].deduction_fen == 0 and result.lines[0].binding is Binding.FLOOR


def test_a_local_cap_on_the_wage_less_contributions() -> None:
    terms = PeriodTerms(274000, True, True, cap_percent=20, cap_base=CapBase.WAGE_LESS_CONTRIBUTIONS)
    assert cap_fen(wage("2026-12", 800000, si=84000, hf=56000), terms) == 132000


def test_settled_lines_consume_the_allowance_and_report_violations() -> None:
    cases = [Case("C-1", date(2026, 1, 1), 500000), Case("C-2", date(2026, 2, 1), 500000)]
    out = schedule_period(wage=wage("2026-12", 800000), terms=SH, cases=cases,
                          balances={"C-1": 500000, "C-2": 500000}, ended=False, settled={"C-1": 100000})
    (c2,) = out.lines
    assert c2.case_id == "C-2" and c2.deduction_fen == 60000 and c2.binding is Binding.CAP20
    assert out.balances == {"C-1": 400000, "C-2": 440000} and out.violations == ()

    corrected = schedule_period(wage=wage("2026-12", 300000), terms=SH, cases=cases,
                                balances={"C-1": 500000, "C-2": 500000}, ended=False, settled={"C-1": 100000})
    limits = {v.limit: v.excess_fen for v in corrected.violations}
    assert limits == {Binding.FLOOR: 100000 - 26000, Binding.CAP20: 100000 - 60000}
    assert corrected.lines[0].deduction_fen == 0


def test_values_validate_themselves() -> None:
    with pytest.raises(ValueError):
        Case("C-1", date(2026, 1, 1), 0)
    with pytest.raises(ValueError):
        PeriodWage(P("2026-12"), -1)
    with pytest.raises(ValueError):
        PeriodTerms(0, True, True)
    with pytest.raises(ValueError):
        PeriodTerms(274000, True, True, cap_percent=30)
    with pytest.raises(ValueError):
        P("2026-13")
