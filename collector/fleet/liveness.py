"""Liveness decisions: what a stored batch says about its agent, and when silence is declared. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from collector.events.models import StoredEvent
from collector.fleet.models import DEFAULT_INTERVAL_S, MISSED_INTERVALS, TRANSITIONS, AgentRecord, Liveness

__all__ = ["Heard", "heard_from", "is_silent", "next_liveness"]


@dataclass(frozen=True)
class Heard:
    """What the latest batch tells about its agent."""

    liveness: Liveness
    last_seen_ns: int
    heartbeat_interval_s: float | None


def heard_from(events: Sequence[StoredEvent], *, received_ns: int) -> Heard:
    """Reads liveness off a stored batch: stopped if it ends with agent.stop, else active."""
    interval = None
    for e in events:
        value = e.attributes.get("interval_s") if e.kind in ("agent.start", "agent.heartbeat", "agent.stop") else None
        if isinstance(value, (int, float)) and value > 0:
            interval = float(value)
    liveness = Liveness.STOPPED if events and events[-1].kind == "agent.stop" else Liveness.ACTIVE
    return Heard(liveness, received_ns, interval)


def next_liveness(current: str, wanted: Liveness) -> Liveness | None:
    """Returns the liveness to record, or None when the table forbids the move."""
    return wanted if wanted in TRANSITIONS[Liveness(current)] else None


def is_silent(agent: AgentRecord, *, now_ns: int) -> bool:
    """Tells whether an active agent has missed MISSED_INTERVALS heartbeats."""
    if agent.liveness != Liveness.ACTIVE or agent.last_seen_ns is None or agent.revoked_at_ns is not None:
        return False
    interval = agent.heartbeat_interval_s or DEFAULT_INTERVAL_S
    return now_ns - agent.last_seen_ns > MISSED_INTERVALS * interval * 1e9
