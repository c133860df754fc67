"""Alerts: findings for security to review, their status values and the one lifecycle table.

Theory of operation: an alert is raised ``open`` (collector/alerts/service.py ``raise_alert`` is
the only place that builds one). An analyst acknowledges it while looking into it and closes it
when done; a closed alert can be reopened. Any other move is refused, so a status in the store
was always reached through ``TRANSITIONS``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Alert", "AlertStatus", "Severity", "TRANSITIONS", "can_move"]


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
