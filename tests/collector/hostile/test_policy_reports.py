"""Hostile agents against the policy reports recorded on ingest, on PostgreSQL (whose text refuses NUL): one
agent's policy.refused or heartbeat must not fail the other agents' batches committed in the same transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import grpc
import pytest

from shoumi.v1 import ingest_pb2_grpc

from collector.alerts.models import Alert
from collector.policy import service as policies
from collector.settings import CollectorSettings
from collector.wiring import Built, build_services

from tests.collector.hostile.grouping import enroll, event_batch, in_one_group
from tests.collector.test_ingest_pipeline import collector  # noqa: F401  (the fixture: a collector on loopback)
from tests.conftest import PerCall, _pg_store


@pytest.fixture
def pg_collector(tmp_path: Path) -> Iterator[Built]:
    for store in _pg_store():
        built = build_services(CollectorSettings(data_dir=tmp_path, grpc_listen="127.0.0.1:0", insecure_dev=True),
                               store=PerCall(store))
        built.grpc.start()
        try:
            yield built
        finally:
            built.grpc.stop(grace=0)
            built.ingest.close()


@pytest.mark.postgres
@pytest.mark.parametrize("kind, attributes", [
    ("policy.refused", {"name": "fin\x00", "version": 1, "reason": "no\x00"}),
    ("agent.heartbeat", {"version": "1.0\x00", "policy_name": "x\x00", "policy_version": 1}),
])
def test_a_nul_in_a_report_fails_no_other_agents_batch(pg_collector: Built, kind: str,
                                                       attributes: dict[str, object]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{pg_collector.grpc_port}") as channel:
        filler, attacker, victim = (enroll(pg_collector, channel) for _ in range(3))
        out = in_one_group(pg_collector, channel, filler.next(1), [
            ("attacker", event_batch(attacker, kind, **attributes)), ("victim", victim.next(2))])
    assert isinstance(out["victim"], list) and [a.acked_seq for a in out["victim"]] == [2], out["victim"]


@pytest.mark.postgres
def test_a_batch_the_store_cannot_hold_fails_alone(pg_collector: Built) -> None:
    """Whatever else one agent's batch holds that the database refuses (here a NUL in a path), the other agents'
    batches of its group are stored: the group is committed again one batch at a time."""
    with grpc.insecure_channel(f"127.0.0.1:{pg_collector.grpc_port}") as channel:
        filler, attacker, victim = (enroll(pg_collector, channel) for _ in range(3))
        poison = attacker.next(1, path="/srv/finance/a\x00b")
        out = in_one_group(pg_collector, channel, filler.next(1), [("attacker", poison), ("victim", victim.next(2))])
    assert isinstance(out["victim"], list) and [a.acked_seq for a in out["victim"]] == [2], out["victim"]
    assert isinstance(out["attacker"], grpc.RpcError)
    # refused at decoding, with the reason, before it reaches the database
    assert out["attacker"].code() == grpc.StatusCode.INVALID_ARGUMENT and "NUL" in (out["attacker"].details() or "")


def test_refusals_of_policies_never_made_fold_into_one_alert(collector: Built) -> None:  # noqa: F811
    """An agent with a stolen certificate reports 30 refusals of made-up policies: the analysts' queue gets one
    policy_refused alert for that agent (folded, counted), not 30; a refusal of a real version is its own."""
    with collector.store.transaction() as tx:
        policies.save_version(tx=tx, name="finance", document='sensitive_folders = ["/srv/f"]\n', author="it",
                              comment="", now_ns=1)
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        attacker = enroll(collector, channel)
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        batches = [event_batch(attacker, "policy.refused", name=f"made-up-{i}", version=1, reason="no")
                   for i in range(30)]
        batches.append(event_batch(attacker, "policy.refused", name="finance", version=1, reason="real"))
        assert len(list(stub.StreamEvents(iter(batches), timeout=30))) == 31
    with collector.store.read() as tx:
        mine = [a for a in tx.list_alerts(cursor=None, limit=1000).items
                if isinstance(a, Alert) and a.rule == "policy_refused" and a.agent_id == attacker.agent_id]
    assert len(mine) == 2, [a.summary for a in mine]
