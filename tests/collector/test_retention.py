"""Retention: events past their age are deleted batch by batch unless a legal hold covers them, and
verify still checks the store afterwards (and still names tampering).

The first part runs on every backend (memory, SQLite, PostgreSQL) through the real ingest path and
tree-head signer, with a controlled receipt clock; the second on real SQLite files, changed behind
the collector's back with sqlite3 as in test_verify.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.batch import sign_batch
from shoumi.v1 import events_pb2

from collector.domain.evidence import BatchRow
from collector.ingest.service import IngestService
from collector.retention.models import LegalHold
from collector.retention.service import DAY_NS, place_hold, prune, release_hold
from collector.storage import open_store
from collector.transparency import TreeHeadSigner, load_or_create_tree_key
from collector.verify import Finding, VerifyReport

from tests.conftest import ChainWriter, PerCall, make_event
from tests.collector.evidence_helpers import run_sql, verify_dir, writers

NOW = 100 * DAY_NS  # every prune below runs "now", with a retention of 30 days: cutoff at day 70
RETENTION_DAYS = 30
OLD, NEW = 10.0, 90.0  # receipt days: past the retention, and within it


class World:
    """Two enrolled agents, the real ingest path with a settable receipt clock, and a tree signer."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.now = 0
        self.ingest = IngestService(store, clock=lambda: self.now, max_clock_skew_ns=2**62)
        self.signer = TreeHeadSigner(store, Ed25519PrivateKey.generate(), clock=lambda: self.now)
        self.a, self.b = writers(store, "agt-a", "agt-b")

    def put(self, w: ChainWriter, *, day: float, n: int = 3, users: tuple[str, ...] | None = None,
            time_ns: int | None = None) -> tuple[str, int]:
        """Ingests one batch received on ``day``; returns its (agent, first_seq)."""
        self.now = int(day * DAY_NS)
        first = w.next_seq
        event_time = time_ns or self.now
        if users is None:
            self.ingest.ingest(w.next(n, time_ns=event_time))
        else:  # one batch, events of several users
            batch = events_pb2.EventBatch(agent_id=w.agent_id, epoch=w.epoch, first_seq=first,
                                          prev_batch_hash=w.last_hash, created_unix_ns=self.now)
            for i, user in enumerate(users):
                batch.events.append(make_event(first + i, user=user, time_ns=event_time))
            w.last_hash = sign_batch(batch, w.key)
            w.next_seq += len(users)
            self.ingest.ingest(batch)
        return (w.agent_id, first)

    def sign(self) -> None:
        assert self.signer.sign_if_grown() is not None

    def rows(self) -> dict[tuple[str, int], BatchRow]:
        return {(r.batch.agent_id, r.batch.first_seq): r for r in self.store.batch_leaves(after_row_id=0, limit=1000)}

    def pruned(self) -> set[tuple[str, int]]:
        return {k for k, r in self.rows().items() if r.pruned_at_ns is not None}

    def event_seqs(self, agent_id: str) -> list[int]:
        return [r.seq for r in self.store.event_rows(after_row_id=0, limit=10_000) if r.agent_id == agent_id]

    def hold(self, **fields: Any) -> LegalHold:
        hold = LegalHold(reason=fields.pop("reason", "case 2026-17"), created_by="counsel", created_at_ns=self.now,
                         since_ns=fields.pop("since_ns", 0), until_ns=fields.pop("until_ns", 2**62), **fields)
        with self.store.transaction() as tx:
            return place_hold(tx=tx, hold=hold)

    def prune(self, chunk: int = 500) -> Any:
        return prune(store=self.store, retention_days=RETENTION_DAYS, now_ns=NOW, chunk=chunk)


@pytest.fixture
def world(any_store: Any) -> World:
    return World(any_store)


def test_events_past_the_retention_are_deleted_batch_by_batch(world: World) -> None:
    old = [world.put(world.a, day=OLD), world.put(world.b, day=OLD), world.put(world.a, day=OLD + 1)]
    new = [world.put(world.a, day=NEW), world.put(world.b, day=NEW)]
    world.sign()
    before = world.rows()

    [run] = world.prune()

    assert (run.batches, run.events, run.held_batches, run.before_ns) == (3, 9, 0, NOW - RETENTION_DAYS * DAY_NS)
    assert world.pruned() == set(old)
    after = world.rows()
    for k in old:  # the personal data is gone; hashes, signature, receipt time and row are kept
        assert after[k].batch.canonical == b"" and after[k].pruned_at_ns == NOW
        kept = before[k].batch
        assert (after[k].row_id, after[k].batch.batch_hash, after[k].batch.prev_hash, after[k].batch.signature,
                after[k].batch.received_at_ns) == (before[k].row_id, kept.batch_hash, kept.prev_hash, kept.signature,
                                                   kept.received_at_ns)
    for k in new:
        assert after[k] == before[k]
    assert world.event_seqs("agt-a") == [7, 8, 9] and world.event_seqs("agt-b") == [4, 5, 6]
    assert world.store.count_events() == 6
    assert [(r.batches, r.events) for r in world.store.list_retention_runs()] == [(3, 9)]
    # a second run finds nothing more to do
    [again] = world.prune()
    assert (again.batches, again.events, again.held_batches) == (0, 0, 0)


@pytest.mark.parametrize("hold, kept", [
    # by user: every batch with one of bob's events, even a batch mostly of others
    (dict(user="bob"), {("agt-a", 4), ("agt-b", 1)}),
    # by agent, within a time range: only agt-b's early batch
    (dict(agent_id="agt-b", since_ns=1_000, until_ns=1_999), {("agt-b", 1)}),
    # by user and time range: alice's events at time 3000 only
    (dict(user="alice", since_ns=2_500, until_ns=3_500), {("agt-a", 7)}),
], ids=["user", "agent-and-time", "user-and-time"])
def test_a_legal_hold_keeps_every_batch_holding_a_covered_event(world: World, hold: dict[str, Any],
                                                                kept: set[tuple[str, int]]) -> None:
    batches = {
        world.put(world.a, day=OLD, time_ns=1_000),  # alice
        world.put(world.a, day=OLD, users=("alice", "bob", "alice"), time_ns=2_000),
        world.put(world.a, day=OLD, time_ns=3_000),  # alice
        world.put(world.b, day=OLD, users=("bob", "carol"), time_ns=1_500),
        world.put(world.b, day=OLD, users=("carol",), time_ns=4_000),
    }
    world.sign()
    world.hold(**hold)

    runs = world.prune()

    assert world.pruned() == batches - kept
    assert sum(r.held_batches for r in runs) == len(kept)
    rows = world.rows()
    for agent_id, first in kept:  # held whole: signed bytes and every event, of any user
        row = rows[(agent_id, first)]
        assert row.batch.canonical and row.pruned_at_ns is None
        assert set(range(row.batch.first_seq, row.batch.last_seq + 1)) <= set(world.event_seqs(agent_id))


def test_a_released_hold_lets_its_batches_go_at_the_next_run(world: World) -> None:
    held = world.put(world.a, day=OLD, users=("bob",))
    free = world.put(world.a, day=OLD, users=("alice",))
    world.sign()
    hold = world.hold(user="bob")
    [first] = world.prune()
    assert (first.batches, first.held_batches) == (1, 1) and world.pruned() == {free}

    with world.store.transaction() as tx:
        assert release_hold(tx=tx, hold_id=hold.id, actor="counsel", now_ns=NOW) is True
    assert world.store.list_legal_holds() == []
    [second] = world.prune()
    assert (second.batches, second.events, second.held_batches) == (1, 1, 0)
    assert world.pruned() == {held, free}
    assert world.store.count_events() == 0


def test_nothing_outside_a_signed_tree_head_is_pruned(world: World) -> None:
    signed = world.put(world.a, day=OLD)
    world.sign()
    unsigned = [world.put(world.a, day=OLD), world.put(world.b, day=OLD)]  # as old, but no head covers them yet

    [run] = world.prune()
    assert run.batches == 1 and world.pruned() == {signed}
    assert world.event_seqs("agt-a") == [4, 5, 6] and world.event_seqs("agt-b") == [1, 2, 3]

    world.sign()
    world.prune()
    assert world.pruned() == {signed, *unsigned}


def test_holds_are_audited_and_bad_holds_refused(world: World) -> None:
    hold = world.hold(user="bob", agent_id="agt-a", since_ns=5, until_ns=9, reason="arbitration 12")
    with world.store.transaction() as tx:
        release_hold(tx=tx, hold_id=hold.id, actor="dpo", now_ns=77)
        release_hold(tx=tx, hold_id=hold.id, actor="dpo", now_ns=78)  # already released: audited as not done
    with world.store.transaction() as tx:
        with pytest.raises(ValueError, match="before its start"):
            place_hold(tx=tx, hold=LegalHold("r", "counsel", 1, since_ns=10, until_ns=5, user="bob"))
        with pytest.raises(ValueError, match="names a user, an agent"):
            place_hold(tx=tx, hold=LegalHold("r", "counsel", 1, since_ns=0, until_ns=5))
    audit = [e for e in reversed(world.store.list_audit(cursor=None, limit=100).items) if e.action.startswith("legal_hold")]
    assert [(e.action, e.actor, e.target) for e in audit] == [
        ("legal_hold.place", "counsel", str(hold.id)), ("legal_hold.release", "dpo", str(hold.id)),
        ("legal_hold.release", "dpo", str(hold.id))]
    assert audit[0].details == {"user": "bob", "agent_id": "agt-a", "since_ns": 5, "until_ns": 9, "reason": "arbitration 12"}
    assert [e.details["released"] for e in audit[1:]] == [True, False]
    [stored] = world.store.list_legal_holds(active_only=False)
    assert (stored.user, stored.agent_id, stored.released_at_ns) == ("bob", "agt-a", 77)


def test_chunked_pruning_terminates_when_more_batches_are_held_than_a_chunk(world: World) -> None:
    held = {world.put(world.a, day=OLD, users=("bob",)) for _ in range(5)}
    free = {world.put(world.b, day=OLD, users=("alice",)) for _ in range(3)}
    world.sign()
    world.hold(user="bob")

    runs = world.prune(chunk=2)

    assert world.pruned() == free
    assert sum(r.held_batches for r in runs) == 5 and sum(r.batches for r in runs) == 3
    assert len(runs) <= 5  # 8 batches in chunks of 2, and one run that finds the end
    assert all(world.rows()[k].pruned_at_ns is None for k in held)
    # everything held: still ends
    world.hold(user="alice")
    assert sum(r.batches for r in world.prune(chunk=1)) == 0


# --- verify after retention, on real SQLite files ------------------------------------------------

@dataclass
class Pruned:
    data_dir: Path
    db: Path
    rows: dict[tuple[str, int], int]  # (agent, first_seq) -> batches.row_id
    pruned: set[tuple[str, int]]
    run_at_ns: int


@pytest.fixture
def pruned(tmp_path: Path) -> Iterator[Pruned]:
    """As test_verify's store (two agents, 4 interleaved batches of 3 events each, heads after rounds
    2 and 4), received on days 1..4, then pruned at day 10 with a retention of 7.5 days: rounds 1 and 2."""
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
            if round_ in (1, 3):
                assert signer.sign_if_grown() is not None
        runs = prune(store=store, retention_days=7.5, now_ns=10 * DAY_NS)
        assert sum(r.batches for r in runs) == 4
        rows = store.batch_leaves(after_row_id=0, limit=100)
    finally:
        store.close()
    yield Pruned(data_dir, data_dir / "collector.db",
                 {(r.batch.agent_id, r.batch.first_seq): r.row_id for r in rows},
                 {(r.batch.agent_id, r.batch.first_seq) for r in rows if r.pruned_at_ns is not None}, 10 * DAY_NS)


def _verify(p: Pruned) -> VerifyReport:
    return verify_dir(p.data_dir)


def _sql(p: Pruned, *statements: tuple[str, tuple[object, ...]]) -> None:
    run_sql(p.db, *statements)


def _has(report: VerifyReport, **expected: object) -> Finding:
    for f in report.findings:
        if all(getattr(f, k) == v for k, v in expected.items()):
            return f
    raise AssertionError(f"no finding {expected} in:\n{report.render()}")


def test_a_pruned_store_verifies_and_says_what_retention_pruned(pruned: Pruned) -> None:
    assert pruned.pruned == {("agt-a", 1), ("agt-a", 4), ("agt-b", 1), ("agt-b", 4)}
    report = _verify(pruned)
    assert report.ok, report.render()
    assert (report.batches, report.pruned_batches, report.events, report.tree_heads, report.tree_leaves) == (8, 4, 12, 2, 8)
    assert report.retention_runs == [1]
    text = report.render()
    assert "checked 8 batches (4 pruned by retention runs #1), 12 events" in text
    assert "4 batch(es) pruned by retention (12 events deleted by runs #1)" in text
    assert text.endswith("OK: the store is intact")

    cli = subprocess.run([sys.executable, "-m", "collector", "verify", "--data-dir", str(pruned.data_dir)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "4 pruned by retention" in cli.stdout


@pytest.mark.parametrize("column", ["batch_hash", "prev_hash"])
def test_a_pruned_batchs_changed_hash_is_named(pruned: Pruned, column: str) -> None:
    victim = pruned.rows[("agt-a", 4)]
    _sql(pruned, (f"UPDATE batches SET {column} = ? WHERE row_id = ?", (b"\x07" * 32, victim)))
    report = _verify(pruned)
    # batch_hash: the next batch's signed prev_hash no longer names it; prev_hash: it no longer names its predecessor
    broken = pruned.rows[("agt-a", 7)] if column == "batch_hash" else victim
    _has(report, check="chain.link", table="batches", agent_id="agt-a", row_id=broken)
    assert not report.ok


def test_a_pruned_last_batchs_changed_hash_is_named_by_the_chain_head(tmp_path: Path) -> None:
    data_dir = tmp_path / "collector"
    store = PerCall(open_store(data_dir))
    try:
        signer = TreeHeadSigner(store, load_or_create_tree_key(data_dir))
        ingest = IngestService(store)
        [a] = writers(store, "agt-a")
        ingest.ingest(a.next(2))
        assert signer.sign_if_grown() is not None
        prune(store=store, retention_days=0, now_ns=time.time_ns() + DAY_NS)
        [row] = store.batch_leaves(after_row_id=0, limit=10)
    finally:
        store.close()
    p = Pruned(data_dir, data_dir / "collector.db", {}, set(), 0)
    assert _verify(p).ok
    _sql(p, ("UPDATE batches SET batch_hash = ? WHERE row_id = ?", (b"\x09" * 32, row.row_id)))
    _has(_verify(p), check="chain.head", table="chain_heads", agent_id="agt-a")


def test_events_reinserted_into_a_pruned_batch_are_named(pruned: Pruned) -> None:
    _sql(pruned, ("INSERT INTO events (agent_id, epoch, seq, event_id, kind, time_ns, path, dest_path, size, sha256, "
                  "user_name, uid, pid, process, exe, attributes) VALUES ('agt-b', 1, 5, 'back', 'file.read', 1, "
                  "'/srv/finance/report-5.xlsx', '', 1234, '', 'alice', 1000, 1, 'cat', '/usr/bin/cat', '{}')", ()))
    report = _verify(pruned)
    f = _has(report, check="retention.event_present", table="events", agent_id="agt-b", epoch=1, seq="5")
    assert f"batch row {pruned.rows[('agt-b', 4)]} was pruned" in f.detail
    assert len(report.findings) == 1, report.render()


def test_a_batch_blanked_without_pruning_is_named(pruned: Pruned) -> None:
    victim = pruned.rows[("agt-b", 7)]
    _sql(pruned, ("UPDATE batches SET canonical = ? WHERE row_id = ?", (b"", victim)),
         ("DELETE FROM events WHERE agent_id = 'agt-b' AND seq BETWEEN 7 AND 9", ()))
    report = _verify(pruned)
    _has(report, check="batch.blanked", table="batches", row_id=victim, agent_id="agt-b", seq="7..9", column="canonical")
    _has(report, check="tree.batch_changed", row_id=victim)


def test_a_pruned_batch_with_its_mark_removed_is_named(pruned: Pruned) -> None:
    victim = pruned.rows[("agt-a", 1)]
    _sql(pruned, ("UPDATE batches SET pruned_at_ns = NULL WHERE row_id = ?", (victim,)))
    report = _verify(pruned)
    _has(report, check="batch.blanked", row_id=victim)
    _has(report, check="retention.count", table="retention_runs")


def test_a_batch_faked_as_pruned_after_the_cutoff_is_named(pruned: Pruned) -> None:
    victim = pruned.rows[("agt-a", 10)]  # received on day 4, after the cutoff at day 2.5
    _sql(pruned, ("UPDATE batches SET canonical = ?, pruned_at_ns = ? WHERE row_id = ?", (b"", pruned.run_at_ns, victim)),
         ("DELETE FROM events WHERE agent_id = 'agt-a' AND seq BETWEEN 10 AND 12", ()))
    report = _verify(pruned)
    f = _has(report, check="retention.cutoff", table="batches", row_id=victim, agent_id="agt-a", seq="10..12",
             column="received_at_ns")
    assert "too new" in f.detail and "#1" in f.detail
    _has(report, check="retention.count", table="retention_runs", row_id=1)


def test_a_batch_faked_as_pruned_by_no_run_is_named(pruned: Pruned) -> None:
    victim = pruned.rows[("agt-b", 7)]
    _sql(pruned, ("UPDATE batches SET canonical = ?, pruned_at_ns = ? WHERE row_id = ?", (b"", 12345, victim)),
         ("DELETE FROM events WHERE agent_id = 'agt-b' AND seq BETWEEN 7 AND 9", ()))
    _has(_verify(pruned), check="retention.run", row_id=victim, column="pruned_at_ns")


# --- the legal-hold command line ------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True, timeout=120)


def test_cli_places_lists_and_releases_holds_audited_and_refuses_bad_input(tmp_path: Path) -> None:
    d = str(tmp_path / "collector")
    placed = _cli("legal-hold", "place", "--data-dir", d, "--user", "bob", "--agent", "agt-a",
                  "--since", "2026-01-01T00:00:00Z", "--until", "2026-06-30T23:59:59+08:00", "--reason", "case 17")
    assert placed.returncode == 0, placed.stderr
    hold_id = int(placed.stdout)
    listed = _cli("legal-hold", "list", "--data-dir", d)
    assert listed.returncode == 0 and listed.stdout.startswith(f"{hold_id}\tuser=bob\tagent=agt-a\t2026-01-01T00:00:00")
    assert "2026-06-30T15:59:59" in listed.stdout and "active" in listed.stdout and "case 17" in listed.stdout

    bad = [
        ("--user", "bob", "--since", "yesterday", "--reason", "x"),  # not RFC 3339
        ("--user", "bob", "--since", "2026-01-01T00:00:00", "--reason", "x"),  # no zone
        ("--user", "bob", "--since", "2026-02-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z", "--reason", "x"),
        ("--since", "2026-01-01T00:00:00Z", "--reason", "x"),  # neither user nor agent
        ("--user", "bob", "--reason", "  "),
        ("--user", "bob"),  # no reason
    ]
    for args in bad:
        out = _cli("legal-hold", "place", "--data-dir", d, *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert out.stderr.strip(), args
    assert _cli("legal-hold", "release", "--data-dir", d, "not-a-number").returncode == 2

    assert _cli("legal-hold", "release", "--data-dir", d, str(hold_id)).returncode == 0
    again = _cli("legal-hold", "release", "--data-dir", d, str(hold_id))
    assert again.returncode == 2 and f"no active legal hold {hold_id}" in again.stderr
    assert _cli("legal-hold", "list", "--data-dir", d).stdout == ""
    assert "released" in _cli("legal-hold", "list", "--data-dir", d, "--all").stdout

    store = open_store(Path(d))
    try:
        with store.read() as tx:
            audit = [e for e in reversed(tx.list_audit(cursor=None, limit=100).items)]
            [hold] = tx.list_legal_holds(active_only=False)
    finally:
        store.close()
    assert [(e.action, e.target) for e in audit] == [("legal_hold.place", str(hold_id)),
                                                      ("legal_hold.release", str(hold_id)),
                                                      ("legal_hold.release", str(hold_id))]
    assert all(e.actor.startswith("cli:") for e in audit) and hold.created_by.startswith("cli:")
    assert audit[0].details["reason"] == "case 17" and audit[0].details["user"] == "bob"
