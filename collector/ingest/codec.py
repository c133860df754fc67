"""Protobuf to domain values: the only collector module that reads EventBatch and Event messages.

The per-event fields come from ``EVENT_FIELDS``; attributes (a protobuf Struct) become plain JSON
values exactly as ``json_format.MessageToDict`` would make them (numbers as floats), without its
per-message reflection cost. NaN and infinity are refused: they are not JSON and not storable.
Each event's attributes also carry their stored text (``Attributes.text``: sorted keys, as the SQL
store writes them), made here, where batches are decoded in parallel, not in the committer.
"""

from __future__ import annotations

import json
import math
import operator
from typing import Any, Callable

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from shoumi.batch import MalformedBatch
from shoumi.kinds import EVENT_KINDS
from shoumi.v1 import events_pb2

from collector.events.models import EVENT_FIELDS, StoredEvent

__all__ = ["EVENT_KINDS", "Attributes", "decode_batch", "decode_events", "struct_to_plain"]

# One C-level call reads every scalar field of an Event, in StoredEvent's order (attributes are last).
assert EVENT_FIELDS[-1].name == "attributes"
_SCALARS = operator.attrgetter(*(f.wire for f in EVENT_FIELDS[:-1]))


def _encoder() -> Callable[[Any], str]:
    """json.dumps(value, sort_keys=True, ensure_ascii=False) without making an encoder per call."""
    from json import encoder as je

    make: Any = getattr(je, "c_make_encoder", None)  # what JSONEncoder.iterencode runs, made once here
    if make is None:  # pragma: no cover - CPython has the C encoder
        return json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
    fast = make(None, json.JSONEncoder().default, je.encode_basestring, None, ": ", ", ", True, False, True)
    return lambda value: "".join(fast(value, 0))


_TEXT = _encoder()


class Attributes(dict[str, Any]):
    """An event's attributes as plain values, with their stored JSON text made once (``text``)."""

    __slots__ = ("text",)

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.text = _TEXT(values) if values else "{}"


def decode_batch(raw: bytes) -> events_pb2.EventBatch:
    """Parses a batch off the wire; raises MalformedBatch for bytes that are not one."""
    try:
        return events_pb2.EventBatch.FromString(raw)
    except DecodeError as exc:
        raise MalformedBatch(f"undecodable batch ({len(raw)} bytes): {exc}") from exc


_finite = math.isfinite


def _value(v: struct_pb2.Value) -> Any:
    which = v.WhichOneof("kind")
    if which == "string_value":
        return v.string_value
    if which == "number_value":
        n = v.number_value
        if not _finite(n):
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
    fields = s.fields  # keys, then lookups: the map's items() runs through collections.abc, in Python
    return {k: _value(fields[k]) for k in fields}


def decode_events(batch: events_pb2.EventBatch) -> list[StoredEvent]:
    """Turns a verified batch's events into stored values; raises MalformedBatch on bad fields."""
    out = []
    agent_id, epoch, make, kinds, scalars = batch.agent_id, batch.epoch, StoredEvent._make, EVENT_KINDS, _SCALARS
    for event in batch.events:
        eid = event.id
        if event.kind not in kinds:
            raise MalformedBatch(f"event seq {event.seq} has unknown kind {event.kind!r}")
        if not eid or len(eid) > 64:
            raise MalformedBatch(f"event seq {event.seq} has no usable id")
        if event.time_unix_ns <= 0:
            raise MalformedBatch(f"event seq {event.seq} has no time")
        if "\x00" in eid or "\x00" in event.path or "\x00" in event.dest_path or "\x00" in event.user or \
                "\x00" in event.process or "\x00" in event.exe or "\x00" in event.sha256:
            # no path, name or program holds one (agents escape undecodable bytes as \xNN), and PostgreSQL
            # text refuses it: refused here with a reason instead of failing at commit
            raise MalformedBatch(f"event seq {event.seq} has a NUL character in a text field")
        try:
            attributes = Attributes(struct_to_plain(event.attributes) if event.HasField("attributes") else {})
        except (ValueError, RecursionError) as exc:
            raise MalformedBatch(f"event seq {event.seq} has attributes that are not JSON: {exc}") from exc
        out.append(make((agent_id, epoch, *scalars(event), attributes, None)))
    return out
