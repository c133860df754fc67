"""What the ledger hands out: immutable records of cases, lines, exports, refunds and decisions.

Values only: built by ``ledger`` from its rows, read by the CLI, the API, the notice and the
exports. Nothing here speaks SQL or does any other I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Sequence

from payroll_bridge.intake import IntakeDecision
from payroll_bridge.period import Period
from payroll_bridge.rules import Binding, DeductionLine, Refund, Violation

__all__ = [
    "AuditEntry",
    "CaseRecord",
    "ExportBatch",
    "ExportLine",
    "IntakeOutcome",
    "LedgerLine",
    "Recomputation",
    "RefundLine",
    "RefundRecord",
    "refund_lines",
]


@dataclass(frozen=True)
class CaseRecord:
    """A case as the ledger holds it."""

    case_id: str
    employee_id: str
    confirmed_at: date
    loss_fen: int
    award_fen: int | None
    award_ref: str | None
    state: str
    payload: dict[str, Any]

    @property
    def recoverable_fen(self) -> int:
        """What may be recovered: the award's amount once there is one, HR's figure before."""
        return self.award_fen if self.award_fen is not None else self.loss_fen


@dataclass(frozen=True)
class LedgerLine:
    """A stored line: the engine's line plus its export state."""

    employee_id: str
    line: DeductionLine
    minimum_wage_fen: int
    state: str
    export_id: str | None
    blocked: str | None
    planned_fen: int

    @property
    def idempotency_key(self) -> str:
        return f"shoumi:{self.line.case_id}:{self.line.period}"

    def to_json(self) -> dict[str, object]:
        return {
            **self.line.to_json(),
            "employee_id": self.employee_id,
            "minimum_wage_fen": self.minimum_wage_fen,
            "state": self.state,
            "export_id": self.export_id,
            "blocked": self.blocked,
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True)
class ExportLine:
    """One deduction as it leaves the bridge."""

    idempotency_key: str
    employee_id: str
    period: Period
    case_id: str
    amount_fen: int
    binding: Binding
    notice_id: str | None
    notice_date: date | None


@dataclass(frozen=True)
class RefundLine:
    """Money an export gives back to an employee for one case: one payroll record per case and month."""

    idempotency_key: str
    employee_id: str
    period: Period  # the payroll month it is paid in
    case_id: str
    amount_fen: int
    refund_ids: tuple[str, ...]
    over_periods: tuple[Period, ...]  # the months whose deductions went over a limit
    limits: tuple[Binding, ...]


def refund_lines(records: Sequence[RefundRecord], period: Period) -> tuple[RefundLine, ...]:
    """Refunds paid in ``period``, one line per case (the payroll system's record is per case and month)."""
    by_case: dict[str, list[RefundRecord]] = {}
    for r in records:
        by_case.setdefault(r.case_id, []).append(r)
    return tuple(
        RefundLine(f"shoumi-refund:{case_id}:{period}", rs[0].employee_id, period, case_id,
                   sum(r.amount_fen for r in rs), tuple(r.refund_id for r in rs),
                   tuple(sorted({r.period for r in rs})), tuple(dict.fromkeys(r.limit for r in rs)))
        for case_id, rs in sorted(by_case.items(), key=lambda kv: (kv[1][0].employee_id, kv[0])))


@dataclass(frozen=True)
class ExportBatch:
    """An export: the lines it froze and sent, those it froze at zero (no notice, window open, amount
    not stated), and the refunds it pays."""

    export_id: str | None
    period: Period
    lines: tuple[ExportLine, ...]
    blocked: tuple[LedgerLine, ...] = ()
    already_exported: int = 0
    refunds: tuple[RefundLine, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "export_id": self.export_id,
            "period": str(self.period),
            "lines": [
                {"idempotency_key": x.idempotency_key, "employee_id": x.employee_id, "period": str(x.period),
                 "case_id": x.case_id, "amount_fen": x.amount_fen, "binding": x.binding.value,
                 "notice_id": x.notice_id, "notice_date": x.notice_date.isoformat() if x.notice_date else None}
                for x in self.lines
            ],
            "blocked": [
                {"case_id": b.line.case_id, "employee_id": b.employee_id, "planned_fen": b.planned_fen,
                 "reason": b.blocked}
                for b in self.blocked
            ],
            "refunds": [
                {"idempotency_key": r.idempotency_key, "employee_id": r.employee_id, "case_id": r.case_id,
                 "amount_fen": r.amount_fen, "refund_ids": list(r.refund_ids),
                 "over_periods": [str(p) for p in r.over_periods], "limits": [b.value for b in r.limits]}
                for r in self.refunds
            ],
            "already_exported": self.already_exported,
        }


@dataclass(frozen=True)
class Recomputation:
    """What a change did: lines that moved, past (exported) lines seen to break a limit, refunds owed."""

    employee_id: str
    changed: tuple[LedgerLine, ...] = ()
    violations: tuple[Violation, ...] = ()
    corrected_periods: tuple[Period, ...] = ()
    refunds: tuple[Refund, ...] = ()

    @property
    def refunds_fen(self) -> dict[str, int]:
        """The new refunds, summed per case."""
        out: dict[str, int] = {}
        for r in self.refunds:
            out[r.case_id] = out.get(r.case_id, 0) + r.amount_fen
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "employee_id": self.employee_id,
            "changed": [x.to_json() for x in self.changed],
            "violations": [v.to_json() for v in self.violations],
            "corrected_periods": [str(p) for p in self.corrected_periods],
            "refunds_fen": self.refunds_fen,
            "refunds": [r.to_json() for r in self.refunds],
        }


@dataclass(frozen=True)
class RefundRecord:
    """A refund as the ledger holds it: what was over-deducted in ``period`` and when it is paid."""

    refund_id: str
    case_id: str
    employee_id: str
    period: Period
    limit: Binding
    amount_fen: int
    state: str
    export_id: str | None
    paid_period: Period | None

    def to_json(self) -> dict[str, object]:
        return {"refund_id": self.refund_id, "case_id": self.case_id, "employee_id": self.employee_id,
                "period": str(self.period), "limit": self.limit.value, "amount_fen": self.amount_fen,
                "state": self.state, "export_id": self.export_id,
                "paid_period": str(self.paid_period) if self.paid_period else None}


@dataclass(frozen=True)
class IntakeOutcome:
    """The intake's decision as recorded: its row id, and whether the case was already there."""

    intake_id: int
    decision: IntakeDecision
    duplicate: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "intake_id": self.intake_id,
            "case_id": self.decision.case_id,
            "status": "accepted" if self.decision.accepted else "refused",
            "duplicate": self.duplicate,
            "refusals": [r.to_json() for r in self.decision.refusals],
        }


@dataclass(frozen=True)
class AuditEntry:
    audit_id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
