"""Builds real stores for the tamper-evidence tests: agents enrolled, signed batches ingested."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.detection.rules import ReadBurstRule
from collector.fleet.models import AgentRecord
from collector.ingest.service import IngestService
from collector.verify import VerifyReport
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


def verify_dir(data_dir: Path) -> VerifyReport:
    """Runs verify over the SQLite store in a data directory, with the tree key kept there."""
    from collector.storage import open_store
    from collector.transparency import load_tree_key, tree_public_key
    from collector.verify import verify_store

    store = open_store(data_dir)
    try:
        return verify_store(store, tree_public_key=tree_public_key(load_tree_key(data_dir)))
    finally:
        store.close()


def run_sql(db: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Changes the SQLite file behind the collector's back, as someone with access to it could."""
    import sqlite3

    conn = sqlite3.connect(db)
    with conn:
        for sql, params in statements:
            conn.execute(sql, params)
    conn.close()
