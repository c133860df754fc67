"""The policy service over the in-memory store: versions, validation, assignment, reports, the refusal alert."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.events.models import StoredEvent
from collector.fleet.models import AgentRecord
from collector.policy import service as policies
from collector.policy.models import Assignment, resolve
from collector.policy.service import PolicyProblem
from collector.storage import MemoryStore

GOOD = 'sensitive_folders = ["/srv/finance", "/home/*/Contracts"]\ndestinations = ["/media"]\n'


def _agent(agent_id: str, *labels: str) -> AgentRecord:
    return AgentRecord(agent_id, b"k" * 32, f"{agent_id}.corp", "Linux", "0.1.0", 1, labels=tuple(sorted(labels)))


def _save(tx: Any, name: str = "finance", document: str = GOOD, **kw: Any) -> Any:
    return policies.save_version(tx=tx, name=name, document=document, author="it.li", comment=kw.pop("comment", ""),
                                 now_ns=kw.pop("now_ns", 100))


def test_each_edit_is_a_new_version_with_its_hash_and_an_audit_row() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        first, new1 = _save(tx, comment="first")
        second, new2 = _save(tx, document=GOOD + 'exclude_processes = ["backup"]\n', comment="backup is fine")
        same, new3 = _save(tx, document=GOOD + 'exclude_processes = ["backup"]\n')
        audit = tx.list_audit(cursor=None, limit=10).items
    assert (first.version, second.version, new1, new2) == (1, 2, True, True)
    assert same == second and new3 is False  # the same document again makes no version
    assert len(first.sha256) == 64 and first.sha256 != second.sha256
    assert [(a.action, a.target, a.details["version"]) for a in audit] == [("policy.version", "finance", 2),
                                                                           ("policy.version", "finance", 1)]


@pytest.mark.parametrize("document, key", [
    ('sensitive_folders = ["/srv/[fin"]\n', "sensitive_folders"),
    ('sensitive_folders = ["relative/path"]\n', "sensitive_folders"),
    ('colour = "blue"\n', "colour"),
    ('partial_match_share = 3\n', "partial_match_share"),
    ('sensitive_folders = [\n', ""),
])
def test_a_document_the_agent_would_refuse_is_not_saved(document: str, key: str) -> None:
    store = MemoryStore()
    with pytest.raises(PolicyProblem) as refused:
        with store.transaction() as tx:
            _save(tx, document=document)
    assert refused.value.status == 422 and refused.value.key == key
    with store.read() as tx:
        assert tx.get_policy_version(name="finance") is None and not tx.list_audit(cursor=None, limit=5).items


def test_a_whole_agent_toml_is_stored_as_its_policy_table() -> None:
    with MemoryStore().transaction() as tx:
        made, _ = _save(tx, document='[policy]\nsensitive_folders = ["/srv/finance"]\n')
    assert made.document == 'sensitive_folders = ["/srv/finance"]\n'


def test_bad_names_and_labels_are_refused() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        with pytest.raises(PolicyProblem, match="policy name"):
            _save(tx, name="Finance Laptops")
        _save(tx)
        with pytest.raises(PolicyProblem, match="label"):
            policies.assign(tx=tx, name="finance", labels=["Dept Finance"], priority=0, actor="it", now_ns=1)
        with pytest.raises(PolicyProblem) as missing:
            policies.assign(tx=tx, name="nope", labels=["a"], priority=0, actor="it", now_ns=1)
        assert missing.value.status == 404


def test_assigning_moves_labels_and_is_audited() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        _save(tx, name="finance")
        _save(tx, name="strict")
        policies.assign(tx=tx, name="finance", labels=["dept:finance", "site:sh"], priority=10, actor="it", now_ns=2)
        policies.assign(tx=tx, name="strict", labels=["site:sh"], priority=20, actor="it", now_ns=3)
        policies.assign(tx=tx, name="finance", labels=["dept:finance", "*"], priority=10, actor="it", now_ns=4)
        got = {a.label: a.policy_name for a in tx.list_assignments()}
        last = tx.list_audit(cursor=None, limit=1).items[0]
    assert got == {"dept:finance": "finance", "site:sh": "strict", "*": "finance"}
    assert last.action == "policy.assign" and last.details["before"] == ["dept:finance"]


def _assignments(rows: list[tuple[str, str, int]]) -> list[Assignment]:
    return [Assignment(label, name, priority, "it", 0) for label, name, priority in rows]


def test_resolution_takes_the_highest_priority_then_the_first_name_and_the_default_last() -> None:
    rows = _assignments([("dept:finance", "finance", 10), ("site:sh", "shanghai", 20), ("team:x", "alpha", 20),
                         ("*", "baseline", 99)])
    assert resolve(["dept:finance"], rows).policy_name == "finance"
    assert resolve(["dept:finance", "site:sh"], rows).policy_name == "shanghai"
    assert resolve(["site:sh", "team:x"], rows).policy_name == "alpha"  # tie: the name that sorts first
    assert resolve(["other"], rows).policy_name == "baseline"  # only when nothing else matches
    assert resolve(["other"], rows[:3]) is None


_labels = st.lists(st.sampled_from(["a", "b", "c", "d", "*"]), max_size=5)


@settings(max_examples=200)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "*"]), st.sampled_from(["p", "q", "r"]),
                               st.integers(-3, 3)), max_size=6, unique_by=lambda r: r[0]),
       labels=_labels, data=st.data())
def test_resolution_is_deterministic_whatever_the_order(rows: list[tuple[str, str, int]], labels: list[str],
                                                       data: st.DataObject) -> None:
    assignments = _assignments(rows)
    shuffled = data.draw(st.permutations(assignments))
    picked = resolve(labels, assignments)
    assert picked == resolve(list(reversed(labels)), shuffled)
    matching = [a for a in assignments if a.label in labels and a.label != "*"]
    if matching:
        assert picked is not None and picked.priority == max(a.priority for a in matching)


@settings(max_examples=50, deadline=None)
@given(documents=st.lists(st.sampled_from(["/srv/a", "/srv/b", "/home/*/C", "/data"]), min_size=1, max_size=8))
def test_versions_strictly_increase(documents: list[str]) -> None:
    store = MemoryStore()
    seen = []
    for i, folder in enumerate(documents):
        with store.transaction() as tx:
            made, _ = _save(tx, document=f'sensitive_folders = ["{folder}"]\n', now_ns=i)
        seen.append(made.version)
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    with store.read() as tx:
        versions = [v.version for v in tx.list_policy_versions("finance")]
    assert versions == list(range(len(versions), 0, -1))  # 1..n, none skipped, none repeated


def _event(kind: str, seq: int = 1, **attributes: Any) -> StoredEvent:
    return StoredEvent("ws-1", 1, seq, f"e{seq}", kind, 1000 + seq, attributes=attributes)


def test_reports_are_recorded_only_when_they_change_and_a_refusal_alerts_once() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        made, _ = _save(tx)
        applied = _event("policy.applied", name="finance", version=1.0, sha256=made.sha256, source="collector")
        state = policies.record_reports(tx=tx, agent_id="ws-1", events=[applied], now_ns=5)
        assert state is not None and (state.applied_name, state.applied_version) == ("finance", 1)
        beat = _event("agent.heartbeat", 2, policy_name="finance", policy_version=1, policy_sha256=made.sha256)
        assert policies.record_reports(tx=tx, agent_id="ws-1", events=[beat], now_ns=6) is None
        refused = _event("policy.refused", 3, name="finance", version=2, sha256="ab" * 32, reason="bad glob")
        for now in (7, 8):
            policies.record_reports(tx=tx, agent_id="ws-1", events=[refused], now_ns=now)
        alerts = tx.list_alerts(cursor=None, limit=10).items
        state = tx.get_agent_policy_state("ws-1")
    assert [(a.rule, a.agent_id, a.occurrences) for a in alerts] == [("policy_refused", "ws-1", 1)]
    assert "bad glob" in alerts[0].summary
    assert state is not None and (state.applied_version, state.refused_version, state.refused_reason) == (
        1, 2, "bad glob")


def test_an_unknown_version_is_recorded_and_shown_as_unknown() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        tx.s.agents["ws-1"] = _agent("ws-1", "dept:finance")
        _save(tx)
        policies.assign(tx=tx, name="finance", labels=["dept:finance"], priority=0, actor="it", now_ns=1)
        policies.record_reports(tx=tx, agent_id="ws-1", now_ns=5, events=[
            _event("policy.applied", name="finance", version="77", sha256="00" * 32, source="collector")])
        view = policies.agent_view(tx=tx, agent_id="ws-1")
        nobody = policies.agent_view(tx=tx, agent_id="ws-9")
    assert view is not None and view.applied_known is False and view.in_sync is False
    assert view.assigned is not None and view.assigned.version == 1 and view.assigned_by_label == "dept:finance"
    assert nobody is None


def test_summaries_count_where_the_newest_version_has_reached() -> None:
    store = MemoryStore()
    with store.transaction() as tx:
        for agent in (_agent("ws-1", "dept:finance"), _agent("ws-2", "dept:finance"), _agent("ws-3", "dept:hr")):
            tx.s.agents[agent.agent_id] = agent
        made, _ = _save(tx)
        _save(tx, name="hr")
        policies.assign(tx=tx, name="finance", labels=["dept:finance"], priority=5, actor="it", now_ns=1)
        policies.record_reports(tx=tx, agent_id="ws-1", now_ns=5, events=[
            _event("policy.applied", name="finance", version=1, sha256=made.sha256, source="collector")])
        rows = {s.latest.name: s for s in policies.summaries(tx=tx)}
    assert (rows["finance"].assigned_agents, rows["finance"].applied_latest, rows["finance"].labels) == (
        2, 1, ("dept:finance",))
    assert (rows["hr"].assigned_agents, rows["hr"].labels, rows["hr"].priority) == (0, (), None)


_report_events = st.lists(st.one_of(
    st.builds(lambda v, s: _event("policy.applied", name="finance", version=v, sha256=s, source="collector"),
              st.integers(0, 3), st.sampled_from(["aa", "bb"])),
    st.builds(lambda v, r: _event("policy.refused", name="finance", version=v, sha256="cc", reason=r),
              st.integers(0, 3), st.sampled_from(["bad glob", ""])),
    st.builds(lambda v: _event("agent.heartbeat", policy_name="finance", policy_version=float(v), policy_sha256="aa",
                               policy_source="collector"), st.integers(0, 3)),
    st.builds(lambda: _event("file.write", path="/srv/finance/x")),
), max_size=6)


@settings(max_examples=200)
@given(first=_report_events)
def test_a_report_once_recorded_changes_nothing_when_heard_again(first: list[StoredEvent]) -> None:
    state = policies.reported(first, None, agent_id="ws-1", now_ns=1)
    assert state is not None  # a first report always makes the row
    assert policies.reported(first, state, agent_id="ws-1", now_ns=2) is None  # redelivered: no write
    # a heartbeat naming what is recorded writes nothing either
    if state.applied_name is not None and state.applied_version is not None and state.applied_sha256 is not None:
        beat = _event("agent.heartbeat", policy_name=state.applied_name, policy_version=state.applied_version,
                      policy_sha256=state.applied_sha256, policy_source=state.applied_source or "")
        assert policies.reported([beat], state, agent_id="ws-1", now_ns=3) is None
