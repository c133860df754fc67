"""Values the collector stores and serves. Frozen, validated, free of protobuf and SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "AgentRecord",
    "StoredEvent",
    "StoredBatch",
    "Alert",
    "User",
    "AuditEntry",
    "EventFilter",
    "Page",
]


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
    liveness: str = "enrolled"  # enrolled | active | stopped | silent


@dataclass(frozen=True)
class StoredEvent:
    """One event as verified and stored; ``row_id`` is the collector's ingest order."""

    agent_id: str
    epoch: int
    seq: int
    id: str
    kind: str
    time_ns: int
    path: str = ""
    dest_path: str = ""
    size: int = -1
    sha256: str = ""
    user: str = ""
    uid: int = -1
    pid: int = 0
    process: str = ""
    exe: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    row_id: int | None = None


@dataclass(frozen=True)
class StoredBatch:
    """A verified batch: the exact signed bytes are kept so the store can be re-verified later."""

    agent_id: str
    epoch: int
    first_seq: int
    last_seq: int
    batch_hash: bytes
    prev_hash: bytes
    signature: bytes
    canonical: bytes
    received_at_ns: int


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


@dataclass(frozen=True)
class User:
    """A person who uses the collector's UI or API."""

    username: str
    role: str
    password_hash: str | None
    created_at_ns: int
    disabled: bool = False


@dataclass(frozen=True)
class AuditEntry:
    """One human action, kept for the audit log."""

    at_ns: int
    actor: str
    action: str
    target: str
    details: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class EventFilter:
    """What a reader of the event list asked for."""

    agent_id: str | None = None
    kind: str | None = None
    since_ns: int | None = None
    user: str | None = None
    until_ns: int | None = None


@dataclass(frozen=True)
class Page:
    """A page of items and the cursor to the next page (None at the end)."""

    items: tuple[Any, ...]
    next_cursor: str | None
