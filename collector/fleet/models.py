"""The fleet's values: enrolled agents and the liveness lifecycle, as one table.

Theory of operation: an agent is ``enrolled`` until its first batch; it is ``active`` while it is
heard from; a signed ``agent.stop`` makes it ``stopped`` (a graceful stop is not a disappearance);
an active agent unheard for ``MISSED_INTERVALS`` heartbeat intervals becomes ``silent``, which
raises one ``agent_silent`` alert. ``collector/fleet/service.py`` moves an agent only along
``TRANSITIONS``; revocation is a separate, final mark (``revoked_at_ns``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["AgentRecord", "Liveness", "TRANSITIONS", "MISSED_INTERVALS", "DEFAULT_INTERVAL_S"]

MISSED_INTERVALS = 3
DEFAULT_INTERVAL_S = 30.0


class Liveness(str, enum.Enum):
    """What the collector knows of an agent's presence."""

    ENROLLED = "enrolled"
    ACTIVE = "active"
    STOPPED = "stopped"
    SILENT = "silent"


# liveness -> liveness it may move to
TRANSITIONS: dict[Liveness, frozenset[Liveness]] = {
    Liveness.ENROLLED: frozenset({Liveness.ACTIVE, Liveness.STOPPED}),
    Liveness.ACTIVE: frozenset({Liveness.ACTIVE, Liveness.STOPPED, Liveness.SILENT}),
    Liveness.STOPPED: frozenset({Liveness.ACTIVE, Liveness.STOPPED}),
    Liveness.SILENT: frozenset({Liveness.ACTIVE, Liveness.STOPPED}),
}


@dataclass(frozen=True)
class AgentRecord:
    """An enrolled agent and the key its batches must be signed with."""

    agent_id: str
    public_key: bytes
    hostname: str
    os: str
    agent_version: str
    enrolled_at_ns: int
    revoked_at_ns: int | None = None
    last_seen_ns: int | None = None
    heartbeat_interval_s: float | None = None
    liveness: str = Liveness.ENROLLED.value
