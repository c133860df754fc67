"""Issue 14's invariant over the whole ledger: whatever sequence of intakes (duplicates included), wage
corrections, awards and exports, no month leaves the employee below the floor (nor above the cap) once
refunds are applied, and nothing recovers more than the sum of the distinct losses."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import Clock, case_doc, notify
from payroll_bridge.ledger import Ledger, terms_in_force
from payroll_bridge.minimum_wage import load_table
from payroll_bridge.period import Period
from payroll_bridge.rules import PeriodWage, cap_fen, headroom_fen

MONTHS = [Period(2026, 12).shift(i) for i in range(3)]
TABLE = load_table()

op = st.one_of(
    st.tuples(st.just("intake"), st.integers(1, 900_000)),
    st.tuples(st.just("duplicate"), st.integers(0, 2), st.integers(1, 2_000_000)),
    st.tuples(st.just("wages"), st.integers(0, 2), st.integers(0, 1_500_000), st.integers(0, 150_000),
              st.integers(0, 100_000), st.integers(0, 200_000)),
    st.tuples(st.just("export"), st.integers(0, 2)),
    st.tuples(st.just("award"), st.integers(0, 2), st.integers(0, 900_000)),
)


def _run(ledger: Ledger, ops: list[tuple[Any, ...]], losses: dict[str, int]) -> None:
    cases: list[str] = []
    for step in ops:
        kind = step[0]
        if kind == "intake":
            case_id = f"C-{len(cases)}"
            doc = case_doc(case_id, loss_fen=step[1], confirmed=f"2026-11-{10 + len(cases):02d}")
            if ledger.intake(payload=json.dumps(doc), actor="zhao.hr").decision.accepted:
                cases.append(case_id)
                losses[case_id] = step[1]
        elif kind == "duplicate" and cases:
            original = cases[step[1] % len(cases)]
            doc = case_doc(f"D-{len(cases)}-{step[1]}", loss_fen=step[2])
            doc["loss"]["documents"] = case_doc(original)["loss"]["documents"]
            assert not ledger.intake(payload=json.dumps(doc), actor="zhao.hr").decision.accepted
        elif kind == "wages" and cases:
            _, m, wage, si, other, excluded = step
            ledger.record_wages(employee_id="E1001", wages=[PeriodWage(
                MONTHS[m], wage, excluded, si, si // 2, other_loss_deductions_fen=other)], actor="payroll")
        elif kind == "export" and cases:
            for case_id in cases:
                if ledger.case(case_id).state == "active":
                    notify(ledger, case_id, issued=MONTHS[step[1]].first_day)
            ledger.export(period=MONTHS[step[1]], actor="zhao.hr")
        elif kind == "award" and cases:
            case_id = cases[step[1] % len(cases)]
            if ledger.case(case_id).state == "active":
                ledger.pause(case_id=case_id, reason="仲裁", actor="zhao.hr")
                ledger.resume(case_id=case_id, award_fen=min(step[2], losses[case_id]), award_ref="裁决",
                              actor="zhao.hr")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=10))
# exported, then the wage corrected down: only the refund keeps the month above the floor
@example(ops=[("wages", 0, 800000, 0, 0, 0), ("export", 0), ("wages", 0, 300000, 0, 0, 0)])
# exported twice over, then an award below it: the refund brings the total back to the award
@example(ops=[("wages", 0, 1500000, 0, 0, 0), ("wages", 1, 1500000, 0, 0, 0), ("export", 0), ("export", 1),
              ("award", 0, 100000)])
def test_no_sequence_breaks_the_floor_or_recovers_more_than_the_distinct_losses(tmp_path: Path, ops) -> None:
    path = tmp_path / f"seq-{abs(hash(tuple(ops)))}.sqlite3"
    path.unlink(missing_ok=True)
    losses: dict[str, int] = {}
    with Ledger(path, table=TABLE, clock=Clock(datetime(2026, 11, 25, tzinfo=timezone.utc))) as ledger:
        _run(ledger, [("intake", 300_000), *ops], losses)
        if not losses:
            return
        refunded: dict[tuple[str, Period], int] = defaultdict(int)
        for r in ledger.refunds(employee_id="E1001"):
            refunded[(r.case_id, r.period)] += r.amount_fen
        net: dict[Period, int] = defaultdict(int)
        taken: dict[str, int] = defaultdict(int)
        for x in ledger.lines(employee_id="E1001"):
            amount = x.line.deduction_fen - refunded[(x.line.case_id, x.line.period)]
            assert amount >= 0
            net[x.line.period] += amount
            taken[x.line.case_id] += amount
        region = TABLE.region("CN-SH")
        assert region is not None
        for wage in ledger._wages("E1001"):
            terms, _ = terms_in_force(TABLE, region, None, wage.period)
            others = wage.other_loss_deductions_fen
            # what is left after this bridge's deductions is never below the minimum wage (nor, with
            # the month's other loss deductions, over the cap), unless those others alone already were
            assert net[wage.period] <= max(0, headroom_fen(wage, terms) - others)
            assert net[wage.period] <= max(0, cap_fen(wage, terms) - others)
        for case_id, fen in taken.items():
            assert fen <= ledger.case(case_id).recoverable_fen or ledger.case(case_id).state == "dismissed"
        assert sum(taken.values()) <= sum(losses.values())  # each distinct loss once: duplicates were refused
        remaining = ledger.remaining_fen(employee_id="E1001")
        assert all(v >= 0 for v in remaining.values()), remaining
