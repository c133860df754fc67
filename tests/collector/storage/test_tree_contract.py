"""The store contract for tamper evidence: tree leaves, signed tree heads and raw rows, on every backend."""

from __future__ import annotations

import pytest

from shoumi.batch import ChainHead

from collector.domain.evidence import SignedTreeHead, TreeLeaf
from collector.events.models import StoredBatch, StoredEvent
from collector.storage import ChainConflict, SqlStore


def _store_chain(store: SqlStore, agent_id: str, batches: int) -> None:
    head = None
    for i in range(batches):
        first = i * 2 + 1
        digest = bytes([i + 1]) * 32
        batch = StoredBatch(agent_id, 1, first, first + 1, digest, head.last_hash if head else bytes(32),
                            bytes([i]) * 64, b"canonical-" + bytes([i]), 7)
        events = [StoredEvent(agent_id=agent_id, epoch=1, seq=s, id=f"{agent_id}-{s}", kind="file.read",
                              time_ns=1000 + s, path=f"/s/{s}", attributes={"match_share": 0.5})
                  for s in (first, first + 1)]
        store.store_batch(batch, events, expected_head=head)
        head = ChainHead(1, first + 1, digest)


def _head(size: int, root: bytes = b"r" * 32, at: int = 10) -> SignedTreeHead:
    return SignedTreeHead(size, root, at, b"k" * 32, b"s" * 64)


def test_batches_come_back_exactly_as_stored_with_their_rows(any_store: SqlStore) -> None:
    _store_chain(any_store, "agt-1", 3)
    rows = any_store.batch_leaves(after_row_id=0, limit=10)
    assert [r.batch.first_seq for r in rows] == [1, 3, 5]
    assert rows[1].batch.canonical == b"canonical-\x01" and rows[1].batch.signature == b"\x01" * 64
    assert [r.row_id for r in rows] == sorted(r.row_id for r in rows)
    after_first = any_store.batch_leaves(after_row_id=rows[0].row_id, limit=1)
    assert [r.batch.first_seq for r in after_first] == [3]


def test_event_rows_carry_every_column_as_stored(any_store: SqlStore) -> None:
    _store_chain(any_store, "agt-1", 2)
    rows = any_store.event_rows(after_row_id=0, limit=10)
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    first = rows[0]
    assert (first.agent_id, first.epoch, first.event_id, first.kind, first.time_ns, first.path) == (
        "agt-1", 1, "agt-1-1", "file.read", 1001, "/s/1")
    assert (first.size, first.uid, first.pid, first.user_name, first.dest_path) == (-1, -1, 0, "", "")
    assert first.attributes == '{"match_share": 0.5}'
    assert [r.seq for r in any_store.event_rows(after_row_id=rows[1].row_id, limit=1)] == [3]


def test_tree_heads_and_leaves_are_appended_together(any_store: SqlStore) -> None:
    assert any_store.latest_tree_head() is None
    assert any_store.list_tree_heads() == []
    _store_chain(any_store, "agt-1", 3)
    outside = any_store.batches_outside_tree(limit=10)
    assert len(outside) == 3
    leaves = [TreeLeaf(i, r.row_id, bytes([i]) * 32) for i, r in enumerate(outside[:2])]
    any_store.add_tree_head(_head(2), leaves, previous_size=0)
    assert any_store.latest_tree_head() == _head(2)
    assert any_store.list_tree_leaves(start=0, limit=10) == leaves
    assert any_store.list_tree_leaves(start=1, limit=10) == leaves[1:]
    assert [r.row_id for r in any_store.batches_outside_tree(limit=10)] == [outside[2].row_id]

    third = TreeLeaf(2, outside[2].row_id, b"\x02" * 32)
    any_store.add_tree_head(_head(3, b"q" * 32, 11), [third], previous_size=2)
    assert any_store.batches_outside_tree(limit=10) == []
    assert [h.tree_size for h in any_store.list_tree_heads()] == [2, 3]
    assert any_store.latest_tree_head() == _head(3, b"q" * 32, 11)


def test_a_stale_or_clashing_signer_stores_nothing(any_store: SqlStore) -> None:
    _store_chain(any_store, "agt-1", 2)
    rows = any_store.batches_outside_tree(limit=10)
    any_store.add_tree_head(_head(1), [TreeLeaf(0, rows[0].row_id, b"\x00" * 32)], previous_size=0)
    with pytest.raises(ChainConflict):  # it thinks the tree is still empty
        any_store.add_tree_head(_head(1), [TreeLeaf(0, rows[1].row_id, b"\x01" * 32)], previous_size=0)
    with pytest.raises(ChainConflict):  # the same batch cannot become a second leaf
        any_store.add_tree_head(_head(2), [TreeLeaf(1, rows[0].row_id, b"\x01" * 32)], previous_size=1)
    assert [h.tree_size for h in any_store.list_tree_heads()] == [1]
    assert len(any_store.list_tree_leaves(start=0, limit=10)) == 1
