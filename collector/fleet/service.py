"""The fleet: agents' liveness (moved only along ``fleet.models.TRANSITIONS``), silence alerts, revocation."""

from __future__ import annotations

import logging
from typing import Protocol, Sequence

from collector.alerts.models import Alert
from collector.alerts.service import raise_alert
from collector.audit.models import AuditEntry
from collector.fleet.liveness import Heard, is_silent, next_liveness
from collector.fleet.models import DEFAULT_INTERVAL_S, MISSED_INTERVALS, AgentRecord, Liveness, check_labels
from collector.storage.base import AgentArea, AlertArea, AuditArea, CertificateArea
from collector.web.timefmt import format_ns

__all__ = ["record_heard", "check_silence", "revoke", "set_labels"]

log = logging.getLogger("shoumi.collector.fleet")


class _FleetTx(AgentArea, AlertArea, AuditArea, CertificateArea, Protocol):
    """What the fleet's changes need."""


def record_heard(*, tx: AgentArea, agent: AgentRecord, heard: Heard) -> None:
    """Records what a stored batch says about its agent."""
    liveness = next_liveness(agent.liveness, heard.liveness)
    tx.update_agent_liveness(agent_id=agent.agent_id, liveness=(liveness or Liveness(agent.liveness)).value,
                             last_seen_ns=heard.last_seen_ns, heartbeat_interval_s=heard.heartbeat_interval_s)


def check_silence(*, tx: _FleetTx, now_ns: int) -> list[Alert]:
    """Marks silent each active agent that missed its heartbeats, and raises one alert for it."""
    raised = []
    for agent in tx.list_agents():
        if not is_silent(agent, now_ns=now_ns) or next_liveness(agent.liveness, Liveness.SILENT) is None:
            continue
        interval = agent.heartbeat_interval_s or DEFAULT_INTERVAL_S
        if not tx.update_agent_liveness(agent_id=agent.agent_id, liveness=Liveness.SILENT.value,
                                        only_from=agent.liveness):
            continue  # it moved meanwhile (another collector declared it silent, or it was heard from)
        alert = raise_alert(
            tx=tx, rule="agent_silent", severity="medium", agent_id=agent.agent_id, now_ns=now_ns,
            last_event_ns=agent.last_seen_ns or 0,
            summary=(f"agent {agent.agent_id} on {agent.hostname} silent since {format_ns(agent.last_seen_ns or 0)}: "
                     f"{MISSED_INTERVALS} heartbeats of {interval:g} s missed without a signed agent.stop"),
        )
        log.warning("%s", alert.summary)
        raised.append(alert)
    return raised


def revoke(*, tx: _FleetTx, agent_id: str, actor: str, now_ns: int) -> bool:
    """Revokes an agent: its streams are refused from the next batch on; audited in the same transaction."""
    done = tx.revoke_agent(agent_id=agent_id, now_ns=now_ns)
    tx.append_audit(AuditEntry(now_ns, actor, "agent.revoke", agent_id, {"revoked": done}))
    return done


def set_labels(*, tx: _FleetTx, agent_id: str, labels: Sequence[str], actor: str, now_ns: int) -> tuple[str, ...] | None:
    """Replaces an agent's labels (raises fleet.models.LabelError on a bad one); returns them, or None if no such
    agent. Audited in the same transaction, with the labels before and after."""
    checked = check_labels(labels)
    agent = tx.get_agent(agent_id)
    if agent is None or not tx.set_agent_labels(agent_id=agent_id, labels=checked):
        return None
    tx.append_audit(AuditEntry(now_ns, actor, "agent.labels", agent_id,
                               {"before": list(agent.labels), "after": list(checked)}))
    return checked
