"""The shipper against a small real gRPC ingest service on loopback: batches are sealed full under load."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Iterator

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.v1 import events_pb2, ingest_pb2_grpc

from agent.core.events import FileEvent
from agent.spool import Spool
from agent.transport import Shipper


class _Ingest(ingest_pb2_grpc.IngestServiceServicer):
    """Acknowledges every batch at once and remembers how many events each held."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.lock = threading.Lock()
        self.policy: events_pb2.SignedPolicy | None = None  # attached to every Ack when set

    def StreamEvents(self, request_iterator: Iterator[events_pb2.EventBatch], context: object
                     ) -> Iterator[events_pb2.Ack]:
        for batch in request_iterator:
            with self.lock:
                self.sizes.append(len(batch.events))
            ack = events_pb2.Ack(agent_id=batch.agent_id, epoch=batch.epoch,
                                 acked_seq=batch.first_seq + len(batch.events) - 1)
            if self.policy is not None:
                ack.policy.CopyFrom(self.policy)
            yield ack

    def total(self) -> int:
        with self.lock:
            return sum(self.sizes)


def _event(i: int) -> FileEvent:
    return FileEvent(kind="file.read", time_unix_ns=time.time_ns(), path=f"/s/{i}", user="alice")


def _wait(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_trickle_of_events_travels_in_few_batches_and_a_lone_one_still_goes(tmp_path: Path) -> None:
    ingest = _Ingest()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(ingest, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    spool = Spool(tmp_path / "spool.db", agent_id="agt")
    shipper = Shipper(spool, Ed25519PrivateKey.generate(), f"127.0.0.1:{port}", max_events=500, linger_s=0.2)
    shipper.start()
    try:
        _wait(shipper.connected.is_set)
        for i in range(200):  # one event at a time, as a recorder commits them under a steady load
            spool.append([_event(i)])
            shipper.wake.set()
            time.sleep(0.0005)
        _wait(lambda: ingest.total() == 200)
        trickle = list(ingest.sizes)
        spool.append([_event(999)])  # a quiet machine: one event alone
        shipper.wake.set()
        _wait(lambda: ingest.total() == 201)
    finally:
        shipper.stop(drain_timeout_s=2)
        server.stop(0)
        spool.close()
    # without the linger each commit would be sealed on its own: ~200 batches of one
    assert len(trickle) <= 10, trickle
    assert ingest.sizes[-1] == 1


def test_an_acks_policy_is_handed_to_the_callback_and_a_failing_callback_keeps_the_stream(tmp_path: Path) -> None:
    ingest = _Ingest()
    ingest.policy = events_pb2.SignedPolicy(name="finance", version=2, document=b'sensitive_folders = ["/s"]')
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(ingest, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    spool = Spool(tmp_path / "spool.db", agent_id="agt")
    shipper = Shipper(spool, Ed25519PrivateKey.generate(), f"127.0.0.1:{port}", linger_s=0)
    handed: list[events_pb2.SignedPolicy] = []

    def on_policy(policy: events_pb2.SignedPolicy) -> None:
        handed.append(policy)
        if len(handed) == 1:
            raise RuntimeError("the first one fails")

    shipper.on_policy = on_policy
    shipper.start()
    try:
        for i in range(3):
            spool.append([_event(i)])
            shipper.wake.set()
            _wait(lambda: ingest.total() == i + 1 and spool.acked_seq() == i + 1)
    finally:
        shipper.stop(drain_timeout_s=2)
        server.stop(0)
        spool.close()
    assert len(handed) == 3 and {(p.name, p.version) for p in handed} == {("finance", 2)}
