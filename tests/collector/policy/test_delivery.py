"""Delivery: the in-memory map of what each agent is still to be sent, refreshed from the store; the key file."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.signed_policy import document_sha256, verify_policy

from collector.events.models import StoredEvent
from collector.fleet.models import AgentRecord
from collector.policy import service as policies
from collector.policy.delivery import PolicyDelivery, PolicyKeyError, load_or_create_policy_key
from collector.storage import MemoryStore

GOOD = 'sensitive_folders = ["/srv/finance"]\n'


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _setup() -> tuple[MemoryStore, PolicyDelivery, Clock]:
    store = MemoryStore()
    with store.transaction() as tx:
        for agent_id, label in (("ws-fin", "dept:finance"), ("ws-hr", "dept:hr")):
            tx.s.agents[agent_id] = AgentRecord(agent_id, b"k" * 32, agent_id, "Linux", "0.1.0", 1, labels=(label,))
        policies.save_version(tx=tx, name="finance", document=GOOD, author="it", comment="", now_ns=10)
        policies.assign(tx=tx, name="finance", labels=["dept:finance"], priority=0, actor="it", now_ns=11)
    clock = Clock()
    return store, PolicyDelivery(store, Ed25519PrivateKey.generate(), resend_s=5.0, monotonic=clock), clock


def _report(store: MemoryStore, delivery: PolicyDelivery, agent_id: str, kind: str, **attributes: Any) -> None:
    with store.transaction() as tx:
        delivery.observe(tx, agent_id, [StoredEvent(agent_id, 1, 1, "e1", kind, 5, attributes=attributes)])


def test_only_the_labelled_agent_is_sent_its_policy_signed_with_the_collectors_key() -> None:
    store, delivery, _ = _setup()
    assert delivery.refresh() == 1
    sent = delivery.pending("ws-fin")
    assert sent is not None and (sent.name, sent.version, bytes(sent.document)) == ("finance", 1, GOOD.encode())
    verify_policy(sent, delivery.public_key)
    assert delivery.pending("ws-hr") is None


def test_a_pending_policy_is_resent_at_most_every_few_seconds_until_answered() -> None:
    store, delivery, clock = _setup()
    delivery.refresh()
    assert delivery.pending("ws-fin") is not None
    assert delivery.pending("ws-fin") is None  # the next Ack, at once: not again
    clock.now += 6
    sent = delivery.pending("ws-fin")
    assert sent is not None
    _report(store, delivery, "ws-fin", "policy.applied", name="finance", version=1,
            sha256=document_sha256(bytes(sent.document)), source="collector")
    clock.now += 60
    assert delivery.pending("ws-fin") is None  # answered: cleared on the spot, before any refresh
    assert delivery.refresh() == 0


def test_a_refused_version_is_not_pushed_again_but_the_next_one_is() -> None:
    store, delivery, clock = _setup()
    delivery.refresh()
    _report(store, delivery, "ws-fin", "policy.refused", name="finance", version=1, sha256="x", reason="no")
    assert delivery.refresh() == 0
    with store.transaction() as tx:
        policies.save_version(tx=tx, name="finance", document=GOOD + 'destinations = ["/media"]\n', author="it",
                              comment="", now_ns=20)
    delivery.refresh()
    clock.now += 10
    sent = delivery.pending("ws-fin")
    assert sent is not None and sent.version == 2


def test_a_heartbeat_naming_the_same_policy_costs_no_store_write() -> None:
    store, delivery, _ = _setup()
    delivery.refresh()
    _report(store, delivery, "ws-fin", "agent.heartbeat", policy_name="", policy_version=0, policy_sha256="")
    with store.read() as tx:
        first = tx.get_agent_policy_state("ws-fin")
    _report(store, delivery, "ws-fin", "agent.heartbeat", policy_name="", policy_version=0, policy_sha256="")
    with store.read() as tx:
        assert tx.get_agent_policy_state("ws-fin") == first


def test_a_revoked_agent_is_sent_nothing() -> None:
    store, delivery, _ = _setup()
    with store.transaction() as tx:
        tx.s.agents["ws-fin"] = replace(tx.s.agents["ws-fin"], revoked_at_ns=5)
    assert delivery.refresh() == 0


def test_the_key_is_made_once_0600_and_kept(tmp_path: Path) -> None:
    first = load_or_create_policy_key(tmp_path / "data")
    again = load_or_create_policy_key(tmp_path / "data")
    assert first.public_key().public_bytes_raw() == again.public_key().public_bytes_raw()
    path = tmp_path / "data" / "policy-signing.key"
    assert os.stat(path).st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(PolicyKeyError, match="chmod 600"):
        load_or_create_policy_key(tmp_path / "data")
    os.chmod(path, 0o600)
    path.write_bytes(b"not a key")
    with pytest.raises(PolicyKeyError, match="not a PEM"):
        load_or_create_policy_key(tmp_path / "data")


def test_two_collectors_on_one_store_agree_through_it(tmp_path: Path) -> None:
    from collector.storage import open_store

    first, second = open_store(tmp_path / "db"), open_store(tmp_path / "db")  # two processes' stores, one database
    key = Ed25519PrivateKey.generate()  # the shared data directory's key
    try:
        with first.transaction() as tx:
            tx._conn.exec_driver_sql(
                "INSERT INTO agents (agent_id, public_key, hostname, os, agent_version, enrolled_at_ns, liveness) "
                "VALUES ('ws-fin', ?, 'ws', 'Linux', '0.1.0', 1, 'active')", (b"k" * 32,))
            tx.set_agent_labels(agent_id="ws-fin", labels=["dept:finance"])
            made, _ = policies.save_version(tx=tx, name="finance", document=GOOD, author="it", comment="", now_ns=10)
            policies.assign(tx=tx, name="finance", labels=["dept:finance"], priority=0, actor="it", now_ns=11)
        a, b = PolicyDelivery(first, key), PolicyDelivery(second, key)
        assert a.refresh() == b.refresh() == 1
        sent_a, sent_b = a.pending("ws-fin"), b.pending("ws-fin")
        assert sent_a is not None and sent_b is not None and sent_a.SerializeToString() == sent_b.SerializeToString()
        with first.transaction() as tx:  # the agent's report reaches collector A
            a.observe(tx, "ws-fin", [StoredEvent("ws-fin", 1, 1, "e1", "policy.applied", 5, attributes={
                "name": "finance", "version": 1, "sha256": made.sha256, "source": "collector"})])
        assert b.refresh() == 0  # B learns it from the store
    finally:
        first.close()
        second.close()
