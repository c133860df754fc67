"""Notifications: the outbox row, its delivery lifecycle table, and what a delivery attempt returned.

Theory of operation: the worker (collector/notify/worker.py) turns new high-severity alerts and case
changes into outbox rows, one per target (a WeCom robot, the email list), in the same transaction
that moves its read positions, so a crash neither loses nor duplicates a row. A row is ``pending``
until a delivery claims it (``sending``, with a lease until ``next_attempt_ns``); then it is ``sent``,
back to ``pending`` with a later attempt time (rate limit, 5xx, timeout, SMTP 4xx), or ``failed`` (a
refusal that retrying cannot fix, or too many attempts). A ``sending`` row whose lease ran out (the
collector died between the send and the recorded result) is due again: that message may then arrive
twice (a WeCom robot takes no idempotency key), but it is never lost.

A row holds only what a message may say: a number, the rule, the severity, the state change. Never a
user name, pseudonym, file path or host name; there is no column to put one in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["NotifyStatus", "TRANSITIONS", "can_move", "Notification", "AlertFact", "CaseChangeFact",
           "Attempt", "SEVERITY_RANK"]


class NotifyStatus(str, enum.Enum):
    """Where an outbox row stands in its delivery."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


# status -> statuses it may move to
TRANSITIONS: dict[NotifyStatus, frozenset[NotifyStatus]] = {
    NotifyStatus.PENDING: frozenset({NotifyStatus.SENDING}),
    # SENDING -> SENDING: a lease that ran out is claimed again
    NotifyStatus.SENDING: frozenset({NotifyStatus.SENT, NotifyStatus.PENDING, NotifyStatus.FAILED,
                                     NotifyStatus.SENDING}),
    NotifyStatus.SENT: frozenset(),
    NotifyStatus.FAILED: frozenset(),
}


def can_move(current: str, target: str) -> bool:
    """Tells whether an outbox row may move from one status to another."""
    return NotifyStatus(target) in TRANSITIONS[NotifyStatus(current)]


SEVERITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}


@dataclass(frozen=True)
class AlertFact:
    """What notifying needs of an alert: its number, rule and severity (nothing about a person)."""

    id: int
    rule: str
    severity: str


@dataclass(frozen=True)
class CaseChangeFact:
    """What notifying needs of a case change: which change, which case, from and to which state."""

    id: int
    case_id: int
    from_state: str
    to_state: str


@dataclass(frozen=True)
class Notification:
    """One message owed to one target: an alert (kind ``alert``) or a case change (kind ``case``)."""

    channel: str  # "wecom" | "email"
    target: str  # a stable key of the robot or mail list, never the webhook key itself
    kind: str  # "alert" | "case"
    source_id: int  # the alert's id, or the case change's id
    number: int  # the alert's or the case's number, as shown in links
    created_at_ns: int
    next_attempt_ns: int
    rule: str = ""
    severity: str = ""
    from_state: str = ""
    to_state: str = ""
    status: str = NotifyStatus.PENDING.value
    attempts: int = 0
    sent_at_ns: int | None = None
    delivery_id: int | None = None  # the rows of one message (a digest holds many) share it
    last_error: str | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("alert", "case"):
            raise ValueError(f"unknown notification kind {self.kind!r}")
        NotifyStatus(self.status)


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt returned: sent, worth retrying (after ``retry_after_s`` if the far
    end said so), or refused for good; ``error`` is short and names no secret."""

    ok: bool
    retry: bool = False
    error: str | None = None
    retry_after_s: float | None = None
