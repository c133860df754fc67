"""Retention per kind of record: what goes, what a hold keeps (an open case, a manual hold, the payroll minimum),
each run recorded with why, and verify (the tree and the audit chain) still passes afterwards: on memory, real
SQLite files and the real PostgreSQL, and through the CLI on a real data directory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.audit.models import AuditEntry
from collector.events.models import EventFilter
from collector.retention.models import RetentionPolicy
from collector.retention.service import release_hold, run_retention
from collector.settings import CollectorSettings
from collector.storage import open_store
from collector.storage.memory import MemoryStore
from collector.transparency import TreeHeadSigner, load_or_create_tree_key
from collector.verify import verify_store

from tests.collector.privacy.helpers import Records, day
from tests.conftest import PerCall, fresh_pg_schema, pg_url

NOW = day(1000)
POLICY = RetentionPolicy(events_days=30, alerts_days=60, cases_days=90, audit_days=730, notifications_days=30,
                         payroll_days=730)


def _build(r: Records) -> dict[str, Any]:
    """Alice has an open case; Bob a manual hold; Carol an old closed case; Dave a case paid 500 days ago;
    Erin a case paid 800 days ago; Frank only new records."""
    r.audit(on=50, n=3)  # old rows before anything is held: cut by audit retention
    ids: dict[str, Any] = {}
    ids["alice_case_ev"] = r.events(r.a, on=100, user="alice")
    ids["alice_free_ev"] = r.events(r.a, on=100, user="alice")
    ids["bob_ev"] = r.events(r.b, on=100, user="bob")
    ids["carol_ev"] = r.events(r.b, on=100, user="carol")
    ids["frank_ev"] = r.events(r.a, on=990, user="frank")
    r.sign()
    ids["a_alice_case"] = r.alert(on=100, user="alice", evidence=ids["alice_case_ev"])
    ids["a_alice_free"] = r.alert(on=100, user="alice")
    ids["a_bob"] = r.alert(on=100, user="bob", agent_id="agt-b")
    ids["a_carol"] = r.alert(on=100, user="carol", evidence=ids["carol_ev"], agent_id="agt-b")
    ids["a_dave"] = r.alert(on=480, user="dave")
    ids["a_erin"] = r.alert(on=150, user="erin")
    ids["a_frank"] = r.alert(on=990, user="frank")
    ids["c_alice"] = r.case(on=120, user="alice", alerts=[ids["a_alice_case"]], state="under_review")
    ids["c_carol"] = r.case(on=110, user="carol", alerts=[ids["a_carol"]], state="closed", updated=130,
                            attachment=b"%PDF carol's loss")
    ids["c_dave"] = r.case(on=480, user="dave", alerts=[ids["a_dave"]], state="closed", updated=520, handoff_on=500,
                           attachment=b"%PDF dave's loss")
    ids["c_erin"] = r.case(on=150, user="erin", alerts=[ids["a_erin"]], state="closed", updated=200, handoff_on=200)
    ids["hold_bob"] = r.hold(on=100, user="bob")
    r.notification(on=100, source_id=1)
    r.notification(on=100, source_id=2, status="pending")
    r.notification(on=990, source_id=3)
    return ids


def test_each_kind_goes_after_its_period_unless_held_and_verify_passes(any_store: Any) -> None:
    r = Records(any_store)
    ids = _build(r)
    assert r.verify().ok

    runs = run_retention(store=any_store, policy=POLICY, now_ns=NOW, chunk=2)

    # cases: Carol's (closed, old) and Erin's (paid 800 days ago) go; Alice's is open, Dave's was paid 500 days ago
    assert r.case_ids() == {ids["c_alice"], ids["c_dave"]}
    # alerts: the ones in a kept case stay, Bob's is under a hold, Frank's is new; Carol's went with her case
    assert r.alert_ids() == {ids["a_alice_case"], ids["a_bob"], ids["a_dave"], ids["a_frank"]}
    # events: the evidence of Alice's open case and Bob's held ones stay, and Frank's new ones
    assert r.event_ids() == set(ids["alice_case_ev"] + ids["bob_ev"] + ids["frank_ev"])
    with any_store.read() as tx:
        assert not tx.list_attachments(ids["c_carol"])
        assert tx.attachment_content(hashlib.sha256(b"%PDF carol's loss").hexdigest()) is None
        assert len(tx.list_attachments(ids["c_dave"])) == 1
        assert not tx.handoffs(ids["c_erin"]) and not tx.case_history(ids["c_erin"])
        left = [n.source_id for n in tx.list_notifications(cursor=None, limit=100).items]
        assert sorted(left) == [2, 3]  # the old delivered one went; undelivered and new ones stay
        anchor = tx.latest_audit_anchor()
        audit = [e for e in tx.list_audit(cursor=None, limit=1000, oldest_first=True).items]
    # audit: the three rows of day 50 are cut; the cut stops before Alice's open case began (day 110 < 270)
    assert anchor is not None and anchor.rows == 3
    assert all(e.at_ns >= day(100) for e in audit)
    # every run is recorded with what it held and why
    by_kind: dict[str, dict[str, int]] = {}
    deleted: dict[str, int] = {}
    for run in runs:
        deleted[run.kind] = deleted.get(run.kind, 0) + run.records
        for why, n in run.held_why.items():
            by_kind.setdefault(run.kind, {})[why] = by_kind.setdefault(run.kind, {}).get(why, 0) + n
    assert deleted == {"cases": 2, "alerts": 3, "events": 2, "notifications": 1, "audit": 3}
    assert by_kind["cases"] == {"open": 1, "payroll minimum": 1}
    assert by_kind["alerts"] == {f"case #{ids['c_alice']}": 1, f"case #{ids['c_dave']}": 1,
                                 f"legal hold #{ids['hold_bob']}": 1}
    assert by_kind["events"] == {f"case #{ids['c_alice']}": 1, f"legal hold #{ids['hold_bob']}": 1}
    assert by_kind["notifications"] == {"not delivered yet": 1}
    assert any(k.startswith(f"case #{ids['c_alice']}") for k in by_kind["audit"])
    with any_store.read() as tx:
        recorded = list(tx.list_retention_runs())
        trail = [e for e in tx.list_audit(cursor=None, limit=1000).items if e.action == "retention.run"]
    assert [x.id for x in recorded][-len(runs):] == [x.id for x in runs]
    assert {e.target for e in trail} == {"cases", "alerts", "events", "notifications", "audit"}
    cut = next(e for e in trail if e.target == "audit")
    assert cut.details["anchor_cut_hash"] == anchor.cut_hash

    report = r.verify()  # the tree (pruned batches keep their leaves) and the audit chain from its anchor
    assert report.ok, report.render()
    assert report.pruned_batches == 2

    # a second run deletes nothing more, appends to the chain after the cut, and verify still passes
    again = run_retention(store=any_store, policy=POLICY, now_ns=NOW + day(1), chunk=2)
    assert sum(x.records for x in again if x.kind != "audit") == 0
    with any_store.transaction() as tx:
        tx.append_audit(AuditEntry(NOW + day(2), "ivan", "user.lang", "ivan", {}))
    assert r.verify().ok, r.verify().render()


def test_releasing_the_hold_and_closing_the_case_lets_their_records_go(any_store: Any) -> None:
    r = Records(any_store)
    ids = _build(r)
    run_retention(store=any_store, policy=POLICY, now_ns=NOW)
    with any_store.transaction() as tx:
        assert release_hold(tx=tx, hold_id=ids["hold_bob"], actor="counsel", now_ns=NOW)
        case = tx.get_case(ids["c_alice"])
        tx.update_case(replace(case, state="dismissed", updated_at_ns=day(200)))
    run_retention(store=any_store, policy=POLICY, now_ns=NOW + day(1))
    assert r.case_ids() == {ids["c_dave"]}
    assert r.alert_ids() == {ids["a_dave"], ids["a_frank"]}
    assert r.event_ids() == set(ids["frank_ev"])
    assert r.verify().ok


def test_a_payroll_case_is_kept_two_years_whatever_the_case_period(any_store: Any) -> None:
    r = Records(any_store)
    young = r.case(on=100, user="dave", alerts=[], state="closed", updated=100, handoff_on=NOW // day(1) - 729)
    old = r.case(on=100, user="erin", alerts=[], state="closed", updated=100, handoff_on=NOW // day(1) - 731)
    run_retention(store=any_store, policy=RetentionPolicy(cases_days=1, payroll_days=730), now_ns=NOW)
    assert r.case_ids() == {young}
    assert old not in r.case_ids()


def test_a_period_below_the_statutory_minimum_is_refused(tmp_path: Path) -> None:
    for field in ("payroll_days", "audit_days"):
        with pytest.raises(ValueError, match="statutory minimum of 730 days.*工资支付暂行规定"):
            CollectorSettings(data_dir=tmp_path, retention={field: 365})
    with pytest.raises(ValueError, match="below the statutory minimum"):
        run_retention(store=MemoryStore(), policy=RetentionPolicy(payroll_days=100), now_ns=NOW)
    # serve refuses to start, with the reason, before it touches anything
    env = {**os.environ, "SHOUMI_COLLECTOR_RETENTION__PAYROLL_DAYS": "400"}
    cli = subprocess.run([sys.executable, "-m", "collector", "serve", "--data-dir", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert "payroll_days = 400 is below the statutory minimum of 730 days" in cli.stderr
    assert "工资支付暂行规定" in cli.stderr


def test_cli_retention_run_on_a_real_data_directory_then_verify_passes(tmp_path: Path) -> None:
    data_dir = tmp_path / "collector"
    store = PerCall(open_store(data_dir))
    try:
        r = Records(store)
        r.key = load_or_create_tree_key(data_dir)  # the key verify --data-dir reads
        r.signer = TreeHeadSigner(store, r.key, clock=lambda: r.now)
        old = r.events(r.a, on=1, user="alice")
        r.sign()
        r.audit(on=1, n=2)
    finally:
        store.close()
    env = {**os.environ, "SHOUMI_COLLECTOR_RETENTION_DAYS": "30"}
    run = subprocess.run([sys.executable, "-m", "collector", "retention", "run", "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "\tevents\t" in run.stdout and "\taudit\t" in run.stdout
    status = subprocess.run([sys.executable, "-m", "collector", "retention", "status", "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert status.returncode == 0 and "events\t30 days" in status.stdout and "payroll\t730 days" in status.stdout
    verify = subprocess.run([sys.executable, "-m", "collector", "verify", "--data-dir", str(data_dir), "--jobs", "1"],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "1 pruned by retention" in verify.stdout
    store = open_store(data_dir)
    try:
        with store.read() as tx:
            assert not tx.list_events(EventFilter(), cursor=None, limit=10).items
            assert tx.latest_audit_anchor() is not None
    finally:
        store.close()
    assert old


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "collector")
        return
    with fresh_pg_schema() as schema:
        yield pg_url(schema)


def test_the_database_still_refuses_deleting_audit_rows_above_the_cut(sql_url: str) -> None:
    store = open_store(sql_url)
    try:
        r = Records(PerCall(store))
        r.audit(on=1, n=3)
        r.audit(on=900, n=2)
        run_retention(store=store, policy=POLICY, now_ns=NOW)
        with store.read() as tx:
            cut = tx.latest_audit_anchor()
        assert cut is not None and cut.rows == 3
        for statement in (f"DELETE FROM audit_log WHERE id = {cut.cut_id + 1}", "DELETE FROM audit_anchors",
                          "UPDATE audit_anchors SET cut_id = cut_id + 5"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                with store.transaction() as tx:
                    tx._conn.execute(sa.text(statement))
        assert verify_store(store, tree_public_key=None).ok
    finally:
        store.close()


# --- the invariant: deleted = older than the period and not held -----------------------------------

_record = st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.integers(0, 200),  # user, age in days
                    st.sampled_from(["none", "open", "closed", "paid_young", "paid_old"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_record, max_size=12), held_users=st.sets(st.sampled_from(["u1", "u2", "u3"]), max_size=2),
       chunk=st.integers(1, 5))
def test_for_any_mix_deleted_is_older_than_the_period_and_not_held(records: list[tuple[str, int, str]],
                                                                   held_users: set[str], chunk: int) -> None:
    store = PerCall(MemoryStore())
    r = Records(store)
    now = day(1000)
    for u in sorted(held_users):
        r.hold(on=0, user=u)
    alerts: dict[int, tuple[str, int, int | None]] = {}
    cases: dict[int, tuple[str, int, str]] = {}
    for user, age, case in records:
        on = 1000 - age
        aid = r.alert(on=on, user=user)
        cid = None
        if case != "none":
            paid = {"paid_young": 1000 - 700, "paid_old": 1000 - 800}.get(case)
            cid = r.case(on=on, user=user, alerts=[aid], state="open" if case == "open" else "closed",
                         handoff_on=paid)
            cases[cid] = (user, age, case)
        alerts[aid] = (user, age, cid)
    policy = RetentionPolicy(events_days=None, alerts_days=50, cases_days=100, audit_days=None,
                             notifications_days=None, payroll_days=730)
    run_retention(store=store, policy=policy, now_ns=now, chunk=chunk)
    kept_cases = {cid for cid, (user, age, case) in cases.items()
                  if not (age > 100 and case not in ("open", "paid_young") and user not in held_users)}
    kept_alerts = {aid for aid, (user, age, cid) in alerts.items()
                   if not (age > 50 and cid not in kept_cases and user not in held_users)}
    assert r.case_ids() == kept_cases
    assert r.alert_ids() == kept_alerts


_batch = st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.integers(0, 60),  # user, age in days
                   st.sampled_from(["none", "open", "closed"]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(_batch, min_size=1, max_size=8), held_users=st.sets(st.sampled_from(["u1", "u2"]), max_size=1),
       chunk=st.integers(1, 4))
def test_for_any_mix_of_batches_the_pruned_are_old_and_unheld_and_verify_passes(
        batches: list[tuple[str, int, str]], held_users: set[str], chunk: int) -> None:
    store = PerCall(MemoryStore())
    r = Records(store)
    for u in sorted(held_users):
        r.hold(on=0, user=u)
    made = []
    for user, age, case in sorted(batches, key=lambda b: -b[1]):  # receipt order: oldest first
        ev = r.events(r.a, on=1000 - age, user=user)
        if case != "none":
            aid = r.alert(on=1000 - age, user=user, evidence=ev)
            r.case(on=1000 - age, user=user, alerts=[aid], state="open" if case == "open" else "closed")
        made.append((ev, user, age, case))
    r.sign()
    policy = RetentionPolicy(events_days=30, alerts_days=None, cases_days=None, audit_days=None,
                             notifications_days=None, payroll_days=730)
    runs = run_retention(store=store, policy=policy, now_ns=day(1000), chunk=chunk)
    kept = {e for ev, user, age, case in made if not (age > 30 and case != "open" and user not in held_users)
            for e in ev}
    assert r.event_ids() == kept
    assert sum(x.records for x in runs) == sum(1 for _ev, u, a, c in made if a > 30 and c != "open"
                                               and u not in held_users)
    assert r.verify().ok
