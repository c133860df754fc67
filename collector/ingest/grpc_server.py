"""The gRPC adapter: the agent listener (mutual TLS) and the enrollment listener (TLS).

Translates IngestError / EnrollmentError into gRPC statuses; a refused stream ends with a status
and never disturbs another agent's stream. On the agent listener every stream is bound to the
client certificate it came with: the certificate must be one the collector issued and has not
revoked, and every batch on the stream must be that agent's.
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import grpc
from cryptography import x509

from shoumi.batch import MalformedBatch
from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from collector.enrollment import EnrollmentError, EnrollmentService
from collector.ingest.codec import decode_batch
from collector.ingest.service import IngestError, IngestService
from collector.pki import agent_id_of

__all__ = ["TlsMaterial", "Listeners", "build_grpc_server"]

log = logging.getLogger("shoumi.collector.grpc")


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


@lru_cache(maxsize=4096)
def _identity(cert_pem: bytes) -> tuple[str | None, int]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return agent_id_of(cert_pem), cert.serial_number


def _peer_agent(context: grpc.ServicerContext) -> tuple[str, int] | None:
    """The (agent id, certificate serial) of a verified client certificate, or None."""
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        return None
    agent_id, serial = _identity(bytes(pems[0]))
    return (agent_id, serial) if agent_id else None


class _IngestServicer:
    """StreamEvents takes raw bytes: we decode them ourselves, so that undecodable input gets a
    clean INVALID_ARGUMENT from our code (grpcio's own deserialization failure path left the
    server unable to stop in tests)."""

    def __init__(self, service: IngestService, *, require_certificate: bool) -> None:
        self.service = service
        self.require_certificate = require_certificate

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "shoumi.v1.IngestService",
            {
                "StreamEvents": grpc.stream_stream_rpc_method_handler(
                    self.StreamEvents, response_serializer=events_pb2.Ack.SerializeToString
                )
            },
        )

    def StreamEvents(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[events_pb2.Ack]:
        peer = _peer_agent(context)
        if self.require_certificate and peer is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "agents stream on the agent listener with their client certificate")
        for raw in request_iterator:
            try:
                batch = decode_batch(raw)
            except MalformedBatch as exc:
                self.service.counters["rejected.undecodable"] += 1
                log.warning("refused undecodable batch from %s: %s", context.peer(), exc)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed: {exc}")
            try:
                ack = self.service.ingest(
                    batch,
                    authenticated_agent=peer[0] if peer else None,
                    certificate_serial=peer[1] if peer else None,
                )
            except IngestError as exc:
                context.abort(getattr(grpc.StatusCode, exc.status), f"{exc.reason}: {exc}")
            yield events_pb2.Ack(
                agent_id=ack.agent_id, epoch=ack.epoch, acked_seq=ack.acked_seq, batch_hash=ack.batch_hash
            )


class _EnrollmentServicer(ingest_pb2_grpc.EnrollmentServiceServicer):
    def __init__(self, service: EnrollmentService, *, ingest_port: int) -> None:
        self.service = service
        self.ingest_port = ingest_port

    def Enroll(
        self, request: ingest_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> ingest_pb2.EnrollResponse:
        peer = context.peer()
        try:
            done = self.service.enroll(
                token=request.token,
                public_key=bytes(request.public_key),
                hostname=request.hostname,
                os_name=request.os,
                agent_version=request.agent_version,
                peer=peer,
                csr_pem=bytes(request.csr_pem),
            )
        except EnrollmentError as exc:
            log.warning("enrollment refused from %s: %s", peer, exc)
            context.abort(getattr(grpc.StatusCode, exc.status), str(exc))
        return ingest_pb2.EnrollResponse(
            agent_id=done.agent_id,
            client_certificate_pem=done.certificate.pem if done.certificate else b"",
            ca_certificate_pem=done.ca_pem,
            ingest_port=self.ingest_port,
        )


class _CertificateServicer(ingest_pb2_grpc.CertificateServiceServicer):
    def __init__(self, service: EnrollmentService) -> None:
        self.service = service

    def Renew(self, request: ingest_pb2.RenewRequest, context: grpc.ServicerContext) -> ingest_pb2.RenewResponse:
        peer = _peer_agent(context)
        if peer is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "renewal needs the current client certificate")
        try:
            issued = self.service.renew(agent_id=peer[0], serial=peer[1], csr_pem=bytes(request.csr_pem))
        except EnrollmentError as exc:
            log.warning("renewal refused for %s: %s", peer[0], exc)
            context.abort(getattr(grpc.StatusCode, exc.status), str(exc))
        return ingest_pb2.RenewResponse(client_certificate_pem=issued.pem)


def build_grpc_server(
    *,
    ingest: IngestService,
    enrollment: EnrollmentService,
    listen: str,
    enroll_listen: str | None,
    tls: TlsMaterial | None,
    max_message_bytes: int,
    workers: int,
    max_connection_age_s: float = 900.0,
) -> tuple[grpc.Server, Listeners]:
    """Builds (not starts) the server and binds its listeners.

    With ``tls`` None (plaintext development mode) one plaintext listener serves everything.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_connection_age_ms", int(max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", 30_000),
        ],
        maximum_concurrent_rpcs=workers - 1,
    )
    if tls is None:
        agent_port = server.add_insecure_port(listen)
        enroll_port = agent_port
    else:
        agent_port = server.add_secure_port(listen, grpc.ssl_server_credentials(
            [(tls.server_key_pem, tls.server_chain_pem)], root_certificates=tls.ca_pem, require_client_auth=True))
        enroll_port = server.add_secure_port(enroll_listen or "127.0.0.1:0", grpc.ssl_server_credentials(
            [(tls.ca_key_pem, tls.ca_pem)]))
    if agent_port == 0 or enroll_port == 0:
        raise OSError(f"cannot listen on {listen} / {enroll_listen}")
    server.add_generic_rpc_handlers((_IngestServicer(ingest, require_certificate=tls is not None).handler(),))
    ingest_pb2_grpc.add_EnrollmentServiceServicer_to_server(_EnrollmentServicer(enrollment, ingest_port=agent_port), server)
    ingest_pb2_grpc.add_CertificateServiceServicer_to_server(_CertificateServicer(enrollment), server)
    return server, Listeners(agent_port, enroll_port)
