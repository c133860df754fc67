"""Protobuf to domain values: the only collector module that reads EventBatch and Event messages.

The per-event fields come from ``EVENT_FIELDS``; attributes (a protobuf Struct) become plain JSON
values exactly as ``json_format.MessageToDict`` would make them (numbers as floats), without its
per-message reflection cost. NaN and infinity are refused: they are not JSON and not storable.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from shoumi.batch import MalformedBatch
from shoumi.kinds import EVENT_KINDS
from shoumi.v1 import events_pb2

from collector.events.models import EVENT_FIELDS, StoredEvent

__all__ = ["EVENT_KINDS", "decode_batch", "decode_events", "struct_to_plain"]

# One C-level call reads every scalar field of an Event, in StoredEvent's order (attributes are last).
assert EVENT_FIELDS[-1].name == "attributes"
_SCALARS = operator.attrgetter(*(f.wire for f in EVENT_FIELDS[:-1]))


def decode_batch(raw: bytes) -> events_pb2.EventBatch:
    """Parses a batch off the wire; raises MalformedBatch for bytes that are not one."""
    try:
        return events_pb2.EventBatch.FromString(raw)
    except DecodeError as exc:
        raise MalformedBatch(f"undecodable batch ({len(raw)} bytes): {exc}") from exc


def _value(v: struct_pb2.Value) -> Any:
    which = v.WhichOneof("kind")
    if which == "string_value":
        return v.string_value
    if which == "number_value":
        n = v.number_value
        if math.isnan(n) or math.isinf(n):
            raise ValueError("NaN or infinity in a number")
        return n
    if which == "bool_value":
        return v.bool_value
    if which == "struct_value":
        return struct_to_plain(v.struct_value)
    if which == "list_value":
        return [_value(x) for x in v.list_value.values]
    return None


def struct_to_plain(s: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values."""
    return {k: _value(v) for k, v in s.fields.items()}


def decode_events(batch: events_pb2.EventBatch) -> list[StoredEvent]:
    """Turns a verified batch's events into stored values; raises MalformedBatch on bad fields."""
    out = []
    agent_id, epoch = batch.agent_id, batch.epoch
    for event in batch.events:
        if event.kind not in EVENT_KINDS:
            raise MalformedBatch(f"event seq {event.seq} has unknown kind {event.kind!r}")
        if not event.id or len(event.id) > 64:
            raise MalformedBatch(f"event seq {event.seq} has no usable id")
        if event.time_unix_ns <= 0:
            raise MalformedBatch(f"event seq {event.seq} has no time")
        try:
            attributes = struct_to_plain(event.attributes) if event.HasField("attributes") else {}
        except (ValueError, RecursionError) as exc:
            raise MalformedBatch(f"event seq {event.seq} has attributes that are not JSON: {exc}") from exc
        out.append(StoredEvent._make((agent_id, epoch, *_SCALARS(event), attributes, None)))
    return out
