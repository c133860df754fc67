"""Alerts: findings for security to review, their status values and the one lifecycle table.

Theory of operation: an alert is raised ``open`` (collector/alerts/service.py ``raise_alert`` is
the only place that builds one). An analyst acknowledges it while looking into it and closes it
when done; a closed alert can be reopened. Any other move is refused, so a status in the store
was always reached through ``TRANSITIONS``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Alert", "AlertStatus", "Severity", "Outcome", "Suppression", "TRANSITIONS", "can_move"]


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


# status -> statuses it may move to
TRANSITIONS: dict[AlertStatus, frozenset[AlertStatus]] = {
    AlertStatus.OPEN: frozenset({AlertStatus.ACKNOWLEDGED, AlertStatus.CLOSED}),
    AlertStatus.ACKNOWLEDGED: frozenset({AlertStatus.OPEN, AlertStatus.CLOSED}),
    AlertStatus.CLOSED: frozenset({AlertStatus.OPEN}),
}


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


class Outcome(str, enum.Enum):
    """What an analyst concluded when closing an alert (feeds rule tuning)."""

    TRUE_POSITIVE = "true_positive"  # a real leak or policy breach
    BENIGN = "benign"  # the rule was right, the activity allowed (a sanctioned export)
    FALSE_POSITIVE = "false_positive"  # the rule was wrong


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
