"""The store contract for verify's paged reads: one agent's batches and events in chain order (with
their tree leaves), light rows in row order, leaves without a batch; on every backend."""

from __future__ import annotations

from typing import Any

from shoumi.batch import ChainHead

from collector.domain.evidence import SignedTreeHead, TreeLeaf
from collector.events.models import StoredBatch, StoredEvent


def _store(store: Any, agent_id: str, epoch: int, first: int, n: int, head: ChainHead | None) -> ChainHead:
    last = first + n - 1
    digest = bytes([first % 256, epoch]) * 16
    batch = StoredBatch(agent_id, epoch, first, last, digest, head.last_hash if head and head.epoch == epoch else bytes(32),
                        b"s" * 64, f"canonical-{agent_id}-{epoch}-{first}".encode(), 7)
    events = [StoredEvent(agent_id=agent_id, epoch=epoch, seq=s, id=f"{agent_id}-{epoch}-{s}", kind="file.read",
                          time_ns=1000 + s, path=f"/s/{s}", attributes={"k": s}) for s in range(first, last + 1)]
    store.store_batch(batch, events, expected_head=head)
    return ChainHead(epoch, last, digest)


def _interleaved(store: Any) -> None:
    """agt-b and agt-a interleaved in row order; agt-a starts a second epoch."""
    a = b = None
    b = _store(store, "agt-b", 1, 1, 2, b)
    a = _store(store, "agt-a", 1, 1, 3, a)
    b = _store(store, "agt-b", 1, 3, 2, b)
    a = _store(store, "agt-a", 1, 4, 1, a)
    a = _store(store, "agt-a", 2, 1, 2, a)
    b = _store(store, "agt-b", 1, 5, 1, b)


def test_stored_agent_ids_are_every_agent_a_row_names_sorted(any_store: Any) -> None:
    assert list(any_store.stored_agent_ids()) == []
    _interleaved(any_store)
    assert list(any_store.stored_agent_ids()) == ["agt-a", "agt-b"]


def test_one_agents_batches_come_in_chain_order_in_keyset_pages_with_their_leaves(any_store: Any) -> None:
    _interleaved(any_store)
    everything = any_store.chain_batches(agent_id="agt-a", after=None, limit=100)
    assert [(r.batch.epoch, r.batch.first_seq, r.batch.last_seq) for r, _ in everything] == [(1, 1, 3), (1, 4, 4), (2, 1, 2)]
    assert [leaf for _, leaf in everything] == [None, None, None]
    assert everything[0][0].batch.canonical == b"canonical-agt-a-1-1" and everything[0][0].pruned_at_ns is None
    assert everything[0][0] == any_store.batch_leaves(after_row_id=everything[0][0].row_id - 1, limit=1)[0]

    pages, after = [], None
    while True:  # pages of one, each after the (epoch, first_seq, row_id) of the last
        page = any_store.chain_batches(agent_id="agt-a", after=after, limit=1)
        if not page:
            break
        pages.append(page[0][0].row_id)
        r = page[0][0]
        after = (r.batch.epoch, r.batch.first_seq, r.row_id)
    assert pages == [r.row_id for r, _ in everything]

    # leaves are joined by batch row
    rows = [r for r, _ in everything]
    leaves = [TreeLeaf(0, rows[1].row_id, b"\x01" * 32), TreeLeaf(1, rows[0].row_id, b"\x02" * 32)]
    any_store.add_tree_head(SignedTreeHead(2, b"r" * 32, 1, b"k" * 32, b"s" * 64), leaves, previous_size=0)
    assert [leaf for _, leaf in any_store.chain_batches(agent_id="agt-a", after=None, limit=100)] == [
        leaves[1], leaves[0], None]
    assert [r.batch.first_seq for r, _ in any_store.chain_batches(agent_id="agt-b", after=(1, 3, 0), limit=100)] == [3, 5]


def test_one_agents_events_come_in_chain_order_in_keyset_pages_every_column_as_stored(any_store: Any) -> None:
    _interleaved(any_store)
    rows = any_store.chain_event_rows(agent_id="agt-a", after=None, limit=100)
    assert [(r.epoch, r.seq) for r in rows] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2)]
    by_row = {r.row_id: r for r in any_store.event_rows(after_row_id=0, limit=100)}
    assert all(by_row[r.row_id] == r for r in rows)  # the same as the row-order read
    assert rows[0].attributes == '{"k": 1}' and rows[0].event_id == "agt-a-1-1"
    second = any_store.chain_event_rows(agent_id="agt-a", after=(rows[3].epoch, rows[3].seq, rows[3].row_id), limit=1)
    assert [(r.epoch, r.seq) for r in second] == [(2, 1)]
    assert [r.seq for r in any_store.chain_event_rows(agent_id="agt-b", after=(1, 2, 10**9), limit=2)] == [3, 4]
    assert any_store.chain_event_rows(agent_id="nobody", after=None, limit=10) == []


def test_positions_come_in_row_order_and_leaves_without_batch_are_found(any_store: Any) -> None:
    _interleaved(any_store)
    batches = any_store.batch_positions(after_row_id=0, limit=100)
    assert [(a, e, f, last) for _r, a, e, f, last in batches] == [
        ("agt-b", 1, 1, 2), ("agt-a", 1, 1, 3), ("agt-b", 1, 3, 4), ("agt-a", 1, 4, 4), ("agt-a", 2, 1, 2),
        ("agt-b", 1, 5, 5)]
    assert [r for r, *_ in batches] == sorted(r for r, *_ in batches)
    assert any_store.batch_positions(after_row_id=batches[1][0], limit=1) == [tuple(batches[2])]
    events = any_store.event_positions(after_row_id=0, limit=100)
    assert [(a, e, s) for _r, a, e, s in events][:5] == [
        ("agt-b", 1, 1), ("agt-b", 1, 2), ("agt-a", 1, 1), ("agt-a", 1, 2), ("agt-a", 1, 3)]
    assert len(events) == 11 and [r for r, *_ in events] == sorted(r for r, *_ in events)
    assert [tuple(x) for x in any_store.event_positions(after_row_id=events[4][0], limit=2)] == [tuple(x) for x in events[5:7]]

    assert any_store.leaves_without_batch(after_index=-1, limit=10) == []
    gone = TreeLeaf(1, 10**9, b"\x09" * 32)
    leaves = [TreeLeaf(0, batches[0][0], b"\x01" * 32), gone, TreeLeaf(2, batches[1][0], b"\x02" * 32)]
    any_store.add_tree_head(SignedTreeHead(3, b"r" * 32, 1, b"k" * 32, b"s" * 64), leaves, previous_size=0)
    assert any_store.leaves_without_batch(after_index=-1, limit=10) == [gone]
    assert any_store.leaves_without_batch(after_index=1, limit=10) == []
