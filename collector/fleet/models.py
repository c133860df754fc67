"""The fleet's values: enrolled agents and the liveness lifecycle, as one table.

Theory of operation: an agent is ``enrolled`` until its first batch; it is ``active`` while it is
heard from; a signed ``agent.stop`` makes it ``stopped`` (a graceful stop is not a disappearance);
an active agent unheard for ``MISSED_INTERVALS`` heartbeat intervals becomes ``silent``, which
raises one ``agent_silent`` alert. ``collector/fleet/service.py`` moves an agent only along
``TRANSITIONS``; revocation is a separate, final mark (``revoked_at_ns``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Iterable

__all__ = ["AgentRecord", "Liveness", "TRANSITIONS", "MISSED_INTERVALS", "DEFAULT_INTERVAL_S", "LabelError",
           "check_labels", "MAX_LABELS", "MAX_LABEL_LEN", "AgentHealth", "AgentQuery", "FleetRow", "STATUSES",
           "SORTS", "status_of", "MAX_USERS_SHOWN"]

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
    labels: tuple[str, ...] = ()  # sorted, each valid by check_labels


# --- labels: the groups an agent belongs to (department, host group), set at enrollment, edited by IT --------------

MAX_LABELS = 16
MAX_LABEL_LEN = 48
_LABEL = re.compile(r"[a-z0-9][a-z0-9._:-]*")


class LabelError(ValueError):
    """A label list that breaks the syntax (lower-case ``[a-z0-9._:-]``, short, a bounded count)."""


def check_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """Returns the labels sorted and without repeats, or raises LabelError saying which one is wrong."""
    found = set()
    for raw in labels:
        if not isinstance(raw, str):
            raise LabelError("a label is text")
        label = raw.strip()
        if not label or len(label) > MAX_LABEL_LEN or not _LABEL.fullmatch(label):
            raise LabelError(f"label {raw[:60]!r}: 1-{MAX_LABEL_LEN} characters of a-z 0-9 . _ : - "
                             "(lower case, starting with a letter or digit)")
        found.add(label)
        if len(found) > MAX_LABELS:
            raise LabelError(f"at most {MAX_LABELS} labels")
    return tuple(sorted(found))


# --- health: what the agent's heartbeats say, one row per agent kept up to date on ingest -------------------------

MAX_USERS_SHOWN = 8


@dataclass(frozen=True)
class AgentHealth:
    """The latest heartbeat's figures of one agent (collector/fleet/health.py reads them off a batch)."""

    agent_id: str
    updated_at_ns: int
    heartbeat_ns: int | None = None          # the agent's time of its latest heartbeat
    reported_version: str = ""
    spool_unacked_events: int = 0
    spool_bytes: int = 0
    spool_refused_pending: int = 0
    refused_total: int = 0                   # events the spool refused, as agent.spool_full reported them
    capture_gaps: int = 0
    clock_skew_ms: int = 0                   # the latest batch's creation time minus the collector's receipt time
    users: tuple[str, ...] = ()              # user names seen on it lately (shown by pseudonym), newest first


# --- the fleet page's query ----------------------------------------------------------------------------------------

STATUSES = ("online", "offline", "silent", "stopped", "revoked")
SORTS = ("hostname", "last_seen", "version", "status", "enrolled")


def status_of(agent: AgentRecord) -> str:
    """The status the fleet page shows: revoked first, then the liveness (an agent never heard from is offline)."""
    if agent.revoked_at_ns is not None:
        return "revoked"
    return {Liveness.ACTIVE.value: "online", Liveness.SILENT.value: "silent",
            Liveness.STOPPED.value: "stopped"}.get(agent.liveness, "offline")


@dataclass(frozen=True)
class AgentQuery:
    """Filters and order of the fleet page (every field optional)."""

    status: str | None = None      # one of STATUSES
    label: str | None = None
    version: str | None = None     # exact agent version
    os: str | None = None          # substring of the OS text, case-insensitive
    text: str | None = None        # substring of hostname or agent id, case-insensitive
    sort: str = "hostname"         # one of SORTS
    descending: bool = False


@dataclass(frozen=True)
class FleetRow:
    """One line of the fleet page: the agent, its health row and its newest certificate's expiry."""

    agent: AgentRecord
    health: AgentHealth | None
    certificate_not_after_ns: int | None
