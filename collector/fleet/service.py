"""The fleet: agents' liveness (moved only along ``fleet.models.TRANSITIONS``), silence and certificate
alerts, labels, revocation, and which agent versions are older than the collector's."""

from __future__ import annotations

import logging
import re
from importlib import metadata
from typing import Protocol, Sequence

from collector.alerts.models import Alert
from collector.alerts.service import raise_alert
from collector.audit.models import AuditEntry
from collector.fleet.health import record_health
from collector.fleet.liveness import Heard, is_silent, next_liveness
from collector.fleet.models import DEFAULT_INTERVAL_S, MISSED_INTERVALS, AgentRecord, Liveness, check_labels
from collector.storage.base import AgentArea, AlertArea, AuditArea, CertificateArea
from collector.web.timefmt import format_ns


def _collector_version() -> str:
    try:
        return metadata.version("shoumi")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0.0.0"


def _version_key(text: str) -> tuple[int, ...] | None:
    found = re.fullmatch(r"v?(\d+(?:\.\d+){0,3})(?:[-+.].*)?", text.strip())
    return tuple(int(p) for p in found.group(1).split(".")) if found else None


def is_older(agent_version: str, than: str | None = None) -> bool:
    """Tells whether an agent's version is older than the collector's (an unreadable version is not flagged)."""
    mine, theirs = _version_key(than or COLLECTOR_VERSION), _version_key(agent_version)
    if mine is None or theirs is None:
        return False
    width = max(len(mine), len(theirs))
    return theirs + (0,) * (width - len(theirs)) < mine + (0,) * (width - len(mine))

__all__ = ["record_heard", "record_health", "check_silence", "check_certificates", "revoke", "set_labels",
           "COLLECTOR_VERSION", "is_older", "HEALTH_RULES", "CERT_WARN_NS"]

COLLECTOR_VERSION = _collector_version()
CERT_WARN_NS = 24 * 3600 * 10**9  # agents renew at two thirds of the lifetime (7 days): a day left means it failed
# the alerts about an agent's health, shown on the fleet page (policy_refused is raised by collector/policy)
HEALTH_RULES = ("agent_silent", "capture_gap", "spool_loss", "certificate_expiring", "policy_refused",
                "agent_clock_skew", "agent_epoch_reset")

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
    return raised + check_certificates(tx=tx, now_ns=now_ns)


def check_certificates(*, tx: _FleetTx, now_ns: int, warn_ns: int = CERT_WARN_NS) -> list[Alert]:
    """Raises one ``certificate_expiring`` alert per agent whose client certificate ends within ``warn_ns``
    (its renewal has failed); an agent that already has one open is left alone (no write)."""
    raised = []
    for agent_id, not_after in tx.certificates_expiring(before_ns=now_ns + warn_ns, now_ns=now_ns, limit=1000):
        group = f"certificate_expiring|{agent_id}"
        if tx.open_alert_in_group(group) is not None:
            continue
        agent = tx.get_agent(agent_id)
        alert = raise_alert(
            tx=tx, rule="certificate_expiring", severity="high", agent_id=agent_id, now_ns=now_ns, group_key=group,
            summary=(f"agent {agent_id} on {agent.hostname if agent else '?'}: its client certificate ends "
                     f"{format_ns(not_after)} and was not renewed; after that the agent cannot deliver"))
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
