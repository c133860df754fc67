"""Delivery over the real gRPC adapter on loopback: the key in EnrollResponse, the policy on the Acks of the
labelled agent only, and no more of it once the agent reported it applied (from the stored batch)."""

from __future__ import annotations

import time

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoumi.batch import sign_batch
from shoumi.signed_policy import verify_policy
from shoumi.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc

from collector.policy import service as policies
from collector.wiring import Built

from tests.collector.test_ingest_pipeline import collector  # noqa: F401  (the fixture: a collector on loopback)
from tests.conftest import ChainWriter


def _enroll(built: Built, channel: grpc.Channel, key: Ed25519PrivateKey) -> ingest_pb2.EnrollResponse:
    token = built.enrollment.create_token(tx=built.store, actor="test")
    reply: ingest_pb2.EnrollResponse = ingest_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
        ingest_pb2.EnrollRequest(token=token, public_key=key.public_key().public_bytes_raw(), hostname="ws", os="Linux"),
        timeout=10)
    return reply


def _applied(writer: ChainWriter, policy: events_pb2.SignedPolicy, sha256: str) -> events_pb2.EventBatch:
    batch = writer.next(1)
    event = batch.events[0]
    event.kind = "policy.applied"
    event.attributes.update({"name": policy.name, "version": policy.version, "sha256": sha256, "source": "collector"})
    writer.last_hash = sign_batch(batch, writer.key)
    return batch


def test_the_policy_rides_on_the_labelled_agents_acks_until_it_reports_it(collector: Built) -> None:
    delivery = collector.ingest.policies
    assert delivery is not None
    delivery.resend_s = 0.0  # every Ack may carry it: what stops it is the report
    keys = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        replies = [_enroll(collector, channel, k) for k in keys]
        assert all(r.policy_public_key == delivery.public_key and len(r.policy_public_key) == 32 for r in replies)
        fin, hr = (ChainWriter(r.agent_id, k) for r, k in zip(replies, keys))
        with collector.store.transaction() as tx:
            tx.set_agent_labels(agent_id=fin.agent_id, labels=["dept:finance"])
            tx.set_agent_labels(agent_id=hr.agent_id, labels=["dept:hr"])
            made, _ = policies.save_version(tx=tx, name="finance", document='sensitive_folders = ["/srv/finance"]\n',
                                            author="it", comment="", now_ns=time.time_ns())
            policies.assign(tx=tx, name="finance", labels=["dept:finance"], priority=0, actor="it", now_ns=1)
        delivery.refresh()
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        acks = list(stub.StreamEvents(iter([fin.next(2), fin.next(2)]), timeout=20))
        assert all(a.HasField("policy") for a in acks)
        verify_policy(acks[0].policy, replies[0].policy_public_key)
        assert (acks[0].policy.name, acks[0].policy.version) == ("finance", 1)
        assert not any(a.HasField("policy") for a in stub.StreamEvents(iter([hr.next(2)]), timeout=20))
        acks = list(stub.StreamEvents(iter([_applied(fin, acks[0].policy, made.sha256), fin.next(1)]), timeout=20))
        assert not acks[-1].HasField("policy")  # the report was recorded on the ingest path: no more pushes
    with collector.store.read() as tx:
        state = tx.get_agent_policy_state(fin.agent_id)
    assert state is not None and (state.applied_name, state.applied_version, state.applied_sha256) == (
        "finance", 1, made.sha256)
