"""The stored evidence stream: events and the signed batches that carried them.

``StoredEvent`` is the one definition of an event's fields on the collector. The SQL columns
(collector/storage/sql/schema.py), the row mappers, the protobuf decoder (collector/ingest/codec.py),
the JSON shape of the API (collector/events/views.py) and ``verify`` all derive from
``EVENT_FIELDS`` below; tests/collector/test_event_fields.py checks that the .proto's Event says
the same, and that ``decode(encode(e)) == e`` across agent and collector.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple, get_type_hints

__all__ = ["StoredEvent", "StoredBatch", "EventFilter", "EventField", "EVENT_FIELDS"]


class StoredEvent(NamedTuple):
    """One event as verified and stored; ``row_id`` is the collector's ingest order.

    A named tuple, not a dataclass: ingest builds tens of thousands a second, and its fields are in
    the order of the events table's columns, so a row is the tuple itself (storage/sql/batches.py).
    """

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
    attributes: Mapping[str, Any] = MappingProxyType({})
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
_HINTS = get_type_hints(StoredEvent)

EVENT_FIELDS: tuple[EventField, ...] = tuple(
    EventField(name, _COLUMN.get(name, name), _WIRE.get(name, name), _HINTS[name] if _HINTS[name] in (int, str) else dict)
    for name in StoredEvent._fields
    if name not in _NOT_PER_EVENT
)

