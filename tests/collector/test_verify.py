"""verify on real SQLite files: a store built through the real ingest path and the tree-head signer,
then changed behind the collector's back with sqlite3. Each change must be named at its exact place."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from collector.storage import open_store
from collector.transparency import TreeHeadSigner, load_or_create_tree_key, load_tree_key, tree_public_key
from collector.verify import Finding, VerifyReport, verify_store

from tests.conftest import PerCall
from tests.collector.evidence_helpers import ingest_service, writers


@dataclass
class Built:
    data_dir: Path
    db: Path
    batch_rows: dict[tuple[str, int], int]  # (agent, first_seq) -> batches.row_id


@pytest.fixture
def built(tmp_path: Path) -> Iterator[Built]:
    """Two agents, 4 batches of 3 events each, interleaved; heads signed after 4 and after 8 batches."""
    data_dir = tmp_path / "collector"
    store = PerCall(open_store(data_dir))
    try:
        signer = TreeHeadSigner(store, load_or_create_tree_key(data_dir))
        ingest = ingest_service(store)
        a, b = writers(store, "agt-a", "agt-b")
        for round_ in range(4):
            ingest.ingest(a.next(3))
            ingest.ingest(b.next(3))
            if round_ in (1, 3):
                assert signer.sign_if_grown() is not None
        rows = {(r.batch.agent_id, r.batch.first_seq): r.row_id for r in store.batch_leaves(after_row_id=0, limit=100)}
    finally:
        store.close()
    yield Built(data_dir, data_dir / "collector.db", rows)


def _verify(built: Built) -> VerifyReport:
    store = open_store(built.data_dir)
    try:
        return verify_store(store, tree_public_key=tree_public_key(load_tree_key(built.data_dir)))
    finally:
        store.close()


def _sql(built: Built, *statements: tuple[str, tuple[object, ...]]) -> None:
    db = sqlite3.connect(built.db)
    with db:
        for sql, params in statements:
            db.execute(sql, params)
    db.close()


def _one(db: Path, sql: str, *params: object) -> tuple[object, ...]:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(sql, params).fetchone()
    finally:
        conn.close()
    assert row is not None
    return tuple(row)


def _has(report: VerifyReport, **expected: object) -> Finding:
    for f in report.findings:
        if all(getattr(f, k) == v for k, v in expected.items()):
            return f
    raise AssertionError(f"no finding {expected} in:\n{report.render()}")


def test_an_untouched_store_verifies(built: Built) -> None:
    report = _verify(built)
    assert report.ok, report.render()
    assert (report.batches, report.events, report.agents, report.tree_heads, report.tree_leaves) == (8, 24, 2, 2, 8)
    assert report.render().endswith("OK: the store is intact")


def test_a_changed_event_field_is_named(built: Built) -> None:
    row_id, seq = _one(built.db, "SELECT row_id, seq FROM events WHERE agent_id = 'agt-b' AND seq = 5")
    _sql(built, ("UPDATE events SET path = '/srv/finance/harmless.txt' WHERE row_id = ?", (row_id,)))
    report = _verify(built)
    f = _has(report, check="event.field", table="events", row_id=row_id, agent_id="agt-b", epoch=1, seq="5",
             column="path")
    assert "harmless.txt" in f.detail and "report-5.xlsx" in f.detail
    assert len(report.findings) == 1, report.render()


def test_a_flipped_attribute_byte_is_named(built: Built) -> None:
    row_id = _one(built.db, "SELECT row_id FROM events WHERE agent_id = 'agt-a' AND seq = 2")[0]
    _sql(built, ("UPDATE events SET attributes = '{\"x\": 1' WHERE row_id = ?", (row_id,)))
    _has(_verify(built), check="event.field", row_id=row_id, column="attributes")


def test_a_deleted_event_row_is_named(built: Built) -> None:
    _sql(built, ("DELETE FROM events WHERE agent_id = 'agt-a' AND seq = 7", ()))
    report = _verify(built)
    f = _has(report, check="event.missing", table="events", agent_id="agt-a", epoch=1, seq="7")
    assert f"batch row {built.batch_rows[('agt-a', 7)]}" in f.detail
    assert len(report.findings) == 1, report.render()


def test_a_deleted_batch_is_named(built: Built) -> None:
    victim = built.batch_rows[("agt-a", 4)]
    _sql(built, ("DELETE FROM batches WHERE row_id = ?", (victim,)))
    report = _verify(built)
    gap = _has(report, check="chain.gap", table="batches", agent_id="agt-a", epoch=1,
               row_id=built.batch_rows[("agt-a", 7)])
    assert "seq 4..6 are missing" in gap.detail
    _has(report, check="tree.batch_missing", table="batches", row_id=victim)
    for seq in ("4", "5", "6"):  # its events are still there, now without a signed batch
        _has(report, check="event.extra", agent_id="agt-a", seq=seq)


def test_a_deleted_last_batch_is_named_by_the_chain_head_and_the_tree(built: Built) -> None:
    victim = built.batch_rows[("agt-b", 10)]
    _sql(built, ("DELETE FROM batches WHERE row_id = ?", (victim,)), ("DELETE FROM events WHERE agent_id = 'agt-b' AND seq >= 10", ()))
    report = _verify(built)
    _has(report, check="chain.head", table="chain_heads", agent_id="agt-b")
    _has(report, check="tree.batch_missing", row_id=victim)


def test_an_inserted_forged_event_is_named(built: Built) -> None:
    _sql(built, ("INSERT INTO events (agent_id, epoch, seq, event_id, kind, time_ns, path, dest_path, size, sha256, "
                 "user_name, uid, pid, process, exe, attributes) VALUES ('agt-a', 1, 13, 'forged', 'file.read', 1, "
                 "'/srv/finance/planted.xlsx', '', -1, '', 'bob', 1001, 1, 'cat', '/usr/bin/cat', '{}')", ()))
    forged = _one(built.db, "SELECT row_id FROM events WHERE event_id = 'forged'")[0]
    report = _verify(built)
    f = _has(report, check="event.extra", table="events", row_id=forged, agent_id="agt-a", epoch=1, seq="13")
    assert "forged" in f.detail
    assert len(report.findings) == 1, report.render()


def _swap_batches(built: Built, first: int, second: int) -> None:
    _sql(built,
         ("UPDATE batches SET row_id = -1 WHERE row_id = ?", (first,)),
         ("UPDATE batches SET row_id = ? WHERE row_id = ?", (first, second)),
         ("UPDATE batches SET row_id = ? WHERE row_id = -1", (second,)))


def test_two_batches_of_one_agent_swapped_are_named(built: Built) -> None:
    first, second = built.batch_rows[("agt-a", 4)], built.batch_rows[("agt-a", 7)]
    _swap_batches(built, first, second)
    report = _verify(built)
    order = _has(report, check="chain.order", agent_id="agt-a", row_id=second, seq="4..6")
    assert f"batch row {first}" in order.detail and "reordered" in order.detail
    _has(report, check="tree.batch_changed", row_id=first, agent_id="agt-a", seq="7..9")
    _has(report, check="tree.batch_changed", row_id=second, agent_id="agt-a", seq="4..6")


def test_two_batches_of_different_agents_swapped_are_named_by_the_tree(built: Built) -> None:
    # Each agent's chain is still in order; only the signed leaf order can tell.
    first, second = built.batch_rows[("agt-a", 1)], built.batch_rows[("agt-b", 1)]
    _swap_batches(built, first, second)
    report = _verify(built)
    _has(report, check="tree.batch_changed", row_id=first, agent_id="agt-b", seq="1..3")
    _has(report, check="tree.batch_changed", row_id=second, agent_id="agt-a", seq="1..3")
    assert {f.check for f in report.findings} == {"tree.batch_changed"}, report.render()


def test_changed_canonical_bytes_are_named(built: Built) -> None:
    victim = built.batch_rows[("agt-b", 7)]
    canonical = _one(built.db, "SELECT canonical FROM batches WHERE row_id = ?", victim)[0]
    assert isinstance(canonical, bytes)
    changed = canonical.replace(b"report-8.xlsx", b"report-X.xlsx")
    assert changed != canonical
    _sql(built, ("UPDATE batches SET canonical = ? WHERE row_id = ?", (changed, victim)))
    report = _verify(built)
    _has(report, check="batch.signature", table="batches", row_id=victim, agent_id="agt-b", epoch=1, seq="7..9",
         column="signature")
    _has(report, check="batch.column", row_id=victim, column="batch_hash")
    _has(report, check="tree.batch_changed", row_id=victim)
    _has(report, check="chain.link", agent_id="agt-b", row_id=built.batch_rows[("agt-b", 10)])


def test_an_altered_tree_head_is_named(built: Built) -> None:
    _sql(built, ("UPDATE tree_heads SET root_hash = ? WHERE tree_size = 4", (b"\x07" * 32,)))
    report = _verify(built)
    _has(report, check="tree.head_signature", table="tree_heads", row_id=4)
    _has(report, check="tree.head_root", table="tree_heads", row_id=4)
    _has(report, check="tree.consistency", table="tree_heads", row_id=8)


def test_a_rewritten_leaf_log_is_named(built: Built) -> None:
    _sql(built, ("UPDATE tree_leaves SET leaf_hash = ? WHERE leaf_index = 5", (b"\x05" * 32,)))
    report = _verify(built)
    f = _has(report, check="tree.head_root", row_id=8)
    assert "leaves 4..7" in f.detail
    _has(report, check="tree.batch_changed", row_id=built.batch_rows[("agt-b", 7)])


def test_the_wrong_tree_key_fails_every_head(built: Built) -> None:
    store = open_store(built.data_dir)
    try:
        report = verify_store(store, tree_public_key=b"\x01" * 32)
    finally:
        store.close()
    assert {f.check for f in report.findings} == {"tree.head_signature"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True, timeout=120)


def test_cli_exits_0_on_a_clean_store_and_1_on_a_tampered_one(built: Built) -> None:
    clean = _cli("verify", "--data-dir", str(built.data_dir))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "OK: the store is intact" in clean.stdout
    pinned = tree_public_key(load_tree_key(built.data_dir)).hex()
    assert _cli("verify", "--data-dir", str(built.data_dir), "--tree-public-key", pinned).returncode == 0

    row_id = _one(built.db, "SELECT row_id FROM events WHERE agent_id = 'agt-a' AND seq = 3")[0]
    _sql(built, ("UPDATE events SET user_name = 'mallory' WHERE row_id = ?", (row_id,)))
    tampered = _cli("verify", "--data-dir", str(built.data_dir))
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert (f"FAIL event.field: table events, row {row_id}, agent agt-a, epoch 1, seq 3, column user_name"
            in tampered.stdout), tampered.stdout
    assert "TAMPERED: 1 finding(s)" in tampered.stdout


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    assert _cli("verify", "--data-dir", str(tmp_path / "empty")).returncode == 2
    assert _cli("verify", "--no-such-flag").returncode == 2
