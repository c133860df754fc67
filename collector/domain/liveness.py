"""Agent liveness as data: what a batch says about its agent, and when silence becomes an alert.

An agent is ``active`` while it is heard from; a signed ``agent.stop`` makes it ``stopped`` (a
graceful stop is not a disappearance); an active agent unheard for ``MISSED_INTERVALS`` heartbeat
intervals becomes ``silent``, which raises one ``agent_silent`` alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from collector.domain.records import AgentRecord, StoredEvent

__all__ = ["MISSED_INTERVALS", "DEFAULT_INTERVAL_S", "Heard", "heard_from", "is_silent"]

MISSED_INTERVALS = 3
DEFAULT_INTERVAL_S = 30.0

# liveness -> liveness it may move to
TRANSITIONS: dict[str, frozenset[str]] = {
    "enrolled": frozenset({"active", "stopped"}),
    "active": frozenset({"active", "stopped", "silent"}),
    "stopped": frozenset({"active", "stopped"}),
    "silent": frozenset({"active", "stopped"}),
}


@dataclass(frozen=True)
class Heard:
    """What the latest batch tells about its agent."""

    liveness: str
    last_seen_ns: int
    heartbeat_interval_s: float | None


def heard_from(events: Sequence[StoredEvent], *, received_ns: int) -> Heard:
    """Reads liveness off a stored batch: stopped if it ends with agent.stop, else active."""
    interval = None
    for e in events:
        value = e.attributes.get("interval_s") if e.kind in ("agent.start", "agent.heartbeat", "agent.stop") else None
        if isinstance(value, (int, float)) and value > 0:
            interval = float(value)
    liveness = "stopped" if events and events[-1].kind == "agent.stop" else "active"
    return Heard(liveness, received_ns, interval)


def is_silent(agent: AgentRecord, *, now_ns: int) -> bool:
    """Tells whether an active agent has missed MISSED_INTERVALS heartbeats."""
    if agent.liveness != "active" or agent.last_seen_ns is None or agent.revoked_at_ns is not None:
        return False
    interval = agent.heartbeat_interval_s or DEFAULT_INTERVAL_S
    return now_ns - agent.last_seen_ns > MISSED_INTERVALS * interval * 1e9
