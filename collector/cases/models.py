"""Cases: their values, the one lifecycle table, and four-eyes. Pure: values in, decisions out.

Theory of operation. A case is opened (``open``) from one or more alerts about one employee. Security
takes it up (``under_review``) and confirms it (``security_confirmed``) or dismisses it with a reason.
HR then records the documented loss, the signed confidentiality agreement, the payroll identity of
the employee and the notice served on them (collector/cases/hr.py checks each), and confirms
(``hr_confirmed``), or sends it back for more review, or dismisses it. An employee's appeal within the
notice's window moves an ``hr_confirmed`` case to ``appealed``; HR resolves it with a new decision
(back to ``hr_confirmed``) or upholds it (``dismissed``). From ``hr_confirmed`` HR hands the case to
payroll (``sent_to_payroll``): that step writes the outbox row the hand-off worker delivers. After the
hand-off, objections are the payroll bridge's own (``shoumi-payroll object``), which pauses deductions.
A case is ``closed`` from ``dismissed``, or from ``sent_to_payroll`` once the bridge's schedule has
recovered the whole balance.

``TRANSITIONS`` is the only place that says which step exists, who may take it and what it needs, so
a state in the store was always reached through every earlier one. Four-eyes compares the people
recorded in the history, never roles (an account's role can change): whoever confirmed for security
can take no HR step on the case, and whoever confirmed for HR cannot confirm for security.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = [
    "CaseState", "Side", "Need", "Step", "TRANSITIONS", "step_for", "steps_from", "four_eyes_violation",
    "Case", "CaseChange", "HistoryEntry", "Comment", "Attachment", "HrRecord", "HrKind", "Handoff",
    "HandoffState", "HANDOFF_TRANSITIONS", "Confirmations", "confirmations_of",
]


class CaseState(str, enum.Enum):
    """Where a case stands."""

    OPEN = "open"
    UNDER_REVIEW = "under_review"
    SECURITY_CONFIRMED = "security_confirmed"
    HR_CONFIRMED = "hr_confirmed"
    SENT_TO_PAYROLL = "sent_to_payroll"
    DISMISSED = "dismissed"
    APPEALED = "appealed"
    CLOSED = "closed"


class Side(str, enum.Enum):
    """Whose confirmation a step gives."""

    SECURITY = "security"
    HR = "hr"


class Need(str, enum.Enum):
    """What a step requires before it may be taken (422 when missing)."""

    REASON = "reason"              # a written reason in the request
    HR_RECORDS = "hr_records"      # loss, agreement, employee and notice on record, each valid
    APPEAL = "appeal"              # the employee's appeal, received within the notice's window
    DECISION = "decision"          # HR's written answer to the appeal
    SCHEDULE_DONE = "schedule_done"  # the bridge accepted the hand-off and recovered the whole balance


@dataclass(frozen=True)
class Step:
    """One allowed move: who may take it (a permission), what it needs, whose confirmation it is."""

    source: CaseState
    target: CaseState
    permission: str
    needs: tuple[Need, ...] = ()
    confirms: Side | None = None
    label: str = ""

    @property
    def hr_side(self) -> bool:
        """HR's steps: the security confirmer may take none of them."""
        return self.permission == "cases:hr"


_S = CaseState
_STEPS: tuple[Step, ...] = (
    Step(_S.OPEN, _S.UNDER_REVIEW, "cases:write", label="Start review"),
    Step(_S.OPEN, _S.DISMISSED, "cases:write", (Need.REASON,), label="Dismiss"),
    Step(_S.UNDER_REVIEW, _S.SECURITY_CONFIRMED, "cases:write", confirms=Side.SECURITY, label="Confirm for security"),
    Step(_S.UNDER_REVIEW, _S.DISMISSED, "cases:write", (Need.REASON,), label="Dismiss"),
    Step(_S.SECURITY_CONFIRMED, _S.HR_CONFIRMED, "cases:hr", (Need.HR_RECORDS,), confirms=Side.HR,
         label="Confirm for HR"),
    Step(_S.SECURITY_CONFIRMED, _S.UNDER_REVIEW, "cases:hr", (Need.REASON,), label="Send back to security"),
    Step(_S.SECURITY_CONFIRMED, _S.DISMISSED, "cases:hr", (Need.REASON,), label="Dismiss"),
    Step(_S.HR_CONFIRMED, _S.SENT_TO_PAYROLL, "cases:hr", (Need.HR_RECORDS,), label="Send to payroll"),
    Step(_S.HR_CONFIRMED, _S.APPEALED, "cases:hr", (Need.APPEAL,), label="Record the employee's appeal"),
    Step(_S.APPEALED, _S.HR_CONFIRMED, "cases:hr", (Need.DECISION, Need.HR_RECORDS), confirms=Side.HR,
         label="Reject the appeal (new decision)"),
    Step(_S.APPEALED, _S.DISMISSED, "cases:hr", (Need.DECISION,), label="Uphold the appeal (dismiss)"),
    Step(_S.SENT_TO_PAYROLL, _S.CLOSED, "cases:hr", (Need.SCHEDULE_DONE,), label="Close"),
    Step(_S.DISMISSED, _S.CLOSED, "cases:write", label="Close"),
)
# (from, to) -> the step
TRANSITIONS: dict[tuple[CaseState, CaseState], Step] = {(s.source, s.target): s for s in _STEPS}


def step_for(source: str, target: str) -> Step | None:
    """The step from one state to another, or None when there is none (unknown names included)."""
    try:
        return TRANSITIONS.get((CaseState(source), CaseState(target)))
    except ValueError:
        return None


def steps_from(source: str) -> tuple[Step, ...]:
    """Every step out of a state, in table order."""
    return tuple(s for s in _STEPS if s.source.value == source)


@dataclass(frozen=True)
class CaseChange:
    """One state change of a case (what notifications read): ``from_state`` is None at opening."""

    id: int
    case_id: int
    from_state: str | None
    to_state: str
    actor: str
    at_ns: int


@dataclass(frozen=True)
class HistoryEntry:
    """One change of a case: who, when, what, and the value before and after."""

    case_id: int
    at_ns: int
    actor: str
    action: str
    from_state: str | None = None
    to_state: str | None = None
    before: Mapping[str, Any] = field(default_factory=dict)
    after: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class Confirmations:
    """Who confirmed for each side, as the history records it (every round, oldest first)."""

    security: tuple[str, ...]
    hr: tuple[str, ...]


def confirmations_of(history: Sequence[HistoryEntry]) -> Confirmations:
    """Reads from the history who confirmed for security and for HR."""
    sec: list[str] = []
    hr: list[str] = []
    for h in history:
        if h.action != "transition" or h.from_state is None or h.to_state is None:
            continue
        step = step_for(h.from_state, h.to_state)
        if step is not None and step.confirms is Side.SECURITY:
            sec.append(h.actor)
        elif step is not None and step.confirms is Side.HR:
            hr.append(h.actor)
    return Confirmations(tuple(sec), tuple(hr))


def four_eyes_violation(step: Step, actor: str, history: Sequence[HistoryEntry]) -> str | None:
    """Why ``actor`` may not take ``step`` on a case with this history, or None if they may."""
    done = confirmations_of(history)
    who = actor.casefold()
    if step.hr_side and who in {p.casefold() for p in done.security}:
        return (f"{actor} confirmed this case for security; every HR step, the HR confirmation included, "
                "must be taken by someone else (four-eyes)")
    if step.confirms is Side.SECURITY and who in {p.casefold() for p in done.hr}:
        return f"{actor} confirmed this case for HR; the security confirmation must be someone else's (four-eyes)"
    return None


@dataclass(frozen=True)
class Case:
    """A case about one employee, built from alerts."""

    title: str
    state: str
    subject_user: str
    created_by: str
    created_at_ns: int
    updated_at_ns: int
    alert_ids: tuple[int, ...]
    incident_first_ns: int
    assignee: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class Comment:
    """A note on a case."""

    case_id: int
    author: str
    at_ns: int
    body: str
    id: int | None = None


@dataclass(frozen=True)
class Attachment:
    """A file on a case, kept by its SHA-256; ``display_name`` is only ever shown, never a path."""

    case_id: int
    display_name: str
    sha256: str
    size: int
    content_type: str
    uploaded_by: str
    uploaded_at_ns: int
    id: int | None = None

    @property
    def stored_name(self) -> str:
        """The name the content is kept under: derived from its hash, never from the upload."""
        return f"{self.sha256}.bin"


class HrKind(str, enum.Enum):
    """HR's records on a case; the newest of each kind is the one in force."""

    LOSS = "loss"
    AGREEMENT = "agreement"
    EMPLOYEE = "employee"
    NOTICE = "notice"
    APPEAL = "appeal"
    DECISION = "decision"


@dataclass(frozen=True)
class HrRecord:
    """One of HR's records, as entered (validated by collector/cases/hr.py)."""

    case_id: int
    kind: str
    data: Mapping[str, Any]
    recorded_by: str
    recorded_at_ns: int
    id: int | None = None


class HandoffState(str, enum.Enum):
    """Where one hand-off to payroll stands."""

    PENDING = "pending"      # in the outbox: the worker delivers it, retrying with back-off
    ACCEPTED = "accepted"    # the bridge filed it (or recognised the identical resend)
    REFUSED = "refused"      # the bridge refused it with reasons: HR corrects and sends a new hand-off


# the outbox's lifecycle: a pending row is retried until answered; answers are final
HANDOFF_TRANSITIONS: dict[HandoffState, frozenset[HandoffState]] = {
    HandoffState.PENDING: frozenset({HandoffState.PENDING, HandoffState.ACCEPTED, HandoffState.REFUSED}),
    HandoffState.ACCEPTED: frozenset({HandoffState.ACCEPTED}),  # the schedule is refreshed, nothing resent
    HandoffState.REFUSED: frozenset(),
}


@dataclass(frozen=True)
class Handoff:
    """One delivery of a case to the payroll bridge: its frozen payload and what the bridge answered.

    ``key`` (case id and hand-off number) names it; the payload is frozen when the row is written, so
    a resend is byte-for-byte the same document, which the bridge files once and answers as a duplicate.
    """

    case_id: int
    number: int
    payload: str
    sent_by: str
    created_at_ns: int
    state: str = HandoffState.PENDING.value
    attempts: int = 0
    next_attempt_ns: int = 0
    lease_until_ns: int = 0
    last_error: str | None = None
    answered_at_ns: int | None = None
    answer: Mapping[str, Any] = field(default_factory=dict)
    schedule: Mapping[str, Any] = field(default_factory=dict)
    schedule_at_ns: int | None = None
    id: int | None = None

    @property
    def key(self) -> str:
        """The idempotency key: case id and hand-off number."""
        return f"{self.case_id}/{self.number}"
