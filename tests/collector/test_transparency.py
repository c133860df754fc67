"""The tree-head signer on a real SQLite store: its key file, its heads, and its refusal to sign over a rewritten log."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from collector.domain.evidence import batch_leaf_hash, tree_head_signature_ok
from collector.domain.merkle import root_hash
from collector.storage import SqlStore
from collector.transparency import (
    TREE_KEY_FILE,
    TreeHeadSigner,
    TreeInconsistent,
    TreeKeyError,
    load_or_create_tree_key,
    load_tree_key,
    tree_public_key,
)

from tests.collector.evidence_helpers import ingest_service, writers


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    key = load_or_create_tree_key(tmp_path)
    path = tmp_path / TREE_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tree_public_key(load_or_create_tree_key(tmp_path)) == tree_public_key(key)
    assert [p.name for p in tmp_path.iterdir()] == [TREE_KEY_FILE]  # no temporary file left behind
    path.chmod(0o644)
    with pytest.raises(TreeKeyError, match="chmod 600"):
        load_tree_key(tmp_path)
    with pytest.raises(TreeKeyError):
        load_tree_key(tmp_path / "nowhere")


def test_heads_cover_every_stored_batch_in_order(sqlite_store: SqlStore, tmp_path: Path) -> None:
    key = load_or_create_tree_key(tmp_path / "keys")
    signer = TreeHeadSigner(sqlite_store, key, clock=lambda: 5)
    assert signer.sign_if_grown() is None
    ingest = ingest_service(sqlite_store)
    a, b = writers(sqlite_store, "agt-a", "agt-b")
    for _ in range(3):
        ingest.ingest(a.next(2))
        ingest.ingest(b.next(1))
    first = signer.sign_if_grown()
    assert first is not None and first.tree_size == 6
    assert signer.sign_if_grown() is None  # nothing new
    ingest.ingest(a.next(2))
    second = signer.sign_if_grown()
    assert second is not None and second.tree_size == 7 and second.timestamp_ns == 5
    batches = sqlite_store.batch_leaves(after_row_id=0, limit=100)
    expected = [batch_leaf_hash(r.batch.canonical, r.batch.signature) for r in batches]
    assert second.root_hash == root_hash(expected)
    assert first.root_hash == root_hash(expected[:6])
    assert tree_head_signature_ok(second, tree_public_key(key))
    # A second signer (another collector process) continues the same tree.
    again = TreeHeadSigner(sqlite_store, key)
    ingest.ingest(b.next(1))
    third = again.sign_if_grown()
    assert third is not None and third.tree_size == 8


def test_signer_refuses_to_extend_a_rewritten_log(sqlite_store: SqlStore, tmp_path: Path) -> None:
    signer = TreeHeadSigner(sqlite_store, load_or_create_tree_key(tmp_path / "keys"))
    ingest = ingest_service(sqlite_store)
    [a] = writers(sqlite_store, "agt-a")
    ingest.ingest(a.next(2))
    ingest.ingest(a.next(2))
    assert signer.sign_if_grown() is not None
    ingest.ingest(a.next(2))
    db = sqlite3.connect(tmp_path / "collector" / "collector.db")
    with db:
        db.execute("UPDATE tree_leaves SET leaf_hash = ? WHERE leaf_index = 0", (b"\x00" * 32,))
    db.close()
    with pytest.raises(TreeInconsistent, match="does not reproduce"):
        TreeHeadSigner(sqlite_store, signer.key).sign_if_grown()
