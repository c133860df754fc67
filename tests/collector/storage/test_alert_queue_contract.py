"""The alert queue's store contract on every backend: filters, sorts and cursors that miss and repeat
nothing, counts, groups by person, saved filters, evidence in time order, the agent's health reads, and
pseudonyms. And on SQLite, that the queue's reads use its indexes (no scan of every alert)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from collector.alerts.models import Alert, AlertQuery, SavedFilter
from collector.events.models import StoredBatch, StoredEvent
from collector.storage import AlreadyExists
from collector.storage.sql.alerts import _ordered, _where
from collector.storage.sql.schema import alerts as alerts_table

_SEVERITIES = ("low", "medium", "high", "critical")
_STATUSES = ("open", "acknowledged", "closed")
_RULES = ("read_burst", "usb_exfiltration", "after_hours")


def _fill(store: Any, n: int = 30) -> list[Alert]:
    made = []
    for i in range(n):
        a = Alert(_RULES[i % 3], _SEVERITIES[i % 4], _STATUSES[i % 3 if i % 5 else 0], f"u{i % 4}", f"agt-{i % 2}",
                  1000 + i, 1000 + i, tuple(f"e{i}-{k}" for k in range(i % 6)), f"s{i}", last_event_ns=1000 + i,
                  assignee="ana" if i % 7 == 0 else None)
        made.append(store.add_alert(a))
    return made


def _page_through(store: Any, q: AlertQuery, limit: int) -> list[int]:
    seen: list[int] = []
    after = None
    for _ in range(100):
        page = store.query_alerts(q, after=after, limit=limit)
        seen += [a.id for a in page.items]
        if page.next_cursor is None:
            return seen
        parts = page.next_cursor.split("_")
        after = (int(parts[0]), int(parts[-1]))
    raise AssertionError("the cursor never ended")


def _expected(made: list[Alert], q: AlertQuery) -> list[int]:
    rank = {s: i for i, s in enumerate(_SEVERITIES, 1)}
    found = [a for a in made if (not q.statuses or a.status in q.statuses) and (not q.rules or a.rule in q.rules)
             and (not q.severities or a.severity in q.severities) and (q.user is None or a.user == q.user)
             and (q.agent_id is None or a.agent_id == q.agent_id)
             and (q.since_ns is None or a.created_at_ns >= q.since_ns)
             and (q.until_ns is None or a.created_at_ns < q.until_ns)
             and (q.assignee is None or (a.assignee or "") == q.assignee)]
    key = {"severity": lambda a: (rank[a.severity], a.id), "evidence": lambda a: (a.evidence_count, a.id),
           "oldest": lambda a: a.id, "newest": lambda a: a.id}[q.sort]
    return [a.id for a in sorted(found, key=key, reverse=q.sort != "oldest")]


@pytest.mark.parametrize("sort", ["newest", "oldest", "severity", "evidence"])
def test_every_sort_pages_through_every_match_once_in_order(any_store: Any, sort: str) -> None:
    made = _fill(any_store)
    for q in (AlertQuery(sort=sort), AlertQuery(statuses=("open",), sort=sort),
              AlertQuery(rules=("usb_exfiltration", "after_hours"), severities=("high", "critical"), sort=sort),
              AlertQuery(user="u1", agent_id="agt-1", sort=sort), AlertQuery(since_ns=1005, until_ns=1020, sort=sort),
              AlertQuery(assignee="", sort=sort), AlertQuery(assignee="ana", sort=sort)):
        want = _expected(made, q)
        assert _page_through(any_store, q, limit=4) == want, q
        assert list(any_store.alert_ids_matching(q, limit=1000)) == want
        assert list(any_store.alert_ids_matching(q, limit=3)) == want[:3]


def test_counts_by_facet_and_groups_by_person(any_store: Any) -> None:
    made = _fill(any_store)
    assert any_store.count_alerts_by(AlertQuery(), field="status") == {
        s: sum(a.status == s for a in made) for s in _STATUSES}
    assert any_store.count_alerts_by(AlertQuery(statuses=("open",)), field="rule") == {
        r: sum(a.rule == r and a.status == "open" for a in made) for r in _RULES if any(
            a.rule == r and a.status == "open" for a in made)}
    groups = any_store.group_alerts_by_user(AlertQuery(), offset=0, limit=10)
    assert sorted(g.user for g in groups) == ["u0", "u1", "u2", "u3"]
    for g in groups:
        mine = [a for a in made if a.user == g.user]
        assert (g.total, g.open, g.acknowledged, g.closed) == (
            len(mine), *(sum(a.status == s for a in mine) for s in _STATUSES))
        assert g.severe == sum(a.severity in ("high", "critical") for a in mine)
        assert g.last_created_ns == max(a.created_at_ns for a in mine)
    assert [g.total for g in groups] == sorted((g.total for g in groups), reverse=True)
    assert [g.user for g in any_store.group_alerts_by_user(AlertQuery(), offset=2, limit=10)] == [
        g.user for g in groups[2:]]
    no_person = any_store.add_alert(Alert("agent_silent", "medium", "open", "", "agt-9", 1, 1, (), "silent"))
    assert no_person.id and "" not in {g.user for g in any_store.group_alerts_by_user(AlertQuery(), offset=0, limit=10)}


def test_assignment_and_severity_survive_an_update(any_store: Any) -> None:
    [a] = _fill(any_store, 1)
    any_store.update_alert(replace(a, assignee="bo", severity="critical", evidence_count=3))
    [again] = any_store.get_alerts([a.id, 999_999])
    assert again.assignee == "bo" and again.severity == "critical"
    assert [x.id for x in any_store.query_alerts(AlertQuery(assignee="bo", severities=("critical",)), after=None,
                                                 limit=5).items] == [a.id]


def test_saved_filters_belong_to_their_owner(any_store: Any) -> None:
    mine = any_store.add_saved_filter(SavedFilter("ana", "usb open", "rule=usb_exfiltration&status=open", 5))
    any_store.add_saved_filter(SavedFilter("bo", "usb open", "rule=usb_exfiltration", 6))
    with pytest.raises(AlreadyExists):
        any_store.add_saved_filter(SavedFilter("ana", "usb open", "status=closed", 7))
    assert [(f.name, f.query) for f in any_store.list_saved_filters("ana")] == [("usb open", mine.query)]
    assert any_store.delete_saved_filter(filter_id=mine.id, owner="bo") is None  # not bo's
    assert any_store.delete_saved_filter(filter_id=mine.id, owner="ana") == mine
    assert any_store.list_saved_filters("ana") == [] and len(any_store.list_saved_filters("bo")) == 1


def _store_events(store: Any, agent_id: str, events: list[StoredEvent]) -> None:
    store.store_batch(StoredBatch(agent_id, 1, events[0].seq, events[-1].seq, b"h" * 32, bytes(32), b"s" * 64, b"c", 5),
                      events, expected_head=None)


def _event(agent_id: str, seq: int, time_ns: int, kind: str = "file.read", **kw: Any) -> StoredEvent:
    return StoredEvent(agent_id=agent_id, epoch=1, seq=seq, id=f"{agent_id}-{seq}", kind=kind, time_ns=time_ns,
                       path=f"/srv/finance/{seq}.xlsx", user="alice", pid=40 + seq, process="cp", exe="/usr/bin/cp",
                       attributes=kw.pop("attributes", {}), **kw)


def test_evidence_comes_in_time_order_a_page_at_a_time_and_pruned_events_are_counted(any_store: Any) -> None:
    times = [5000, 1000, 3000, 3000, 2000, 4000]  # appended out of time order, two at the same time
    _store_events(any_store, "agt-1", [_event("agt-1", i + 1, t, attributes={"match_share": 0.5})
                                       for i, t in enumerate(times)])
    alert = any_store.add_alert(Alert("usb_exfiltration", "high", "open", "alice", "agt-1", 1, 1,
                                      tuple(f"agt-1-{i + 1}" for i in range(6)) + ("gone-1",), "s"))
    assert alert.evidence_count == 7 and any_store.count_stored_evidence(alert.id) == 6  # "gone-1" was pruned
    seen, after = [], None
    for _ in range(10):
        page = any_store.evidence_events(alert_id=alert.id, after=after, limit=4)
        seen += list(page)
        if len(page) < 4:
            break
        after = (page[-1].time_ns, page[-1].row_id)
    assert [e.time_ns for e in seen] == sorted(times) and len({e.id for e in seen}) == 6
    assert seen[0].attributes == {"match_share": 0.5} and seen[0].process == "cp"


def test_the_agents_health_reads_its_window_only(any_store: Any) -> None:
    _store_events(any_store, "agt-1", [
        _event("agt-1", 1, 100, "agent.heartbeat"), _event("agt-1", 2, 200, "agent.capture_gap"),
        _event("agt-1", 3, 300, "file.read"), _event("agt-1", 4, 400, "agent.heartbeat"),
        _event("agt-1", 5, 900, "agent.heartbeat")])
    _store_events(any_store, "agt-2", [_event("agt-2", 1, 150, "agent.heartbeat")])
    found = any_store.agent_events_between(agent_id="agt-1", kinds=["agent.heartbeat", "agent.capture_gap"],
                                           since_ns=100, until_ns=900, limit=10)
    assert [(e.seq, e.kind) for e in found] == [(1, "agent.heartbeat"), (2, "agent.capture_gap"), (4, "agent.heartbeat")]
    gap = any_store.add_alert(Alert("capture_gap", "medium", "open", "", "agt-1", 150, 250, (), "gap",
                                    last_event_ns=200))
    any_store.add_alert(Alert("capture_gap", "medium", "open", "", "agt-1", 2000, 2000, (), "later", last_event_ns=2000))
    any_store.add_alert(Alert("capture_gap", "medium", "open", "", "agt-2", 150, 250, (), "other", last_event_ns=200))
    near = any_store.alerts_of_agent(agent_id="agt-1", rules=["capture_gap", "spool_loss"], since_ns=100,
                                     until_ns=900, limit=10)
    assert [a.id for a in near] == [gap.id]


def test_pseudonyms_one_secret_one_code_per_person(any_store: Any) -> None:
    secret = any_store.pseudonym_secret()
    assert len(secret) == 32 and any_store.pseudonym_secret() == secret  # made once, kept
    assert any_store.add_pseudonym(code="P-AAAAAAAAAA", user_name="alice", now_ns=1)
    assert not any_store.add_pseudonym(code="P-AAAAAAAAAA", user_name="bob", now_ns=2)  # the code is taken
    assert not any_store.add_pseudonym(code="P-BBBBBBBBBB", user_name="alice", now_ns=3)  # alice has one
    long_name = "CORP\\" + "x" * 5000  # any length of name gets its row
    assert any_store.add_pseudonym(code="P-CCCCCCCCCC", user_name=long_name, now_ns=4)
    assert any_store.pseudonyms_for(["alice", "bob", long_name]) == {"alice": "P-AAAAAAAAAA",
                                                                      long_name: "P-CCCCCCCCCC"}
    assert any_store.user_for_pseudonym("P-AAAAAAAAAA") == "alice" and any_store.user_for_pseudonym("P-BBBBBBBBBB") is None


def test_sqlite_plans_the_queue_on_its_indexes(sqlite_store: Any) -> None:
    _fill(sqlite_store, 5)
    for q in (AlertQuery(), AlertQuery(statuses=("open",)), AlertQuery(user="u1"), AlertQuery(sort="severity"),
              AlertQuery(sort="evidence", statuses=("open",)), AlertQuery(agent_id="agt-1", sort="oldest"),
              AlertQuery(assignee="ana"), AlertQuery(sort="severity", statuses=("open",)),
              AlertQuery(sort="newest", statuses=("open",), rules=("usb_exfiltration",))):
        query = _ordered(sa.select(alerts_table.c.id).where(*_where(q)), q, None).limit(10)
        with sqlite_store.inner.read() as tx:
            compiled = query.compile(tx._conn, compile_kwargs={"literal_binds": True})
            plan = " ".join(str(r[-1]) for r in tx._conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
        assert "TEMP B-TREE" not in plan, (q, plan)  # read in order from an index and stopped at the limit


def test_a_flood_of_one_rule_never_hides_the_others(any_store: Any) -> None:
    real = any_store.add_alert(Alert("usb_exfiltration", "high", "open", "alice", "agt-1", 1, 1, (), "the real one"))
    with any_store.transaction() as tx:
        for i in itertools.islice(itertools.count(), 600):
            tx.add_alert(Alert("agent_malformed", "medium", "open", "", "agt-2", 10 + i, 10 + i, (), f"flood {i}"))
    assert any_store.count_alerts_by(AlertQuery(), field="rule") == {"usb_exfiltration": 1, "agent_malformed": 600}
    assert [a.id for a in any_store.query_alerts(AlertQuery(rules=("usb_exfiltration",)), after=None, limit=5).items] \
        == [real.id]
    assert [a.id for a in any_store.query_alerts(AlertQuery(sort="severity"), after=None, limit=1).items] == [real.id]
    assert _page_through(any_store, AlertQuery(), limit=250)[-1] == real.id  # the page-through reaches it


def test_an_older_store_gets_a_secret_and_its_alerts_people_their_pseudonyms(tmp_path: Any) -> None:
    from alembic import command
    from alembic.config import Config

    from collector.privacy.codes import code_for
    from collector.privacy.service import pseudonym_of, user_of
    from collector.storage import open_store
    from collector.storage.sql.store import _MIGRATIONS

    url = f"sqlite:///{tmp_path / 'collector.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007")
        for i, (user, severity) in enumerate([("alice", "high"), ("bob", "low"), ("alice", "critical"), ("", "medium")]):
            conn.execute(sa.text(
                "INSERT INTO alerts (rule, severity, status, user_name, agent_id, created_at_ns, updated_at_ns, "
                "event_ids, summary, last_event_ns) VALUES ('read_burst', :s, 'open', :u, 'a', :t, :t, '[]', 'x', :t)"),
                {"s": severity, "u": user, "t": i})
    engine.dispose()
    store = open_store(tmp_path)
    try:
        with store.read() as tx:
            secret = tx.pseudonym_secret()
            assert tx.pseudonyms_for(["alice", "bob", ""]) == {"alice": code_for(secret, "alice"),
                                                                "bob": code_for(secret, "bob")}
            assert user_of(tx=tx, pseudonym=pseudonym_of(tx=tx, user_name="alice")) == "alice"
            ranks = [a.id for a in tx.query_alerts(AlertQuery(sort="severity"), after=None, limit=10).items]
            assert ranks == [3, 1, 4, 2]  # critical, high, medium, low: the old rows got their rank
    finally:
        store.close()


def test_many_alerts_change_their_triage_fields_at_once(any_store: Any) -> None:
    made = _fill(any_store, 5)
    changed = [replace(a, status="closed", outcome="benign", assignee="bo", updated_at_ns=77, summary="ignored")
               for a in made[:3]]
    any_store.update_alerts(changed)
    after = {a.id: a for a in any_store.get_alerts([a.id for a in made])}
    for a in made[:3]:
        got = after[a.id]
        assert (got.status, got.outcome, got.assignee, got.updated_at_ns, got.summary) == (
            "closed", "benign", "bo", 77, a.summary)  # only the triage fields
    assert (after[made[3].id].status, after[made[3].id].updated_at_ns) == (made[3].status, made[3].updated_at_ns)
