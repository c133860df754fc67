"""Hostile agents against the fleet's health row (written on ingest): one agent's heartbeat must not fail the
batches of the other agents committed in the same transaction. Real gRPC on loopback, real SQLite."""

from __future__ import annotations

import grpc

from shoumi.v1 import ingest_pb2_grpc

from collector.events.models import StoredEvent
from collector.fleet.health import health_from
from collector.wiring import Built

from tests.collector.hostile.grouping import enroll, event_batch, in_one_group
from tests.collector.test_ingest_pipeline import collector  # noqa: F401  (the fixture: a collector on loopback)


def test_a_heartbeat_with_absurd_figures_fails_no_other_agents_batch(collector: Built) -> None:  # noqa: F811
    """An agent with a stolen certificate sends spool_bytes = 1e300: the SQL store cannot hold that integer. Before
    the fix the exception failed the whole group's transaction, so the victim's batch beside it was refused too."""
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        filler, attacker, victim = (enroll(collector, channel) for _ in range(3))
        out = in_one_group(collector, channel, filler.next(1), [
            ("attacker", event_batch(attacker, "agent.heartbeat", spool_bytes=1e300, capture_gaps=1e30)),
            ("victim", victim.next(2))])
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


def test_a_megabyte_user_name_is_not_carried_into_the_health_row(collector: Built) -> None:  # noqa: F811
    """The fleet page reads every health row's people on each load: one agent's 1 MiB names would slow it for all."""
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        attacker = enroll(collector, channel)
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for i in range(3):
            batch = attacker.next(1, user=f"{i}" + "u" * (1 << 20))
            list(stub.StreamEvents(iter([batch]), timeout=20))
        list(stub.StreamEvents(iter([event_batch(attacker, "agent.heartbeat", version="1")]), timeout=20))
    with collector.store.read() as tx:
        row = tx.get_agent_health(attacker.agent_id)
    assert row is not None and len(row.users) == 4 and max(len(u) for u in row.users) <= 256  # and alice
