"""The C event decoder (collector/ingest/_wire.c) against the Python path it stands in for.

decode_events(batch, raw) reads the events from the wire bytes in C; decode_events(batch) reads upb's
messages. Both must give the same events, the same attributes text (byte for byte: it is what the store
keeps and verify compares) and the same refusals, on random batches and on hand-built wire bytes that
use what protobuf allows and our agents never send (repeated fields, unknown fields, merges).
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoumi.batch import MalformedBatch
from shoumi.kinds import EVENT_KINDS
from shoumi.v1 import events_pb2
from google.protobuf import struct_pb2

from collector.ingest import codec
from collector.ingest.codec import MAX_DEPTH, Attributes, decode_batch, decode_events, struct_to_plain

from tests.conftest import ChainWriter, make_event

C = pytest.mark.skipif(not codec.compiled(), reason="no C compiler here: the extension was not built")
_KINDS = sorted(EVENT_KINDS)


# --- what the decoders are compared by -------------------------------------------------------------

def _exact(v: Any) -> Any:
    """A value with its types and float signs kept (== takes 1 == 1.0 == True and 0.0 == -0.0)."""
    if isinstance(v, dict) or isinstance(v, Attributes):
        return ("dict", sorted((k, _exact(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("list", [_exact(x) for x in v])
    return (type(v).__name__, repr(v))


def _outcome(decode: Callable[[], list[Any]]) -> Any:
    try:
        events = decode()
    except MalformedBatch as exc:
        return ("refused", str(exc))
    return [(tuple(e[:-2]), e.attributes.text, _exact(e.attributes), e.row_id) for e in events]


def _both(batch: events_pb2.EventBatch, raw: bytes) -> tuple[Any, Any, str]:
    """(C outcome, Python outcome, the path decode_events took with raw)."""
    before = codec.decoded.copy()
    c = _outcome(lambda: decode_events(batch, raw))
    took = [k for k in ("c", "declined", "python") if codec.decoded[k] != before[k]]
    return c, _outcome(lambda: decode_events(batch)), took[0] if took else "refused in C"


def _todays_text(event: events_pb2.Event) -> str:
    """The attributes text as decode_events made it before the C decoder: json.dumps of struct_to_plain."""
    values = struct_to_plain(event.attributes) if event.HasField("attributes") else {}
    return json.dumps(values, sort_keys=True, ensure_ascii=False) if values else "{}"


# --- random batches --------------------------------------------------------------------------------

_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e16, 1e15, 999999999999999.9, 1e-7,
                     1e-5, 1e22, 1.7976931348623157e308, 0.1, 2.0, -1.5, 123456789012345678.0]),
    st.integers(-(2**53), 2**53).map(float),
)
_TEXT = st.one_of(st.text(), st.text(alphabet=st.sampled_from('"\\\n\r\t\b\f\x00\x01\x1f\x7f é中😀\U0010ffff')))
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _FLOATS, _TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=16,
)
_INT64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def _events(draw: st.DrawFn) -> events_pb2.Event:
    text = st.one_of(st.just(""), _TEXT) if draw(st.booleans()) else st.text(alphabet="abc/-.", max_size=30)
    event = events_pb2.Event(
        id=draw(st.one_of(st.uuids().map(str), st.text(max_size=70))),
        kind=draw(st.one_of(st.sampled_from(_KINDS), st.sampled_from(_KINDS), st.text(max_size=12))),
        time_unix_ns=draw(st.one_of(st.integers(1, 2**63 - 1), _INT64)),
        seq=draw(st.integers(0, 2**64 - 1)),
        path=draw(text), dest_path=draw(text), size=draw(_INT64), sha256=draw(text), user=draw(text),
        uid=draw(_INT64), pid=draw(_INT64), process=draw(text), exe=draw(text),
    )
    attributes = draw(st.one_of(st.none(), st.dictionaries(_TEXT, _JSON, max_size=6)))
    if attributes is not None:
        s = struct_pb2.Struct()
        s.update(attributes)
        event.attributes.CopyFrom(s)
    return event


def _batch(events: list[events_pb2.Event]) -> events_pb2.EventBatch:
    batch = events_pb2.EventBatch(agent_id="agent-x", epoch=3, first_seq=1, prev_batch_hash=b"\0" * 32,
                                  created_unix_ns=5, signature=b"s" * 64)
    for e in events:
        batch.events.add().CopyFrom(e)
    return batch


@C
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_events(), max_size=6))
def test_random_batches_decode_the_same_in_c_and_python(events: list[events_pb2.Event]) -> None:
    batch = _batch(events)
    raw = batch.SerializeToString()
    parsed = decode_batch(raw)
    c, python, took = _both(parsed, raw)
    assert c == python
    assert took in ("c", "refused in C")  # nothing here needs the Python path: no merges, every number finite
    if isinstance(python, list):
        assert [text for _, text, _, _ in c] == [_todays_text(e) for e in parsed.events]


@C
@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_TEXT, _JSON, max_size=6))
def test_attributes_parsed_from_the_c_text_are_the_struct_values(values: dict[str, Any]) -> None:
    event = make_event(1)
    event.attributes.update(values)
    batch = _batch([event])
    (decoded,) = decode_events(batch, batch.SerializeToString())
    assert _exact(decoded.attributes) == _exact(struct_to_plain(batch.events[0].attributes))
    assert decoded.attributes == struct_to_plain(batch.events[0].attributes)  # and == a dict, both ways
    assert struct_to_plain(batch.events[0].attributes) == decoded.attributes


@C
def test_floats_round_trip_bit_for_bit() -> None:
    numbers = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1e16, 1e-7, 1.7976931348623157e308, 2.0, 1e15, 0.1,
               -123.456, 9007199254740993.0, 1e300, 4.35e-310]
    event = make_event(1)
    event.attributes.update({"n": numbers, "m": {str(i): x for i, x in enumerate(numbers)}})
    batch = _batch([event])
    (decoded,) = decode_events(batch, batch.SerializeToString())
    got = decoded.attributes["n"]
    assert [struct.pack("<d", x) for x in got] == [struct.pack("<d", x) for x in numbers]
    assert all(type(x) is float for x in got) and decoded.attributes["m"]["1"] == -0.0
    assert math.copysign(1, decoded.attributes["m"]["1"]) == -1
    assert decoded.attributes.text == _todays_text(batch.events[0])


# --- hand-built wire bytes -------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    n &= 2**64 - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _len(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


def _str(field: int, text: str) -> bytes:
    return _len(field, text.encode())


def _int(field: int, n: int) -> bytes:
    return _tag(field, 0) + _varint(n)


def _double(x: float) -> bytes:  # a Value's number_value
    return _tag(2, 1) + struct.pack("<d", x)


def _entry(key: str, value: bytes) -> bytes:  # a Struct's map entry, field 1
    return _len(1, _str(1, key) + _len(2, value))


def _event(*extra: bytes, seq: int = 1, id_: str = "e-1", kind: str = "file.read") -> bytes:
    return _str(1, id_) + _str(2, kind) + _int(3, 10) + _int(4, seq) + b"".join(extra)


def _wire_batch(*events: bytes, extra: bytes = b"") -> bytes:
    return _str(1, "agent-x") + _int(2, 1) + _int(3, 1) + b"".join(_len(4, e) for e in events) + extra


def _same_as_upb(raw: bytes, path: str) -> list[Any]:
    """Decodes raw both ways; they agree, and decode_events with raw took ``path``."""
    c, python, took = _both(decode_batch(raw), raw)
    assert c == python
    assert took == path
    return python  # type: ignore[no-any-return]


@C
def test_a_scalar_given_twice_takes_its_last_value() -> None:
    raw = _wire_batch(_event(_str(5, "/first"), _str(5, "/last"), _int(7, 5), _int(7, -1), _str(1, "e-2"),
                             _int(4, 9)))
    ((scalars, text, _, _),) = _same_as_upb(raw, "c")
    assert scalars[2:4] == (9, "e-2") and scalars[6] == "/last" and scalars[8] == -1 and text == "{}"


@C
def test_a_map_key_given_twice_keeps_its_last_entry() -> None:
    struct_ = _entry("k", _double(1.0)) + _entry("a", _tag(4, 0) + b"\x01") + _entry("k", _str(3, "x"))
    ((_, text, _, _),) = _same_as_upb(_wire_batch(_event(_len(14, struct_))), "c")
    assert text == '{"a": true, "k": "x"}'


@C
def test_odd_but_valid_values_are_read_as_upb_reads_them() -> None:
    entries = [
        _len(1, _str(1, "no value")),                                 # an entry without its value: null
        _len(1, _len(2, _double(2.0))),                               # without its key: ""
        _entry("bool 7", _tag(4, 0) + _varint(7)),                    # any non-zero varint is true
        _entry("null 5", _tag(1, 0) + _varint(5)),                    # any null_value is null
        _entry("empty", b""),                                         # a Value with no kind: null
        _entry("switched", _str(3, "s") + _double(1.5)),              # the oneof's last member wins
        _entry("unknown", _int(9, 1) + _str(3, "u")),                 # a Value's unknown field: skipped
        _entry("list", _len(6, _len(1, _double(-0.0)) + _len(1, b"") + _len(1, _len(5, b"")))),
    ]
    ((_, text, _, _),) = _same_as_upb(_wire_batch(_event(_len(14, b"".join(entries)))), "c")
    assert text == ('{"": 2.0, "bool 7": true, "empty": null, "list": [-0.0, null, {}], "no value": null, '
                    '"null 5": null, "switched": 1.5, "unknown": "u"}')


@C
def test_a_number_that_is_not_json_in_a_replaced_entry_is_never_read() -> None:
    struct_ = _entry("x", _double(math.nan)) + _entry("x", _len(5, _entry("y", _double(math.inf)))) + _entry("x", b"")
    ((_, text, _, _),) = _same_as_upb(_wire_batch(_event(_len(14, struct_))), "c")
    assert text == '{"x": null}'


@C
def test_unknown_fields_are_skipped_everywhere() -> None:
    unknown = _int(99, 7) + _tag(98, 1) + b"8 bytes!" + _tag(97, 5) + b"four" + _len(96, b"anything")
    value = _str(3, "v") + unknown
    struct_ = _entry("k", value) + unknown + _entry("l", _len(6, unknown + _len(1, value)))
    raw = _wire_batch(_event(unknown, _len(14, struct_), unknown), extra=unknown)
    ((_, text, _, _),) = _same_as_upb(raw, "c")
    assert text == '{"k": "v", "l": ["v"]}'


@C
@pytest.mark.parametrize("attributes", [
    pytest.param(_len(14, _entry("a", _double(1.0))) + _len(14, _entry("b", _double(2.0))), id="attributes twice"),
    pytest.param(_len(14, _entry("s", _len(5, _entry("a", _double(1.0))) + _len(5, _entry("b", _double(2.0))))),
                 id="struct_value twice"),
    pytest.param(_len(14, _entry("l", _len(6, _len(1, _double(1.0))) + _len(6, _len(1, _double(2.0))))),
                 id="list_value twice"),
    pytest.param(_len(14, _len(1, _str(1, "k") + _len(2, _str(3, "x")) + _len(2, _tag(4, 0) + b"\x01"))),
                 id="an entry's value twice"),
    pytest.param(_len(14, _entry("k", _double(1.0)) + _len(1, _str(1, "k") + _int(9, 1) + _len(2, _double(2.0)))),
                 id="a map entry with an unknown field"),
    pytest.param(_len(14, _entry("n", _str(1, "a"))), id="null_value as a string"),
    pytest.param(_len(14, _entry("n", _tag(2, 0) + _varint(3))), id="number_value as a varint"),
    pytest.param(_len(14, _entry("g", _tag(7, 3) + _tag(7, 4) + _str(3, "x"))), id="a group"),
])
def test_what_protobuf_merges_or_reads_otherwise_goes_to_the_python_path(attributes: bytes) -> None:
    raw = _wire_batch(_event(attributes))
    assert codec._compiled.decode(raw, EVENT_KINDS) is None
    _same_as_upb(raw, "declined")


@C
@pytest.mark.parametrize("raw", [
    pytest.param(_tag(4, 2) + _varint(5) + b"abc", id="length past the end"),
    pytest.param(_tag(4, 0) + b"\xff" * 11, id="an 11-byte varint"),
    pytest.param(b"\x80", id="a truncated tag"),
    pytest.param(_tag(1, 7) + b"x", id="wire type 7"),
    pytest.param(_tag(0, 0) + b"\x00", id="field number 0"),
    pytest.param(_tag(1, 1) + b"1234", id="a short fixed64"),
    pytest.param(_tag(1, 5) + b"12", id="a short fixed32"),
    pytest.param(_len(4, _str(1, "e") + _tag(14, 2) + _varint(50) + b"x"), id="attributes past the event"),
    pytest.param(_len(4, _event(_len(14, _len(1, _str(1, "k") + _tag(2, 2) + _varint(9))))), id="a value past its entry"),
    pytest.param(_len(4, _event(_len(14, _entry("k", _len(3, b"\xc3("))))), id="invalid UTF-8 in a string value"),
    pytest.param(_len(4, _event(_len(14, _entry("k", _len(3, b"\xed\xa0\x80"))))), id="a UTF-8 surrogate"),
    pytest.param(_len(4, _len(5, b"\xff\xfe") + _event()), id="invalid UTF-8 in a path"),
])
def test_malformed_bytes_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        codec._compiled.decode(raw, EVENT_KINDS)
    with pytest.raises(Exception):  # upb refuses them too: decode_events never sees these bytes
        events_pb2.EventBatch.FromString(raw)


@C
@settings(max_examples=500, deadline=None)
@given(st.lists(_events(), min_size=1, max_size=3), st.data())
def test_damaged_bytes_never_crash_and_agree_where_upb_parses_them(events: list[events_pb2.Event], data: st.DataObject) -> None:
    raw = bytearray(_batch(events).SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        what = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if what == "flip" and raw:
            raw[at] ^= data.draw(st.integers(1, 255))
        elif what == "cut":
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        out = codec._compiled.decode(bytes(raw), EVENT_KINDS)
    except (ValueError, codec._compiled.Refused):
        out = "raised"
    assert out is None or out == "raised" or isinstance(out, list)
    try:
        parsed = events_pb2.EventBatch.FromString(bytes(raw))
    except Exception:
        return
    c, python, _ = _both(parsed, bytes(raw))
    assert c == python


@C
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(raw: bytes) -> None:
    try:
        out = codec._compiled.decode(raw, EVENT_KINDS)
    except (ValueError, codec._compiled.Refused):
        return
    assert out is None or isinstance(out, list)


# --- refusals --------------------------------------------------------------------------------------

def _one(**fields: Any) -> events_pb2.EventBatch:
    event = make_event(7)
    for name, value in fields.items():
        setattr(event, name, value)
    return _batch([make_event(6), event, make_event(8, kind="no.such.kind")])


@C
@pytest.mark.parametrize("fields, message", [
    ({"kind": "no.such"}, "event seq 7 has unknown kind 'no.such'"),
    ({"kind": "no.such", "id": ""}, "event seq 7 has unknown kind 'no.such'"),  # the checks' order holds
    ({"id": ""}, "event seq 7 has no usable id"),
    ({"id": "x" * 65}, "event seq 7 has no usable id"),
    ({"id": "é" * 64}, None),  # 64 characters, 128 bytes: usable
    ({"id": "é" * 65}, "event seq 7 has no usable id"),
    ({"id": "", "time_unix_ns": 0}, "event seq 7 has no usable id"),
    ({"time_unix_ns": 0}, "event seq 7 has no time"),
    ({"time_unix_ns": -1, "path": "\0"}, "event seq 7 has no time"),
    *[({name: "a\0b"}, "event seq 7 has a NUL character in a text field")
      for name in ("id", "path", "dest_path", "user", "process", "exe", "sha256")],
])
def test_refusals_are_the_same(fields: dict[str, Any], message: str | None) -> None:
    batch = _one(**fields)
    c, python, _ = _both(batch, batch.SerializeToString())
    assert c == python
    assert python == ("refused", message or "event seq 8 has unknown kind 'no.such.kind'")


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_number_that_is_not_json_is_refused_on_both_paths(number: float) -> None:
    event = make_event(7)
    event.attributes.update({"a": "fine", "z": [1.0, {"x": number}]})
    batch = _batch([make_event(6), event])
    c, python, took = _both(batch, batch.SerializeToString())
    assert c == python == ("refused", "event seq 7 has attributes that are not JSON: NaN or infinity in a number")
    assert took == ("declined" if codec.compiled() else "python")


def _nested(levels: int, *, lists: bool) -> struct_pb2.Struct:
    """Attributes ``levels`` containers deep, the attributes Struct being the first."""
    top = struct_pb2.Struct()
    cur: Any = top
    for _ in range(levels - 1):
        value = cur.fields["a"] if isinstance(cur, struct_pb2.Struct) else cur.values.add()
        if lists and isinstance(cur, struct_pb2.Struct):
            value.list_value.SetInParent()
            cur = value.list_value
        else:
            value.struct_value.SetInParent()
            cur = value.struct_value
    return top


@pytest.mark.parametrize("lists", [False, True], ids=["structs", "lists"])
def test_nesting_beyond_the_bound_is_refused_on_both_paths(lists: bool) -> None:
    # deeper than upb parses off the wire (~33 levels), so made in memory: the bound is the decoders' own
    fits, deep = make_event(1), make_event(2)
    fits.attributes.CopyFrom(_nested(MAX_DEPTH, lists=lists))
    deep.attributes.CopyFrom(_nested(MAX_DEPTH + 1, lists=lists))
    batch = _batch([fits])
    c, python, took = _both(batch, batch.SerializeToString())
    assert c == python and python[0][1].count("{") + python[0][1].count("[") == MAX_DEPTH
    assert took == ("c" if codec.compiled() else "python")
    batch = _batch([fits, deep])
    c, python, took = _both(batch, batch.SerializeToString())
    assert c == python == ("refused", f"event seq 2 has attributes that are not JSON: nested deeper than {MAX_DEPTH} levels")
    assert took == ("declined" if codec.compiled() else "python")


# --- in use ----------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here: the Python path is used")
def test_the_extension_is_built_here_and_decodes_what_ingest_receives(sqlite_store: Any) -> None:
    # CI and developers install with a compiler: the C decoder must be what ingest runs
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from collector.enrollment.service import EnrollmentService
    from collector.events.models import EventFilter
    from collector.ingest.service import IngestService

    assert codec.compiled()
    key = Ed25519PrivateKey.generate()
    svc = EnrollmentService(token_ttl_ns=600 * 10**9)
    agent_id = svc.enroll(tx=sqlite_store, token=svc.create_token(tx=sqlite_store, actor="test"), hostname="ws",
                          public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), os_name="Linux",
                          agent_version="t", peer="test").agent_id
    batch = ChainWriter(agent_id, key).next(3)
    batch.events[1].attributes.update({"z": "中", "a": [1.5, None]})
    from shoumi.batch import sign_batch
    sign_batch(batch, key)
    before = codec.decoded["c"]
    ingest = IngestService(sqlite_store)
    try:
        assert ingest.submit(batch, raw=batch.SerializeToString()).result(30).acked_seq == 3
    finally:
        ingest.close()
    assert codec.decoded["c"] == before + 1
    stored = sqlite_store.list_events(EventFilter(), cursor=None, limit=10).items
    assert sorted(e.attributes == {"z": "中", "a": [1.5, None]} for e in stored) == [False, False, True]


def test_attributes_compare_as_the_dict_and_keep_their_text() -> None:
    text = '{"a": [1.0, -0.0], "b": {"c": null}}'
    lazy, made = Attributes(text), Attributes.of({"b": {"c": None}, "a": [1.0, -0.0]})
    assert lazy == made == {"a": [1.0, -0.0], "b": {"c": None}} == lazy
    assert lazy.text == made.text == text and lazy != {"a": 1} and {"a": 1} != lazy
    assert dict(lazy) == {"a": [1.0, -0.0], "b": {"c": None}} and "a" in lazy and len(lazy) == 2
    assert lazy.get("x", 3) == 3 and Attributes("{}") == {} and Attributes.of({}).text == "{}"
