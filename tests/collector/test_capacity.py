"""Capacity and refusal on the grpc.aio collector, over real mutual TLS on loopback (issue 8,
"Hold a real fleet, and refuse to be held down").

Each test here would fail on the old thread-per-stream server: it held 31 streams, stalled
enrollment calls shared the agents' threads, one certificate could hold every thread, ten malformed
batches made ten alerts, store errors reached agents raw, and a renewal left the old certificate valid.

Clients are grpc.aio channels in the test process (the collector's listeners run on a loop of their
own in a thread); every wait is bounded in count and time, and nothing asserts a speed.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterator

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from shoumi.tls import TLS_NAME
from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from agent.tls import check_issued, fetch_pinned_ca, new_key_and_csr
from collector.events.models import EventFilter
from collector.settings import CollectorSettings
from collector.storage import MemoryStore, open_store
from collector.wiring import Built, build_services

from tests.conftest import ChainWriter, PerCall

STREAM = "/shoumi.v1.IngestService/StreamEvents"
ENROLL = "/shoumi.v1.EnrollmentService/Enroll"
RENEW = "/shoumi.v1.CertificateService/Renew"
OPTIONS = [("grpc.ssl_target_name_override", TLS_NAME), ("grpc.use_local_subchannel_pool", 1)]


class Agent:
    """What an enrolled agent holds: its signing key, TLS key and certificate, and its chain."""

    def __init__(self, agent_id: str, key: Ed25519PrivateKey, tls_key: bytes, cert: bytes, ca: bytes) -> None:
        self.agent_id, self.key, self.tls_key, self.cert, self.ca = agent_id, key, tls_key, cert, ca
        self.writer = ChainWriter(agent_id, key)

    def channel(self, port: int, *, key: bytes | None = None, cert: bytes | None = None) -> grpc.aio.Channel:
        creds = grpc.ssl_channel_credentials(self.ca, key or self.tls_key, cert or self.cert)
        return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=OPTIONS)


def _settings(tmp_path: Path, **overrides: Any) -> CollectorSettings:
    return CollectorSettings(data_dir=tmp_path, grpc_listen="127.0.0.1:0", enroll_listen="127.0.0.1:0", **overrides)


@contextmanager
def _running(settings: CollectorSettings, store: Any) -> Iterator[Built]:
    built = build_services(settings, store=store)
    built.grpc.start()
    try:
        yield built
    finally:
        built.grpc.stop(grace=0)
        built.store.close()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Built]:
    with _running(_settings(tmp_path), PerCall(open_store(tmp_path))) as built:
        yield built


def _enroll(built: Built, hostname: str = "ws") -> Agent:
    """Enrollment in-process (the path over the wire is tested in test_tls and below): token, key, CSR."""
    key = Ed25519PrivateKey.generate()
    tls_key, csr = new_key_and_csr()
    with built.store.transaction() as tx:
        token = built.enrollment.create_token(tx=tx, actor="test")
        done = built.enrollment.enroll(tx=tx, token=token, public_key=key.public_key().public_bytes_raw(),
                                       hostname=hostname, os_name="Linux", agent_version="test", peer="test",
                                       csr_pem=csr)
    assert done.certificate is not None
    return Agent(done.agent_id, key, tls_key, done.certificate.pem, done.ca_pem)


def _open(channel: grpc.aio.Channel) -> Any:
    """A StreamEvents call; batches are written as messages (or raw bytes, see _open_raw)."""
    return channel.stream_stream(STREAM, request_serializer=events_pb2.EventBatch.SerializeToString,
                                 response_deserializer=events_pb2.Ack.FromString)()


def _open_raw(channel: grpc.aio.Channel) -> Any:
    return channel.stream_stream(STREAM, response_deserializer=events_pb2.Ack.FromString)()


async def _send(call: Any, batches: list[Any], *, timeout: float = 30.0) -> list[events_pb2.Ack]:
    """Writes each batch and reads its Ack before the next; raises AioRpcError on a refusal."""
    acks = []
    for batch in batches:
        await asyncio.wait_for(call.write(batch), timeout)
        ack = await asyncio.wait_for(call.read(), timeout)
        assert ack is not grpc.aio.EOF, "the stream ended without an Ack"
        acks.append(ack)
    return acks


async def _refusal(call: Any, batch: Any, *, timeout: float = 30.0) -> grpc.aio.AioRpcError:
    """Sends one batch on a stream the collector should refuse, and returns the refusal."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        try:
            await asyncio.wait_for(call.write(batch), timeout)
        except grpc.aio.AioRpcError:
            pass  # refused before the write went out: the status is on the read
        await asyncio.wait_for(call.read(), timeout)
    return refused.value


async def _until(check: Callable[[], bool], *, timeout: float, step: float = 0.05) -> bool:
    """Polls ``check`` until it holds or ``timeout`` seconds pass (at most timeout/step polls)."""
    for _ in range(int(timeout / step) + 1):
        if check():
            return True
        await asyncio.sleep(step)
    return check()


def _stored(built: Built, agent_id: str) -> int:
    with built.store.read() as tx:
        return len(tx.list_events(EventFilter(agent_id=agent_id), cursor=None, limit=100_000).items)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


async def _close(calls: list[Any], channels: list[grpc.aio.Channel]) -> None:
    """Cancels the calls and waits for their end before the channels close and the loop goes: gRPC's
    poller delivers to the loop a call was made on, and would find it closed."""
    for c in calls:
        c.cancel()
    await asyncio.wait_for(asyncio.gather(*(c.code() for c in calls), return_exceptions=True), 60)
    await asyncio.wait_for(asyncio.gather(*(ch.close() for ch in channels)), 60)


def _enroll_many(built: Built, n: int, prefix: str) -> list[Agent]:
    """n agents enrolled in one transaction (one commit), each with its own keys and certificate."""
    agents = []
    with built.store.transaction() as tx:
        for i in range(n):
            key = Ed25519PrivateKey.generate()
            tls_key, csr = new_key_and_csr()
            token = built.enrollment.create_token(tx=tx, actor="test")
            done = built.enrollment.enroll(tx=tx, token=token, public_key=key.public_key().public_bytes_raw(),
                                           hostname=f"{prefix}-{i}", os_name="Linux", agent_version="test",
                                           peer="test", csr_pem=csr)
            assert done.certificate is not None
            agents.append(Agent(done.agent_id, key, tls_key, done.certificate.pem, done.ca_pem))
    return agents


IDLE_STREAMS = 2_000


@pytest.mark.slow
def test_two_thousand_idle_streams_are_held_while_an_agent_keeps_storing(collector: Built) -> None:
    per_agent = collector.grpc.ingest_servicer.limits.max_streams_per_agent  # type: ignore[union-attr]
    started = time.monotonic()
    idle = _enroll_many(collector, -(-IDLE_STREAMS // per_agent), "idle")
    enrolled_s = time.monotonic() - started
    legit = _enroll(collector, "legit")
    port = collector.listeners.agent_port
    acks: list[events_pb2.Ack] = []
    figures: dict[str, Any] = {"agents": len(idle), "enroll_s": round(enrolled_s, 1), "rss_mb_before": _rss_mb()}

    async def keep_storing(stop: asyncio.Event) -> None:
        """The legitimate agent stores a batch after another, on one stream, before, during and after the ramp."""
        async with legit.channel(port) as channel:
            call = _open(channel)
            for _ in range(10_000):
                acks.extend(await _send(call, [legit.writer.next(5)], timeout=60))
                if stop.is_set():
                    break
                await asyncio.sleep(0.05)
            await call.done_writing()
            assert await asyncio.wait_for(call.read(), 30) is grpc.aio.EOF

    async def scenario() -> None:
        stop = asyncio.Event()
        storing = asyncio.create_task(keep_storing(stop))
        channels = [a.channel(port) for a in idle]
        calls: list[Any] = []
        try:
            t0 = time.monotonic()
            for channel in channels:  # one connection per agent, its certificate's full share of streams
                calls.extend(_open(channel) for _ in range(per_agent))
            await asyncio.wait_for(asyncio.gather(*(c.wait_for_connection() for c in calls)), 120)
            held = await _until(lambda: collector.grpc.open_streams() >= IDLE_STREAMS + 1, timeout=60)
            figures.update(streams_held=collector.grpc.open_streams(), open_s=round(time.monotonic() - t0, 1),
                           rss_mb_held=_rss_mb())
            assert held, f"only {collector.grpc.open_streams()} streams held"
            stored_during_ramp = len(acks)
            # with all of them held, the legitimate agent is still acknowledged, batch after batch
            assert await _until(lambda: len(acks) >= stored_during_ramp + 20, timeout=60)
            assert not any(c.done() for c in calls), "an idle stream was ended by the collector"
            assert collector.grpc.open_streams() >= IDLE_STREAMS + 1
            stop.set()
            await asyncio.wait_for(storing, 60)
        finally:
            stop.set()
            await _close(calls, channels)
            if not storing.done():
                storing.cancel()
            await asyncio.gather(storing, return_exceptions=True)

    _run(scenario)
    print(f"\ncapacity: {figures}, legit batches acked {len(acks)}")
    assert [a.acked_seq for a in acks] == [5 * (i + 1) for i in range(len(acks))]
    assert _stored(collector, legit.agent_id) == 5 * len(acks)
    assert _run_until_closed(collector)


def _run_until_closed(built: Built) -> bool:
    """Every stream the test opened is closed on the collector's side too (bounded wait)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and built.grpc.open_streams():
        time.sleep(0.05)
    return built.grpc.open_streams() == 0


STALLED = 200


def _enroll_channel(built: Built) -> grpc.aio.Channel:
    """A channel to the enrollment listener: TLS with the collector's CA, no client certificate."""
    return grpc.aio.secure_channel(f"127.0.0.1:{built.listeners.enroll_port}",
                                   grpc.ssl_channel_credentials(root_certificates=built.ca.cert_pem), options=OPTIONS)


def _stall(channel: grpc.aio.Channel) -> Any:
    """An Enroll call that sends its headers and never its message."""
    return channel.stream_unary(ENROLL, request_serializer=ingest_pb2.EnrollRequest.SerializeToString,
                                response_deserializer=ingest_pb2.EnrollResponse.FromString)()


async def _enroll_over_the_wire(built: Built) -> Agent:
    """The agent's enrollment: pinned CA, a real token, key and CSR, over the enrollment listener."""
    port = built.listeners.enroll_port
    ca = await asyncio.to_thread(fetch_pinned_ca, "127.0.0.1", port, built.ca.fingerprint(), timeout=30)
    key = Ed25519PrivateKey.generate()
    tls_key, csr = new_key_and_csr()
    with built.store.transaction() as tx:
        token = built.enrollment.create_token(tx=tx, actor="test")
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_certificates=ca),
                                       options=OPTIONS) as channel:
        reply = await ingest_pb2_grpc.EnrollmentServiceStub(channel).Enroll(ingest_pb2.EnrollRequest(
            token=token, public_key=key.public_key().public_bytes_raw(), hostname="newcomer", csr_pem=csr), timeout=30)
    check_issued(bytes(reply.client_certificate_pem), ca, reply.agent_id)
    assert reply.ingest_port == built.listeners.agent_port
    return Agent(reply.agent_id, key, tls_key, bytes(reply.client_certificate_pem), ca)


def _half_handshakes(port: int, n: int) -> list[socket.socket]:
    """n TCP connections that start a TLS ClientHello record and never finish it."""
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # a handshake record of 512 bytes: 6 of them sent
        socks.append(sock)
    return socks


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data would be a surprise; b"" is the collector's close
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_stalled_calls_without_credentials_hold_no_agent_and_no_enrollment_down(tmp_path: Path) -> None:
    with _running(_settings(tmp_path, enroll_timeout_seconds=120), PerCall(open_store(tmp_path))) as built:
        agent = _enroll(built)
        port = built.listeners.agent_port
        figures: dict[str, Any] = {}

        async def scenario() -> None:
            channels = [_enroll_channel(built) for _ in range(10)]
            stalled = [_stall(ch) for ch in channels for _ in range(STALLED // len(channels))]
            socks: list[socket.socket] = []
            try:
                await asyncio.wait_for(asyncio.gather(*(c.wait_for_connection() for c in stalled)), 60)
                socks = await asyncio.to_thread(_half_handshakes, port, STALLED)
                # with 200 enrollment calls stalled and 200 handshakes half done, an agent stores...
                async with agent.channel(port) as channel:
                    call = _open(channel)
                    acks = await _send(call, [agent.writer.next(3) for _ in range(5)])
                    await call.done_writing()
                assert [a.acked_seq for a in acks] == [3, 6, 9, 12, 15]
                # ...and a newcomer enrolls with a real token and stores too
                newcomer = await _enroll_over_the_wire(built)
                async with newcomer.channel(port) as channel:
                    assert [a.acked_seq for a in await _send(_open(channel), [newcomer.writer.next(2)])] == [2]
                # the stalled calls were open all along: the collector served around them
                assert not any(c.done() for c in stalled)
                figures.update(stalled_open=sum(not c.done() for c in stalled),
                               handshakes_open=sum(_still_open(s) for s in socks))
                # and the half-done handshakes are dropped by the collector (its handshake timeout)
                t0 = time.monotonic()
                assert await _until(lambda: not any(_still_open(s) for s in socks), timeout=60, step=0.5)
                figures["handshakes_dropped_after_s"] = round(time.monotonic() - t0, 1)
            finally:
                for sock in socks:
                    sock.close()
                await _close(stalled, channels)

        _run(scenario)
        print(f"\nstalled: {figures}")
        assert _stored(built, agent.agent_id) == 15


def test_an_enrollment_call_that_sends_nothing_is_ended_by_the_collector(tmp_path: Path) -> None:
    with _running(_settings(tmp_path, enroll_timeout_seconds=1), PerCall(open_store(tmp_path))) as built:

        async def scenario() -> None:
            channel = _enroll_channel(built)
            stalled = [_stall(channel) for _ in range(20)]
            try:
                await asyncio.wait_for(asyncio.gather(*(c.wait_for_connection() for c in stalled)), 30)
                # no deadline on the client's side: the collector ends them
                codes = await asyncio.wait_for(asyncio.gather(*(c.code() for c in stalled)), 60)
                assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
                assert "no enrollment request arrived in time" in await stalled[0].details()
                agent = await _enroll_over_the_wire(built)  # a real one still gets through
                assert agent.agent_id.startswith("agt-")
            finally:
                await _close(stalled, [channel])

        _run(scenario)


def test_one_certificate_holds_at_most_its_share_of_streams(collector: Built) -> None:
    a, b = _enroll(collector, "a"), _enroll(collector, "b")
    servicer = collector.grpc.ingest_servicer
    assert servicer is not None
    limit = servicer.limits.max_streams_per_agent
    port = collector.listeners.agent_port

    async def scenario() -> None:
        first, second = a.channel(port), a.channel(port)  # two connections with the same certificate
        held = [_open(first) for _ in range(limit - 1)] + [_open(second)]
        extra: list[Any] = []
        try:
            await asyncio.wait_for(asyncio.gather(*(c.wait_for_connection() for c in held)), 30)
            assert await _until(lambda: servicer.streams.get(a.agent_id) == limit, timeout=30)
            # one more, on either connection, is refused: the count is the certificate's, not the connection's
            extra = [_open(first), _open(second)]
            for call in extra:
                assert await asyncio.wait_for(call.code(), 30) == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert f"{limit} streams" in await call.details()
            assert collector.ingest.counters["rejected.too_many_streams"] == 2
            # another agent is unaffected, and so are a's own streams
            async with b.channel(port) as channel:
                assert [x.acked_seq for x in await _send(_open(channel), [b.writer.next(2)])] == [2]
            assert [x.acked_seq for x in await _send(held[0], [a.writer.next(2)])] == [2]
            # when one of a's streams closes, a new one is accepted
            await held[1].done_writing()
            assert await asyncio.wait_for(held[1].code(), 30) == grpc.StatusCode.OK
            assert await _until(lambda: servicer.streams.get(a.agent_id) == limit - 1, timeout=30)
            again = _open(second)
            held.append(again)
            assert [x.acked_seq for x in await _send(again, [a.writer.next(2)])] == [4]
            assert servicer.streams.get(a.agent_id) == limit
        finally:
            await _close(held + extra, [first, second])

    _run(scenario)
    assert _stored(collector, a.agent_id) == 4 and _stored(collector, b.agent_id) == 2


def _peek(writer: ChainWriter, n: int) -> events_pb2.EventBatch:
    """The writer's next batch, built without moving the writer on (for batches that will be refused)."""
    seq, last = writer.next_seq, writer.last_hash
    batch = writer.next(n)
    writer.next_seq, writer.last_hash = seq, last
    return batch


def _malformed(writer: ChainWriter, i: int, *, agent_id: str) -> bytes:
    """A batch naming ``agent_id`` that fails its shape check, ten different ways over i = 0..9."""
    batch = _peek(writer, 2)  # nothing of it is stored: the chain goes on from where it was
    batch.agent_id = agent_id
    match i % 5:
        case 0:
            del batch.events[:]
        case 1:
            batch.epoch = 0
        case 2:
            batch.prev_batch_hash = b"short"
        case 3:
            batch.signature = b"\x00" * 10
        case _:
            batch.events[1].seq = 99
    return batch.SerializeToString()


def test_ten_malformed_batches_make_one_alert_against_the_certificates_agent(collector: Built) -> None:
    a, b = _enroll(collector, "a"), _enroll(collector, "b")
    port = collector.listeners.agent_port

    async def scenario() -> None:
        async with a.channel(port) as channel:
            for i in range(10):  # each refusal ends its stream; half of them name agent b
                named = b.agent_id if i % 2 else a.agent_id
                refused = await _refusal(_open_raw(channel), _malformed(a.writer, i, agent_id=named))
                assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in (refused.details() or "")
            assert [x.acked_seq for x in await _send(_open(channel), [a.writer.next(3)])] == [3]

    _run(scenario)
    with collector.store.read() as tx:
        alerts = [x for x in tx.list_alerts(cursor=None, limit=100).items if x.rule.startswith("agent_")]
    assert len(alerts) == 1, alerts
    assert alerts[0].rule == "agent_malformed" and alerts[0].occurrences == 10 and alerts[0].agent_id == a.agent_id
    assert collector.ingest.counters["rejected.malformed"] == 10
    assert _stored(collector, a.agent_id) == 3 and _stored(collector, b.agent_id) == 0


_INTERNALS = ("127.0.0.1", "localhost", "sqlite", "psycopg", "postgres", "sqlalchemy", "memorystore", "traceback")


def test_an_unavailable_store_is_unavailable_to_agents_and_the_api_until_it_is_back(tmp_path: Path) -> None:
    store = MemoryStore()
    with _running(_settings(tmp_path), store) as built:
        agent = _enroll(built)
        with store.transaction() as tx:
            built.people.create_user(tx=tx, username="ana", role="security_analyst", password=None, actor="test")
            api_token = built.people.create_api_token(tx=tx, username="ana", actor="test")
        port = built.listeners.agent_port
        batch = agent.writer.next(4)
        client = TestClient(built.app)
        auth = {"Authorization": f"Bearer {api_token}"}
        try:
            store.available = False

            async def while_away() -> None:
                async with agent.channel(port) as channel:
                    refused = await _refusal(_open(channel), batch)
                assert refused.code() == grpc.StatusCode.UNAVAILABLE
                details = (refused.details() or "").lower()
                assert "retry" in details and str(port) not in details
                assert not any(word in details for word in _INTERNALS), details

            _run(while_away)
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["detail"]
            events = client.get("/api/v1/events", headers=auth)
            assert events.status_code == 503 and events.headers.get("Retry-After")
            assert not any(word in events.text.lower() for word in _INTERNALS), events.text

            store.available = True
            assert _stored(built, agent.agent_id) == 0  # nothing of the refused batch was kept
            assert client.get("/healthz").status_code == 200

            async def back() -> None:
                async with agent.channel(port) as channel:  # the agent's retry: the same batch again
                    assert [a.acked_seq for a in await _send(_open(channel), [batch])] == [4]

            _run(back)
            assert _stored(built, agent.agent_id) == 4
            listed = client.get("/api/v1/events", headers=auth)
            assert listed.status_code == 200 and len(listed.json()["items"]) == 4
            with store.read() as tx:
                assert tx.list_alerts(cursor=None, limit=10).items == ()  # an outage is no agent's fault
        finally:
            client.close()


def test_a_renewal_revokes_the_certificate_it_replaces(collector: Built) -> None:
    agent = _enroll(collector)
    port = collector.listeners.agent_port

    async def scenario() -> None:
        old = agent.channel(port)
        held = _open(old)  # a stream opened with the old certificate before the renewal
        try:
            assert [a.acked_seq for a in await _send(held, [agent.writer.next(1)])] == [1]
            key, csr = new_key_and_csr()
            reply = await ingest_pb2_grpc.CertificateServiceStub(old).Renew(ingest_pb2.RenewRequest(csr_pem=csr),
                                                                             timeout=30)
            fresh = bytes(reply.client_certificate_pem)
            check_issued(fresh, agent.ca, agent.agent_id)
            # the held stream's next batch is refused: the certificate it was opened with is revoked
            refused = await _refusal(held, _peek(agent.writer, 1))
            assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "revoked_certificate" in (refused.details() or "")
            # so is a new stream with the old certificate, on a new connection
            async with agent.channel(port) as again:
                refused = await _refusal(_open(again), _peek(agent.writer, 1))
            assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "revoked_certificate" in (refused.details() or "")
            # the new certificate works
            async with agent.channel(port, key=key, cert=fresh) as renewed:
                assert [a.acked_seq for a in await _send(_open(renewed), [agent.writer.next(1)])] == [2]
            # and the old one cannot renew again
            async with agent.channel(port) as again:
                with pytest.raises(grpc.aio.AioRpcError) as no_more:
                    await ingest_pb2_grpc.CertificateServiceStub(again).Renew(
                        ingest_pb2.RenewRequest(csr_pem=new_key_and_csr()[1]), timeout=30)
            assert no_more.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await _close([held], [old])

    _run(scenario)
    assert _stored(collector, agent.agent_id) == 2
    old_serial = x509.load_pem_x509_certificate(agent.cert).serial_number
    with collector.store.read() as tx:
        assert tx.certificate_status(serial=old_serial) == (agent.agent_id, True)

