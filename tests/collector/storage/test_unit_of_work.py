"""A unit of work commits the action and its audit row together, or neither; on every backend."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from collector.audit.models import AuditEntry
from collector.fleet import service as fleet
from collector.fleet.models import AgentRecord
from collector.people.service import BadRequest, PeopleService
from collector.storage import MemoryStore, open_store

from tests.conftest import PerCall


def _agent(agent_id: str) -> AgentRecord:
    return AgentRecord(agent_id, b"k" * 32, "ws-01", "Linux", "0.1.0", 1)


def _enrolled(store: PerCall, agent_id: str = "agt-1") -> None:
    store.add_enroll_token(token_hash=f"t-{agent_id}", created_at_ns=0, expires_at_ns=100, created_by="cli")
    assert store.consume_enroll_token(token_hash=f"t-{agent_id}", agent=_agent(agent_id), now_ns=1) is None


def test_an_action_and_its_audit_row_commit_together(any_store: PerCall) -> None:
    _enrolled(any_store)
    with any_store.transaction() as tx:
        assert fleet.revoke(tx=tx, agent_id="agt-1", actor="it", now_ns=5)
    assert any_store.get_agent("agt-1").revoked_at_ns == 5
    assert [e.action for e in any_store.list_audit(cursor=None, limit=5).items] == ["agent.revoke"]


def test_a_failure_after_the_action_leaves_neither(any_store: PerCall) -> None:
    _enrolled(any_store)
    with pytest.raises(RuntimeError):
        with any_store.transaction() as tx:
            fleet.revoke(tx=tx, agent_id="agt-1", actor="it", now_ns=5)
            raise RuntimeError("the process fails before the request ends")
    assert any_store.get_agent("agt-1").revoked_at_ns is None
    assert any_store.list_audit(cursor=None, limit=5).items == ()


def test_a_refused_request_writes_nothing(any_store: PerCall) -> None:
    people = PeopleService(session_ttl_ns=10**9)
    with any_store.transaction() as tx:
        people.create_user(tx=tx, username="ana", role="security_analyst", password=None, actor="cli")
    with pytest.raises(BadRequest):
        with any_store.transaction() as tx:
            people.create_user(tx=tx, username="ana", role="auditor", password=None, actor="cli")
    assert any_store.get_user("ana").role == "security_analyst"
    assert [e.action for e in any_store.list_audit(cursor=None, limit=5).items] == ["user.create"]


def test_reads_inside_a_transaction_see_its_own_writes(any_store: PerCall) -> None:
    with any_store.transaction() as tx:
        tx.append_audit(AuditEntry(1, "a", "x", "t"))
        assert [e.action for e in tx.list_audit(cursor=None, limit=5).items] == ["x"]


def test_an_unavailable_store_is_said_so_without_internals() -> None:
    store = MemoryStore()
    assert store.health() is None
    store.available = False
    assert store.health() is not None and "5432" not in (store.health() or "")


def test_the_sqlite_store_is_private_to_the_collector(tmp_path: Path) -> None:
    data = tmp_path / "collector"
    store = open_store(data)
    with store.transaction() as tx:
        tx.append_audit(AuditEntry(1, "a", "x", "t"))
    store.close()
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for name in os.listdir(data):
        if name.startswith("collector.db"):
            assert stat.S_IMODE(os.stat(data / name).st_mode) == 0o600, name


def test_the_cli_makes_the_data_directory_private(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "collector", "ca-fingerprint", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
