"""Hostile agents against the fleet's health row (written on ingest): one agent's heartbeat must not fail the
batches of the other agents committed in the same transaction. Real gRPC on loopback, real SQLite."""

from __future__ import annotations

import threading
import time

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.batch import sign_batch
from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from collector.events.models import StoredEvent
from collector.fleet.health import health_from
from collector.wiring import Built

from tests.collector.test_ingest_pipeline import collector  # noqa: F401  (the fixture: a collector on loopback)
from tests.conftest import ChainWriter


def _enroll(built: Built, channel: grpc.Channel) -> ChainWriter:
    key = Ed25519PrivateKey.generate()
    token = built.enrollment.create_token(tx=built.store, actor="test")
    reply = ingest_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
        ingest_pb2.EnrollRequest(token=token, public_key=key.public_key().public_bytes_raw(), hostname="ws",
                                 os="Linux"), timeout=10)
    return ChainWriter(reply.agent_id, key)


def _heartbeat(writer: ChainWriter, **attributes: object) -> events_pb2.EventBatch:
    batch = writer.next(1)
    batch.events[0].kind = "agent.heartbeat"
    batch.events[0].attributes.update(attributes)
    writer.last_hash = sign_batch(batch, writer.key)
    return batch


def _send(channel: grpc.Channel, batch: events_pb2.EventBatch, out: dict[str, object], name: str) -> None:
    try:
        out[name] = list(ingest_pb2_grpc.IngestServiceStub(channel).StreamEvents(iter([batch]), timeout=20))
    except grpc.RpcError as exc:
        out[name] = exc


def test_a_heartbeat_with_absurd_figures_fails_no_other_agents_batch(collector: Built) -> None:  # noqa: F811
    """An agent with a stolen certificate sends spool_bytes = 1e300: the SQL store cannot hold that integer. Before
    the fix the exception failed the whole group's transaction, so the victim's batch beside it was refused too."""
    ingest = collector.ingest
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        filler, attacker, victim = (_enroll(collector, channel) for _ in range(3))
        out: dict[str, object] = {}
        threads = []
        with ingest.write_gate.held():  # the committer waits here with the filler's group
            threads.append(threading.Thread(target=_send, args=(channel, filler.next(1), out, "filler")))
            threads[-1].start()
            deadline = time.monotonic() + 10
            while ingest._offers.qsize() and time.monotonic() < deadline or "filler" in out:
                time.sleep(0.01)
            time.sleep(0.2)  # the committer took the filler's offer and waits at the gate
            for name, batch in (("attacker", _heartbeat(attacker, spool_bytes=1e300, capture_gaps=1e30)),
                                ("victim", victim.next(2))):
                threads.append(threading.Thread(target=_send, args=(channel, batch, out, name)))
                threads[-1].start()
            while ingest._offers.qsize() < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        for t in threads:
            t.join(30)
    assert isinstance(out["victim"], list) and [a.acked_seq for a in out["victim"]] == [2], out["victim"]
    assert isinstance(out["attacker"], list), out["attacker"]  # stored: the evidence is kept, the figure bounded
    with collector.store.read() as tx:
        row = tx.get_agent_health(attacker.agent_id)
    assert row is not None and 0 <= row.spool_bytes < 2**63 and 0 <= row.capture_gaps < 2**63



def test_spool_full_reports_add_up_within_a_bigint() -> None:
    """refused counts add up across batches: a hostile agent's many huge counts stay storable."""
    row = None
    for i in range(5):
        events = [StoredEvent("a1", 1, i + 1, f"e{i}", "agent.spool_full", 1, attributes={"refused": 2**62 - 1})]
        row = health_from(row, events, agent_id="a1", received_ns=1, skew_ns=0)
    assert row is not None and 0 <= row.refused_total < 2**63
