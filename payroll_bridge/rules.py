"""The deduction rule: values in, deduction lines out. No I/O, no clock, no float.

Theory of operation
-------------------
《工资支付暂行规定》第十六条 lets an employer recover a documented loss the employee caused from the
wage, within two limits per month: at most 20% of that month's wage, and never so much that what is
left falls below the local monthly minimum wage. For one employee and one period:

    cap      = wage base x cap_percent / 100, rounded down to the fen      (CAP20)
    floor    = wage - excluded items [- social insurance - housing fund]   (where the region's
               minimum wage excludes them)
    headroom = max(0, floor - minimum wage)                                 (FLOOR)

and the employee's total deduction is min(cap, headroom, sum of open balances), shared among open
cases oldest first (confirmation date, then case id). The employer's other deductions of the month
use the same allowance first: other deductions for losses count against both cap and floor;
disciplinary deductions count against the floor everywhere (nothing may leave less than the minimum
wage) and against the cap where the region says so (Shenzhen, 深圳市员工工资支付条例 第三十四条).

Every line is bounded by six limits, in this order: BEFORE_CONFIRMATION (zero in a month before the
case's confirmation), BALANCE (the case's balance), FLOOR (headroom not yet used in the period),
CAP20 (cap not yet used), ENDED (zero after the last month of employment), PAUSED (zero while the
case is under appeal or objection). The deduction is the smallest bound and the line names the
*first* limit whose bound equals it: ties go to the earlier limit.

Lines already exported ("settled") are facts: they consume the period's allowance first. If a
corrected wage, an award or the end of employment shows they went over a limit, the period reports
a ``Violation`` and the excess is refunded: case-specific excesses (BALANCE, ENDED) from that case,
then whatever still exceeds the floor or the cap from the youngest settled case first. The period's
new lines and balances are computed as if the refunds were paid, so the balance is right and what
was refunded may be recovered again later, lawfully.

This module must never import sqlite3, httpx, fastapi or anything else that does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import Iterable, Mapping, Sequence

from payroll_bridge.period import Period

__all__ = [
    "Binding",
    "CapBase",
    "Case",
    "PeriodWage",
    "PeriodTerms",
    "DeductionLine",
    "Violation",
    "Refund",
    "PeriodOutcome",
    "Schedule",
    "cap_fen",
    "floor_base_fen",
    "headroom_fen",
    "order_cases",
    "other_deductions_fen",
    "schedule_period",
    "schedule",
    "claim_deadline",
]


class Binding(str, Enum):
    """What bound a line, in tie-break order: the first equal limit is named."""

    BEFORE_CONFIRMATION = "BEFORE_CONFIRMATION"
    BALANCE = "BALANCE"
    FLOOR = "FLOOR"
    CAP20 = "CAP20"
    ENDED = "ENDED"
    PAUSED = "PAUSED"


class CapBase(str, Enum):
    """Which wage the percentage cap is taken of; a local rule may say otherwise than the default."""

    WAGE = "wage"  # the wage due for the month, before tax and social insurance
    WAGE_LESS_CONTRIBUTIONS = "wage_less_contributions"


def _check_fen(name: str, value: object, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer number of fen, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'zero or more'}, got {value}")


@dataclass(frozen=True)
class Case:
    """A confirmed case as the engine sees it: who comes first, how much, whether it is paused."""

    case_id: str
    confirmed_at: date
    loss_fen: int
    paused: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.case_id, str) or not self.case_id.strip():
            raise ValueError("case_id must be a non-empty string")
        _check_fen(f"loss_fen of case {self.case_id}", self.loss_fen, positive=True)


@dataclass(frozen=True)
class PeriodWage:
    """One month's wage facts for one employee, all in fen."""

    period: Period
    wage_fen: int
    excluded_items_fen: int = 0
    social_insurance_fen: int = 0
    housing_fund_fen: int = 0
    other_loss_deductions_fen: int = 0  # the employer's other deductions for losses this month
    disciplinary_deductions_fen: int = 0  # deductions under the work rules (e.g. Shenzhen 第三十四条)
    # The part of excluded_items_fen given item by item (code, fen), so that the notice can say what.
    excluded_items: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for name in ("wage_fen", "excluded_items_fen", "social_insurance_fen", "housing_fund_fen",
                     "other_loss_deductions_fen", "disciplinary_deductions_fen"):
            _check_fen(f"{name} of {self.period}", getattr(self, name))
        for code, fen in self.excluded_items:
            _check_fen(f"excluded item {code} of {self.period}", fen)
        if sum(fen for _, fen in self.excluded_items) > self.excluded_items_fen:
            raise ValueError(f"the excluded items of {self.period} add up to more than excluded_items_fen")


@dataclass(frozen=True)
class PeriodTerms:
    """The local rule in force for a period: minimum wage, what it excludes, how the cap is taken."""

    minimum_wage_fen: int
    excludes_social_insurance: bool
    excludes_housing_fund: bool
    cap_percent: int = 20
    cap_base: CapBase = CapBase.WAGE
    disciplinary_shares_cap: bool = False

    def __post_init__(self) -> None:
        _check_fen("minimum_wage_fen", self.minimum_wage_fen, positive=True)
        if not isinstance(self.cap_percent, int) or not 0 < self.cap_percent <= 20:
            # 第十六条 sets 20% as the ceiling; a local rule may only be stricter.
            raise ValueError(f"cap_percent must be 1..20, got {self.cap_percent!r}")


@dataclass(frozen=True)
class DeductionLine:
    """One case in one period: what is deducted, the employee's limits, what bound it."""

    period: Period
    case_id: str
    deduction_fen: int
    cap_fen: int
    headroom_fen: int
    binding: Binding
    balance_after_fen: int

    def to_json(self) -> dict[str, object]:
        """The contract's JSON shape."""
        return {
            "period": str(self.period),
            "case_id": self.case_id,
            "deduction_fen": self.deduction_fen,
            "cap_fen": self.cap_fen,
            "headroom_fen": self.headroom_fen,
            "binding": self.binding.value,
            "balance_after_fen": self.balance_after_fen,
        }


@dataclass(frozen=True)
class Violation:
    """A settled (already exported) deduction that went over a limit, seen after a correction."""

    period: Period
    limit: Binding
    excess_fen: int
    case_id: str | None = None

    def describe(self) -> str:
        """One sentence for HR."""
        who = f"case {self.case_id}" if self.case_id else "the employee's total"
        what = {
            Binding.BEFORE_CONFIRMATION: "was taken before the case was confirmed",
            Binding.CAP20: "exceeded the 20% cap",
            Binding.FLOOR: "left less than the minimum wage",
            Binding.BALANCE: "exceeded the case's balance",
            Binding.ENDED: "was taken after employment ended",
            Binding.PAUSED: "was taken while the case was paused",
        }[self.limit]
        return f"{self.period}: the exported deduction of {who} {what} by {self.excess_fen} fen"

    def to_json(self) -> dict[str, object]:
        return {
            "period": str(self.period),
            "limit": self.limit.value,
            "excess_fen": self.excess_fen,
            "case_id": self.case_id,
            "message": self.describe(),
        }


@dataclass(frozen=True)
class Refund:
    """Money to give back: what a settled line of ``period`` took over ``limit``."""

    period: Period
    case_id: str
    amount_fen: int
    limit: Binding

    def to_json(self) -> dict[str, object]:
        return {"period": str(self.period), "case_id": self.case_id, "amount_fen": self.amount_fen,
                "limit": self.limit.value}


@dataclass(frozen=True)
class PeriodOutcome:
    """The result of one period: its new lines, the balances after it, violations and refunds."""

    lines: tuple[DeductionLine, ...]
    balances: Mapping[str, int]
    violations: tuple[Violation, ...] = ()
    refunds: tuple[Refund, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """A whole schedule: lines in calendar order then case order, and what is left per case."""

    lines: tuple[DeductionLine, ...]
    remaining_fen: Mapping[str, int]
    violations: tuple[Violation, ...] = field(default=())


def _cap_base(wage: PeriodWage, terms: PeriodTerms) -> int:
    if terms.cap_base is CapBase.WAGE:
        return wage.wage_fen
    return max(0, wage.wage_fen - wage.social_insurance_fen - wage.housing_fund_fen)


def cap_fen(wage: PeriodWage, terms: PeriodTerms) -> int:
    """The month's percentage cap, rounded down to the fen."""
    return _cap_base(wage, terms) * terms.cap_percent // 100


def floor_base_fen(wage: PeriodWage, terms: PeriodTerms) -> int:
    """The wage that is compared with the minimum wage (may be negative)."""
    base = wage.wage_fen - wage.excluded_items_fen
    if terms.excludes_social_insurance:
        base -= wage.social_insurance_fen
    if terms.excludes_housing_fund:
        base -= wage.housing_fund_fen
    return base


def headroom_fen(wage: PeriodWage, terms: PeriodTerms) -> int:
    """How much can go before what is left reaches the minimum wage (never negative)."""
    return max(0, floor_base_fen(wage, terms) - terms.minimum_wage_fen)


def order_cases(cases: Iterable[Case]) -> tuple[Case, ...]:
    """Oldest first: by confirmation date, then case id."""
    return tuple(sorted(cases, key=lambda c: (c.confirmed_at, c.case_id)))


_UNBOUNDED = 1 << 62


def other_deductions_fen(wage: PeriodWage, terms: PeriodTerms) -> tuple[int, int]:
    """The month's other deductions as they count against (the floor, the cap)."""
    floor = wage.other_loss_deductions_fen + wage.disciplinary_deductions_fen
    cap = wage.other_loss_deductions_fen + (wage.disciplinary_deductions_fen if terms.disciplinary_shares_cap else 0)
    return floor, cap


def schedule_period(
    *,
    wage: PeriodWage,
    terms: PeriodTerms,
    cases: Sequence[Case],
    balances: Mapping[str, int],
    ended: bool,
    settled: Mapping[str, int] | None = None,
) -> PeriodOutcome:
    """Computes one period for one employee, given the balances before it."""
    settled = dict(settled or {})
    ordered = order_cases(cases)
    known = {c.case_id for c in ordered}
    stray = set(settled) - known
    if stray:
        raise ValueError(f"settled lines for unknown cases: {sorted(stray)}")
    cap = cap_fen(wage, terms)
    headroom = headroom_fen(wage, terms)
    other_floor, other_cap = other_deductions_fen(wage, terms)
    after = dict(balances)
    violations: list[Violation] = []
    refunds: list[Refund] = []

    def refund(case_id: str, amount: int, limit: Binding) -> None:
        settled[case_id] -= amount
        refunds.append(Refund(wage.period, case_id, amount, limit))

    for case in ordered:
        if case.case_id not in settled:
            continue
        taken, before = settled[case.case_id], after[case.case_id]
        if ended and taken > 0:
            violations.append(Violation(wage.period, Binding.ENDED, taken, case.case_id))
            refund(case.case_id, taken, Binding.ENDED)
        elif taken > before:
            violations.append(Violation(wage.period, Binding.BALANCE, taken - before, case.case_id))
            refund(case.case_id, taken - before, Binding.BALANCE)
        after[case.case_id] = before - settled[case.case_id]
    ours = sum(settled.values())
    floor_excess = min(ours, max(0, other_floor + ours - headroom))
    cap_excess = min(ours, max(0, other_cap + ours - cap))
    if floor_excess:
        violations.append(Violation(wage.period, Binding.FLOOR, floor_excess))
    if cap_excess:
        violations.append(Violation(wage.period, Binding.CAP20, cap_excess))
    excess = max(floor_excess, cap_excess)
    for case in reversed(ordered):  # the youngest case took last, so it gives back first
        if excess == 0:
            break
        give = min(excess, settled.get(case.case_id, 0))
        if give:
            refund(case.case_id, give, Binding.FLOOR if floor_excess >= cap_excess else Binding.CAP20)
            after[case.case_id] += give
            excess -= give
    used_floor = other_floor + sum(settled.values())
    used_cap = other_cap + sum(settled.values())

    lines: list[DeductionLine] = []
    for case in ordered:
        if case.case_id in settled:
            continue
        bounds = (
            (Binding.BEFORE_CONFIRMATION, 0 if Period.of(case.confirmed_at) > wage.period else _UNBOUNDED),
            (Binding.BALANCE, after[case.case_id]),
            (Binding.FLOOR, max(0, headroom - used_floor)),
            (Binding.CAP20, max(0, cap - used_cap)),
            (Binding.ENDED, 0 if ended else _UNBOUNDED),
            (Binding.PAUSED, 0 if case.paused else _UNBOUNDED),
        )
        deduction = min(b for _, b in bounds)
        binding = next(limit for limit, b in bounds if b == deduction)
        used_floor += deduction
        used_cap += deduction
        after[case.case_id] -= deduction
        lines.append(
            DeductionLine(
                period=wage.period,
                case_id=case.case_id,
                deduction_fen=deduction,
                cap_fen=cap,
                headroom_fen=headroom,
                binding=binding,
                balance_after_fen=after[case.case_id],
            )
        )
    return PeriodOutcome(tuple(lines), after, tuple(violations), tuple(refunds))


def schedule(
    *,
    cases: Sequence[Case],
    periods: Iterable[tuple[PeriodWage, PeriodTerms]],
    employment_ends: Period | None = None,
    balances: Mapping[str, int] | None = None,
) -> Schedule:
    """Computes every period in calendar order, carrying balances from one to the next."""
    ordered_periods = sorted(periods, key=lambda pt: pt[0].period)
    seen = [p.period for p, _ in ordered_periods]
    if len(set(seen)) != len(seen):
        raise ValueError("a period is listed twice")
    current = dict(balances) if balances is not None else {c.case_id: c.loss_fen for c in cases}
    lines: list[DeductionLine] = []
    for wage, terms in ordered_periods:
        ended = employment_ends is not None and wage.period > employment_ends
        outcome = schedule_period(wage=wage, terms=terms, cases=cases, balances=current, ended=ended)
        lines.extend(outcome.lines)
        current = dict(outcome.balances)
    return Schedule(tuple(lines), current)


def claim_deadline(employment_ends: Period) -> date:
    """The employer's last day to claim, in arbitration, a balance left when employment ends.

    《劳动争议调解仲裁法》第二十七条: one year. The bridge counts it from the last day of employment
    (the last time the loss could be claimed from the wage), which is the latest reading; an earlier
    demand may have started it sooner, so the date is a limit, not a target.
    """
    return employment_ends.shift(12).last_day
