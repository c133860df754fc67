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
from tests.collector.evidence_helpers import run_sql, verify_dir, ingest_service, writers


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
    return verify_dir(built.data_dir)


def _sql(built: Built, *statements: tuple[str, tuple[object, ...]]) -> None:
    run_sql(built.db, *statements)


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


# --- the walk in (agent, epoch, seq) order, in parallel, in bounded memory -------------------------

def _verify_jobs(built: Built, jobs: int) -> VerifyReport:
    store = open_store(built.data_dir)
    try:
        return verify_store(store, tree_public_key=tree_public_key(load_tree_key(built.data_dir)), jobs=jobs,
                            location=built.data_dir)
    finally:
        store.close()


def test_two_event_rows_of_one_agent_swapped_are_named_by_row_order(built: Built) -> None:
    # Each row still says what the signed batch says; only the row order is wrong.
    r4 = _one(built.db, "SELECT row_id FROM events WHERE agent_id = 'agt-a' AND seq = 4")[0]
    r5 = _one(built.db, "SELECT row_id FROM events WHERE agent_id = 'agt-a' AND seq = 5")[0]
    _sql(built, ("UPDATE events SET row_id = -1 WHERE row_id = ?", (r4,)),
         ("UPDATE events SET row_id = ? WHERE row_id = ?", (r4, r5)),
         ("UPDATE events SET row_id = ? WHERE row_id = -1", (r5,)))
    for jobs in (1, 2):
        report = _verify_jobs(built, jobs)
        f = _has(report, check="event.order", table="events", row_id=r5, agent_id="agt-a", epoch=1, seq="4")
        assert f"stored after events row {r4} (epoch 1 seq 5)" in f.detail
        assert [x.check for x in report.findings] == ["event.order"], report.render()


def test_the_report_is_the_same_whatever_the_number_of_jobs(built: Built) -> None:
    a5 = _one(built.db, "SELECT row_id FROM events WHERE agent_id = 'agt-a' AND seq = 5")[0]
    _sql(built,
         ("UPDATE events SET path = '/tmp/x' WHERE row_id = ?", (a5,)),
         ("DELETE FROM events WHERE agent_id = 'agt-b' AND seq = 2", ()),
         ("DELETE FROM batches WHERE row_id = ?", (built.batch_rows[("agt-b", 7)],)),
         ("INSERT INTO events (agent_id, epoch, seq, event_id, kind, time_ns, path, dest_path, size, sha256, user_name, "
          "uid, pid, process, exe, attributes) VALUES ('agt-c', 1, 1, 'x', 'file.read', 1, '/p', '', 1, '', 'eve', 1, 1, "
          "'cat', '/usr/bin/cat', '{}')", ()))
    _swap_batches(built, built.batch_rows[("agt-a", 4)], built.batch_rows[("agt-a", 7)])
    one, two, three = (_verify_jobs(built, jobs) for jobs in (1, 2, 3))
    assert one.findings == two.findings == three.findings
    assert one.render() == two.render() == three.render()
    checks = {f.check for f in one.findings}
    assert {"event.field", "event.missing", "chain.gap", "tree.batch_missing", "event.extra", "chain.order",
            "tree.batch_changed"} <= checks, one.render()


def test_a_store_of_many_agents_verifies_in_parallel_on_every_backend(any_store: object) -> None:
    from tests.collector.evidence_helpers import ingest_service, writers
    from collector.transparency import TreeHeadSigner
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    signer = TreeHeadSigner(any_store, key)
    ingest = ingest_service(any_store)  # type: ignore[arg-type]
    ws = writers(any_store, *(f"agt-{i:02d}" for i in range(7)))  # type: ignore[arg-type]
    for round_ in range(3):
        for w in ws:
            ingest.ingest(w.next(2 + round_))
        assert signer.sign_if_grown() is not None
    public = key.public_key().public_bytes_raw()
    report = verify_store(any_store, tree_public_key=public)  # type: ignore[arg-type]
    assert report.ok, report.render()
    assert (report.agents, report.batches, report.events, report.tree_heads, report.tree_leaves) == (7, 21, 63, 3, 21)
    inner = any_store.inner  # type: ignore[attr-defined]
    if hasattr(inner, "engine"):  # SQL: workers open the same database by its URL
        url = inner.engine.url.render_as_string(hide_password=False)
        parallel = verify_store(any_store, tree_public_key=public, jobs=3, location=url)  # type: ignore[arg-type]
        assert parallel == report


def test_cli_jobs_give_the_same_output(built: Built) -> None:
    row_id = _one(built.db, "SELECT row_id FROM events WHERE agent_id = 'agt-b' AND seq = 8")[0]
    _sql(built, ("UPDATE events SET size = 1 WHERE row_id = ?", (row_id,)))
    outs = [_cli("verify", "--data-dir", str(built.data_dir), "--jobs", jobs) for jobs in ("1", "2")]
    assert [o.returncode for o in outs] == [1, 1], outs[0].stderr + outs[1].stderr
    assert outs[0].stdout == outs[1].stdout
    assert f"FAIL event.field: table events, row {row_id}, agent agt-b, epoch 1, seq 8, column size" in outs[0].stdout
    assert _cli("verify", "--data-dir", str(built.data_dir), "--jobs", "0").returncode == 2


_MEASURE = r"""
import sys, tracemalloc
from collector.storage import open_store
from collector.transparency import load_tree_key, tree_public_key
from collector.verify import verify_store

def peak(data_dir):
    store = open_store(data_dir)
    try:
        key = tree_public_key(load_tree_key(data_dir))
        verify_store(store, tree_public_key=key)  # warm: imports, statement caches
        tracemalloc.start()
        report = verify_store(store, tree_public_key=key)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        store.close()
    assert report.ok, report.render()
    return report.events, peak

for d in sys.argv[1:]:
    print(*peak(d))
"""


def _build_many(data_dir: Path, events: int, per_batch: int) -> None:
    store = PerCall(open_store(data_dir))
    try:
        signer = TreeHeadSigner(store, load_or_create_tree_key(data_dir))
        ingest = ingest_service(store)
        a, b = writers(store, "agt-a", "agt-b")
        for i in range(events // per_batch):
            ingest.ingest((a if i % 2 else b).next(per_batch))
            if i % 40 == 39:
                signer.sign_if_grown()
        signer.sign_if_grown()
    finally:
        store.close()


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_events(tmp_path: Path) -> None:
    """The Python memory verify holds at its peak (tracemalloc, in a fresh process: exact, and blind to
    the allocator and the machine's load) hardly differs between 4,000 and 20,000 events in batches of
    25: a page of batches and a page of events, not a digest per event. The old verifier's peak grew
    by 4.6 MB here (290 bytes an event); this one's by about 0.4 MB, pages of leaves and row positions
    that are not full yet at 160 and 800 batches."""
    small, large = tmp_path / "small", tmp_path / "large"
    _build_many(small, 4_000, 25)
    _build_many(large, 20_000, 25)
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(small), str(large)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    (n_small, peak_small), (n_large, peak_large) = [tuple(map(int, line.split())) for line in out.stdout.splitlines()]
    assert (n_small, n_large) == (4_000, 20_000)
    assert peak_large - peak_small < 1_500_000, (peak_small, peak_large)  # < 94 bytes an event; the old one: 290


def test_retention_findings_are_merged_the_same_across_jobs(tmp_path: Path) -> None:
    """Pruned batches of two agents are counted per worker; the counts against the runs, the notes
    and the findings come out the same with one job as with two."""
    from collector.ingest.service import IngestService
    from collector.retention.service import DAY_NS, prune

    data_dir = tmp_path / "collector"
    store = PerCall(open_store(data_dir))
    clock = [0]
    try:
        signer = TreeHeadSigner(store, load_or_create_tree_key(data_dir), clock=lambda: clock[0])
        ingest = IngestService(store, clock=lambda: clock[0], max_clock_skew_ns=2**62)
        a, b = writers(store, "agt-a", "agt-b")
        for round_ in range(4):
            clock[0] = (round_ + 1) * DAY_NS
            ingest.ingest(a.next(3))
            ingest.ingest(b.next(3))
        assert signer.sign_if_grown() is not None
        assert sum(r.batches for r in prune(store=store, retention_days=7.5, now_ns=10 * DAY_NS)) == 4
        rows = {(r.batch.agent_id, r.batch.first_seq): r.row_id for r in store.batch_leaves(after_row_id=0, limit=100)}
    finally:
        store.close()
    built = Built(data_dir, data_dir / "collector.db", rows)
    clean = _verify_jobs(built, 2)
    assert clean.ok and clean.pruned_batches == 4 and clean.retention_runs == [1], clean.render()
    assert clean == _verify_jobs(built, 1)
    _sql(built,
         ("UPDATE batches SET canonical = ?, pruned_at_ns = ? WHERE row_id = ?", (b"", 10 * DAY_NS, rows[("agt-b", 10)])),
         ("DELETE FROM events WHERE agent_id = 'agt-b' AND seq BETWEEN 10 AND 12", ()),
         ("INSERT INTO events (agent_id, epoch, seq, event_id, kind, time_ns, path, dest_path, size, sha256, user_name, "
          "uid, pid, process, exe, attributes) VALUES ('agt-a', 1, 2, 'back', 'file.read', 1, '/p', '', 1, '', 'eve', 1, "
          "1, 'cat', '/usr/bin/cat', '{}')", ()))
    one, two = _verify_jobs(built, 1), _verify_jobs(built, 2)
    assert one == two
    _has(one, check="retention.cutoff", row_id=rows[("agt-b", 10)])
    _has(one, check="retention.count", table="retention_runs", row_id=1)  # 5 marked at the run's time, 4 recorded
    _has(one, check="retention.event_present", agent_id="agt-a", seq="2")
