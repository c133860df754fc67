"""Retention values: legal holds that keep events past their retention, and the record of each pruning.

Theory of operation: events older than the configured retention are deleted batch by batch,
unless an active legal hold covers any event of the batch (a case, an arbitration, a request from
counsel). A pruned batch keeps its batch hash, previous hash, signature and Merkle leaf, so every
signed tree head and the hash chain stay verifiable; only the personal data (the events and the
signed bytes that carry them) is gone, and ``RetentionRun`` records when and how much.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LegalHold", "RetentionRun", "covers"]


@dataclass(frozen=True)
class LegalHold:
    """Keeps the events of a user and/or an agent within a time range from being pruned."""

    reason: str
    created_by: str
    created_at_ns: int
    since_ns: int
    until_ns: int
    user: str | None = None
    agent_id: str | None = None
    released_at_ns: int | None = None
    id: int | None = None


@dataclass(frozen=True)
class RetentionRun:
    """One pruning: what was deleted, and what was kept for a hold."""

    at_ns: int
    before_ns: int
    batches: int
    events: int
    held_batches: int
    id: int | None = None
    last_row_id: int = 0  # the last batch row looked at (not stored): where the next chunk starts


def covers(hold: LegalHold, *, user: str, agent_id: str, time_ns: int) -> bool:
    """Tells whether an active hold covers one event."""
    return (
        hold.released_at_ns is None
        and (hold.user is None or hold.user == user)
        and (hold.agent_id is None or hold.agent_id == agent_id)
        and hold.since_ns <= time_ns <= hold.until_ns
    )
