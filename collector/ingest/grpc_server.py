"""The gRPC adapter on grpc.aio: the agent listener (mutual TLS) and the enrollment listener (TLS).

A stream costs no thread: both listeners run on one asyncio loop in a thread of their own, and the
work of a batch (signature, transaction) runs in a small pool, so thousands of idle agent streams
are held at the cost of their memory. The enrollment listener is a server of its own, with its own
call limit, and a call that sends no message within ``enroll_timeout_s`` is ended: nobody without
a certificate can use up the agents' capacity. Each agent certificate may hold at most
``max_streams_per_agent`` streams at once, so one stolen certificate cannot either.

Errors become statuses here and nowhere else: IngestError and EnrollmentError carry theirs;
StoreUnavailable is UNAVAILABLE (the agent retries; nothing was stored); anything else is INTERNAL
with no details, and logged. Every stream is bound to its client certificate: the certificate must
be one the collector issued and has not revoked, and every batch on the stream must be that agent's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import grpc
from cryptography import x509

from shoumi.batch import MalformedBatch
from shoumi.v1 import events_pb2, ingest_pb2

from collector.enrollment.service import EnrollmentError, EnrollmentService
from collector.ingest.codec import decode_batch
from collector.ingest.service import AckValue, IngestError, IngestService, StreamState
from collector.pki import agent_id_of
from collector.storage.base import Store, StoreUnavailable

__all__ = ["TlsMaterial", "Listeners", "Limits", "GrpcServers"]

log = logging.getLogger("shoumi.collector.grpc")
T = TypeVar("T")


@dataclass(frozen=True)
class TlsMaterial:
    """Keys and certificates of the two listeners."""

    ca_pem: bytes
    ca_key_pem: bytes
    server_key_pem: bytes
    server_chain_pem: bytes


@dataclass(frozen=True)
class Listeners:
    """The ports bound; enroll_port equals agent_port in plaintext development mode."""

    agent_port: int
    enroll_port: int


@dataclass(frozen=True)
class Limits:
    """How much of the collector one caller may hold."""

    max_message_bytes: int = 4 * 1024 * 1024
    max_connection_age_s: float = 900.0
    max_streams_per_agent: int = 4
    workers: int = 4  # threads that verify and store batches
    stream_window: int = 8  # batches of one stream read ahead of its Acks
    inline_bytes: int = 16 * 1024  # batches up to this size are verified on the loop's thread
    max_bytes_in_flight: int = 64 * 1024 * 1024  # batches read and not answered yet, over all streams
    enroll_timeout_s: float = 10.0
    max_enroll_calls: int = 2048
    handshake_timeout_s: float = 10.0


@lru_cache(maxsize=8192)
def _identity(cert_pem: bytes) -> tuple[str | None, int]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return agent_id_of(cert_pem), cert.serial_number


def _peer_agent(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, int] | None:
    """The (agent id, certificate serial) of a verified client certificate, or None."""
    pems = list(context.auth_context().get("x509_pem_cert") or ())
    if not pems:
        return None
    agent_id, serial = _identity(bytes(pems[0]))
    return (agent_id, serial) if agent_id else None


class _Calls:
    """Runs blocking work in the pool and maps its errors to statuses."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool

    async def run(self, context: grpc.aio.ServicerContext[Any, Any], fn: Callable[[], T]) -> T:
        """Runs ``fn`` in the pool."""
        return await self._mapped(context, asyncio.get_running_loop().run_in_executor(self.pool, fn))

    async def run_mapped(self, context: grpc.aio.ServicerContext[Any, Any], work: Awaitable[T]) -> T:
        """Awaits ``work`` (a batch's Ack) and maps its errors to statuses."""
        return await self._mapped(context, work)

    async def _mapped(self, context: grpc.aio.ServicerContext[Any, Any], work: Awaitable[T]) -> T:
        try:
            return await work
        except IngestError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.status), f"{exc.reason}: {exc}")
        except EnrollmentError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.status), str(exc))
        except StoreUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the collector's store is unavailable; retry later")
        except Exception:
            log.exception("internal error serving %s", context.peer())
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("abort returned")  # pragma: no cover


class _Ingest:
    """StreamEvents takes raw bytes: we decode them ourselves, so that undecodable input gets a clean
    INVALID_ARGUMENT from our code."""

    def __init__(self, service: IngestService, calls: _Calls, *, require_certificate: bool, limits: Limits) -> None:
        self.service = service
        self.calls = calls
        self.require_certificate = require_certificate
        self.limits = limits
        self.streams: dict[str, int] = {}  # agent id -> open streams; touched only on the loop's thread
        self.in_flight_bytes = 0  # batches read and not answered yet, over all streams (the loop's thread too)
        self._freed: asyncio.Event | None = None
        self._answers: list[tuple[Future[AckValue], asyncio.Future[AckValue]]] = []
        self._answers_lock = threading.Lock()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("shoumi.v1.IngestService", {
            "StreamEvents": grpc.stream_stream_rpc_method_handler(
                self.stream_events, response_serializer=events_pb2.Ack.SerializeToString)})

    async def stream_events(self, requests: AsyncIterator[bytes],
                            context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[events_pb2.Ack]:
        peer = _peer_agent(context)
        if self.require_certificate and peer is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "agents stream on the agent listener with their client certificate")
        key = peer[0] if peer else context.peer()
        if self.streams.get(key, 0) >= self.limits.max_streams_per_agent:
            self.service.counters["rejected.too_many_streams"] += 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"agent already holds {self.limits.max_streams_per_agent} streams")
        self.streams[key] = self.streams.get(key, 0) + 1
        stream = StreamState()
        ahead: asyncio.Queue[asyncio.Future[AckValue] | None] = asyncio.Queue()
        window = asyncio.Semaphore(self.limits.stream_window)
        reader = asyncio.create_task(self._read(requests, peer, stream, ahead, window))
        try:
            while True:
                pending = await ahead.get()
                if pending is None:
                    break
                ack = await self.calls.run_mapped(context, pending)
                window.release()
                policies = self.service.policies  # what the agent is still to apply: a dict look-up, no query
                yield events_pb2.Ack(agent_id=ack.agent_id, epoch=ack.epoch, acked_seq=ack.acked_seq,
                                     batch_hash=ack.batch_hash,
                                     policy=policies.pending(ack.agent_id) if policies is not None else None)
        finally:
            reader.cancel()
            while not ahead.empty():  # answers nobody will read now (the stream ended): retrieved, not warned of
                left_over = ahead.get_nowait()
                if left_over is not None:
                    left_over.add_done_callback(_retrieved)
            left = self.streams.get(key, 1) - 1
            if left:
                self.streams[key] = left
            else:
                self.streams.pop(key, None)

    async def _read(self, requests: AsyncIterator[bytes], peer: tuple[str, int] | None, stream: StreamState,
                    ahead: asyncio.Queue[asyncio.Future[AckValue] | None], window: asyncio.Semaphore) -> None:
        """Reads the stream's batches and hands each to the committer, in order, while the Acks of the
        earlier ones are still due (at most ``stream_window`` ahead): a stream's next batch is verified
        while its last one commits, and a commit group holds more than one batch per stream."""
        loop = asyncio.get_running_loop()
        try:
            async for raw in requests:
                size = len(raw)
                await self._room(size)
                try:
                    decoded = self._decode(raw, peer, stream) if size <= self.limits.inline_bytes else None
                    if isinstance(decoded, Future):  # undecodable: refused
                        handed = decoded
                    elif decoded is not None and self.service.has_key(decoded.agent_id):
                        handed = self._submit(decoded, peer, stream, raw)  # small, and no store read: no hop to the pool
                    elif decoded is not None:
                        handed = await loop.run_in_executor(self.calls.pool,
                                                            functools.partial(self._submit, decoded, peer, stream, raw))
                    else:
                        handed = await loop.run_in_executor(self.calls.pool,
                                                            functools.partial(self._one, raw, peer, stream))
                    done = self._answer(loop, handed)
                except asyncio.CancelledError:
                    self._release(size)
                    raise
                except Exception as exc:  # refused before the committer: answered in its turn
                    done = loop.create_future()
                    done.set_exception(exc)
                done.add_done_callback(functools.partial(self._release, size))
                ahead.put_nowait(done)
                if stream.refused:
                    return  # what follows a refused batch cannot be stored; the stream ends with its answer
                await window.acquire()
        except Exception as exc:  # the call ended under us (cancelled, connection lost): the responder sees it
            log.debug("stream of %s ended while reading: %s", peer[0] if peer else "?", exc)
        finally:
            ahead.put_nowait(None)

    def _answer(self, loop: asyncio.AbstractEventLoop, handed: Future[AckValue]) -> asyncio.Future[AckValue]:
        """The loop's future of a committer's answer. Answers that come together (one commit group) wake
        the loop once, not once each."""
        done: asyncio.Future[AckValue] = loop.create_future()

        def settled(_: Future[AckValue]) -> None:  # on the settler's thread
            with self._answers_lock:
                self._answers.append((handed, done))
                first = len(self._answers) == 1
            if first:
                loop.call_soon_threadsafe(self._deliver)

        handed.add_done_callback(settled)
        return done

    def _deliver(self) -> None:
        with self._answers_lock:
            answers, self._answers = self._answers, []
        for handed, done in answers:
            if done.cancelled():
                continue
            exc = handed.exception()
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(handed.result())

    async def _room(self, size: int) -> None:
        """Waits while the batches read but not answered yet, over all streams, hold too many bytes."""
        if self._freed is None:
            self._freed = asyncio.Event()
        while self.in_flight_bytes and self.in_flight_bytes + size > self.limits.max_bytes_in_flight:
            self.service.counters["backpressure.waits"] += 1
            self._freed.clear()
            await self._freed.wait()
        self.in_flight_bytes += size

    def _release(self, size: int, _done: object = None) -> None:
        self.in_flight_bytes -= size
        if self._freed is not None:
            self._freed.set()

    def _one(self, raw: bytes, peer: tuple[str, int] | None, stream: StreamState) -> Future[AckValue]:
        decoded = self._decode(raw, peer, stream)
        return decoded if isinstance(decoded, Future) else self._submit(decoded, peer, stream, raw)

    def _decode(self, raw: bytes, peer: tuple[str, int] | None,
                stream: StreamState) -> events_pb2.EventBatch | Future[AckValue]:
        """The batch, or the refusal of bytes that are not one."""
        try:
            return decode_batch(raw)
        except MalformedBatch as exc:
            stream.refused = True
            error = IngestError("INVALID_ARGUMENT", "undecodable", f"malformed: {exc}")
            return self.service.refuse(error, agent_id=peer[0] if peer else "", authenticated_agent=peer[0] if peer else None)

    def _submit(self, batch: events_pb2.EventBatch, peer: tuple[str, int] | None, stream: StreamState,
                raw: bytes) -> Future[AckValue]:
        return self.service.submit(batch, authenticated_agent=peer[0] if peer else None,
                                   certificate_serial=peer[1] if peer else None, stream=stream, raw=raw)


def _retrieved(done: asyncio.Future[AckValue]) -> None:
    if not done.cancelled():
        done.exception()


class _Enrollment:
    """Enroll is served as a client stream so that a call that never sends its one message times out."""

    def __init__(self, service: EnrollmentService, store: Store, calls: _Calls, *, ingest_port: Callable[[], int],
                 limits: Limits) -> None:
        self.service = service
        self.store = store
        self.calls = calls
        self.ingest_port = ingest_port
        self.limits = limits
        self.policy_key: Callable[[], bytes] = lambda: b""  # the key agents pin for pushed policies (set at start)

    def enroll_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("shoumi.v1.EnrollmentService", {
            "Enroll": grpc.stream_unary_rpc_method_handler(
                self.enroll, request_deserializer=ingest_pb2.EnrollRequest.FromString,
                response_serializer=ingest_pb2.EnrollResponse.SerializeToString)})

    def renew_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("shoumi.v1.CertificateService", {
            "Renew": grpc.unary_unary_rpc_method_handler(
                self.renew, request_deserializer=ingest_pb2.RenewRequest.FromString,
                response_serializer=ingest_pb2.RenewResponse.SerializeToString)})

    async def enroll(self, requests: AsyncIterator[ingest_pb2.EnrollRequest],
                     context: grpc.aio.ServicerContext[Any, Any]) -> ingest_pb2.EnrollResponse:
        try:
            request = await asyncio.wait_for(requests.__anext__(), self.limits.enroll_timeout_s)
        except (asyncio.TimeoutError, StopAsyncIteration):
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no enrollment request arrived in time")
            raise AssertionError("abort returned")  # pragma: no cover
        peer = context.peer()

        def work() -> Any:
            with self.store.transaction() as tx:
                try:
                    return self.service.enroll(tx=tx, token=request.token, public_key=bytes(request.public_key),
                                               hostname=request.hostname, os_name=request.os,
                                               agent_version=request.agent_version, peer=peer,
                                               csr_pem=bytes(request.csr_pem))
                except EnrollmentError as exc:
                    log.warning("enrollment refused from %s: %s", peer, exc)
                    return exc  # the refusal's audit row commits; the caller gets the status
        done = await self.calls.run(context, work)
        if isinstance(done, EnrollmentError):
            await context.abort(getattr(grpc.StatusCode, done.status), str(done))
        return ingest_pb2.EnrollResponse(
            agent_id=done.agent_id, client_certificate_pem=done.certificate.pem if done.certificate else b"",
            ca_certificate_pem=done.ca_pem, ingest_port=self.ingest_port(),
            policy_public_key=self.policy_key())

    async def renew(self, request: ingest_pb2.RenewRequest,
                    context: grpc.aio.ServicerContext[Any, Any]) -> ingest_pb2.RenewResponse:
        peer = _peer_agent(context)
        if peer is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "renewal needs the current client certificate")
            raise AssertionError("abort returned")  # pragma: no cover

        def work() -> Any:
            with self.store.transaction() as tx:
                return self.service.renew(tx=tx, agent_id=peer[0], serial=peer[1], csr_pem=bytes(request.csr_pem))
        issued = await self.calls.run(context, work)
        return ingest_pb2.RenewResponse(client_certificate_pem=issued.pem)


class GrpcServers:
    """Both listeners on one asyncio loop in a thread of its own; ``start`` binds, ``stop`` drains."""

    def __init__(self, *, ingest: IngestService, enrollment: EnrollmentService, store: Store, listen: str,
                 enroll_listen: str | None, tls: TlsMaterial | None, limits: Limits = Limits()) -> None:
        self._args = (ingest, enrollment, store, listen, enroll_listen, tls, limits)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-loop", daemon=True)
        self._pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="ingest")
        self._servers: list[grpc.aio.Server] = []
        self.listeners = Listeners(0, 0)
        self.ingest_servicer: _Ingest | None = None

    def start(self) -> Listeners:
        """Binds and starts both listeners; raises OSError if a port cannot be bound."""
        self._thread.start()
        self.listeners = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self.listeners

    async def _start(self) -> Listeners:
        ingest, enrollment, store, listen, enroll_listen, tls, limits = self._args
        calls = _Calls(self._pool)
        options = [
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.max_connection_age_ms", int(limits.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", 30_000),
            ("grpc.server_handshake_timeout_ms", int(limits.handshake_timeout_s * 1000)),
            # a connection that died without a FIN (a laptop's network gone) is found and its streams
            # released, so the agent's reconnect is not refused for holding too many streams
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        # New calls wait in gRPC core until the loop takes them, one at a time; past 1,000 waiting
        # (core's default soft limit, 3,000 hard) core cancels new ones at random (CANCELLED). A fleet
        # reconnecting at once (2,000 streams opened in a burst in tests/collector/test_capacity.py)
        # lost 5-10% of its streams so. The agents' listener lets them wait: each costs only memory.
        agents = grpc.aio.server(options=options + [("grpc.server.max_pending_requests", 20_000),
                                                    ("grpc.server.max_pending_requests_hard_limit", 40_000)])
        self.ingest_servicer = _Ingest(ingest, calls, require_certificate=tls is not None, limits=limits)
        enroll = _Enrollment(enrollment, store, calls, ingest_port=lambda: self.listeners.agent_port, limits=limits)
        enroll.policy_key = lambda: ingest.policies.public_key if ingest.policies is not None else b""
        agents.add_generic_rpc_handlers((self.ingest_servicer.handler(), enroll.renew_handler()))
        self._servers.append(agents)
        if tls is None:
            agent_port = agents.add_insecure_port(listen)
            agents.add_generic_rpc_handlers((enroll.enroll_handler(),))
            enroll_port = agent_port
        else:
            agent_port = agents.add_secure_port(listen, grpc.ssl_server_credentials(
                [(tls.server_key_pem, tls.server_chain_pem)], root_certificates=tls.ca_pem, require_client_auth=True))
            enrollers = grpc.aio.server(options=options, maximum_concurrent_rpcs=limits.max_enroll_calls)
            enrollers.add_generic_rpc_handlers((enroll.enroll_handler(),))
            enroll_port = enrollers.add_secure_port(enroll_listen or "127.0.0.1:0", grpc.ssl_server_credentials(
                [(tls.ca_key_pem, tls.ca_pem)]))
            self._servers.append(enrollers)
        if agent_port == 0 or enroll_port == 0:
            raise OSError(f"cannot listen on {listen} / {enroll_listen}")
        for server in self._servers:
            await server.start()
        return Listeners(agent_port, enroll_port)

    def open_streams(self) -> int:
        """How many agent streams are open now."""
        servicer = self.ingest_servicer
        return 0 if servicer is None else sum(servicer.streams.values())

    def stop(self, grace: float = 5.0) -> None:
        """Stops taking calls, lets running ones finish for ``grace`` seconds, then ends the loop."""
        if not self._thread.is_alive():
            return

        async def _stop() -> None:
            await asyncio.gather(*(s.stop(grace) for s in self._servers))

        try:
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(grace + 10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._pool.shutdown(wait=True)
