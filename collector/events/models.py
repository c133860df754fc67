"""The stored evidence stream: events and the signed batches that carried them.

``StoredEvent`` is the one definition of an event's fields on the collector. The SQL columns
(collector/storage/sql/schema.py), the row mappers, the protobuf decoder (collector/ingest/codec.py),
the JSON shape of the API (collector/events/views.py) and ``verify`` all derive from
``EVENT_FIELDS`` below; tests/collector/test_event_fields.py checks that the .proto's Event says
the same, and that ``decode(encode(e)) == e`` across agent and collector.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["StoredEvent", "StoredBatch", "EventFilter", "EventField", "EVENT_FIELDS", "event_from_values"]


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
class EventFilter:
    """What a reader of the event list asked for."""

    agent_id: str | None = None
    kind: str | None = None
    since_ns: int | None = None
    user: str | None = None
    until_ns: int | None = None


@dataclass(frozen=True)
class EventField:
    """One field an event carries: its name here, its SQL column and its field in the wire Event."""

    name: str
    column: str
    wire: str
    type: type


# Where a name differs: SQL reserves "user", the wire says what unit the time is in.
_COLUMN = {"id": "event_id", "user": "user_name"}
_WIRE = {"time_ns": "time_unix_ns"}
# Known from the batch (agent_id, epoch) or given by the store (row_id), not carried per event.
_NOT_PER_EVENT = {"agent_id", "epoch", "row_id"}
_TYPES: dict[str, type] = {"int": int, "str": str, "Mapping[str, Any]": dict}

EVENT_FIELDS: tuple[EventField, ...] = tuple(
    EventField(f.name, _COLUMN.get(f.name, f.name), _WIRE.get(f.name, f.name), _TYPES[str(f.type)])
    for f in dataclasses.fields(StoredEvent)
    if f.name not in _NOT_PER_EVENT
)


def event_from_values(agent_id: str, epoch: int, values: Mapping[str, Any], row_id: int | None = None) -> StoredEvent:
    """Builds a StoredEvent from per-event values keyed by field name."""
    return StoredEvent(agent_id=agent_id, epoch=epoch, row_id=row_id, **{f.name: values[f.name] for f in EVENT_FIELDS})
