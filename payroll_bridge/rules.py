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
cases oldest first (confirmation date, then case id).

Every line is bounded by five limits, in this order: BALANCE (the case's balance), FLOOR (headroom
not yet used in the period by older cases), CAP20 (cap not yet used), ENDED (zero after the last
month of employment), PAUSED (zero while the case is under appeal). The deduction is the smallest
bound and the line names the *first* limit whose bound equals it: ties go to the earlier limit.

Lines already exported ("settled") are facts: they consume the period's allowance first, and if a
corrected wage shows they went over a limit, the period reports a ``Violation``; the engine never
rewrites them.

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
    "PeriodOutcome",
    "Schedule",
    "cap_fen",
    "floor_base_fen",
    "headroom_fen",
    "order_cases",
    "schedule_period",
    "schedule",
]


class Binding(str, Enum):
    """What bound a line, in tie-break order: the first equal limit is named."""

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

    def __post_init__(self) -> None:
        for name in ("wage_fen", "excluded_items_fen", "social_insurance_fen", "housing_fund_fen"):
            _check_fen(f"{name} of {self.period}", getattr(self, name))


@dataclass(frozen=True)
class PeriodTerms:
    """The local rule in force for a period: minimum wage, what it excludes, how the cap is taken."""

    minimum_wage_fen: int
    excludes_social_insurance: bool
    excludes_housing_fund: bool
    cap_percent: int = 20
    cap_base: CapBase = CapBase.WAGE

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
class PeriodOutcome:
    """The result of one period: its new lines, the balances after it, and any violations."""

    lines: tuple[DeductionLine, ...]
    balances: Mapping[str, int]
    violations: tuple[Violation, ...] = ()


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
    settled = settled or {}
    ordered = order_cases(cases)
    known = {c.case_id for c in ordered}
    stray = set(settled) - known
    if stray:
        raise ValueError(f"settled lines for unknown cases: {sorted(stray)}")
    cap = cap_fen(wage, terms)
    headroom = headroom_fen(wage, terms)
    after = dict(balances)
    violations: list[Violation] = []

    used = 0
    for case in ordered:
        if case.case_id in settled:
            taken = settled[case.case_id]
            before = after[case.case_id]
            if taken > before:
                violations.append(Violation(wage.period, Binding.BALANCE, taken - before, case.case_id))
            if ended and taken > 0:
                violations.append(Violation(wage.period, Binding.ENDED, taken, case.case_id))
            after[case.case_id] = max(0, before - taken)
            used += taken
    if used > headroom:
        violations.append(Violation(wage.period, Binding.FLOOR, used - headroom))
    if used > cap:
        violations.append(Violation(wage.period, Binding.CAP20, used - cap))

    lines: list[DeductionLine] = []
    for case in ordered:
        if case.case_id in settled:
            continue
        bounds = (
            (Binding.BALANCE, after[case.case_id]),
            (Binding.FLOOR, max(0, headroom - used)),
            (Binding.CAP20, max(0, cap - used)),
            (Binding.ENDED, 0 if ended else _UNBOUNDED),
            (Binding.PAUSED, 0 if case.paused else _UNBOUNDED),
        )
        deduction = min(b for _, b in bounds)
        binding = next(limit for limit, b in bounds if b == deduction)
        used += deduction
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
    return PeriodOutcome(tuple(lines), after, tuple(violations))


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
