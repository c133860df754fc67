"""Shared fixtures: stores on real SQLite files and on the real PostgreSQL server, keys, batches."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import settings
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.batch import GENESIS_HASH, sign_batch
from shoumi.v1 import events_pb2

from collector.storage import MemoryStore, SqlStore, open_store
from collector.storage.base import Store

PG_DSN = os.environ.get("SHOUMI_TEST_PG_DSN")

# In CI the property tests run the same examples every time (a failure there reproduces); a developer's
# run explores new ones, and what it finds is kept with @example.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


class PerCall:
    """A store whose area methods each run in a transaction of their own (the contract tests call
    them one at a time); ``transaction()``, ``read()``, ``health()`` and ``close()`` are the store's."""

    def __init__(self, store: Store) -> None:
        self.inner = store

    def transaction(self) -> Any:
        return self.inner.transaction()

    def read(self) -> Any:
        return self.inner.read()

    def health(self) -> str | None:
        return self.inner.health()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.inner.transaction() as tx:
                return getattr(tx, name)(*args, **kwargs)
        return call


def pg_url(schema: str) -> str:
    """A SQLAlchemy URL for the test server with ``schema`` as the search path."""
    assert PG_DSN
    base = PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def fresh_pg_schema(prefix: str = "t") -> Iterator[str]:
    """A new, empty schema on the test server, dropped afterwards (skips without a server)."""
    import sqlalchemy as sa

    if not PG_DSN:
        pytest.skip("no PostgreSQL server: set SHOUMI_TEST_PG_DSN (as .ci/run does)")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def _pg_store() -> Iterator[SqlStore]:
    import sqlalchemy as sa

    with fresh_pg_schema() as schema:
        store = SqlStore(sa.create_engine(pg_url(schema)))
        try:
            yield store
        finally:
            store.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Every store backend, each fresh: the contract suite runs against all of them."""
    if request.param == "memory":
        yield PerCall(MemoryStore())
    elif request.param == "sqlite":
        store = open_store(tmp_path / "collector")
        yield PerCall(store)
        store.close()
    else:
        for store in _pg_store():
            yield PerCall(store)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Any]:
    store = open_store(tmp_path / "collector")
    yield PerCall(store)
    store.close()


@pytest.fixture
def agent_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def make_event(seq: int, *, kind: str = "file.read", user: str = "alice", path: str | None = None,
               time_ns: int | None = None) -> events_pb2.Event:
    """A plausible wire event."""
    return events_pb2.Event(
        id=str(uuid.uuid4()),
        kind=kind,
        time_unix_ns=time_ns or time.time_ns(),
        seq=seq,
        path=path or f"/srv/finance/report-{seq}.xlsx",
        size=1234,
        sha256="ab" * 32,
        user=user,
        uid=1000,
        pid=4242,
        process="cat",
        exe="/usr/bin/cat",
    )


class ChainWriter:
    """Builds consecutive signed batches for one agent, as the agent's spool would."""

    def __init__(self, agent_id: str, key: Ed25519PrivateKey, *, epoch: int = 1) -> None:
        self.agent_id = agent_id
        self.key = key
        self.epoch = epoch
        self.next_seq = 1
        self.last_hash = GENESIS_HASH

    def next(self, n: int = 3, **event_fields: object) -> events_pb2.EventBatch:
        batch = events_pb2.EventBatch(
            agent_id=self.agent_id,
            epoch=self.epoch,
            first_seq=self.next_seq,
            prev_batch_hash=self.last_hash,
            created_unix_ns=time.time_ns(),
        )
        for i in range(n):
            batch.events.append(make_event(self.next_seq + i, **event_fields))  # type: ignore[arg-type]
        self.last_hash = sign_batch(batch, self.key)
        self.next_seq += n
        return batch


def enroll_agent(store: Any) -> tuple[str, Ed25519PrivateKey]:
    """An agent enrolled through a one-time token on a store whose methods run per call (``PerCall``):
    its id and its signing key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from collector.enrollment.service import EnrollmentService

    key = Ed25519PrivateKey.generate()
    svc = EnrollmentService(token_ttl_ns=600 * 10**9)
    token = svc.create_token(tx=store, actor="test")
    agent = svc.enroll(tx=store, token=token, public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
                       hostname="ws", os_name="Linux", agent_version="t", peer="test")
    return agent.agent_id, key


def _burst(*, threshold: int, minutes: float) -> Any:
    """Only the read-burst rule, with these thresholds (tests that count its alerts alone)."""
    from collector.detection.models import RuleSet

    off = {"enabled": False}
    return RuleSet.model_validate({"read_burst": {"threshold": threshold, "window_minutes": minutes},
                                   "bulk_read": off, "usb_exfiltration": off, "sensitive_copy_out": off,
                                   "after_hours": off, "first_access": off})
