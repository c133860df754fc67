"""Enrollment over gRPC on loopback with multi-use tokens: a token stops at its count, an expired or revoked one
is refused with a clear status and creates nothing, agents racing for the last use get exactly one agent, the
enrolled agents carry the token's labels, and a heartbeat over the stream fills the agent's health row."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.batch import GENESIS_HASH, sign_batch
from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from collector.settings import CollectorSettings
from collector.storage import open_store
from collector.wiring import Built, build_services

from tests.conftest import PG_DSN, PerCall, make_event, pg_url, fresh_pg_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def collector(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Built]:
    settings = CollectorSettings(data_dir=tmp_path, grpc_listen="127.0.0.1:0", insecure_dev=True)
    if request.param == "sqlite":
        store = open_store(tmp_path)
        built = build_services(settings, store=PerCall(store))  # type: ignore[arg-type]
        built.grpc.start()
        yield built
        built.grpc.stop(grace=0)
        store.close()
        return
    if not PG_DSN:
        pytest.skip("no PostgreSQL server: set SHOUMI_TEST_PG_DSN (as .ci/run does)")
    with fresh_pg_schema("fl") as schema:
        store = open_store(pg_url(schema))
        built = build_services(settings, store=PerCall(store))  # type: ignore[arg-type]
        built.grpc.start()
        yield built
        built.grpc.stop(grace=0)
        store.close()


def _enroll(port: int, token: str, hostname: str) -> tuple[str | None, grpc.RpcError | None]:
    key = Ed25519PrivateKey.generate()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = ingest_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
                ingest_pb2.EnrollRequest(token=token, public_key=key.public_key().public_bytes_raw(),
                                         hostname=hostname, os="Linux 6.1.0-18-amd64", agent_version="0.1.0"),
                timeout=20)
        except grpc.RpcError as exc:
            return None, exc
    return reply.agent_id, None


def _token(built: Built, **kwargs: object) -> str:
    with built.store.transaction() as tx:
        return built.enrollment.create_token(tx=tx, actor="ivan", **kwargs)  # type: ignore[arg-type]


def test_a_multi_use_token_enrolls_its_count_with_its_labels_then_refuses(collector: Built) -> None:
    token = _token(collector, max_uses=3, labels=["dept:finance", "floor-3"], ttl_ns=3600 * 10**9)
    ids = [_enroll(collector.grpc_port, token, f"ws-{i}")[0] for i in range(3)]
    assert all(ids)
    agent_id, refused = _enroll(collector.grpc_port, token, "ws-late")
    assert agent_id is None and refused is not None
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED and "every one of its uses is spent" in refused.details()
    agents = collector.store.list_agents()
    assert sorted(a.hostname for a in agents) == ["ws-0", "ws-1", "ws-2"]
    assert {a.labels for a in agents} == {("dept:finance", "floor-3")}
    [t] = collector.store.list_enroll_tokens()
    assert (t.uses, t.max_uses) == (3, 3)


def test_an_expired_or_revoked_token_is_refused_and_creates_nothing(collector: Built) -> None:
    expired = _token(collector, max_uses=10, ttl_ns=60 * 10**9)
    revoked = _token(collector, max_uses=10, ttl_ns=3600 * 10**9)
    with collector.store.transaction() as tx:
        assert collector.enrollment.revoke_token(tx=tx, token=revoked, actor="ivan")
    collector.enrollment.clock = lambda: time.time_ns() + 61 * 10**9  # a minute and a second later
    for token, says in ((expired, "expired"), (revoked, "revoked"), ("se_nothing", "unknown")):
        agent_id, refused = _enroll(collector.grpc_port, token, "ws")
        assert agent_id is None and refused is not None
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED and says in refused.details()
    assert collector.store.list_agents() == []
    assert [t.uses for t in collector.store.list_enroll_tokens()] == [0, 0]


def test_agents_racing_for_the_last_use_get_exactly_one_agent(collector: Built) -> None:
    token = _token(collector, max_uses=2, ttl_ns=3600 * 10**9)
    assert _enroll(collector.grpc_port, token, "first")[0]
    results: list[tuple[str | None, grpc.RpcError | None]] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        results.append(_enroll(collector.grpc_port, token, f"racer-{i}"))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    losers = [refused for agent_id, refused in results if not agent_id]
    assert len(results) == 8 and len(losers) == 7
    assert all(e is not None and e.code() == grpc.StatusCode.PERMISSION_DENIED for e in losers)
    assert len(collector.store.list_agents()) == 2


def test_a_heartbeat_over_the_stream_fills_the_health_row(collector: Built) -> None:
    token = _token(collector, ttl_ns=3600 * 10**9)
    agent_id, _ = _enroll(collector.grpc_port, token, "ws")
    assert agent_id
    key = Ed25519PrivateKey.generate()  # enroll with a key we hold, for signing
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        reply = ingest_pb2_grpc.EnrollmentServiceStub(channel).Enroll(ingest_pb2.EnrollRequest(
            token=_token(collector, ttl_ns=3600 * 10**9), public_key=key.public_key().public_bytes_raw(),
            hostname="ws-2", os="Linux"), timeout=20)
        batch = events_pb2.EventBatch(agent_id=reply.agent_id, epoch=1, first_seq=1, prev_batch_hash=GENESIS_HASH,
                                      created_unix_ns=time.time_ns())
        batch.events.append(make_event(1, user="zhang.san"))
        beat = make_event(2, kind="agent.heartbeat", user="", path="")
        beat.attributes.update({"spool_unacked_events": 12, "spool_unsealed": 0, "spool_bytes": 9000,
                                "spool_refused_pending": 0, "capture_gaps": 4, "version": "0.1.0",
                                "interval_s": 30})
        batch.events.append(beat)
        sign_batch(batch, key)
        acks = list(ingest_pb2_grpc.IngestServiceStub(channel).StreamEvents(iter([batch]), timeout=20))
    assert [a.acked_seq for a in acks] == [2]
    health = collector.store.get_agent_health(reply.agent_id)
    assert health is not None
    assert (health.spool_unacked_events, health.spool_bytes, health.capture_gaps, health.users) == (
        12, 9000, 4, ("zhang.san",))
    assert abs(health.clock_skew_ms) < 60_000
    assert collector.store.get_agent_health(agent_id) is None  # no heartbeat from that one


def test_people_of_batches_between_heartbeats_reach_the_health_row() -> None:
    from collector.events.models import StoredEvent
    from collector.fleet.health import UsersSeen, record_health
    from collector.fleet.models import AgentRecord
    from collector.storage import MemoryStore

    store, seen = PerCall(MemoryStore()), UsersSeen(max_agents=2)
    agent = AgentRecord("agt-1", b"k" * 32, "ws", "Linux", "0.1.0", 1)

    def event(seq: int, kind: str = "file.read", user: str = "") -> StoredEvent:
        return StoredEvent(agent_id="agt-1", epoch=1, seq=seq, id=f"e{seq}", kind=kind, time_ns=seq, path="",
                           user=user, attributes={"capture_gaps": 1} if kind == "agent.heartbeat" else {})

    with store.transaction() as tx:
        record_health(tx=tx, agent=agent, events=[event(1, user="zhang.san"), event(2, user="li.si")],
                      received_ns=10, skew_ns=0, seen=seen)
        assert tx.get_agent_health("agt-1") is None  # no heartbeat: nothing written
        record_health(tx=tx, agent=agent, events=[event(3, user="wang.wu")], received_ns=11, skew_ns=0, seen=seen)
        record_health(tx=tx, agent=agent, events=[event(4, "agent.heartbeat")], received_ns=12, skew_ns=0, seen=seen)
        health = tx.get_agent_health("agt-1")
    assert health is not None and health.users == ("wang.wu", "li.si", "zhang.san")
    assert seen.take("agt-1") == []  # written and forgotten
    for i in range(3):
        seen.note(f"agt-{i}", ["u"])
    assert seen.take("agt-0") == [] and seen.take("agt-2") == ["u"]  # bounded: a full table starts again
