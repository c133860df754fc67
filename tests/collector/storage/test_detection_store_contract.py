"""Detection's writes and reads on every store, as the stage runs them on the driver's cursor: the open
alert of a group read back with every field the fold wrote, the detection position that never moves
backwards, rule states round-tripped, and a second open alert of a group refused by an update as by an
insert (AlreadyExists, the storage interface's error), on every store."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.alerts.models import Alert
from collector.events.models import StoredBatch, StoredEvent
from collector.storage import AlreadyExists

_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)
_NS = st.integers(0, 2**62)
_FRESH = itertools.count()  # hypothesis seeds random: each example takes its own names from here
_FIXTURE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _batch(agent_id: str, last: int) -> StoredBatch:
    return StoredBatch(agent_id, 1, 1, last, b"h" * 32, bytes(32), b"s" * 64, b"canonical", 5)


@_FIXTURE
@given(rule=st.sampled_from(["after_hours", "read_burst"]), severity=st.sampled_from(["low", "medium", "high", "critical"]),
       user=_TEXT, summary=_TEXT, created=_NS, updated=_NS, last=_NS, occurrences=st.integers(1, 2**40),
       evidence=st.integers(0, 2**40), assignee=st.one_of(st.none(), _TEXT), events=st.lists(_TEXT, max_size=4))
def test_the_open_alert_of_a_group_reads_back_every_field_the_fold_wrote(
        any_store: Any, rule: str, severity: str, user: str, summary: str, created: int, updated: int, last: int,
        occurrences: int, evidence: int, assignee: str | None, events: list[str]) -> None:
    group = f"{rule}|{next(_FRESH)}"  # a group of its own for each example, on the one store
    made = any_store.add_alert(Alert(rule, "low", "open", "someone", "agt-1", 1, 1, tuple(events), "first",
                                     last_event_ns=1, group_key=group))
    found = any_store.open_alert_in_group(group)
    assert found == replace(made, event_ids=())
    folded = replace(found, severity=severity, user=user, summary=summary, created_at_ns=created, updated_at_ns=updated,
                     last_event_ns=last, occurrences=occurrences, evidence_count=evidence, assignee=assignee)
    any_store.update_alert(folded)
    assert any_store.open_alert_in_group(group) == folded
    assert any_store.get_alert(made.id).event_ids == tuple(dict.fromkeys(events))  # the fields only: evidence stays
    any_store.update_alert(replace(folded, status="closed", outcome="true_positive"))
    assert any_store.open_alert_in_group(group) is None


def test_a_second_open_alert_of_a_group_is_refused_by_update(any_store: Any) -> None:
    first = any_store.add_alert(Alert("r", "low", "open", "u", "a", 1, 1, (), "s", group_key="g"))
    any_store.update_alert(replace(first, status="closed", outcome="true_positive"))
    second = any_store.add_alert(Alert("r", "low", "open", "u", "a", 2, 2, (), "s", group_key="g"))
    with pytest.raises(AlreadyExists):
        any_store.update_alert(replace(first, status="open", outcome=None))
    assert any_store.open_alert_in_group("g") == replace(second, event_ids=())


@_FIXTURE
@given(moves=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**40)), min_size=1, max_size=12))
def test_the_detection_position_never_moves_backwards(any_store: Any, moves: list[tuple[int, int]]) -> None:
    agent = f"agt-{next(_FRESH)}"
    any_store.store_batch(_batch(agent, 1), [StoredEvent(agent, 1, 1, f"{agent}-1", "file.read", 1, attributes={})], expected_head=None)
    assert any_store.detected_upto(agent) == (0, 0)
    best = (0, 0)
    for epoch, seq in moves:
        any_store.mark_detected(agent_id=agent, epoch=epoch, seq=seq)
        best = max(best, (epoch, seq))
        assert any_store.detected_upto(agent) == best
    any_store.mark_detected(agent_id="nobody", epoch=9, seq=9)
    assert any_store.detected_upto("nobody") == (0, 0)


def test_rule_states_are_read_back_as_saved(any_store: Any) -> None:
    states: dict[tuple[str, str], dict[str, Any]] = {
        ("read_burst", f"u{i}"): {"t": [1, 2, i], "p": [[3, f"e{i}"]], "m_ep": None} for i in range(1200)}
    states[("after_hours", "名字 with ' quote")] = {"pending": ["é"], "ep": 2**62, "x": 0.5, "ok": True}
    any_store.save_rule_states(states)
    wanted = [*states, ("read_burst", "nobody"), ("bulk_read", "u1")]
    assert any_store.load_rule_states(wanted) == states
    any_store.save_rule_states({("read_burst", "u1"): {"t": []}})
    assert any_store.load_rule_states([("read_burst", "u1"), ("read_burst", "u2")]) == {
        ("read_burst", "u1"): {"t": []}, ("read_burst", "u2"): states[("read_burst", "u2")]}
    assert any_store.load_rule_states([]) == {}


def test_a_refused_second_open_alert_leaves_the_transaction_usable(any_store: Any) -> None:
    """raise_alert folds when another collector raised the group's alert meanwhile: the refused insert
    is undone alone (a savepoint), and the transaction goes on to fold and commit."""
    with any_store.transaction() as tx:
        first = tx.add_alert(Alert("r", "low", "open", "u", "a", 1, 1, ("e1",), "s", group_key="g"))
        with pytest.raises(AlreadyExists):
            tx.add_alert(Alert("r", "low", "open", "u", "a", 2, 2, ("e2",), "s", group_key="g"))
        assert tx.add_evidence(alert_id=first.id, event_ids=["e2", "e1"]) == 1
        tx.update_alert(replace(tx.open_alert_in_group("g"), evidence_count=2, summary="folded"))
    assert any_store.get_alert(first.id).event_ids == ("e1", "e2")
    assert any_store.open_alert_in_group("g") == replace(first, event_ids=(), evidence_count=2, summary="folded")
    assert sum(any_store.count_alerts().values()) == 1


@pytest.mark.parametrize("count", [1, 3, 200, 1300])
def test_rule_states_are_read_on_their_primary_key_in_sqlite(sqlite_store: Any, count: int) -> None:
    """Each round reads the states of the keys it met: a search of the (rule, key) key, never a scan of
    every state (what "(rule, key) IN (...)" made of the read)."""
    sqlite_store.save_rule_states({(rule, f"u{i}"): {"n": i} for rule in ("read_burst", "after_hours") for i in range(2000)})
    wanted = [(rule, f"u{i * 7}") for rule in ("read_burst", "after_hours") for i in range(count)]
    ran: list[str] = []
    with sqlite_store.read() as tx:
        driver = tx._conn.connection.driver_connection
        driver.set_trace_callback(ran.append)
        try:
            got = tx.load_rule_states(wanted)
        finally:
            driver.set_trace_callback(None)
        plans = [" ".join(str(r[-1]) for r in driver.execute(f"EXPLAIN QUERY PLAN {sql}")) for sql in ran
                 if "detection_state" in sql]
    assert got == {k: {"n": int(k[1][1:])} for k in wanted if int(k[1][1:]) < 2000}
    assert plans and all("SEARCH detection_state USING" in p and "SCAN detection_state" not in p for p in plans), plans
