"""Helpers of the hostile tests: agents enrolled on a real collector, and batches of several agents made to land in
one commit group (the committer waits at the write gate with a filler's batch while they queue)."""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.batch import sign_batch
from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from collector.wiring import Built

from tests.conftest import ChainWriter

__all__ = ["enroll", "event_batch", "in_one_group"]


def enroll(built: Built, channel: grpc.Channel) -> ChainWriter:
    """A freshly enrolled agent's batch writer."""
    key = Ed25519PrivateKey.generate()
    token = built.enrollment.create_token(tx=built.store, actor="test")  # type: ignore[arg-type]
    reply = ingest_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
        ingest_pb2.EnrollRequest(token=token, public_key=key.public_key().public_bytes_raw(), hostname="ws",
                                 os="Linux"), timeout=10)
    return ChainWriter(reply.agent_id, key)


def event_batch(writer: ChainWriter, kind: str, **attributes: Any) -> events_pb2.EventBatch:
    """The writer's next batch: one event of this kind with these attributes."""
    batch = writer.next(1)
    batch.events[0].kind = kind
    batch.events[0].attributes.update(attributes)
    writer.last_hash = sign_batch(batch, writer.key)
    return batch


def _send(channel: grpc.Channel, batch: events_pb2.EventBatch, out: dict[str, Any], name: str) -> None:
    try:
        out[name] = list(ingest_pb2_grpc.IngestServiceStub(channel).StreamEvents(iter([batch]), timeout=20))
    except grpc.RpcError as exc:
        out[name] = exc


def in_one_group(built: Built, channel: grpc.Channel, filler: events_pb2.EventBatch,
                 batches: Sequence[tuple[str, events_pb2.EventBatch]]) -> dict[str, Any]:
    """Sends ``batches`` (name, batch) each on its own stream so that they are committed in one transaction;
    returns each name's Acks (a list) or its gRPC error."""
    ingest = built.ingest
    out: dict[str, Any] = {}
    threads = [threading.Thread(target=_send, args=(channel, filler, out, "filler"))]
    deadline = time.monotonic() + 10
    with ingest.write_gate.held():
        threads[0].start()
        time.sleep(0.3)  # the committer took the filler's offer and waits at the gate
        for name, batch in batches:
            threads.append(threading.Thread(target=_send, args=(channel, batch, out, name)))
            threads[-1].start()
        while ingest.waiting() < len(batches) and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(30)
    return out
