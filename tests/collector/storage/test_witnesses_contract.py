"""The store contract for witnessed tree heads and the evidence bundle's reads, on every backend."""

from __future__ import annotations

from typing import Any

from collector.domain.evidence import SignedTreeHead, TreeLeaf
from collector.evidence.models import StoredCosignature
from collector.events.models import StoredBatch, StoredEvent


def _cosig(witness: str, size: int, root: bytes = b"r" * 32) -> StoredCosignature:
    return StoredCosignature(witness, b"k" * 32, size, root, 1_700_000_000 + size, bytes([size % 256]) * 64, 5)


def test_cosignatures_are_kept_once_per_witness_and_size(any_store: Any) -> None:
    assert any_store.add_cosignature(_cosig("auditor", 3)) is True
    assert any_store.add_cosignature(_cosig("auditor", 3, b"x" * 32)) is False  # the first stands
    assert any_store.add_cosignature(_cosig("council", 3)) is True
    assert any_store.add_cosignature(_cosig("auditor", 7)) is True
    every = any_store.cosignatures()
    assert [(c.witness, c.tree_size) for c in every] == [("auditor", 3), ("council", 3), ("auditor", 7)]
    assert every[0] == _cosig("auditor", 3)  # every field back as written
    assert [c.witness for c in any_store.cosignatures(tree_sizes=[3])] == ["auditor", "council"]
    assert any_store.cosignatures(tree_sizes=[]) == []
    assert any_store.latest_cosignature("auditor") == _cosig("auditor", 7)
    assert any_store.latest_cosignature("nobody") is None


def test_the_batch_of_an_event_its_leaf_and_heads(any_store: Any) -> None:
    for first in (1, 4):
        batch = StoredBatch("agt-1", 1, first, first + 2, bytes([first]) * 32, bytes(32), b"s" * 64, b"c", 7)
        events = [StoredEvent(agent_id="agt-1", epoch=1, seq=s, id=f"e{s}", kind="file.read", time_ns=s, attributes={})
                  for s in range(first, first + 3)]
        any_store.store_batch(batch, events, expected_head=None if first == 1 else any_store.chain_head("agt-1"))
    assert any_store.batch_of_event(agent_id="agt-1", epoch=1, seq=9) is None
    row, leaf = any_store.batch_of_event(agent_id="agt-1", epoch=1, seq=5)
    assert (row.batch.first_seq, row.batch.last_seq, leaf) == (4, 6, None)
    rows = any_store.batch_leaves(after_row_id=0, limit=10)
    head = SignedTreeHead(2, b"r" * 32, 9, b"k" * 32, b"s" * 64)
    any_store.add_tree_head(head, [TreeLeaf(0, rows[0].row_id, b"a" * 32), TreeLeaf(1, rows[1].row_id, b"b" * 32)],
                            previous_size=0)
    row, leaf = any_store.batch_of_event(agent_id="agt-1", epoch=1, seq=6)
    assert leaf == TreeLeaf(1, rows[1].row_id, b"b" * 32)
    assert any_store.tree_head_at(2) == head and any_store.tree_head_at(1) is None
    assert any_store.first_head_covering(1) == head and any_store.first_head_covering(2) is None


def test_agent_certificates_are_listed(any_store: Any) -> None:
    any_store.add_certificate(serial=11, agent_id="agt-1", not_before_ns=1, not_after_ns=2)
    any_store.add_certificate(serial=12, agent_id="agt-2", not_before_ns=1, not_after_ns=2)
    assert [c.serial for c in any_store.agent_certificates("agt-1")] == ["11"]
    assert any_store.agent_certificates("agt-3") == []
