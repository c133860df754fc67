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

import hashlib
import json
import os
import re
import secrets
import sqlite3
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from payroll_bridge.contract import check_excluded_items, decode_json, has_fraction, json_default
from payroll_bridge.errors import InvalidInput, LedgerError, TableError, TransitionRefused, UnknownRecord
from payroll_bridge.intake import ClaimedLoss, IntakeDecision, Refusal, assess
from payroll_bridge.ledger_records import (
    AuditEntry,
    CaseRecord,
    ExportBatch,
    ExportLine,
    IntakeOutcome,
    LedgerLine,
    Recomputation,
    RefundLine,
    RefundRecord,
    refund_lines,
)
from payroll_bridge.lifecycle import next_case_state, next_line_state
from payroll_bridge.minimum_wage import MinimumWageTable, RegionRule, WageRow
from payroll_bridge.period import Period
from payroll_bridge.rules import (
    Binding,
    Case,
    DeductionLine,
    PeriodTerms,
    PeriodWage,
    Refund,
    Violation,
    schedule_period,
)

# Case states in which nothing new is deducted: under appeal or arbitration, under objection, dismissed.
_NOT_DEDUCTING = ("paused", "objected", "dismissed")

__all__ = [
    "Ledger",
    "CaseRecord",
    "LedgerLine",
    "ExportBatch",
    "RefundLine",
    "RefundRecord",
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
    housing_fund_fen INTEGER NOT NULL, recorded_at TEXT NOT NULL,
    other_loss_deductions_fen INTEGER NOT NULL DEFAULT 0, disciplinary_deductions_fen INTEGER NOT NULL DEFAULT 0,
    excluded_items TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (employee_id, period));
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
    served_on TEXT, amounts TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS refunds (
    refund_id TEXT PRIMARY KEY, case_id TEXT NOT NULL REFERENCES cases(case_id), employee_id TEXT NOT NULL,
    period TEXT NOT NULL, limit_name TEXT NOT NULL, amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
    created_at TEXT NOT NULL, state TEXT NOT NULL, export_id TEXT, paid_period TEXT);
CREATE TABLE IF NOT EXISTS objections (
    objection_id INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL REFERENCES cases(case_id),
    notice_id TEXT NOT NULL REFERENCES notices(notice_id), received_on TEXT NOT NULL, reason TEXT NOT NULL,
    answered_at TEXT, answer TEXT, upheld INTEGER);
CREATE TABLE IF NOT EXISTS clients (
    name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, revoked_at TEXT);
CREATE TABLE IF NOT EXISTS violations (
    case_id TEXT NOT NULL DEFAULT '', employee_id TEXT NOT NULL, period TEXT NOT NULL,
    limit_name TEXT NOT NULL, excess_fen INTEGER NOT NULL, message TEXT NOT NULL, found_at TEXT NOT NULL,
    PRIMARY KEY (employee_id, case_id, period, limit_name, excess_fen));
CREATE TABLE IF NOT EXISTS audit (
    audit_id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);
"""

_ADDED_COLUMNS = (
    ("wages", "other_loss_deductions_fen", "INTEGER NOT NULL DEFAULT 0"),
    ("wages", "disciplinary_deductions_fen", "INTEGER NOT NULL DEFAULT 0"),
    ("wages", "excluded_items", "TEXT NOT NULL DEFAULT '[]'"),
    ("notices", "amounts", "TEXT NOT NULL DEFAULT '{}'"),
    ("notices", "service_proof", "TEXT"),  # the electronic proof of service (payroll_bridge/service_proof.py)
)


_WAGE_COLUMNS = ("wage_fen", "excluded_items_fen", "social_insurance_fen", "housing_fund_fen",
                 "other_loss_deductions_fen", "disciplinary_deductions_fen", "excluded_items")


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
                        region.cap_percent, region.cap_base, region.disciplinary_shares_limits)
    return terms, row


def _create_private(path: Path) -> None:
    """Creates the ledger file 0600 (its directory 0700 when missing); tightens a file others can read.

    SQLite gives its -wal and -shm files the database file's mode, so they follow.
    """
    if not path.exists():
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
    mode = path.stat().st_mode
    if mode & 0o077 and path.stat().st_uid == os.getuid():
        os.chmod(path, 0o600)


_CHINA = timezone(timedelta(hours=8))  # days (appeal windows) are counted on the employee's calendar


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


MAX_ACTOR_CHARS = 128
REFUSED_PAYLOAD_CHARS = 4096


_CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
                 clock: Callable[[], datetime] = _utcnow, appeal_days: int = 15) -> None:
        self.path = Path(path)
        self.table = table
        self.appeal_days = appeal_days
        self._clock = clock
        try:
            _create_private(self.path)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Adds the columns later versions need to a ledger file made by an earlier one."""
        for table, column, decl in _ADDED_COLUMNS:
            have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

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

    def audit_forced_override(self, *, employee_id: str, warnings: list[dict[str, Any]], actor: str) -> None:
        """Records that a schedule was computed with an override weaker than the confirmed table."""
        with self._tx():
            self._audit(actor, "schedule.override_forced", employee_id, {"warnings": warnings})

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
            emp = self._employee(employee_id)
            region = self.table.region(emp["region"])
            for w in wages:
                check_excluded_items(w, region)
            corrected: list[Period] = []
            for w in wages:
                old = db.execute("SELECT * FROM wages WHERE employee_id = ? AND period = ?",
                                 (employee_id, str(w.period))).fetchone()
                values = (w.wage_fen, w.excluded_items_fen, w.social_insurance_fen, w.housing_fund_fen,
                          w.other_loss_deductions_fen, w.disciplinary_deductions_fen,
                          json.dumps(w.excluded_items))
                if old is not None and tuple(old[k] for k in _WAGE_COLUMNS) == values:
                    continue
                if old is not None:
                    corrected.append(w.period)
                db.execute(
                    f"INSERT INTO wages (employee_id, period, {', '.join(_WAGE_COLUMNS)}, recorded_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (employee_id, period) DO UPDATE SET "
                    + ", ".join(f"{k} = excluded.{k}" for k in (*_WAGE_COLUMNS, "recorded_at")),
                    (employee_id, str(w.period), *values, self._now()),
                )
            result = self._recompute(employee_id, corrected=tuple(sorted(corrected)))
            if corrected:
                self._audit(actor, "wages.corrected", employee_id, {
                    "periods": [str(p) for p in sorted(corrected)],
                    "violations": [v.to_json() for v in result.violations],
                    "refunds": [r.to_json() for r in result.refunds]})
        return result

    def _wages(self, employee_id: str) -> list[PeriodWage]:
        rows = self._db.execute("SELECT * FROM wages WHERE employee_id = ? ORDER BY period",
                                (employee_id,)).fetchall()
        return [PeriodWage(Period.parse(r["period"]), r["wage_fen"], r["excluded_items_fen"],
                           r["social_insurance_fen"], r["housing_fund_fen"], r["other_loss_deductions_fen"],
                           r["disciplinary_deductions_fen"],
                           tuple((str(c), int(f)) for c, f in json.loads(r["excluded_items"]))) for r in rows]

    def wage(self, *, employee_id: str, period: Period) -> PeriodWage | None:
        """The recorded wage of one period, or None."""
        return next((w for w in self._wages(employee_id) if w.period == period), None)

    def _refunded(self, employee_id: str) -> dict[tuple[str, Period], int]:
        rows = self._db.execute("SELECT case_id, period, SUM(amount_fen) AS fen FROM refunds WHERE employee_id = ? "
                                "GROUP BY case_id, period", (employee_id,)).fetchall()
        return {(r["case_id"], Period.parse(r["period"])): int(r["fen"]) for r in rows}

    def _recompute(self, employee_id: str, *, corrected: tuple[Period, ...] = ()) -> Recomputation:
        """Re-derives every scheduled line of the employee; frozen lines stay, are checked, and any
        excess found in them becomes a refund."""
        emp = self._employee(employee_id)
        region = self.table.region(emp["region"])
        if region is None:
            raise TableError(f"region {emp['region']} of {employee_id} is no longer in the minimum-wage table")
        ends = Period.parse(emp["employment_ends"]) if emp["employment_ends"] else None
        records = self.cases(employee_id=employee_id)
        existing = {(x.line.case_id, x.line.period): x for x in self.lines(employee_id=employee_id)}
        refunded = self._refunded(employee_id)
        # A dismissed case may recover nothing: its balance is zero, so whatever it took is refunded.
        balances = {c.case_id: 0 if c.state == "dismissed" else c.recoverable_fen for c in records}
        changed: list[LedgerLine] = []
        violations: list[Violation] = []
        refunds: list[Refund] = []
        produced: set[tuple[str, Period]] = set()
        now = self._now()

        for wage in self._wages(employee_id):
            frozen = {c.case_id for c in records if (c.case_id, wage.period) in existing
                      and existing[(c.case_id, wage.period)].state == "exported"}
            eligible = [c for c in records if Period.of(c.confirmed_at) <= wage.period
                        and (c.state != "dismissed" or c.case_id in frozen)]
            if not eligible:
                continue
            settled = {cid: existing[(cid, wage.period)].line.deduction_fen - refunded.get((cid, wage.period), 0)
                       for cid in frozen}
            terms, _row = terms_in_force(self.table, region, emp["tier"], wage.period)
            engine_cases = [Case(c.case_id, c.confirmed_at, max(1, c.recoverable_fen), c.state in _NOT_DEDUCTING)
                            for c in eligible]
            out = schedule_period(wage=wage, terms=terms, cases=engine_cases, ended=ends is not None
                                  and wage.period > ends, settled=settled,
                                  balances={c.case_id: balances[c.case_id] for c in eligible})
            balances.update(out.balances)
            violations.extend(out.violations)
            for r in out.refunds:
                self._add_refund(employee_id, r, now)
                refunds.append(r)
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
        return Recomputation(employee_id, tuple(changed), tuple(new_violations), corrected, tuple(refunds))

    def _add_refund(self, employee_id: str, refund: Refund, now: str) -> None:
        n = self._db.execute("SELECT COUNT(*) FROM refunds WHERE case_id = ? AND period = ?",
                             (refund.case_id, str(refund.period))).fetchone()[0]
        self._db.execute(
            "INSERT INTO refunds (refund_id, case_id, employee_id, period, limit_name, amount_fen, created_at, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'scheduled')",
            (f"R-{refund.case_id}-{refund.period}-{n + 1:03d}", refund.case_id, employee_id, str(refund.period),
             refund.limit.value, refund.amount_fen, now))

    def refunds(self, *, employee_id: str | None = None, case_id: str | None = None) -> list[RefundRecord]:
        """Refunds owed or paid, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM refunds WHERE (? IS NULL OR employee_id = ?) AND (? IS NULL OR case_id = ?) "
            "ORDER BY created_at, refund_id", (employee_id, employee_id, case_id, case_id)).fetchall()
        return [RefundRecord(r["refund_id"], r["case_id"], r["employee_id"], Period.parse(r["period"]),
                             Binding(r["limit_name"]), r["amount_fen"], r["state"], r["export_id"],
                             Period.parse(r["paid_period"]) if r["paid_period"] else None) for r in rows]

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
        """Each case's balance after its stored lines, net of refunds (a refund puts money back owed)."""
        out = {}
        refunded = self._refunded(employee_id)
        for c in self.cases(employee_id=employee_id):
            taken = sum(x.line.deduction_fen for x in self.lines(case_id=c.case_id))
            back = sum(fen for (cid, _), fen in refunded.items() if cid == c.case_id)
            out[c.case_id] = (0 if c.state == "dismissed" else c.recoverable_fen) - taken + back
        return out

    # --- notices and objections ---------------------------------------------------------------
    #
    # Every region: a line deducts only once a notice stating that month's amount was served on or
    # before the period's last day and the appeal window after service has passed with no
    # objection (Guangdong requires the notice in writing; elsewhere it is what an arbitrator
    # expects). An objection within the window puts the case in ``objected`` until HR answers.

    def next_notice_id(self, *, case_id: str, issued_on: date) -> str:
        """N-<case>-<yyyymmdd>, then -2, -3 … for further notices the same day."""
        base = f"N-{case_id}-{issued_on:%Y%m%d}"
        taken = {r["notice_id"] for r in self._db.execute(
            "SELECT notice_id FROM notices WHERE notice_id = ? OR notice_id LIKE ?", (base, base + "-%"))}
        n = 1
        while (base if n == 1 else f"{base}-{n}") in taken:
            n += 1
        return base if n == 1 else f"{base}-{n}"

    def record_notice(self, *, case_id: str, notice_id: str, issued_on: date, amounts: dict[Period, int],
                      actor: str) -> None:
        """Records a notice produced for the case and the amount it states for each month."""
        with self._tx() as db:
            self.case(case_id)
            if db.execute("SELECT 1 FROM notices WHERE notice_id = ?", (notice_id,)).fetchone():
                raise TransitionRefused(f"notice {notice_id} was already issued")
            stated = {str(p): fen for p, fen in sorted(amounts.items())}
            db.execute("INSERT INTO notices (notice_id, case_id, issued_on, amounts) VALUES (?, ?, ?, ?)",
                       (notice_id, case_id, issued_on.isoformat(), json.dumps(stated)))
            self._audit(actor, "notice.issued", case_id, {"notice_id": notice_id, "issued_on": issued_on.isoformat(),
                                                          "amounts": stated})

    def notice_served(self, *, case_id: str, notice_id: str, served_on: date, actor: str,
                      proof: Mapping[str, Any] | None = None) -> None:
        """Records the day an issued notice reached the employee (never before it was issued), with the
        electronic proof of service when it came that way (payroll_bridge/service_proof.py)."""
        with self._tx() as db:
            self.case(case_id)
            row = db.execute("SELECT * FROM notices WHERE notice_id = ?", (notice_id,)).fetchone()
            if row is None:
                raise UnknownRecord(f"notice {notice_id!r} was never issued: issue it with `notice {case_id}` first")
            if row["case_id"] != case_id:
                raise LedgerError(f"notice {notice_id} belongs to case {row['case_id']}, not {case_id}")
            issued = date.fromisoformat(row["issued_on"])
            if served_on > self._today():
                raise LedgerError(f"notice {notice_id} cannot have been served on {served_on}, after today "
                                  f"({self._today()}): record service once it happened")
            if served_on < issued:
                raise LedgerError(f"notice {notice_id} was issued on {issued}: it cannot have been served on "
                                  f"{served_on}")
            if row["served_on"] is not None and row["served_on"] != served_on.isoformat():
                raise TransitionRefused(f"notice {notice_id} was already recorded as served on {row['served_on']}")
            db.execute("UPDATE notices SET served_on = ?, service_proof = COALESCE(?, service_proof) WHERE notice_id = ?",
                       (served_on.isoformat(), json.dumps(proof, sort_keys=True) if proof else None, notice_id))
            self._audit(actor, "notice.served", case_id, {"notice_id": notice_id, "served_on": served_on.isoformat(),
                                                          **({"proof": dict(proof)} if proof else {})})

    def notices(self, *, case_id: str) -> list[dict[str, Any]]:
        """The case's notices: id, issue and service days, the amounts they state."""
        rows = self._db.execute("SELECT * FROM notices WHERE case_id = ? ORDER BY issued_on, notice_id",
                                (case_id,)).fetchall()
        return [{"notice_id": r["notice_id"], "issued_on": r["issued_on"], "served_on": r["served_on"],
                 "amounts": json.loads(r["amounts"]),
                 "service_proof": json.loads(r["service_proof"]) if r["service_proof"] else None} for r in rows]

    def _today(self) -> date:
        return self._clock().astimezone(_CHINA).date()

    def window_ends(self, served_on: date) -> date:
        """The last day on which the employee may still object to a notice served on ``served_on``."""
        return served_on + timedelta(days=self.appeal_days)

    def _gate(self, case_id: str, period: Period, amount: int) -> tuple[str | None, tuple[str, date] | None]:
        """Why a deduction may not be exported yet (or None), and the notice that allows it."""
        rows = self._db.execute(
            "SELECT notice_id, served_on, amounts FROM notices WHERE case_id = ? AND served_on IS NOT NULL "
            "AND served_on <= ? ORDER BY served_on DESC, notice_id DESC",
            (case_id, period.last_day.isoformat())).fetchall()
        if not rows:
            return "WRITTEN_NOTICE_MISSING", None
        stating = [r for r in rows if json.loads(r["amounts"]).get(str(period)) == amount]
        if not stating:
            return "NOTICE_AMOUNT_MISMATCH", None
        notice = (stating[0]["notice_id"], date.fromisoformat(stating[0]["served_on"]))
        if self._today() <= self.window_ends(notice[1]):
            return "APPEAL_WINDOW_OPEN", notice
        return None, notice

    def _served_notice(self, case_id: str, period: Period, amount: int) -> tuple[str, date] | None:
        return self._gate(case_id, period, amount)[1]

    def object_to_notice(self, *, case_id: str, notice_id: str, received_on: date, reason: str,
                         actor: str) -> Recomputation:
        """Records the employee's written objection; within the window it pauses the case until answered."""
        if not reason.strip():
            raise InvalidInput("an objection needs the employee's reason (as received)")
        with self._tx() as db:
            record = self.case(case_id)
            row = db.execute("SELECT * FROM notices WHERE notice_id = ? AND case_id = ?",
                             (notice_id, case_id)).fetchone()
            if row is None or row["served_on"] is None:
                raise UnknownRecord(f"no served notice {notice_id!r} for case {case_id}")
            served = date.fromisoformat(row["served_on"])
            if received_on > self._today():
                raise LedgerError(f"an objection cannot have been received on {received_on}, after today")
            if not served <= received_on <= self.window_ends(served):
                raise LedgerError(
                    f"the objection was received on {received_on}, outside the appeal window of notice {notice_id} "
                    f"({served} to {self.window_ends(served)}): it does not pause the case; if the employee "
                    "applies for arbitration, `pause` the case")
            state = next_case_state(record.state, "object", case_id=case_id)
            db.execute("UPDATE cases SET state = ? WHERE case_id = ?", (state, case_id))
            cur = db.execute("INSERT INTO objections (case_id, notice_id, received_on, reason) VALUES (?, ?, ?, ?)",
                             (case_id, notice_id, received_on.isoformat(), reason))
            self._audit(actor, "objection.received", case_id, {
                "objection_id": cur.lastrowid, "notice_id": notice_id, "received_on": received_on.isoformat(),
                "reason": reason})
            return self._recompute(record.employee_id)

    def answer_objection(self, *, case_id: str, response: str, upheld: bool, actor: str) -> Recomputation:
        """HR's answer: rejected, the case deducts again; upheld, the claim is withdrawn (and refunded)."""
        if not response.strip():
            raise InvalidInput("an answer to an objection needs HR's response (what was reviewed and why)")
        with self._tx() as db:
            record = self.case(case_id)
            state = next_case_state(record.state, "uphold" if upheld else "answer", case_id=case_id)
            db.execute("UPDATE cases SET state = ? WHERE case_id = ?", (state, case_id))
            if upheld:
                db.execute("UPDATE cases SET award_fen = 0, award_ref = ? WHERE case_id = ?",
                           (f"objection upheld: {response}"[:200], case_id))
            db.execute("UPDATE objections SET answered_at = ?, answer = ?, upheld = ? WHERE case_id = ? "
                       "AND answered_at IS NULL", (self._now(), response, int(upheld), case_id))
            result = self._recompute(record.employee_id)
            self._audit(actor, "objection.upheld" if upheld else "objection.rejected", case_id, {
                "response": response, "refunds_fen": result.refunds_fen})
            return result

    def objections(self, *, case_id: str) -> list[dict[str, Any]]:
        """The case's objections and HR's answers."""
        rows = self._db.execute("SELECT * FROM objections WHERE case_id = ? ORDER BY objection_id",
                                (case_id,)).fetchall()
        return [dict(r) for r in rows]

    # --- HTTP clients -------------------------------------------------------------------------
    #
    # Each HTTP client (the collector, an HR tool) has its own bearer credential. Only its SHA-256
    # is stored; the token is shown once. Whoever acts over HTTP is recorded as ``client:<name>``,
    # taken from the credential, never from a header the caller writes.

    def create_client(self, *, name: str, actor: str) -> str:
        """Creates a client credential and returns its token (shown once, stored only as a hash)."""
        if not _CLIENT_NAME.match(name):
            raise InvalidInput(f"a client name is 1-64 of a-z, 0-9, '.', '_', '-', got {name[:64]!r}")
        token = "spc_" + secrets.token_urlsafe(32)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM clients WHERE name = ?", (name,)).fetchone():
                raise TransitionRefused(f"client {name} exists: revoke it first to issue a new credential")
            db.execute("INSERT INTO clients (name, token_sha256, created_at) VALUES (?, ?, ?)",
                       (name, _token_hash(token), self._now()))
            self._audit(actor, "client.created", name, {})
        return token

    def revoke_client(self, *, name: str, actor: str) -> None:
        """Revokes a client's credential for good (the name can then be issued again)."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM clients WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownRecord(f"no client {name!r}")
            db.execute("DELETE FROM clients WHERE name = ?", (name,))
            self._audit(actor, "client.revoked", name, {"created_at": row["created_at"]})

    def clients(self) -> list[dict[str, str]]:
        """The clients with a credential, by name (never their tokens)."""
        return [{"name": r["name"], "created_at": r["created_at"]}
                for r in self._db.execute("SELECT name, created_at FROM clients ORDER BY name")]

    def authenticate(self, token: str) -> str | None:
        """The actor a bearer token stands for (``client:<name>``), or None."""
        if not token.startswith("spc_") or len(token) > 100:
            return None
        row = self._db.execute("SELECT name FROM clients WHERE token_sha256 = ?", (_token_hash(token),)).fetchone()
        return f"client:{row['name']}" if row else None

    def filed_by(self, *, case_id: str, actor: str) -> bool:
        """Whether ``actor`` filed the case (a client sees only the cases it filed)."""
        return self._db.execute("SELECT 1 FROM intakes WHERE case_id = ? AND actor = ? AND decision = 'accepted'",
                                (case_id, actor)).fetchone() is not None

    # --- exports ------------------------------------------------------------------------------

    def export(self, *, period: Period, actor: str) -> ExportBatch:
        """Freezes the period's scheduled lines, pays pending refunds; never the same line twice."""
        with self._tx() as db:
            pending = [x for x in self.lines(period=period) if x.state == "scheduled"]
            already = sum(1 for x in self.lines(period=period) if x.state == "exported" and x.line.deduction_fen)
            owed = self._payable_refunds(period)
            if not pending and not owed:
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
                reason, notice = (None, None)
                if x.line.deduction_fen > 0:
                    reason, notice = self._gate(x.line.case_id, period, x.line.deduction_fen)
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
            for r in owed:
                db.execute("UPDATE refunds SET state = 'exported', export_id = ?, paid_period = ? WHERE refund_id = ?",
                           (export_id, str(period), r.refund_id))
            for employee_id in sorted(touched):
                self._recompute(employee_id)  # a blocked line deducted nothing: later periods may take more
            refunds = refund_lines(owed, period)
            self._audit(actor, "export.created", export_id, {
                "period": str(period), "lines": len(out), "total_fen": sum(x.amount_fen for x in out),
                "blocked": [b.line.case_id for b in blocked],
                "refunds_fen": sum(r.amount_fen for r in refunds)})
            return ExportBatch(export_id, period, tuple(out), tuple(blocked), already, refunds)

    def _payable_refunds(self, period: Period) -> list[RefundRecord]:
        """Refunds owed, except for a case already refunded in this payroll month (one record per case
        and month keeps the payroll system's look-up unique); those wait for the next month."""
        paid = {r["case_id"] for r in self._db.execute(
            "SELECT case_id FROM refunds WHERE state = 'exported' AND paid_period = ?", (str(period),))}
        return [r for r in self.refunds() if r.state == "scheduled" and r.case_id not in paid]

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
                notice = self._served_notice(x.line.case_id, period, x.line.deduction_fen)
                out.append(ExportLine(x.idempotency_key, x.employee_id, period, x.line.case_id,
                                      x.line.deduction_fen, x.line.binding, notice[0] if notice else None,
                                      notice[1] if notice else None))
        refunds = refund_lines([r for r in self.refunds() if r.export_id == export_id], period)
        return ExportBatch(export_id, period, tuple(out), tuple(blocked), 0, refunds)

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
