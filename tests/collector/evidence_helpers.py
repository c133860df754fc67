"""Builds real stores for the tamper-evidence tests: agents enrolled, signed batches ingested."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.detection.rules import ReadBurstRule
from collector.fleet.models import AgentRecord
from collector.ingest.service import IngestService
from collector.storage import SqlStore

from tests.conftest import ChainWriter


def enroll(store: SqlStore, agent_id: str, key: Ed25519PrivateKey) -> None:
    """Records an enrolled agent through the store's one-time-token path."""
    token = f"tok-{agent_id}"
    store.add_enroll_token(token_hash=token, created_at_ns=0, expires_at_ns=2**62, created_by="test")
    record = AgentRecord(agent_id, key.public_key().public_bytes_raw(), "ws", "Linux", "t", time.time_ns())
    assert store.consume_enroll_token(token_hash=token, agent=record, now_ns=1) is None


def ingest_service(store: SqlStore) -> IngestService:
    """The real ingest path, with a rule that will not fire on test data."""
    return IngestService(store)


def writers(store: SqlStore, *agent_ids: str) -> list[ChainWriter]:
    """Enrolls each agent with a fresh key and returns its chain writer."""
    out = []
    for agent_id in agent_ids:
        key = Ed25519PrivateKey.generate()
        enroll(store, agent_id, key)
        out.append(ChainWriter(agent_id, key))
    return out
