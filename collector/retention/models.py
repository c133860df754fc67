"""Retention values: the periods per kind of record, legal holds, the record of each run, audit anchors.

Theory of operation: every kind of record has a retention period (``RetentionPolicy``, built from the
settings). A run deletes, kind by kind, what is older than its period and not held:

* **events**: batch by batch. A pruned batch keeps its batch hash, previous hash, signature and
  Merkle leaf, so every signed tree head and the hash chain stay verifiable; only the personal data
  (the events and the signed bytes that carry them) is gone.
* **alerts**: an alert (and its evidence list) that no case holds; a case's alerts go with the case.
* **cases**: closed or dismissed cases only, with their history, comments, attachments, HR records
  and payroll hand-offs. A case handed to payroll is kept at least ``payroll_days`` (two years,
  《工资支付暂行规定》第六条) from its last hand-off, whatever ``cases_days`` says.
* **audit**: the oldest rows of the audit log, as one prefix of the hash chain; an ``AuditAnchor``
  records the last deleted row's id and hash, so the chain is verified from there on.
* **notifications**: delivered or failed outbox rows.

Holds: a case that is not closed or dismissed holds its alerts and their evidence events
automatically (``CaseHold``); a manual ``LegalHold`` (a user, an agent, a time range, a reason) holds
events, alerts and cases it covers. Each run is a ``RetentionRun``: kind, cutoff, how many deleted,
how many held and why (``held_why``: reason -> count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

__all__ = ["LegalHold", "RetentionRun", "CaseHold", "AuditAnchor", "RetentionPolicy", "KINDS", "covers",
           "covers_span", "PAYROLL_MIN_DAYS", "PAYROLL_BASIS"]

KINDS = ("events", "alerts", "cases", "audit", "notifications")
# 《工资支付暂行规定》(劳部发〔1994〕489号) 第六条: wage payment records are kept two years or more
PAYROLL_MIN_DAYS = 730.0
PAYROLL_BASIS = "《工资支付暂行规定》第六条 (wage records are kept at least two years)"


@dataclass(frozen=True)
class LegalHold:
    """Keeps the events of a user and/or an agent within a time range from being pruned."""

    reason: str
    created_by: str
    created_at_ns: int
    since_ns: int
    until_ns: int
    user: str | None = None
    agent_id: str | None = None
    released_at_ns: int | None = None
    id: int | None = None


@dataclass(frozen=True)
class RetentionRun:
    """One pruning of one kind of record: what was deleted, and what was kept for a hold and why.

    For events, ``batches``/``events``/``held_batches`` are what verify reconciles with the pruned
    batches; ``records`` and ``held`` say the same for every kind (for events: batches).
    """

    at_ns: int
    before_ns: int
    batches: int
    events: int
    held_batches: int
    id: int | None = None
    last_row_id: int = 0  # the last row looked at (not stored): where the next chunk starts
    kind: str = "events"
    records: int = 0
    held: int = 0
    held_why: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CaseHold:
    """A case that keeps its records: ``open`` (not closed or dismissed) or ``payroll`` (handed to payroll
    within the statutory minimum)."""

    case_id: int
    subject_user: str
    why: str
    created_at_ns: int

    @property
    def label(self) -> str:
        return f"case #{self.case_id} ({self.why})"


@dataclass(frozen=True)
class AuditAnchor:
    """Where the audit log was cut: rows up to ``cut_id`` are deleted; ``cut_hash`` is the last one's hash and
    ``rows`` how many rows the chain held up to it, so verify starts from here instead of the genesis."""

    at_ns: int
    cut_id: int
    cut_hash: str
    rows: int
    before_ns: int
    id: int | None = None


@dataclass(frozen=True)
class RetentionPolicy:
    """The period of each kind of record in days (None: kept), and the payroll minimum."""

    events_days: float | None = 365.0
    alerts_days: float | None = 730.0
    cases_days: float | None = 1095.0
    audit_days: float | None = 1095.0
    notifications_days: float | None = 90.0
    payroll_days: float = PAYROLL_MIN_DAYS

    def days(self, kind: str) -> float | None:
        return {"events": self.events_days, "alerts": self.alerts_days, "cases": self.cases_days,
                "audit": self.audit_days, "notifications": self.notifications_days}[kind]

    def problems(self) -> list[str]:
        """What makes the policy unlawful: periods below the statutory minimum for wage records."""
        out = []
        if self.payroll_days < PAYROLL_MIN_DAYS:
            out.append(f"payroll_days = {self.payroll_days:g} is below the statutory minimum of "
                       f"{PAYROLL_MIN_DAYS:g} days for records handed to payroll: {PAYROLL_BASIS}")
        if self.audit_days is not None and self.audit_days < PAYROLL_MIN_DAYS:
            out.append(f"audit_days = {self.audit_days:g} is below {PAYROLL_MIN_DAYS:g} days: the audit log holds "
                       f"HR's confirmations of wage deductions, {PAYROLL_BASIS}")
        return out


def covers(hold: LegalHold, *, user: str, agent_id: str, time_ns: int) -> bool:
    """Tells whether an active hold covers one event."""
    return covers_span(hold, user=user, agent_id=agent_id, since_ns=time_ns, until_ns=time_ns)


def covers_span(hold: LegalHold, *, user: str | None, agent_id: str | None, since_ns: int, until_ns: int) -> bool:
    """Tells whether an active hold covers a record of this user/agent spanning [since, until] (an alert, a case);
    a record without an agent (a case) is covered by a hold on its user only."""
    return (
        hold.released_at_ns is None
        and (hold.user is None or hold.user == user)
        and (hold.agent_id is None or hold.agent_id == agent_id)
        and hold.since_ns <= until_ns and since_ns <= hold.until_ns
    )
