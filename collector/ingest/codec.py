"""Protobuf to domain values: the only collector module that reads Event messages."""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from shoumi.batch import MalformedBatch
from shoumi.kinds import EVENT_KINDS
from shoumi.v1 import events_pb2

from collector.domain.records import StoredEvent

__all__ = ["EVENT_KINDS", "decode_batch", "decode_events"]


def decode_batch(raw: bytes) -> events_pb2.EventBatch:
    """Parses a batch off the wire; raises MalformedBatch for bytes that are not one."""
    try:
        return events_pb2.EventBatch.FromString(raw)
    except DecodeError as exc:
        raise MalformedBatch(f"undecodable batch ({len(raw)} bytes): {exc}") from exc



def decode_events(batch: events_pb2.EventBatch) -> list[StoredEvent]:
    """Turns a verified batch's events into stored values; raises MalformedBatch on bad fields."""
    out = []
    for event in batch.events:
        if event.kind not in EVENT_KINDS:
            raise MalformedBatch(f"event seq {event.seq} has unknown kind {event.kind!r}")
        if not event.id or len(event.id) > 64:
            raise MalformedBatch(f"event seq {event.seq} has no usable id")
        if event.time_unix_ns <= 0:
            raise MalformedBatch(f"event seq {event.seq} has no time")
        try:
            attributes = json_format.MessageToDict(event.attributes) if event.HasField("attributes") else {}
        except ValueError as exc:  # NaN or infinity in a number: not JSON, not storable
            raise MalformedBatch(f"event seq {event.seq} has attributes that are not JSON: {exc}") from exc
        out.append(
            StoredEvent(
                agent_id=batch.agent_id,
                epoch=batch.epoch,
                seq=event.seq,
                id=event.id,
                kind=event.kind,
                time_ns=event.time_unix_ns,
                path=event.path,
                dest_path=event.dest_path,
                size=event.size,
                sha256=event.sha256,
                user=event.user,
                uid=event.uid,
                pid=event.pid,
                process=event.process,
                exe=event.exe,
                attributes=attributes,
            )
        )
    return out
