"""The policy area's contract, run against every store backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from collector.policy.models import AgentPolicyState, Assignment, PolicyVersion
from collector.storage.base import AlreadyExists


def _v(name: str, version: int, document: str = 'sensitive_folders = ["/srv/finance"]\n') -> PolicyVersion:
    return PolicyVersion(name, version, document, f"{version:064x}", "it.admin", 1000 + version, f"edit {version}")


def test_versions_are_kept_whole_and_read_newest_first(any_store: Any) -> None:
    for v in (_v("finance", 1), _v("finance", 2, "sensitive_folders = [\"/srv/中文\"]\n"), _v("hr", 1)):
        any_store.add_policy_version(v)
    assert [v.version for v in any_store.list_policy_versions("finance")] == [2, 1]
    assert any_store.get_policy_version(name="finance") == _v("finance", 2, "sensitive_folders = [\"/srv/中文\"]\n")
    assert any_store.get_policy_version(name="finance", version=1) == _v("finance", 1)
    assert any_store.get_policy_version(name="finance", version=9) is None
    assert any_store.get_policy_version(name="nope") is None
    assert [(v.name, v.version) for v in any_store.latest_policy_versions()] == [("finance", 2), ("hr", 1)]
    assert any_store.list_policy_versions("nope") == []


def test_a_version_number_is_taken_once(any_store: Any) -> None:
    any_store.add_policy_version(_v("finance", 1))
    with pytest.raises(AlreadyExists):
        any_store.add_policy_version(_v("finance", 1, "other = 1\n"))
    assert any_store.get_policy_version(name="finance", version=1) == _v("finance", 1)


def test_a_label_belongs_to_one_policy_and_can_be_taken_away(any_store: Any) -> None:
    any_store.put_assignment(Assignment("dept:finance", "finance", 10, "it", 5))
    any_store.put_assignment(Assignment("*", "baseline", 0, "it", 6))
    any_store.put_assignment(Assignment("dept:finance", "strict", 20, "it2", 7))  # moves
    assert list(any_store.list_assignments()) == [Assignment("*", "baseline", 0, "it", 6),
                                                  Assignment("dept:finance", "strict", 20, "it2", 7)]
    assert any_store.delete_assignment("dept:finance") is True
    assert any_store.delete_assignment("dept:finance") is False
    assert [a.label for a in any_store.list_assignments()] == ["*"]


def test_an_agents_report_is_replaced_whole(any_store: Any) -> None:
    first = AgentPolicyState("ws-1", 10, applied_name="finance", applied_version=2, applied_sha256="ab" * 32,
                             applied_source="collector", applied_at_ns=9)
    any_store.put_agent_policy_state(first)
    assert any_store.get_agent_policy_state("ws-1") == first
    second = AgentPolicyState("ws-1", 20, applied_name="finance", applied_version=2, applied_sha256="ab" * 32,
                              applied_source="collector", applied_at_ns=9, refused_name="finance", refused_version=3,
                              refused_sha256="cd" * 32, refused_reason="sensitive_folders: unclosed '['",
                              refused_at_ns=19)
    any_store.put_agent_policy_state(second)
    any_store.put_agent_policy_state(AgentPolicyState("ws-0", 5))
    assert any_store.get_agent_policy_state("ws-1") == second
    assert any_store.get_agent_policy_state("ws-9") is None
    assert [s.agent_id for s in any_store.list_agent_policy_states()] == ["ws-0", "ws-1"]


def test_policy_targets_are_the_unrevoked_agents_with_their_labels(any_store: Any) -> None:
    from collector.fleet.models import AgentRecord

    for agent_id in ("ws-2", "ws-1", "ws-3"):
        any_store.add_enroll_token(token_hash="t" + agent_id, created_at_ns=0, expires_at_ns=10, created_by="t")
        assert any_store.consume_enroll_token(token_hash="t" + agent_id, now_ns=1, agent=AgentRecord(
            agent_id, b"k" * 32, agent_id, "Linux", "0.1.0", 1)) is None
    any_store.set_agent_labels(agent_id="ws-1", labels=["dept:finance", "site:sh"])
    any_store.revoke_agent(agent_id="ws-3", now_ns=5)
    assert list(any_store.policy_targets()) == [("ws-1", ("dept:finance", "site:sh")), ("ws-2", ())]
