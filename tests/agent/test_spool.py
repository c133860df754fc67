"""The durable spool on a real SQLite file: sequence, seal, chain, ack, and survival across reopen."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi import batch as chain
from shoumi.batch import batch_hash

from agent.core.events import FileEvent
from agent.spool import Spool


def _events(n: int) -> list[FileEvent]:
    return [FileEvent(kind="file.read", time_unix_ns=time.time_ns(), path=f"/s/{i}", user="alice",
                      attributes={"source_paths": ["/a"], "match_share": 0.5}) for i in range(n)]


def test_seal_builds_a_verifiable_chain(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    spool = Spool(tmp_path / "spool.db", agent_id="agt-1")
    assert spool.append(_events(7)) == 7
    first = spool.seal(key=key, max_events=4)
    second = spool.seal(key=key, max_events=4)
    assert spool.seal(key=key, max_events=4) is None
    assert first is not None and second is not None
    assert [e.seq for e in first.events] == [1, 2, 3, 4] and [e.seq for e in second.events] == [5, 6, 7]
    pub = key.public_key().public_bytes_raw()
    chain.check_shape(first)
    chain.check_continues(first, None)
    h1 = chain.verify_signature(first, pub)
    chain.check_continues(second, chain.ChainHead(1, 4, h1))
    chain.verify_signature(second, pub)
    assert first.events[0].attributes["source_paths"] == ["/a"]


def test_only_ack_deletes_and_state_survives_reopen(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    spool = Spool(tmp_path / "spool.db", agent_id="agt-1")
    spool.append(_events(10))
    sealed = [spool.seal(key=key, max_events=3) for _ in range(2)]
    spool.close()
    again = Spool(tmp_path / "spool.db", agent_id="agt-1")
    pending = again.pending()
    # the same messages (byte order of map entries is not fixed by protobuf; what is signed is deterministic)
    assert pending == [b for b in sealed if b]
    assert [batch_hash(b) for b in pending] == [batch_hash(b) for b in sealed if b]
    assert again.stats().unsealed == 4
    assert again.ack(epoch=1, acked_seq=3) == 1
    assert [b.first_seq for b in again.pending()] == [4]
    assert again.ack(epoch=2, acked_seq=6) == 0  # another epoch's Ack deletes nothing
    third = again.seal(key=key, max_events=100)
    assert third is not None and third.first_seq == 7
    assert third.prev_batch_hash == chain.batch_hash(sealed[1])  # the chain continues across reopen
    assert again.pending(after_seq=6)[0].first_seq == 7
    again.append(_events(1))
    assert again.seal(key=key, max_events=100).first_seq == 11


def test_at_the_cap_new_events_are_refused_counted_and_reported(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    spool = Spool(tmp_path / "spool.db", agent_id="agt-1", cap_bytes=4000)
    offered, accepted = 0, 0
    for _ in range(20):
        batch = _events(7)
        offered += len(batch)
        accepted += spool.append(batch)
    refused = offered - accepted
    assert accepted > 0 and refused > 0
    assert spool.refused() == refused and spool.used_bytes() <= 4000
    kept = spool.seal(key=key, max_events=1000)
    assert kept is not None and [e.path for e in kept.events] == [f"/s/{i % 7}" for i in range(accepted)]  # oldest kept
    spool.ack(epoch=1, acked_seq=kept.events[-1].seq)  # the collector took them: room again
    assert spool.used_bytes() == 0
    assert spool.append(_events(2)) == 2
    notice = spool.seal(key=key, max_events=1000)
    assert notice is not None and notice.events[0].kind == "agent.spool_full"
    assert notice.events[0].attributes["refused"] == refused
    assert [e.kind for e in notice.events[1:]] == ["file.read", "file.read"]
    assert spool.refused() == 0


def test_refusal_count_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", agent_id="agt-1", cap_bytes=600)
    taken = spool.append(_events(10))
    spool.close()
    again = Spool(tmp_path / "spool.db", agent_id="agt-1", cap_bytes=600)
    assert again.refused() == 10 - taken
