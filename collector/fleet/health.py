"""An agent's health row, read off a stored batch when it holds a heartbeat (the ingest path: cheap).

The figures are the heartbeat's own (agent/runtime.py ``heartbeat()``): spool depth and bytes, events the
spool refused and not yet reported, capture gaps, the agent's version. Refusals reported in
``agent.spool_full`` events add up in ``refused_total``. Users seen on the agent are those of the batches
that carry a heartbeat (once a heartbeat interval: a sample, which is what the fleet page needs). The
clock skew is the batch's creation time on the agent minus the collector's receipt time. Nothing is
written for a batch without a heartbeat or a spool_full report: no query, no write.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from collector.events.models import StoredEvent
from collector.fleet.models import MAX_USERS_SHOWN, AgentHealth, AgentRecord
from collector.storage.base import AgentArea

__all__ = ["record_health", "health_from"]


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else 0


def health_from(previous: AgentHealth | None, events: Sequence[StoredEvent], *, agent_id: str, received_ns: int,
                skew_ns: int) -> AgentHealth | None:
    """The new health row, or None when the batch says nothing about health. Pure."""
    beat: StoredEvent | None = None
    refused = 0
    for e in events:
        if e.kind == "agent.heartbeat":
            beat = e
        elif e.kind == "agent.spool_full":
            refused += _int(e.attributes.get("refused"))
    if beat is None and not refused:
        return None
    row = previous or AgentHealth(agent_id, received_ns)
    row = replace(row, updated_at_ns=received_ns, refused_total=row.refused_total + refused)
    if beat is None:
        return row
    a = beat.attributes
    seen = list(dict.fromkeys(e.user for e in reversed(events) if e.user))  # newest first
    users = tuple(dict.fromkeys(seen + list(row.users)))[:MAX_USERS_SHOWN]
    version = a.get("version")
    return replace(row, heartbeat_ns=beat.time_ns,
                   reported_version=version[:64] if isinstance(version, str) else row.reported_version,
                   spool_unacked_events=_int(a.get("spool_unacked_events")) + _int(a.get("spool_unsealed")),
                   spool_bytes=_int(a.get("spool_bytes")), spool_refused_pending=_int(a.get("spool_refused_pending")),
                   capture_gaps=_int(a.get("capture_gaps")), clock_skew_ms=int(skew_ns // 1_000_000), users=users)


def record_health(*, tx: AgentArea, agent: AgentRecord, events: Sequence[StoredEvent], received_ns: int,
                  skew_ns: int) -> None:
    """Updates the agent's health row if the batch holds a heartbeat or a spool_full report (one read, one write)."""
    if not any(e.kind in ("agent.heartbeat", "agent.spool_full") for e in events):
        return
    row = health_from(tx.get_agent_health(agent.agent_id), events, agent_id=agent.agent_id, received_ns=received_ns,
                      skew_ns=skew_ns)
    if row is not None:
        tx.put_agent_health(row)
