"""The shared batch module: signing, verification and the chain, as properties."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from shoumi import batch as chain
from shoumi.v1 import events_pb2

from tests.conftest import ChainWriter

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

texts = st.text(max_size=40)
events = st.builds(
    lambda kind, path, user, size, attrs: (kind, path, user, size, attrs),
    st.sampled_from(sorted(__import__("shoumi.kinds", fromlist=["EVENT_KINDS"]).EVENT_KINDS)),
    texts, texts, st.integers(-1, 2**40),
    st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(texts, st.booleans(), st.lists(texts, max_size=3)), max_size=3),
)


def _batch(rows: list[tuple[str, str, str, int, dict[str, object]]]) -> events_pb2.EventBatch:
    batch = events_pb2.EventBatch(agent_id="agt-1", epoch=1, first_seq=1, prev_batch_hash=chain.GENESIS_HASH)
    for i, (kind, path, user, size, attrs) in enumerate(rows):
        e = batch.events.add(id=f"e{i}", kind=kind, time_unix_ns=1 + i, seq=1 + i, path=path, user=user, size=size)
        e.attributes.update(attrs)
    return batch


@settings(max_examples=60, deadline=None)
@given(st.lists(events, min_size=1, max_size=8))
def test_verify_accepts_what_sign_signed_and_survives_the_wire(rows: list) -> None:
    batch = _batch(rows)
    digest = chain.sign_batch(batch, KEY)
    received = events_pb2.EventBatch.FromString(batch.SerializeToString())
    assert chain.verify_signature(received, PUB) == digest
    chain.check_shape(received)


@settings(max_examples=60, deadline=None)
@given(st.lists(events, min_size=1, max_size=4), st.data())
def test_any_flipped_bit_is_rejected_or_changes_nothing(rows: list, data: st.DataObject) -> None:
    """A flipped bit either gets the batch refused, or the batch still says exactly what was signed:
    protobuf reads some encodings the same (a bool sent as 3 is true), and what is verified and
    stored is the canonical form, so no altered content can pass."""
    batch = _batch(rows)
    chain.sign_batch(batch, KEY)
    wire = bytearray(batch.SerializeToString())
    index = data.draw(st.integers(0, len(wire) - 1))
    bit = data.draw(st.integers(0, 7))
    wire[index] ^= 1 << bit
    try:
        received = events_pb2.EventBatch.FromString(bytes(wire))
    except Exception:
        return  # not even parseable: refused before any check
    try:
        chain.check_shape(received)
        chain.verify_signature(received, PUB)
    except chain.BatchError:
        return
    assert chain.canonical_bytes(received) == chain.canonical_bytes(batch)
    assert received.signature == batch.signature


def test_a_bool_encoded_as_3_reads_as_true_and_signs_the_same() -> None:
    """The case hypothesis found: the wire changed, the meaning did not, and nothing else can."""
    batch = _batch([("agent.start", "/p", "u", 1, {"flag": True})])
    chain.sign_batch(batch, KEY)
    wire = batch.SerializeToString()
    entry = b"\n\x04flag\x12\x02\x20\x01"  # map entry: key "flag", Value{bool_value (field 4): varint 1}
    assert wire.count(entry) == 1
    altered = wire.replace(entry, entry[:-1] + b"\x03")
    received = events_pb2.EventBatch.FromString(altered)
    assert chain.verify_signature(received, PUB) == chain.batch_hash(batch)
    assert chain.canonical_bytes(received) == chain.canonical_bytes(batch)


def test_wrong_key_is_rejected() -> None:
    batch = ChainWriter("agt-1", Ed25519PrivateKey.generate()).next()
    with pytest.raises(chain.BadSignature):
        chain.verify_signature(batch, PUB)


def test_chain_continuity() -> None:
    writer = ChainWriter("agt-1", KEY)
    first, second, third = writer.next(), writer.next(), writer.next()
    chain.check_continues(first, None)
    head = chain.ChainHead(1, 3, chain.batch_hash(first))
    chain.check_continues(second, head)
    with pytest.raises(chain.ChainBroken, match="sequence gap"):
        chain.check_continues(third, head)  # second skipped
    forged = events_pb2.EventBatch()
    forged.CopyFrom(second)
    forged.prev_batch_hash = bytes(32)
    with pytest.raises(chain.ChainBroken, match="prev_batch_hash"):
        chain.check_continues(forged, head)
    with pytest.raises(chain.ChainBroken, match="must start at seq 1"):
        chain.check_continues(second, None)


def test_shape_checks() -> None:
    batch = ChainWriter("agt-1", KEY).next(3)
    batch.events[1].seq = 7
    with pytest.raises(chain.MalformedBatch, match="expected 2"):
        chain.check_shape(batch)
    empty = events_pb2.EventBatch(agent_id="a", epoch=1, first_seq=1, prev_batch_hash=bytes(32), signature=bytes(64))
    with pytest.raises(chain.MalformedBatch, match="no events"):
        chain.check_shape(empty)
    big = ChainWriter("agt-1", KEY).next(5)
    with pytest.raises(chain.MalformedBatch, match="more than 4"):
        chain.check_shape(big, max_events=4)
