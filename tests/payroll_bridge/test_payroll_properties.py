"""Invariants of the deduction rule, checked with hypothesis over arbitrary employees."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from payroll_bridge.contract import parse_request, run_schedule
from payroll_bridge.minimum_wage import load_table
from payroll_bridge.period import Period
from payroll_bridge.rules import Binding, Case, PeriodTerms, PeriodWage, cap_fen, headroom_fen, schedule, schedule_period

FEN = st.integers(min_value=0, max_value=5_000_000)

cases_st = st.lists(
    st.builds(
        Case,
        case_id=st.sampled_from(["C-1", "C-2", "C-3", "C-4", "C-10"]),
        confirmed_at=st.dates(min_value=date(2025, 1, 1), max_value=date(2026, 12, 31)),
        loss_fen=st.integers(min_value=1, max_value=3_000_000),
        paused=st.booleans(),
    ),
    min_size=1, max_size=4, unique_by=lambda c: c.case_id,
)
terms_st = st.builds(
    PeriodTerms,
    minimum_wage_fen=st.integers(min_value=1, max_value=400_000),
    excludes_social_insurance=st.booleans(),
    excludes_housing_fund=st.booleans(),
    cap_percent=st.sampled_from([20, 20, 20, 15]),
)


@st.composite
def periods_st(draw: st.DrawFn) -> list[tuple[PeriodWage, PeriodTerms]]:
    offsets = draw(st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=8, unique=True))
    out = []
    for off in offsets:
        period = Period(2026, 1).shift(off)
        wage = PeriodWage(period, draw(FEN), draw(st.integers(0, 500_000)),
                          draw(st.integers(0, 300_000)), draw(st.integers(0, 300_000)))
        out.append((wage, draw(terms_st)))
    return out


ends_st = st.none() | st.builds(lambda off: Period(2026, 1).shift(off), st.integers(min_value=0, max_value=30))


@settings(max_examples=300, deadline=None)
@given(cases=cases_st, periods=periods_st(), ends=ends_st)
def test_no_line_exceeds_its_cap_or_headroom(cases, periods, ends) -> None:
    result = schedule(cases=cases, periods=periods, employment_ends=ends)
    per_period: dict[Period, int] = defaultdict(int)
    for line in result.lines:
        assert 0 <= line.deduction_fen <= min(line.cap_fen, line.headroom_fen)
        per_period[line.period] += line.deduction_fen
    for line in result.lines:
        assert per_period[line.period] <= min(line.cap_fen, line.headroom_fen)
        if line.binding in (Binding.ENDED, Binding.PAUSED):
            assert line.deduction_fen == 0
        if ends is not None and line.period > ends:
            assert line.deduction_fen == 0
        confirmed_at = next(c.confirmed_at for c in cases if c.case_id == line.case_id)
        if line.period < Period.of(confirmed_at):  # issue 14 item 4: as the ledger, nothing before it
            assert line.deduction_fen == 0 and line.binding is Binding.BEFORE_CONFIRMATION


@settings(max_examples=300, deadline=None)
@given(cases=cases_st, periods=periods_st(), ends=ends_st)
def test_deductions_never_exceed_the_loss_and_balances_add_up(cases, periods, ends) -> None:
    result = schedule(cases=cases, periods=periods, employment_ends=ends)
    taken: dict[str, int] = defaultdict(int)
    for line in result.lines:
        taken[line.case_id] += line.deduction_fen
        loss = next(c.loss_fen for c in cases if c.case_id == line.case_id)
        assert line.balance_after_fen == loss - taken[line.case_id] >= 0
    for case in cases:
        assert taken[case.case_id] <= case.loss_fen
        assert result.remaining_fen[case.case_id] == case.loss_fen - taken[case.case_id]
    assert len(result.lines) == len(cases) * len(periods)  # one line per case per period, zeros included


@settings(max_examples=300, deadline=None)
@given(cases=cases_st, periods=periods_st(), ends=ends_st)
def test_the_employer_takes_all_that_is_lawful_and_no_more(cases, periods, ends) -> None:
    result = schedule(cases=cases, periods=periods, employment_ends=ends)
    balances = {c.case_id: c.loss_fen for c in cases}
    paused = {c.case_id for c in cases if c.paused}
    by_period: dict[Period, list] = defaultdict(list)
    for line in result.lines:
        by_period[line.period].append(line)
    for period in sorted(by_period):
        lines = by_period[period]
        confirmed = {c.case_id for c in cases if Period.of(c.confirmed_at) <= period}
        open_total = sum(b for cid, b in balances.items() if cid not in paused and cid in confirmed)
        ended = ends is not None and period > ends
        expected = 0 if ended else min(lines[0].cap_fen, lines[0].headroom_fen, open_total)
        assert sum(line.deduction_fen for line in lines) == expected
        for line in lines:
            balances[line.case_id] -= line.deduction_fen


@settings(max_examples=300, deadline=None)
@given(cases=cases_st, periods=periods_st(), ends=ends_st)
def test_period_by_period_equals_all_at_once(cases, periods, ends) -> None:
    whole = schedule(cases=cases, periods=periods, employment_ends=ends)
    balances = {c.case_id: c.loss_fen for c in cases}
    stepwise = []
    for wage, terms in sorted(periods, key=lambda pt: pt[0].period):
        one = schedule(cases=cases, periods=[(wage, terms)], employment_ends=ends, balances=balances)
        stepwise.extend(one.lines)
        balances = dict(one.remaining_fen)
    assert tuple(stepwise) == whole.lines
    assert balances == dict(whole.remaining_fen)
    # and through schedule_period, the function the ledger folds
    balances = {c.case_id: c.loss_fen for c in cases}
    folded = []
    for wage, terms in sorted(periods, key=lambda pt: pt[0].period):
        out = schedule_period(wage=wage, terms=terms, cases=cases, balances=balances,
                              ended=ends is not None and wage.period > ends)
        folded.extend(out.lines)
        balances = dict(out.balances)
    assert tuple(folded) == whole.lines


@settings(max_examples=200, deadline=None)
@given(cases=cases_st, periods=periods_st(), ends=ends_st, data=st.data())
def test_input_order_of_periods_and_cases_changes_nothing(cases, periods, ends, data) -> None:
    whole = schedule(cases=cases, periods=periods, employment_ends=ends)
    shuffled_periods = data.draw(st.permutations(periods))
    shuffled_cases = data.draw(st.permutations(cases))
    again = schedule(cases=shuffled_cases, periods=shuffled_periods, employment_ends=ends)
    assert again.lines == whole.lines and dict(again.remaining_fen) == dict(whole.remaining_fen)
    assert [line.period for line in whole.lines] == sorted(line.period for line in whole.lines)


_TABLE = load_table()


@settings(max_examples=100, deadline=None)
@given(cases=cases_st, periods=periods_st(), data=st.data())
def test_contract_output_is_independent_of_period_order(cases, periods, data) -> None:
    def doc(ps: list[tuple[PeriodWage, PeriodTerms]]) -> dict:
        return {
            "employee_id": "E1",
            "region": "CN-SH",
            "cases": [{"case_id": c.case_id, "confirmed_at": c.confirmed_at.isoformat(),
                       "loss_fen": c.loss_fen, "paused": c.paused} for c in cases],
            "periods": [{"period": str(w.period), "wage_fen": w.wage_fen, "excluded_items_fen": w.excluded_items_fen,
                         "social_insurance_fen": w.social_insurance_fen, "housing_fund_fen": w.housing_fund_fen}
                        for w, _ in ps],
        }

    first = run_schedule(parse_request(doc(periods)), _TABLE)
    second = run_schedule(parse_request(doc(data.draw(st.permutations(periods)))), _TABLE)
    assert first == second
    assert [line["period"] for line in first["lines"]] == sorted(line["period"] for line in first["lines"])


@settings(max_examples=200, deadline=None)
@given(cases=cases_st, periods=periods_st(), ends=ends_st, data=st.data())
def test_other_deductions_of_the_month_are_never_exceeded_together(cases, periods, ends, data) -> None:
    with_others = []
    for wage, terms in periods:
        other = data.draw(st.integers(0, 400_000))
        disciplinary = data.draw(st.integers(0, 400_000))
        shares = data.draw(st.booleans())
        with_others.append((PeriodWage(wage.period, wage.wage_fen, wage.excluded_items_fen, wage.social_insurance_fen,
                                       wage.housing_fund_fen, other, disciplinary),
                            PeriodTerms(terms.minimum_wage_fen, terms.excludes_social_insurance,
                                        terms.excludes_housing_fund, terms.cap_percent,
                                        disciplinary_shares_cap=shares)))
    result = schedule(cases=cases, periods=with_others, employment_ends=ends)
    total: dict[Period, int] = defaultdict(int)
    for line in result.lines:
        total[line.period] += line.deduction_fen
    for wage, terms in with_others:
        floor_others = wage.other_loss_deductions_fen + wage.disciplinary_deductions_fen
        cap_others = wage.other_loss_deductions_fen + (wage.disciplinary_deductions_fen if terms.disciplinary_shares_cap
                                                       else 0)
        assert total[wage.period] <= max(0, headroom_fen(wage, terms) - floor_others)
        assert total[wage.period] <= max(0, cap_fen(wage, terms) - cap_others)
