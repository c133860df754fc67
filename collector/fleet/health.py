"""An agent's health row, read off a stored batch when it holds a heartbeat (the ingest path: cheap).

The figures are the heartbeat's own (agent/runtime.py ``heartbeat()``): spool depth and bytes, events the
spool refused and not yet reported, capture gaps, the agent's version. Refusals reported in
``agent.spool_full`` events add up in ``refused_total``. The people seen on the agent are noted in memory
from every batch (``UsersSeen``) and written with the next heartbeat (at most MAX_USERS_SHOWN, newest
first). The clock skew is the batch's creation time on the agent minus the collector's receipt time.
Nothing is written for a batch without a heartbeat or a spool_full report: no query, no write.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Sequence

from collector.events.models import StoredEvent
from collector.fleet.models import MAX_USERS_SHOWN, AgentHealth, AgentRecord
from collector.storage.base import AgentArea

__all__ = ["record_health", "health_from", "UsersSeen", "USERS_SEEN"]

MAX_USER = 256


def _int(value: Any) -> int:
    # bounded to what a BIGINT holds: a larger figure (a hostile agent's) would fail every batch of its group
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 2**62 else 0


def health_from(previous: AgentHealth | None, events: Sequence[StoredEvent], *, agent_id: str, received_ns: int,
                skew_ns: int, earlier_users: Sequence[str] = ()) -> AgentHealth | None:
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
    row = replace(row, updated_at_ns=received_ns, refused_total=min(row.refused_total + refused, 2**62))
    if beat is None:
        return row
    a = beat.attributes
    seen = list(dict.fromkeys(e.user[:MAX_USER] for e in reversed(events) if e.user))  # newest first
    users = tuple(dict.fromkeys(seen + list(earlier_users) + list(row.users)))[:MAX_USERS_SHOWN]
    version = a.get("version")
    version = version.replace("\x00", "") if isinstance(version, str) else None  # PostgreSQL's text holds no NUL
    return replace(row, heartbeat_ns=beat.time_ns,
                   reported_version=version[:64] if version else row.reported_version,
                   spool_unacked_events=_int(a.get("spool_unacked_events")) + _int(a.get("spool_unsealed")),
                   spool_bytes=_int(a.get("spool_bytes")), spool_refused_pending=_int(a.get("spool_refused_pending")),
                   capture_gaps=_int(a.get("capture_gaps")), clock_skew_ms=int(skew_ns // 1_000_000), users=users)


class UsersSeen:
    """The people of each agent's batches since its last heartbeat, held in this process (bounded) until the
    next heartbeat writes them into the health row: a set update per batch, no query. A batch whose
    transaction rolls back may leave its people here: the list is a sample of who used the machine."""

    def __init__(self, *, max_agents: int = 20_000) -> None:
        self.max_agents = max_agents
        self._seen: dict[str, dict[str, None]] = {}
        self._lock = threading.Lock()

    def note(self, agent_id: str, users: Sequence[str]) -> None:
        """Remembers these people for the agent, newest last (at most MAX_USERS_SHOWN)."""
        with self._lock:
            held = self._seen.get(agent_id)
            if held is None:
                if len(self._seen) >= self.max_agents:
                    self._seen.clear()  # a bound, not a cache policy: what is lost is a sample
                held = self._seen[agent_id] = {}
            for user in users:
                held.pop(user, None)
                held[user] = None
            while len(held) > MAX_USERS_SHOWN:
                del held[next(iter(held))]

    def take(self, agent_id: str) -> list[str]:
        """The agent's people noted since the last take, newest first, and forgets them."""
        with self._lock:
            held = self._seen.pop(agent_id, {})
        return list(reversed(held))


USERS_SEEN = UsersSeen()


def record_health(*, tx: AgentArea, agent: AgentRecord, events: Sequence[StoredEvent], received_ns: int,
                  skew_ns: int, seen: UsersSeen = USERS_SEEN) -> None:
    """Updates the agent's health row if the batch holds a heartbeat or a spool_full report (one read, one write);
    for any other batch it only notes the people in it, in memory."""
    users: dict[str, None] = {}
    health = False
    for e in events:
        if e.user:
            users[e.user[:MAX_USER]] = None  # a name (Linux: 32 characters), not the megabyte a hostile agent sends
        if e.kind == "agent.heartbeat" or e.kind == "agent.spool_full":
            health = True
    if users:
        seen.note(agent.agent_id, list(users))
    if not health:
        return
    earlier = seen.take(agent.agent_id)
    row = health_from(tx.get_agent_health(agent.agent_id), events, agent_id=agent.agent_id, received_ns=received_ns,
                      skew_ns=skew_ns, earlier_users=earlier)
    if row is not None:
        tx.put_agent_health(row)
