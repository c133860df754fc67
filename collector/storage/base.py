"""The storage interface of the collector.

Every backend implements ``Store``; the contract suite in tests/collector/storage runs against
each. Errors::

    StoreError
     ├── AlreadyExists   (a unique key is taken: user name, token, agent id)
     └── ChainConflict   (another writer moved the agent's chain head between check and write)
"""

from __future__ import annotations

from typing import Protocol, Sequence

from shoumi.batch import ChainHead

from collector.domain.records import (
    AgentRecord,
    Alert,
    AuditEntry,
    EventFilter,
    Page,
    StoredBatch,
    StoredEvent,
    User,
)


class StoreError(Exception):
    """Base of all storage errors."""


class AlreadyExists(StoreError):
    """A unique key is already taken."""


class ChainConflict(StoreError):
    """The chain head changed under the writer: the batch was not stored."""


class Store(Protocol):
    """What the collector needs from a database. Each call is its own transaction."""

    # agents and enrollment
    def add_enroll_token(self, *, token_hash: str, created_at_ns: int, expires_at_ns: int, created_by: str) -> None: ...
    def consume_enroll_token(self, *, token_hash: str, agent: AgentRecord, now_ns: int) -> str | None:
        """Uses a valid token and records the agent in one step; returns None if it worked,
        else why not ('unknown', 'used', 'expired', 'revoked')."""
        ...
    def revoke_enroll_token(self, *, token_hash: str, now_ns: int) -> bool: ...
    def get_agent(self, agent_id: str) -> AgentRecord | None: ...
    def list_agents(self) -> Sequence[AgentRecord]: ...

    # ingest
    def chain_head(self, agent_id: str) -> ChainHead | None: ...
    def batch_hash_at(self, *, agent_id: str, epoch: int, first_seq: int) -> bytes | None: ...
    def store_batch(self, batch: StoredBatch, events: Sequence[StoredEvent], *, expected_head: ChainHead | None) -> None:
        """Stores the batch and its events atomically if the head is still ``expected_head``."""
        ...
    def list_batches(self, *, agent_id: str | None = None) -> Sequence[StoredBatch]: ...

    # events
    def list_events(self, flt: EventFilter, *, cursor: int | None, limit: int) -> Page: ...
    def events_in_window(self, *, user: str, kind: str, since_ns: int, until_ns: int, cap: int) -> Sequence[StoredEvent]: ...

    # alerts
    def add_alert(self, alert: Alert) -> Alert: ...
    def update_alert(self, alert: Alert) -> None: ...
    def latest_open_alert(self, *, rule: str, user: str) -> Alert | None: ...
    def list_alerts(self, *, cursor: int | None, limit: int, status: str | None = None) -> Page: ...

    # people
    def add_user(self, user: User) -> None: ...
    def get_user(self, username: str) -> User | None: ...
    def add_token(self, *, token_hash: str, username: str, kind: str, created_at_ns: int, expires_at_ns: int | None) -> None: ...
    def user_for_token(self, *, token_hash: str, kind: str, now_ns: int) -> User | None: ...
    def revoke_token(self, *, token_hash: str) -> None: ...
    def append_audit(self, entry: AuditEntry) -> None: ...
    def list_audit(self, *, cursor: int | None, limit: int) -> Page: ...

    def close(self) -> None: ...
