"""The event's fields are defined once: the .proto, the collector's values, the SQL columns, the API and
the round trip agent -> wire -> collector -> store -> collector agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoumi.kinds import EVENT_KINDS
from shoumi.v1 import events_pb2

from agent.core.events import FileEvent
from agent.wire import encode_event

from collector.events.models import EVENT_FIELDS, StoredEvent
from collector.events.views import event_json
from collector.ingest.codec import decode_events
from collector.storage import MemoryStore, open_store
from shoumi.batch import MalformedBatch
from collector.storage.sql.schema import events as events_table

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# an event's own text fields never hold NUL (agents escape undecodable bytes as \xNN): ingest refuses one
_FIELD = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


def test_every_wire_field_of_an_event_is_one_of_the_collectors_fields() -> None:
    wire = {f.name for f in events_pb2.Event.DESCRIPTOR.fields}
    assert wire == {f.wire for f in EVENT_FIELDS}


def test_the_events_table_has_a_column_for_each_field() -> None:
    columns = set(events_table.c.keys())
    assert {f.column for f in EVENT_FIELDS} <= columns
    assert columns - {f.column for f in EVENT_FIELDS} == {"row_id", "agent_id", "epoch"}


def test_the_api_shows_every_field() -> None:
    e = StoredEvent(agent_id="a", epoch=1, seq=1, id="i", kind="file.read", time_ns=1)
    assert set(event_json(e)) == {"agent_id", "epoch", *("time" if f.name == "time_ns" else f.name for f in EVENT_FIELDS)}


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(sorted(EVENT_KINDS)),
    time_ns=st.integers(1, 2**62),
    seq=st.integers(1, 2**40),
    path=_FIELD, dest=_FIELD, size=st.integers(-1, 2**62), sha=st.sampled_from(["", "ab" * 32]),
    user=_FIELD, uid=st.integers(-1, 2**31), pid=st.integers(0, 2**31), process=_FIELD, exe=_FIELD,
    attributes=st.dictionaries(_TEXT, _JSON, max_size=5),  # NUL inside attributes is fine: JSON escapes it
)
def test_decode_of_encode_is_the_event(kind: str, time_ns: int, seq: int, path: str, dest: str, size: int, sha: str,
                                       user: str, uid: int, pid: int, process: str, exe: str,
                                       attributes: dict[str, object]) -> None:
    event = FileEvent(kind=kind, time_unix_ns=time_ns, path=path, dest_path=dest, size=size, sha256=sha, user=user,
                      uid=uid, pid=pid, process=process, exe=exe, attributes=attributes)
    batch = events_pb2.EventBatch(agent_id="agt-1", epoch=3, first_seq=seq)
    batch.events.append(encode_event(event, seq))
    [stored] = decode_events(events_pb2.EventBatch.FromString(batch.SerializeToString()))
    assert (stored.agent_id, stored.epoch, stored.seq, stored.id, stored.kind, stored.time_ns) == (
        "agt-1", 3, seq, event.id, kind, time_ns)
    for name in ("path", "dest_path", "size", "sha256", "user", "uid", "pid", "process", "exe"):
        assert getattr(stored, name) == getattr(event, name), name
    assert stored.attributes == _as_json(dict(event.attributes))


@pytest.mark.parametrize("field", ["path", "dest_path", "user", "process", "exe"])
def test_a_nul_in_an_events_text_is_refused_with_the_reason(field: str) -> None:
    given_: dict[str, str] = {"path": "/srv/a", field: "a\x00b"}
    event = FileEvent(kind="file.read", time_unix_ns=1, **given_)  # type: ignore[arg-type]
    batch = events_pb2.EventBatch(agent_id="agt-1", epoch=1, first_seq=1)
    batch.events.append(encode_event(event, 1))
    with pytest.raises(MalformedBatch, match="NUL"):
        decode_events(batch)


def _as_json(value: object) -> object:
    # what JSON (and protobuf's Struct) can hold: numbers are doubles
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    return float(value)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(attributes=st.dictionaries(_TEXT, _JSON, max_size=5), user=_TEXT, path=_TEXT)
def test_a_stored_event_reads_back_equal_on_both_stores(tmp_path_factory: object, attributes: dict[str, object],
                                                         user: str, path: str) -> None:
    from shoumi.batch import ChainHead  # noqa: F401  (the head of an empty chain is None)

    from collector.events.models import EventFilter, StoredBatch

    event = StoredEvent(agent_id="agt-1", epoch=1, seq=1, id="e1", kind="file.read", time_ns=5, path=path, user=user,
                        attributes=_as_json(attributes))  # type: ignore[arg-type]
    batch = StoredBatch("agt-1", 1, 1, 1, b"h" * 32, bytes(32), b"s" * 64, b"c", 9)
    stores = [MemoryStore(), open_store(Path(tmp_path_factory.mktemp("s")))]  # type: ignore[attr-defined]
    for store in stores:
        with store.transaction() as tx:
            tx.store_batch(batch, [event], expected_head=None)
        with store.read() as tx:
            [back] = tx.list_events(EventFilter(), cursor=None, limit=5).items
        store.close()
        assert back._replace(row_id=None) == event
