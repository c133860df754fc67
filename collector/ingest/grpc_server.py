"""The gRPC adapter: IngestService and EnrollmentService over grpcio.

Translates IngestError / EnrollmentError into gRPC statuses; a refused stream ends with a status
and never disturbs another agent's stream.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Iterator

import grpc

from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from shoumi.batch import MalformedBatch

from collector.enrollment import EnrollmentError, EnrollmentService
from collector.ingest.codec import decode_batch
from collector.ingest.service import IngestError, IngestService

__all__ = ["build_grpc_server"]

log = logging.getLogger("shoumi.collector.grpc")


class _IngestServicer:
    """StreamEvents takes raw bytes: we decode them ourselves, so that undecodable input gets a
    clean INVALID_ARGUMENT from our code (grpcio's own deserialization failure path left the
    server unable to stop in tests)."""

    def __init__(self, service: IngestService) -> None:
        self.service = service

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
        for raw in request_iterator:
            try:
                batch = decode_batch(raw)
            except MalformedBatch as exc:
                self.service.counters["rejected.undecodable"] += 1
                log.warning("refused undecodable batch from %s: %s", context.peer(), exc)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed: {exc}")
            try:
                ack = self.service.ingest(batch)
            except IngestError as exc:
                context.abort(getattr(grpc.StatusCode, exc.status), f"{exc.reason}: {exc}")
            yield events_pb2.Ack(
                agent_id=ack.agent_id, epoch=ack.epoch, acked_seq=ack.acked_seq, batch_hash=ack.batch_hash
            )


class _EnrollmentServicer(ingest_pb2_grpc.EnrollmentServiceServicer):
    def __init__(self, service: EnrollmentService) -> None:
        self.service = service

    def Enroll(
        self, request: ingest_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> ingest_pb2.EnrollResponse:
        peer = context.peer()
        try:
            agent_id = self.service.enroll(
                token=request.token,
                public_key=bytes(request.public_key),
                hostname=request.hostname,
                os_name=request.os,
                agent_version=request.agent_version,
                peer=peer,
            )
        except EnrollmentError as exc:
            log.warning("enrollment refused from %s: %s", peer, exc)
            context.abort(getattr(grpc.StatusCode, exc.status), str(exc))
        return ingest_pb2.EnrollResponse(agent_id=agent_id)


def build_grpc_server(
    *,
    ingest: IngestService,
    enrollment: EnrollmentService,
    listen: str,
    max_message_bytes: int,
    workers: int,
    max_connection_age_s: float = 900.0,
) -> tuple[grpc.Server, int]:
    """Builds (not starts) the server and binds it; returns it with the bound port."""
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
    server.add_generic_rpc_handlers((_IngestServicer(ingest).handler(),))
    ingest_pb2_grpc.add_EnrollmentServiceServicer_to_server(_EnrollmentServicer(enrollment), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port
