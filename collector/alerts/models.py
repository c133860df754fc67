"""Alerts: findings for security to review, their status values and the one lifecycle table.

Theory of operation: an alert is raised ``open`` (collector/alerts/service.py ``raise_alert`` is
the only place that builds one). An analyst acknowledges it while looking into it and closes it
when done, always with a closure reason (``Outcome``); a closed alert can be reopened, which
clears the reason. Any other move is refused, so a status in the store was always reached through
``TRANSITIONS``. Assignment is not a status: any alert may be assigned to an analyst, or unassigned.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Alert", "AlertStatus", "Severity", "SEVERITY_RANK", "Outcome", "Suppression", "TRANSITIONS",
           "NEEDS_OUTCOME", "can_move", "Sort", "AlertQuery", "SavedFilter", "UserGroup"]


class AlertStatus(str, enum.Enum):
    """Where an alert stands in its review."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class Severity(str, enum.Enum):
    """How urgent an alert is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


# for sorting by severity in the store (a column, so it has an index)
SEVERITY_RANK: dict[str, int] = {"low": 1, "medium": 2, "high": 3, "critical": 4}


# status -> statuses it may move to
TRANSITIONS: dict[AlertStatus, frozenset[AlertStatus]] = {
    AlertStatus.OPEN: frozenset({AlertStatus.ACKNOWLEDGED, AlertStatus.CLOSED}),
    AlertStatus.ACKNOWLEDGED: frozenset({AlertStatus.OPEN, AlertStatus.CLOSED}),
    AlertStatus.CLOSED: frozenset({AlertStatus.OPEN}),
}


# a move into these statuses needs a closure reason (an Outcome); a move anywhere else clears it
NEEDS_OUTCOME: frozenset[AlertStatus] = frozenset({AlertStatus.CLOSED})


def can_move(current: str, target: str) -> bool:
    """Tells whether an alert may move from one status to another."""
    return AlertStatus(target) in TRANSITIONS[AlertStatus(current)]


@dataclass(frozen=True)
class Alert:
    """A finding for security to review."""

    rule: str
    severity: str
    status: str
    user: str
    agent_id: str
    created_at_ns: int
    updated_at_ns: int
    event_ids: tuple[str, ...]
    summary: str
    last_event_ns: int = 0
    id: int | None = None
    # How many times the same fault was seen again and folded into this alert (refusals, skew).
    occurrences: int = 1
    # Alerts of one group (rule, agent, reason) fold into one open alert instead of flooding.
    group_key: str | None = None
    # How many evidence events the alert holds: evidence is appended (alert_evidence), never rewritten.
    evidence_count: int = 0
    # Set when it is closed: what the analyst concluded.
    outcome: str | None = None
    # The analyst looking into it (a user name of the collector's accounts), if any.
    assignee: str | None = None


class Outcome(str, enum.Enum):
    """The closure reason: what an analyst concluded when closing an alert (feeds rule tuning)."""

    TRUE_POSITIVE = "true_positive"  # a real leak or policy breach
    FALSE_POSITIVE = "false_positive"  # the rule was wrong
    BENIGN = "benign"  # the rule was right, the activity allowed (a sanctioned export)
    DUPLICATE = "duplicate"  # another alert (or case) already covers it


class Sort(str, enum.Enum):
    """How the queue is ordered; each has an index and a cursor key."""

    NEWEST = "newest"
    OLDEST = "oldest"
    SEVERITY = "severity"  # most severe first, newest first within a severity
    EVIDENCE = "evidence"  # most evidence events first


@dataclass(frozen=True)
class AlertQuery:
    """What the queue is filtered by; empty means any. ``user`` is a real name (views resolve pseudonyms)."""

    rules: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    user: str | None = None
    agent_id: str | None = None
    since_ns: int | None = None  # raised at or after
    until_ns: int | None = None  # raised before
    assignee: str | None = None  # "" means unassigned
    sort: str = Sort.NEWEST.value


@dataclass(frozen=True)
class SavedFilter:
    """A queue filter an analyst named and kept: the query string of /alerts."""

    owner: str
    name: str
    query: str
    created_at_ns: int
    id: int | None = None


@dataclass(frozen=True)
class UserGroup:
    """One person's alerts under a filter: how many, in which status, how severe, how recent."""

    user: str
    total: int
    open: int
    acknowledged: int
    closed: int
    severe: int  # high or critical
    last_created_ns: int


@dataclass(frozen=True)
class Suppression:
    """A time-boxed decision not to alert: an owner, a scope (rule, user, path), a reason and an expiry.

    Findings it covers are counted on it (``hits``), never dropped silently.
    """

    rule: str
    owner: str
    reason: str
    created_at_ns: int
    expires_at_ns: int
    user: str | None = None
    path_glob: str | None = None
    hits: int = 0
    last_hit_ns: int | None = None
    lifted_at_ns: int | None = None
    id: int | None = None

    def covers(self, *, rule: str, user: str, path: str, now_ns: int) -> bool:
        """Tells whether a finding falls under this suppression now."""
        import fnmatch

        return (self.lifted_at_ns is None and now_ns < self.expires_at_ns and self.rule == rule
                and (self.user is None or self.user == user)
                and (self.path_glob is None or fnmatch.fnmatch(path, self.path_glob)))
