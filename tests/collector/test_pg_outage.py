"""PostgreSQL going away mid-ingest: agents are told to retry, nothing is lost, the collector recovers
by itself, and the API answers 503 with a reason meanwhile.

The database is the real server; between it and the collector sits a small TCP relay written for this
test, which can cut every connection and refuse new ones (as a restart or a network cut does) and then
let them through again.
"""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path
from typing import Iterator

import grpc
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from collector.events.models import EventFilter
from collector.settings import CollectorSettings
from collector.storage import open_store
from collector.wiring import Built, build_services

from tests.conftest import PG_DSN, ChainWriter

pytestmark = pytest.mark.postgres


class Relay:
    """Forwards loopback TCP to PostgreSQL until cut; while cut, new connections are closed at once."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[Built, Relay]]:
    if not PG_DSN:
        pytest.skip("no PostgreSQL server: set SHOUMI_TEST_PG_DSN (as .ci/run does)")
    url = sa.engine.make_url(PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"o_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    relayed = url.set(host="127.0.0.1", port=relay.port, query={"options": f"-csearch_path={schema}", "connect_timeout": "3"})
    store = open_store(relayed.render_as_string(hide_password=False))
    settings = CollectorSettings(data_dir=tmp_path, grpc_listen="127.0.0.1:0", insecure_dev=True)
    built = build_services(settings, store=store)
    built.grpc.start()
    try:
        yield built, relay
    finally:
        built.grpc.stop(grace=0)
        relay.close()
        store.close()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def _stream(port: int, batches: list[events_pb2.EventBatch]) -> list[events_pb2.Ack]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return list(ingest_pb2_grpc.IngestServiceStub(ch).StreamEvents(iter(batches), timeout=20))


def test_a_database_that_goes_away_loses_nothing_and_is_recovered_without_a_restart(outage: tuple[Built, Relay]) -> None:
    built, relay = outage
    key = Ed25519PrivateKey.generate()
    with built.store.transaction() as tx:
        token = built.enrollment.create_token(tx=tx, actor="test")
    with grpc.insecure_channel(f"127.0.0.1:{built.grpc_port}") as ch:
        agent_id = ingest_pb2_grpc.EnrollmentServiceStub(ch).Enroll(ingest_pb2.EnrollRequest(
            token=token, public_key=key.public_key().public_bytes_raw(), hostname="ws", os="Linux",
            agent_version="t"), timeout=10).agent_id
    writer = ChainWriter(agent_id, key)
    first, second = writer.next(5), writer.next(5)
    assert [a.acked_seq for a in _stream(built.grpc_port, [first])] == [5]
    http = TestClient(built.app)
    assert http.get("/healthz").status_code == 200

    relay.cut()
    with pytest.raises(grpc.RpcError) as away:
        _stream(built.grpc_port, [second])
    assert away.value.code() == grpc.StatusCode.UNAVAILABLE  # the agent keeps the batch and retries
    assert str(relay.port) not in (away.value.details() or "") and "psycopg" not in (away.value.details() or "")
    health = http.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert str(relay.port) not in health.text
    assert http.get("/api/v1/events", headers={"Authorization": "Bearer sa_x"}).status_code == 503

    relay.restore()  # the database is back: the same collector process, no restart
    assert [a.acked_seq for a in _stream(built.grpc_port, [second])] == [10]
    assert http.get("/healthz").status_code == 200
    with built.store.read() as tx:
        stored = [e.seq for e in tx.list_events(EventFilter(), cursor=None, limit=100).items]
    assert stored == list(range(1, 11))  # nothing lost, nothing twice
