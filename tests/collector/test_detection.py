"""The read-burst rule, and that what it finds does not depend on how events were batched."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.detection.rules import ReadBurstRule
from collector.events.models import StoredEvent
from collector.fleet.models import AgentRecord
from collector.detection.service import DetectionStage
from collector.ingest.service import IngestService
from collector.storage import MemoryStore, open_store
from shoumi.batch import sign_batch

from tests.conftest import ChainWriter, make_event, _burst

MIN = 60_000_000_000


def _reads(times: list[int], user: str = "alice") -> list[StoredEvent]:
    return [StoredEvent(agent_id="a", epoch=1, seq=i + 1, id=f"e{i}", kind="file.read", time_ns=t, user=user, path=f"/s/{i}")
            for i, t in enumerate(times)]


def test_threshold_is_exclusive_and_window_inclusive() -> None:
    rule = ReadBurstRule(threshold=3, window_ns=5 * MIN)
    assert rule.evaluate(_reads([0, MIN, 2 * MIN])) == []
    [found] = rule.evaluate(_reads([0, MIN, 2 * MIN, 5 * MIN]))
    assert found.event_ids == ("e0", "e1", "e2", "e3")
    assert rule.evaluate(_reads([0, MIN, 2 * MIN, 5 * MIN + 1])) == []
    assert "4 times" in found.summary and "more than 3" in found.summary


def test_an_earlier_burst_is_found_even_when_later_reads_are_quiet() -> None:
    rule = ReadBurstRule(threshold=3, window_ns=MIN)
    found = rule.evaluate(_reads([0, 1, 2, 3, 10 * MIN, 20 * MIN, 20 * MIN + 1, 20 * MIN + 2, 20 * MIN + 3, 20 * MIN + 4]))
    assert [f.event_ids for f in found] == [("e0", "e1", "e2", "e3"), ("e5", "e6", "e7", "e8", "e9")]


def test_sustained_burst_extends_one_alert_and_a_later_one_opens_another() -> None:
    store = MemoryStore()
    key = Ed25519PrivateKey.generate()
    with store.transaction() as tx:
        tx.add_enroll_token(token_hash="t", created_at_ns=0, expires_at_ns=2**62, created_by="t")
        tx.consume_enroll_token(token_hash="t", now_ns=1, agent=AgentRecord(
            "agt-1", key.public_key().public_bytes_raw(), "h", "L", "1", 1))
    ingest, stage = IngestService(store), DetectionStage(store, rules=_burst(threshold=2, minutes=1))
    writer = ChainWriter("agt-1", key)

    def reads(*minutes: float) -> None:
        batch = writer.next(0)
        batch.ClearField("signature")
        for off, m in enumerate(minutes):
            batch.events.append(make_event(batch.first_seq + off, time_ns=10**18 + int(m * MIN)))
        writer.next_seq = batch.first_seq + len(minutes)
        writer.last_hash = sign_batch(batch, key)
        ingest.ingest(batch)
        stage.run_until_idle()

    reads(0, 0.1, 0.2)
    reads(0.3, 0.4)
    with store.read() as tx:
        [alert] = tx.list_alerts(cursor=None, limit=10).items
    assert len(alert.event_ids) == 5 and "5 times" in alert.summary
    reads(10, 10.1, 10.2)
    with store.read() as tx:
        newest, oldest = tx.list_alerts(cursor=None, limit=10).items
    assert oldest.id == alert.id and len(newest.event_ids) == 3  # a new alert


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    gaps=st.lists(st.integers(0, 90), min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=10),
)
def test_alerts_do_not_depend_on_batch_boundaries(tmp_path_factory, gaps: list[int], cuts: list[int]) -> None:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    times, t = [], 1_000 * MIN
    for g in gaps:
        t += g * 1_000_000_000  # seconds apart
        times.append(t)

    def run(sizes: list[int]) -> list[tuple[str, tuple[str, ...]]]:
        store = open_store(tmp_path_factory.mktemp("s"))
        with store.transaction() as tx:
            tx.add_enroll_token(token_hash="t", created_at_ns=0, expires_at_ns=2**62, created_by="t")
            tx.consume_enroll_token(token_hash="t", now_ns=1, agent=AgentRecord("agt-1", pub, "h", "L", "1", 1))
        service = IngestService(store, clock=lambda: 7)
        stage = DetectionStage(store, rules=_burst(threshold=5, minutes=1), clock=lambda: 7)
        writer = ChainWriter("agt-1", key)
        i = 0
        while i < len(times):
            n = sizes[i % len(sizes)] if sizes else len(times)
            chunk = times[i : i + n]
            batch = writer.next(0)
            batch.ClearField("signature")
            for off, tm in enumerate(chunk):
                ev = make_event(batch.first_seq + off, time_ns=tm)
                ev.id = f"r{i + off}"
                batch.events.append(ev)
            writer.next_seq = batch.first_seq + len(chunk)
            from shoumi.batch import sign_batch
            writer.last_hash = sign_batch(batch, key)
            service.ingest(batch)
            stage.run_until_idle()
            i += len(chunk)
        with store.read() as tx:
            alerts = tx.list_alerts(cursor=None, limit=100).items
        store.close()
        return sorted((a.user, tuple(sorted(a.event_ids))) for a in alerts)

    one_batch = run([len(times)])
    assert run(cuts) == one_batch
    assert run([1]) == one_batch
