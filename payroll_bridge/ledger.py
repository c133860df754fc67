"""The ledger: cases, wages, deduction lines, exports, notices and the audit trail, in one SQLite file.

This is the only module that speaks SQL. Every public method is one transaction: it checks, writes
what changed, recomputes the employee's scheduled lines with the pure engine (``rules``), and writes
an audit row for the human action that caused it, or none of it.

Idempotency: a line is keyed by (case, period). Exporting a period freezes its lines (see
``lifecycle``); frozen lines are facts the engine works around, never recomputes, so exporting
twice never deducts twice. A wage correction recomputes every scheduled line and reports any frozen
line that, with the corrected wage, broke a limit.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from contextlib import contextmanager

from payroll_bridge.contract import decode_json, has_fraction, json_default
from payroll_bridge.errors import InvalidInput, LedgerError, TableError, UnknownRecord
from payroll_bridge.intake import ClaimedLoss, IntakeDecision, Refusal, assess
from payroll_bridge.lifecycle import next_case_state, next_line_state
from payroll_bridge.minimum_wage import MinimumWageTable, RegionRule, WageRow
from payroll_bridge.period import Period
from payroll_bridge.rules import (
    Binding,
    Case,
    DeductionLine,
    PeriodTerms,
    PeriodWage,
    Violation,
    schedule_period,
)

__all__ = [
    "Ledger",
    "CaseRecord",
    "LedgerLine",
    "ExportBatch",
    "Recomputation",
    "IntakeOutcome",
    "AuditEntry",
    "terms_in_force",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS employees (
    employee_id TEXT PRIMARY KEY, name TEXT NOT NULL, region TEXT NOT NULL, tier INTEGER,
    employment_ends TEXT);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY, employee_id TEXT NOT NULL REFERENCES employees(employee_id),
    confirmed_at TEXT NOT NULL, loss_fen INTEGER NOT NULL CHECK (loss_fen > 0),
    award_fen INTEGER CHECK (award_fen >= 0), award_ref TEXT, state TEXT NOT NULL,
    payload TEXT NOT NULL, accepted_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS intakes (
    intake_id INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT, employee_id TEXT, received_at TEXT NOT NULL,
    actor TEXT NOT NULL, decision TEXT NOT NULL CHECK (decision IN ('accepted', 'refused')),
    reasons TEXT NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wages (
    employee_id TEXT NOT NULL, period TEXT NOT NULL, wage_fen INTEGER NOT NULL,
    excluded_items_fen INTEGER NOT NULL, social_insurance_fen INTEGER NOT NULL,
    housing_fund_fen INTEGER NOT NULL, recorded_at TEXT NOT NULL, PRIMARY KEY (employee_id, period));
CREATE TABLE IF NOT EXISTS lines (
    case_id TEXT NOT NULL REFERENCES cases(case_id), period TEXT NOT NULL, employee_id TEXT NOT NULL,
    deduction_fen INTEGER NOT NULL CHECK (deduction_fen >= 0), cap_fen INTEGER NOT NULL,
    headroom_fen INTEGER NOT NULL, binding TEXT NOT NULL, balance_after_fen INTEGER NOT NULL,
    minimum_wage_fen INTEGER NOT NULL, state TEXT NOT NULL, export_id TEXT, blocked TEXT,
    planned_fen INTEGER NOT NULL, computed_at TEXT NOT NULL, PRIMARY KEY (case_id, period));
CREATE TABLE IF NOT EXISTS exports (
    export_id TEXT PRIMARY KEY, period TEXT NOT NULL, created_at TEXT NOT NULL, actor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pushes (
    export_id TEXT NOT NULL, idempotency_key TEXT PRIMARY KEY, target TEXT NOT NULL,
    remote_name TEXT NOT NULL, pushed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notices (
    notice_id TEXT PRIMARY KEY, case_id TEXT NOT NULL REFERENCES cases(case_id), issued_on TEXT NOT NULL,
    served_on TEXT);
CREATE TABLE IF NOT EXISTS violations (
    case_id TEXT NOT NULL DEFAULT '', employee_id TEXT NOT NULL, period TEXT NOT NULL,
    limit_name TEXT NOT NULL, excess_fen INTEGER NOT NULL, message TEXT NOT NULL, found_at TEXT NOT NULL,
    PRIMARY KEY (employee_id, case_id, period, limit_name, excess_fen));
CREATE TABLE IF NOT EXISTS audit (
    audit_id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);
"""


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
class ExportBatch:
    """An export: the lines it froze and sent, and those it froze at zero for want of a notice."""

    export_id: str | None
    period: Period
    lines: tuple[ExportLine, ...]
    blocked: tuple[LedgerLine, ...] = ()
    already_exported: int = 0

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
            "already_exported": self.already_exported,
        }


@dataclass(frozen=True)
class Recomputation:
    """What a change did: lines that moved, and past (exported) lines now seen to break a limit."""

    employee_id: str
    changed: tuple[LedgerLine, ...] = ()
    violations: tuple[Violation, ...] = ()
    corrected_periods: tuple[Period, ...] = ()
    refunds_fen: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "employee_id": self.employee_id,
            "changed": [x.to_json() for x in self.changed],
            "violations": [v.to_json() for v in self.violations],
            "corrected_periods": [str(p) for p in self.corrected_periods],
            "refunds_fen": self.refunds_fen,
        }


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


def terms_in_force(
    table: MinimumWageTable, region: RegionRule, tier: int | None, period: Period
) -> tuple[PeriodTerms, WageRow]:
    """The local terms for a period from the table; TableError when no row is in force."""
    use_tier = tier or region.default_tier
    row = table.row_in_force(region.code, use_tier, period)
    if row is None:
        raise TableError(f"the minimum-wage table ({table.origin}) has no row for {region.code} tier "
                         f"{use_tier} in force in {period}: add one to the customer table")
    terms = PeriodTerms(row.monthly_fen, region.excludes_social_insurance, region.excludes_housing_fund,
                        region.cap_percent, region.cap_base)
    return terms, row


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


MAX_ACTOR_CHARS = 128
REFUSED_PAYLOAD_CHARS = 4096


def _check_actor(actor: str) -> None:
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidInput("every human action needs an actor")
    if len(actor) > MAX_ACTOR_CHARS or not actor.isprintable():
        raise InvalidInput(f"an actor is a printable name of at most {MAX_ACTOR_CHARS} characters")


def _truncate(text: str) -> str:
    """A refused payload is kept for the record, but never more than REFUSED_PAYLOAD_CHARS of it."""
    if len(text) <= REFUSED_PAYLOAD_CHARS:
        return text
    return text[:REFUSED_PAYLOAD_CHARS] + f"…[truncated, {len(text)} characters in all]"


def _short(value: str | None) -> str | None:
    return value[:128] if value is not None else None


def _claim(payload: dict[str, Any]) -> tuple[date | None, str, frozenset[str]]:
    """The incident day, summary and document hashes an accepted case's payload claims."""
    incident = payload.get("incident") or {}
    docs = (payload.get("loss") or {}).get("documents") or []
    try:
        day: date | None = date.fromisoformat(str(incident.get("date")))
    except (TypeError, ValueError):
        day = None
    return day, str(incident.get("summary") or ""), frozenset(
        str(d.get("sha256", "")).lower() for d in docs if isinstance(d, dict))


class Ledger:
    """The bridge's memory; one instance per connection (per request, per command)."""

    def __init__(self, path: Path, *, table: MinimumWageTable,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.path = Path(path)
        self.table = table
        self._clock = clock
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _now(self) -> str:
        return self._clock().isoformat()

    def _audit(self, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
        _check_actor(actor)
        self._db.execute(
            "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            (self._now(), actor, action, subject, json.dumps(detail, ensure_ascii=False, sort_keys=True)),
        )

    # --- intake -------------------------------------------------------------------------------

    def intake(self, *, payload: str | bytes, actor: str) -> IntakeOutcome:
        """Decides on a CASE.json, records the decision and why, and files an accepted case.

        Input that cannot be read as a case (bad JSON, too deep, a number too long) is recorded as
        a refusal too, its payload truncated, and then raised as ``InvalidInput``.
        """
        _check_actor(actor)
        try:
            doc = decode_json(payload)
            if not isinstance(doc, dict):
                raise InvalidInput("a case must be a JSON object")
        except InvalidInput as exc:
            self.record_malformed_intake(payload=payload, reason=str(exc), actor=actor)
            raise
        with self._tx() as db:
            claimed = [ClaimedLoss(r["case_id"], r["employee_id"], *_claim(json.loads(r["payload"])))
                       for r in db.execute("SELECT case_id, employee_id, payload FROM cases")]
            decision = assess(doc, known_regions=self.table.regions.keys(),
                              direct_loss_only={c for c, r in self.table.regions.items() if r.direct_loss_only},
                              claimed=claimed)
            if has_fraction(doc):
                decision = IntakeDecision(decision.case_id, decision.employee_id, None, decision.refusals + (Refusal(
                    "NUMBER_NOT_WHOLE", "the case holds a fractional number: amounts are whole fen, tiers whole "
                    "numbers"),))
            stored = json.dumps(doc, ensure_ascii=False, sort_keys=True, default=json_default)
            duplicate = False
            if decision.accepted and decision.case is not None:
                existing = db.execute("SELECT payload FROM cases WHERE case_id = ?",
                                      (decision.case_id,)).fetchone()
                if existing is not None and existing["payload"] == stored:
                    duplicate = True
                elif existing is not None:
                    decision = IntakeDecision(decision.case_id, decision.employee_id, None, (Refusal(
                        "CASE_ID_TAKEN",
                        f"case {decision.case_id} is already in the ledger with different content: "
                        "corrections go through pause/resume, not a second intake"),))
            if decision.accepted and decision.case is not None and not duplicate:
                case = decision.case
                db.execute(
                    "INSERT INTO employees (employee_id, name, region, tier) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (employee_id) DO UPDATE SET name = excluded.name, region = excluded.region, "
                    "tier = excluded.tier",
                    (case.employee_id, case.employee_name, case.region, case.tier),
                )
                db.execute(
                    "INSERT INTO cases (case_id, employee_id, confirmed_at, loss_fen, state, payload, accepted_at)"
                    " VALUES (?, ?, ?, ?, 'active', ?, ?)",
                    (case.case_id, case.employee_id, case.confirmed_at.isoformat(), case.loss_fen, stored,
                     self._now()),
                )
            intake_id = self._record_intake(
                case_id=_short(decision.case_id), employee_id=_short(decision.employee_id), actor=actor,
                accepted=decision.accepted, reasons=[r.to_json() for r in decision.refusals],
                payload=stored if decision.accepted else _truncate(stored), duplicate=duplicate)
            if decision.accepted and decision.employee_id and not duplicate:
                self._recompute(decision.employee_id)
        return IntakeOutcome(intake_id, decision, duplicate)

    def record_malformed_intake(self, *, payload: str | bytes, reason: str, actor: str) -> int:
        """Records a refused intake whose payload could not be read as a case (kept truncated)."""
        _check_actor(actor)
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        with self._tx():
            return self._record_intake(case_id=None, employee_id=None, actor=actor, accepted=False,
                                       reasons=[{"code": "MALFORMED", "message": reason[:500]}],
                                       payload=_truncate(text), duplicate=False)

    def _record_intake(self, *, case_id: str | None, employee_id: str | None, actor: str, accepted: bool,
                       reasons: list[dict[str, str]], payload: str, duplicate: bool) -> int:
        cur = self._db.execute(
            "INSERT INTO intakes (case_id, employee_id, received_at, actor, decision, reasons, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (case_id, employee_id, self._now(), actor, "accepted" if accepted else "refused",
             json.dumps(reasons, ensure_ascii=False), payload),
        )
        intake_id = int(cur.lastrowid or 0)
        self._audit(actor, "intake.accepted" if accepted else "intake.refused", case_id or "?", {
            "intake_id": intake_id, "duplicate": duplicate, "refusals": [r["code"] for r in reasons]})
        return intake_id

    def intakes(self) -> list[dict[str, Any]]:
        """Every intake decision, oldest first, with its reasons."""
        rows = self._db.execute("SELECT * FROM intakes ORDER BY intake_id").fetchall()
        return [{"intake_id": r["intake_id"], "case_id": r["case_id"], "employee_id": r["employee_id"],
                 "received_at": r["received_at"], "actor": r["actor"], "decision": r["decision"],
                 "refusals": json.loads(r["reasons"])} for r in rows]

    # --- reads --------------------------------------------------------------------------------

    def case(self, case_id: str) -> CaseRecord:
        """Gets a case by its id."""
        row = self._db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        if row is None:
            raise UnknownRecord(f"no case {case_id!r} in the ledger")
        return self._case(row)

    @staticmethod
    def _case(row: sqlite3.Row) -> CaseRecord:
        return CaseRecord(row["case_id"], row["employee_id"], date.fromisoformat(row["confirmed_at"]),
                          row["loss_fen"], row["award_fen"], row["award_ref"], row["state"],
                          json.loads(row["payload"]))

    def cases(self, *, employee_id: str) -> list[CaseRecord]:
        """The employee's cases, oldest first."""
        rows = self._db.execute("SELECT * FROM cases WHERE employee_id = ? ORDER BY confirmed_at, case_id",
                                (employee_id,)).fetchall()
        return [self._case(r) for r in rows]

    def _employee(self, employee_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM employees WHERE employee_id = ?", (employee_id,)).fetchone()
        if row is None:
            raise UnknownRecord(f"no employee {employee_id!r} in the ledger (a case must be accepted first)")
        return row

    def employee(self, employee_id: str) -> dict[str, Any]:
        """Gets an employee by id: name, region, tier, last month of employment."""
        return dict(self._employee(employee_id))

    @staticmethod
    def _line(row: sqlite3.Row) -> LedgerLine:
        line = DeductionLine(Period.parse(row["period"]), row["case_id"], row["deduction_fen"], row["cap_fen"],
                             row["headroom_fen"], Binding(row["binding"]), row["balance_after_fen"])
        return LedgerLine(row["employee_id"], line, row["minimum_wage_fen"], row["state"], row["export_id"],
                          row["blocked"], row["planned_fen"])

    def lines(self, *, employee_id: str | None = None, case_id: str | None = None,
              period: Period | None = None) -> list[LedgerLine]:
        """Stored lines in calendar order, then case order, filtered as asked."""
        sql = ("SELECT l.* FROM lines l JOIN cases c USING (case_id) WHERE (? IS NULL OR l.employee_id = ?) "
               "AND (? IS NULL OR l.case_id = ?) AND (? IS NULL OR l.period = ?) "
               "ORDER BY l.period, c.confirmed_at, l.case_id")
        p = str(period) if period else None
        rows = self._db.execute(sql, (employee_id, employee_id, case_id, case_id, p, p)).fetchall()
        return [self._line(r) for r in rows]

    def audit_log(self) -> list[AuditEntry]:
        """Every recorded human action, oldest first."""
        rows = self._db.execute("SELECT * FROM audit ORDER BY audit_id").fetchall()
        return [AuditEntry(r["audit_id"], datetime.fromisoformat(r["at"]), r["actor"], r["action"],
                           r["subject"], json.loads(r["detail"])) for r in rows]

    def violations(self, *, employee_id: str | None = None) -> list[dict[str, Any]]:
        """Every exported line found, after a correction, to have broken a limit."""
        rows = self._db.execute(
            "SELECT * FROM violations WHERE (? IS NULL OR employee_id = ?) ORDER BY period, case_id",
            (employee_id, employee_id)).fetchall()
        return [dict(r) for r in rows]

    # --- wages and recomputation --------------------------------------------------------------

    def record_wages(self, *, employee_id: str, wages: Sequence[PeriodWage], actor: str) -> Recomputation:
        """Stores (or corrects) wages and recomputes; corrections name the periods they changed."""
        with self._tx() as db:
            self._employee(employee_id)
            corrected: list[Period] = []
            for w in wages:
                old = db.execute("SELECT * FROM wages WHERE employee_id = ? AND period = ?",
                                 (employee_id, str(w.period))).fetchone()
                values = (w.wage_fen, w.excluded_items_fen, w.social_insurance_fen, w.housing_fund_fen)
                if old is not None and tuple(old[k] for k in (
                        "wage_fen", "excluded_items_fen", "social_insurance_fen", "housing_fund_fen")) == values:
                    continue
                if old is not None:
                    corrected.append(w.period)
                db.execute(
                    "INSERT INTO wages VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (employee_id, period) DO UPDATE SET "
                    "wage_fen = excluded.wage_fen, excluded_items_fen = excluded.excluded_items_fen, "
                    "social_insurance_fen = excluded.social_insurance_fen, "
                    "housing_fund_fen = excluded.housing_fund_fen, recorded_at = excluded.recorded_at",
                    (employee_id, str(w.period), *values, self._now()),
                )
            result = self._recompute(employee_id, corrected=tuple(sorted(corrected)))
            if corrected:
                self._audit(actor, "wages.corrected", employee_id, {
                    "periods": [str(p) for p in sorted(corrected)],
                    "violations": [v.to_json() for v in result.violations]})
        return result

    def _wages(self, employee_id: str) -> list[PeriodWage]:
        rows = self._db.execute("SELECT * FROM wages WHERE employee_id = ? ORDER BY period",
                                (employee_id,)).fetchall()
        return [PeriodWage(Period.parse(r["period"]), r["wage_fen"], r["excluded_items_fen"],
                           r["social_insurance_fen"], r["housing_fund_fen"]) for r in rows]

    def _recompute(self, employee_id: str, *, corrected: tuple[Period, ...] = ()) -> Recomputation:
        """Re-derives every scheduled line of the employee; frozen lines stay and are checked."""
        emp = self._employee(employee_id)
        region = self.table.region(emp["region"])
        if region is None:
            raise TableError(f"region {emp['region']} of {employee_id} is no longer in the minimum-wage table")
        ends = Period.parse(emp["employment_ends"]) if emp["employment_ends"] else None
        records = self.cases(employee_id=employee_id)
        live = [c for c in records if c.state != "dismissed"]
        existing = {(x.line.case_id, x.line.period): x for x in self.lines(employee_id=employee_id)}
        balances = {c.case_id: c.recoverable_fen for c in live}
        changed: list[LedgerLine] = []
        violations: list[Violation] = []
        produced: set[tuple[str, Period]] = set()
        now = self._now()

        for wage in self._wages(employee_id):
            eligible = [c for c in live if Period.of(c.confirmed_at) <= wage.period]
            if not eligible:
                continue
            settled = {c.case_id: existing[(c.case_id, wage.period)].line.deduction_fen for c in eligible
                       if (c.case_id, wage.period) in existing
                       and existing[(c.case_id, wage.period)].state == "exported"}
            terms, _row = terms_in_force(self.table, region, emp["tier"], wage.period)
            engine_cases = [Case(c.case_id, c.confirmed_at, max(1, c.recoverable_fen), c.state == "paused")
                            for c in eligible]
            out = schedule_period(wage=wage, terms=terms, cases=engine_cases, ended=ends is not None
                                  and wage.period > ends, settled=settled,
                                  balances={c.case_id: balances[c.case_id] for c in eligible})
            balances.update(out.balances)
            violations.extend(out.violations)
            for line in out.lines:
                produced.add((line.case_id, line.period))
                old = existing.get((line.case_id, line.period))
                if old is not None and old.line == line and old.minimum_wage_fen == terms.minimum_wage_fen:
                    continue
                self._db.execute(
                    "INSERT INTO lines (case_id, period, employee_id, deduction_fen, cap_fen, headroom_fen, binding,"
                    " balance_after_fen, minimum_wage_fen, state, planned_fen, computed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'scheduled', ?, ?) ON CONFLICT (case_id, period) DO UPDATE SET "
                    "deduction_fen = excluded.deduction_fen, cap_fen = excluded.cap_fen, "
                    "headroom_fen = excluded.headroom_fen, binding = excluded.binding, "
                    "balance_after_fen = excluded.balance_after_fen, minimum_wage_fen = excluded.minimum_wage_fen,"
                    " planned_fen = excluded.planned_fen, computed_at = excluded.computed_at "
                    "WHERE lines.state = 'scheduled'",
                    (line.case_id, str(line.period), employee_id, line.deduction_fen, line.cap_fen,
                     line.headroom_fen, line.binding.value, line.balance_after_fen, terms.minimum_wage_fen,
                     line.deduction_fen, now),
                )
                changed.append(LedgerLine(employee_id, line, terms.minimum_wage_fen, "scheduled", None, None,
                                          line.deduction_fen))
        for (case_id, period), old in existing.items():
            if old.state == "scheduled" and (case_id, period) not in produced:
                self._db.execute("DELETE FROM lines WHERE case_id = ? AND period = ?", (case_id, str(period)))

        new_violations = []
        for v in violations:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO violations VALUES (?, ?, ?, ?, ?, ?, ?)",
                (v.case_id or "", employee_id, str(v.period), v.limit.value, v.excess_fen, v.describe(), now))
            if cur.rowcount:
                new_violations.append(v)
        refunds = {}
        for c in records:
            taken = sum(x.line.deduction_fen for (cid, _), x in existing.items()
                        if cid == c.case_id and x.state == "exported")
            if taken > (0 if c.state == "dismissed" else c.recoverable_fen):
                refunds[c.case_id] = taken - (0 if c.state == "dismissed" else c.recoverable_fen)
        return Recomputation(employee_id, tuple(changed), tuple(new_violations), corrected, refunds)

    # --- lifecycle ----------------------------------------------------------------------------

    def _transition(self, case_id: str, action: str) -> CaseRecord:
        record = self.case(case_id)
        state = next_case_state(record.state, action, case_id=case_id)
        self._db.execute("UPDATE cases SET state = ? WHERE case_id = ?", (state, case_id))
        return record

    def pause(self, *, case_id: str, reason: str, actor: str) -> Recomputation:
        """Pauses a case under appeal or arbitration: its scheduled lines deduct nothing."""
        if not reason.strip():
            raise InvalidInput("a pause needs a reason (the appeal or arbitration reference)")
        with self._tx():
            record = self._transition(case_id, "pause")
            self._audit(actor, "case.paused", case_id, {"reason": reason})
            return self._recompute(record.employee_id)

    def resume(self, *, case_id: str, award_fen: int, award_ref: str, actor: str) -> Recomputation:
        """Ends the pause with the award: its amount replaces HR's figure (zero dismisses the case)."""
        if isinstance(award_fen, bool) or not isinstance(award_fen, int) or award_fen < 0:
            raise InvalidInput(f"the award must be a whole number of fen, zero or more, got {award_fen!r}")
        if not award_ref.strip():
            raise InvalidInput("a resume needs the award's reference (ruling or settlement number)")
        with self._tx() as db:
            record = self._transition(case_id, "resume" if award_fen > 0 else "dismiss")
            db.execute("UPDATE cases SET award_fen = ?, award_ref = ? WHERE case_id = ?",
                       (award_fen, award_ref, case_id))
            result = self._recompute(record.employee_id)
            self._audit(actor, "case.resumed" if award_fen > 0 else "case.dismissed", case_id, {
                "award_fen": award_fen, "award_ref": award_ref, "hr_loss_fen": record.loss_fen,
                "refunds_fen": result.refunds_fen})
            return result

    def end_employment(self, *, employee_id: str, last_period: Period, actor: str) -> Recomputation:
        """Records the last month of employment: no deduction after it, balances stay open."""
        with self._tx() as db:
            self._employee(employee_id)
            db.execute("UPDATE employees SET employment_ends = ? WHERE employee_id = ?",
                       (str(last_period), employee_id))
            result = self._recompute(employee_id)
            self._audit(actor, "employment.ended", employee_id, {"last_period": str(last_period)})
            return result

    def remaining_fen(self, *, employee_id: str) -> dict[str, int]:
        """Each case's balance after its last stored line (or its whole amount if none)."""
        out = {}
        for c in self.cases(employee_id=employee_id):
            lines = self.lines(case_id=c.case_id)
            out[c.case_id] = 0 if c.state == "dismissed" else (
                lines[-1].line.balance_after_fen if lines else c.recoverable_fen)
        return out

    # --- notices ------------------------------------------------------------------------------

    def record_notice(self, *, case_id: str, notice_id: str, issued_on: date, actor: str) -> None:
        """Records that a written notice was produced for the case."""
        with self._tx() as db:
            self.case(case_id)
            db.execute("INSERT INTO notices (notice_id, case_id, issued_on) VALUES (?, ?, ?) "
                       "ON CONFLICT (notice_id) DO NOTHING", (notice_id, case_id, issued_on.isoformat()))
            self._audit(actor, "notice.issued", case_id, {"notice_id": notice_id, "issued_on": issued_on.isoformat()})

    def notice_served(self, *, case_id: str, notice_id: str, served_on: date, actor: str) -> None:
        """Records the day the written notice reached the employee (Guangdong needs it before export)."""
        with self._tx() as db:
            self.case(case_id)
            db.execute("INSERT INTO notices (notice_id, case_id, issued_on, served_on) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (notice_id) DO UPDATE SET served_on = excluded.served_on",
                       (notice_id, case_id, served_on.isoformat(), served_on.isoformat()))
            row = db.execute("SELECT case_id FROM notices WHERE notice_id = ?", (notice_id,)).fetchone()
            if row["case_id"] != case_id:
                raise InvalidInput(f"notice {notice_id} belongs to case {row['case_id']}, not {case_id}")
            self._audit(actor, "notice.served", case_id, {"notice_id": notice_id, "served_on": served_on.isoformat()})

    def _served_notice(self, case_id: str, period: Period) -> tuple[str, date] | None:
        row = self._db.execute(
            "SELECT notice_id, served_on FROM notices WHERE case_id = ? AND served_on IS NOT NULL "
            "AND served_on <= ? ORDER BY served_on DESC, notice_id LIMIT 1",
            (case_id, period.last_day.isoformat())).fetchone()
        return (row["notice_id"], date.fromisoformat(row["served_on"])) if row else None

    # --- exports ------------------------------------------------------------------------------

    def export(self, *, period: Period, actor: str) -> ExportBatch:
        """Freezes the period's scheduled lines and returns the ones to deduct; never the same line twice."""
        with self._tx() as db:
            pending = [x for x in self.lines(period=period) if x.state == "scheduled"]
            already = sum(1 for x in self.lines(period=period) if x.state == "exported" and x.line.deduction_fen)
            if not pending:
                self._audit(actor, "export.nothing_new", str(period), {"already_exported": already})
                return ExportBatch(None, period, (), (), already)
            n = db.execute("SELECT COUNT(*) FROM exports WHERE period = ?", (str(period),)).fetchone()[0]
            export_id = f"X-{period}-{n + 1:03d}"
            db.execute("INSERT INTO exports VALUES (?, ?, ?, ?)", (export_id, str(period), self._now(), actor))
            out: list[ExportLine] = []
            blocked: list[LedgerLine] = []
            touched: set[str] = set()
            for x in pending:
                next_line_state(x.state, "export")
                emp = self._employee(x.employee_id)
                region = self.table.region(emp["region"])
                notice = self._served_notice(x.line.case_id, period)
                reason = None
                if region is not None and region.requires_written_notice and notice is None \
                        and x.line.deduction_fen > 0:
                    reason = "WRITTEN_NOTICE_MISSING"
                amount = 0 if reason else x.line.deduction_fen
                db.execute("UPDATE lines SET state = 'exported', export_id = ?, blocked = ?, deduction_fen = ? "
                           "WHERE case_id = ? AND period = ?",
                           (export_id, reason, amount, x.line.case_id, str(period)))
                if reason:
                    blocked.append(LedgerLine(x.employee_id, x.line, x.minimum_wage_fen, "exported", export_id,
                                              reason, x.planned_fen))
                    touched.add(x.employee_id)
                elif amount > 0:
                    out.append(ExportLine(x.idempotency_key, x.employee_id, period, x.line.case_id, amount,
                                          x.line.binding, notice[0] if notice else None,
                                          notice[1] if notice else None))
            for employee_id in sorted(touched):
                self._recompute(employee_id)  # a blocked line deducted nothing: later periods may take more
            self._audit(actor, "export.created", export_id, {
                "period": str(period), "lines": len(out), "total_fen": sum(x.amount_fen for x in out),
                "blocked": [b.line.case_id for b in blocked]})
            return ExportBatch(export_id, period, tuple(out), tuple(blocked), already)

    def export_batch(self, export_id: str) -> ExportBatch:
        """Gets an export by id, with the lines it sent (for re-rendering or a retried push)."""
        row = self._db.execute("SELECT * FROM exports WHERE export_id = ?", (export_id,)).fetchone()
        if row is None:
            raise UnknownRecord(f"no export {export_id!r}")
        period = Period.parse(row["period"])
        rows = self._db.execute(
            "SELECT l.* FROM lines l JOIN cases c USING (case_id) WHERE export_id = ? "
            "ORDER BY l.employee_id, c.confirmed_at, l.case_id", (export_id,)).fetchall()
        out, blocked = [], []
        for r in rows:
            x = self._line(r)
            if x.blocked:
                blocked.append(x)
            elif x.line.deduction_fen > 0:
                notice = self._served_notice(x.line.case_id, period)
                out.append(ExportLine(x.idempotency_key, x.employee_id, period, x.line.case_id,
                                      x.line.deduction_fen, x.line.binding, notice[0] if notice else None,
                                      notice[1] if notice else None))
        return ExportBatch(export_id, period, tuple(out), tuple(blocked))

    def audit_export_file(self, *, export_id: str, fmt: str, path: str, actor: str) -> None:
        """Records that an export was written to a file."""
        with self._tx():
            self._audit(actor, "export.written", export_id, {"format": fmt, "path": path})

    def pushed(self, export_id: str) -> dict[str, str]:
        """Idempotency keys of the export already accepted by the payroll system, with their remote names."""
        rows = self._db.execute("SELECT idempotency_key, remote_name FROM pushes WHERE export_id = ?",
                                (export_id,)).fetchall()
        return {r["idempotency_key"]: r["remote_name"] for r in rows}

    def record_push(self, *, export_id: str, target: str, accepted: dict[str, str], failed: dict[str, str],
                    actor: str) -> None:
        """Records what the payroll system accepted (and what it did not) for an export."""
        with self._tx() as db:
            for key, name in accepted.items():
                db.execute("INSERT OR IGNORE INTO pushes VALUES (?, ?, ?, ?, ?)",
                           (export_id, key, target, name, self._now()))
            self._audit(actor, "export.pushed", export_id, {"target": target, "accepted": accepted,
                                                            "failed": failed})
