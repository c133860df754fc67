"""The fleet side of the collector: agents' liveness, silence alerts and revocation.

``check_silence`` runs on a timer in ``serve``; what it decides comes from collector/domain/liveness.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from collector.domain.liveness import MISSED_INTERVALS, DEFAULT_INTERVAL_S, is_silent
from collector.domain.records import Alert, AuditEntry
from collector.storage.base import Store
from collector.web.timefmt import format_ns

__all__ = ["FleetService"]

log = logging.getLogger("shoumi.collector.fleet")


class FleetService:
    """Watches for silent agents and revokes agents on request."""

    def __init__(self, store: Store, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.store = store
        self.clock = clock

    def check_silence(self) -> list[Alert]:
        """Raises an agent_silent alert for each active agent that missed its heartbeats."""
        now = self.clock()
        raised = []
        for agent in self.store.list_agents():
            if not is_silent(agent, now_ns=now):
                continue
            interval = agent.heartbeat_interval_s or DEFAULT_INTERVAL_S
            self.store.update_agent_liveness(agent_id=agent.agent_id, liveness="silent")
            alert = self.store.add_alert(Alert(
                rule="agent_silent", severity="medium", status="open", user="", agent_id=agent.agent_id,
                created_at_ns=now, updated_at_ns=now, event_ids=(), last_event_ns=agent.last_seen_ns or 0,
                summary=(f"agent {agent.agent_id} on {agent.hostname} silent since "
                         f"{format_ns(agent.last_seen_ns or 0)}: {MISSED_INTERVALS} heartbeats of {interval:g} s "
                         "missed without a signed agent.stop"),
            ))
            log.warning("%s", alert.summary)
            raised.append(alert)
        return raised

    def revoke(self, *, agent_id: str, actor: str) -> bool:
        """Revokes an agent: its streams are refused from the next batch on."""
        done = self.store.revoke_agent(agent_id=agent_id, now_ns=self.clock())
        self.store.append_audit(AuditEntry(self.clock(), actor, "agent.revoke", agent_id, {"revoked": done}))
        return done
