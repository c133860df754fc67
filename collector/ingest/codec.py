"""Protobuf to domain values: the only collector module that reads EventBatch and Event messages.

The per-event fields come from ``EVENT_FIELDS``; attributes (a protobuf Struct) become plain JSON
values exactly as ``json_format.MessageToDict`` would make them (numbers as floats), without its
per-message reflection cost. NaN and infinity are refused: they are not JSON and not storable; so is
nesting deeper than ``MAX_DEPTH`` containers. Each event's attributes carry their stored text
(``Attributes.text``: sorted keys, as the SQL store writes them), made here, where batches are decoded
in parallel, not in the committer.

Speed: given the batch's wire bytes, the C decoder (``collector/ingest/_wire.c``) reads the events
straight from them and writes each event's attributes text, about 6 times faster than reading upb's
messages; the values are parsed from that text when first asked for. The Python path below is the
reference: where the extension could not be built, or for a batch it declines (a message field given
twice, which protobuf merges; anything refused as not JSON), it decides, with the same results
(tests/collector/test_wire_decoder.py).
"""

from __future__ import annotations

import json
import math
import operator
from collections import Counter
from typing import Any, Callable, Iterator, Mapping

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from shoumi.batch import MalformedBatch
from shoumi.kinds import EVENT_KINDS
from shoumi.v1 import events_pb2

from collector.events.models import EVENT_FIELDS, StoredEvent

__all__ = ["EVENT_KINDS", "MAX_DEPTH", "Attributes", "decode_batch", "decode_events", "struct_to_plain"]

# One C-level call reads every scalar field of an Event, in StoredEvent's order (attributes are last).
assert EVENT_FIELDS[-1].name == "attributes"
_SCALARS = operator.attrgetter(*(f.wire for f in EVENT_FIELDS[:-1]))
MAX_DEPTH = 100  # nested containers, the attributes Struct the first (upb's parse depth allows ~33)

try:  # the same decoding in C, built at install where a compiler exists
    from collector.ingest import _wire as _compiled  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only without the extension
    _compiled = None
else:
    assert _compiled.FIELDS == tuple(f.wire for f in EVENT_FIELDS[:-1]) and _compiled.MAX_DEPTH == MAX_DEPTH

# Batches decoded by each path: "c", "python" (no raw bytes or no extension) and "declined" (C handed
# the batch to the Python path). Counted without a lock: an observation, not an account.
decoded: Counter[str] = Counter()


def compiled() -> bool:
    """Tells whether the C decoder is in use."""
    return _compiled is not None


def _encoder() -> Callable[[Any], str]:
    """json.dumps(value, sort_keys=True, ensure_ascii=False) without making an encoder per call."""
    from json import encoder as je

    make: Any = getattr(je, "c_make_encoder", None)  # what JSONEncoder.iterencode runs, made once here
    if make is None:  # pragma: no cover - CPython has the C encoder
        return json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
    fast = make(None, json.JSONEncoder().default, je.encode_basestring, None, ": ", ", ", True, False, True)
    return lambda value: "".join(fast(value, 0))


_TEXT = _encoder()
_SCAN: Any = getattr(json.JSONDecoder(), "scan_once")  # the C scanner json.loads runs, without its two whitespace matches


def _parse(text: str) -> Any:
    """json.loads of an attributes text made here (no surrounding whitespace: scanned at once)."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)  # raises the usual JSONDecodeError
    return value if end == len(text) else json.loads(text)


class Attributes(Mapping[str, Any]):
    """An event's attributes: their stored JSON text (``text``), and the values, parsed from it on first
    use where only the text was made (the C decoder, the SQL store's reads: detection reads every event
    back, and most of its rules never look at them). Compares equal to the plain dict."""

    __slots__ = ("text", "_values")

    def __init__(self, text: str, values: dict[str, Any] | None = None) -> None:
        self.text = text
        self._values = values

    @classmethod
    def of(cls, values: dict[str, Any]) -> Attributes:
        """Attributes of plain values, their text made now."""
        return cls(_TEXT(values) if values else "{}", values)

    def _parsed(self) -> dict[str, Any]:
        values = self._values
        if values is None:
            values = self._values = _parse(self.text)
        return values

    def __getitem__(self, key: str) -> Any:
        return self._parsed()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._parsed().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._parsed()

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())

    def __eq__(self, other: object) -> bool:
        return self._parsed() == (other._parsed() if isinstance(other, Attributes) else other)

    __hash__ = None  # type: ignore[assignment]  # a mapping, as a dict

    def __repr__(self) -> str:
        return repr(self._parsed())


def decode_batch(raw: bytes) -> events_pb2.EventBatch:
    """Parses a batch off the wire; raises MalformedBatch for bytes that are not one."""
    try:
        return events_pb2.EventBatch.FromString(raw)
    except DecodeError as exc:
        raise MalformedBatch(f"undecodable batch ({len(raw)} bytes): {exc}") from exc


_finite = math.isfinite


def _value(v: struct_pb2.Value, depth: int) -> Any:
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
        return _plain(v.struct_value, depth + 1)
    if which == "list_value":
        if depth >= MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        return [_value(x, depth + 1) for x in v.list_value.values]
    return None


def _plain(s: struct_pb2.Struct, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    fields = s.fields  # keys, then lookups: the map's items() runs through collections.abc, in Python
    return {k: _value(fields[k], depth) for k in fields}


def struct_to_plain(s: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values; ValueError for NaN, infinity or nesting deeper than MAX_DEPTH."""
    return _plain(s, 1)


_REFUSED = {"kind": "has unknown kind {kind!r}", "id": "has no usable id", "time": "has no time",
            "nul": "has a NUL character in a text field"}


def decode_events(batch: events_pb2.EventBatch, raw: bytes | None = None) -> list[StoredEvent]:
    """Turns a verified batch's events into stored values; raises MalformedBatch on bad fields.

    ``raw``: the bytes ``batch`` was parsed from (an EventBatch's, as received or canonical without its
    domain prefix), read by the C decoder where it is built."""
    if raw is not None and _compiled is not None:
        try:
            events = _compiled.decode(raw, EVENT_KINDS, StoredEvent, (batch.agent_id, batch.epoch), (None,), Attributes)
        except _compiled.Refused as exc:
            seq, reason, kind = exc.args
            raise MalformedBatch(f"event seq {seq} " + _REFUSED[reason].format(kind=kind)) from None
        if events is not None:
            decoded["c"] += 1
            return events  # type: ignore[no-any-return]
        decoded["declined"] += 1
    else:
        decoded["python"] += 1
    return _decode_events(batch)


def _decode_events(batch: events_pb2.EventBatch) -> list[StoredEvent]:
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
            attributes = Attributes.of(struct_to_plain(event.attributes) if event.HasField("attributes") else {})
        except ValueError as exc:
            raise MalformedBatch(f"event seq {event.seq} has attributes that are not JSON: {exc}") from exc
        out.append(make((agent_id, epoch, *scalars(event), attributes, None)))
    return out
