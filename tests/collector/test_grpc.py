"""The gRPC adapter on loopback: enrollment, streaming, statuses, and isolation between agents."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from collector.events.models import EventFilter
from collector.settings import CollectorSettings
from collector.wiring import Built, build_services

from collector.fleet import service as fleet
from collector.storage import open_store

from tests.conftest import ChainWriter, PerCall


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Built]:
    # plaintext development mode: these tests are about ingest semantics (test_tls.py covers mTLS)
    settings = CollectorSettings(data_dir=tmp_path, grpc_listen="127.0.0.1:0", insecure_dev=True,
                                 max_message_bytes=256 * 1024)
    built = build_services(settings, store=PerCall(open_store(tmp_path)))  # type: ignore[arg-type]
    built.grpc.start()
    yield built
    built.grpc.stop(grace=0)
    built.store.close()


@pytest.fixture
def channel(collector: Built) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as ch:
        yield ch


def _enroll(collector: Built, channel: grpc.Channel, key: Ed25519PrivateKey) -> str:
    token = collector.enrollment.create_token(tx=collector.store, actor="test")
    reply = ingest_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
        ingest_pb2.EnrollRequest(token=token, public_key=key.public_key().public_bytes_raw(), hostname="ws", os="Linux"),
        timeout=10,
    )
    return reply.agent_id


def _stream(channel: grpc.Channel, batches: list[events_pb2.EventBatch]) -> list[events_pb2.Ack]:
    return list(ingest_pb2_grpc.IngestServiceStub(channel).StreamEvents(iter(batches), timeout=20))


def test_enroll_then_stream_is_acked_after_storing(collector: Built, channel: grpc.Channel, agent_key: Ed25519PrivateKey) -> None:
    writer = ChainWriter(_enroll(collector, channel, agent_key), agent_key)
    acks = _stream(channel, [writer.next(100) for _ in range(5)])
    assert [a.acked_seq for a in acks] == [100, 200, 300, 400, 500]
    assert len(collector.store.list_events(EventFilter(), cursor=None, limit=1000).items) == 500


def test_reused_token_and_bad_key_get_statuses(collector: Built, channel: grpc.Channel, agent_key: Ed25519PrivateKey) -> None:
    stub = ingest_pb2_grpc.EnrollmentServiceStub(channel)
    token = collector.enrollment.create_token(tx=collector.store, actor="test")
    req = ingest_pb2.EnrollRequest(token=token, public_key=agent_key.public_key().public_bytes_raw(), hostname="ws")
    stub.Enroll(req, timeout=10)
    with pytest.raises(grpc.RpcError) as reused:
        stub.Enroll(req, timeout=10)
    assert reused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "used" in reused.value.details()
    with pytest.raises(grpc.RpcError) as bad_key:
        stub.Enroll(ingest_pb2.EnrollRequest(token="x", public_key=b"short", hostname="ws"), timeout=10)
    assert bad_key.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_refused_batch_ends_only_that_stream(collector: Built, channel: grpc.Channel, agent_key: Ed25519PrivateKey) -> None:
    good_key, bad_key = agent_key, Ed25519PrivateKey.generate()
    good = ChainWriter(_enroll(collector, channel, good_key), good_key)
    victim_id = _enroll(collector, channel, bad_key)
    victim = ChainWriter(victim_id, bad_key)
    first = victim.next(3)
    forged = victim.next(3)
    forged.events[0].path = "/tampered"
    with pytest.raises(grpc.RpcError) as refused:
        _stream(channel, [first, forged, victim.next(3)])
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "bad_signature" in refused.value.details()
    stored = collector.store.list_events(EventFilter(agent_id=victim_id), cursor=None, limit=100).items
    assert [e.seq for e in stored] == [1, 2, 3]
    assert [a.acked_seq for a in _stream(channel, [good.next(2)])] == [2]


def test_unknown_agent_and_malformed_batches_get_statuses(collector: Built, channel: grpc.Channel, agent_key: Ed25519PrivateKey) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        _stream(channel, [ChainWriter("agt-ghost", agent_key).next(1)])
    assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as empty:
        _stream(channel, [events_pb2.EventBatch(agent_id="agt-ghost")])
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_message_is_refused(collector: Built, channel: grpc.Channel, agent_key: Ed25519PrivateKey) -> None:
    writer = ChainWriter(_enroll(collector, channel, agent_key), agent_key)
    huge = writer.next(1)
    huge.events[0].path = "/x" * 200_000  # 400 KB > the 256 KiB limit of this collector
    with pytest.raises(grpc.RpcError) as refused:
        _stream(channel, [huge])
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert collector.store.list_events(EventFilter(), cursor=None, limit=10).items == ()


def test_undecodable_bytes_are_refused(collector: Built, agent_key: Ed25519PrivateKey) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as ch:
        raw = ch.stream_stream("/shoumi.v1.IngestService/StreamEvents",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as refused:
            list(raw(iter([b"\xff\xff\xff\xff garbage"]), timeout=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "undecodable" in refused.value.details()
    assert collector.ingest.counters["rejected.undecodable"] == 1
    from fastapi.testclient import TestClient

    with collector.store.transaction() as tx:  # /metrics is for IT and auditors
        collector.people.create_user(tx=tx, username="ivan", role="it_admin", password=None, actor="test")
        token = collector.people.create_api_token(tx=tx, username="ivan", actor="test")
    with TestClient(collector.app) as http:
        assert http.get("/metrics").status_code == 401
        text = http.get("/metrics", headers={"Authorization": f"Bearer {token}"}).text
    assert 'shoumi_ingest_total{what="rejected.undecodable"} 1' in text
